//! The pixel side of cpu/conv.rs: im2col (a convolution's input planes as GEMM columns) and
//! col2im (its transpose, adding columns back into planes), exact copies and additions in the
//! plain loop's order. A child of `conv`, kept apart so that the op file fits in a head.

use std::ops::Range;

use crate::shapes::ConvShape;

/// Entries of the largest tap table [`im2col_gathered`] keeps on the stack (taps × positions):
/// 4×4 pixels of a 3×3 kernel (at 8×8 the ranges measured faster).
pub(super) const GATHER_TABLE: usize = 9 * 16;

/// First output index `o` whose input index `o·stride + kk − pad` is ≥ 0, and the end of those
/// that stay below `limit`: the outputs of one kernel tap that read real pixels.
#[inline]
pub(super) fn valid_range(out: usize, kk: usize, stride: usize, pad: usize, limit: usize) -> Range<usize> {
    let lo = pad.saturating_sub(kk).div_ceil(stride);
    // o·stride + kk − pad < limit  ⇔  o < (limit + pad − kk) / stride (rounded up)
    let hi = (limit + pad).saturating_sub(kk).div_ceil(stride);
    lo.min(out)..hi.min(out).max(lo.min(out))
}

/// im2col of output positions `pos` of one image for rows `rows` of `col` (row `(ch·size + ky)·size
/// + kx` reads channel plane `planes(ch)`): row r goes to row `r − rows.start` of `dst` (row
/// stride `ld`) from column `c0` on, plane[iy][ix] for each position (0 in the padding).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(super) fn im2col_positions<'a>(
    planes: impl Fn(usize) -> &'a [f32], s: &ConvShape, rows: Range<usize>, pos: Range<usize>, dst: &mut [f32], ld: usize, c0: usize,
) {
    if pos.is_empty() {
        return;
    }
    if s.size * s.size * pos.len() <= GATHER_TABLE {
        im2col_gathered(planes, s, rows, pos, dst, ld, c0)
    } else {
        im2col_ranges(planes, s, rows, pos, dst, ld, c0)
    }
}

/// [`im2col_positions`] by each row's valid ranges: runs of pixels copied at once.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(super) fn im2col_ranges<'a>(
    planes: impl Fn(usize) -> &'a [f32], s: &ConvShape, rows: Range<usize>, pos: Range<usize>, dst: &mut [f32], ld: usize, c0: usize,
) {
    let ow = s.out_w;
    let ss = s.size * s.size;
    let n = s.out_h * ow;
    // Stride 1 with the input's width, whole image: a tap's column is the plane shifted by
    // (ky − pad, kx − pad), so its valid pixels are one contiguous run of the plane.
    let shifted = s.stride == 1 && ow == s.w && pos == (0..n);
    for row in rows.clone() {
        let (ch, ky, kx) = (row / ss, row % ss / s.size, row % s.size);
        let plane = planes(ch);
        let d = &mut dst[(row - rows.start) * ld + c0..][..pos.len()];
        let (ys, xs) = (valid_range(s.out_h, ky, s.stride, s.pad, s.h), valid_range(ow, kx, s.stride, s.pad, s.w));
        if shifted {
            if ys.is_empty() || xs.is_empty() {
                d.fill(0.0);
                continue;
            }
            // From the first valid output to the last: each output reads its own pixel, the
            // ones outside `xs` in between read a neighbouring row's and are zeroed below.
            let (first, last) = (ys.start * ow + xs.start, (ys.end - 1) * ow + xs.end);
            let src0 = (ys.start + ky - s.pad) * s.w + xs.start + kx - s.pad;
            d[..first].fill(0.0);
            d[first..last].copy_from_slice(&plane[src0..src0 + (last - first)]);
            d[last..].fill(0.0);
            if xs.len() < ow {
                for oy in ys {
                    let r = &mut d[oy * ow..(oy + 1) * ow];
                    r[..xs.start].fill(0.0);
                    r[xs.end..].fill(0.0);
                }
            }
            continue;
        }
        // Output rows the positions touch, each clipped to `pos`.
        for oy in pos.start / ow..=(pos.end - 1) / ow {
            let (a, b) = (pos.start.max(oy * ow) - oy * ow, pos.end.min((oy + 1) * ow) - oy * ow);
            let seg = &mut d[oy * ow + a - pos.start..][..b - a];
            let (lo, hi) = (xs.start.clamp(a, b), xs.end.clamp(a, b));
            if !ys.contains(&oy) || lo >= hi {
                seg.fill(0.0);
                continue;
            }
            let iy = oy * s.stride + ky - s.pad;
            let src = &plane[iy * s.w..(iy + 1) * s.w];
            seg[..lo - a].fill(0.0);
            seg[hi - a..].fill(0.0);
            let ix0 = lo * s.stride + kx - s.pad;
            let out = &mut seg[lo - a..hi - a];
            if s.stride == 1 {
                out.copy_from_slice(&src[ix0..ix0 + out.len()]);
            } else if s.stride == 2 {
                // Pairs of pixels (bounds checked once), which the compiler vectorises.
                let last = out.len() - 1;
                let (pairs, _) = src[ix0..ix0 + 2 * last].as_chunks::<2>();
                for (v, p) in out.iter_mut().zip(pairs) {
                    *v = p[0];
                }
                out[last] = src[ix0 + 2 * last];
            } else {
                for (j, v) in out.iter_mut().enumerate() {
                    *v = src[ix0 + j * s.stride];
                }
            }
        }
    }
}

