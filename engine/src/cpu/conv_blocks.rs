//! A register-blocked GEMM for the conv ops' small GEMMs on AVX-512, summing exactly as `gemm`
//! does (a child of cpu/conv.rs; `conv_dw.rs` and the forward use it).
//!
//! What `gemm`'s general kernel computes for each output of one call of depth ≤ 512 (one depth
//! block inside `gemm`): a fused multiply-add chain over the depth in order, from +0
//! (acc = fma(a, b, acc)), then `dst = acc` (nothing read) or `dst = fma(1, acc, dst)`, which
//! rounds as `dst + acc`. The conv ops call it once per depth block ([`super::sgemm`]) or once per
//! image (the weight gradient), so an output is a sum over *segments*, each such a chain. [`run`]
//! computes the same chains and additions in the same order: each chain in registers, the sum of
//! a block's earlier segments read back from C (a store and a load change no float).
//!
//! Cache blocking (which outputs are computed when, never how): segments are taken a chunk of at
//! most 512 deep at a time, and B a panel of columns at a time, copied contiguous 32 columns to a
//! row (moving floats sums nothing), so that the panel stays in L2 while every block of 8 rows of
//! A passes over it. Streaming all of B once per block of rows, as a plain loop does, halved the
//! rate of the layers whose B outgrows L2.
//!
//! It only stands in for calls that take `gemm`'s general kernel: [`fits`] is that condition.

use super::*;

/// Rows of a block of C; its columns are 32 (two registers) where the tile has them: 8 × 32
/// accumulators in 16 registers, enough to keep both FMA pipes busy.
const RB: usize = 8;
/// Floats of a packed panel of B (all depths of a chunk, a range of columns): 512 KiB, half of a
/// core's L2 cache, so that every row block reads it from there.
const PANEL_FLOATS: usize = 1 << 17;
/// Most depth of a chunk: segments are taken a chunk at a time (C stored between chunks).
const CHUNK: usize = KC;

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
        PACK.with_borrow_mut(|bp| {
            let mut s0 = 0;
            while s0 < segs.count {
                // A chunk: as many whole segments as fit CHUNK (at least one).
                let (mut s1, mut depth) = (s0 + 1, segs.get(s0).2);
                while s1 < segs.count && depth + segs.get(s1).2 <= CHUNK {
                    depth += segs.get(s1).2;
                    s1 += 1;
                }
                let sub = Segs {
                    a0: segs.a0 + s0 * segs.a_step,
                    b0: segs.b0 + s0 * segs.b_step,
                    last: if s1 == segs.count { segs.last } else { segs.len },
                    count: s1 - s0,
                    ..segs
                };
                let load = g.load || s0 > 0;
                let panel = (PANEL_FLOATS / depth / 32 * 32).max(32);
                for p0 in (0..cols).step_by(panel) {
                    let pend = (p0 + panel).min(cols);
                    let need = (pend - p0).div_ceil(32) * depth * 32;
                    if bp.len() < need {
                        bp.resize(need, 0.0);
                    }
                    par::wide(#[inline(always)] || pack_b(g, &sub, p0..pend, depth, bp));
                    let mut r = 0;
                    while r < rows {
                        // Several segments: 4 rows, so that their sums stay in registers beside
                        // the accumulators (segments of a few pixels each, in conv_dw.rs).
                        let hold = sub.count > 1;
                        let most = if hold { 4 } else { RB };
                        let rb = [RB, 4, 2, 1].into_iter().find(|&b| b <= most && b <= rows - r).unwrap_or(1);
                        let a = &g.a[sub.a0 + r * g.a_rs..];
                        let mut c = p0;
                        while c < pend {
                            let (w, mask) = match pend - c {
                                w if w >= 32 => (32, u16::MAX),
                                w if w >= 16 => (16, u16::MAX),
                                w => (w, (1u16 << w) - 1),
                            };
                            // B's columns c.. in the packed panel: their micro-panel, lane offset.
                            let b = &bp[(c - p0) / 32 * depth * 32 + (c - p0) % 32..];
                            let cp = g.c.ptr_at(g.c_at + r * g.ldc + c);
                            let k = ((a.as_ptr(), g.a_rs, g.a_ds), b.as_ptr(), cp, g.ldc, mask, sub, load);
                            // SAFETY: AVX-512 (fits); A's rows are in bounds (checked above),
                            // the packed panel holds `depth` rows of 32 floats; the block of C
                            // lies in the tile (the caller's promise).
                            unsafe {
                                match (rb, w == 32, hold) {
                                    (RB, true, _) => block::<RB, 2, false>(k),
                                    (RB, false, _) => block::<RB, 1, false>(k),
                                    (4, true, false) => block::<4, 2, false>(k),
                                    (4, false, false) => block::<4, 1, false>(k),
                                    (4, true, true) => block::<4, 2, true>(k),
                                    (4, false, true) => block::<4, 1, true>(k),
                                    (2, true, _) => block::<2, 2, true>(k),
                                    (2, false, _) => block::<2, 1, true>(k),
                                    (_, true, _) => block::<1, 2, true>(k),
                                    (_, false, _) => block::<1, 1, true>(k),
                                }
                            }
                            c += w;
                        }
                        r += rb;
                    }
                }
                s0 = s1;
            }
        });
    }
}

