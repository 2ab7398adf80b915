//! Learning-rate schedule: Darknet's `get_current_rate` (darknet-spec §c).
//!
//! `batch_num` is the 1-based iteration whose update is being made (Darknet's
//! seen / (batch · subdivisions) at update time). Arithmetic follows Darknet's mix of float
//! ratios and double `pow`/`exp`/`cos`, rounded to f32 at the end.

use crate::cfg::{NetConfig, Policy};

/// The rate for iteration `batch_num`. For `policy=random`, which needs a uniform draw, this uses
/// U = 1 (the base rate); trainers call [`learning_rate_with_draw`] with a draw from their stream.
pub fn learning_rate(net: &NetConfig, batch_num: u64) -> f32 {
    learning_rate_with_draw(net, batch_num, None)
}

/// As [`learning_rate`], with `uniform` ∈ [0, 1) used by `policy=random` (lr · U^power).
pub fn learning_rate_with_draw(net: &NetConfig, batch_num: u64, uniform: Option<f32>) -> f32 {
    let lr = net.learning_rate as f64;
    let n = batch_num;
    if n < net.burn_in {
        let ratio = n as f32 / net.burn_in as f32;
        return (lr * (ratio as f64).powf(net.power as f64)) as f32;
    }
    let rate = match &net.policy {
        Policy::Constant => lr,
        // Integer division: the rate drops once per `step` iterations.
        Policy::Step { step, scale } => lr * (*scale as f64).powi((n / (*step).max(1)) as i32),
        Policy::Steps { steps, scales } => {
            let mut rate = net.learning_rate;
            for (&s, &scale) in steps.iter().zip(scales) {
                if s > n {
                    break;
                }
                rate *= scale;
            }
            rate as f64
        }
        Policy::Exp { gamma } => lr * (*gamma as f64).powf(n as f64),
        Policy::Poly => {
            let left = 1.0 - n as f32 / net.max_batches as f32;
            lr * (left as f64).powf(net.power as f64)
        }
        Policy::Sig { gamma, step } => {
            let x = gamma * (n as i64 - *step as i64) as f32;
            lr * (1.0 / (1.0 + (x as f64).exp()))
        }
        Policy::Random => lr * (uniform.unwrap_or(1.0) as f64).powf(net.power as f64),
        Policy::Sgdr { cycle, mult } => {
            // Find the cycle containing n: cycles are cycle, cycle·mult, cycle·mult², …
            // (a cycle ends inclusively at its last iteration, as in Darknet).
            let (mut start, mut size) = (0u64, (*cycle).max(1));
            while start + size < n {
                start += size;
                size = size.saturating_mul((*mult).max(1) as u64);
            }
            let min = net.learning_rate_min as f64;
            let angle = (n - start) as f32 as f64 * std::f64::consts::PI / size as f64;
            min + 0.5 * (lr - min) * (1.0 + angle.cos())
        }
    };
    rate as f32
}
