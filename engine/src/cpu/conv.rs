//! Convolution by im2col/col2im + GEMM (shaders-wgsl/conv.wgsl); its bias is `bias.rs`.
//!
//! Per image and group: `out (m×n) = W (m×k) · col (k×n)` with `m = filters/groups`,
//! `k = size²·c/groups`, `n = out_h·out_w`; weights are `[filters][c/groups][size][size]`, so the
//! rows of `col` are ordered `(channel, ky, kx)` to match. A 1×1, stride-1, pad-0 convolution uses
//! the input itself as `col`. Padding pixels read as zero.
//!
//! Threads and exactness. The GEMM is the `gemm` crate's, called single-threaded ([`sgemm`]) on
//! pieces of the output: every output float is one dot product over the GEMM's inner dimension,
//! cut into depth blocks by us and summed the same way whatever piece of the output it sits in
//! (see [`sgemm`] and [`cut_tiles`] for what that takes). So:
//! - forward and backward-data split their output into column tiles, and small images share
//!   one GEMM (`Geo::group` images side by side in `col`): neither changes an output's sum;
//! - backward-weights sums over the batch, so it keeps one GEMM per image, images in order, and
//!   splits only `dW` itself into tiles;
//! - im2col and col2im work per (image, channel), each in the loop order of the plain
//!   form. The tiles and groups come from the shape alone (`par.rs`).

use std::ops::Range;

use super::par::{Par, SharedMut};
use crate::shapes::ConvShape;

/// Columns one GEMM should have at least: images smaller than this share a GEMM.
const TARGET_COLS: usize = 1024;
/// A GEMM's output is split into at most this many tiles...
const MAX_TILES: usize = 8;
/// ...of at least this many columns (or rows, for the weight gradient).
const MIN_TILE: usize = 256;
const MIN_TILE_ROWS: usize = 16;
/// Outputs above which `gemm` uses its general kernel: at most this many, and with both operands
/// contiguous along the depth, it takes dot-product kernels that sum in another order.
const SMALL_GEMM: usize = 256;
/// Longest depth of one `gemm` call: a longer inner dimension is cut into near-equal blocks of at
/// most this many, added into C in order. At or below 512 `gemm` keeps the whole depth in one
/// block; above it, its own blocks would depend on m and n, so a tile would sum differently
/// from the whole GEMM.
const KC: usize = 512;

/// Geometry derived from a shape, checked once per call.
struct Geo {
    m: usize,
    k: usize,
    n: usize,
    /// Input channels per group.
    cg: usize,
    /// 1×1 stride 1 pad 0: col would be the input itself.
    direct: bool,
    /// Images side by side in one forward / backward-data GEMM (1 with conv groups).
    group: usize,
}

fn geo(s: &ConvShape) -> Geo {
    assert!(s.groups >= 1 && s.c.is_multiple_of(s.groups) && s.filters.is_multiple_of(s.groups),
        "cpu conv: channels {} / filters {} not divisible by groups {}", s.c, s.filters, s.groups);
    assert!(s.size >= 1 && s.stride >= 1, "cpu conv: size and stride must be ≥ 1");
    let cg = s.c / s.groups;
    let n = s.out_h * s.out_w;
    let group = if s.groups == 1 && n > 0 && n < TARGET_COLS {
        // As many images as reach TARGET_COLS, evened out over the batch.
        let parts = s.batch.div_ceil(TARGET_COLS.div_ceil(n).min(s.batch).max(1));
        s.batch.div_ceil(parts.max(1))
    } else {
        1
    };
    Geo {
        m: s.filters / s.groups,
        k: s.size * s.size * cg,
        n,
        cg,
        direct: s.size == 1 && s.stride == 1 && s.pad == 0 && s.out_h == s.h && s.out_w == s.w,
        group: group.max(1),
    }
}

/// Floats of im2col scratch a shape needs (0 when the input is used directly).
pub(super) fn col_len(s: &ConvShape) -> usize {
    let g = geo(s);
    if g.direct && g.group == 1 { 0 } else { g.k * g.n * g.group }
}

