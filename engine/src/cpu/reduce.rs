//! Reductions into one float (shaders-wgsl/reduce.wgsl): sequential f64 sums, so the result is
//! deterministic and accurate (the GPU's pairwise f32 tree is compared against it).

use std::cell::Cell;

use super::par::{CHUNK, Par};

pub(super) fn sum(x: &[Cell<f32>]) -> f32 {
    x.iter().map(|v| v.get() as f64).sum::<f64>() as f32
}

pub(super) fn sum_squares(x: &[Cell<f32>]) -> f32 {
    x.iter()
        .map(|v| {
            let v = v.get() as f64;
            v * v
        })
        .sum::<f64>() as f32
}

/// Whether any float is NaN or ±Inf: chunks on the workers, each folded without an early exit
/// (so it vectorises); the flags are OR-ed.
pub(super) fn any_nonfinite(par: &Par, x: &[f32]) -> bool {
    let pieces = x.len().div_ceil(CHUNK);
    par.map(pieces, |p| x[p * CHUNK..((p + 1) * CHUNK).min(x.len())].iter().fold(false, |bad, v| bad | !v.is_finite()))
        .into_iter()
        .any(|bad| bad)
}
