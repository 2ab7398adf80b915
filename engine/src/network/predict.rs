//! Inference on a [`Network`]: decode the [yolo] heads, NMS, and mAP over a dataset — the same
//! steps as `darknet detector map`, on any backend.

use super::layer::LayerOp;
use super::{Mode, Network};
use crate::backend::Backend;
use crate::cfg::LayerKind;
use crate::data::loader::Batch;
use crate::eval::map::MapAccumulator;
use crate::eval::nms::apply_nms;
use crate::eval::{Bbox, Detection, EvalError, GroundTruth};

/// Darknet's candidate threshold for mAP (`get_network_boxes(thresh=0.005)`).
pub const MAP_CANDIDATE_THRESH: f32 = 0.005;
/// Darknet's hard-coded NMS threshold in `validate_detector_map`.
pub const MAP_NMS_THRESH: f32 = 0.45;

impl<B: Backend> Network<B> {
    /// Run inference on the current input and return, per image of the mini-batch, the
    /// detections of every head above `thresh` after the NMS of the cfg's last [yolo] (`nms_kind`,
    /// `beta_nms`) with IoU threshold `nms`.
    pub fn detect(&self, thresh: f32, nms: f32) -> Vec<Vec<Detection>> {
        self.forward(Mode::Infer, 0, 0);
        let mut per_image: Vec<Vec<Detection>> = vec![Vec::new(); self.mini_batch];
        let mut nms_kind = None;
        let mut classes = 0;
        for &h in &self.heads {
            let l = &self.layers[h];
            let LayerOp::Yolo { params, .. } = &l.op else { continue };
            // Darknet takes the NMS kind of the network's last layer, i.e. the last [yolo].
            if let LayerKind::Yolo(y) = &self.cfg.layers[h].kind {
                nms_kind = Some((y.nms_kind, y.beta_nms));
            }
            classes = params.classes;
            let out = self.backend.download(&l.output);
            for (b, dets) in per_image.iter_mut().enumerate() {
                dets.extend(crate::yolo::decode::detections(&out, params, b, thresh));
            }
        }
        if let Some((kind, beta)) = nms_kind {
            for dets in &mut per_image {
                apply_nms(dets, classes, kind, nms, beta);
            }
        }
        per_image
    }

    /// The detections `darknet detector map` scores, for the real images of one validation batch
    /// (images beyond `batch.n` are padding): candidates above [`MAP_CANDIDATE_THRESH`] after NMS.
    pub fn detect_batch(&self, batch: &Batch) -> Vec<Vec<Detection>> {
        let per_img = batch.images.len() / batch.n.max(1);
        let mut images = batch.images.clone();
        images.resize(self.mini_batch * per_img, 0.0);
        let truths = vec![0.0; self.backend.len(&self.truths)];
        // set_input only fails on sizes, which the caller's loader fixes to the network.
        if self.set_input(&images, &truths).is_err() {
            return vec![Vec::new(); batch.n];
        }
        let mut dets = self.detect(MAP_CANDIDATE_THRESH, MAP_NMS_THRESH);
        dets.truncate(batch.n);
        dets
    }

    /// Add one validation batch to a mAP accumulator (images beyond `batch.n` are padding).
    pub fn evaluate_batch(&self, batch: &Batch, acc: &mut MapAccumulator) -> Result<(), EvalError> {
        for (i, d) in self.detect_batch(batch).iter().enumerate() {
            acc.add_image(d, &batch_truths(batch, i))?;
        }
        Ok(())
    }
}

/// The labelled objects of image `i` of a batch.
pub fn batch_truths(batch: &Batch, i: usize) -> Vec<GroundTruth> {
    batch.boxes(i).map(|t| GroundTruth { class: t[4] as usize, bbox: Bbox::new(t[0], t[1], t[2], t[3]) }).collect()
}
