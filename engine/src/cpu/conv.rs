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
//! (see [`sgemm`] and [`gemm_split`] for what that takes). Each op is one parallel loop over
//! items planned from the shape alone (`*_plan`), and an item does all its work itself (its
//! im2col, GEMM and col2im, in a scratch slab of its worker), so no thread waits for another
//! inside an op and the column scratch an item fills is still in cache when its GEMM reads it:
//! - forward: an item is a column tile of images side by side (`Geo::group` small images share
//!   one GEMM), and a row tile of it where the whole batch makes one column tile; none of these
//!   changes an output's sum;
//! - backward-data: an item is a range of input channels of such a group: its rows of
//!   `col = Wᵀ·dy`, then col2im of exactly those channels' planes, in the plain loop's order;
//! - backward-weights sums over the batch, so an item is a tile of `dW` that runs through the
//!   images in order, one GEMM per image (im2col of its own rows of `col` first); where images
//!   have few pixels, `conv_dw.rs` does the same sums with the tile in registers.

use std::ops::Range;

use super::par::{self, Par, SharedMut};
use crate::shapes::ConvShape;

/// Columns one GEMM should have at least: images smaller than this share a GEMM.
const TARGET_COLS: usize = 1024;
/// Items an op is planned into where the shape allows: enough for a few threads to share evenly
/// (rayon hands them out as threads free up).
const ITEMS: usize = 16;
/// Fewest columns of a forward tile: each tile packs the whole weight matrix again.
const MIN_COLS: usize = 96;
/// Fewest columns (weight-gradient tiles: `dW` columns) and rows a tile should have to be worth
/// its packing (fewer columns only where `dW` has under 64: then one tile per 16 columns, which
/// costs the kernel no lanes, so that even the first layer's weight gradient is shared).
const MIN_TILE_COLS: usize = 32;
const MIN_TILE_ROWS: usize = 32;
/// Items of a weight gradient: its tiles are small GEMMs already, so fewer.
const W_ITEMS: usize = 8;
/// Row tiles of a forward GEMM that makes a single column tile.
const FWD_ROW_ITEMS: usize = 2;
/// Floats of column scratch a backward-data item should stay under (about a core's L2 cache), so
/// col2im reads what the GEMM just wrote from cache.
const COL_TILE: usize = 1 << 18;
/// Outputs above which `gemm` uses its general kernel: at most this many, and with both operands
/// contiguous along the depth, it takes dot-product kernels that sum in another order.
const SMALL_GEMM: usize = 256;
/// Longest depth of one `gemm` call: a longer inner dimension is cut into near-equal blocks of at
/// most this many, added into C in order. At or below 512 `gemm` keeps the whole depth in one
/// block; above it, its own blocks would depend on m and n, so a tile would sum differently
/// from the whole GEMM.
const KC: usize = 512;
/// `gemm`'s left-operand packing threshold, its cap (see [`sgemm`]).
const LHS_PACKING_THRESHOLD: usize = 256;

/// Geometry derived from a shape, checked once per call.
struct Geo {
    m: usize,
    k: usize,
    n: usize,
    /// Input channels per group.
    cg: usize,
    /// Rows of `col` per input channel (size²).
    ss: usize,
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
        ss: s.size * s.size,
        direct: s.size == 1 && s.stride == 1 && s.pad == 0 && s.out_h == s.h && s.out_w == s.w,
        group: group.max(1),
    }
}

/// The image groups `(first image, images)` that share a forward / backward-data GEMM.
fn image_groups(s: &ConvShape, g: &Geo) -> Vec<(usize, usize)> {
    (0..s.batch).step_by(g.group).map(|b0| (b0, g.group.min(s.batch - b0))).collect()
}

/// One forward item: rows (filters) `rows` and columns `cols` of the GEMM of images
/// `b0..b0 + imgs` side by side.
#[derive(Clone, Debug)]
struct ColTile {
    b0: usize,
    imgs: usize,
    rows: Range<usize>,
    cols: Range<usize>,
}

