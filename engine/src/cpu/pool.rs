//! Max pooling (Darknet style) and global average pooling (shaders-wgsl/pool.wgsl).
//!
//! Max pool: the window of output (oy, ox) starts at `(oy·stride − padding/2, ox·stride − padding/2)`;
//! pixels outside the image count as −FLT_MAX; a value wins only if strictly greater (`>`) than the
//! best so far, so the first maximum in row-major window order wins. An all-padding window
//! (impossible for shapes Darknet accepts) outputs −FLT_MAX and passes no gradient.

use std::cell::Cell;

use super::par::{self, Par};
use crate::shapes::PoolShape;

/// Index into the image plane of the max of window (oy, ox), or None if it holds no pixel.
#[inline]
pub(crate) fn argmax(plane: &[f32], s: &PoolShape, oy: usize, ox: usize) -> (f32, Option<usize>) {
    let off = (s.padding / 2) as isize;
    let mut best = f32::MIN;
    let mut best_i = None;
    for ky in 0..s.size {
        let iy = (oy * s.stride + ky) as isize - off;
        for kx in 0..s.size {
            let ix = (ox * s.stride + kx) as isize - off;
            if iy < 0 || ix < 0 || iy >= s.h as isize || ix >= s.w as isize {
                continue; // −FLT_MAX never beats `best` under strict '>'.
            }
            let i = iy as usize * s.w + ix as usize;
            let v = plane[i];
            if v > best {
                best = v;
                best_i = Some(i);
            }
        }
    }
    (best, best_i)
}

/// Outputs along one axis whose whole window lies inside the image (no padding read).
fn inside(out: usize, stride: usize, size: usize, off: usize, limit: usize) -> std::ops::Range<usize> {
    let lo = off.div_ceil(stride);
    // o·stride − off + size ≤ limit
    let hi = if limit + off >= size { (limit + off - size) / stride + 1 } else { 0 };
    lo.min(out)..hi.min(out).max(lo.min(out))
}

/// [`argmax`] for a window known to lie inside the image: the same comparisons in the same
/// order, without the bounds tests.
#[inline]
fn argmax_inside(plane: &[f32], s: &PoolShape, y0: usize, x0: usize) -> (f32, Option<usize>) {
    let mut best = f32::MIN;
    let mut best_i = None;
    for ky in 0..s.size {
        let row = (y0 + ky) * s.w + x0;
        for (kx, &v) in plane[row..row + s.size].iter().enumerate() {
            if v > best {
                best = v;
                best_i = Some(row + kx);
            }
        }
    }
    (best, best_i)
}

/// [`argmax_inside`] for a window of N×N: the same comparisons in the same order.
#[inline(always)]
fn argmax_inside_n<const N: usize>(plane: &[f32], w: usize, y0: usize, x0: usize) -> (f32, Option<usize>) {
    let mut best = f32::MIN;
    let mut best_i = None;
    for ky in 0..N {
        let row = (y0 + ky) * w + x0;
        let vals: &[f32; N] = plane[row..row + N].try_into().expect("window row of N floats");
        for (kx, &v) in vals.iter().enumerate() {
            if v > best {
                best = v;
                best_i = Some(row + kx);
            }
        }
    }
    (best, best_i)
}

/// The max of window (oy, ox) and where it is, by the fast path when the window is inside.
/// Inlined into the per-plane loops, where the size's branch is the same for every window.
#[inline(always)]
fn window_max(plane: &[f32], s: &PoolShape, ys: &std::ops::Range<usize>, xs: &std::ops::Range<usize>, oy: usize, ox: usize) -> (f32, Option<usize>) {
    if ys.contains(&oy) && xs.contains(&ox) {
        let off = s.padding / 2;
        let (y0, x0) = (oy * s.stride - off, ox * s.stride - off);
        // Windows of Darknet's usual sizes with constant loop bounds (unrolled by the compiler).
        match s.size {
            2 => argmax_inside_n::<2>(plane, s.w, y0, x0),
            3 => argmax_inside_n::<3>(plane, s.w, y0, x0),
            _ => argmax_inside(plane, s, y0, x0),
        }
    } else {
        argmax(plane, s, oy, ox)
    }
}

/// The two input rows of the 2×2, stride-2 windows of output row `oy` at outputs `xs` (all
/// inside the image), as pixel pairs: window ox is `(r0[j], r1[j])`, j = ox − xs.start.
#[inline(always)]
fn window_rows<'a>(plane: &'a [f32], s: &PoolShape, oy: usize, xs: &std::ops::Range<usize>) -> (&'a [[f32; 2]], &'a [[f32; 2]]) {
    let off = s.padding / 2;
    let (y0, x0) = (oy * 2 - off, xs.start * 2 - off);
    let row = |y: usize| plane[y * s.w + x0..y * s.w + x0 + 2 * xs.len()].as_chunks::<2>().0;
    (row(y0), row(y0 + 1))
}

