//! Batch normalisation (shaders-wgsl/batchnorm.wgsl), darknet-spec §0/§b:
//! mean and unbiased variance Σ(x−mean)²/(N−1) over N = batch·spatial per channel, eps 1e-5
//! inside the root, running statistics `r = 0.99·r + 0.01·batch_stat`.
//! Sums are accumulated in f64 (deterministic, and the reference the GPU is compared to); the
//! training forward can instead sum as Darknet's CPU build does ([`BnStats::DarknetCpu`]).
//! N = 1 would divide by zero; the divisor is then taken as 1 (Darknet gives NaN there).

use std::cell::Cell;

use crate::shapes::{BnBackward, BnStats};

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

/// Batch mean and unbiased variance of channel `c`, summed in f64. `x(i)` reads flat index `i`
/// (shared by the plain op on cells and the fused kernel on slices: one arithmetic).
pub(super) fn accurate_stats(x: impl Fn(usize) -> f32, c: usize, batch: usize, channels: usize, spatial: usize) -> (f32, f32) {
    let n = batch * spatial;
    let sum: f64 = channel_indices(c, batch, channels, spatial).map(|i| x(i) as f64).sum();
    let mean = sum / n as f64;
    let ss: f64 = channel_indices(c, batch, channels, spatial)
        .map(|i| {
            let d = x(i) as f64 - mean;
            d * d
        })
        .sum();
    (mean as f32, (ss / unbiased_divisor(n)) as f32)
}

/// The same statistics as Darknet's CPU build sums them (`mean_cpu`, `variance_cpu`): an f32
/// running sum, element by element; `pow(d, 2)` is a double that the f32 sum absorbs with one
/// rounding; the scales are `(float)(1.0/N)` and `(float)(1.0/(N−1))`, multiplied, not divided.
pub(super) fn darknet_cpu_stats(x: impl Fn(usize) -> f32, c: usize, batch: usize, channels: usize, spatial: usize) -> (f32, f32) {
    let n = batch * spatial;
    let mut mean = 0.0f32;
    for i in channel_indices(c, batch, channels, spatial) {
        mean += x(i);
    }
    mean *= (1.0 / n as f64) as f32;
    let mut var = 0.0f32;
    for i in channel_indices(c, batch, channels, spatial) {
        let d = (x(i) - mean) as f64;
        var = (var as f64 + d * d) as f32;
    }
    var *= (1.0 / unbiased_divisor(n)) as f32;
    (mean, var)
}

/// Channels whose sums [`accurate_stats_interleaved`] runs side by side.
pub(super) const LANES: usize = 8;

/// [`accurate_stats`] of LANES channels with their loops interleaved: each channel's f64 sums
/// take its values in the same order from the same starting value (`f64`'s own `sum`), so every
/// result is bit for bit the single channel's, but the LANES independent chains of additions
/// overlap instead of each waiting for its previous add. `planes(b)`: image b's plane of each
/// channel (`spatial` floats each).
pub(super) fn accurate_stats_interleaved<'a>(planes: impl Fn(usize) -> [&'a [f32]; LANES], batch: usize, spatial: usize) -> [(f32, f32); LANES] {
    let n = batch * spatial;
    let zero: f64 = std::iter::empty::<f64>().sum();
    let pass = |mean: Option<&[f64; LANES]>| {
        let mut acc = [zero; LANES];
        for b in 0..batch {
            let p = planes(b);
            assert!(p.iter().all(|v| v.len() == spatial), "cpu batchnorm: plane length != spatial");
            lanes_pass(&p, &mut acc, mean);
        }
        acc
    };
    let sums = pass(None);
    let means: [f64; LANES] = std::array::from_fn(|j| sums[j] / n as f64);
    let squares = pass(Some(&means));
    std::array::from_fn(|j| (means[j] as f32, (squares[j] / unbiased_divisor(n)) as f32))
}