/// Floats of GEMM scratch (the output, or the gathered gradient, of images sharing a GEMM).
pub(super) fn gemm_len(s: &ConvShape) -> usize {
    let g = geo(s);
    if g.group > 1 { g.m * g.n * g.group } else { 0 }
}

fn check_lens(s: &ConvShape, x: usize, w: usize, y: usize) {
    assert_eq!(x, s.input_len(), "cpu conv: input length does not match the shape {s:?}");
    assert_eq!(w, s.weight_len(), "cpu conv: weight length does not match the shape {s:?}");
    assert_eq!(y, s.output_len(), "cpu conv: output length does not match the shape {s:?}");
}

/// A read-only matrix: element (r, c) at `ptr + r·rs + c·cs`.
#[derive(Clone, Copy)]
struct Mat {
    ptr: *const f32,
    rs: isize,
    cs: isize,
}

// SAFETY: a Mat only reads memory that no item of the same op writes (see the callers).
unsafe impl Send for Mat {}
// SAFETY: as above.
unsafe impl Sync for Mat {}

impl Mat {
    /// Row-major `rows × cols` in `v` (transposed: `v` holds it as `cols × rows`).
    fn of(v: &[f32], rows: usize, cols: usize, transposed: bool) -> Mat {
        assert!(v.len() >= rows * cols, "cpu conv: matrix of {rows}×{cols} in {} floats", v.len());
        let (rs, cs) = if transposed { (1, rows as isize) } else { (cols as isize, 1) };
        Mat { ptr: v.as_ptr(), rs, cs }
    }
    fn at(self, r: usize, c: usize) -> Mat {
        Mat { ptr: self.ptr.wrapping_offset(r as isize * self.rs + c as isize * self.cs), ..self }
    }
}

/// Which way a GEMM's output is cut into tiles.
#[derive(Clone, Copy, PartialEq)]
enum Cut {
    Cols,
    Rows,
}

/// At most `MAX_TILES` near-equal ranges covering `0..len`, each at least `min` long (one range
/// when `len` is shorter), cut at multiples of 8 (the GEMM kernel's width). Shape-only.
fn tiles(len: usize, min: usize) -> Vec<Range<usize>> {
    // + 7: rounding a cut down to a multiple of 8 takes at most 7 from a range.
    let pieces = (len / (min.max(1) + 7)).clamp(1, MAX_TILES);
    let cut = |t: usize| if t == pieces { len } else { t * len / pieces / 8 * 8 };
    (0..pieces).map(|t| cut(t)..cut(t + 1)).collect()
}

/// The tiles of an m×n output cut along `cut`: each tile has more than `SMALL_GEMM` outputs
/// unless the whole has not (then it is one tile), and at least 2 rows and columns where the
/// whole has, so a tile takes the same `gemm` kernel, and sums each output the same way, as the
/// whole GEMM.
fn cut_tiles(m: usize, n: usize, cut: Cut) -> Vec<Range<usize>> {
    let (len, other, min) = match cut {
        Cut::Cols => (n, m, MIN_TILE),
        Cut::Rows => (m, n, MIN_TILE_ROWS),
    };
    tiles(len, min.max((SMALL_GEMM + 1).div_ceil(other.max(1))))
}

