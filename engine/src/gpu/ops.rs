//! `Backend` for `GpuBackend`: checks shapes, packs params in WGSL field order, dispatches.

use super::params::{ActP, BiasP, BlasP, BnP, CostP, DropoutP, HalfP, SoftmaxP, OptimP, PoolP, ReduceP, ResampleP, RouteP, off, u};
use super::chunk::{Images, images};
use super::pipelines::{GemmTile, Kernel};
use super::{GpuBackend, GpuBuf, REDUCE_PARTS};
use crate::backend::{Backend, BnTensors, Download, GemmOperands, Store, store_in_place};
use crate::profile::{DispatchTime, Scope, Work};
use crate::yolo_stats::STATS_LEN;
use crate::shapes::{Activation, Binary, BnBackward, BnStats, ChannelShape, ConvShape, CostKind, PoolShape, ReorgShape, SliceCopy, SoftmaxShape, Unary, UpsampleShape, YoloParams};

pub(super) fn check(what: &str, buf: &GpuBuf, want: usize) {
    assert_eq!(buf.len(), want, "gpu {what}: view holds {} floats, the shape needs {want}", buf.len());
}

/// The views of `r` (see [`images`]) for each (view, floats per image) of `split`.
pub(super) fn sub_views(split: &[(&GpuBuf, usize)], r: Images) -> Vec<GpuBuf> {
    split.iter().map(|&(b, per_image)| images(b, per_image, r)).collect()
}

impl GpuBackend {
    /// An elementwise blas.wgsl kernel over `n` floats of `bufs`; `writes` of them are outputs.
    fn blas(&self, k: Kernel, n: usize, bufs: &[&GpuBuf], a: f32, writes: usize) {
        for b in bufs {
            check(k.entry(), b, n);
        }
        self.elementwise(k.entry(), n, bufs, |n, v| {
            let o = |i: usize| v.get(i).map_or(0, |b| off(b));
            let p = BlasP { n: u(n), o1: o(0), o2: o(1), o3: o(2), o4: o(3), o5: o(4), a, b: 0.0 };
            let work = Work::elementwise(n, bufs.len().saturating_sub(writes), writes, 1);
            self.dispatch_1d(k, v, &p, n, work);
        });
    }

    /// Calls `f(count, views)` once per range of elements of `bufs` (all of length `n`) that
    /// binds (once, with the views themselves, when they all do).
    pub(super) fn elementwise(&self, what: &str, n: usize, bufs: &[&GpuBuf], mut f: impl FnMut(usize, &[&GpuBuf])) {
        let split: Vec<(&GpuBuf, usize)> = bufs.iter().map(|b| (*b, 1)).collect();
        for r in self.element_ranges(what, n, bufs) {
            let v = sub_views(&split, r);
            f(r.count, &v.iter().collect::<Vec<_>>());
        }
    }

    /// Calls `f(range, views)` once per range of images (see [`GpuBackend::image_ranges`]).
    pub(super) fn per_images(&self, what: &str, batch: usize, split: &[(&GpuBuf, usize)], mut f: impl FnMut(Images, &[&GpuBuf])) {
        for r in self.image_ranges(what, batch, split, 1) {
            let v = sub_views(split, r);
            f(r, &v.iter().collect::<Vec<_>>());
        }
    }
}

impl Backend for GpuBackend {
    type Buf = GpuBuf;

    fn name(&self) -> String {
        format!("gpu:{}", self.info.name)
    }

    fn alloc(&self, len: usize) -> GpuBuf {
        self.alloc_buf(len)
    }
    fn view(&self, buf: &GpuBuf, offset: usize, len: usize) -> GpuBuf {
        super::buffers::view(buf, offset, len)
    }
    fn len(&self, buf: &GpuBuf) -> usize {
        buf.len()
    }
    fn upload(&self, buf: &GpuBuf, data: &[f32]) {
        self.upload_data(buf, data);
    }
    fn upload_f16(&self, buf: &GpuBuf, data: &[f32]) {
        self.upload_f16_data(buf, data);
    }
    fn download(&self, buf: &GpuBuf) -> Vec<f32> {
        self.download_data(buf)
    }
    fn download_start(&self, buf: &GpuBuf) -> Download {
        self.download_begin(buf)
    }
    fn flush(&self) {
        self.flush_recorded();
    }
    fn memory_bytes(&self) -> (u64, u64) {
        self.stats.current()
    }
    fn max_buffer_floats(&self) -> usize {
        super::device::buffer_floats(self.limits.max_buffer_size)
    }
    fn max_binding_floats(&self) -> usize {
        super::device::binding_floats(&self.limits)
    }
    fn set_scope(&self, scope: Scope) {
        self.set_scope_label(scope);
    }
    fn take_timings(&self) -> Option<Vec<DispatchTime>> {
        self.take_dispatch_times()
    }

