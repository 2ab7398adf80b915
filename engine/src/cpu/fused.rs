//! Fused kernels behind the composite ops (the CPU twins of the GPU's fused kernels): batch norm
//! with its activation, the activation's backward with batch norm's or the bias's, and the conv
//! bias with the activation. Each makes one pass over memory where the plain ops make two or
//! three, and does the plain ops' arithmetic in their order (the statistics through the same
//! functions), so the results equal the reference's bit for bit (tests/cpu_backend.rs).
//!
//! Work items are channels (a channel's values lie in one plane per image): an item reads and
//! writes only its channel, so items never share a float, and each channel's sums keep the
//! plain loop's order whatever thread runs it.

use super::activation::{activate, gradient};
use super::batchnorm::{BackwardCoefficients, EPS, LANES, accurate_stats_interleaved, channel_stats, lanes_backward_sums, rolled};
use super::par::{self, Inout, Par, SharedMut};
use crate::shapes::{Activation, BnBackward, BnStats, ChannelShape};

/// Runs `$body` with `$f` bound to `act`'s function as a closure the compiler inlines (one
/// specialised loop per activation instead of a branch per float).
macro_rules! with_activation {
    ($act:expr, $f:ident => $body:expr) => {
        match $act {
            Activation::Linear => { let $f = |v: f32| v; $body }
            Activation::Leaky => { let $f = |v: f32| activate(v, Activation::Leaky); $body }
            Activation::Relu => { let $f = |v: f32| activate(v, Activation::Relu); $body }
            Activation::Logistic => { let $f = |v: f32| activate(v, Activation::Logistic); $body }
            Activation::Tanh => { let $f = |v: f32| activate(v, Activation::Tanh); $body }
            Activation::Mish => { let $f = |v: f32| activate(v, Activation::Mish); $body }
            Activation::Swish => { let $f = |v: f32| activate(v, Activation::Swish); $body }
            Activation::HardMish => { let $f = |v: f32| activate(v, Activation::HardMish); $body }
        }
    };
}

/// The same for the derivative `f'(x, y)`.
macro_rules! with_gradient {
    ($act:expr, $f:ident => $body:expr) => {
        match $act {
            Activation::Linear => { let $f = |_: f32, _: f32| 1.0f32; $body }
            Activation::Leaky => { let $f = |x: f32, y: f32| gradient(x, y, Activation::Leaky); $body }
            Activation::Relu => { let $f = |x: f32, y: f32| gradient(x, y, Activation::Relu); $body }
            Activation::Logistic => { let $f = |x: f32, y: f32| gradient(x, y, Activation::Logistic); $body }
            Activation::Tanh => { let $f = |x: f32, y: f32| gradient(x, y, Activation::Tanh); $body }
            Activation::Mish => { let $f = |x: f32, y: f32| gradient(x, y, Activation::Mish); $body }
            Activation::Swish => { let $f = |x: f32, y: f32| gradient(x, y, Activation::Swish); $body }
            Activation::HardMish => { let $f = |x: f32, y: f32| gradient(x, y, Activation::HardMish); $body }
        }
    };
}

pub(super) use {with_activation, with_gradient};

/// Where a fused forward writes: `y = act(v)`, and `v` itself into `pre` when given.
pub(super) struct ActOut<'a> {
    pub pre: Option<&'a mut [f32]>,
    pub act: Activation,
}

/// The running and batch statistics and the affine parameters of one BN layer.
pub(super) struct BnState<'a> {
    pub mean: &'a mut [f32],
    pub var: &'a mut [f32],
    pub rolling_mean: &'a mut [f32],
    pub rolling_var: &'a mut [f32],
    pub gamma: &'a [f32],
    pub beta: &'a [f32],
}