/// `C (m×n, row stride ldc) = A·B + beta·C` by `gemm` on this thread, the depth cut into
/// [`KC`] blocks. Each output is the same fused multiply-add chain over each depth block,
/// blocks added in order, in whatever tile of C it sits, as long as the tile takes `gemm`'s
/// general kernel ([`cut_tiles`]). beta = 0 never reads C.
///
/// # Safety
/// `a` must cover m×k, `b` k×n and `c` m×n floats at stride `ldc`; nothing else may touch `c`'s
/// floats during the call, and `c` must not overlap `a` or `b`.
#[allow(clippy::too_many_arguments)]
unsafe fn sgemm(m: usize, k: usize, n: usize, a: Mat, b: Mat, beta: f32, c: *mut f32, ldc: usize) {
    let blocks = k.div_ceil(KC).max(1);
    let kb = k.div_ceil(blocks).max(1);
    let mut d0 = 0;
    loop {
        let d = kb.min(k - d0);
        // gemm computes dst = alpha·dst + beta·lhs·rhs and reads dst only when told to, so
        // our beta is its alpha; later depth blocks add to what the first wrote.
        let alpha = if d0 == 0 { beta } else { 1.0 };
        // SAFETY: the caller's promise covers every depth block of A and B and all of C.
        unsafe {
            gemm::gemm(
                m, n, d, c, 1, ldc as isize, alpha != 0.0, a.at(0, d0).ptr, a.cs, a.rs, b.at(d0, 0).ptr, b.cs, b.rs, alpha, 1.0,
                false, false, false, gemm::Parallelism::None,
            );
        }
        d0 += d;
        if d0 >= k {
            break;
        }
    }
}

/// `C (m×n, row stride ldc) = A·B + beta·C` in tiles along `cut`, one single-threaded
/// [`sgemm`] per tile on the workers.
///
/// # Safety
/// `a` must cover m×k, `b` k×n and `c` m×n floats at stride `ldc`; nothing else may touch `c`'s
/// floats during the call, and `c` must not overlap `a` or `b`.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm(par: &Par, m: usize, k: usize, n: usize, a: Mat, b: Mat, beta: f32, c: SharedMut, ldc: usize, cut: Cut) {
    if m == 0 || n == 0 {
        return;
    }
    let parts = cut_tiles(m, n, cut);
    par.for_each(parts.len(), |t| {
        let r = parts[t].clone();
        let (rows, cols, a, b, c0) = match cut {
            Cut::Cols => (m, r.len(), a, b.at(0, r.start), r.start),
            Cut::Rows => (r.len(), n, a.at(r.start, 0), b, r.start * ldc),
        };
        // SAFETY: in bounds by the caller's promise; the tiles write disjoint blocks of `c`.
        unsafe { sgemm(rows, k, cols, a, b, beta, c.ptr_at(c0), ldc) };
    });
}

/// First output index `o` whose input index `o·stride + kk − pad` is ≥ 0, and the end of those
/// that stay below `limit`: the outputs of one kernel tap that read real pixels.
#[inline]
fn valid_range(out: usize, kk: usize, stride: usize, pad: usize, limit: usize) -> Range<usize> {
    let lo = pad.saturating_sub(kk).div_ceil(stride);
    // o·stride + kk − pad < limit  ⇔  o < (limit + pad − kk) / stride (rounded up)
    let hi = (limit + pad).saturating_sub(kk).div_ceil(stride);
    lo.min(out)..hi.min(out).max(lo.min(out))
}

/// Rows `(ch·size + ky)·size + kx` of `col` (row stride `ld`, this image's columns from `c0`)
/// for one channel plane: col[...][oy·out_w + ox] = plane[iy][ix] (0 in the padding).
fn im2col_plane(plane: &[f32], s: &ConvShape, ch: usize, col: SharedMut, ld: usize, c0: usize) {
    let n = s.out_h * s.out_w;
    let rows_y: Vec<Range<usize>> = (0..s.size).map(|ky| valid_range(s.out_h, ky, s.stride, s.pad, s.h)).collect();
    for ky in 0..s.size {
        for kx in 0..s.size {
            let row = (ch * s.size + ky) * s.size + kx;
            // SAFETY: this (image, channel) item alone writes these rows' columns c0..c0+n.
            let dst = unsafe { col.slice_mut(row * ld + c0..row * ld + c0 + n) };
            let xs = valid_range(s.out_w, kx, s.stride, s.pad, s.w);
            for (oy, d) in dst.chunks_exact_mut(s.out_w).enumerate() {
                if !rows_y[ky].contains(&oy) || xs.is_empty() {
                    d.fill(0.0);
                    continue;
                }
                let iy = oy * s.stride + ky - s.pad;
                let src = &plane[iy * s.w..(iy + 1) * s.w];
                d[..xs.start].fill(0.0);
                d[xs.end..].fill(0.0);
                let ix0 = xs.start * s.stride + kx - s.pad;
                if s.stride == 1 {
                    d[xs.clone()].copy_from_slice(&src[ix0..ix0 + xs.len()]);
                } else {
                    for (j, v) in d[xs.clone()].iter_mut().enumerate() {
                        *v = src[ix0 + j * s.stride];
                    }
                }
            }
        }
    }
}