    // ---- elementwise ------------------------------------------------------------------------
    fn fill(&self, x: &GpuBuf, value: f32) {
        self.blas(Kernel::Fill, x.len(), &[x], value, 1);
    }
    fn copy(&self, src: &GpuBuf, dst: &GpuBuf) {
        self.blas(Kernel::Copy, src.len(), &[src, dst], 0.0, 1);
    }
    fn copy_if_flagged(&self, flag: &GpuBuf, src: &GpuBuf, dst: &GpuBuf) {
        let n = src.len();
        check("copy_if_flagged dst", dst, n);
        check("copy_if_flagged flag", flag, 1);
        // The flag is bound whole with every range of src and dst.
        self.elementwise("copy_if_flagged", n, &[src, dst], |n, v| {
            let p = BlasP { n: u(n), o1: off(v[0]), o2: off(v[1]), o3: off(flag), o4: 0, o5: 0, a: 0.0, b: 0.0 };
            self.dispatch_1d(Kernel::CopyIfFlagged, &[v[0], v[1], flag], &p, n, Work::elementwise(n, 2, 1, 0));
        });
    }
    fn round_f16(&self, x: &GpuBuf, out: &GpuBuf) {
        let n = x.len();
        check("round_f16 out", out, n);
        self.elementwise("round_f16", n, &[x, out], |n, v| {
            let p = HalfP { n: u(n), o1: off(v[0]), o2: off(v[1]), pad: 0 };
            self.dispatch_1d(Kernel::RoundF16, v, &p, n, Work::elementwise(n, 1, 1, 1));
        });
    }
    fn axpy(&self, a: f32, x: &GpuBuf, y: &GpuBuf) {
        self.blas(Kernel::Axpy, x.len(), &[x, y], a, 1);
    }
    fn scal(&self, a: f32, x: &GpuBuf) {
        self.blas(Kernel::Scal, x.len(), &[x], a, 1);
    }
    fn unary_forward(&self, op: Unary, x: &GpuBuf, out: &GpuBuf) {
        let (kernel, p) = match op {
            Unary::Exp => (Kernel::ExpForward, 0.0),
            Unary::Log => (Kernel::LogForward, 0.0),
            Unary::Pow(p) => (Kernel::PowForward, p),
        };
        self.blas(kernel, x.len(), &[x, out], p, 1);
    }
    fn unary_backward(&self, op: Unary, x: &GpuBuf, y: &GpuBuf, g: &GpuBuf, dx: &GpuBuf) {
        match op {
            Unary::Exp => self.blas(Kernel::ExpBackward, y.len(), &[y, g, dx], 0.0, 1),
            Unary::Log => self.blas(Kernel::LogBackward, x.len(), &[x, g, dx], 0.0, 1),
            Unary::Pow(p) => self.blas(Kernel::PowBackward, x.len(), &[x, g, dx], p, 1),
        }
    }
    fn binary_forward(&self, op: Binary, a: &GpuBuf, b: &GpuBuf, out: &GpuBuf) {
        let kernel = match op {
            Binary::Add => Kernel::AddForward,
            Binary::Mul => Kernel::MulForward,
            Binary::Div => Kernel::DivForward,
        };
        self.blas(kernel, a.len(), &[a, b, out], 0.0, 1);
    }
    fn binary_backward(&self, op: Binary, a: &GpuBuf, b: &GpuBuf, g: &GpuBuf, da: &GpuBuf, db: &GpuBuf) {
        match op {
            // The gradient of a sum is g for both inputs: two axpys, no kernel of its own.
            Binary::Add => {
                self.axpy(1.0, g, da);
                self.axpy(1.0, g, db);
            }
            Binary::Mul => self.blas(Kernel::MulBackward, a.len(), &[a, b, g, da, db], 0.0, 2),
            Binary::Div => self.blas(Kernel::DivBackward, a.len(), &[a, b, g, da, db], 0.0, 2),
        }
    }

