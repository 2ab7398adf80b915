//! [softmax] and its cross-entropy loss (shaders-wgsl/softmax.wgsl): softmax per group with
//! temperature, and Darknet's `softmax_x_ent` — cost −Σ t·ln p, gradient p − t w.r.t. the logits
//! (Darknet's delta t − p, negated as every gradient in the engine).

use std::cell::Cell;

use crate::shapes::{SECRET_NUM, SOFTMAX_MIN_PROB, SoftmaxShape};
use crate::yolo_stats as ys;

/// y = exp((x − max)/T) / Σ exp((x − max)/T) per group; y may alias x.
pub(super) fn forward(x: &[Cell<f32>], y: &[Cell<f32>], s: &SoftmaxShape) {
    assert_eq!(x.len(), s.len(), "cpu softmax_forward: x holds {} floats, the shape needs {}", x.len(), s.len());
    assert_eq!(y.len(), s.len(), "cpu softmax_forward: y holds {} floats, the shape needs {}", y.len(), s.len());
    let n = s.group_len();
    let inv_t = 1.0 / s.temperature;
    for r in 0..s.rows() {
        let (xr, yr) = (&x[r * n..(r + 1) * n], &y[r * n..(r + 1) * n]);
        let max = xr.iter().map(Cell::get).fold(f32::NEG_INFINITY, f32::max);
        // Summed in the kernel's order (element order, f32), so both backends round alike.
        let mut sum = 0.0f32;
        for (yv, xv) in yr.iter().zip(xr) {
            let e = ((xv.get() - max) * inv_t).exp();
            sum += e;
            yv.set(e);
        }
        for yv in yr {
            yv.set(yv.get() / sum);
        }
    }
}

/// dx = y − t (0 where t is [`SECRET_NUM`]), overwritten; the stats record gets the cost
/// Σ −t·ln y (t ≠ 0, unmasked) in COST, CLASS_LOSS and CLS_ONLY_LOSS, every other slot 0.
pub(super) fn loss(y: &[f32], truth: &[f32], dx: &mut [f32], stats: &mut [f32], s: &SoftmaxShape) {
    assert!(y.len() == s.len() && truth.len() == s.len() && dx.len() == s.len(), "cpu softmax_loss: lengths differ from the shape");
    assert!(stats.len() >= ys::STATS_LEN, "cpu softmax_loss: stats holds {} floats, need {}", stats.len(), ys::STATS_LEN);
    let mut cost = 0.0f64;
    for ((d, &p), &t) in dx.iter_mut().zip(y).zip(truth) {
        if t == SECRET_NUM {
            *d = 0.0;
            continue;
        }
        *d = p - t;
        if t != 0.0 {
            cost += f64::from(-t * p.max(SOFTMAX_MIN_PROB).ln());
        }
    }
    write_cost(stats, cost as f32);
}

/// A classifier loss layer's statistics record: the cost in the slots the trainer splits into
/// loss parts (all of it is the "class" part), everything else 0.
pub(super) fn write_cost(stats: &mut [f32], cost: f32) {
    stats[..ys::STATS_LEN].fill(0.0);
    stats[ys::COST] = cost;
    stats[ys::CLASS_LOSS] = cost;
    stats[ys::CLS_ONLY_LOSS] = cost;
}