/// im2col of `imgs` images from `b0` (conv group `gi`) into `col` (k × imgs·n, image j in
/// columns j·n..), one item per (image, channel).
#[allow(clippy::too_many_arguments)]
fn im2col(par: &Par, x: &[f32], s: &ConvShape, g: &Geo, b0: usize, imgs: usize, gi: usize, col: &mut [f32]) {
    let hw = s.h * s.w;
    let ld = imgs * g.n;
    let out = SharedMut::new(&mut col[..g.k * ld]);
    par.for_each(imgs * g.cg, |item| {
        let (j, ch) = (item / g.cg, item % g.cg);
        let plane = &x[((b0 + j) * s.c + gi * g.cg + ch) * hw..][..hw];
        im2col_plane(plane, s, ch, out, ld, j * g.n);
    });
}

/// Transpose of im2col for one channel plane: dx[iy][ix] += col[...] (padding entries dropped),
/// in the order (ky, kx, oy, ox) of the plain loop.
fn col2im_plane(col: &[f32], ld: usize, c0: usize, s: &ConvShape, ch: usize, plane: &mut [f32]) {
    for ky in 0..s.size {
        let ys = valid_range(s.out_h, ky, s.stride, s.pad, s.h);
        for kx in 0..s.size {
            let xs = valid_range(s.out_w, kx, s.stride, s.pad, s.w);
            if xs.is_empty() {
                continue;
            }
            let row = &col[((ch * s.size + ky) * s.size + kx) * ld + c0..][..s.out_h * s.out_w];
            let ix0 = xs.start * s.stride + kx - s.pad;
            for oy in ys.clone() {
                let iy = oy * s.stride + ky - s.pad;
                let src = &row[oy * s.out_w + xs.start..oy * s.out_w + xs.end];
                let dst = &mut plane[iy * s.w..(iy + 1) * s.w];
                if s.stride == 1 {
                    for (d, v) in dst[ix0..ix0 + src.len()].iter_mut().zip(src) {
                        *d += v;
                    }
                } else {
                    for (j, v) in src.iter().enumerate() {
                        dst[ix0 + j * s.stride] += v;
                    }
                }
            }
        }
    }
}

/// col2im of `imgs` images from `b0` (group `gi`): one item per (image, channel) plane of dx.
#[allow(clippy::too_many_arguments)]
fn col2im_add(par: &Par, col: &[f32], s: &ConvShape, g: &Geo, b0: usize, imgs: usize, gi: usize, dx: &mut [f32]) {
    let hw = s.h * s.w;
    let ld = imgs * g.n;
    let out = SharedMut::new(dx);
    par.for_each(imgs * g.cg, |item| {
        let (j, ch) = (item / g.cg, item % g.cg);
        let p0 = ((b0 + j) * s.c + gi * g.cg + ch) * hw;
        // SAFETY: each item owns one (image, channel) plane of dx.
        let plane = unsafe { out.slice_mut(p0..p0 + hw) };
        col2im_plane(col, ld, j * g.n, s, ch, plane);
    });
}