    // ---- convolution (gpu/conv.rs) -------------------------------------------------------------
    fn set_gemm_operands(&self, ops: GemmOperands) {
        *self.gemm_operands.lock().unwrap_or_else(|e| e.into_inner()) = ops;
    }
    fn prepare(&self, convs: &[(ConvShape, bool)], activations: &[Activation]) {
        self.prepare_pipelines(convs, activations);
    }
    fn gemm_path(&self, ops: GemmOperands) -> String {
        match ops {
            GemmOperands::F32 => match self.pipelines.lanes() {
                0 => "fp32 kernels (conv.wgsl)".to_string(),
                n => format!("fp32 kernels (conv.wgsl), rows of A shared through subgroups of {n} lanes"),
            },
            GemmOperands::F16 => {
                let mut path = self.mixed_gemm.to_string();
                let on = |a: &std::sync::atomic::AtomicBool| a.load(std::sync::atomic::Ordering::Relaxed);
                if on(&self.coop_col) {
                    path.push_str("; forward, stride-1 backward data and weight gradients from f16 im2col matrices");
                }
                if on(&self.coop_direct) && matches!(self.mixed_gemm, super::MixedGemm::Coop16 { .. }) {
                    path.push_str("; whole tiles written out directly");
                }
                path
            }
        }
    }
    fn conv_forward(&self, x: &GpuBuf, w: &GpuBuf, y: &GpuBuf, s: &ConvShape) {
        self.conv_forward_into(x, w, y, None, s);
    }
    fn conv_backward_data(&self, dy: &GpuBuf, w: &GpuBuf, dx: &GpuBuf, s: &ConvShape) {
        self.conv_backward_data_into(dy, w, dx, s);
    }
    fn conv_backward_weights(&self, x: &GpuBuf, dy: &GpuBuf, dw: &GpuBuf, s: &ConvShape) {
        self.conv_backward_weights_into(x, dy, dw, s);
    }

    fn bias_add(&self, y: &GpuBuf, bias: &GpuBuf, s: &ChannelShape) {
        let (batch, channels, spatial) = (s.batch, s.channels, s.spatial);
        check("bias_add y", y, batch * channels * spatial);
        check("bias_add bias", bias, channels);
        self.per_images("bias_add", batch, &[(y, channels * spatial), (bias, 0)], |r, v| {
            let p = BiasP { batch: u(r.count), channels: u(channels), spatial: u(spatial), o1: off(v[0]), o2: off(v[1]), ..Default::default() };
            self.dispatch_1d(Kernel::BiasAdd, v, &p, v[0].len(), Work::elementwise(v[0].len(), 1, 1, 1));
        });
    }

    fn bias_backward(&self, dy: &GpuBuf, dbias: &GpuBuf, s: &ChannelShape) {
        let (batch, channels, spatial) = (s.batch, s.channels, s.spatial);
        self.bias_backward_chunked(dy, dbias, &ChannelShape::new(batch, channels, spatial));
    }

    // ---- batch normalisation ------------------------------------------------------------------
    fn batchnorm_forward_train(
        &self, x: &GpuBuf, y: &GpuBuf, x_norm: &GpuBuf, mean: &GpuBuf, var: &GpuBuf, rolling_mean: &GpuBuf,
        rolling_var: &GpuBuf, gamma: &GpuBuf, beta: &GpuBuf, batch: usize, channels: usize, spatial: usize,
        stats: BnStats,
    ) {
        // The gradient slots are not touched by the forward.
        let bn = BnTensors { x_norm, mean, var, rolling_mean, rolling_var, gamma, beta, dgamma: gamma, dbeta: beta };
        self.bn_forward_fused(x, y, None, &bn, Activation::Linear, &ChannelShape::new(batch, channels, spatial), stats, Store::F32);
    }

    fn batchnorm_forward_infer(
        &self, x: &GpuBuf, y: &GpuBuf, rolling_mean: &GpuBuf, rolling_var: &GpuBuf, gamma: &GpuBuf, beta: &GpuBuf,
        batch: usize, channels: usize, spatial: usize,
    ) {
        let n = batch * channels * spatial;
        check("batchnorm x", x, n);
        check("batchnorm y", y, n);
        for b in [rolling_mean, rolling_var, gamma, beta] {
            check("batchnorm per-channel", b, channels);
        }
        let img = channels * spatial;
        let split = [(x, img), (y, img), (rolling_mean, 0), (rolling_var, 0), (gamma, 0), (beta, 0)];
        self.per_images("batchnorm_forward_infer", batch, &split, |r, v| {
            let n = r.count * img;
            let p = BnP {
                batch: u(r.count), channels: u(channels), spatial: u(spatial),
                o1: off(v[0]), o2: off(v[1]), o3: off(v[2]), o4: off(v[3]), o5: off(v[4]), o6: off(v[5]),
                ..Default::default()
            };
            self.dispatch_1d(Kernel::BnInfer, v, &p, n, Work::elementwise(n, 1, 1, 4));
        });
    }

