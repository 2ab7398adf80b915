//! Mixed precision's column path: the forward and backward-weights GEMMs read their B operand
//! from an f16 im2col matrix instead of gathering it from x, and the backward data of a stride-1
//! convolution runs as the forward of dy (padded by size − 1 − pad) with the flipped weights,
//! adding into dx, on the matrix of dy.
//!
//! The implicit GEMMs' gather costs a dozen instructions per value (index decoding, padding
//! tests, a scattered f32 read); with it the cooperative-matrix GEMMs ran no faster than the fp32
//! kernels (~30 TFLOP/s on an H200), where the same multiply on f16 operands read from memory
//! reached 56–76 TFLOP/s. Here `conv_im2col_f16` (conv.wgsl) first writes the matrix, two f16
//! values per word: K rows rounded up to 16, each image's pixels rounded up to 16 (zeros past
//! both), so every row starts on a whole 16-byte word and the GEMMs read eight values per load
//! with no bounds of their own (conv_mixed.wgsl; conv.wgsl reads it value by value). The
//! forward's A, the weights, is packed likewise (`conv_pack_weights_f16`: rows padded to 128, K
//! to the matrix's rows), ahead of the matrix in the same scratch. Mixed
//! precision's operands hold f16 values already, so the matrix is exact and the products are the
//! ones the gather gives; only the order of the f32 sums may differ (backward weights splits K
//! per matrix).
//!
//! The matrix is scratch memory of at most [`COL_MAX_BYTES`] (and one binding): a batch whose
//! matrix is larger is done a range of images at a time. Groups of one only (yolov4-tiny has no
//! grouped convolution); others keep the gather. Off unless `ENGINE_GPU_COOP_COL=1` or
//! [`GpuBackend::set_coop_col`] turns it on.
//!
//! Measured on an H100 (yolov4-tiny 416, batch 64, per step), it loses: the GEMMs took 45.3 ms
//! against the gather's 45.9, and writing the matrices another 35.2 ms (conv_im2col_f16 at ~450
//! GB/s), 107.6 ms a step against 72.9. So the gather was not what held the cooperative-matrix
//! GEMMs back; their core is. The path stays, off and checked by the parity tests, as the
//! measurement of that: the same GEMMs with operands that need no gathering.

use super::chunk::{Images, images};
use super::conv::{per_in, per_out};
use super::params::{ConvP, off, u};
use super::pipelines::Kernel;
use super::{GpuBackend, GpuBuf};
use crate::profile::Work;
use crate::shapes::ConvShape;

/// Most bytes of one im2col matrix: bounds the scratch memory (and so what a Mac's unified
/// memory must hold beside the network) at the cost of more, smaller GEMMs.
pub(crate) const COL_MAX_BYTES: usize = 256 << 20;

/// Rows and columns of the matrix are padded to multiples of this (16 f16 values = 2 words of
/// 16 bytes).
const COL_ALIGN: usize = 16;

/// Rows of the packed f16 weights are padded to a multiple of this (the tallest GEMM tile), so
/// the GEMMs read whole row tiles without bounds.
const A_ROWS_ALIGN: usize = 128;

/// The column path's f16 operands in scratch memory: an im2col matrix as conv_im2col_f16 wrote
/// it, and for a forward GEMM the weights as conv_pack_weights_f16 wrote them.
pub(crate) struct ColMatrix {
    pub buf: GpuBuf,
    /// Rows: K rounded up to 16 (also the packed weights' row length).
    pub kp: usize,
    /// Columns per image: its output pixels rounded up to 16.
    pub ohwp: usize,
    /// The 16-byte word of `buf` where the matrix starts.
    pub at: usize,
    /// The 16-byte word where the packed weights start (the forward; backward weights reads dy).
    pub a_at: usize,
    /// The forward GEMM reading it adds into its output (the backward data) instead of writing.
    pub accumulate: bool,
}

impl ColMatrix {
    /// The GEMM's column-path params.
    pub(crate) fn set_params(&self, p: &mut ConvP) {
        let o = off(&self.buf);
        debug_assert_eq!(o % 4, 0, "the column path's scratch starts on a 16-byte word");
        (p.col, p.kp, p.ohwp) = (1, u(self.kp), u(self.ohwp));
        (p.o5, p.oa) = (o / 4 + u(self.at), o / 4 + u(self.a_at));
        p.accumulate = u32::from(self.accumulate);
    }
}

