//! [`Backend`] for [`CpuBackend`]: every op takes the queue lock through [`CpuBackend::op`] (which
//! times it under its own name), checks how its views overlap, makes plain slices and hands them
//! to its op family's module.

use super::{
    CpuBackend, CpuBuf, Queue, activation, assert_disjoint, batchnorm, bias, blas, conv, cost, dropout, fused, half, inout, optim, pool, read_slice,
    reduce, resample, route, softmax, write_slice, yolo,
};
use crate::backend::{Backend, BnTensors, GemmOperands, Store, plain, store_in_place};
use crate::profile::{DispatchTime, Scope, Work};
use crate::shapes::{Activation, Binary, BnBackward, BnStats, ChannelShape, ConvShape, CostKind, PoolShape, ReorgShape, SliceCopy, SoftmaxShape, Unary, UpsampleShape, YoloParams};

/// Least traffic and multiply-adds of one convolution's GEMMs.
fn conv_work(s: &ConvShape) -> Work {
    let (m, k, n) = (s.filters, s.size * s.size * s.c / s.groups.max(1), s.out_h * s.out_w);
    Work { flops: 2.0 * (s.batch * m * k * n) as f64, bytes: 4.0 * (s.input_len() + s.weight_len() + s.output_len()) as f64 }
}

fn channel_shape(s: &ConvShape) -> ChannelShape {
    ChannelShape::new(s.batch, s.filters, s.out_h * s.out_w)
}

impl CpuBackend {
    /// conv(x, w) into `y` with the queue's scratch (shared by the plain op and the fused one).
    fn conv_into(&self, q: &mut Queue, x: &[f32], w: &[f32], y: &mut [f32], s: &ConvShape) {
        let col = self.grow_col(&mut q.col, s);
        conv::forward(&self.par, x, w, y, s, col);
    }
}

impl Backend for CpuBackend {
    type Buf = CpuBuf;

    fn name(&self) -> String {
        "cpu".to_string()
    }

    fn alloc(&self, len: usize) -> CpuBuf {
        self.alloc_zeroed(len)
    }

    fn view(&self, buf: &CpuBuf, offset: usize, len: usize) -> CpuBuf {
        assert!(offset + len <= buf.len, "cpu view: {offset}+{len} exceeds view length {}", buf.len);
        CpuBuf { storage: buf.storage.clone(), offset: buf.offset + offset, len }
    }

    fn len(&self, buf: &CpuBuf) -> usize {
        buf.len
    }

    fn upload(&self, buf: &CpuBuf, data: &[f32]) {
        assert_eq!(data.len(), buf.len, "cpu upload: data length != buffer length");
        let _q = self.begin(&[buf]);
        // SAFETY: under the queue lock; the only slice of buf.
        unsafe { buf.write() }.copy_from_slice(data);
    }

    fn download(&self, buf: &CpuBuf) -> Vec<f32> {
        let _q = self.begin(&[buf]);
        // SAFETY: under the queue lock; nothing writes during the copy.
        unsafe { buf.read() }.to_vec()
    }

    fn flush(&self) {}

    fn memory_bytes(&self) -> (u64, u64) {
        self.bytes()
    }

    fn set_scope(&self, scope: Scope) {
        self.lock().scope = scope;
    }

    fn take_timings(&self) -> Option<Vec<DispatchTime>> {
        let mut q = self.lock();
        q.timing.then(|| std::mem::take(&mut q.times))
    }

