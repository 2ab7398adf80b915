//! Upsample and reorg (shaders-wgsl/resample.wgsl).

use std::cell::Cell;

use super::par::Par;
use crate::shapes::{ReorgShape, UpsampleShape};

fn check_upsample(op: &str, s: &UpsampleShape, x: usize, y: usize) {
    assert!(s.stride >= 1, "cpu {op}: stride must be ≥ 1");
    assert_eq!(x, s.input_len(), "cpu {op}: input length does not match {s:?}");
    assert_eq!(y, s.output_len(), "cpu {op}: output length does not match {s:?}");
}

/// y[p][oy][ox] = scale · x[p][oy/stride][ox/stride]; one item per plane.
pub(super) fn upsample_forward(par: &Par, x: &[f32], y: &mut [f32], s: &UpsampleShape) {
    check_upsample("upsample_forward", s, x.len(), y.len());
    let (ow, ohw, hw) = (s.w * s.stride, s.w * s.h * s.stride * s.stride, s.w * s.h);
    par.chunks(y, ohw.max(1), |r, out| {
        let plane = &x[r.start / ohw.max(1) * hw..][..hw];
        for (oy, row) in out.chunks_exact_mut(ow.max(1)).enumerate() {
            let src = &plane[oy / s.stride * s.w..][..s.w];
            for (ox, v) in row.iter_mut().enumerate() {
                *v = s.scale * src[ox / s.stride];
            }
        }
    });
}

/// dx[p][iy][ix] += scale · Σ of dy over its stride×stride block, added in the output's
/// row-major order; one item per plane.
pub(super) fn upsample_backward(par: &Par, dy: &[f32], dx: &mut [f32], s: &UpsampleShape) {
    check_upsample("upsample_backward", s, dx.len(), dy.len());
    let (ow, ohw, hw) = (s.w * s.stride, s.w * s.h * s.stride * s.stride, s.w * s.h);
    par.chunks(dx, hw.max(1), |r, plane| {
        let g = &dy[r.start / hw.max(1) * ohw..][..ohw];
        for (oy, row) in g.chunks_exact(ow.max(1)).enumerate() {
            let dst = &mut plane[oy / s.stride * s.w..][..s.w];
            for (ox, v) in row.iter().enumerate() {
                dst[ox / s.stride] += s.scale * v;
            }
        }
    });
}

/// Darknet's reorg as its reorg layer's forward runs it (`reorg_cpu(in, w, h, c, batch, stride,
/// forward=0, out)` with the layer's INPUT w, h, c). It is a permutation of the flat
/// `batch·c·h·w` floats: for every `(b, k < c, j < h, i < w)`
///
/// ```text
/// out_c = c / stride²,  c2 = k % out_c,  off = k / out_c,
/// w2 = i·stride + off % stride,  h2 = j·stride + off / stride,
/// y[((b·c + k)·h + j)·w + i] = x[((b·out_c + c2)·h·stride + h2)·w·stride + w2]
/// ```
///
/// i.e. `x` is read as if it were `[batch][c/stride²][h·stride][w·stride]` and `y` written as
/// `[batch][c][h][w]` (Darknet's known mix-up of the two shapes; the flat permutation is what
/// trained models expect). The layer then labels `y` as `[batch][c·stride²][h/stride][w/stride]`.
/// Requires `c` divisible by `stride²`.
fn reorg_pairs(s: &ReorgShape) -> impl Iterator<Item = (usize, usize)> + '_ {
    assert!(s.stride >= 1, "cpu reorg: stride must be ≥ 1");
    let ss = s.stride * s.stride;
    assert!(s.c.is_multiple_of(ss) && s.c > 0, "cpu reorg: channels {} not divisible by stride² {}", s.c, ss);
    let out_c = s.c / ss;
    let (w, h, c, st) = (s.w, s.h, s.c, s.stride);
    (0..s.len()).map(move |y_index| {
        let i = y_index % w;
        let j = (y_index / w) % h;
        let k = (y_index / (w * h)) % c;
        let b = y_index / (w * h * c);
        let (c2, off) = (k % out_c, k / out_c);
        let w2 = i * st + off % st;
        let h2 = j * st + off / st;
        let x_index = ((b * out_c + c2) * h * st + h2) * w * st + w2;
        (y_index, x_index)
    })
}

/// y = reorg(x) (see [`reorg_pairs`]).
pub(super) fn reorg_forward(x: &[Cell<f32>], y: &[Cell<f32>], s: &ReorgShape) {
    assert_eq!(x.len(), s.len(), "cpu reorg_forward: input length does not match {s:?}");
    assert_eq!(y.len(), s.len(), "cpu reorg_forward: output length does not match {s:?}");
    for (yi, xi) in reorg_pairs(s) {
        y[yi].set(x[xi].get());
    }
}

/// dx += reorgᵀ(dy): dx[x_index] += dy[y_index] (Darknet's backward runs reorg_cpu with
/// forward=1, which is this inverse permutation).
pub(super) fn reorg_backward(dy: &[Cell<f32>], dx: &[Cell<f32>], s: &ReorgShape) {
    assert_eq!(dy.len(), s.len(), "cpu reorg_backward: dy length does not match {s:?}");
    assert_eq!(dx.len(), s.len(), "cpu reorg_backward: dx length does not match {s:?}");
    for (yi, xi) in reorg_pairs(s) {
        dx[xi].set(dx[xi].get() + dy[yi].get());
    }
}