    fn batchnorm_backward(
        &self, dy: &GpuBuf, x_norm: &GpuBuf, var: &GpuBuf, gamma: &GpuBuf, dgamma: &GpuBuf, dbeta: &GpuBuf,
        dx: &GpuBuf, batch: usize, channels: usize, spatial: usize, form: BnBackward,
    ) {
        // Without an activation neither y nor beta is read: bind views that have the right length.
        let bn = BnTensors { x_norm, mean: var, var, rolling_mean: var, rolling_var: var, gamma, beta: gamma, dgamma, dbeta };
        self.bn_backward_fused(dy, dy, dx, &bn, Activation::Linear, &ChannelShape::new(batch, channels, spatial), form, Store::F32);
    }

    // ---- activations ----------------------------------------------------------------------------
    fn activation_forward(&self, x: &GpuBuf, y: &GpuBuf, act: Activation) {
        check("activation y", y, x.len());
        self.elementwise("activation_forward", x.len(), &[x, y], |n, v| {
            let p = ActP { n: u(n), act: act.code(), o1: off(v[0]), o2: off(v[1]), o3: 0, o4: 0 };
            self.dispatch_act_1d(Kernel::ActivationForward, p.act, v, &p, n, Work::elementwise(n, 1, 1, 1));
        });
    }

    fn activation_backward(&self, x: &GpuBuf, y: &GpuBuf, dy: &GpuBuf, dx: &GpuBuf, act: Activation) {
        for b in [y, dy, dx] {
            check("activation_backward", b, x.len());
        }
        self.elementwise("activation_backward", x.len(), &[x, y, dy, dx], |n, v| {
            let p = ActP { n: u(n), act: act.code(), o1: off(v[0]), o2: off(v[1]), o3: off(v[2]), o4: off(v[3]) };
            self.dispatch_act_1d(Kernel::ActivationBackward, p.act, v, &p, n, Work::elementwise(n, 2, 1, 1));
        });
    }

    // ---- pooling / resampling -------------------------------------------------------------------
    fn maxpool_forward(&self, x: &GpuBuf, y: &GpuBuf, s: &PoolShape) {
        check("maxpool x", x, s.input_len());
        check("maxpool y", y, s.output_len());
        let (pi, po) = (s.c * s.h * s.w, s.c * s.out_h * s.out_w);
        self.per_images("maxpool_forward", s.batch, &[(x, pi), (y, po)], |r, v| {
            let s = PoolShape { batch: r.count, ..*s };
            let p = pool_params(&s, v[0], v[1], v[1]);
            let work = Work { flops: (s.output_len() * s.size * s.size) as f64, bytes: ((s.input_len() + s.output_len()) * 4) as f64 };
            self.dispatch_1d(Kernel::MaxpoolForward, v, &p, s.output_len(), work);
        });
    }

    fn maxpool_backward(&self, x: &GpuBuf, dy: &GpuBuf, dx: &GpuBuf, s: &PoolShape) {
        check("maxpool_backward x", x, s.input_len());
        check("maxpool_backward dy", dy, s.output_len());
        check("maxpool_backward dx", dx, s.input_len());
        let (pi, po) = (s.c * s.h * s.w, s.c * s.out_h * s.out_w);
        self.per_images("maxpool_backward", s.batch, &[(x, pi), (dy, po), (dx, pi)], |r, v| {
            let s = PoolShape { batch: r.count, ..*s };
            let p = pool_params(&s, v[0], v[1], v[2]);
            // Windows apart: one invocation per output (the gather's result, less work).
            let (kernel, n, floats) = if s.stride >= s.size {
                (Kernel::MaxpoolBackwardWindows, s.output_len(), s.input_len() + 3 * s.output_len())
            } else {
                (Kernel::MaxpoolBackward, s.input_len(), 2 * s.input_len() + s.output_len())
            };
            let work = Work { flops: (s.output_len() * s.size * s.size) as f64, bytes: (floats * 4) as f64 };
            self.dispatch_1d(kernel, v, &p, n, work);
        });
    }

    fn avgpool_forward(&self, x: &GpuBuf, y: &GpuBuf, s: &ChannelShape) {
        let (batch, channels, spatial) = (s.batch, s.channels, s.spatial);
        check("avgpool x", x, batch * channels * spatial);
        check("avgpool y", y, batch * channels);
        let p = avg_params(batch, channels, spatial, x, y);
        self.dispatch(Kernel::AvgpoolForward, &[x, y], &p, self.grid((batch * channels) as u64), Work::elementwise(x.len(), 1, 0, 1));
    }

