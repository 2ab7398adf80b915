//! Dropout with the counter-based mask of `crate::rng` (shaders-wgsl/dropout.wgsl): element `i`
//! of the view is kept when `dropout_keep(seed, i, p)`, and kept values are scaled by 1/(1−p).

use std::cell::Cell;

use crate::rng::dropout_keep;

fn index(i: usize) -> u32 {
    u32::try_from(i).expect("cpu dropout: tensor larger than 2³² elements")
}

/// y = keep ? x/(1−p) : 0; y may alias x.
pub(super) fn forward(x: &[Cell<f32>], y: &[Cell<f32>], p: f32, seed: u64) {
    assert_eq!(x.len(), y.len(), "cpu dropout_forward: lengths differ");
    let scale = 1.0 / (1.0 - p);
    for (i, (y, x)) in y.iter().zip(x).enumerate() {
        y.set(if dropout_keep(seed, index(i), p) { x.get() * scale } else { 0.0 });
    }
}

/// dx += keep ? dy/(1−p) : 0.
pub(super) fn backward(dy: &[Cell<f32>], dx: &[Cell<f32>], p: f32, seed: u64) {
    assert_eq!(dy.len(), dx.len(), "cpu dropout_backward: lengths differ");
    let scale = 1.0 / (1.0 - p);
    for (i, (d, g)) in dx.iter().zip(dy).enumerate() {
        if dropout_keep(seed, index(i), p) {
            d.set(d.get() + g.get() * scale);
        }
    }
}