thread_local! {
    /// Each worker's packed panel of B.
    static PACK: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Copies B's columns `cols` of the segments `sub` into `buf`, 32 columns at a time: micro-panel
/// j holds its `depth` rows (the segments' depths one after another) of 32 floats each.
#[inline(always)]
fn pack_b(g: &SegGemm, sub: &Segs, cols: Range<usize>, depth: usize, buf: &mut [f32]) {
    for (j, c0) in cols.clone().step_by(32).enumerate() {
        let w = 32.min(cols.end - c0);
        let mut d = 0;
        for s in 0..sub.count {
            let (_, sb, len) = sub.get(s);
            let dst = &mut buf[(j * depth + d) * 32..][..len * 32];
            if w == 32 {
                // Constant lengths: two register moves a row, not a call to memcpy.
                for (i, row) in dst.chunks_exact_mut(32).enumerate() {
                    let src: &[f32; 32] = g.b[sb + i * g.b_rs + c0..][..32].try_into().expect("32 floats");
                    *<&mut [f32; 32]>::try_from(row).expect("32 floats") = *src;
                }
            } else {
                for (i, row) in dst.chunks_exact_mut(32).enumerate() {
                    row[..w].copy_from_slice(&g.b[sb + i * g.b_rs + c0..][..w]);
                }
            }
            d += len;
        }
    }
}

/// Rows `R` and columns `V` registers of 16 (the last one's lanes in `mask`) of C at `c` (row
/// stride `ldc`): for each segment s of `segs` (their lengths and A steps) one FMA chain from +0
/// over A's (i, d) at `a0 + s·a_step + i·a_rs + d·a_ds` and B's packed micro-panel `b`
/// (`b[d·32 + lane]`, the segments' depths one after another), then `C = acc` (the first
/// segment, unless `load`) or `C = C + acc` — with `HOLD`, C's sums stay in registers from
/// segment to segment and are stored once (the same floats: a store and a load change none).
///
/// # Safety
/// As [`run`]: A and `b` hold the segments' depths; C's block is the caller's alone; the CPU has
/// AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::type_complexity)]
unsafe fn block<const R: usize, const V: usize, const HOLD: bool>(((a0, a_rs, a_ds), b, c, ldc, mask, segs, load): ((*const f32, usize, usize), *const f32, *mut f32, usize, u16, Segs, bool)) {
    use std::arch::x86_64::*;
    // Plain loops, no closures: a closure is not compiled with this function's AVX-512.
    let mut lanes = [u16::MAX; V];
    lanes[V - 1] = mask;
    let mut b = b;
    let mut sum = [[_mm512_setzero_ps(); V]; R];
    if HOLD && load {
        for i in 0..R {
            for v in 0..V {
                // SAFETY: C's block is the caller's; masked lanes are neither read nor written.
                sum[i][v] = unsafe { _mm512_maskz_loadu_ps(lanes[v], c.add(i * ldc + 16 * v)) };
            }
        }
    }
    for s in 0..segs.count {
        let len = segs.get(s).2;
        // SAFETY: A's rows of the segment (run checked every segment's bounds).
        let mut a: [*const f32; R] = std::array::from_fn(|i| unsafe { a0.add(s * segs.a_step + i * a_rs) });
        let mut acc = [[_mm512_setzero_ps(); V]; R];
        for _ in 0..len {
            let mut bv = [_mm512_setzero_ps(); V];
            for v in 0..V {
                // SAFETY: within the packed micro-panel (the caller's promise); masked lanes
                // are not read.
                bv[v] = unsafe { _mm512_maskz_loadu_ps(lanes[v], b.add(16 * v)) };
            }
            for i in 0..R {
                // SAFETY: A's rows of the segment (run checked every segment's bounds).
                let av = _mm512_set1_ps(unsafe { *a[i] });
                for v in 0..V {
                    acc[i][v] = _mm512_fmadd_ps(av, bv[v], acc[i][v]);
                }
            }
            // Wrapping: past the last depth they are never read.
            for p in &mut a {
                *p = p.wrapping_add(a_ds);
            }
            b = b.wrapping_add(32);
        }
        for i in 0..R {
            for v in 0..V {
                let first = s == 0 && !load;
                if HOLD {
                    sum[i][v] = if first { acc[i][v] } else { _mm512_add_ps(sum[i][v], acc[i][v]) };
                    continue;
                }
                // SAFETY: as for the loads of C above.
                unsafe {
                    let p = c.add(i * ldc + 16 * v);
                    let sum = if first { acc[i][v] } else { _mm512_add_ps(_mm512_maskz_loadu_ps(lanes[v], p), acc[i][v]) };
                    _mm512_mask_storeu_ps(p, lanes[v], sum);
                }
            }
        }
    }
    if HOLD {
        for i in 0..R {
            for v in 0..V {
                // SAFETY: as for the loads of C above.
                unsafe { _mm512_mask_storeu_ps(c.add(i * ldc + 16 * v), lanes[v], sum[i][v]) };
            }
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
