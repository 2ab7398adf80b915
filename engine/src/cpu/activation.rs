//! Activations (shaders-wgsl/activation.wgsl), Darknet's formulas (darknet-spec §b).
//! Gradients come from the output `y` for leaky/relu/logistic/tanh/linear and from the
//! pre-activation `x` for mish/hard_mish/swish, as Darknet computes them.

use super::fused::{with_activation, with_gradient};
use super::par::{Inout, Par};
use crate::shapes::Activation;

const MISH_SOFTPLUS_THRESHOLD: f32 = 20.0;

fn logistic(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

fn tanh_darknet(x: f32) -> f32 {
    2.0 / (1.0 + (-2.0 * x).exp()) - 1.0
}

/// Darknet's softplus with a threshold: x above it, e^x below −threshold.
fn softplus(x: f32, threshold: f32) -> f32 {
    if x > threshold {
        x
    } else if x < -threshold {
        x.exp()
    } else {
        x.exp().ln_1p()
    }
}

/// f(x).
pub(super) fn activate(x: f32, act: Activation) -> f32 {
    match act {
        Activation::Linear => x,
        Activation::Logistic => logistic(x),
        Activation::Relu => x * if x > 0.0 { 1.0 } else { 0.0 },
        Activation::Leaky => if x > 0.0 { x } else { 0.1 * x },
        Activation::Tanh => tanh_darknet(x),
        Activation::Mish => x * tanh_darknet(softplus(x, MISH_SOFTPLUS_THRESHOLD)),
        Activation::Swish => x * logistic(x),
        Activation::HardMish => {
            if x > 0.0 {
                x
            } else if x > -2.0 {
                x * x / 2.0 + x
            } else {
                0.0
            }
        }
    }
}

/// f'(x) given the pre-activation `x` and the output `y = f(x)`.
pub(super) fn gradient(x: f32, y: f32, act: Activation) -> f32 {
    match act {
        Activation::Linear => 1.0,
        Activation::Logistic => (1.0 - y) * y,
        Activation::Relu => if y > 0.0 { 1.0 } else { 0.0 },
        Activation::Leaky => if y > 0.0 { 1.0 } else { 0.1 },
        Activation::Tanh => 1.0 - y * y,
        Activation::Mish => {
            let sp = softplus(x, MISH_SOFTPLUS_THRESHOLD);
            let grad_sp = 1.0 - (-sp).exp();
            let tsp = sp.tanh();
            let grad_tsp = (1.0 - tsp * tsp) * grad_sp;
            x * grad_tsp + tsp
        }
        Activation::Swish => {
            let s = logistic(x);
            y + s * (1.0 - y)
        }
        Activation::HardMish => {
            if x > 0.0 {
                1.0
            } else if x > -2.0 {
                x + 1.0
            } else {
                0.0
            }
        }
    }
}

/// y = f(x); y may be x itself.
pub(super) fn forward(par: &Par, io: Inout<'_>, act: Activation) {
    with_activation!(act, f => io.map(par, |_, v| f(v)));
}

/// dx = dy·f'(x); dx may be dy itself.
pub(super) fn backward(par: &Par, x: &[f32], y: &[f32], io: Inout<'_>, act: Activation) {
    for len in [x.len(), y.len()] {
        assert_eq!(io.len(), len, "cpu activation_backward: lengths differ");
    }
    with_gradient!(act, grad => io.map(par, |i, d| d * grad(x[i], y[i])));
}