/// Gathers the `[image][m][n]` planes of `imgs` images from `b0` (group `gi`) of `planes` into
/// the side-by-side GEMM layout `[m][image·n]` of `wide`, one item per image.
#[allow(clippy::too_many_arguments)]
fn gather(par: &Par, s: &ConvShape, g: &Geo, b0: usize, imgs: usize, gi: usize, planes: &[f32], wide: &mut [f32]) {
    let ld = imgs * g.n;
    let wp = SharedMut::new(wide);
    par.for_each(imgs, |j| {
        let y0 = ((b0 + j) * s.filters + gi * g.m) * g.n;
        for (f, plane) in planes[y0..y0 + g.m * g.n].chunks_exact(g.n).enumerate() {
            // SAFETY: image j alone writes its columns of `wide`.
            unsafe { wp.slice_mut(f * ld + j * g.n..f * ld + (j + 1) * g.n) }.copy_from_slice(plane);
        }
    });
}

/// The inverse of [`gather`]: `wide` back into the planes.
#[allow(clippy::too_many_arguments)]
fn scatter(par: &Par, s: &ConvShape, g: &Geo, b0: usize, imgs: usize, gi: usize, wide: &[f32], planes: &mut [f32]) {
    let ld = imgs * g.n;
    let yp = SharedMut::new(planes);
    par.for_each(imgs, |j| {
        let y0 = ((b0 + j) * s.filters + gi * g.m) * g.n;
        // SAFETY: image j alone writes its planes.
        let yj = unsafe { yp.slice_mut(y0..y0 + g.m * g.n) };
        for (f, plane) in yj.chunks_exact_mut(g.n).enumerate() {
            plane.copy_from_slice(&wide[f * ld + j * g.n..f * ld + (j + 1) * g.n]);
        }
    });
}

/// y = conv(x, w), overwritten.
pub(super) fn forward(par: &Par, x: &[f32], w: &[f32], y: &mut [f32], s: &ConvShape, col: &mut [f32], wide: &mut [f32]) {
    check_lens(s, x.len(), w.len(), y.len());
    let g = geo(s);
    let hw = s.h * s.w;
    for gi in 0..s.groups {
        let wg = Mat::of(&w[gi * g.m * g.k..][..g.m * g.k], g.m, g.k, false);
        for b0 in (0..s.batch).step_by(g.group) {
            let imgs = g.group.min(s.batch - b0);
            let cols = imgs * g.n;
            let b = if g.direct && imgs == 1 {
                Mat::of(&x[(b0 * s.c + gi * g.cg) * hw..][..g.cg * hw], g.k, cols, false)
            } else {
                im2col(par, x, s, &g, b0, imgs, gi, col);
                Mat::of(&col[..g.k * cols], g.k, cols, false)
            };
            if imgs == 1 {
                let yb = &mut y[(b0 * s.filters + gi * g.m) * g.n..][..g.m * g.n];
                // SAFETY: wg and b cover m×k and k×n; yb is m×n, disjoint from both.
                unsafe { gemm(par, g.m, g.k, cols, wg, b, 0.0, SharedMut::new(yb), cols, Cut::Cols) };
            } else {
                let out = &mut wide[..g.m * cols];
                // SAFETY: as above, into the scratch.
                unsafe { gemm(par, g.m, g.k, cols, wg, b, 0.0, SharedMut::new(out), cols, Cut::Cols) };
                scatter(par, s, &g, b0, imgs, gi, out, y);
            }
        }
    }
}