/// Training batch norm then activation (`x → y` may run in place): per channel the statistics,
/// then one pass writing `x_norm`, `pre` and `y`.
pub(super) fn batchnorm_activation_forward(
    par: &Par, io: Inout<'_>, x_norm: &mut [f32], out: ActOut<'_>, bn: BnState<'_>, s: &ChannelShape, stats: BnStats,
) {
    let (batch, channels, spatial) = (s.batch, s.channels, s.spatial);
    assert_eq!(io.len(), s.len(), "cpu batchnorm_activation_forward: tensor length does not match batch·channels·spatial");
    assert_eq!(x_norm.len(), s.len(), "cpu batchnorm_activation_forward: tensor lengths differ");
    for v in [&*bn.mean, &*bn.var, &*bn.rolling_mean, &*bn.rolling_var, bn.gamma, bn.beta] {
        assert_eq!(v.len(), channels, "cpu batchnorm_activation_forward: per-channel buffer length != channels");
    }
    let (x, y) = match io {
        Inout::Same(y) => (None, SharedMut::new(y)),
        Inout::Split(x, y) => (Some(x), SharedMut::new(y)),
    };
    let xn = SharedMut::new(x_norm);
    let pre = out.pre.map(|p| {
        assert_eq!(p.len(), s.len(), "cpu batchnorm_activation_forward: pre-activation length");
        SharedMut::new(p)
    });
    let (gamma, beta) = (bn.gamma, bn.beta);
    // One pass over channel c: x_norm, pre and y from its statistics.
    // SAFETY (every unsafe block in it): called by the item that owns channel c, which alone
    // reads or writes channel c's planes (b·channels + c)·spatial.. of y, x_norm and pre.
    let normalize = |c: usize, mean: f32, var: f32| {
        let std = (var + EPS).sqrt();
        let (g, b) = (gamma[c], beta[c]);
        with_activation!(out.act, f => {
            for img in 0..batch {
                let r = (img * channels + c) * spatial..(img * channels + c + 1) * spatial;
                let (yp, xnp) = unsafe { (y.slice_mut(r.clone()), xn.slice_mut(r.clone())) };
                let pp = pre.map(|p| unsafe { p.slice_mut(r.clone()) });
                let norm = |xv: f32| (xv - mean) / std;
                // x is read before y is written, so x may be y itself.
                match (x, pp) {
                    (Some(x), None) => {
                        for ((yv, nv), &xv) in yp.iter_mut().zip(xnp).zip(&x[r]) {
                            *nv = norm(xv);
                            *yv = f(g * *nv + b);
                        }
                    }
                    (None, None) => {
                        for (yv, nv) in yp.iter_mut().zip(xnp) {
                            *nv = norm(*yv);
                            *yv = f(g * *nv + b);
                        }
                    }
                    (Some(x), Some(pp)) => {
                        for (((yv, nv), pv), &xv) in yp.iter_mut().zip(xnp).zip(pp).zip(&x[r]) {
                            *nv = norm(xv);
                            *pv = g * *nv + b;
                            *yv = f(*pv);
                        }
                    }
                    (None, Some(pp)) => {
                        for ((yv, nv), pv) in yp.iter_mut().zip(xnp).zip(pp) {
                            *nv = norm(*yv);
                            *pv = g * *nv + b;
                            *yv = f(*pv);
                        }
                    }
                }
            }
        });
    };
    // Items are runs of LANES channels, whose statistics are summed side by side.
    let result = par.map(channels.div_ceil(LANES), |item| par::wide(#[inline(always)] || {
        let cs = item * LANES..((item + 1) * LANES).min(channels);
        // SAFETY (every unsafe block below): item alone reads or writes the floats of its
        // channels, the planes (b·channels + c)·spatial.. of y, x_norm and pre.
        let read = |i: usize| match x {
            Some(x) => x[i],
            None => unsafe { y.read_at(i) },
        };
        let found: Vec<(f32, f32)> = if cs.len() == LANES && stats == BnStats::Accurate {
            let planes = |b: usize| -> [&[f32]; LANES] {
                std::array::from_fn(|j| {
                    let r = (b * channels + cs.start + j) * spatial..(b * channels + cs.start + j + 1) * spatial;
                    match x {
                        Some(x) => &x[r],
                        None => &*unsafe { y.slice_mut(r) },
                    }
                })
            };
            accurate_stats_interleaved(planes, batch, spatial).to_vec()
        } else {
            cs.clone().map(|c| channel_stats(read, c, batch, channels, spatial, stats)).collect()
        };
        for (c, &(mean, var)) in cs.zip(&found) {
            normalize(c, mean, var);
        }
        found
    }));
    for (c, (mean, var)) in result.into_iter().flatten().enumerate() {
        bn.mean[c] = mean;
        bn.var[c] = var;
        bn.rolling_mean[c] = rolled(bn.rolling_mean[c], mean);
        bn.rolling_var[c] = rolled(bn.rolling_var[c], var);
    }
}