    // ---- elementwise ---------------------------------------------------------------------------
    fn fill(&self, x: &CpuBuf, value: f32) {
        let _q = self.op("fill", Work::elementwise(x.len, 0, 1, 0), &[x]);
        // SAFETY: under the queue lock; the only slice of x.
        blas::fill(&self.par, unsafe { x.write() }, value);
    }
    fn copy(&self, src: &CpuBuf, dst: &CpuBuf) {
        let _q = self.op("copy", Work::elementwise(dst.len, 1, 1, 0), &[src, dst]);
        if src.same_view(dst) {
            return;
        }
        assert_disjoint("copy", &[dst], &[src]);
        // SAFETY: under the queue lock; dst is disjoint from src (asserted).
        unsafe { blas::copy(&self.par, src.read(), dst.write()) }
    }
    fn copy_if_flagged(&self, flag: &CpuBuf, src: &CpuBuf, dst: &CpuBuf) {
        let _q = self.op("copy_if_flagged", Work::elementwise(dst.len, 1, 1, 0), &[flag, src, dst]);
        assert_eq!(flag.len, 1, "cpu copy_if_flagged: the flag is one float");
        assert_eq!(src.len, dst.len, "cpu copy_if_flagged: lengths differ");
        if flag.cells()[0].get() == 0.0 || src.same_view(dst) {
            return;
        }
        assert_disjoint("copy_if_flagged", &[dst], &[src, flag]);
        // SAFETY: under the queue lock; dst is disjoint from src (asserted).
        unsafe { blas::copy(&self.par, src.read(), dst.write()) }
    }
    fn axpy(&self, a: f32, x: &CpuBuf, y: &CpuBuf) {
        let _q = self.op("axpy", Work::elementwise(y.len, 2, 1, 2), &[x, y]);
        // SAFETY: under the queue lock; y is x itself or disjoint (checked by `inout`).
        blas::axpy(&self.par, a, unsafe { inout("axpy", x, y) });
    }
    fn scal(&self, a: f32, x: &CpuBuf) {
        let _q = self.op("scal", Work::elementwise(x.len, 1, 1, 1), &[x]);
        // SAFETY: under the queue lock; the only slice of x.
        blas::scal(&self.par, a, unsafe { x.write() });
    }
    fn round_f16(&self, x: &CpuBuf, out: &CpuBuf) {
        let _q = self.op("round_f16", Work::elementwise(out.len, 1, 1, 1), &[x, out]);
        assert_eq!(x.len, out.len, "cpu round_f16: lengths differ");
        // SAFETY: under the queue lock; out is x itself or disjoint (checked by `inout`).
        half::round_slice(&self.par, unsafe { inout("round_f16", x, out) });
    }
    fn unary_forward(&self, op: Unary, x: &CpuBuf, out: &CpuBuf) {
        let _q = self.op(op.names().0, Work::elementwise(out.len, 1, 1, 1), &[x, out]);
        match op {
            Unary::Exp => blas::unary(x.cells(), out.cells(), f32::exp),
            Unary::Log => blas::unary(x.cells(), out.cells(), f32::ln),
            Unary::Pow(p) => blas::unary(x.cells(), out.cells(), |v| v.powf(p)),
        }
    }
    fn unary_backward(&self, op: Unary, x: &CpuBuf, y: &CpuBuf, g: &CpuBuf, dx: &CpuBuf) {
        let _q = self.op(op.names().1, Work::elementwise(x.len, 3, 1, 4), &[x, y, g, dx]);
        match op {
            Unary::Exp => blas::unary_backward(y.cells(), g.cells(), dx.cells(), |y, g| g * y),
            Unary::Log => blas::unary_backward(x.cells(), g.cells(), dx.cells(), |x, g| g / x),
            Unary::Pow(p) => blas::unary_backward(x.cells(), g.cells(), dx.cells(), |x, g| g * p * x.powf(p - 1.0)),
        }
    }
    fn binary_forward(&self, op: Binary, a: &CpuBuf, b: &CpuBuf, out: &CpuBuf) {
        let _q = self.op(op.names().0, Work::elementwise(out.len, 2, 1, 1), &[a, b, out]);
        match op {
            Binary::Add => blas::binary(a.cells(), b.cells(), out.cells(), |x, y| x + y),
            Binary::Mul => blas::binary(a.cells(), b.cells(), out.cells(), |x, y| x * y),
            Binary::Div => blas::binary(a.cells(), b.cells(), out.cells(), |x, y| x / y),
        }
    }
    fn binary_backward(&self, op: Binary, a: &CpuBuf, b: &CpuBuf, g: &CpuBuf, da: &CpuBuf, db: &CpuBuf) {
        let _q = self.op(op.names().1, Work::elementwise(a.len, 5, 2, 6), &[a, b, g, da, db]);
        let (a, b, g, da, db) = (a.cells(), b.cells(), g.cells(), da.cells(), db.cells());
        match op {
            Binary::Add => blas::binary_backward(a, b, g, da, db, |_, _, g| (g, g)),
            Binary::Mul => blas::binary_backward(a, b, g, da, db, |a, b, g| (g * b, g * a)),
            Binary::Div => blas::binary_backward(a, b, g, da, db, |a, b, g| (g / b, -g * a / (b * b))),
        }
    }