/// Whether the column path is turned on at start-up (`ENGINE_GPU_COOP_COL=1`).
pub(crate) fn coop_col_from_env() -> bool {
    std::env::var("ENGINE_GPU_COOP_COL").is_ok_and(|v| v == "1")
}

/// Sizes of the column path's operands for the forward `s`.
struct ColLayout {
    /// Rows of the matrix (K rounded up to 16), and the packed weights' row length.
    kp: usize,
    /// Columns per image (its output pixels rounded up to 16).
    ohwp: usize,
    /// Rows of the packed weights (the filters rounded up to 128).
    weight_rows: usize,
}

impl ColLayout {
    fn of(s: &ConvShape) -> ColLayout {
        ColLayout {
            kp: (s.c * s.size * s.size).next_multiple_of(COL_ALIGN),
            ohwp: (s.out_h * s.out_w).next_multiple_of(COL_ALIGN),
            weight_rows: s.filters.next_multiple_of(A_ROWS_ALIGN),
        }
    }

    /// u32 words (two f16 values each) of the matrix of `images` images.
    fn matrix_words(&self, images: usize) -> usize {
        self.kp * images * self.ohwp / 2
    }

    /// u32 words of the packed weights: a whole number of 16-byte words.
    fn weight_words(&self) -> usize {
        self.weight_rows * self.kp / 2
    }
}

impl GpuBackend {
    /// Turns the column path on or off (see [`coop_col_from_env`]); for the parity test and
    /// measurements.
    #[doc(hidden)]
    pub fn set_coop_col(&self, on: bool) {
        self.coop_col.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether the conv GEMMs of `s` take the column path now: turned on, f16 operands, one
    /// group, and one image's matrix within the limits.
    pub(super) fn col_path(&self, s: &ConvShape) -> bool {
        self.f16_operands() && self.coop_col.load(std::sync::atomic::Ordering::Relaxed) && s.groups == 1 && self.col_images(s) > 0
    }

    /// Images per im2col matrix (0 if one image's does not fit): the matrix and, before it, the
    /// packed weights share the scratch and one binding.
    fn col_images(&self, s: &ConvShape) -> usize {
        let l = ColLayout::of(s);
        let most = COL_MAX_BYTES.min(self.limits.max_storage_buffer_binding_size as usize);
        most.saturating_sub(4 * l.weight_words()) / (4 * l.matrix_words(1)).max(1)
    }

    /// `ranges` cut so that each range's matrix fits.
    pub(super) fn col_ranges(&self, s: &ConvShape, ranges: &[Images]) -> Vec<Images> {
        let per = self.col_images(s).max(1);
        let mut out = Vec::new();
        for r in ranges {
            let mut start = r.start;
            while start < r.start + r.count {
                let count = per.min(r.start + r.count - start);
                out.push(Images { start, count });
                start += count;
            }
        }
        out
    }

    /// Records conv_im2col_f16 for the images of `x` (a view of `s.batch` images) into the
    /// scratch, from its 16-byte word `at` on (the scratch holding `floats` in all), and returns
    /// where the matrix is.
    fn im2col_f16_at(&self, x: &GpuBuf, s: &ConvShape, at: usize, floats: usize) -> ColMatrix {
        let l = ColLayout::of(s);
        let words = l.matrix_words(s.batch);
        let buf = self.scratch(&self.col_scratch, floats.max(4 * at + words), "f16 im2col matrix");
        let m = ColMatrix { buf, kp: l.kp, ohwp: l.ohwp, at, a_at: 0, accumulate: false };
        let mut p = self.conv_params(s, 0, 0, s.c * s.size * s.size, super::conv::IM2COL_TILE, [x, x, x, x]);
        m.set_params(&mut p);
        let work = Work { flops: 0.0, bytes: (s.input_len() * 4 + words * 4) as f64 };
        let groups = self.grid((words as u64).div_ceil(256));
        let bufs = [x, x, x, x, &m.buf];
        self.dispatch_locked(&mut self.lock(), Kernel::ConvIm2colF16, super::conv::IM2COL_TILE, &bufs, &p, groups, work);
        m
    }

    /// The im2col matrix of `x` alone in the scratch (backward weights).
    pub(super) fn im2col_f16(&self, x: &GpuBuf, s: &ConvShape) -> ColMatrix {
        self.im2col_f16_at(x, s, 0, 0)
    }

    /// The forward on the column path: the weights packed as f16 (of `flip_of`'s backward data
    /// when given: see `data_as_forward`), then per range of images the matrix and the GEMM
    /// over its columns (each image's padding columns are not written out). `accumulate`: add
    /// into y.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn conv_forward_col(
        &self, x: &GpuBuf, w: &GpuBuf, y: &GpuBuf, bias: Option<&GpuBuf>, s: &ConvShape, flip_of: Option<&ConvShape>, accumulate: bool,
    ) {
        let (per_in, per_out) = (per_in(s), per_out(s));
        let b4 = bias.map_or((y, per_out), |b| (b, 0));
        let split = [(x, per_in), (w, 0), (y, per_out), b4];
        let ranges = self.col_ranges(s, &self.image_ranges("conv_forward", s.batch, &split, 1));
        // The scratch: the packed weights, then the largest range's matrix (after them, on a
        // 16-byte word: weight_words is a multiple of 4).
        let l = ColLayout::of(s);
        let most = ranges.iter().map(|r| r.count).max().unwrap_or(0);
        let floats = l.weight_words() + l.matrix_words(most);
        self.pack_weights_f16(w, s, flip_of, floats);
        for r in ranges {
            let sub = ConvShape { batch: r.count, ..*s };
            let (xs, ys) = (images(x, per_in, r), images(y, per_out, r));
            let b4 = bias.map_or_else(|| ys.clone(), |b| b.clone());
            let mut m = self.im2col_f16_at(&xs, &sub, l.weight_words() / 4, floats);
            m.accumulate = accumulate;
            let n = sub.batch * m.ohwp;
            self.conv_gemm(Kernel::ConvForward, &sub, s.filters, n, s.c * s.size * s.size, [&xs, w, &ys, &b4], bias.is_some(), None, Some(&m));
        }
    }

