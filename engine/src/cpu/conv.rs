//! Convolution by im2col/col2im + GEMM (shaders-wgsl/conv.wgsl), and the conv bias.
//!
//! Per image and group: `out (m×n) = W (m×k) · col (k×n)` with `m = filters/groups`,
//! `k = size²·c/groups`, `n = out_h·out_w`; weights are `[filters][c/groups][size][size]`, so the
//! rows of `col` are ordered `(channel, ky, kx)` to match. A 1×1, stride-1, pad-0 convolution uses
//! the input itself as `col`. Padding pixels read as zero.

use std::cell::Cell;

use crate::shapes::ConvShape;

/// Geometry derived from a shape, checked once per call.
struct Geo {
    m: usize,
    k: usize,
    n: usize,
    /// Input channels per group.
    cg: usize,
    /// 1×1 stride 1 pad 0: col would be the input itself.
    direct: bool,
}

fn geo(s: &ConvShape) -> Geo {
    assert!(s.groups >= 1 && s.c.is_multiple_of(s.groups) && s.filters.is_multiple_of(s.groups),
        "cpu conv: channels {} / filters {} not divisible by groups {}", s.c, s.filters, s.groups);
    assert!(s.size >= 1 && s.stride >= 1, "cpu conv: size and stride must be ≥ 1");
    let cg = s.c / s.groups;
    Geo {
        m: s.filters / s.groups,
        k: s.size * s.size * cg,
        n: s.out_h * s.out_w,
        cg,
        direct: s.size == 1 && s.stride == 1 && s.pad == 0 && s.out_h == s.h && s.out_w == s.w,
    }
}

/// Floats of im2col scratch a shape needs (0 when the input is used directly).
pub(super) fn col_len(s: &ConvShape) -> usize {
    let g = geo(s);
    if g.direct { 0 } else { g.k * g.n }
}

fn check_lens(s: &ConvShape, x: usize, w: usize, y: usize) {
    assert_eq!(x, s.input_len(), "cpu conv: input length does not match the shape {s:?}");
    assert_eq!(w, s.weight_len(), "cpu conv: weight length does not match the shape {s:?}");
    assert_eq!(y, s.output_len(), "cpu conv: output length does not match the shape {s:?}");
}

/// Row-major GEMM `c (m×n) = a·b + beta·c`, where `a` is stored m×k (or k×m when `ta`) and `b`
/// k×n (or n×k when `tb`); a transpose is only a swap of strides.
#[allow(clippy::too_many_arguments)]
fn gemm(m: usize, k: usize, n: usize, a: &[f32], ta: bool, b: &[f32], tb: bool, beta: f32, c: &mut [f32]) {
    assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n);
    let (rsa, csa) = if ta { (1, m as isize) } else { (k as isize, 1) };
    let (rsb, csb) = if tb { (1, k as isize) } else { (n as isize, 1) };
    // SAFETY: the asserts above keep every access of the m×k, k×n and m×n matrices in bounds;
    // `c` is a unique &mut so it cannot alias `a` or `b`.
    unsafe {
        matrixmultiply::sgemm(m, k, n, 1.0, a.as_ptr(), rsa, csa, b.as_ptr(), rsb, csb, beta, c.as_mut_ptr(), n as isize, 1);
    }
}

/// Input pixel row `iy` for output row `oy` and kernel row `ky`, or None in the padding.
#[inline]
fn src_index(o: usize, kk: usize, stride: usize, pad: usize, limit: usize) -> Option<usize> {
    let i = (o * stride + kk).checked_sub(pad)?;
    (i < limit).then_some(i)
}

/// col[(ch·size + ky)·size + kx][oy·out_w + ox] = x[ch][iy][ix] (0 in the padding).
fn im2col(x: &[f32], cg: usize, s: &ConvShape, col: &mut [f32]) {
    let n = s.out_h * s.out_w;
    let hw = s.h * s.w;
    for ch in 0..cg {
        let plane = &x[ch * hw..(ch + 1) * hw];
        for ky in 0..s.size {
            for kx in 0..s.size {
                let row = &mut col[((ch * s.size + ky) * s.size + kx) * n..][..n];
                for oy in 0..s.out_h {
                    let dst = &mut row[oy * s.out_w..(oy + 1) * s.out_w];
                    let Some(iy) = src_index(oy, ky, s.stride, s.pad, s.h) else {
                        dst.fill(0.0);
                        continue;
                    };
                    for (ox, d) in dst.iter_mut().enumerate() {
                        *d = match src_index(ox, kx, s.stride, s.pad, s.w) {
                            Some(ix) => plane[iy * s.w + ix],
                            None => 0.0,
                        };
                    }
                }
            }
        }
    }
}

