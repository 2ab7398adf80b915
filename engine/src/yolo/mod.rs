//! The [yolo] layer: Darknet's box decode, truth matching, deltas and loss (darknet-spec §a).

use crate::shapes::YoloParams;

/// CPU twin of `Backend::yolo_forward_backward` on host slices (see the trait for the contract).
/// `x`, `out`, `dx`: `p.len()` floats; `truths`: `p.batch * p.max_boxes * 5`;
/// `stats`: `crate::yolo_stats::STATS_LEN` floats, overwritten.
pub fn forward_backward_cpu(x: &[f32], out: &mut [f32], truths: &[f32], dx: &mut [f32], stats: &mut [f32], p: &YoloParams) {
    let _ = (x, out, truths, dx, stats, p);
    todo!("yolo loss: issue 3")
}