/// [`argmax_inside_n`] of one 2×2 window given as its four values in row-major order: the max
/// and its position 0..4 (4: none), by the same strict comparisons, branch-free.
#[inline(always)]
fn max4(v: [f32; 4]) -> (f32, usize) {
    let (mut best, mut at) = (f32::MIN, 4);
    for (j, &x) in v.iter().enumerate() {
        if x > best {
            best = x;
            at = j;
        }
    }
    (best, at)
}

fn check(op: &str, s: &PoolShape, x: usize, y: usize) {
    assert!(s.size >= 1 && s.stride >= 1, "cpu {op}: size and stride must be ≥ 1");
    assert_eq!(x, s.input_len(), "cpu {op}: input length does not match {s:?}");
    assert_eq!(y, s.output_len(), "cpu {op}: output length does not match {s:?}");
}

/// One item per (image, channel) plane.
pub(super) fn max_forward(par: &Par, x: &[f32], y: &mut [f32], s: &PoolShape) {
    check("maxpool_forward", s, x.len(), y.len());
    let (hw, ohw) = (s.h * s.w, s.out_h * s.out_w);
    let off = s.padding / 2;
    let (ys, xs) = (inside(s.out_h, s.stride, s.size, off, s.h), inside(s.out_w, s.stride, s.size, off, s.w));
    let pairs = s.size == 2 && s.stride == 2;
    par.chunks(y, ohw.max(1), |r, out| par::wide(#[inline(always)] || {
        let plane = &x[r.start / ohw.max(1) * hw..][..hw];
        for oy in 0..s.out_h {
            let row = &mut out[oy * s.out_w..(oy + 1) * s.out_w];
            let fast = if pairs && ys.contains(&oy) { xs.clone() } else { 0..0 };
            if !fast.is_empty() {
                let (r0, r1) = window_rows(plane, s, oy, &fast);
                for ((o, a), b) in row[fast.clone()].iter_mut().zip(r0).zip(r1) {
                    *o = max4([a[0], a[1], b[0], b[1]]).0;
                }
            }
            for ox in (0..s.out_w).filter(|ox| !fast.contains(ox)) {
                row[ox] = window_max(plane, s, &ys, &xs, oy, ox).0;
            }
        }
    }));
}

/// dx[argmax] += dy, argmax recomputed from x; one item per plane, windows in row-major order
/// within it (the order the gradient of overlapping windows is added in).
pub(super) fn max_backward(par: &Par, x: &[f32], dy: &[f32], dx: &mut [f32], s: &PoolShape) {
    check("maxpool_backward", s, x.len(), dy.len());
    assert_eq!(dx.len(), x.len(), "cpu maxpool_backward: dx length != x length");
    let (hw, ohw) = (s.h * s.w, s.out_h * s.out_w);
    let off = s.padding / 2;
    let (ys, xs) = (inside(s.out_h, s.stride, s.size, off, s.h), inside(s.out_w, s.stride, s.size, off, s.w));
    let pairs = s.size == 2 && s.stride == 2;
    // Scalar (SSE2) code: compiled for AVX-512 the fast path below becomes slow scatters.
    par.chunks(dx, hw.max(1), |r, dplane| {
        let p = r.start / hw.max(1);
        let plane = &x[r];
        let g = &dy[p * ohw..][..ohw];
        for oy in 0..s.out_h {
            let grow = &g[oy * s.out_w..(oy + 1) * s.out_w];
            let fast = if pairs && ys.contains(&oy) { xs.clone() } else { 0..0 };
            if !fast.is_empty() {
                // The window's max found without branches on the data (which mispredict).
                let (r0, r1) = window_rows(plane, s, oy, &fast);
                let (y0, x0) = (oy * 2 - s.padding / 2, fast.start * 2 - s.padding / 2);
                for (j, ((gv, a), b)) in grow[fast.clone()].iter().zip(r0).zip(r1).enumerate() {
                    let k = max4([a[0], a[1], b[0], b[1]]).1;
                    if k < 4 {
                        dplane[(y0 + k / 2) * s.w + x0 + 2 * j + k % 2] += gv;
                    }
                }
            }
            for ox in (0..s.out_w).filter(|ox| !fast.contains(ox)) {
                if let (_, Some(i)) = window_max(plane, s, &ys, &xs, oy, ox) {
                    dplane[i] += grow[ox];
                }
            }
        }
    });
}