fn forward_plan(s: &ConvShape, g: &Geo) -> Vec<ColTile> {
    let groups = image_groups(s, g);
    let want = ITEMS.div_ceil(groups.len().max(1));
    let tiles: Vec<_> = groups.iter().flat_map(|&(b0, imgs)| {
        let cols = imgs * g.n;
        gemm_split(cols, 1, g.m, want.min(cols / MIN_COLS), 1, 16).into_iter().map(move |r| (b0, imgs, r))
    }).collect();
    // A whole batch of few pixels (the deep layers of a small input) makes one column tile:
    // the filters are cut instead, so that the other workers do not idle through the op's
    // largest GEMM. Each row tile repeats the (cheap) im2col of its columns.
    let rows = match tiles.as_slice() {
        [(_, _, c)] => gemm_split(g.m, 1, c.len(), FWD_ROW_ITEMS, MIN_TILE_ROWS, 16),
        _ => vec![0..g.m],
    };
    tiles.into_iter().flat_map(|(b0, imgs, cols)| rows.iter().map(move |r| ColTile { b0, imgs, rows: r.clone(), cols: cols.clone() })).collect()
}

/// Scratch floats of one forward item: its im2col columns, and its GEMM output when images share
/// the GEMM (then scattered into their planes).
fn forward_scratch(g: &Geo, t: &ColTile) -> (usize, usize) {
    let w = t.cols.len();
    let col = if g.direct && t.imgs == 1 { 0 } else { g.k * w };
    (col, if t.imgs > 1 { t.rows.len() * w } else { 0 })
}

/// One backward-data item: input channels `chs` of images `b0..b0 + imgs`.
#[derive(Clone, Debug)]
struct ChanBlock {
    b0: usize,
    imgs: usize,
    chs: Range<usize>,
}

fn backward_data_plan(s: &ConvShape, g: &Geo) -> Vec<ChanBlock> {
    let groups = image_groups(s, g);
    let want = ITEMS.div_ceil(groups.len().max(1));
    let mut out = Vec::new();
    for (b0, imgs) in groups {
        let cols = imgs * g.n;
        let pieces = want.max((g.k * cols).div_ceil(COL_TILE));
        for chs in gemm_split(g.cg, g.ss, cols, pieces, 1, 1) {
            out.push(ChanBlock { b0, imgs, chs });
        }
    }
    out
}

/// One weight-gradient item: the tile `rows × cols` of `dW` (`cols`: rows of `col`), all images.
#[derive(Clone, Debug)]
struct WeightTile {
    rows: Range<usize>,
    cols: Range<usize>,
}

fn backward_weights_plan(g: &Geo) -> Vec<WeightTile> {
    // `gemm` runs dW transposed: dW's columns are its kernel's 16-float rows, so tiles of 16
    // columns keep every kernel call full.
    let split_cols = |want: usize, other: usize| {
        if g.k >= 64 {
            gemm_split(g.k, 1, other, want, MIN_TILE_COLS, 16)
        } else {
            gemm_split(g.k, 1, other, want.min(g.k.div_ceil(16)), 1, 1)
        }
    };
    let narrowest = |t: &[Range<usize>]| t.iter().map(Range::len).min().unwrap_or(0);
    let (rows, cols) = if g.direct {
        // A direct input costs a row tile nothing, and rows keep the kernel's tiles wide.
        let rows = gemm_split(g.m, 1, g.k, W_ITEMS, MIN_TILE_ROWS, 8);
        let cols = split_cols(W_ITEMS.div_ceil(rows.len()), narrowest(&rows));
        (rows, cols)
    } else {
        // Row tiles only where column tiles are too few: each row tile redoes its columns' im2col.
        let cols = split_cols(W_ITEMS, g.m);
        let rows = if cols.len() * 2 <= W_ITEMS {
            gemm_split(g.m, 1, narrowest(&cols), W_ITEMS.div_ceil(cols.len()), MIN_TILE_ROWS, 8)
        } else {
            vec![0..g.m]
        };
        (rows, cols)
    };
    cols.iter().flat_map(|c| rows.iter().map(|r| WeightTile { rows: r.clone(), cols: c.clone() })).collect()
}

/// Floats of im2col scratch a shape needs per worker thread (the largest item's).
pub(super) fn col_len(s: &ConvShape) -> usize {
    let g = geo(s);
    let fwd = forward_plan(s, &g).iter().map(|t| {
        let (c, w) = forward_scratch(&g, t);
        c + w
    }).max().unwrap_or(0);
    let bwd_data = if g.direct { 0 } else {
        backward_data_plan(s, &g).iter().map(|b| b.chs.len() * g.ss * b.imgs * g.n).max().unwrap_or(0)
    };
    let bwd_weights = backward_weights_plan(&g).iter().map(|t| match (dw::applies(s, &g, t), g.direct) {
        (true, _) => dw::scratch_len(s, &g, t),
        (false, true) => 0,
        (false, false) => t.cols.len() * g.n,
    }).max().unwrap_or(0);
    fwd.max(bwd_data).max(bwd_weights)
}

