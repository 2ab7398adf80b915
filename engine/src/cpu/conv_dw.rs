//! Weight gradients of convolutions whose images have few output pixels (the deep layers of a
//! small input: 2×2 to 8×8 at 64×64), a child of cpu/conv.rs.
//!
//! `dW += dy_b · x_bᵀ` image after image is a GEMM of depth `n` (the pixels) per image. At a
//! depth of 4 to 64, `gemm` spends its time loading and storing the dW tile once per image, not
//! multiplying. Here each block of dW stays in registers through every image of the batch, and
//! each image's part is summed exactly as `gemm`'s general kernel sums it (see [`block`]), so the
//! floats are the same as one `gemm` call per image ([`super::sgemm`] with beta 1): the
//! `cpu_backend` test compares the two bit for bit.

use super::*;

/// Most output pixels per image (the depth of each image's GEMM) that take this path (16×16;
/// `gemm` keeps up to 512 in one depth block, which [`block`] repeats).
const MAX_DEPTH: usize = 256;
/// Most floats of every image's transposed columns of a tile, which each row block reads again:
/// 1 MiB, half of a core's L2 cache on the machines measured.
const MAX_COLUMNS: usize = 1 << 18;
/// Rows (filters) of a block of dW; its columns are 32 (two AVX-512 registers) where the tile
/// has them: 4 × 32 sums and as many accumulators stay in registers.
const RB: usize = 4;

/// Whether tile `t` of the weight gradient of shape `s` runs here. The conditions are those under
/// which `gemm` itself takes its general kernel with the whole depth in one block, whose sums
/// [`block`] repeats: depth 3 to 512 (at most 2 it takes another kernel), tiles of more than
/// `SMALL_GEMM` outputs with 2 rows and columns. And AVX-512, which makes this path fast:
/// elsewhere `gemm` runs it, with the same floats.
pub(super) fn applies(s: &ConvShape, g: &Geo, t: &WeightTile) -> bool {
    (3..=MAX_DEPTH).contains(&g.n)
        && s.batch * g.n * t.cols.len() <= MAX_COLUMNS
        && t.rows.len() >= 2
        && t.cols.len() >= 2
        && t.rows.len() * t.cols.len() > SMALL_GEMM
        && par::has_wide()
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
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("cpu conv dW: the few-pixel path runs on AVX-512 only");
        #[cfg(target_arch = "x86_64")]
        let mut r = t.rows.start;
        #[cfg(target_arch = "x86_64")]
        while r < t.rows.end {
            let rb = if t.rows.end - r >= RB { RB } else { 1 };
            let mut c = 0;
            while c < kt {
                let at = Block { dwg, ld: g.k, r0: r, c0: t.cols.start + c, xc: c, dy_r0: (gi * g.m + r) * n };
                let (w, mask) = match kt - c {
                    w if w >= 32 => (32, u16::MAX),
                    w if w >= 16 => (16, u16::MAX),
                    w => (w, (1u16 << w) - 1),
                };
                // SAFETY: `applies` checked AVX-512; the block lies in the item's tile of dW
                // and every image's transposed columns hold kt floats per pixel.
                unsafe {
                    match (rb, w) {
                        (RB, 32) => block::<RB, 2>(at, u16::MAX, xt, n, kt, s.batch, dy, s.filters * n),
                        (RB, _) => block::<RB, 1>(at, mask, xt, n, kt, s.batch, dy, s.filters * n),
                        (_, 32) => block::<1, 2>(at, u16::MAX, xt, n, kt, s.batch, dy, s.filters * n),
                        _ => block::<1, 1>(at, mask, xt, n, kt, s.batch, dy, s.filters * n),
                    }
                }
                c += w;
            }
            r += rb;
        }
    });
}

/// Where a block of dW lies: rows from `r0` and columns from `c0` of `dwg` (row stride `ld`),
/// its columns from `xc` on in the transposed image columns, its first row of dy at `dy_r0` in
/// image 0.
#[derive(Clone, Copy)]
struct Block {
    dwg: SharedMut,
    ld: usize,
    r0: usize,
    c0: usize,
    xc: usize,
    dy_r0: usize,
}

/// R rows × V·16 columns of dW (the last 16 only where `mask` has their bit) += Σ_b dy_b · x_bᵀ.
/// Per image, each output gets what `gemm`'s kernel computes: a fused multiply-add chain over
/// the pixels in order, from +0 (acc = fma(dy, x, acc)), then added to dW once (gemm:
/// dst = fma(1, acc, dst), the same rounding as dst + acc). dy of image b, row r, pixel d is
/// `dy[dy_r0 + b·dy_image + r·n + d]`.
///
/// # Safety
/// The CPU has AVX-512F; the block's floats of dW lie in `at.dwg`, written by this item alone;
/// `xt` holds `batch · n · kt` floats and dy the rows read.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn block<const R: usize, const V: usize>(at: Block, mask: u16, xt: &[f32], n: usize, kt: usize, batch: usize, dy: &[f32], dy_image: usize) {
    use std::arch::x86_64::*;
    assert!(at.xc + 16 * (V - 1) + (16 - mask.leading_zeros() as usize) <= kt && xt.len() >= batch * n * kt, "cpu conv dW: block outside the columns");
    assert!(batch == 0 || at.dy_r0 + (batch - 1) * dy_image + R * n <= dy.len(), "cpu conv dW: dy rows outside dy");
    let lanes = |v: usize| if v + 1 == V { mask } else { u16::MAX };
    let dst = |i: usize, v: usize| at.dwg.ptr_at((at.r0 + i) * at.ld + at.c0 + 16 * v);
    // SAFETY (every load and store below): in bounds of the slices (asserted above, and by the
    // caller for dW); masked lanes are neither read nor written.
    let mut sum: [[__m512; V]; R] = std::array::from_fn(|i| std::array::from_fn(|v| unsafe { _mm512_maskz_loadu_ps(lanes(v), dst(i, v)) }));
    for b in 0..batch {
        let xb = xt[b * n * kt + at.xc..].as_ptr();
        let dyb = &dy[at.dy_r0 + b * dy_image..];
        let mut acc = [[_mm512_setzero_ps(); V]; R];
        for d in 0..n {
            let xv: [__m512; V] = std::array::from_fn(|v| unsafe { _mm512_maskz_loadu_ps(lanes(v), xb.add(d * kt + 16 * v)) });
            for (i, acc) in acc.iter_mut().enumerate() {
                let a = _mm512_set1_ps(dyb[i * n + d]);
                for (acc, &x) in acc.iter_mut().zip(&xv) {
                    *acc = _mm512_fmadd_ps(a, x, *acc);
                }
            }
        }
        for (s, a) in sum.iter_mut().zip(&acc) {
            for (s, &a) in s.iter_mut().zip(a) {
                *s = _mm512_add_ps(*s, a);
            }
        }
    }
    for (i, s) in sum.iter().enumerate() {
        for (v, &s) in s.iter().enumerate() {
            unsafe { _mm512_mask_storeu_ps(dst(i, v), lanes(v), s) };
        }
    }
}