/// Backward of [`batchnorm_activation_forward`]: `delta` (dL/dy) becomes dL/dx; per channel
/// one pass applies the activation's derivative and sums Σdy, Σdy·x_norm, a second writes dx.
#[allow(clippy::too_many_arguments)]
pub(super) fn activation_batchnorm_backward(
    par: &Par, delta: &mut [f32], y: Option<&[f32]>, x: Option<&[f32]>, x_norm: &[f32], var: &[f32], gamma: &[f32],
    dgamma: &mut [f32], dbeta: &mut [f32], act: Activation, s: &ChannelShape, form: BnBackward,
) {
    let (batch, channels, spatial) = (s.batch, s.channels, s.spatial);
    // No output (a linear activation, whose derivative never reads it): x_norm stands in, unread.
    let y = y.unwrap_or(x_norm);
    for len in [y.len(), x_norm.len(), x.map_or(s.len(), <[f32]>::len)] {
        assert_eq!(len, delta.len(), "cpu activation_batchnorm_backward: tensor lengths differ");
    }
    assert_eq!(delta.len(), s.len(), "cpu activation_batchnorm_backward: tensor length does not match batch·channels·spatial");
    for v in [var, gamma, &*dgamma, &*dbeta] {
        assert_eq!(v.len(), channels, "cpu activation_batchnorm_backward: per-channel buffer length != channels");
    }
    let x = x.unwrap_or(y);
    let d = SharedMut::new(delta);
    let n = batch * spatial;
    let plane = move |img: usize, c: usize| (img * channels + c) * spatial..(img * channels + c + 1) * spatial;
    // Items are runs of LANES channels: per image the derivative plane by plane, then the sums
    // of the run's channels side by side, each channel's chain in its own (the plain loop's)
    // order, so the independent f64 additions overlap instead of each waiting for the last.
    let sums = par.map(channels.div_ceil(LANES), |item| par::wide(#[inline(always)] || {
        let cs = item * LANES..((item + 1) * LANES).min(channels);
        let (mut s_dy, mut s_dyxn) = ([0.0f64; LANES], [0.0f64; LANES]);
        for img in 0..batch {
            if act != Activation::Linear {
                with_gradient!(act, grad => for c in cs.clone() {
                    let r = plane(img, c);
                    // SAFETY: the item alone touches its channels' planes of delta.
                    let dp = unsafe { d.slice_mut(r.clone()) };
                    for ((dv, &xv), &yv) in dp.iter_mut().zip(&x[r.clone()]).zip(&y[r]) {
                        *dv *= grad(xv, yv);
                    }
                });
            }
            // SAFETY: as above; only read here.
            let dps: Vec<&[f32]> = cs.clone().map(|c| &*unsafe { d.slice_mut(plane(img, c)) }).collect();
            let nps: Vec<&[f32]> = cs.clone().map(|c| &x_norm[plane(img, c)]).collect();
            if let (Ok(dps), Ok(nps)) = (<[&[f32]; LANES]>::try_from(dps.as_slice()), <[&[f32]; LANES]>::try_from(nps.as_slice())) {
                lanes_backward_sums(&dps, &nps, &mut s_dy, &mut s_dyxn);
            } else {
                for (j, (dp, np)) in dps.iter().zip(&nps).enumerate() {
                    for (&g, &nv) in dp.iter().zip(*np) {
                        let gd = g as f64;
                        s_dy[j] += gd;
                        s_dyxn[j] += gd * nv as f64;
                    }
                }
            }
        }
        for (j, c) in cs.clone().enumerate() {
            let k = BackwardCoefficients::new(s_dy[j], s_dyxn[j], n, var[c], gamma[c], form);
            for img in 0..batch {
                let r = plane(img, c);
                // SAFETY: as above.
                let dp = unsafe { d.slice_mut(r.clone()) };
                for (dv, &nv) in dp.iter_mut().zip(&x_norm[r]) {
                    *dv = k.dx(*dv, nv);
                }
            }
        }
        cs.map(|c| (s_dy[c % LANES], s_dyxn[c % LANES])).collect::<Vec<_>>()
    }));
    for (c, (s_dy, s_dyxn)) in sums.into_iter().flatten().enumerate() {
        dgamma[c] += s_dyxn as f32;
        dbeta[c] += s_dy as f32;
    }
}

