//! Weight gradients of convolutions whose images have few output pixels (the deep layers of a
//! small input: 2×2 to 8×8 at 64×64), a child of cpu/conv.rs.
//!
//! `dW += dy_b · x_bᵀ` image after image is a GEMM of depth `n` (the pixels) per image. At a
//! depth of 4 to 64, `gemm` spends its time loading and storing the dW tile once per image, not
//! multiplying. Here each block of dW stays in registers through every image of a chunk of the
//! batch (`conv_blocks.rs`, one segment per image), and each image's part is summed exactly as `gemm`
//! sums it, so the floats are the same as one `gemm` call per image ([`super::sgemm`] with beta
//! 1): the `cpu_backend` test compares the two bit for bit.

use super::*;

/// Most output pixels per image (the depth of each image's GEMM) that take this path (16×16).
const MAX_DEPTH: usize = 256;
/// Most floats of every image's transposed columns of a tile, which each row block reads again:
/// 1 MiB, half of a core's L2 cache on the machines measured.
const MAX_COLUMNS: usize = 1 << 18;
/// Whether tile `t` of the weight gradient of shape `s` runs here: a few pixels per image, the
/// images' columns small enough to stay in cache, and every per-image call one that
/// `conv_blocks.rs` repeats exactly ([`blocks::fits`]).
pub(super) fn applies(s: &ConvShape, g: &Geo, t: &WeightTile) -> bool {
    g.n <= MAX_DEPTH && s.batch * g.n * t.cols.len() <= MAX_COLUMNS && blocks::fits(t.rows.len(), t.cols.len(), std::iter::once(g.n))
}

/// Floats of scratch [`tile`] needs: every image's columns of the tile, transposed, and one
/// image's im2col rows.
pub(super) fn scratch_len(s: &ConvShape, g: &Geo, t: &WeightTile) -> usize {
    (s.batch + 1) * g.n * t.cols.len()
}

/// Tile `t` of group `gi`'s `dW` (`dwg`, m×k) += Σ over images, in order, of dy_b · x_bᵀ.
/// `scratch`: [`scratch_len`] floats.
#[allow(clippy::too_many_arguments)]
pub(super) fn tile(x: &[f32], dy: &[f32], dwg: SharedMut, s: &ConvShape, g: &Geo, gi: usize, t: &WeightTile, scratch: &mut [f32]) {
    let (n, kt, hw) = (g.n, t.cols.len(), s.h * s.w);
    let (xt, one) = scratch[..scratch_len(s, g, t)].split_at_mut(s.batch * n * kt);
    par::wide(#[inline(always)] || {
        // Every image's columns of the tile as xt[b][d][c]: a pixel's kt values side by side.
        for (b, dst) in xt.chunks_exact_mut(n * kt).enumerate() {
            let x0 = (b * s.c + gi * g.cg) * hw;
            let rows: &[f32] = if g.direct {
                &x[x0 + t.cols.start * hw..][..kt * n]
            } else {
                im2col_positions(|ch| &x[x0 + ch * hw..][..hw], s, t.cols.clone(), 0..n, one, n, 0);
                one
            };
            for (c, row) in rows.chunks_exact(n).enumerate() {
                for (d, &v) in row.iter().enumerate() {
                    dst[d * kt + c] = v;
                }
            }
        }
    });
    let gm = blocks::SegGemm {
        a: dy,
        a_rs: n,
        a_ds: 1,
        b: xt,
        b_rs: kt,
        c: dwg,
        c_at: t.rows.start * g.k + t.cols.start,
        ldc: g.k,
        load: true,
    };
    // Segment b: image b's rows of dy against its transposed columns.
    let segs = blocks::Segs { a0: (gi * g.m + t.rows.start) * n, a_step: s.filters * n, b0: 0, b_step: n * kt, len: n, last: n, count: s.batch };
    // SAFETY: `applies` is `fits`; the item alone writes its tile of dW, disjoint from x and dy
    // (checked by the caller) and from the scratch.
    unsafe { blocks::run(&gm, t.rows.len(), kt, segs) };
}
