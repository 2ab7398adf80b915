//! Inference decode of a [yolo] head (Darknet's get_yolo_box / get_yolo_detections).

use super::Layout;
use super::boxes::BBox;
use crate::eval::{Bbox, Detection};
use crate::shapes::YoloParams;

/// Darknet's get_yolo_box: decode the box at `box_index` (entry 0 of an anchor at cell i, j) of
/// `out` (the activated output), for anchor `(aw, ah)` in pixels.
/// bx = (i + x)/lw, by = (j + y)/lh, bw = exp(tw)·aw/net_w (new_coords: tw²·4·aw/net_w).
pub fn get_yolo_box(out: &[f32], anchor: (f32, f32), box_index: usize, i: usize, j: usize, p: &YoloParams, stride: usize) -> BBox {
    let tx = out[box_index];
    let ty = out[box_index + stride];
    let tw = out[box_index + 2 * stride];
    let th = out[box_index + 3 * stride];
    let x = (i as f32 + tx) / p.w as f32;
    let y = (j as f32 + ty) / p.h as f32;
    let (w, h) = if p.new_coords {
        (tw * tw * 4.0 * anchor.0 / p.net_w as f32, th * th * 4.0 * anchor.1 / p.net_h as f32)
    } else {
        // exp() and the division run in double in Darknet; round once.
        (
            ((tw as f64).exp() * anchor.0 as f64 / p.net_w as f64) as f32,
            ((th as f64).exp() * anchor.1 as f64 / p.net_h as f64) as f32,
        )
    };
    BBox { x, y, w, h }
}

/// Detections of image `image` in a head's activated output `out` (all images of the batch):
/// every cell and mask anchor whose objectness is > `thresh`, in Darknet's order (cell-major,
/// then anchor). Boxes are relative to the network input; no letterbox correction. `prob[c]` is
/// objectness·class probability if that exceeds `thresh`, else 0 (Darknet's get_yolo_detections).
pub fn detections(out: &[f32], p: &YoloParams, image: usize, thresh: f32) -> Vec<Detection> {
    let l = Layout::new(p);
    let mut dets = Vec::new();
    for cell in 0..l.wh {
        let (row, col) = (cell / p.w, cell % p.w);
        for (n, &a) in p.mask.iter().enumerate() {
            let objectness = out[l.entry(image, n, 4, cell)];
            if objectness <= thresh {
                continue;
            }
            let bbox = get_yolo_box(out, p.anchors[a], l.entry(image, n, 0, cell), col, row, p, l.wh);
            let prob = (0..p.classes)
                .map(|c| {
                    let pr = objectness * out[l.entry(image, n, 5 + c, cell)];
                    if pr > thresh { pr } else { 0.0 }
                })
                .collect();
            let bbox = Bbox::new(bbox.x, bbox.y, bbox.w, bbox.h);
            dets.push(Detection { bbox, objectness, prob });
        }
    }
    dets
}