/// dx += convᵀ(dy, w): col = Wᵀ·dy, then col2im adds into dx.
pub(super) fn backward_data(par: &Par, dy: &[f32], w: &[f32], dx: &mut [f32], s: &ConvShape, col: &mut [f32], wide: &mut [f32]) {
    check_lens(s, dx.len(), w.len(), dy.len());
    let g = geo(s);
    let hw = s.h * s.w;
    for gi in 0..s.groups {
        let wt = Mat::of(&w[gi * g.m * g.k..][..g.m * g.k], g.k, g.m, true);
        if g.direct {
            // dx += Wᵀ·dy straight into dx (beta 1), one image per GEMM so each dx float gets
            // the same single accumulation as the plain form.
            let out = SharedMut::new(dx);
            let parts = cut_tiles(g.k, g.n, Cut::Cols);
            par.for_each(s.batch * parts.len(), |item| {
                let (b, r) = (item / parts.len(), parts[item % parts.len()].clone());
                let dyb = Mat::of(&dy[(b * s.filters + gi * g.m) * g.n..][..g.m * g.n], g.m, g.n, false);
                let d0 = (b * s.c + gi * g.cg) * hw + r.start;
                // SAFETY: the (image, tile) items write disjoint column blocks of dx; wt and dyb
                // are read-only inputs disjoint from dx (checked by the caller).
                unsafe { sgemm(g.k, g.m, r.len(), wt, dyb.at(0, r.start), 1.0, out.ptr_at(d0), g.n) };
            });
            continue;
        }
        for b0 in (0..s.batch).step_by(g.group) {
            let imgs = g.group.min(s.batch - b0);
            let cols = imgs * g.n;
            let dyg = if imgs == 1 {
                Mat::of(&dy[(b0 * s.filters + gi * g.m) * g.n..][..g.m * g.n], g.m, cols, false)
            } else {
                let gathered = &mut wide[..g.m * cols];
                gather(par, s, &g, b0, imgs, gi, dy, gathered);
                Mat::of(gathered, g.m, cols, false)
            };
            let c = &mut col[..g.k * cols];
            // SAFETY: wt is k×m, dyg m×cols, c k×cols in the scratch, disjoint from both.
            unsafe { gemm(par, g.k, g.m, cols, wt, dyg, 0.0, SharedMut::new(c), cols, Cut::Cols) };
            col2im_add(par, c, s, &g, b0, imgs, gi, dx);
        }
    }
}

/// dw += dy · im2col(x)ᵀ, summed over the batch: one GEMM per image, images in order.
pub(super) fn backward_weights(par: &Par, x: &[f32], dy: &[f32], dw: &mut [f32], s: &ConvShape, col: &mut [f32]) {
    check_lens(s, x.len(), dw.len(), dy.len());
    let g = Geo { group: 1, ..geo(s) };
    let hw = s.h * s.w;
    // Cut the larger side of dW, so the operand packed once per tile is the smaller one.
    let cut = if g.k >= g.m { Cut::Cols } else { Cut::Rows };
    for gi in 0..s.groups {
        let dwg = SharedMut::new(&mut dw[gi * g.m * g.k..][..g.m * g.k]);
        for b in 0..s.batch {
            let dyb = Mat::of(&dy[(b * s.filters + gi * g.m) * g.n..][..g.m * g.n], g.m, g.n, false);
            let xt = if g.direct {
                Mat::of(&x[(b * s.c + gi * g.cg) * hw..][..g.cg * hw], g.n, g.k, true)
            } else {
                im2col(par, x, s, &g, b, 1, gi, col);
                Mat::of(&col[..g.k * g.n], g.n, g.k, true)
            };
            // SAFETY: dyb is m×n, xt n×k, dW m×k disjoint from both (checked by the caller).
            unsafe { gemm(par, g.m, g.n, g.k, dyb, xt, 1.0, dwg, g.k, cut) };
        }
    }
}

/// One single-threaded GEMM call the conv ops make: `C (m×n, row stride ldc) = A·B + beta·C`,
/// element (r, c) of A at `r·a.0 + c·a.1` (B likewise). For benchmarks of the GEMM alone.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GemmCall {
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub a: (isize, isize),
    pub b: (isize, isize),
    pub beta: f32,
    pub ldc: usize,
}