    fn avgpool_backward(&self, dy: &GpuBuf, dx: &GpuBuf, s: &ChannelShape) {
        let (batch, channels, spatial) = (s.batch, s.channels, s.spatial);
        check("avgpool_backward dy", dy, batch * channels);
        check("avgpool_backward dx", dx, batch * channels * spatial);
        let p = avg_params(batch, channels, spatial, dy, dx);
        self.dispatch_1d(Kernel::AvgpoolBackward, &[dy, dx], &p, dx.len(), Work::elementwise(dx.len(), 1, 1, 1));
    }

    fn upsample_forward(&self, x: &GpuBuf, y: &GpuBuf, s: &UpsampleShape) {
        check("upsample x", x, s.input_len());
        check("upsample y", y, s.output_len());
        let (pi, po) = (s.c * s.h * s.w, s.c * s.h * s.w * s.stride * s.stride);
        self.per_images("upsample_forward", s.batch, &[(x, pi), (y, po)], |r, v| {
            let p = resample_params(r.count, s.c, s.h, s.w, s.stride, v[0], v[1], s.scale);
            let work = Work { flops: 0.0, bytes: ((v[0].len() + v[1].len()) * 4) as f64 };
            self.dispatch_1d(Kernel::UpsampleForward, v, &p, v[1].len(), work);
        });
    }

    fn upsample_backward(&self, dy: &GpuBuf, dx: &GpuBuf, s: &UpsampleShape) {
        check("upsample_backward dy", dy, s.output_len());
        check("upsample_backward dx", dx, s.input_len());
        let (pi, po) = (s.c * s.h * s.w, s.c * s.h * s.w * s.stride * s.stride);
        self.per_images("upsample_backward", s.batch, &[(dy, po), (dx, pi)], |r, v| {
            let p = resample_params(r.count, s.c, s.h, s.w, s.stride, v[0], v[1], s.scale);
            let work = Work { flops: v[0].len() as f64, bytes: ((2 * v[1].len() + v[0].len()) * 4) as f64 };
            self.dispatch_1d(Kernel::UpsampleBackward, v, &p, v[1].len(), work);
        });
    }

    fn reorg_forward(&self, x: &GpuBuf, y: &GpuBuf, s: &ReorgShape) {
        assert!(s.stride > 0 && s.c % (s.stride * s.stride) == 0, "gpu reorg: channels {} not divisible by stride²", s.c);
        check("reorg x", x, s.len());
        check("reorg y", y, s.len());
        let p = resample_params(s.batch, s.c, s.h, s.w, s.stride, x, y, 0.0);
        self.dispatch_1d(Kernel::ReorgForward, &[x, y], &p, s.len(), Work::elementwise(s.len(), 1, 1, 0));
    }

    fn reorg_backward(&self, dy: &GpuBuf, dx: &GpuBuf, s: &ReorgShape) {
        assert!(s.stride > 0 && s.c % (s.stride * s.stride) == 0, "gpu reorg: channels {} not divisible by stride²", s.c);
        check("reorg_backward dy", dy, s.len());
        check("reorg_backward dx", dx, s.len());
        let p = resample_params(s.batch, s.c, s.h, s.w, s.stride, dy, dx, 0.0);
        self.dispatch_1d(Kernel::ReorgBackward, &[dy, dx], &p, s.len(), Work::elementwise(s.len(), 2, 1, 1));
    }

    // ---- route / scale_channels -----------------------------------------------------------------
    fn copy_slices(&self, src: &GpuBuf, dst: &GpuBuf, s: &SliceCopy) {
        if s.batch == 0 || s.len == 0 {
            return;
        }
        let last = s.batch - 1;
        assert!(last * s.src_stride + s.src_offset + s.len <= src.len(), "gpu copy_slices: {s:?} reads past src ({})", src.len());
        assert!(last * s.dst_stride + s.dst_offset + s.len <= dst.len(), "gpu copy_slices: {s:?} writes past dst ({})", dst.len());
        self.per_images("copy_slices", s.batch, &[(src, s.src_stride), (dst, s.dst_stride)], |r, v| {
            let p = RouteP {
                batch: u(r.count),
                len: u(s.len),
                src_stride: u(s.src_stride),
                src_offset: u(s.src_offset),
                dst_stride: u(s.dst_stride),
                dst_offset: u(s.dst_offset),
                accumulate: u32::from(s.accumulate),
                o1: off(v[0]),
                o2: off(v[1]),
                ..Default::default()
            };
            let n = r.count * s.len;
            self.dispatch_1d(Kernel::CopySlices, v, &p, n, Work::elementwise(n, 1 + usize::from(s.accumulate), 1, 0));
        });
    }

