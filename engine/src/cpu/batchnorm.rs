//! Batch normalisation (shaders-wgsl/batchnorm.wgsl), darknet-spec §0/§b:
//! mean and unbiased variance Σ(x−mean)²/(N−1) over N = batch·spatial per channel, eps 1e-5
//! inside the root, running statistics `r = 0.99·r + 0.01·batch_stat`.
//! Sums are accumulated in f64 (deterministic, and the reference the GPU is compared to).
//! N = 1 would divide by zero; the divisor is then taken as 1 (Darknet gives NaN there).

use std::cell::Cell;

pub(super) const EPS: f32 = 1e-5;
const MOMENTUM: f32 = 0.99;

type C = [Cell<f32>];

pub(super) struct TrainBufs<'a> {
    pub x: &'a C,
    pub y: &'a C,
    pub x_norm: &'a C,
    pub mean: &'a C,
    pub var: &'a C,
    pub rolling_mean: &'a C,
    pub rolling_var: &'a C,
    pub gamma: &'a C,
    pub beta: &'a C,
}

fn check(op: &str, len: usize, per_channel: &[&C], batch: usize, channels: usize, spatial: usize, full: &[&C]) {
    assert_eq!(len, batch * channels * spatial, "cpu {op}: tensor length does not match batch·channels·spatial");
    for b in full {
        assert_eq!(b.len(), len, "cpu {op}: tensor lengths differ");
    }
    for b in per_channel {
        assert_eq!(b.len(), channels, "cpu {op}: per-channel buffer length != channels");
    }
}

/// Visits the N values of channel `c`: indices `(b·channels + c)·spatial + i`.
fn channel_indices(c: usize, batch: usize, channels: usize, spatial: usize) -> impl Iterator<Item = usize> {
    (0..batch).flat_map(move |b| {
        let base = (b * channels + c) * spatial;
        base..base + spatial
    })
}

fn unbiased_divisor(n: usize) -> f64 {
    (n.max(2) - 1) as f64
}

pub(super) fn forward_train(t: &TrainBufs<'_>, batch: usize, channels: usize, spatial: usize) {
    let per_channel = [t.mean, t.var, t.rolling_mean, t.rolling_var, t.gamma, t.beta];
    check("batchnorm_forward_train", t.x.len(), &per_channel, batch, channels, spatial, &[t.y, t.x_norm]);
    let n = batch * spatial;
    for c in 0..channels {
        let sum: f64 = channel_indices(c, batch, channels, spatial).map(|i| t.x[i].get() as f64).sum();
        let mean = sum / n as f64;
        let ss: f64 = channel_indices(c, batch, channels, spatial)
            .map(|i| {
                let d = t.x[i].get() as f64 - mean;
                d * d
            })
            .sum();
        let mean = mean as f32;
        let var = (ss / unbiased_divisor(n)) as f32;
        t.mean[c].set(mean);
        t.var[c].set(var);
        t.rolling_mean[c].set(MOMENTUM * t.rolling_mean[c].get() + (1.0 - MOMENTUM) * mean);
        t.rolling_var[c].set(MOMENTUM * t.rolling_var[c].get() + (1.0 - MOMENTUM) * var);
        let std = (var + EPS).sqrt();
        let (g, b) = (t.gamma[c].get(), t.beta[c].get());
        for i in channel_indices(c, batch, channels, spatial) {
            // x is read before y is written, so x may alias y.
            let xn = (t.x[i].get() - mean) / std;
            t.x_norm[i].set(xn);
            t.y[i].set(g * xn + b);
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) fn forward_infer(
    x: &C, y: &C, rolling_mean: &C, rolling_var: &C, gamma: &C, beta: &C,
    batch: usize, channels: usize, spatial: usize,
) {
    check("batchnorm_forward_infer", x.len(), &[rolling_mean, rolling_var, gamma, beta], batch, channels, spatial, &[y]);
    for c in 0..channels {
        let std = (rolling_var[c].get() + EPS).sqrt();
        let (m, g, b) = (rolling_mean[c].get(), gamma[c].get(), beta[c].get());
        for i in channel_indices(c, batch, channels, spatial) {
            y[i].set(g * ((x[i].get() - m) / std) + b);
        }
    }
}

/// dgamma += Σ dy·x_norm; dbeta += Σ dy;
/// dx = gamma/√(var+eps) · (dy − mean(dy) − x_norm·Σ(dy·x_norm)/(N−1)), overwritten (may alias dy).
#[allow(clippy::too_many_arguments)]
pub(super) fn backward(
    dy: &C, x_norm: &C, var: &C, gamma: &C, dgamma: &C, dbeta: &C, dx: &C,
    batch: usize, channels: usize, spatial: usize,
) {
    check("batchnorm_backward", dy.len(), &[var, gamma, dgamma, dbeta], batch, channels, spatial, &[x_norm, dx]);
    let n = batch * spatial;
    for c in 0..channels {
        let (mut s_dy, mut s_dyxn) = (0.0f64, 0.0f64);
        for i in channel_indices(c, batch, channels, spatial) {
            let d = dy[i].get() as f64;
            s_dy += d;
            s_dyxn += d * x_norm[i].get() as f64;
        }
        dgamma[c].set(dgamma[c].get() + s_dyxn as f32);
        dbeta[c].set(dbeta[c].get() + s_dy as f32);
        let mean_dy = (s_dy / n as f64) as f32;
        let proj = (s_dyxn / unbiased_divisor(n)) as f32;
        let k = gamma[c].get() / (var[c].get() + EPS).sqrt();
        for i in channel_indices(c, batch, channels, spatial) {
            dx[i].set(k * (dy[i].get() - mean_dy - x_norm[i].get() * proj));
        }
    }
}