/// [`im2col_positions`] for few positions (the deep layers of a small input, a few pixels per
/// image), where working out each row's valid ranges cost more than copying its floats: each
/// tap's source pixel per position is worked out once, as a table, and every row gathers
/// through its tap's table (a padding entry reads as 0). The same floats as the ranges.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(super) fn im2col_gathered<'a>(
    planes: impl Fn(usize) -> &'a [f32], s: &ConvShape, rows: Range<usize>, pos: Range<usize>, dst: &mut [f32], ld: usize, c0: usize,
) {
    let ss = s.size * s.size;
    let np = pos.len();
    let mut table = [u32::MAX; GATHER_TABLE];
    for tap in 0..ss {
        let (ky, kx) = (tap / s.size, tap % s.size);
        for (e, p) in table[tap * np..(tap + 1) * np].iter_mut().zip(pos.clone()) {
            let (iy, ix) = ((p / s.out_w * s.stride + ky).wrapping_sub(s.pad), (p % s.out_w * s.stride + kx).wrapping_sub(s.pad));
            if iy < s.h && ix < s.w {
                *e = (iy * s.w + ix) as u32;
            }
        }
    }
    let (mut ch, mut tap) = (rows.start / ss, rows.start % ss);
    let mut plane = planes(ch);
    for d in dst.chunks_mut(ld).take(rows.len()) {
        for (v, &i) in d[c0..c0 + np].iter_mut().zip(&table[tap * np..(tap + 1) * np]) {
            // u32::MAX (padding) is past any plane: get gives None.
            *v = plane.get(i as usize).copied().unwrap_or(0.0);
        }
        tap += 1;
        if tap == ss && ch + 1 < rows.end.div_ceil(ss) {
            (ch, tap) = (ch + 1, 0);
            plane = planes(ch);
        }
    }
}

/// Transpose of im2col for one channel plane: dx[iy][ix] += col[...] (padding entries dropped),
/// taps in (ky, kx) order as the plain loop, so each dx float gets its terms in the same order;
/// `ch` is the channel's row block in `col`. Stride 1 at the input's size: a tap's terms are its
/// col row shifted by a constant, added as one run, the entries whose pixel would wrap into a
/// neighbouring row first set to −0.0 in `col` (x + −0.0 is x for every x), so they change nothing.
#[inline(always)]
pub(super) fn col2im_plane(col: &mut [f32], ld: usize, c0: usize, s: &ConvShape, ch: usize, plane: &mut [f32]) {
    let ow = s.out_w;
    let shifted = s.stride == 1 && ow == s.w;
    for ky in 0..s.size {
        let ys = valid_range(s.out_h, ky, s.stride, s.pad, s.h);
        for kx in 0..s.size {
            let xs = valid_range(ow, kx, s.stride, s.pad, s.w);
            if xs.is_empty() || ys.is_empty() {
                continue;
            }
            let row = &mut col[((ch * s.size + ky) * s.size + kx) * ld + c0..][..s.out_h * ow];
            let ix0 = xs.start * s.stride + kx - s.pad;
            if shifted {
                if xs.len() < ow {
                    for oy in ys.clone() {
                        row[oy * ow..oy * ow + xs.start].fill(-0.0);
                        row[oy * ow + xs.end..(oy + 1) * ow].fill(-0.0);
                    }
                }
                let (first, last) = (ys.start * ow + xs.start, (ys.end - 1) * ow + xs.end);
                let d0 = (ys.start + ky - s.pad) * s.w + ix0;
                for (d, v) in plane[d0..d0 + (last - first)].iter_mut().zip(&row[first..last]) {
                    *d += v;
                }
                continue;
            }
            for oy in ys.clone() {
                let iy = oy * s.stride + ky - s.pad;
                let src = &row[oy * ow + xs.start..oy * ow + xs.end];
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