/// Rows `r[j]` (channel j's values at 8 positions) to `t[q]` (the 8 channels' values at position q).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
fn transpose8(r: [std::arch::x86_64::__m256; 8]) -> [std::arch::x86_64::__m256; 8] {
    use std::arch::x86_64::*;
    let t0 = _mm256_unpacklo_ps(r[0], r[1]);
    let t1 = _mm256_unpackhi_ps(r[0], r[1]);
    let t2 = _mm256_unpacklo_ps(r[2], r[3]);
    let t3 = _mm256_unpackhi_ps(r[2], r[3]);
    let t4 = _mm256_unpacklo_ps(r[4], r[5]);
    let t5 = _mm256_unpackhi_ps(r[4], r[5]);
    let t6 = _mm256_unpacklo_ps(r[6], r[7]);
    let t7 = _mm256_unpackhi_ps(r[6], r[7]);
    let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
    let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
    let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
    let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
    let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
    let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
    let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
    let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
    [
        _mm256_permute2f128_ps::<0x20>(u0, u4),
        _mm256_permute2f128_ps::<0x20>(u1, u5),
        _mm256_permute2f128_ps::<0x20>(u2, u6),
        _mm256_permute2f128_ps::<0x20>(u3, u7),
        _mm256_permute2f128_ps::<0x31>(u0, u4),
        _mm256_permute2f128_ps::<0x31>(u1, u5),
        _mm256_permute2f128_ps::<0x31>(u2, u6),
        _mm256_permute2f128_ps::<0x31>(u3, u7),
    ]
}

/// Eight floats of each of 8 planes from position `i`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
fn rows8(p: &[&[f32]; LANES], i: usize) -> [std::arch::x86_64::__m256; 8] {
    // SAFETY: the slice bounds are checked first.
    std::array::from_fn(|j| unsafe { std::arch::x86_64::_mm256_loadu_ps(p[j][i..i + 8].as_ptr()) })
}

/// The backward's sums over one image's planes of LANES channels, `s_dy[j] += dy`,
/// `s_dyxn[j] += dy·x_norm` in f64, each channel's in the order of its values.
pub(super) fn lanes_backward_sums(dy: &[&[f32]; LANES], xn: &[&[f32]; LANES], s_dy: &mut [f64; LANES], s_dyxn: &mut [f64; LANES]) {
    let spatial = dy[0].len();
    assert!(dy.iter().chain(xn).all(|v| v.len() == spatial), "cpu batchnorm: plane lengths differ");
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))] // only the AVX-512 path sets it
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F (checked above).
        done = unsafe { lanes_backward_sums_avx512(dy, xn, s_dy, s_dyxn) };
    }
    for i in done..spatial {
        for j in 0..LANES {
            let gd = dy[j][i] as f64;
            s_dy[j] += gd;
            s_dyxn[j] += gd * xn[j][i] as f64;
        }
    }
}

/// [`lanes_backward_sums`] 8 positions at a time, the channels as vector lanes (as
/// [`lanes_pass_avx512`]); returns the positions done.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn lanes_backward_sums_avx512(dy: &[&[f32]; LANES], xn: &[&[f32]; LANES], s_dy: &mut [f64; LANES], s_dyxn: &mut [f64; LANES]) -> usize {
    use std::arch::x86_64::*;
    let blocks = dy[0].len() / 8;
    // SAFETY (the loads and the stores): 8 f64 each, the arrays' lengths.
    let (mut a, mut b) = unsafe { (_mm512_loadu_pd(s_dy.as_ptr()), _mm512_loadu_pd(s_dyxn.as_ptr())) };
    for blk in 0..blocks {
        let (g, x) = (transpose8(rows8(dy, blk * 8)), transpose8(rows8(xn, blk * 8)));
        for q in 0..8 {
            let gd = _mm512_cvtps_pd(g[q]);
            a = _mm512_add_pd(a, gd);
            b = _mm512_add_pd(b, _mm512_mul_pd(gd, _mm512_cvtps_pd(x[q])));
        }
    }
    unsafe {
        _mm512_storeu_pd(s_dy.as_mut_ptr(), a);
        _mm512_storeu_pd(s_dyxn.as_mut_ptr(), b);
    }
    blocks * 8
}

/// One image's share of a pass of [`accurate_stats_interleaved`]: `acc[j] += x` (no mean) or
/// `acc[j] += (x − mean[j])²` over plane j's values in order.
fn lanes_pass(p: &[&[f32]; LANES], acc: &mut [f64; LANES], mean: Option<&[f64; LANES]>) {
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))] // only the AVX-512 path sets it
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F (checked above).
        done = unsafe { lanes_pass_avx512(p, acc, mean) };
    }
    let spatial = p[0].len();
    for i in done..spatial {
        for (j, (a, plane)) in acc.iter_mut().zip(p).enumerate() {
            let v = plane[i] as f64;
            *a += match mean {
                None => v,
                Some(m) => (v - m[j]) * (v - m[j]),
            };
        }
    }
}