    fn scale_channels_forward(&self, x: &GpuBuf, scale: &GpuBuf, y: &GpuBuf, s: &ChannelShape) {
        let (batch, channels, spatial) = (s.batch, s.channels, s.spatial);
        check("scale_channels x", x, batch * channels * spatial);
        check("scale_channels scale", scale, batch * channels);
        check("scale_channels y", y, batch * channels * spatial);
        let p = route_params(batch, channels, spatial, &[x, scale, y]);
        self.dispatch_1d(Kernel::ScaleChannelsForward, &[x, scale, y], &p, x.len(), Work::elementwise(x.len(), 1, 1, 1));
    }

    fn scale_channels_backward(
        &self, x: &GpuBuf, scale: &GpuBuf, dy: &GpuBuf, dx: &GpuBuf, dscale: &GpuBuf, s: &ChannelShape,
    ) {
        let (batch, channels, spatial) = (s.batch, s.channels, s.spatial);
        for b in [x, dy, dx] {
            check("scale_channels_backward tensor", b, batch * channels * spatial);
        }
        check("scale_channels_backward scale", scale, batch * channels);
        check("scale_channels_backward dscale", dscale, batch * channels);
        let p = route_params(batch, channels, spatial, &[x, scale, dy, dx, dscale]);
        let grid = self.grid((batch * channels) as u64);
        self.dispatch(Kernel::ScaleChannelsBackward, &[x, scale, dy, dx, dscale], &p, grid, Work::elementwise(x.len(), 3, 1, 4));
    }

    // ---- dropout ----------------------------------------------------------------------------------
    fn dropout_forward(&self, x: &GpuBuf, y: &GpuBuf, p: f32, seed: u64) {
        check("dropout y", y, x.len());
        let params = dropout_params(x.len(), seed, x, y, p);
        self.dispatch_1d(Kernel::DropoutForward, &[x, y], &params, x.len(), Work::elementwise(x.len(), 1, 1, 1));
    }

    fn dropout_backward(&self, dy: &GpuBuf, dx: &GpuBuf, p: f32, seed: u64) {
        check("dropout dx", dx, dy.len());
        let params = dropout_params(dy.len(), seed, dy, dx, p);
        self.dispatch_1d(Kernel::DropoutBackward, &[dy, dx], &params, dy.len(), Work::elementwise(dy.len(), 2, 1, 1));
    }

    // ---- yolo -------------------------------------------------------------------------------------
    fn yolo_forward_backward(&self, x: &GpuBuf, out: &GpuBuf, truths: &GpuBuf, dx: &GpuBuf, stats: &GpuBuf, p: &YoloParams) {
        self.yolo(x, out, truths, dx, stats, p);
    }

    // ---- classifier losses ------------------------------------------------------------------------
    fn softmax_forward(&self, x: &GpuBuf, y: &GpuBuf, s: &SoftmaxShape) {
        check("softmax_forward x", x, s.len());
        check("softmax_forward y", y, s.len());
        let p = softmax_params(s, &[x, y]);
        self.dispatch_1d(Kernel::SoftmaxForward, &[x, y], &p, s.rows(), Work::elementwise(s.len(), 1, 1, 4));
    }

    fn softmax_loss(&self, y: &GpuBuf, truth: &GpuBuf, dx: &GpuBuf, stats: &GpuBuf, s: &SoftmaxShape) {
        for (what, b) in [("y", y), ("truth", truth), ("dx", dx)] {
            check(&format!("softmax_loss {what}"), b, s.len());
        }
        assert!(stats.len() >= STATS_LEN, "gpu softmax_loss: stats holds {} floats, need {STATS_LEN}", stats.len());
        let p = softmax_params(s, &[y, truth, dx, stats]);
        // One workgroup: a fixed-order sum over the classifier's few outputs.
        self.dispatch(Kernel::SoftmaxLoss, &[y, truth, dx, stats], &p, [1, 1, 1], Work::elementwise(s.len(), 2, 1, 3));
    }

