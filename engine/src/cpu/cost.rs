//! [cost] (shaders-wgsl/cost.wgsl): the per-element error of a layer's input against the truth,
//! d = t − x, and the gradient −delta of Darknet's l2/smooth-L1 (see [`CostKind`]). The layer's
//! backward (an axpy by `scale`) is the network's, not an op.

use crate::shapes::{CostKind, SECRET_NUM};

/// error (Darknet's l.output) and dx = −delta, both overwritten; the stats record gets Σ error.
pub(super) fn forward(kind: CostKind, x: &[f32], truth: &[f32], error: &mut [f32], dx: &mut [f32], stats: &mut [f32]) {
    assert!(truth.len() == x.len() && error.len() == x.len() && dx.len() == x.len(), "cpu cost_forward: lengths differ");
    let mut cost = 0.0f64;
    for (((e, g), &xv), &t) in error.iter_mut().zip(dx.iter_mut()).zip(x).zip(truth) {
        let (err, delta) = element(kind, xv, t);
        *e = err;
        *g = -delta;
        cost += f64::from(err);
    }
    super::softmax::write_cost(stats, cost as f32);
}

/// (error, Darknet delta) of one element.
fn element(kind: CostKind, x: f32, t: f32) -> (f32, f32) {
    if kind == CostKind::Masked && t == SECRET_NUM {
        return (0.0, 0.0);
    }
    let d = t - x;
    if kind == CostKind::Smooth && d.abs() >= 1.0 {
        return (2.0 * d.abs() - 1.0, d.signum());
    }
    (d * d, d)
}