/// Transpose of im2col: dx[ch][iy][ix] += col[...] (padding entries are dropped).
fn col2im_add(col: &[f32], cg: usize, s: &ConvShape, dx: &mut [f32]) {
    let n = s.out_h * s.out_w;
    let hw = s.h * s.w;
    for ch in 0..cg {
        let plane = &mut dx[ch * hw..(ch + 1) * hw];
        for ky in 0..s.size {
            for kx in 0..s.size {
                let row = &col[((ch * s.size + ky) * s.size + kx) * n..][..n];
                for oy in 0..s.out_h {
                    let Some(iy) = src_index(oy, ky, s.stride, s.pad, s.h) else { continue };
                    for ox in 0..s.out_w {
                        if let Some(ix) = src_index(ox, kx, s.stride, s.pad, s.w) {
                            plane[iy * s.w + ix] += row[oy * s.out_w + ox];
                        }
                    }
                }
            }
        }
    }
}

/// y = conv(x, w), overwritten.
pub(super) fn forward(x: &[f32], w: &[f32], y: &mut [f32], s: &ConvShape, col: &mut [f32]) {
    check_lens(s, x.len(), w.len(), y.len());
    let g = geo(s);
    let hw = s.h * s.w;
    for b in 0..s.batch {
        for gi in 0..s.groups {
            let xg = &x[(b * s.c + gi * g.cg) * hw..][..g.cg * hw];
            let wg = &w[gi * g.m * g.k..][..g.m * g.k];
            let yg = &mut y[(b * s.filters + gi * g.m) * g.n..][..g.m * g.n];
            if g.direct {
                gemm(g.m, g.k, g.n, wg, false, xg, false, 0.0, yg);
            } else {
                im2col(xg, g.cg, s, col);
                gemm(g.m, g.k, g.n, wg, false, col, false, 0.0, yg);
            }
        }
    }
}

/// dx += convᵀ(dy, w): col = Wᵀ·dy, then col2im adds into dx.
pub(super) fn backward_data(dy: &[f32], w: &[f32], dx: &mut [f32], s: &ConvShape, col: &mut [f32]) {
    check_lens(s, dx.len(), w.len(), dy.len());
    let g = geo(s);
    let hw = s.h * s.w;
    for b in 0..s.batch {
        for gi in 0..s.groups {
            let dyg = &dy[(b * s.filters + gi * g.m) * g.n..][..g.m * g.n];
            let wg = &w[gi * g.m * g.k..][..g.m * g.k];
            let dxg = &mut dx[(b * s.c + gi * g.cg) * hw..][..g.cg * hw];
            if g.direct {
                gemm(g.k, g.m, g.n, wg, true, dyg, false, 1.0, dxg);
            } else {
                gemm(g.k, g.m, g.n, wg, true, dyg, false, 0.0, col);
                col2im_add(col, g.cg, s, dxg);
            }
        }
    }
}

/// dw += dy · im2col(x)ᵀ, summed over the batch.
pub(super) fn backward_weights(x: &[f32], dy: &[f32], dw: &mut [f32], s: &ConvShape, col: &mut [f32]) {
    check_lens(s, x.len(), dw.len(), dy.len());
    let g = geo(s);
    let hw = s.h * s.w;
    for b in 0..s.batch {
        for gi in 0..s.groups {
            let xg = &x[(b * s.c + gi * g.cg) * hw..][..g.cg * hw];
            let dyg = &dy[(b * s.filters + gi * g.m) * g.n..][..g.m * g.n];
            let dwg = &mut dw[gi * g.m * g.k..][..g.m * g.k];
            if g.direct {
                gemm(g.m, g.n, g.k, dyg, false, xg, true, 1.0, dwg);
            } else {
                im2col(xg, g.cg, s, col);
                gemm(g.m, g.n, g.k, dyg, false, col, true, 1.0, dwg);
            }
        }
    }
}

/// y[b][c][i] += bias[c]
pub(super) fn bias_add(y: &[Cell<f32>], bias: &[Cell<f32>], batch: usize, channels: usize, spatial: usize) {
    assert_eq!(y.len(), batch * channels * spatial, "cpu bias_add: output length");
    assert_eq!(bias.len(), channels, "cpu bias_add: bias length");
    for (i, c) in y.iter().enumerate() {
        c.set(c.get() + bias[(i / spatial) % channels].get());
    }
}

/// dbias[c] += Σ_{b,i} dy[b][c][i] (accumulated in f64).
pub(super) fn bias_backward(dy: &[Cell<f32>], dbias: &[Cell<f32>], batch: usize, channels: usize, spatial: usize) {
    assert_eq!(dy.len(), batch * channels * spatial, "cpu bias_backward: gradient length");
    assert_eq!(dbias.len(), channels, "cpu bias_backward: bias length");
    for (c, db) in dbias.iter().enumerate() {
        let mut acc = 0.0f64;
        for b in 0..batch {
            acc += dy[(b * channels + c) * spatial..][..spatial].iter().map(|v| v.get() as f64).sum::<f64>();
        }
        db.set(db.get() + acc as f32);
    }
}