    // ---- convolution ---------------------------------------------------------------------------
    fn set_gemm_operands(&self, ops: GemmOperands) {
        self.shared.f16_operands.store(ops == GemmOperands::F16, std::sync::atomic::Ordering::Relaxed);
    }
    fn gemm_path(&self, ops: GemmOperands) -> String {
        match ops {
            GemmOperands::F32 => "fp32 GEMMs (the gemm crate)".to_string(),
            GemmOperands::F16 => {
                "fp32 GEMMs (the gemm crate) on f16-valued operands: exact products, f32 sums (the reference for the GPU's f16 GEMMs)"
                    .to_string()
            }
        }
    }
    fn conv_forward(&self, x: &CpuBuf, w: &CpuBuf, y: &CpuBuf, s: &ConvShape) {
        self.check_gemm_operands("conv_forward", &[("x", x), ("w", w)]);
        let mut q = self.op("conv_forward", conv_work(s), &[x, w, y]);
        assert_disjoint("conv_forward", &[y], &[x, w]);
        // SAFETY: y is disjoint from x and w (asserted) and the queue lock is held.
        unsafe { self.conv_into(&mut q, x.read(), w.read(), y.write(), s) }
    }
    fn conv_backward_data(&self, dy: &CpuBuf, w: &CpuBuf, dx: &CpuBuf, s: &ConvShape) {
        self.check_gemm_operands("conv_backward_data", &[("dy", dy), ("w", w)]);
        let mut q = self.op("conv_backward_data", conv_work(s), &[dy, w, dx]);
        assert_disjoint("conv_backward_data", &[dx], &[dy, w]);
        let Queue { col, gemm, .. } = &mut *q;
        let (col, gemm) = (self.grow_col(col, s), self.grow(gemm, conv::gemm_len(s)));
        // SAFETY: dx is disjoint from dy and w (asserted) and the queue lock is held.
        unsafe { conv::backward_data(&self.par, dy.read(), w.read(), dx.write(), s, col, gemm) }
    }
    fn conv_backward_weights(&self, x: &CpuBuf, dy: &CpuBuf, dw: &CpuBuf, s: &ConvShape) {
        self.check_gemm_operands("conv_backward_weights", &[("x", x), ("dy", dy)]);
        let mut q = self.op("conv_backward_weights", conv_work(s), &[x, dy, dw]);
        assert_disjoint("conv_backward_weights", &[dw], &[x, dy]);
        let col = self.grow_col(&mut q.col, s);
        // SAFETY: dw is disjoint from x and dy (asserted) and the queue lock is held.
        unsafe { conv::backward_weights(&self.par, x.read(), dy.read(), dw.write(), s, col) }
    }
    fn bias_add(&self, y: &CpuBuf, bias: &CpuBuf, s: &ChannelShape) {
        let (batch, channels, spatial) = (s.batch, s.channels, s.spatial);
        let _q = self.op("bias_add", Work::elementwise(y.len, 1, 1, 1), &[y, bias]);
        assert_disjoint("bias_add", &[y], &[bias]);
        // SAFETY: y is disjoint from bias (asserted) and the queue lock is held.
        unsafe { bias::bias_add(&self.par, y.write(), bias.read(), batch, channels, spatial) }
    }
    fn bias_backward(&self, dy: &CpuBuf, dbias: &CpuBuf, s: &ChannelShape) {
        let (batch, channels, spatial) = (s.batch, s.channels, s.spatial);
        let _q = self.op("bias_backward", Work::elementwise(dy.len, 1, 0, 1), &[dy, dbias]);
        assert_disjoint("bias_backward", &[dbias], &[dy]);
        // SAFETY: dbias is disjoint from dy (asserted) and the queue lock is held.
        unsafe { bias::bias_backward(&self.par, dy.read(), dbias.write(), batch, channels, spatial) }
    }

