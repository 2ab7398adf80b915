//! The [yolo] layer's shared maths (darknet-spec §a): boxes, IoU/GIoU/DIoU/CIoU, Darknet's
//! `dx_box_iou`, the head's tensor layout and the inference decode. The training head itself —
//! truth matching, deltas, cost, statistics — is an op: its CPU twin is `cpu/yolo.rs`, its kernel
//! `shaders-wgsl/yolo.wgsl`.
//!
//! - [`boxes`]: boxes, IoU/GIoU/DIoU/CIoU and Darknet's `dx_box_iou`.
//! - [`decode`]: inference decode of a head's output into detections.

pub mod boxes;
pub mod decode;

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