/// Runs `call` as the backend does ([`sgemm`]) on `c`, with A and B at the start of `a` and `b`.
/// For benchmarks, and as the untiled GEMM the tests compare the tiled ops against.
pub fn run_gemm_call(call: &GemmCall, a: &[f32], b: &[f32], c: &mut [f32]) {
    let GemmCall { m, k, n, beta, ldc, .. } = *call;
    let fits = |v: &[f32], rows: usize, cols: usize, (rs, cs): (isize, isize)| {
        rs >= 0 && cs >= 0 && (rows == 0 || cols == 0 || v.len() > (rows - 1) * rs as usize + (cols - 1) * cs as usize)
    };
    assert!(fits(a, m, k, call.a) && fits(b, k, n, call.b) && fits(c, m, n, (ldc as isize, 1)) && ldc >= n,
        "cpu gemm: buffers of {}/{}/{} floats too short for {call:?}", a.len(), b.len(), c.len());
    let (a, b) = (Mat { ptr: a.as_ptr(), rs: call.a.0, cs: call.a.1 }, Mat { ptr: b.as_ptr(), rs: call.b.0, cs: call.b.1 });
    // SAFETY: A, B and C lie in their slices (asserted); `c` is a unique borrow, so disjoint.
    unsafe { sgemm(m, k, n, a, b, beta, c.as_mut_ptr(), ldc) }
}

/// Which conv op a [`GemmCall`] serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvOp {
    Forward,
    BackwardData,
    BackwardWeights,
}