    // ---- batch normalisation (the plain ops: the readable reference on cells) ------------------
    fn batchnorm_forward_train(
        &self, x: &CpuBuf, y: &CpuBuf, x_norm: &CpuBuf, mean: &CpuBuf, var: &CpuBuf,
        rolling_mean: &CpuBuf, rolling_var: &CpuBuf, gamma: &CpuBuf, beta: &CpuBuf,
        batch: usize, channels: usize, spatial: usize, stats: BnStats,
    ) {
        let _q = self.op("batchnorm_forward_train", Work::elementwise(x.len, 3, 2, 6), &[x, y, x_norm, mean, var, rolling_mean, rolling_var, gamma, beta]);
        let bufs = batchnorm::TrainBufs {
            x: x.cells(), y: y.cells(), x_norm: x_norm.cells(), mean: mean.cells(), var: var.cells(),
            rolling_mean: rolling_mean.cells(), rolling_var: rolling_var.cells(),
            gamma: gamma.cells(), beta: beta.cells(),
        };
        batchnorm::forward_train(&bufs, batch, channels, spatial, stats);
    }
    fn batchnorm_forward_infer(
        &self, x: &CpuBuf, y: &CpuBuf, rolling_mean: &CpuBuf, rolling_var: &CpuBuf,
        gamma: &CpuBuf, beta: &CpuBuf, batch: usize, channels: usize, spatial: usize,
    ) {
        let _q = self.op("batchnorm_forward_infer", Work::elementwise(x.len, 1, 1, 4), &[x, y, rolling_mean, rolling_var, gamma, beta]);
        batchnorm::forward_infer(
            x.cells(), y.cells(), rolling_mean.cells(), rolling_var.cells(), gamma.cells(), beta.cells(),
            batch, channels, spatial,
        );
    }
    fn batchnorm_backward(
        &self, dy: &CpuBuf, x_norm: &CpuBuf, var: &CpuBuf, gamma: &CpuBuf,
        dgamma: &CpuBuf, dbeta: &CpuBuf, dx: &CpuBuf,
        batch: usize, channels: usize, spatial: usize, form: BnBackward,
    ) {
        let _q = self.op("batchnorm_backward", Work::elementwise(dy.len, 4, 1, 6), &[dy, x_norm, var, gamma, dgamma, dbeta, dx]);
        batchnorm::backward(
            dy.cells(), x_norm.cells(), var.cells(), gamma.cells(), dgamma.cells(), dbeta.cells(), dx.cells(),
            batch, channels, spatial, form,
        );
    }

    // ---- activations ---------------------------------------------------------------------------
    fn activation_forward(&self, x: &CpuBuf, y: &CpuBuf, act: Activation) {
        let _q = self.op("activation_forward", Work::elementwise(x.len, 1, 1, 1), &[x, y]);
        // SAFETY: under the queue lock; y is x itself or disjoint (checked by `inout`).
        activation::forward(&self.par, unsafe { inout("activation_forward", x, y) }, act);
    }
    fn activation_backward(&self, x: &CpuBuf, y: &CpuBuf, dy: &CpuBuf, dx: &CpuBuf, act: Activation) {
        let _q = self.op("activation_backward", Work::elementwise(x.len, 3, 1, 1), &[x, y, dy, dx]);
        assert_disjoint("activation_backward", &[dx], &[x, y]);
        // SAFETY: dx is dy itself or disjoint from it (`inout`), disjoint from x and y (asserted).
        unsafe { activation::backward(&self.par, x.read(), y.read(), inout("activation_backward", dy, dx), act) }
    }

