//! A register-blocked GEMM for the conv ops' small GEMMs on AVX-512, summing exactly as `gemm`
//! does (a child of cpu/conv.rs; `conv_dw.rs` and the forward use it).
//!
//! What `gemm`'s general kernel computes for each output of one call of depth ≤ 512 (one depth
//! block inside `gemm`): a fused multiply-add chain over the depth in order, from +0
//! (acc = fma(a, b, acc)), then `dst = acc` (nothing read) or `dst = fma(1, acc, dst)`, which
//! rounds as `dst + acc`. The conv ops call it once per depth block ([`super::sgemm`]) or once per
//! image (the weight gradient), so an output is a sum over *segments*, each such a chain. [`run`]
//! computes the same chains and additions in the same order, keeping a block of outputs in
//! registers through all segments instead of storing and loading it between `gemm` calls.
//!
//! It only stands in for calls that take `gemm`'s general kernel: [`fits`] is that condition.

use super::*;

/// Rows of a block of C; its columns are 32 (two registers) where the tile has them: 4 × 32 sums
/// and as many accumulators stay in registers.
const RB: usize = 4;

/// `C (rows × cols) (+)= Σ over segments of A_s · B_s`. A segment `(sa, sb, len)` ([`Segs`])
/// multiplies A's (r, d) at `a[sa + r·a_rs + d·a_ds]` by B's (d, c) at `b[sb + d·b_rs + c]` over
/// d < len; C's (r, c) is at `c_at + r·ldc + c` in `c`.
pub(super) struct SegGemm<'a> {
    pub a: &'a [f32],
    pub a_rs: usize,
    pub a_ds: usize,
    pub b: &'a [f32],
    pub b_rs: usize,
    pub c: SharedMut,
    pub c_at: usize,
    pub ldc: usize,
    /// true: C += the segments (every `gemm` call read dst); false: the first segment's sum is C.
    pub load: bool,
}

/// `count` segments in steps: segment s starts at `a0 + s·a_step` in A and `b0 + s·b_step` in B
/// and is `len` deep, the last one `last` deep (the depth blocks of [`super::sgemm`], or one
/// segment per image).
#[derive(Clone, Copy, Debug)]
pub(super) struct Segs {
    pub a0: usize,
    pub a_step: usize,
    pub b0: usize,
    pub b_step: usize,
    pub len: usize,
    pub last: usize,
    pub count: usize,
}

impl Segs {
    fn get(&self, s: usize) -> (usize, usize, usize) {
        (self.a0 + s * self.a_step, self.b0 + s * self.b_step, if s + 1 == self.count { self.last } else { self.len })
    }
}

/// Whether a tile of `rows × cols` with segments of `depths` would take `gemm`'s general kernel
/// in every call (more than `SMALL_GEMM` outputs, 2 rows and columns, depth 3 to 512: at most 2
/// it takes another kernel), and the CPU has AVX-512, which makes [`run`] fast (elsewhere `gemm`
/// runs them, with the same floats).
pub(super) fn fits(rows: usize, cols: usize, mut depths: impl Iterator<Item = usize>) -> bool {
    rows >= 2 && cols >= 2 && rows * cols > SMALL_GEMM && depths.all(|d| (3..=KC).contains(&d)) && par::has_wide()
}

/// Runs `g` over `segs` on a tile of `rows × cols`.
///
/// # Safety
/// [`fits`] held for the tile; C's floats of the tile lie in `g.c` and nothing else touches them
/// meanwhile; C does not overlap A or B.
pub(super) unsafe fn run(g: &SegGemm, rows: usize, cols: usize, segs: Segs) {
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("cpu conv: register-blocked GEMMs run on AVX-512 only ({rows}×{cols}, {segs:?}, {})", g.ldc);
    #[cfg(target_arch = "x86_64")]
    {
        // Every block reads within these bounds (checked once here, not per block).
        for (sa, sb, len) in (0..segs.count).map(|s| segs.get(s)) {
            assert!(len > 0 && sa + (rows - 1) * g.a_rs + (len - 1) * g.a_ds < g.a.len(), "cpu conv: A of a segment outside its slice");
            assert!(sb + (len - 1) * g.b_rs + cols <= g.b.len(), "cpu conv: B of a segment outside its slice");
        }
        let mut r = 0;
        while r < rows {
            let rb = if rows - r >= RB { RB } else { 1 };
            let mut c = 0;
            while c < cols {
                let (w, mask) = match cols - c {
                    w if w >= 32 => (32, u16::MAX),
                    w if w >= 16 => (16, u16::MAX),
                    w => (w, (1u16 << w) - 1),
                };
                // SAFETY: AVX-512 (fits); the block lies in the tile (the caller's promise).
                unsafe {
                    match (rb, w) {
                        (RB, 32) => block::<RB, 2>(g, r, c, u16::MAX, segs),
                        (RB, _) => block::<RB, 1>(g, r, c, mask, segs),
                        (_, 32) => block::<1, 2>(g, r, c, u16::MAX, segs),
                        _ => block::<1, 1>(g, r, c, mask, segs),
                    }
                }
                c += w;
            }
            r += rb;
        }
    }
}