    fn cost_forward(&self, kind: CostKind, x: &GpuBuf, truth: &GpuBuf, error: &GpuBuf, dx: &GpuBuf, stats: &GpuBuf) {
        for (what, b) in [("truth", truth), ("error", error), ("dx", dx)] {
            check(&format!("cost_forward {what}"), b, x.len());
        }
        assert!(stats.len() >= STATS_LEN, "gpu cost_forward: stats holds {} floats, need {STATS_LEN}", stats.len());
        let p = CostP { n: u(x.len()), kind: kind.code(), o1: off(x), o2: off(truth), o3: off(error), o4: off(dx), o5: off(stats) };
        self.dispatch(Kernel::CostForward, &[x, truth, error, dx, stats], &p, [1, 1, 1], Work::elementwise(x.len(), 2, 2, 3));
    }

    // ---- optimisers -------------------------------------------------------------------------------
    fn sgd_update(&self, w: &GpuBuf, upd: &GpuBuf, lr: f32, momentum: f32, decay: f32, batch: f32) {
        check("sgd upd", upd, w.len());
        self.elementwise("sgd_update", w.len(), &[w, upd], |n, v| {
            let p = OptimP {
                n: u(n),
                o1: off(v[0]),
                o2: off(v[1]),
                lr,
                momentum,
                decay_b: decay * batch,
                lr_over_b: lr / batch,
                ..Default::default()
            };
            self.dispatch_1d(Kernel::SgdUpdate, v, &p, n, Work::elementwise(n, 2, 2, 4));
        });
    }

    fn adam_update(
        &self, w: &GpuBuf, upd: &GpuBuf, m: &GpuBuf, v: &GpuBuf, lr: f32, b1: f32, b2: f32, eps: f32, decay: f32,
        batch: f32, t: u32,
    ) {
        for b in [upd, m, v] {
            check("adam state", b, w.len());
        }
        let t = t.min(i32::MAX as u32) as i32;
        self.elementwise("adam_update", w.len(), &[w, upd, m, v], |n, b| {
        let p = OptimP {
            n: u(n),
            o1: off(b[0]),
            o2: off(b[1]),
            o3: off(b[2]),
            o4: off(b[3]),
            lr,
            momentum: 0.0,
            decay_b: decay * batch,
            lr_over_b: 0.0,
            b1,
            b2,
            eps,
            bc1: 1.0 - b1.powi(t),
            bc2: 1.0 - b2.powi(t),
        };
        self.dispatch_1d(Kernel::AdamUpdate, b, &p, n, Work::elementwise(n, 4, 4, 14));
        });
    }

    // ---- composite ops: fused kernels (the CPU keeps the plain-op defaults) -------------------------
    fn conv_bias_activation_forward(
        &self, x: &GpuBuf, w: &GpuBuf, bias: &GpuBuf, y: &GpuBuf, pre_act: Option<&GpuBuf>, act: Activation, s: &ConvShape,
        store: Store,
    ) {
        // The bias is added in the GEMM's write-out. Rounding stays a pass of its own: in
        // yolov4-tiny only the two small convolutions before the [yolo] heads come here.
        let target = pre_act.unwrap_or(y);
        self.conv_forward_into(x, w, target, Some(bias), s);
        if act != Activation::Linear || pre_act.is_some() {
            self.activation_forward(target, y, act);
        }
        store_in_place(self, y, store);
    }

    fn batchnorm_activation_forward(
        &self, x: &GpuBuf, y: &GpuBuf, pre_act: Option<&GpuBuf>, bn: &BnTensors<'_, GpuBuf>, act: Activation, s: &ChannelShape,
        stats: BnStats, store: Store,
    ) {
        self.bn_forward_fused(x, y, pre_act, bn, act, s, stats, store);
    }

    fn activation_batchnorm_backward(
        &self, delta: &GpuBuf, y: &GpuBuf, _pre_act: Option<&GpuBuf>, bn: &BnTensors<'_, GpuBuf>, act: Activation, s: &ChannelShape,
        form: BnBackward, store: Store,
    ) {
        // The fused kernels recompute the pre-activation (gamma·x_norm + beta) where the
        // activation's derivative needs it, so pre_act is not read.
        self.bn_backward_fused(delta, y, delta, bn, act, s, form, store);
    }

    // ---- reductions -------------------------------------------------------------------------------
    fn sum_into(&self, x: &GpuBuf, out: &GpuBuf, index: usize) {
        self.reduce(x, out, index, 0);
    }
    fn sum_squares_into(&self, x: &GpuBuf, out: &GpuBuf, index: usize) {
        self.reduce(x, out, index, 1);
    }
    fn nonfinite_into(&self, x: &GpuBuf, out: &GpuBuf, index: usize) {
        self.reduce(x, out, index, 2);
    }
}