    // ---- pooling / resampling ------------------------------------------------------------------
    fn maxpool_forward(&self, x: &CpuBuf, y: &CpuBuf, s: &PoolShape) {
        let work = Work { flops: (s.output_len() * s.size * s.size) as f64, bytes: ((s.input_len() + s.output_len()) * 4) as f64 };
        let _q = self.op("maxpool_forward", work, &[x, y]);
        assert_disjoint("maxpool_forward", &[y], &[x]);
        // SAFETY: y is disjoint from x (asserted) and the queue lock is held.
        unsafe { pool::max_forward(&self.par, x.read(), y.write(), s) }
    }
    fn maxpool_backward(&self, x: &CpuBuf, dy: &CpuBuf, dx: &CpuBuf, s: &PoolShape) {
        let work = Work { flops: (s.output_len() * s.size * s.size) as f64, bytes: ((2 * s.input_len() + s.output_len()) * 4) as f64 };
        let _q = self.op("maxpool_backward", work, &[x, dy, dx]);
        assert_disjoint("maxpool_backward", &[dx], &[x, dy]);
        // SAFETY: dx is disjoint from x and dy (asserted) and the queue lock is held.
        unsafe { pool::max_backward(&self.par, x.read(), dy.read(), dx.write(), s) }
    }
    fn avgpool_forward(&self, x: &CpuBuf, y: &CpuBuf, s: &ChannelShape) {
        let (batch, channels, spatial) = (s.batch, s.channels, s.spatial);
        let _q = self.op("avgpool_forward", Work::elementwise(x.len, 1, 0, 1), &[x, y]);
        pool::avg_forward(x.cells(), y.cells(), batch * channels, spatial);
    }
    fn avgpool_backward(&self, dy: &CpuBuf, dx: &CpuBuf, s: &ChannelShape) {
        let (batch, channels, spatial) = (s.batch, s.channels, s.spatial);
        let _q = self.op("avgpool_backward", Work::elementwise(dx.len, 1, 1, 1), &[dy, dx]);
        pool::avg_backward(dy.cells(), dx.cells(), batch * channels, spatial);
    }
    fn upsample_forward(&self, x: &CpuBuf, y: &CpuBuf, s: &UpsampleShape) {
        let _q = self.op("upsample_forward", Work { flops: 0.0, bytes: ((s.input_len() + s.output_len()) * 4) as f64 }, &[x, y]);
        assert_disjoint("upsample_forward", &[y], &[x]);
        // SAFETY: y is disjoint from x (asserted) and the queue lock is held.
        unsafe { resample::upsample_forward(&self.par, x.read(), y.write(), s) }
    }
    fn upsample_backward(&self, dy: &CpuBuf, dx: &CpuBuf, s: &UpsampleShape) {
        let work = Work { flops: s.output_len() as f64, bytes: ((2 * s.input_len() + s.output_len()) * 4) as f64 };
        let _q = self.op("upsample_backward", work, &[dy, dx]);
        assert_disjoint("upsample_backward", &[dx], &[dy]);
        // SAFETY: dx is disjoint from dy (asserted) and the queue lock is held.
        unsafe { resample::upsample_backward(&self.par, dy.read(), dx.write(), s) }
    }
    fn reorg_forward(&self, x: &CpuBuf, y: &CpuBuf, s: &ReorgShape) {
        let _q = self.op("reorg_forward", Work::elementwise(s.len(), 1, 1, 0), &[x, y]);
        resample::reorg_forward(x.cells(), y.cells(), s);
    }
    fn reorg_backward(&self, dy: &CpuBuf, dx: &CpuBuf, s: &ReorgShape) {
        let _q = self.op("reorg_backward", Work::elementwise(s.len(), 2, 1, 1), &[dy, dx]);
        resample::reorg_backward(dy.cells(), dx.cells(), s);
    }

    // ---- route / scale_channels ----------------------------------------------------------------
    fn copy_slices(&self, src: &CpuBuf, dst: &CpuBuf, s: &SliceCopy) {
        let n = s.batch * s.len;
        let _q = self.op("copy_slices", Work::elementwise(n, 1 + usize::from(s.accumulate), 1, 0), &[src, dst]);
        assert_disjoint("copy_slices", &[dst], &[src]);
        // SAFETY: dst is disjoint from src (asserted) and the queue lock is held.
        unsafe { route::copy_slices(&self.par, src.read(), dst.write(), s) }
    }
    fn scale_channels_forward(&self, x: &CpuBuf, scale: &CpuBuf, y: &CpuBuf, s: &ChannelShape) {
        let (batch, channels, spatial) = (s.batch, s.channels, s.spatial);
        let _q = self.op("scale_channels_forward", Work::elementwise(x.len, 1, 1, 1), &[x, scale, y]);
        route::scale_channels_forward(x.cells(), scale.cells(), y.cells(), batch * channels, spatial);
    }
    fn scale_channels_backward(
        &self, x: &CpuBuf, scale: &CpuBuf, dy: &CpuBuf, dx: &CpuBuf, dscale: &CpuBuf, s: &ChannelShape,
    ) {
        let (batch, channels, spatial) = (s.batch, s.channels, s.spatial);
        let _q = self.op("scale_channels_backward", Work::elementwise(x.len, 3, 1, 4), &[x, scale, dy, dx, dscale]);
        route::scale_channels_backward(x.cells(), scale.cells(), dy.cells(), dx.cells(), dscale.cells(), batch * channels, spatial);
    }