/// `y = act(y + bias[c])` after a convolution wrote `y` (or into `pre` first, then `y = act(pre)`,
/// when the activation's backward needs its input), one item per plane.
pub(super) fn bias_activation(par: &Par, target: &mut [f32], y: Option<&mut [f32]>, bias: &[f32], act: Activation, s: &ChannelShape) {
    assert_eq!(target.len(), s.len(), "cpu conv_bias_activation_forward: output length");
    assert_eq!(bias.len(), s.channels, "cpu conv_bias_activation_forward: bias length");
    let spatial = s.spatial.max(1);
    match y {
        None => with_activation!(act, f => par.chunks(target, spatial, |r, plane| {
            let b = bias[(r.start / spatial) % s.channels];
            for v in plane {
                *v = f(*v + b);
            }
        })),
        Some(y) => {
            assert_eq!(y.len(), s.len(), "cpu conv_bias_activation_forward: output length");
            let out = SharedMut::new(y);
            with_activation!(act, f => par.chunks(target, spatial, |r, plane| {
                let b = bias[(r.start / spatial) % s.channels];
                // SAFETY: each plane item writes its own plane of y.
                let yp = unsafe { out.slice_mut(r) };
                for (p, o) in plane.iter_mut().zip(yp) {
                    *p += b;
                    *o = f(*p);
                }
            }))
        }
    }
}

/// Backward of [`bias_activation`]: `delta` becomes dL/d(conv output), dbias accumulates; one
/// item per channel (the derivative, then the channel's sum in the plain op's order).
pub(super) fn activation_bias_backward(
    par: &Par, delta: &mut [f32], y: Option<&[f32]>, x: Option<&[f32]>, dbias: &mut [f32], act: Activation, s: &ChannelShape,
) {
    let (batch, channels, spatial) = (s.batch, s.channels, s.spatial);
    assert_eq!(delta.len(), s.len(), "cpu activation_bias_backward: gradient length");
    assert_eq!(dbias.len(), channels, "cpu activation_bias_backward: bias length");
    // No output: a linear activation, whose derivative is never taken.
    assert!(y.is_some() || act == Activation::Linear, "cpu activation_bias_backward: a non-linear activation needs its output");
    let y = y.unwrap_or(&[]);
    let x = x.unwrap_or(y);
    assert!(act == Activation::Linear || (x.len() == delta.len() && y.len() == delta.len()), "cpu activation_bias_backward: tensor lengths differ");
    let d = SharedMut::new(delta);
    let sums = par.map(channels, |c| {
        let mut acc = 0.0f64;
        with_gradient!(act, grad => for img in 0..batch {
            let r = (img * channels + c) * spatial..(img * channels + c + 1) * spatial;
            // SAFETY: item c alone touches channel c's planes of delta.
            let dp = unsafe { d.slice_mut(r.clone()) };
            if act != Activation::Linear {
                for ((dv, &xv), &yv) in dp.iter_mut().zip(&x[r.clone()]).zip(&y[r]) {
                    *dv *= grad(xv, yv);
                }
            }
            // The plain op's sum: per image plane, then added up in image order.
            acc += dp.iter().map(|&v| v as f64).sum::<f64>();
        });
        acc
    });
    for (db, s) in dbias.iter_mut().zip(sums) {
        *db += s as f32;
    }
}