/// The GEMM calls `op` makes on shape `s`, in order: the same geometry, grouping and tiles as
/// [`forward`], [`backward_data`] and [`backward_weights`] (kept beside them so they change
/// together; the unit test checks they add up to the op's multiply-adds).
pub fn gemm_calls(s: &ConvShape, op: ConvOp) -> Vec<GemmCall> {
    let g = geo(s);
    let mut out = Vec::new();
    let mut push = |m: usize, k: usize, n: usize, a: Mat, b: Mat, beta: f32, ldc: usize, cut: Cut| {
        for r in cut_tiles(m, n, cut) {
            let (rows, cols) = if cut == Cut::Cols { (m, r.len()) } else { (r.len(), n) };
            out.push(GemmCall { m: rows, k, n: cols, a: (a.rs, a.cs), b: (b.rs, b.cs), beta, ldc });
        }
    };
    // Only the strides of these matrices are used.
    let strides = |rows: usize, cols: usize, transposed: bool| {
        let (rs, cs) = if transposed { (1, rows as isize) } else { (cols as isize, 1) };
        Mat { ptr: std::ptr::null(), rs, cs }
    };
    for _gi in 0..s.groups {
        match op {
            ConvOp::Forward | ConvOp::BackwardData => {
                if op == ConvOp::BackwardData && g.direct {
                    for _b in 0..s.batch {
                        push(g.k, g.m, g.n, strides(g.k, g.m, true), strides(g.m, g.n, false), 1.0, g.n, Cut::Cols);
                    }
                    continue;
                }
                for b0 in (0..s.batch).step_by(g.group) {
                    let cols = g.group.min(s.batch - b0) * g.n;
                    if op == ConvOp::Forward {
                        push(g.m, g.k, cols, strides(g.m, g.k, false), strides(g.k, cols, false), 0.0, cols, Cut::Cols);
                    } else {
                        push(g.k, g.m, cols, strides(g.k, g.m, true), strides(g.m, cols, false), 0.0, cols, Cut::Cols);
                    }
                }
            }
            ConvOp::BackwardWeights => {
                let cut = if g.k >= g.m { Cut::Cols } else { Cut::Rows };
                for _b in 0..s.batch {
                    push(g.m, g.n, g.k, strides(g.m, g.n, false), strides(g.n, g.k, true), 1.0, g.k, cut);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The valid output range of a tap is exactly the outputs whose input index is in the image.
    #[test]
    fn valid_range_matches_the_index_formula() {
        for (out, limit, stride, pad, size) in [(5usize, 5usize, 1usize, 1usize, 3usize), (3, 6, 2, 1, 3), (2, 4, 2, 0, 2), (4, 4, 1, 0, 1), (1, 1, 1, 2, 5)] {
            for kk in 0..size {
                let want: Vec<usize> =
                    (0..out).filter(|&o| (o * stride + kk).checked_sub(pad).is_some_and(|i| i < limit)).collect();
                let got: Vec<usize> = valid_range(out, kk, stride, pad, limit).collect();
                assert_eq!(got, want, "out {out} limit {limit} stride {stride} pad {pad} tap {kk}");
            }
        }
    }

    #[test]
    fn tiles_cover_the_range_and_depend_on_the_length_only() {
        for len in [1, 7, 49, 256, 784, 3136, 12544] {
            let t = tiles(len, MIN_TILE);
            assert!(t.len() <= MAX_TILES && t[0].start == 0 && t.last().unwrap().end == len);
            assert!(t.windows(2).all(|p| p[0].end == p[1].start && p[0].len() % 8 == 0));
            assert!(t.len() == 1 || t.iter().all(|r| r.len() >= MIN_TILE), "{len}: {t:?}");
        }
    }

    /// A GEMM cut into several tiles has more than SMALL_GEMM outputs and 2 rows and columns in
    /// every tile, so each tile takes the whole GEMM's kernel.
    #[test]
    fn cut_tiles_are_never_small_gemms() {
        for m in [1, 2, 16, 17, 33, 49, 64, 255, 280, 512] {
            for n in [1, 2, 8, 16, 27, 49, 256, 577, 1568, 4608] {
                for cut in [Cut::Cols, Cut::Rows] {
                    let t = cut_tiles(m, n, cut);
                    let other = if cut == Cut::Cols { m } else { n };
                    assert!(t.len() == 1 || t.iter().all(|r| r.len() * other > SMALL_GEMM && r.len() >= 2), "{m}×{n}: {t:?}");
                }
            }
        }
    }

    /// Images that share a GEMM give the same floats as one GEMM per image (the forward's
    /// promise), on a shape with padding and stride 2.
    #[test]
    fn grouped_forward_equals_per_image_forward() {
        let s = ConvShape::new(5, 3, 9, 7, 4, 3, 2, 1, 1);
        assert!(geo(&s).group > 1, "the shape must exercise grouping");
        let u = |i: usize, seed: u64| crate::rng::uniform(seed, i as u32) - 0.5;
        let x: Vec<f32> = (0..s.input_len()).map(|i| u(i, 1)).collect();
        let w: Vec<f32> = (0..s.weight_len()).map(|i| u(i, 2)).collect();
        let par = Par::new(2);
        let mut y = vec![0.0; s.output_len()];
        let (mut col, mut wide) = (vec![0.0; col_len(&s)], vec![0.0; gemm_len(&s)]);
        forward(&par, &x, &w, &mut y, &s, &mut col, &mut wide);
        let one = ConvShape { batch: 1, ..s };
        for b in 0..s.batch {
            let mut yb = vec![0.0; one.output_len()];
            let (mut col, mut wide) = (vec![0.0; col_len(&one)], vec![0.0; gemm_len(&one)]);
            forward(&Par::new(1), &x[b * one.input_len()..][..one.input_len()], &w, &mut yb, &one, &mut col, &mut wide);
            assert_eq!(&y[b * one.output_len()..][..one.output_len()], &yb[..], "image {b}");
        }
    }

    /// The listed GEMM calls do exactly the multiply-adds of the three ops.
    #[test]
    fn gemm_calls_add_up_to_the_ops() {
        for s in [ConvShape::new(16, 3, 224, 224, 32, 3, 2, 1, 1), ConvShape::new(16, 256, 7, 7, 512, 3, 1, 1, 1),
            ConvShape::new(16, 64, 56, 56, 64, 1, 1, 0, 1), ConvShape::new(3, 8, 11, 13, 6, 5, 1, 2, 2)] {
            let g = geo(&s);
            let want = s.batch * s.groups * g.m * g.k * g.n;
            for op in [ConvOp::Forward, ConvOp::BackwardData, ConvOp::BackwardWeights] {
                let got: usize = gemm_calls(&s, op).iter().map(|c| c.m * c.k * c.n).sum();
                assert_eq!(got, want, "{s:?} {op:?}");
            }
        }
    }
}
