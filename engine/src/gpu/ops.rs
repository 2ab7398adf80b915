//! `Backend` for `GpuBackend`: checks shapes, packs params in WGSL field order, dispatches.

use super::pipelines::Kernel;
use super::{GpuBackend, GpuBuf, Params, REDUCE_PARTS};
use crate::backend::Backend;
use crate::shapes::{Activation, BnBackward, BnStats, ConvShape, PoolShape, ReorgShape, SliceCopy, UpsampleShape, YoloParams};

fn check(what: &str, buf: &GpuBuf, want: usize) {
    assert_eq!(buf.len(), want, "gpu {what}: view holds {} floats, the shape needs {want}", buf.len());
}

/// Tile edge of the conv GEMM kernels (conv.wgsl).
const TILE: usize = 64;
/// Target number of workgroups for a backward-weights dispatch before splitting K.
const SPLITK_TARGET_GROUPS: usize = 512;
/// Least K per split, and the most scratch floats split-K may use.
const SPLITK_MIN_K: usize = 1024;
const SPLITK_MAX_SCRATCH: usize = 16 << 20;

impl GpuBackend {
    fn blas(&self, k: Kernel, n: usize, bufs: &[&GpuBuf], a: f32) {
        let mut p = Params::new().u(n);
        for i in 0..5 {
            p = match bufs.get(i) {
                Some(b) => p.o(b),
                None => p.u(0),
            };
        }
        for b in bufs {
            check(k.entry(), b, n);
        }
        let p = p.f(a).f(0.0);
        self.dispatch_1d(k, bufs, &p.0, n);
    }

    /// Params shared by the three conv GEMMs (conv.wgsl `P`).
    #[allow(clippy::too_many_arguments)]
    fn conv_params(&self, s: &ConvShape, m: usize, n: usize, k: usize, bufs: [&GpuBuf; 4], kchunk: usize, splits: usize) -> Params {
        let cg = s.c / s.groups;
        let mg = s.filters / s.groups;
        Params::new()
            .u(s.batch)
            .u(s.c)
            .u(s.h)
            .u(s.w)
            .u(s.filters)
            .u(s.size)
            .u(s.stride)
            .u(s.pad)
            .u(s.out_h)
            .u(s.out_w)
            .u(cg)
            .u(mg)
            .u(m)
            .u(n)
            .u(k)
            .u(m.div_ceil(TILE))
            .o(bufs[0])
            .o(bufs[1])
            .o(bufs[2])
            .o(bufs[3])
            .u(kchunk)
            .u(splits)
            .u(s.weight_len())
            .pad_to(24)
    }

    fn check_conv(&self, s: &ConvShape) {
        assert!(
            s.groups > 0 && s.c % s.groups == 0 && s.filters % s.groups == 0 && s.stride > 0,
            "gpu conv: bad shape {s:?}"
        );
    }