/// y[p] = mean of plane p (f64 sum).
pub(super) fn avg_forward(x: &[Cell<f32>], y: &[Cell<f32>], planes: usize, spatial: usize) {
    assert_eq!(x.len(), planes * spatial, "cpu avgpool_forward: input length");
    assert_eq!(y.len(), planes, "cpu avgpool_forward: output length");
    for (p, out) in y.iter().enumerate() {
        let sum: f64 = x[p * spatial..][..spatial].iter().map(|v| v.get() as f64).sum();
        out.set((sum / spatial as f64) as f32);
    }
}

/// dx += dy / spatial.
pub(super) fn avg_backward(dy: &[Cell<f32>], dx: &[Cell<f32>], planes: usize, spatial: usize) {
    assert_eq!(dx.len(), planes * spatial, "cpu avgpool_backward: dx length");
    assert_eq!(dy.len(), planes, "cpu avgpool_backward: dy length");
    for (p, g) in dy.iter().enumerate() {
        let share = g.get() / spatial as f32;
        for d in &dx[p * spatial..][..spatial] {
            d.set(d.get() + share);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The unrolled windows pick the same value and index as the bounds-checked loop, ties (the
    /// first maximum wins) and NaN (never wins) included.
    #[test]
    fn unrolled_windows_match_argmax() {
        let (h, w) = (7, 9);
        let plane: Vec<f32> = (0..h * w).map(|i| match i % 11 { 3 => f32::NAN, 5 => 2.0, _ => (i * 7 % 5) as f32 }).collect();
        for size in [2usize, 3] {
            let s = PoolShape::new(1, 1, h, w, size, 1, 0);
            for oy in 0..=h - size {
                for ox in 0..=w - size {
                    let want = argmax(&plane, &s, oy, ox);
                    let got = if size == 2 { argmax_inside_n::<2>(&plane, w, oy, ox) } else { argmax_inside_n::<3>(&plane, w, oy, ox) };
                    assert_eq!((got.0.to_bits(), got.1), (want.0.to_bits(), want.1), "size {size} at ({oy}, {ox})");
                }
            }
        }
    }

    /// The 2×2, stride-2 fast paths give the bounds-checked windows' outputs and gradients bit
    /// for bit, at borders (odd sizes, padding), ties and NaN included.
    #[test]
    fn pair_windows_match_the_plain_loop() {
        let par = Par::new(1);
        for (h, w, padding) in [(8usize, 8usize, 0usize), (8, 8, 1), (7, 9, 1), (5, 6, 2), (9, 7, 0)] {
            let s = PoolShape::new(2, 2, h, w, 2, 2, padding);
            let x: Vec<f32> = (0..s.input_len()).map(|i| match i % 13 { 3 => f32::NAN, 5 | 6 => 2.0, _ => ((i * 7) % 5) as f32 - 2.0 }).collect();
            let dy: Vec<f32> = (0..s.output_len()).map(|i| 0.25 + i as f32 * 0.5).collect();
            let (hw, ohw) = (h * w, s.out_h * s.out_w);
            let mut y = vec![0.0; s.output_len()];
            max_forward(&par, &x, &mut y, &s);
            let mut dx: Vec<f32> = (0..s.input_len()).map(|i| if i % 3 == 0 { -0.0 } else { i as f32 * 0.125 }).collect();
            let mut want_dx = dx.clone();
            max_backward(&par, &x, &dy, &mut dx, &s);
            for p in 0..4 {
                let plane = &x[p * hw..][..hw];
                for oy in 0..s.out_h {
                    for ox in 0..s.out_w {
                        let (v, i) = argmax(plane, &s, oy, ox);
                        assert_eq!(y[p * ohw + oy * s.out_w + ox].to_bits(), v.to_bits(), "{h}×{w} pad {padding}: y at {p} ({oy}, {ox})");
                        if let Some(i) = i {
                            want_dx[p * hw + i] += dy[p * ohw + oy * s.out_w + ox];
                        }
                    }
                }
            }
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&dx), bits(&want_dx), "{h}×{w} pad {padding}: dx");
        }
    }

    /// The inside range is exactly the windows the bounds-checked path finds fully in the image.
    #[test]
    fn inside_matches_the_window_bounds() {
        for (out, stride, size, off, limit) in [(28usize, 2usize, 2usize, 0usize, 56usize), (13, 1, 2, 0, 13), (7, 2, 3, 1, 13), (5, 1, 3, 1, 5), (1, 1, 4, 2, 2)] {
            let want: Vec<usize> = (0..out).filter(|&o| o * stride >= off && o * stride - off + size <= limit).collect();
            assert_eq!(inside(out, stride, size, off, limit).collect::<Vec<_>>(), want, "{out} {stride} {size} {off} {limit}");
        }
    }
}
