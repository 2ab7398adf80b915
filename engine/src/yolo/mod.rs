//! The [yolo] layer: Darknet's box decode, truth matching, deltas and loss (darknet-spec §a).
//!
//! - [`boxes`]: boxes, IoU/GIoU/DIoU/CIoU and Darknet's `dx_box_iou`.
//! - [`loss`]: the training head (targets, deltas, cost, statistics).
//! - [`decode`]: inference decode of a head's output into detections.

pub mod boxes;
pub mod decode;
pub mod loss;

pub use boxes::{BBox, DxBox, box_ciou, box_diou, box_giou, box_iou, box_iou_kind, dx_box_iou};
pub use decode::{detections, get_yolo_box};

use crate::shapes::YoloParams;

/// Index arithmetic of a head's tensor: `b*outputs + n*w*h*(5+C) + e*w*h + (j*w+i)`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Layout {
    pub wh: usize,
    /// Floats per image.
    pub outputs: usize,
    pub per_anchor: usize,
}

impl Layout {
    pub fn new(p: &YoloParams) -> Layout {
        let wh = p.w * p.h;
        let per_anchor = (5 + p.classes) * wh;
        Layout { wh, outputs: p.mask.len() * per_anchor, per_anchor }
    }
    /// Index of entry `e` (0..4 box, 4 obj, 5.. classes) of anchor `n` at `cell = j*w+i`.
    #[inline]
    pub fn entry(&self, b: usize, n: usize, e: usize, cell: usize) -> usize {
        b * self.outputs + n * self.per_anchor + e * self.wh + cell
    }
}

/// Darknet's logistic in f32.
#[inline]
pub(crate) fn logistic(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// The forward pass alone (inference): `out` = Darknet's l.output for input `x`.
/// Logistic on x, y, objectness and classes (none with new_coords), w, h raw; then
/// x, y ← scale_x_y·x − 0.5·(scale_x_y − 1).
pub fn forward_cpu(x: &[f32], out: &mut [f32], p: &YoloParams) {
    assert_eq!(x.len(), p.len(), "yolo input length");
    assert_eq!(out.len(), p.len(), "yolo output length");
    out.copy_from_slice(x);
    let l = Layout::new(p);
    let alpha = p.scale_x_y;
    // Darknet computes the offset in double and passes it as float.
    let beta = (-0.5 * (p.scale_x_y as f64 - 1.0)) as f32;
    for b in 0..p.batch {
        for n in 0..p.mask.len() {
            let xy = l.entry(b, n, 0, 0);
            if !p.new_coords {
                out[xy..xy + 2 * l.wh].iter_mut().for_each(|v| *v = logistic(*v));
                let obj = l.entry(b, n, 4, 0);
                out[obj..obj + (1 + p.classes) * l.wh].iter_mut().for_each(|v| *v = logistic(*v));
            }
            out[xy..xy + 2 * l.wh].iter_mut().for_each(|v| *v = *v * alpha + beta);
        }
    }
}

/// CPU twin of `Backend::yolo_forward_backward` on host slices (see the trait for the contract).
/// `x`, `out`, `dx`: `p.len()` floats; `truths`: `p.batch * p.max_boxes * 5`;
/// `stats`: `crate::yolo_stats::STATS_LEN` floats, overwritten.
///
/// `dx` is the ordinary gradient, −(Darknet's delta), of this head's cost as Darknet defines the
/// delta (see [`loss`]): not divided by the batch, no logistic derivative on activated entries.
pub fn forward_backward_cpu(x: &[f32], out: &mut [f32], truths: &[f32], dx: &mut [f32], stats: &mut [f32], p: &YoloParams) {
    forward_cpu(x, out, p);
    loss::deltas_and_stats(out, truths, dx, stats, p);
    // Darknet's delta is the negative gradient.
    dx.iter_mut().for_each(|v| *v = -*v);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shapes::IouLoss;

    #[test]
    fn forward_activates_and_scales() {
        let p = YoloParams {
            batch: 1,
            w: 1,
            h: 1,
            classes: 1,
            anchors: vec![(10.0, 10.0)],
            mask: vec![0],
            net_w: 32,
            net_h: 32,
            max_boxes: 1,
            scale_x_y: 1.2,
            ignore_thresh: 0.7,
            truth_thresh: 1.0,
            iou_thresh: 1.0,
            iou_thresh_kind: IouLoss::Iou,
            iou_normalizer: 1.0,
            obj_normalizer: 1.0,
            cls_normalizer: 1.0,
            iou_loss: IouLoss::Ciou,
            label_smooth_eps: 0.0,
            focal_loss: false,
            max_delta: f32::MAX,
            new_coords: false,
            objectness_smooth: false,
        };
        let x = [1.0f32, -1.0, 0.7, -0.3, 2.0, -2.0];
        let mut out = [0.0f32; 6];
        forward_cpu(&x, &mut out, &p);
        let s = |v: f64| 1.0 / (1.0 + (-v).exp());
        let want = [1.2 * s(1.0) - 0.1, 1.2 * s(-1.0) - 0.1, 0.7, -0.3, s(2.0), s(-2.0)];
        for (o, w) in out.iter().zip(want) {
            assert!((*o as f64 - w).abs() < 1e-6, "{out:?}");
        }
    }
}