    // ---- dropout -------------------------------------------------------------------------------
    fn dropout_forward(&self, x: &CpuBuf, y: &CpuBuf, p: f32, seed: u64) {
        let _q = self.op("dropout_forward", Work::elementwise(x.len, 1, 1, 1), &[x, y]);
        dropout::forward(x.cells(), y.cells(), p, seed);
    }
    fn dropout_backward(&self, dy: &CpuBuf, dx: &CpuBuf, p: f32, seed: u64) {
        let _q = self.op("dropout_backward", Work::elementwise(dy.len, 2, 1, 1), &[dy, dx]);
        dropout::backward(dy.cells(), dx.cells(), p, seed);
    }

    // ---- yolo ----------------------------------------------------------------------------------
    fn softmax_forward(&self, x: &CpuBuf, y: &CpuBuf, s: &SoftmaxShape) {
        let _q = self.op("softmax_forward", Work::elementwise(x.len, 1, 1, 4), &[x, y]);
        softmax::forward(x.cells(), y.cells(), s);
    }
    fn softmax_loss(&self, y: &CpuBuf, truth: &CpuBuf, dx: &CpuBuf, stats: &CpuBuf, s: &SoftmaxShape) {
        let _q = self.op("softmax_loss", Work::elementwise(y.len, 2, 1, 3), &[y, truth, dx, stats]);
        assert_disjoint("softmax_loss", &[dx, stats], &[y, truth]);
        // SAFETY: the outputs are disjoint from each other and from the inputs (asserted); the
        // queue lock is held.
        unsafe {
            softmax::loss(read_slice(y.cells()), read_slice(truth.cells()), write_slice(dx.cells()), write_slice(stats.cells()), s)
        }
    }
    fn cost_forward(&self, kind: CostKind, x: &CpuBuf, truth: &CpuBuf, error: &CpuBuf, dx: &CpuBuf, stats: &CpuBuf) {
        let _q = self.op("cost_forward", Work::elementwise(x.len, 2, 2, 3), &[x, truth, error, dx, stats]);
        assert_disjoint("cost_forward", &[error, dx, stats], &[x, truth]);
        // SAFETY: as in softmax_loss.
        unsafe {
            cost::forward(
                kind, read_slice(x.cells()), read_slice(truth.cells()), write_slice(error.cells()), write_slice(dx.cells()),
                write_slice(stats.cells()),
            )
        }
    }

    fn yolo_forward_backward(&self, x: &CpuBuf, out: &CpuBuf, truths: &CpuBuf, dx: &CpuBuf, stats: &CpuBuf, p: &YoloParams) {
        let work = Work { flops: (x.len * p.max_boxes * 20) as f64, bytes: (3 * x.len * 4) as f64 };
        let _q = self.op("yolo_forward_backward", work, &[x, out, truths, dx, stats]);
        assert_disjoint("yolo_forward_backward", &[out, dx, stats], &[x, truths]);
        // SAFETY: the three outputs are pairwise disjoint and disjoint from the inputs (asserted);
        // the queue lock is held.
        unsafe {
            yolo::forward_backward_cpu(
                read_slice(x.cells()), write_slice(out.cells()), read_slice(truths.cells()),
                write_slice(dx.cells()), write_slice(stats.cells()), p,
            )
        }
    }

    // ---- optimisers ----------------------------------------------------------------------------
    fn sgd_update(&self, w: &CpuBuf, upd: &CpuBuf, lr: f32, momentum: f32, decay: f32, batch: f32) {
        let _q = self.op("sgd_update", Work::elementwise(w.len, 2, 2, 4), &[w, upd]);
        assert_disjoint("sgd_update", &[w], &[upd]);
        // SAFETY: w and upd are disjoint (asserted) and the queue lock is held.
        unsafe { optim::sgd(&self.par, w.write(), upd.write(), lr, momentum, decay, batch) }
    }
    fn adam_update(
        &self, w: &CpuBuf, upd: &CpuBuf, m: &CpuBuf, v: &CpuBuf, lr: f32, b1: f32, b2: f32, eps: f32,
        decay: f32, batch: f32, t: u32,
    ) {
        let _q = self.op("adam_update", Work::elementwise(w.len, 4, 4, 14), &[w, upd, m, v]);
        let h = optim::AdamHyper { lr, b1, b2, eps, decay, batch, t };
        optim::adam(w.cells(), upd.cells(), m.cells(), v.cells(), &h);
    }

