//! Detection evaluation as `darknet detector map` does it (darknet-spec §e): NMS and mAP.
//!
//! Boxes are normalised centre format (x, y, w, h) like Darknet's `box`.

pub mod confusion;
pub mod map;
pub mod nms;

pub use confusion::ConfusionMatrix;
pub use map::{ClassRow, EvalError, MapAccumulator, MapReport, format_darknet};
pub use nms::{apply_nms, diounms_sort, do_nms_sort};

/// A box in centre format, normalised to the image (Darknet's `box`).
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct Bbox {
    pub x: f32,
    pub y: f32,
    pub w: f32,
    pub h: f32,
}

impl Bbox {
    pub fn new(x: f32, y: f32, w: f32, h: f32) -> Self {
        Bbox { x, y, w, h }
    }
}

/// One predicted box: objectness and the per-class probabilities `prob[c] = obj · cls[c]`
/// (already zeroed below the detection threshold, as `get_network_boxes` does).
#[derive(Clone, Debug, PartialEq)]
pub struct Detection {
    pub bbox: Bbox,
    pub objectness: f32,
    pub prob: Vec<f32>,
}

/// One labelled object.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GroundTruth {
    pub class: usize,
    pub bbox: Bbox,
}

/// Overlap of two centre-format intervals (negative when disjoint).
fn overlap(c1: f32, w1: f32, c2: f32, w2: f32) -> f32 {
    let left = (c1 - w1 / 2.0).max(c2 - w2 / 2.0);
    let right = (c1 + w1 / 2.0).min(c2 + w2 / 2.0);
    right - left
}

/// Intersection over union; 0 when the boxes do not overlap or are degenerate.
pub fn box_iou(a: &Bbox, b: &Bbox) -> f32 {
    let w = overlap(a.x, a.w, b.x, b.w);
    let h = overlap(a.y, a.h, b.y, b.h);
    if w <= 0.0 || h <= 0.0 {
        return 0.0;
    }
    let inter = w * h;
    let union = a.w * a.h + b.w * b.h - inter;
    if union <= 0.0 { 0.0 } else { inter / union }
}

/// DIoU as used for NMS: IoU − (d²/c²)^beta, d = centre distance, c = diagonal of the enclosing
/// box. `greedynms` uses beta 0.6, `diounms` uses `beta_nms`.
pub fn box_diou_nms(a: &Bbox, b: &Bbox, beta: f32) -> f32 {
    let iou = box_iou(a, b);
    let cw = (a.x + a.w / 2.0).max(b.x + b.w / 2.0) - (a.x - a.w / 2.0).min(b.x - b.w / 2.0);
    let ch = (a.y + a.h / 2.0).max(b.y + b.h / 2.0) - (a.y - a.h / 2.0).min(b.y - b.h / 2.0);
    let c2 = cw * cw + ch * ch;
    if c2 == 0.0 {
        return iou;
    }
    let d2 = (a.x - b.x).powi(2) + (a.y - b.y).powi(2);
    iou - (d2 / c2).powf(beta)
}
