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
//! with no bounds of their own (conv_mixed.wgsl; conv.wgsl reads it value by value). Mixed
//! precision's operands hold f16 values already, so the matrix is exact and the products are the
//! ones the gather gives; only the order of the f32 sums may differ (backward weights splits K
//! per matrix).
//!
//! The matrix is scratch memory of at most [`COL_MAX_BYTES`] (and one binding): a batch whose
//! matrix is larger is done a range of images at a time. Groups of one only (yolov4-tiny has no
//! grouped convolution); others keep the gather. Off unless `ENGINE_GPU_COOP_COL=1` or
//! [`GpuBackend::set_coop_col`] turns it on, until a device run has measured it and checked it
//! against the gather.

use super::chunk::{Images, images};
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

/// An f16 im2col matrix in scratch memory, as conv_im2col_f16 wrote it.
pub(crate) struct ColMatrix {
    pub buf: GpuBuf,
    /// Rows: K rounded up to 16.
    pub kp: usize,
    /// Columns per image: its output pixels rounded up to 16.
    pub ohwp: usize,
    /// The forward GEMM reading it adds into its output (the backward data) instead of writing.
    pub accumulate: bool,
}

impl ColMatrix {
    /// The GEMM's column-path params.
    pub(crate) fn set_params(&self, p: &mut ConvP) {
        let o = off(&self.buf);
        debug_assert_eq!(o % 4, 0, "the im2col matrix starts on a 16-byte word");
        (p.col, p.kp, p.ohwp, p.o5) = (1, u(self.kp), u(self.ohwp), o / 4);
        p.accumulate = u32::from(self.accumulate);
    }
}

/// Whether the column path is turned on at start-up (`ENGINE_GPU_COOP_COL=1`).
pub(crate) fn coop_col_from_env() -> bool {
    std::env::var("ENGINE_GPU_COOP_COL").is_ok_and(|v| v == "1")
}

/// Rows, columns per image and bytes per image of the im2col matrix of `s`.
fn col_layout(s: &ConvShape) -> (usize, usize, usize) {
    let kp = (s.c * s.size * s.size).next_multiple_of(COL_ALIGN);
    let ohwp = (s.out_h * s.out_w).next_multiple_of(COL_ALIGN);
    (kp, ohwp, kp * ohwp * 2)
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
        let f16 = *self.gemm_operands.lock().unwrap_or_else(|e| e.into_inner()) == crate::backend::GemmOperands::F16;
        f16 && self.coop_col.load(std::sync::atomic::Ordering::Relaxed) && s.groups == 1 && self.col_images(s) > 0
    }

    /// Images per im2col matrix (0 if one image's does not fit).
    fn col_images(&self, s: &ConvShape) -> usize {
        let (_, _, per_image) = col_layout(s);
        let most = COL_MAX_BYTES.min(self.limits.max_storage_buffer_binding_size as usize);
        most / per_image.max(1)
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
    /// scratch matrix, and returns it.
    pub(super) fn im2col_f16(&self, x: &GpuBuf, s: &ConvShape) -> ColMatrix {
        let (kp, ohwp, per_image) = col_layout(s);
        let words = kp * s.batch * ohwp / 2;
        let buf = self.scratch(&self.col_scratch, words, "f16 im2col matrix");
        let m = ColMatrix { buf, kp, ohwp, accumulate: false };
        let mut p = self.conv_params(s, 0, 0, s.c * s.size * s.size, super::conv::IM2COL_TILE, [x, x, x, x]);
        m.set_params(&mut p);
        let work = Work { flops: 0.0, bytes: (s.input_len() * 4 + s.batch * per_image) as f64 };
        let groups = self.grid((words as u64).div_ceil(256));
        let bufs = [x, x, x, x, &m.buf];
        let mut rec = self.lock();
        self.dispatch_locked(&mut rec, Kernel::ConvIm2colF16, super::conv::IM2COL_TILE, &bufs, &p, groups, work);
        drop(rec);
        m
    }

    /// The forward on the column path: per range of images, the matrix, then the GEMM over its
    /// columns (each image's padding columns are not written out). `accumulate`: add into y.
    pub(super) fn conv_forward_col(&self, x: &GpuBuf, w: &GpuBuf, y: &GpuBuf, bias: Option<&GpuBuf>, s: &ConvShape, accumulate: bool) {
        let (per_in, per_out) = (s.c * s.h * s.w, s.filters * s.out_h * s.out_w);
        let b4 = bias.map_or((y, per_out), |b| (b, 0));
        let split = [(x, per_in), (w, 0), (y, per_out), b4];
        let ranges = self.image_ranges("conv_forward", s.batch, &split, 1);
        for r in self.col_ranges(s, &ranges) {
            let sub = ConvShape { batch: r.count, ..*s };
            let (xs, ys) = (images(x, per_in, r), images(y, per_out, r));
            let b4 = bias.map_or_else(|| ys.clone(), |b| b.clone());
            let mut m = self.im2col_f16(&xs, &sub);
            m.accumulate = accumulate;
            let n = sub.batch * m.ohwp;
            self.conv_gemm(Kernel::ConvForward, &sub, s.filters, n, s.c * s.size * s.size, [&xs, w, &ys, &b4], bias.is_some(), None, Some(&m));
        }
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
        let total = s.weight_len();
        let flipped = self.scratch(&self.flip_scratch, total, "flipped weights");
        let p = ConvP { filters: u(s.filters), c: u(s.c), size: u(s.size), total: u(total), o1: off(w), o2: off(&flipped), ..Default::default() };
        let groups = self.grid((total as u64).div_ceil(256));
        let work = Work::elementwise(total, 1, 1, 0);
        let bufs = [w, &flipped, w, w, w];
        self.dispatch_locked(&mut self.lock(), Kernel::ConvFlipWeights, super::conv::IM2COL_TILE, &bufs, &p, groups, work);
        self.conv_forward_col(dy, &flipped, dx, None, sf, true);
    }
}