    // ---- composite ops: fused unless this is the reference -------------------------------------
    // Mixed precision's rounding (`store`) stays a pass of its own after or before the fused
    // work: the CPU twin's speed in mixed precision is not what these kernels are for.
    fn conv_bias_activation_forward(
        &self, x: &CpuBuf, w: &CpuBuf, bias: &CpuBuf, y: &CpuBuf, pre_act: Option<&CpuBuf>, act: Activation, s: &ConvShape,
        store: Store,
    ) {
        if !self.fused {
            return plain::conv_bias_activation_forward(self, x, w, bias, y, pre_act, act, s, store);
        }
        self.conv_bias_activation_fused(x, w, bias, y, pre_act, act, s);
        store_in_place(self, y, store);
    }

    fn batchnorm_activation_forward(
        &self, x: &CpuBuf, y: &CpuBuf, pre_act: Option<&CpuBuf>, bn: &BnTensors<'_, CpuBuf>, act: Activation, s: &ChannelShape,
        stats: BnStats, store: Store,
    ) {
        if !self.fused {
            return plain::batchnorm_activation_forward(self, x, y, pre_act, bn, act, s, stats, store);
        }
        self.batchnorm_activation_fused(x, y, pre_act, bn, act, s, stats);
        store_in_place(self, y, store);
    }

    fn activation_batchnorm_backward(
        &self, delta: &CpuBuf, y: &CpuBuf, pre_act: Option<&CpuBuf>, bn: &BnTensors<'_, CpuBuf>, act: Activation, s: &ChannelShape,
        form: BnBackward, store: Store,
    ) {
        if !self.fused {
            return plain::activation_batchnorm_backward(self, delta, y, pre_act, bn, act, s, form, store);
        }
        store_in_place(self, delta, store);
        self.activation_batchnorm_backward_fused(delta, y, pre_act, bn, act, s, form);
        store_in_place(self, delta, store);
    }

    fn activation_bias_backward(
        &self, delta: &CpuBuf, y: &CpuBuf, pre_act: Option<&CpuBuf>, dbias: &CpuBuf, act: Activation, s: &ChannelShape, store: Store,
    ) {
        if !self.fused {
            return plain::activation_bias_backward(self, delta, y, pre_act, dbias, act, s, store);
        }
        store_in_place(self, delta, store);
        self.activation_bias_backward_fused(delta, y, pre_act, dbias, act, s);
        store_in_place(self, delta, store);
    }

    // ---- reductions ----------------------------------------------------------------------------
    fn sum_into(&self, x: &CpuBuf, out: &CpuBuf, index: usize) {
        let _q = self.op("sum_into", Work::elementwise(x.len, 1, 0, 1), &[x, out]);
        out.cells()[index].set(reduce::sum(x.cells()));
    }
    fn sum_squares_into(&self, x: &CpuBuf, out: &CpuBuf, index: usize) {
        let _q = self.op("sum_squares_into", Work::elementwise(x.len, 1, 0, 2), &[x, out]);
        out.cells()[index].set(reduce::sum_squares(x.cells()));
    }
    fn nonfinite_into(&self, x: &CpuBuf, out: &CpuBuf, index: usize) {
        let _q = self.op("nonfinite_into", Work::elementwise(x.len, 1, 0, 1), &[x, out]);
        // SAFETY: under the queue lock; nothing writes x while the flag is computed, and `out`
        // is written only after the slice is gone.
        let bad = reduce::any_nonfinite(&self.par, unsafe { x.read() });
        out.cells()[index].set(if bad { 1.0 } else { 0.0 });
    }
}