/// [`lanes_pass`] eight positions at a time with the LANES = 8 channels as the eight f64 lanes of
/// one vector (an 8×8 transpose of the planes' floats): each lane does its channel's scalar
/// operations in the scalar order (separate multiply and add, as there). Returns the positions
/// done (a multiple of 8); the caller does the rest.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn lanes_pass_avx512(p: &[&[f32]; LANES], acc: &mut [f64; LANES], mean: Option<&[f64; LANES]>) -> usize {
    use std::arch::x86_64::*;
    const { assert!(LANES == 8) };
    let spatial = p[0].len();
    let blocks = spatial / 8;
    // SAFETY (the loads and the store): 8 f64 each, the arrays' lengths.
    let mut a = unsafe { _mm512_loadu_pd(acc.as_ptr()) };
    let m = unsafe { _mm512_loadu_pd(mean.unwrap_or(&[0.0; LANES]).as_ptr()) };
    for blk in 0..blocks {
        for tq in transpose8(rows8(p, blk * 8)) {
            let v = _mm512_cvtps_pd(tq);
            a = match mean {
                None => _mm512_add_pd(a, v),
                Some(_) => {
                    let d = _mm512_sub_pd(v, m);
                    _mm512_add_pd(a, _mm512_mul_pd(d, d))
                }
            };
        }
    }
    unsafe { _mm512_storeu_pd(acc.as_mut_ptr(), a) };
    blocks * 8
}

/// Mean and variance of channel `c` summed as `stats` says.
pub(super) fn channel_stats(x: impl Fn(usize) -> f32, c: usize, batch: usize, channels: usize, spatial: usize, stats: BnStats) -> (f32, f32) {
    match stats {
        BnStats::Accurate => accurate_stats(x, c, batch, channels, spatial),
        BnStats::DarknetCpu => darknet_cpu_stats(x, c, batch, channels, spatial),
    }
}

/// A running statistic after one batch: `0.99·r + 0.01·batch_stat`.
pub(super) fn rolled(running: f32, batch_stat: f32) -> f32 {
    MOMENTUM * running + (1.0 - MOMENTUM) * batch_stat
}

