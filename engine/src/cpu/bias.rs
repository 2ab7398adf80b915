//! The conv bias (shaders-wgsl/bias.wgsl): added per output channel, and its gradient summed
//! over images and positions. Each item is one plane or one channel, in the plain loop's order,
//! so any thread count gives the same floats.

use super::par::Par;

/// y[b][c][i] += bias[c], one item per plane chunk.
pub(super) fn bias_add(par: &Par, y: &mut [f32], bias: &[f32], batch: usize, channels: usize, spatial: usize) {
    assert_eq!(y.len(), batch * channels * spatial, "cpu bias_add: output length");
    assert_eq!(bias.len(), channels, "cpu bias_add: bias length");
    par.chunks(y, spatial.max(1), |r, plane| {
        let b = bias[(r.start / spatial.max(1)) % channels];
        for v in plane {
            *v += b;
        }
    });
}

/// Σ_{b,i} dy[b][c][i] in f64, images then positions in order (the plain loop's order).
pub(super) fn channel_sum(dy: &[f32], c: usize, batch: usize, channels: usize, spatial: usize) -> f64 {
    let mut acc = 0.0f64;
    for b in 0..batch {
        acc += dy[(b * channels + c) * spatial..][..spatial].iter().map(|&v| v as f64).sum::<f64>();
    }
    acc
}

/// dbias[c] += Σ_{b,i} dy[b][c][i] (accumulated in f64), one item per channel.
pub(super) fn bias_backward(par: &Par, dy: &[f32], dbias: &mut [f32], batch: usize, channels: usize, spatial: usize) {
    assert_eq!(dy.len(), batch * channels * spatial, "cpu bias_backward: gradient length");
    assert_eq!(dbias.len(), channels, "cpu bias_backward: bias length");
    let sums = par.map(channels, |c| channel_sum(dy, c, batch, channels, spatial));
    for (db, s) in dbias.iter_mut().zip(sums) {
        *db += s as f32;
    }
}