/// The fused bodies of the composite ops (`Backend` impl above), without mixed precision's
/// rounding.
impl CpuBackend {
    #[allow(clippy::too_many_arguments)]
    fn conv_bias_activation_fused(
        &self, x: &CpuBuf, w: &CpuBuf, bias: &CpuBuf, y: &CpuBuf, pre_act: Option<&CpuBuf>, act: Activation, s: &ConvShape,
    ) {
        const OP: &str = "conv_bias_activation_forward";
        self.check_gemm_operands(OP, &[("x", x), ("w", w)]);
        let mut work = conv_work(s);
        work.flops += (2 * s.output_len()) as f64;
        let target = pre_act.unwrap_or(y);
        let mut q = self.op(OP, work, &[x, w, bias, y, target]);
        assert_disjoint(OP, &[target], &[x, w, bias]);
        if pre_act.is_some() {
            assert_disjoint(OP, &[y], &[x, w, bias, target]);
        }
        // SAFETY: the outputs are disjoint from the inputs and each other (asserted), under the
        // queue lock.
        unsafe {
            let t = target.write();
            self.conv_into(&mut q, x.read(), w.read(), t, s);
            fused::bias_activation(&self.par, t, pre_act.map(|_| y.write()), bias.read(), act, &channel_shape(s));
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn batchnorm_activation_fused(
        &self, x: &CpuBuf, y: &CpuBuf, pre_act: Option<&CpuBuf>, bn: &BnTensors<'_, CpuBuf>, act: Activation, s: &ChannelShape,
        stats: BnStats,
    ) {
        const OP: &str = "batchnorm_activation_forward";
        let writes = 2 + usize::from(pre_act.is_some());
        let per_channel = [bn.mean, bn.var, bn.rolling_mean, bn.rolling_var];
        let mut bufs = vec![x, y, bn.x_norm, bn.gamma, bn.beta];
        bufs.extend(per_channel);
        bufs.extend(pre_act);
        let _q = self.op(OP, Work::elementwise(s.len(), 3, writes, 8), &bufs);
        let mut outs = vec![bn.x_norm];
        outs.extend(per_channel);
        outs.extend(pre_act);
        assert_disjoint(OP, &outs, &[x, y, bn.gamma, bn.beta]);
        assert_disjoint(OP, &[y], &[bn.gamma, bn.beta]);
        // SAFETY: every output is disjoint from every other argument (asserted; y may be x
        // itself, which `inout` checks), under the queue lock.
        unsafe {
            let state = fused::BnState {
                mean: bn.mean.write(), var: bn.var.write(), rolling_mean: bn.rolling_mean.write(),
                rolling_var: bn.rolling_var.write(), gamma: bn.gamma.read(), beta: bn.beta.read(),
            };
            let out = fused::ActOut { pre: pre_act.map(|p| p.write()), act };
            fused::batchnorm_activation_forward(&self.par, inout(OP, x, y), bn.x_norm.write(), out, state, s, stats);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn activation_batchnorm_backward_fused(
        &self, delta: &CpuBuf, y: &CpuBuf, pre_act: Option<&CpuBuf>, bn: &BnTensors<'_, CpuBuf>, act: Activation, s: &ChannelShape,
        form: BnBackward,
    ) {
        const OP: &str = "activation_batchnorm_backward";
        // A linear activation never reads the output, which the memory plan may then reuse
        // for the gradient: it is left out of the disjointness check and not read.
        let reads_y = act != Activation::Linear;
        let mut ins = vec![bn.x_norm, bn.var, bn.gamma];
        ins.extend(reads_y.then_some(y));
        ins.extend(pre_act);
        let mut bufs = vec![delta, bn.dgamma, bn.dbeta];
        bufs.extend(&ins);
        let _q = self.op(OP, Work::elementwise(s.len(), 4, 1, 8), &bufs);
        assert_disjoint(OP, &[delta, bn.dgamma, bn.dbeta], &ins);
        // SAFETY: the outputs are disjoint from the inputs and each other (asserted), under the
        // queue lock.
        unsafe {
            fused::activation_batchnorm_backward(
                &self.par, delta.write(), reads_y.then(|| y.read()), pre_act.map(|p| p.read()), bn.x_norm.read(), bn.var.read(), bn.gamma.read(),
                bn.dgamma.write(), bn.dbeta.write(), act, s, form,
            );
        }
    }

    fn activation_bias_backward_fused(&self, delta: &CpuBuf, y: &CpuBuf, pre_act: Option<&CpuBuf>, dbias: &CpuBuf, act: Activation, s: &ChannelShape) {
        const OP: &str = "activation_bias_backward";
        // As in activation_batchnorm_backward: a linear activation never reads the output.
        let reads_y = act != Activation::Linear;
        let mut ins: Vec<&CpuBuf> = reads_y.then_some(y).into_iter().collect();
        ins.extend(pre_act);
        let _q = self.op(OP, Work::elementwise(s.len(), 3, 1, 2), &[delta, y, dbias]);
        assert_disjoint(OP, &[delta, dbias], &ins);
        // SAFETY: the outputs are disjoint from the inputs and each other (asserted), under the
        // queue lock.
        unsafe { fused::activation_bias_backward(&self.par, delta.write(), reads_y.then(|| y.read()), pre_act.map(|p| p.read()), dbias.write(), act, s) }
    }
}