impl GpuBackend {
    /// Two-pass deterministic reduction (reduce.wgsl); the partition depends only on x's length.
    fn reduce(&self, x: &GpuBuf, out: &GpuBuf, index: usize, mode: u32) {
        assert!(index < out.len(), "gpu reduction: index {index} outside a result buffer of {}", out.len());
        let n = x.len();
        let parts = n.div_ceil(2048).clamp(1, REDUCE_PARTS);
        let chunk = n.div_ceil(parts).max(1);
        let parts = n.div_ceil(chunk).max(1);
        let scratch = &self.reduce_scratch;
        let p1 = ReduceP { n: u(n), chunk: u(chunk), parts: u(parts), mode, o1: 0, o2: off(scratch), index: 0 };
        let p2 = ReduceP { o1: off(scratch), o2: off(out), index: u(index), ..p1 };
        let t = GemmTile::DEFAULT;
        // A tensor larger than one binding: its parts in ranges of whole parts, each partial in
        // its own slot, so the result has the same bits as one dispatch would give.
        let ranges = self.image_ranges("reduce", parts, &[(x, chunk)], 1);
        let mut rec = self.lock();
        for r in ranges {
            let (xs, ss) = (images(x, chunk, r), images(scratch, 1, r));
            let p1 = ReduceP { n: u(xs.len()), parts: u(r.count), o1: off(&xs), o2: off(&ss), ..p1 };
            let work = Work::elementwise(xs.len(), 1, 0, 1);
            self.dispatch_locked(&mut rec, Kernel::ReducePartial, t, &[&xs, &ss], &p1, [r.count as u32, 1, 1], work);
        }
        self.dispatch_locked(&mut rec, Kernel::ReduceFinal, t, &[scratch, out], &p2, [1, 1, 1], Work::elementwise(parts, 1, 0, 1));
    }
}

fn pool_params(s: &PoolShape, b1: &GpuBuf, b2: &GpuBuf, b3: &GpuBuf) -> PoolP {
    assert!(s.stride > 0 && s.size > 0, "gpu maxpool: bad shape {s:?}");
    PoolP {
        batch: u(s.batch),
        c: u(s.c),
        h: u(s.h),
        w: u(s.w),
        size: u(s.size),
        stride: u(s.stride),
        off: u(s.padding / 2),
        oh: u(s.out_h),
        ow: u(s.out_w),
        o1: off(b1),
        o2: off(b2),
        o3: off(b3),
        spatial: u(s.h * s.w),
    }
}

fn avg_params(batch: usize, channels: usize, spatial: usize, b1: &GpuBuf, b2: &GpuBuf) -> PoolP {
    PoolP { batch: u(batch), c: u(channels), o1: off(b1), o2: off(b2), spatial: u(spatial), ..Default::default() }
}

fn route_params(batch: usize, channels: usize, spatial: usize, bufs: &[&GpuBuf]) -> RouteP {
    let o = |i: usize| bufs.get(i).map_or(0, |b| off(b));
    RouteP { batch: u(batch), len: u(channels), spatial: u(spatial), o1: o(0), o2: o(1), o3: o(2), o4: o(3), o5: o(4), ..Default::default() }
}

#[allow(clippy::too_many_arguments)]
fn resample_params(batch: usize, c: usize, h: usize, w: usize, stride: usize, b1: &GpuBuf, b2: &GpuBuf, scale: f32) -> ResampleP {
    ResampleP { batch: u(batch), c: u(c), h: u(h), w: u(w), stride: u(stride), o1: off(b1), o2: off(b2), scale }
}

fn softmax_params(s: &SoftmaxShape, bufs: &[&GpuBuf]) -> SoftmaxP {
    assert!(s.groups > 0 && s.inputs.is_multiple_of(s.groups), "gpu softmax: {} inputs not divisible by groups={}", s.inputs, s.groups);
    let o = |i: usize| bufs.get(i).map_or(0, |b| off(b));
    SoftmaxP {
        rows: u(s.rows()),
        n: u(s.group_len()),
        total: u(s.len()),
        o1: o(0),
        o2: o(1),
        o3: o(2),
        o4: o(3),
        inv_t: 1.0 / s.temperature,
    }
}

fn dropout_params(n: usize, seed: u64, b1: &GpuBuf, b2: &GpuBuf, p: f32) -> DropoutP {
    DropoutP {
        n: u(n),
        s0: (seed & 0xffff_ffff) as u32,
        s1: (seed >> 32) as u32,
        o1: off(b1),
        o2: off(b2),
        prob: p,
        scale: 1.0 / (1.0 - p),
        keep: 1.0 - p,
    }
}