/// Rows `r0..r0 + R`, columns `c0..` (V registers of 16, the last one's lanes in `mask`) of C.
///
/// # Safety
/// As [`run`], whose bounds checks of the segments cover the block; the CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn block<const R: usize, const V: usize>(g: &SegGemm, r0: usize, c0: usize, mask: u16, segs: Segs) {
    use std::arch::x86_64::*;
    // Plain loops, no closures: a closure is not compiled with this function's AVX-512.
    let mut lanes = [u16::MAX; V];
    lanes[V - 1] = mask;
    let (a_rs, a_ds, b_rs, a0, b0) = (g.a_rs, g.a_ds, g.b_rs, g.a.as_ptr(), g.b.as_ptr());
    let c = g.c.ptr_at(g.c_at + r0 * g.ldc + c0);
    let ldc = g.ldc;
    let mut sum = [[_mm512_setzero_ps(); V]; R];
    if g.load {
        for i in 0..R {
            for v in 0..V {
                // SAFETY: C's block lies in the tile (the caller's promise); masked lanes are
                // neither read nor written.
                sum[i][v] = unsafe { _mm512_maskz_loadu_ps(lanes[v], c.add(i * ldc + 16 * v)) };
            }
        }
    }
    for s in 0..segs.count {
        let (sa, sb, len) = segs.get(s);
        // SAFETY: in bounds of A and B (run checked every segment for the whole tile); the
        // pointers step through the segment one depth at a time.
        let (mut a, mut b) = unsafe { (a0.add(sa + r0 * a_rs), b0.add(sb + c0)) };
        let mut acc = [[_mm512_setzero_ps(); V]; R];
        for _ in 0..len {
            let mut bv = [_mm512_setzero_ps(); V];
            for v in 0..V {
                // SAFETY: as above; masked lanes are not read.
                bv[v] = unsafe { _mm512_maskz_loadu_ps(lanes[v], b.add(16 * v)) };
            }
            for i in 0..R {
                // SAFETY: as above.
                let av = _mm512_set1_ps(unsafe { *a.add(i * a_rs) });
                for v in 0..V {
                    acc[i][v] = _mm512_fmadd_ps(av, bv[v], acc[i][v]);
                }
            }
            // SAFETY: one past the last depth at most, never read.
            unsafe { (a, b) = (a.add(a_ds), b.add(b_rs)) };
        }
        if s == 0 && !g.load {
            sum = acc;
        } else {
            for i in 0..R {
                for v in 0..V {
                    sum[i][v] = _mm512_add_ps(sum[i][v], acc[i][v]);
                }
            }
        }
    }
    for i in 0..R {
        for v in 0..V {
            // SAFETY: as for the loads of C above.
            unsafe { _mm512_mask_storeu_ps(c.add(i * ldc + 16 * v), lanes[v], sum[i][v]) };
        }
    }
}

/// `C (m×n) = A (m×k) · B (k×n)` (`add`: `C +=`) as [`super::sgemm`] computes it with beta 0
/// (beta 1) — depth blocks of at most `KC`, near-equal: by [`run`] where [`fits`] holds, else by
/// `sgemm` itself. A's (r, d) is at `a[a_at + r·a_rs + d·a_ds]`, B's (d, c) at
/// `b[b_at + d·b_rs + c]`, C's (r, c) at `c_at + r·ldc + c` in `c`.
///
/// # Safety
/// C's floats lie in `c`, nothing else touches them meanwhile, and C does not overlap A or B.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn product(m: usize, k: usize, n: usize, (a, a_at, a_rs, a_ds): (&[f32], usize, usize, usize), (b, b_at, b_rs): (&[f32], usize, usize), (c, c_at, ldc): (SharedMut, usize, usize), add: bool) {
    let kb = k.div_ceil(k.div_ceil(KC).max(1)).max(1);
    let count = k.div_ceil(kb);
    let last = k - (count - 1) * kb;
    if fits(m, n, [kb, last].into_iter()) {
        let g = SegGemm { a, a_rs, a_ds, b, b_rs, c, c_at, ldc, load: add };
        let segs = Segs { a0: a_at, a_step: kb * a_ds, b0: b_at, b_step: kb * b_rs, len: kb, last, count };
        // SAFETY: fits; the rest is the caller's promise.
        return unsafe { run(&g, m, n, segs) };
    }
    assert!(a.len() > a_at + (m - 1) * a_rs + (k - 1) * a_ds && b.len() >= b_at + (k - 1) * b_rs + n, "cpu conv: GEMM operands outside their slices");
    let am = Mat { ptr: a[a_at..].as_ptr(), rs: a_rs as isize, cs: a_ds as isize };
    let bm = Mat { ptr: b[b_at..].as_ptr(), rs: b_rs as isize, cs: 1 };
    // SAFETY: A and B lie in their slices (asserted); C is the caller's promise.
    unsafe { sgemm(m, k, n, am, bm, if add { 1.0 } else { 0.0 }, c.ptr_at(c_at), ldc) }
}