/// Floats of shared GEMM scratch: backward-data's gradient of images that share a GEMM,
/// gathered side by side.
pub(super) fn gemm_len(s: &ConvShape) -> usize {
    let g = geo(s);
    if g.group > 1 && !g.direct { g.m * g.n * s.batch } else { 0 }
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

/// `pieces` near-equal ranges covering `0..len`, cut at multiples of `align` (fewer where `len`
/// has fewer than `pieces` multiples of `align`). Shape-only.
fn split(len: usize, pieces: usize, align: usize) -> Vec<Range<usize>> {
    let align = align.max(1);
    let pieces = pieces.clamp(1, (len / align).max(1));
    let cut = |t: usize| if t == pieces { len } else { t * len / pieces / align * align };
    (0..pieces).map(|t| cut(t)..cut(t + 1)).filter(|r| !r.is_empty()).collect()
}

/// Tiles of one side of a GEMM output: `len` units of `unit` rows (or columns) each, the other
/// side `other` long, cut into at most `want` near-equal pieces of at least `min` units at
/// multiples of `align` units. Each piece has more than `SMALL_GEMM` outputs and at least 2
/// along both sides unless the whole has not (then it is one piece), so a tile takes the same
/// `gemm` kernel, and sums each output the same way, as the whole GEMM.
fn gemm_split(len: usize, unit: usize, other: usize, want: usize, min: usize, align: usize) -> Vec<Range<usize>> {
    if len * unit * other <= SMALL_GEMM || other < 2 {
        return vec![0..len];
    }
    let fits = |r: &Range<usize>| r.len() * unit * other > SMALL_GEMM && r.len() * unit >= 2 && r.len() >= min;
    // The most pieces up to `want` whose every piece fits (one piece always does).
    (2..=want).rev().map(|p| split(len, p, align)).find(|t| t.iter().all(fits)).unwrap_or_else(|| vec![0..len])
}

/// `C (m×n, row stride ldc) = A·B + beta·C` by `gemm` on this thread, the depth cut into
/// [`KC`] blocks. Each output is the same fused multiply-add chain over each depth block,
/// blocks added in order, in whatever tile of C it sits, as long as the tile takes `gemm`'s
/// general kernel ([`gemm_split`]). beta = 0 never reads C.
///
/// # Safety
/// `a` must cover m×k, `b` k×n and `c` m×n floats at stride `ldc`; nothing else may touch `c`'s
/// floats during the call, and `c` must not overlap `a` or `b`.
#[allow(clippy::too_many_arguments)]
unsafe fn sgemm(m: usize, k: usize, n: usize, a: Mat, b: Mat, beta: f32, c: *mut f32, ldc: usize) {
    // `gemm` copies a column-contiguous left operand (our im2col columns, dy) into its packed
    // layout once the other side passes 8 microkernel widths (48 filters); reading it in place
    // measured faster on the network's shapes. Packing moves floats and sums nothing, so results
    // are unchanged. The setting is process-wide and this is the only `gemm` caller.
    static PACKING: std::sync::Once = std::sync::Once::new();
    PACKING.call_once(|| gemm::set_lhs_packing_threshold_single_thread(LHS_PACKING_THRESHOLD));
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

/// The images a column range of a group's GEMM covers: (image j of the group, its positions,
/// the range's first column for them).
fn image_pieces(n: usize, cols: &Range<usize>) -> impl Iterator<Item = (usize, Range<usize>, usize)> + '_ {
    let first = cols.start / n.max(1);
    let last = cols.end.div_ceil(n.max(1));
    (first..last).map(move |j| {
        let (p0, p1) = (cols.start.max(j * n) - j * n, cols.end.min((j + 1) * n) - j * n);
        (j, p0..p1, j * n + p0 - cols.start)
    })
}

/// y = conv(x, w), overwritten. `col`: [`col_len`] floats per worker.
pub(super) fn forward(par: &Par, x: &[f32], w: &[f32], y: &mut [f32], s: &ConvShape, col: &mut [f32]) {
    check_lens(s, x.len(), w.len(), y.len());
    let g = geo(s);
    let hw = s.h * s.w;
    let plan = forward_plan(s, &g);
    let per = col_len(s);
    let yp = SharedMut::new(y);
    for gi in 0..s.groups {
        let wg = &w[gi * g.m * g.k..][..g.m * g.k];
        par.for_each_scratch(plan.len(), col, per, |i, scratch| {
            let t = &plan[i];
            let width = t.cols.len();
            let (col_floats, wide_floats) = forward_scratch(&g, t);
            let (colt, rest) = scratch.split_at_mut(col_floats);
            // B: the im2col columns, or for a 1×1 direct image its input's channel rows.
            let (b, b_at, b_rs) = if col_floats == 0 {
                (&x[(t.b0 * s.c + gi * g.cg) * hw..][..g.k * g.n], t.cols.start, g.n)
            } else {
                par::wide(#[inline(always)] || {
                    for (j, pos, c0) in image_pieces(g.n, &t.cols) {
                        let planes = |ch: usize| &x[((t.b0 + j) * s.c + gi * g.cg + ch) * hw..][..hw];
                        im2col_positions(planes, s, 0..g.k, pos, colt, width, c0);
                    }
                });
                (&colt[..], 0, width)
            };
            let (m, a_at) = (t.rows.len(), t.rows.start * g.k);
            if t.imgs == 1 {
                let y0 = (t.b0 * s.filters + gi * g.m + t.rows.start) * g.n + t.cols.start;
                // SAFETY: the item alone writes columns `t.cols` of its image's planes `t.rows`,
                // disjoint from x and w (checked by the caller).
                unsafe { blocks::product(m, g.k, width, (wg, a_at, g.k, 1), (b, b_at, b_rs), (yp, y0, g.n), false) };
                return;
            }
            let wide = &mut rest[..wide_floats];
            // SAFETY: as above, into the worker's scratch.
            unsafe { blocks::product(m, g.k, width, (wg, a_at, g.k, 1), (b, b_at, b_rs), (SharedMut::new(wide), 0, width), false) };
            for (j, pos, c0) in image_pieces(g.n, &t.cols) {
                for (i, f) in t.rows.clone().enumerate() {
                    let y0 = ((t.b0 + j) * s.filters + gi * g.m + f) * g.n;
                    // SAFETY: these positions of image j's planes `t.rows` belong to this item alone.
                    let dst = unsafe { yp.slice_mut(y0 + pos.start..y0 + pos.end) };
                    dst.copy_from_slice(&wide[i * width + c0..][..pos.len()]);
                }
            }
        });
    }
}

