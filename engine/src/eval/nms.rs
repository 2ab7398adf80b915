//! Per-class non-maximum suppression as Darknet's `do_nms_sort` / `diounms_sort`.
//!
//! For each class k: detections with objectness ≠ 0 are ordered by prob[k] descending; walking that
//! order, a detection whose prob[k] is still non-zero zeroes prob[k] of every later detection that
//! overlaps it by more than `thresh`. Darknet sorts in place with an unstable sort; we sort an index
//! list stably instead, so ties keep input order and the vector itself is not reordered.

use super::{Bbox, Detection, box_diou_nms, box_iou};
use crate::cfg::NmsKind;

/// DIoU exponent of `nms_kind=greedynms`.
pub const GREEDY_NMS_BETA: f32 = 0.6;

fn nms_by(
    dets: &mut [Detection],
    classes: usize,
    thresh: f32,
    overlap: impl Fn(&Bbox, &Bbox) -> f32,
) {
    let prob = |d: &Detection, k: usize| d.prob.get(k).copied().unwrap_or(0.0);
    let live: Vec<usize> = (0..dets.len())
        .filter(|&i| dets[i].objectness != 0.0)
        .collect();
    let mut order = live.clone();
    for k in 0..classes {
        order.copy_from_slice(&live);
        order.sort_by(|&a, &b| prob(&dets[b], k).total_cmp(&prob(&dets[a], k)));
        for (pos, &i) in order.iter().enumerate() {
            if prob(&dets[i], k) == 0.0 {
                continue;
            }
            let a = dets[i].bbox;
            for &j in &order[pos + 1..] {
                if overlap(&a, &dets[j].bbox) > thresh
                    && let Some(p) = dets[j].prob.get_mut(k)
                {
                    *p = 0.0;
                }
            }
        }
    }
}

/// Darknet's default NMS: IoU > thresh suppresses.
pub fn do_nms_sort(dets: &mut [Detection], classes: usize, thresh: f32) {
    nms_by(dets, classes, thresh, box_iou);
}

/// Darknet's DIoU NMS: IoU − (d²/c²)^beta > thresh suppresses.
pub fn diounms_sort(dets: &mut [Detection], classes: usize, thresh: f32, beta: f32) {
    nms_by(dets, classes, thresh, |a, b| box_diou_nms(a, b, beta));
}

/// The NMS a [yolo] head's `nms_kind` selects (Darknet's map uses thresh 0.45).
pub fn apply_nms(
    dets: &mut [Detection],
    classes: usize,
    kind: NmsKind,
    thresh: f32,
    beta_nms: f32,
) {
    match kind {
        NmsKind::Default => do_nms_sort(dets, classes, thresh),
        NmsKind::Greedy => diounms_sort(dets, classes, thresh, GREEDY_NMS_BETA),
        NmsKind::Diou => diounms_sort(dets, classes, thresh, beta_nms),
    }
}