    /// Records conv_pack_weights_f16: the forward `s`'s weights, from `w` (or, with `flip_of`,
    /// the weights of that convolution's backward data), into the scratch from word 0 on.
    fn pack_weights_f16(&self, w: &GpuBuf, s: &ConvShape, flip_of: Option<&ConvShape>, floats: usize) {
        let l = ColLayout::of(s);
        let buf = self.scratch(&self.col_scratch, floats, "f16 im2col matrix");
        // The source's own shape: the forward's, or the convolution whose backward data this is.
        let src = flip_of.unwrap_or(s);
        let mut p = self.conv_params(src, l.weight_rows, 0, s.c * s.size * s.size, super::conv::IM2COL_TILE, [w, w, w, w]);
        (p.kp, p.oa, p.flip) = (u(l.kp), off(&buf) / 4, u32::from(flip_of.is_some()));
        let words = l.weight_words();
        let work = Work { flops: 0.0, bytes: (src.weight_len() * 4 + words * 4) as f64 };
        let groups = self.grid((words as u64).div_ceil(256));
        self.dispatch_locked(&mut self.lock(), Kernel::ConvPackWeightsF16, super::conv::IM2COL_TILE, &[w, w, w, w, &buf], &p, groups, work);
    }

    /// The forward of dy whose result, added into dx, is the backward data of `s` (stride 1,
    /// one group, pad < size): dx[c] += Σ_f dy[f] ⋆ w[f][c] with the taps flipped, dy padded by
    /// size − 1 − pad. None where `s` is not such a convolution or its matrix does not fit.
    pub(super) fn data_as_forward(&self, s: &ConvShape) -> Option<ConvShape> {
        if s.stride != 1 || s.groups != 1 || s.pad >= s.size {
            return None;
        }
        let sf = ConvShape {
            batch: s.batch,
            c: s.filters,
            h: s.out_h,
            w: s.out_w,
            filters: s.c,
            size: s.size,
            stride: 1,
            pad: s.size - 1 - s.pad,
            groups: 1,
            out_h: s.h,
            out_w: s.w,
        };
        // dy padded so: its forward has exactly x's pixels.
        let out = |len: usize| (len + 2 * sf.pad + 1).checked_sub(sf.size);
        let fits = out(sf.h) == Some(s.h) && out(sf.w) == Some(s.w);
        (fits && self.col_path(&sf)).then_some(sf)
    }

    /// The backward data of `s` on the column path, as the forward `sf` of dy (`data_as_forward`)
    /// with the flipped weights, adding into dx.
    pub(super) fn conv_backward_data_col(&self, dy: &GpuBuf, w: &GpuBuf, dx: &GpuBuf, s: &ConvShape, sf: &ConvShape) {
        self.conv_forward_col(dy, w, dx, None, sf, Some(s), true);
    }
}