pub(super) fn forward_train(t: &TrainBufs<'_>, batch: usize, channels: usize, spatial: usize, stats: BnStats) {
    let per_channel = [t.mean, t.var, t.rolling_mean, t.rolling_var, t.gamma, t.beta];
    check("batchnorm_forward_train", t.x.len(), &per_channel, batch, channels, spatial, &[t.y, t.x_norm]);
    for c in 0..channels {
        let (mean, var) = channel_stats(|i| t.x[i].get(), c, batch, channels, spatial, stats);
        t.mean[c].set(mean);
        t.var[c].set(var);
        t.rolling_mean[c].set(rolled(t.rolling_mean[c].get(), mean));
        t.rolling_var[c].set(rolled(t.rolling_var[c].get(), var));
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

/// dgamma += Σ dy·x_norm; dbeta += Σ dy; dx overwritten (may alias dy):
/// exact: gamma/√(var+eps) · (dy − mean(dy) − x_norm·Σ(dy·x_norm)/(N−1));
/// Darknet CPU: gamma·dy/(√var+eps) − gamma/√(var+eps) · (mean(dy) + x_norm·Σ(dy·x_norm)/N).
#[allow(clippy::too_many_arguments)]
pub(super) fn backward(
    dy: &C, x_norm: &C, var: &C, gamma: &C, dgamma: &C, dbeta: &C, dx: &C,
    batch: usize, channels: usize, spatial: usize, form: BnBackward,
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
        let k = BackwardCoefficients::new(s_dy, s_dyxn, n, var[c].get(), gamma[c].get(), form);
        for i in channel_indices(c, batch, channels, spatial) {
            dx[i].set(k.dx(dy[i].get(), x_norm[i].get()));
        }
    }
}

/// Per-channel factors of the backward: `dx = k_direct·dy − k·(mean_dy + x_norm·proj)`.
pub(super) struct BackwardCoefficients {
    mean_dy: f32,
    k: f32,
    proj: f32,
    k_direct: f32,
}

impl BackwardCoefficients {
    /// From the channel's sums Σdy and Σdy·x_norm over its `n` values.
    pub(super) fn new(s_dy: f64, s_dyxn: f64, n: usize, var: f32, gamma: f32, form: BnBackward) -> Self {
        let mean_dy = (s_dy / n as f64) as f32;
        let k = gamma / (var + EPS).sqrt();
        let (proj, k_direct) = match form {
            BnBackward::Exact => ((s_dyxn / unbiased_divisor(n)) as f32, k),
            BnBackward::DarknetCpu => ((s_dyxn / n as f64) as f32, gamma / (var.sqrt() + EPS)),
        };
        BackwardCoefficients { mean_dy, k, proj, k_direct }
    }

    #[inline]
    pub(super) fn dx(&self, dy: f32, x_norm: f32) -> f32 {
        self.k_direct * dy - self.k * (self.mean_dy + x_norm * self.proj)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cells(v: &[f32]) -> Vec<Cell<f32>> {
        v.iter().map(|&x| Cell::new(x)).collect()
    }

    /// The 8-lane sums (AVX-512 where this CPU has it) equal each channel's scalar loop bit for
    /// bit: values of very different sizes, so any other order of additions would round
    /// differently; 29 positions leave a scalar tail after the vector blocks.
    #[test]
    fn lane_sums_equal_the_scalar_loops() {
        let spatial = 29;
        let data: Vec<Vec<f32>> = (0..2 * LANES)
            .map(|j| (0..spatial).map(|i| ((i * 37 + j * 11) % 17) as f32 * 10f32.powi(6 * (i % 7) as i32 - 18) - 0.3 * j as f32).collect())
            .collect();
        let planes: [&[f32]; LANES] = std::array::from_fn(|j| data[j].as_slice());
        let other: [&[f32]; LANES] = std::array::from_fn(|j| data[LANES + j].as_slice());
        let mean: [f64; LANES] = std::array::from_fn(|j| 0.1 * j as f64 - 0.35);
        let (mut sum, mut sq, mut s_dy, mut s_dyxn) = ([0.5f64; LANES], [0.25f64; LANES], [-1.0f64; LANES], [2.0f64; LANES]);
        lanes_pass(&planes, &mut sum, None);
        lanes_pass(&planes, &mut sq, Some(&mean));
        lanes_backward_sums(&planes, &other, &mut s_dy, &mut s_dyxn);
        for j in 0..LANES {
            let (mut a, mut b, mut c, mut d) = (0.5f64, 0.25f64, -1.0f64, 2.0f64);
            for i in 0..spatial {
                let v = planes[j][i] as f64;
                a += v;
                let e = v - mean[j];
                b += e * e;
                c += v;
                d += v * other[j][i] as f64;
            }
            assert_eq!([sum[j], sq[j], s_dy[j], s_dyxn[j]].map(f64::to_bits), [a, b, c, d].map(f64::to_bits), "lane {j}");
        }
    }

    /// Darknet's f32 running sum, in (image, position) order: next to 2^24, adding 1 rounds back
    /// to 2^24 (ties to even), so the mean depends on where the large value sits. Channel 0 has
    /// it first: 2^24 + 1 + … stays 2^24, mean 2^21. Channel 1 has it last: the seven 1s sum to
    /// 7 exactly, 7 + 2^24 rounds to 2^24 + 8, mean 2^21 + 1. The accurate mean is 2^21 + 7/8 for
    /// both; ordinary data (channel 2) keeps both forms within float rounding of each other.
    #[test]
    fn darknet_cpu_stats_sum_in_f32_in_darknets_order() {
        let (batch, channels, spatial) = (2, 3, 4);
        let big = 16_777_216.0f32;
        let mut x = vec![1.0f32; batch * channels * spatial];
        x[0] = big; // image 0, channel 0, position 0: the first value of channel 0
        x[(channels + 1) * spatial + spatial - 1] = big; // image 1, channel 1, last position
        for (k, i) in channel_indices(2, batch, channels, spatial).enumerate() {
            x[i] = 0.25 + 0.37 * k as f32;
        }
        let run = |stats: BnStats| {
            let z = vec![0.0f32; channels];
            let (xc, y, xn) = (cells(&x), cells(&vec![0.0; x.len()]), cells(&vec![0.0; x.len()]));
            let (mean, var, rm, rv, g, b) = (cells(&z), cells(&z), cells(&z), cells(&z), cells(&[1.0; 3]), cells(&z));
            let t = TrainBufs { x: &xc, y: &y, x_norm: &xn, mean: &mean, var: &var, rolling_mean: &rm, rolling_var: &rv, gamma: &g, beta: &b };
            forward_train(&t, batch, channels, spatial, stats);
            (mean.iter().map(Cell::get).collect::<Vec<_>>(), var.iter().map(Cell::get).collect::<Vec<_>>())
        };
        let (dm, dv) = run(BnStats::DarknetCpu);
        let (am, av) = run(BnStats::Accurate);
        assert_eq!(dm[0], 2_097_152.0);
        assert_eq!(dm[1], 2_097_153.0);
        assert_eq!(am[0], 2_097_152.875);
        assert_eq!(am[1], 2_097_152.875);
        assert!(((dm[2] - am[2]) / am[2]).abs() < 1e-6 && ((dv[2] - av[2]) / av[2]).abs() < 1e-6, "{dm:?} {dv:?} vs {am:?} {av:?}");
    }

    /// The Darknet-CPU form equals Darknet's three steps written out from their formulas
    /// (mean_delta, variance_delta, normalize_delta on the pre-normalisation x), in f64, also for a
    /// channel of tiny variance where eps outside the root matters most.
    #[test]
    fn darknet_cpu_form_matches_darknets_three_step_formula() {
        let (batch, channels, spatial) = (2, 3, 5);
        let n = batch * channels * spatial;
        let u = |seed: u64, i: usize| crate::rng::uniform(seed, i as u32);
        let mut x: Vec<f32> = (0..n).map(|i| -1.0 + 3.0 * u(7, i)).collect();
        for b in 0..batch {
            for i in 0..spatial {
                x[(b * channels + 2) * spatial + i] = 0.5 + 1e-3 * (i as f32 - 2.0);
            }
        }
        let dy: Vec<f32> = (0..n).map(|i| -1.0 + 2.0 * u(8, i)).collect();
        let gamma = [0.7f32, 1.3, 0.9];
        let z = vec![0.0f32; channels];
        let (xc, y, xn) = (cells(&x), cells(&vec![0.0; n]), cells(&vec![0.0; n]));
        let (mean, var, rm, rv, g, beta) = (cells(&z), cells(&z), cells(&z), cells(&z), cells(&gamma), cells(&z));
        let t = TrainBufs { x: &xc, y: &y, x_norm: &xn, mean: &mean, var: &var, rolling_mean: &rm, rolling_var: &rv, gamma: &g, beta: &beta };
        forward_train(&t, batch, channels, spatial, BnStats::Accurate);
        let (d, dg, db) = (cells(&dy), cells(&z), cells(&z));
        backward(&d, &xn, &var, &g, &dg, &db, &d, batch, channels, spatial, BnBackward::DarknetCpu);
        let dx_cells = d;

        let m = (batch * spatial) as f64;
        for c in 0..channels {
            let idx: Vec<usize> = channel_indices(c, batch, channels, spatial).collect();
            let (mu, v) = (mean[c].get() as f64, var[c].get() as f64);
            let eps = EPS as f64;
            // Darknet scales dy by gamma before the three steps.
            let d1: Vec<f64> = idx.iter().map(|&i| dy[i] as f64 * gamma[c] as f64).collect();
            let mean_delta = d1.iter().sum::<f64>() * (-1.0 / (v + eps).sqrt());
            let var_delta = idx.iter().zip(&d1).map(|(&i, d)| d * (x[i] as f64 - mu)).sum::<f64>() * -0.5 * (v + eps).powf(-1.5);
            for (&i, d) in idx.iter().zip(&d1) {
                let want = d / (v.sqrt() + eps) + var_delta * 2.0 * (x[i] as f64 - mu) / m + mean_delta / m;
                let got = d_get(&dx_cells, i);
                let err = (got - want).abs() / want.abs().max(1.0);
                assert!(err < 2e-5, "channel {c} element {i}: {got} vs Darknet's {want} (rel {err:.2e})");
            }
        }
        fn d_get(d: &[Cell<f32>], i: usize) -> f64 {
            d[i].get() as f64
        }
    }
}