    /// Forward or backward-data GEMM: grid x·z over n tiles, y over m tiles × groups.
    fn conv_gemm(&self, k: Kernel, s: &ConvShape, m: usize, n: usize, kdim: usize, a: &GpuBuf, b: &GpuBuf, c: &GpuBuf) {
        if m == 0 || n == 0 {
            return;
        }
        let p = self.conv_params(s, m, n, kdim, [a, b, c, c], kdim.div_ceil(16) * 16, 1);
        let m_tiles = m.div_ceil(TILE);
        let n_tiles = n.div_ceil(TILE) as u64;
        let max = self.limits.max_compute_workgroups_per_dimension as u64;
        let x = n_tiles.min(max);
        let z = n_tiles.div_ceil(x);
        let y = m_tiles * s.groups;
        assert!(y as u64 <= max && z <= max, "gpu conv: shape {s:?} too large for one dispatch");
        // Binding 4 (split-K scratch) is statically reachable in conv.wgsl but unused here: bind c.
        self.dispatch(k, &[a, b, c, c], &p.0, [x as u32, y as u32, z as u32]);
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
    fn download(&self, buf: &GpuBuf) -> Vec<f32> {
        self.download_data(buf)
    }
    fn flush(&self) {
        self.flush_recorded();
    }
    fn memory_bytes(&self) -> (u64, u64) {
        self.stats.current()
    }

    // ---- elementwise ------------------------------------------------------------------------
    fn fill(&self, x: &GpuBuf, value: f32) {
        self.blas(Kernel::Fill, x.len(), &[x], value);
    }
    fn copy(&self, src: &GpuBuf, dst: &GpuBuf) {
        self.blas(Kernel::Copy, src.len(), &[src, dst], 0.0);
    }
    fn axpy(&self, a: f32, x: &GpuBuf, y: &GpuBuf) {
        self.blas(Kernel::Axpy, x.len(), &[x, y], a);
    }
    fn scal(&self, a: f32, x: &GpuBuf) {
        self.blas(Kernel::Scal, x.len(), &[x], a);
    }
    fn add(&self, a: &GpuBuf, b: &GpuBuf, out: &GpuBuf) {
        self.blas(Kernel::Add, a.len(), &[a, b, out], 0.0);
    }
    fn mul(&self, a: &GpuBuf, b: &GpuBuf, out: &GpuBuf) {
        self.blas(Kernel::Mul, a.len(), &[a, b, out], 0.0);
    }
    fn div(&self, a: &GpuBuf, b: &GpuBuf, out: &GpuBuf) {
        self.blas(Kernel::Div, a.len(), &[a, b, out], 0.0);
    }
    fn exp(&self, x: &GpuBuf, out: &GpuBuf) {
        self.blas(Kernel::Exp, x.len(), &[x, out], 0.0);
    }
    fn log(&self, x: &GpuBuf, out: &GpuBuf) {
        self.blas(Kernel::Log, x.len(), &[x, out], 0.0);
    }
    fn pow(&self, x: &GpuBuf, p: f32, out: &GpuBuf) {
        self.blas(Kernel::Pow, x.len(), &[x, out], p);
    }
    fn mul_backward(&self, a: &GpuBuf, b: &GpuBuf, g: &GpuBuf, da: &GpuBuf, db: &GpuBuf) {
        self.blas(Kernel::MulBackward, a.len(), &[a, b, g, da, db], 0.0);
    }
    fn div_backward(&self, a: &GpuBuf, b: &GpuBuf, g: &GpuBuf, da: &GpuBuf, db: &GpuBuf) {
        self.blas(Kernel::DivBackward, a.len(), &[a, b, g, da, db], 0.0);
    }
    fn exp_backward(&self, y: &GpuBuf, g: &GpuBuf, dx: &GpuBuf) {
        self.blas(Kernel::ExpBackward, y.len(), &[y, g, dx], 0.0);
    }
    fn log_backward(&self, x: &GpuBuf, g: &GpuBuf, dx: &GpuBuf) {
        self.blas(Kernel::LogBackward, x.len(), &[x, g, dx], 0.0);
    }
    fn pow_backward(&self, x: &GpuBuf, p: f32, g: &GpuBuf, dx: &GpuBuf) {
        self.blas(Kernel::PowBackward, x.len(), &[x, g, dx], p);
    }

    // ---- convolution ------------------------------------------------------------------------
    fn conv_forward(&self, x: &GpuBuf, w: &GpuBuf, y: &GpuBuf, s: &ConvShape) {
        self.check_conv(s);
        check("conv_forward x", x, s.input_len());
        check("conv_forward w", w, s.weight_len());
        check("conv_forward y", y, s.output_len());
        let (cg, mg) = (s.c / s.groups, s.filters / s.groups);
        let ss = s.size * s.size;
        self.conv_gemm(Kernel::ConvForward, s, mg, s.batch * s.out_h * s.out_w, cg * ss, x, w, y);
    }

    fn conv_backward_data(&self, dy: &GpuBuf, w: &GpuBuf, dx: &GpuBuf, s: &ConvShape) {
        self.check_conv(s);
        check("conv_backward_data dy", dy, s.output_len());
        check("conv_backward_data w", w, s.weight_len());
        check("conv_backward_data dx", dx, s.input_len());
        let (cg, mg) = (s.c / s.groups, s.filters / s.groups);
        let ss = s.size * s.size;
        self.conv_gemm(Kernel::ConvBackwardData, s, cg, s.batch * s.h * s.w, mg * ss, dy, w, dx);
    }

    fn conv_backward_weights(&self, x: &GpuBuf, dy: &GpuBuf, dw: &GpuBuf, s: &ConvShape) {
        self.check_conv(s);
        check("conv_backward_weights x", x, s.input_len());
        check("conv_backward_weights dy", dy, s.output_len());
        check("conv_backward_weights dw", dw, s.weight_len());
        let (cg, mg) = (s.c / s.groups, s.filters / s.groups);
        let (m, n, k) = (mg, cg * s.size * s.size, s.batch * s.out_h * s.out_w);
        if m == 0 || n == 0 || k == 0 {
            return;
        }
        let m_tiles = m.div_ceil(TILE);
        let n_tiles = n.div_ceil(TILE);
        let tiles = m_tiles * n_tiles * s.groups;
        // Few output tiles and a long K (early layers: few weights, many pixels) would leave the
        // GPU idle: split K, write per-split partials, then add them up in split order.
        let want = SPLITK_TARGET_GROUPS.div_ceil(tiles);
        let by_k = (k / SPLITK_MIN_K).max(1);
        let by_mem = (SPLITK_MAX_SCRATCH / s.weight_len().max(1)).max(1);
        let mut splits = want.min(by_k).min(by_mem).clamp(1, 1024);
        let kchunk = k.div_ceil(splits).div_ceil(16) * 16;
        splits = k.div_ceil(kchunk);
        let max = self.limits.max_compute_workgroups_per_dimension as usize;
        assert!(n_tiles <= max && m_tiles * s.groups <= max, "gpu conv: shape {s:?} too large for one dispatch");
        let grid = [n_tiles as u32, (m_tiles * s.groups) as u32, splits as u32];
        let scratch = if splits > 1 { self.splitk(splits * s.weight_len()) } else { self.splitk(1) };
        let p = self.conv_params(s, m, n, k, [x, dy, dw, &scratch], kchunk, splits);
        let mut rec = self.lock();
        self.dispatch_locked(&mut rec, Kernel::ConvBackwardWeights, &[x, dy, dw, &scratch], &p.0, grid);
        if splits > 1 {
            let groups = self.grid((s.weight_len() as u64).div_ceil(256));
            self.dispatch_locked(&mut rec, Kernel::ConvSplitkReduce, &[x, dy, dw, &scratch], &p.0, groups);
        }
    }

    fn bias_add(&self, y: &GpuBuf, bias: &GpuBuf, batch: usize, channels: usize, spatial: usize) {
        check("bias_add y", y, batch * channels * spatial);
        check("bias_add bias", bias, channels);
        let p = Params::new().u(batch).u(channels).u(spatial).o(y).o(bias).pad_to(8);
        self.dispatch_1d(Kernel::BiasAdd, &[y, bias], &p.0, y.len());
    }

    fn bias_backward(&self, dy: &GpuBuf, dbias: &GpuBuf, batch: usize, channels: usize, spatial: usize) {
        check("bias_backward dy", dy, batch * channels * spatial);
        check("bias_backward dbias", dbias, channels);
        let p = Params::new().u(batch).u(channels).u(spatial).o(dy).o(dbias).pad_to(8);
        self.dispatch(Kernel::BiasBackward, &[dy, dbias], &p.0, self.grid(channels as u64));
    }

    // ---- batch normalisation ------------------------------------------------------------------
    fn batchnorm_forward_train(
        &self, x: &GpuBuf, y: &GpuBuf, x_norm: &GpuBuf, mean: &GpuBuf, var: &GpuBuf, rolling_mean: &GpuBuf,
        rolling_var: &GpuBuf, gamma: &GpuBuf, beta: &GpuBuf, batch: usize, channels: usize, spatial: usize,
        stats: BnStats,
    ) {
        let n = batch * channels * spatial;
        for (w, b) in [("x", x), ("y", y), ("x_norm", x_norm)] {
            check(&format!("batchnorm {w}"), b, n);
        }
        for (w, b) in [("mean", mean), ("var", var), ("rolling_mean", rolling_mean), ("rolling_var", rolling_var), ("gamma", gamma), ("beta", beta)] {
            check(&format!("batchnorm {w}"), b, channels);
        }
        // Darknet-CPU form: its f32 scales, 1/N and 1/(N−1) rounded from double, ride in the two
        // slots bn_stats has no buffer for.
        let m = batch * spatial;
        let (form, inv_n, inv_n1) = match stats {
            BnStats::Accurate => (0, 0.0, 0.0),
            BnStats::DarknetCpu => (1, (1.0 / m as f64) as f32, (1.0 / (m.max(2) - 1) as f64) as f32),
        };
        let p = Params::new().u(batch).u(channels).u(spatial).o(x).o(mean).o(var).o(rolling_mean).o(rolling_var)
            .f(inv_n).f(inv_n1).u(form).pad_to(12);
        self.dispatch(Kernel::BnStats, &[x, mean, var, rolling_mean, rolling_var], &p.0, self.grid(channels as u64));
        let p = Params::new().u(batch).u(channels).u(spatial).o(x).o(y).o(x_norm).o(mean).o(var).o(gamma).o(beta).pad_to(12);
        self.dispatch_1d(Kernel::BnNormalize, &[x, y, x_norm, mean, var, gamma, beta], &p.0, n);
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
        let p = Params::new().u(batch).u(channels).u(spatial).o(x).o(y).o(rolling_mean).o(rolling_var).o(gamma).o(beta).pad_to(12);
        self.dispatch_1d(Kernel::BnInfer, &[x, y, rolling_mean, rolling_var, gamma, beta], &p.0, n);
    }

    fn batchnorm_backward(
        &self, dy: &GpuBuf, x_norm: &GpuBuf, var: &GpuBuf, gamma: &GpuBuf, dgamma: &GpuBuf, dbeta: &GpuBuf,
        dx: &GpuBuf, batch: usize, channels: usize, spatial: usize, form: BnBackward,
    ) {
        let n = batch * channels * spatial;
        for b in [dy, x_norm, dx] {
            check("batchnorm_backward tensor", b, n);
        }
        for b in [var, gamma, dgamma, dbeta] {
            check("batchnorm_backward per-channel", b, channels);
        }
        let form = match form {
            BnBackward::Exact => 0,
            BnBackward::DarknetCpu => 1,
        };
        let p = Params::new().u(batch).u(channels).u(spatial).o(dy).o(x_norm).o(var).o(gamma).o(dgamma).o(dbeta).o(dx).u(form).pad_to(12);
        self.dispatch(Kernel::BnBackward, &[dy, x_norm, var, gamma, dgamma, dbeta, dx], &p.0, self.grid(channels as u64));
    }

    // ---- activations ----------------------------------------------------------------------------
    fn activation_forward(&self, x: &GpuBuf, y: &GpuBuf, act: Activation) {
        check("activation y", y, x.len());
        let p = Params::new().u(x.len()).u(act.code() as usize).o(x).o(y).u(0).u(0).pad_to(8);
        self.dispatch_1d(Kernel::ActForward, &[x, y], &p.0, x.len());
    }

    fn activation_backward(&self, x: &GpuBuf, y: &GpuBuf, dy: &GpuBuf, dx: &GpuBuf, act: Activation) {
        for b in [y, dy, dx] {
            check("activation_backward", b, x.len());
        }
        let p = Params::new().u(x.len()).u(act.code() as usize).o(x).o(y).o(dy).o(dx).pad_to(8);
        self.dispatch_1d(Kernel::ActBackward, &[x, y, dy, dx], &p.0, x.len());
    }

    // ---- pooling / resampling -------------------------------------------------------------------
    fn maxpool_forward(&self, x: &GpuBuf, y: &GpuBuf, s: &PoolShape) {
        check("maxpool x", x, s.input_len());
        check("maxpool y", y, s.output_len());
        let p = pool_params(s, x, y, y);
        self.dispatch_1d(Kernel::MaxpoolForward, &[x, y], &p.0, s.output_len());
    }

    fn maxpool_backward(&self, x: &GpuBuf, dy: &GpuBuf, dx: &GpuBuf, s: &PoolShape) {
        check("maxpool_backward x", x, s.input_len());
        check("maxpool_backward dy", dy, s.output_len());
        check("maxpool_backward dx", dx, s.input_len());
        let p = pool_params(s, x, dy, dx);
        self.dispatch_1d(Kernel::MaxpoolBackward, &[x, dy, dx], &p.0, s.input_len());
    }

    fn avgpool_forward(&self, x: &GpuBuf, y: &GpuBuf, batch: usize, channels: usize, spatial: usize) {
        check("avgpool x", x, batch * channels * spatial);
        check("avgpool y", y, batch * channels);
        let p = avg_params(batch, channels, spatial, x, y);
        self.dispatch(Kernel::AvgpoolForward, &[x, y], &p.0, self.grid((batch * channels) as u64));
    }

    fn avgpool_backward(&self, dy: &GpuBuf, dx: &GpuBuf, batch: usize, channels: usize, spatial: usize) {
        check("avgpool_backward dy", dy, batch * channels);
        check("avgpool_backward dx", dx, batch * channels * spatial);
        let p = avg_params(batch, channels, spatial, dy, dx);
        self.dispatch_1d(Kernel::AvgpoolBackward, &[dy, dx], &p.0, dx.len());
    }

    fn upsample_forward(&self, x: &GpuBuf, y: &GpuBuf, s: &UpsampleShape) {
        check("upsample x", x, s.input_len());
        check("upsample y", y, s.output_len());
        let p = Params::new().u(s.batch).u(s.c).u(s.h).u(s.w).u(s.stride).o(x).o(y).f(s.scale);
        self.dispatch_1d(Kernel::UpsampleForward, &[x, y], &p.0, s.output_len());
    }

    fn upsample_backward(&self, dy: &GpuBuf, dx: &GpuBuf, s: &UpsampleShape) {
        check("upsample_backward dy", dy, s.output_len());
        check("upsample_backward dx", dx, s.input_len());
        let p = Params::new().u(s.batch).u(s.c).u(s.h).u(s.w).u(s.stride).o(dy).o(dx).f(s.scale);
        self.dispatch_1d(Kernel::UpsampleBackward, &[dy, dx], &p.0, s.input_len());
    }

    fn reorg_forward(&self, x: &GpuBuf, y: &GpuBuf, s: &ReorgShape) {
        assert!(s.stride > 0 && s.c % (s.stride * s.stride) == 0, "gpu reorg: channels {} not divisible by stride²", s.c);
        check("reorg x", x, s.len());
        check("reorg y", y, s.len());
        let p = Params::new().u(s.batch).u(s.c).u(s.h).u(s.w).u(s.stride).o(x).o(y).f(0.0);
        self.dispatch_1d(Kernel::ReorgForward, &[x, y], &p.0, s.len());
    }

    fn reorg_backward(&self, dy: &GpuBuf, dx: &GpuBuf, s: &ReorgShape) {
        assert!(s.stride > 0 && s.c % (s.stride * s.stride) == 0, "gpu reorg: channels {} not divisible by stride²", s.c);
        check("reorg_backward dy", dy, s.len());
        check("reorg_backward dx", dx, s.len());
        let p = Params::new().u(s.batch).u(s.c).u(s.h).u(s.w).u(s.stride).o(dy).o(dx).f(0.0);
        self.dispatch_1d(Kernel::ReorgBackward, &[dy, dx], &p.0, s.len());
    }

    // ---- route / scale_channels -----------------------------------------------------------------
    fn copy_slices(&self, src: &GpuBuf, dst: &GpuBuf, s: &SliceCopy) {
        if s.batch == 0 || s.len == 0 {
            return;
        }
        let last = s.batch - 1;
        assert!(last * s.src_stride + s.src_offset + s.len <= src.len(), "gpu copy_slices: {s:?} reads past src ({})", src.len());
        assert!(last * s.dst_stride + s.dst_offset + s.len <= dst.len(), "gpu copy_slices: {s:?} writes past dst ({})", dst.len());
        let p = Params::new()
            .u(s.batch)
            .u(s.len)
            .u(s.src_stride)
            .u(s.src_offset)
            .u(s.dst_stride)
            .u(s.dst_offset)
            .u(usize::from(s.accumulate))
            .u(0)
            .o(src)
            .o(dst)
            .pad_to(16);
        self.dispatch_1d(Kernel::CopySlices, &[src, dst], &p.0, s.batch * s.len);
    }

    fn scale_channels_forward(&self, x: &GpuBuf, scale: &GpuBuf, y: &GpuBuf, batch: usize, channels: usize, spatial: usize) {
        check("scale_channels x", x, batch * channels * spatial);
        check("scale_channels scale", scale, batch * channels);
        check("scale_channels y", y, batch * channels * spatial);
        let p = route_params(batch, channels, spatial, &[x, scale, y]);
        self.dispatch_1d(Kernel::ScaleChannelsForward, &[x, scale, y], &p.0, x.len());
    }

    fn scale_channels_backward(
        &self, x: &GpuBuf, scale: &GpuBuf, dy: &GpuBuf, dx: &GpuBuf, dscale: &GpuBuf, batch: usize, channels: usize,
        spatial: usize,
    ) {
        for b in [x, dy, dx] {
            check("scale_channels_backward tensor", b, batch * channels * spatial);
        }
        check("scale_channels_backward scale", scale, batch * channels);
        check("scale_channels_backward dscale", dscale, batch * channels);
        let p = route_params(batch, channels, spatial, &[x, scale, dy, dx, dscale]);
        let grid = self.grid((batch * channels) as u64);
        self.dispatch(Kernel::ScaleChannelsBackward, &[x, scale, dy, dx, dscale], &p.0, grid);
    }

    // ---- dropout ----------------------------------------------------------------------------------
    fn dropout_forward(&self, x: &GpuBuf, y: &GpuBuf, p: f32, seed: u64) {
        check("dropout y", y, x.len());
        let params = dropout_params(x.len(), seed, x, y, p);
        self.dispatch_1d(Kernel::DropoutForward, &[x, y], &params.0, x.len());
    }

    fn dropout_backward(&self, dy: &GpuBuf, dx: &GpuBuf, p: f32, seed: u64) {
        check("dropout dx", dx, dy.len());
        let params = dropout_params(dy.len(), seed, dy, dx, p);
        self.dispatch_1d(Kernel::DropoutBackward, &[dy, dx], &params.0, dy.len());
    }

    // ---- yolo -------------------------------------------------------------------------------------
    fn yolo_forward_backward(&self, x: &GpuBuf, out: &GpuBuf, truths: &GpuBuf, dx: &GpuBuf, stats: &GpuBuf, p: &YoloParams) {
        self.yolo(x, out, truths, dx, stats, p);
    }

    // ---- optimisers -------------------------------------------------------------------------------
    fn sgd_update(&self, w: &GpuBuf, upd: &GpuBuf, lr: f32, momentum: f32, decay: f32, batch: f32) {
        check("sgd upd", upd, w.len());
        let p = Params::new()
            .u(w.len())
            .o(w)
            .o(upd)
            .u(0)
            .u(0)
            .f(lr)
            .f(momentum)
            .f(decay * batch)
            .f(lr / batch)
            .pad_to(16);
        self.dispatch_1d(Kernel::SgdUpdate, &[w, upd], &p.0, w.len());
    }

    fn adam_update(
        &self, w: &GpuBuf, upd: &GpuBuf, m: &GpuBuf, v: &GpuBuf, lr: f32, b1: f32, b2: f32, eps: f32, decay: f32,
        batch: f32, t: u32,
    ) {
        for b in [upd, m, v] {
            check("adam state", b, w.len());
        }
        let t = t.min(i32::MAX as u32) as i32;
        let p = Params::new()
            .u(w.len())
            .o(w)
            .o(upd)
            .o(m)
            .o(v)
            .f(lr)
            .f(0.0)
            .f(decay * batch)
            .f(0.0)
            .f(b1)
            .f(b2)
            .f(eps)
            .f(1.0 - b1.powi(t))
            .f(1.0 - b2.powi(t))
            .pad_to(16);
        self.dispatch_1d(Kernel::AdamUpdate, &[w, upd, m, v], &p.0, w.len());
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
    fn reduce(&self, x: &GpuBuf, out: &GpuBuf, index: usize, mode: usize) {
        assert!(index < out.len(), "gpu reduction: index {index} outside a result buffer of {}", out.len());
        let n = x.len();
        let parts = n.div_ceil(2048).clamp(1, REDUCE_PARTS);
        let chunk = n.div_ceil(parts).max(1);
        let parts = n.div_ceil(chunk).max(1);
        let scratch = &self.reduce_scratch;
        let p1 = Params::new().u(n).u(chunk).u(parts).u(mode).o(x).o(scratch).u(0).u(0);
        let p2 = Params::new().u(n).u(chunk).u(parts).u(mode).o(scratch).o(out).u(index).u(0);
        let mut rec = self.lock();
        self.dispatch_locked(&mut rec, Kernel::ReducePartial, &[x, scratch], &p1.0, [parts as u32, 1, 1]);
        self.dispatch_locked(&mut rec, Kernel::ReduceFinal, &[scratch, out], &p2.0, [1, 1, 1]);
    }
}

fn pool_params(s: &PoolShape, b1: &GpuBuf, b2: &GpuBuf, b3: &GpuBuf) -> Params {
    assert!(s.stride > 0 && s.size > 0, "gpu maxpool: bad shape {s:?}");
    Params::new()
        .u(s.batch)
        .u(s.c)
        .u(s.h)
        .u(s.w)
        .u(s.size)
        .u(s.stride)
        .u(s.padding / 2)
        .u(s.out_h)
        .u(s.out_w)
        .o(b1)
        .o(b2)
        .o(b3)
        .u(s.h * s.w)
        .pad_to(16)
}

fn avg_params(batch: usize, channels: usize, spatial: usize, b1: &GpuBuf, b2: &GpuBuf) -> Params {
    Params::new().u(batch).u(channels).u(0).u(0).u(0).u(0).u(0).u(0).u(0).o(b1).o(b2).u(0).u(spatial).pad_to(16)
}

fn route_params(batch: usize, channels: usize, spatial: usize, bufs: &[&GpuBuf]) -> Params {
    let mut p = Params::new().u(batch).u(channels).u(0).u(0).u(0).u(0).u(0).u(spatial);
    for i in 0..5 {
        p = match bufs.get(i) {
            Some(b) => p.o(b),
            None => p.u(0),
        };
    }
    p.pad_to(16)
}

fn dropout_params(n: usize, seed: u64, b1: &GpuBuf, b2: &GpuBuf, p: f32) -> Params {
    Params::new()
        .u(n)
        .u((seed & 0xffff_ffff) as usize)
        .u((seed >> 32) as usize)
        .o(b1)
        .o(b2)
        .f(p)
        .f(1.0 / (1.0 - p))
        .f(1.0 - p)
}
