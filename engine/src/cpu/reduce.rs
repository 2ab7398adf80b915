//! Reductions into one float (shaders-wgsl/reduce.wgsl): sequential f64 sums, so the result is
//! deterministic and accurate (the GPU's pairwise f32 tree is compared against it).

use std::cell::Cell;

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

pub(super) fn any_nonfinite(x: &[Cell<f32>]) -> bool {
    x.iter().any(|v| !v.get().is_finite())
}