/// dx += convᵀ(dy, w): col = Wᵀ·dy, then col2im adds into dx. `col`: [`col_len`] floats per
/// worker; `wide`: [`gemm_len`].
pub(super) fn backward_data(par: &Par, dy: &[f32], w: &[f32], dx: &mut [f32], s: &ConvShape, col: &mut [f32], wide: &mut [f32]) {
    check_lens(s, dx.len(), w.len(), dy.len());
    let g = geo(s);
    let hw = s.h * s.w;
    let out = SharedMut::new(dx);
    for gi in 0..s.groups {
        // Wᵀ: (r, d) is W's (d, r).
        let wg = &w[gi * g.m * g.k..][..g.m * g.k];
        if g.direct {
            // dx += Wᵀ·dy straight into dx (beta 1), one image per GEMM so each dx float gets
            // the same single accumulation as the plain form.
            let parts = gemm_split(g.n, 1, g.k, ITEMS.div_ceil(s.batch), MIN_COLS, 16);
            par.for_each(s.batch * parts.len(), |item| {
                let (b, r) = (item / parts.len(), parts[item % parts.len()].clone());
                let dyb = &dy[(b * s.filters + gi * g.m) * g.n..][..g.m * g.n];
                let d0 = (b * s.c + gi * g.cg) * hw + r.start;
                // SAFETY: the (image, tile) items write disjoint column blocks of dx; w and dy
                // are read-only inputs disjoint from dx (checked by the caller).
                unsafe { blocks::product(g.k, g.m, r.len(), (wg, 0, 1, g.k), (dyb, r.start, g.n), (out, d0, g.n), true) };
            });
            continue;
        }
        let groups = image_groups(s, &g);
        if g.group > 1 {
            // Images that share a GEMM: their dy planes side by side, group after group.
            let wp = SharedMut::new(&mut wide[..g.m * g.n * s.batch]);
            par.for_each(s.batch, |b| {
                let (b0, imgs) = groups[b / g.group];
                let ld = imgs * g.n;
                let y0 = (b * s.filters + gi * g.m) * g.n;
                for (f, plane) in dy[y0..y0 + g.m * g.n].chunks_exact(g.n).enumerate() {
                    let at = b0 * g.m * g.n + f * ld + (b - b0) * g.n;
                    // SAFETY: image b alone writes its columns of its group's block.
                    unsafe { wp.slice_mut(at..at + g.n) }.copy_from_slice(plane);
                }
            });
        }
        let gathered: &[f32] = wide;
        let plan = backward_data_plan(s, &g);
        par.for_each_scratch(plan.len(), col, col_len(s), |i, scratch| {
            let blk = &plan[i];
            let cols = blk.imgs * g.n;
            let dyg = if blk.imgs == 1 {
                &dy[(blk.b0 * s.filters + gi * g.m) * g.n..][..g.m * g.n]
            } else {
                &gathered[blk.b0 * g.m * g.n..][..g.m * cols]
            };
            let rows = blk.chs.len() * g.ss;
            let c = &mut scratch[..rows * cols];
            // SAFETY: c (rows×cols) is in the worker's scratch, disjoint from w and dy.
            unsafe { blocks::product(rows, g.m, cols, (wg, blk.chs.start * g.ss, 1, g.k), (dyg, 0, cols), (SharedMut::new(c), 0, cols), false) };
            par::wide(#[inline(always)] || {
                for j in 0..blk.imgs {
                    for ch in blk.chs.clone() {
                        let p0 = ((blk.b0 + j) * s.c + gi * g.cg + ch) * hw;
                        // SAFETY: each (image, channel) plane of dx belongs to one item.
                        let plane = unsafe { out.slice_mut(p0..p0 + hw) };
                        col2im_plane(c, cols, j * g.n, s, ch - blk.chs.start, plane);
                    }
                }
            });
        });
    }
}

