//! A classifier's predictions and Darknet's top-1/top-k accuracy (`darknet classifier valid`):
//! the class probabilities are the output of the last layer that is not a [cost].

use super::layer::LayerOp;
use super::{Mode, Network};
use crate::backend::Backend;
use crate::data::loader::Batch;

/// Top-1 and top-k hits over labelled images.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TopK {
    /// k of the top-k count (Darknet's `top`, 5 by default).
    pub k: usize,
    pub images: usize,
    pub top1: usize,
    pub topk: usize,
}

impl TopK {
    pub fn new(k: usize) -> TopK {
        TopK { k: k.max(1), ..Default::default() }
    }
    /// Count one image: its probabilities and its class.
    pub fn add(&mut self, probs: &[f32], class: usize) {
        let ranked = ranking(probs);
        self.images += 1;
        self.top1 += usize::from(ranked.first() == Some(&class));
        self.topk += usize::from(ranked.iter().take(self.k).any(|&c| c == class));
    }
    pub fn top1_accuracy(&self) -> f64 {
        if self.images == 0 { 0.0 } else { self.top1 as f64 / self.images as f64 }
    }
    pub fn topk_accuracy(&self) -> f64 {
        if self.images == 0 { 0.0 } else { self.topk as f64 / self.images as f64 }
    }
}

/// Class indices by descending probability; equal probabilities keep the lower index first (as
/// Darknet's `top_k`, which only replaces on a strictly larger value). NaN ranks last.
pub fn ranking(probs: &[f32]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..probs.len()).collect();
    idx.sort_by(|&a, &b| {
        let (pa, pb) = (probs[a], probs[b]);
        pb.partial_cmp(&pa).unwrap_or_else(|| pa.is_nan().cmp(&pb.is_nan())).then(a.cmp(&b))
    });
    idx
}

impl<B: Backend> Network<B> {
    /// The layer whose output holds the class probabilities: the last one that is not a [cost].
    pub fn prediction_layer(&self) -> Option<usize> {
        self.layers.iter().rposition(|l| !matches!(l.op, LayerOp::Cost { .. }))
    }

    /// Inference on the current input: per image of the mini-batch, the prediction layer's values.
    pub fn classify(&self) -> Vec<Vec<f32>> {
        self.forward(Mode::Infer, 0, 0);
        let Some(i) = self.prediction_layer() else { return vec![Vec::new(); self.mini_batch] };
        let out = self.backend.download(&self.layers[i].output);
        let per = self.layers[i].output_shape.len();
        out.chunks_exact(per.max(1)).map(<[f32]>::to_vec).collect()
    }

    /// Add one validation batch (images beyond `batch.n` are padding) to a top-k count: each
    /// image's class is that of its first truth box; images without one are not counted.
    pub fn classify_batch(&self, batch: &Batch, acc: &mut TopK) {
        let per_img = batch.images.len() / batch.n.max(1);
        let mut images = batch.images.clone();
        images.resize(self.mini_batch * per_img, 0.0);
        let truths = vec![0.0; self.backend.len(&self.truths)];
        // set_input only fails on sizes, which the caller's loader fixes to the network.
        if self.set_input(&images, &truths).is_err() {
            return;
        }
        for (i, probs) in self.classify().iter().enumerate().take(batch.n) {
            if let Some(t) = batch.boxes(i).next() {
                acc.add(probs, t[4] as usize);
            }
        }
    }
}