/// dw += dy · im2col(x)ᵀ, summed over the batch: each tile of dW runs one GEMM per image, images
/// in order. `col`: [`col_len`] floats per worker.
pub(super) fn backward_weights(par: &Par, x: &[f32], dy: &[f32], dw: &mut [f32], s: &ConvShape, col: &mut [f32]) {
    check_lens(s, x.len(), dw.len(), dy.len());
    let g = geo(s);
    let hw = s.h * s.w;
    let plan = backward_weights_plan(&g);
    for gi in 0..s.groups {
        let dwg = SharedMut::new(&mut dw[gi * g.m * g.k..][..g.m * g.k]);
        par.for_each_scratch(plan.len(), col, col_len(s), |i, scratch| {
            let t = &plan[i];
            if dw::applies(s, &g, t) {
                return dw::tile(x, dy, dwg, s, &g, gi, t, scratch);
            }
            let kt = t.cols.len();
            for b in 0..s.batch {
                let dyb = Mat::of(&dy[(b * s.filters + gi * g.m) * g.n..][..g.m * g.n], g.m, g.n, false).at(t.rows.start, 0);
                let x0 = (b * s.c + gi * g.cg) * hw;
                let xt = if g.direct {
                    Mat::of(&x[x0..][..g.k * g.n], g.n, g.k, true).at(0, t.cols.start)
                } else {
                    let c = &mut scratch[..kt * g.n];
                    par::wide(#[inline(always)] || im2col_positions(|ch| &x[x0 + ch * hw..][..hw], s, t.cols.clone(), 0..g.n, c, g.n, 0));
                    Mat::of(c, g.n, kt, true)
                };
                // SAFETY: dyb's rows are rows×n, xt n×kt, and the item alone writes its tile of
                // dW, disjoint from both (checked by the caller).
                unsafe { sgemm(t.rows.len(), g.n, kt, dyb, xt, 1.0, dwg.ptr_at(t.rows.start * g.k + t.cols.start), g.k) };
            }
        });
    }
}

#[path = "im2col.rs"]
mod im2col;
use im2col::{col2im_plane, im2col_positions};
#[cfg(test)]
use im2col::{GATHER_TABLE, im2col_gathered, im2col_ranges, valid_range};

#[path = "conv_blocks.rs"]
mod blocks;
#[path = "conv_dw.rs"]
mod dw;

#[path = "conv_calls.rs"]
mod calls;
pub use calls::{ConvOp, GemmCall, gemm_calls, run_gemm_call};

#[cfg(test)]
#[path = "conv_tests.rs"]
mod tests;
