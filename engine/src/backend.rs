//! The one trait between layers and devices.
//!
//! Layers and the network are written once against [`Backend`]; the CPU backend (`cpu`) and the
//! wgpu backend (`gpu`) implement it. The trait is shaped for a device that cannot be read cheaply:
//! every op only *records* work on buffers (the GPU encodes a dispatch, the CPU runs it at once),
//! nothing returns data, and the only way to see numbers on the host is [`Backend::download`],
//! which the network calls once per step for the few floats a step must return.
//!
//! Conventions every implementation keeps:
//! - Tensors are f32, NCHW, image-major (`[batch][channel][y][x]`), as Darknet lays them out.
//! - A `Buf` is a *view* (storage + offset + length). Views made by [`Backend::view`] share storage,
//!   so a network can allocate one arena and hand out views.
//! - Outputs must not overlap inputs unless the op says "in place allowed".
//! - "accumulate" means `+=`; every other output is overwritten.
//! - Gradients are ordinary gradients (dL/dx), not Darknet's negated `delta`.

use crate::profile::{DispatchTime, Scope};
use crate::shapes::{
    Activation, Binary, BnBackward, BnStats, ChannelShape, ConvShape, CostKind, PoolShape, ReorgShape, SliceCopy, SoftmaxShape, Unary,
    UpsampleShape, YoloParams,
};

/// The tensors of one batch-normalised layer, as the composite ops take them.
#[derive(Clone, Copy, Debug)]
pub struct BnTensors<'a, T> {
    pub x_norm: &'a T,
    /// Batch statistics of the last training forward.
    pub mean: &'a T,
    pub var: &'a T,
    pub rolling_mean: &'a T,
    pub rolling_var: &'a T,
    /// Scale and shift, and their gradients (accumulated by the backward).
    pub gamma: &'a T,
    pub beta: &'a T,
    pub dgamma: &'a T,
    pub dbeta: &'a T,
}

/// A read-back begun by [`Backend::download_start`].
pub struct Download(Box<dyn FnOnce() -> Vec<f32>>);

impl Download {
    /// Values already on the host.
    pub fn ready(values: Vec<f32>) -> Download {
        Download(Box::new(move || values))
    }

    /// Values that `finish` waits for.
    pub fn later(finish: impl FnOnce() -> Vec<f32> + 'static) -> Download {
        Download(Box::new(finish))
    }

    /// Waits for the values.
    pub fn wait(self) -> Vec<f32> {
        (self.0)()
    }
}

/// A device that can run every op the engine needs.
pub trait Backend {
    /// A view of device memory holding `len` f32 values.
    type Buf: Clone + std::fmt::Debug;

    /// Short name for records ("cpu", "gpu:<adapter>").
    fn name(&self) -> String;

    // ---- memory -------------------------------------------------------------------------------
    /// Allocate `len` zeroed floats. Called when a network is built, never inside a step.
    fn alloc(&self, len: usize) -> Self::Buf;
    /// A view of `len` floats starting `offset` floats into `buf` (sharing its storage).
    fn view(&self, buf: &Self::Buf, offset: usize, len: usize) -> Self::Buf;
    /// Number of floats in the view.
    fn len(&self, buf: &Self::Buf) -> usize;
    /// Copy host data into the view (`data.len() == len(buf)`).
    fn upload(&self, buf: &Self::Buf, data: &[f32]);
    /// Copy host data into the view rounded to the nearest f16 value: what `upload` and then
    /// `round_f16` leave (mixed precision's network input). A GPU moves f16, half the bytes.
    fn upload_f16(&self, buf: &Self::Buf, data: &[f32]) {
        self.upload(buf, data);
        self.round_f16(buf, buf);
    }
    /// Read the view back to the host. On a GPU this waits for all recorded work: call it rarely.
    fn download(&self, buf: &Self::Buf) -> Vec<f32>;
    /// [`Backend::download`] in two halves: submits everything recorded so far and returns at
    /// once; [`Download::wait`] then waits for the values. Work recorded in between (the next
    /// step's input upload) goes into the next submission. The default reads at once.
    fn download_start(&self, buf: &Self::Buf) -> Download {
        Download::ready(self.download(buf))
    }
    /// Submit recorded work (GPU) without waiting. CPU: no-op.
    fn flush(&self);
    /// Bytes currently allocated on the device by this backend, and the peak so far.
    fn memory_bytes(&self) -> (u64, u64);
    /// The most floats one buffer may hold (a GPU adapter's `max_buffer_size`). A network whose
    /// largest buffer exceeds it is refused when built.
    fn max_buffer_floats(&self) -> usize {
        usize::MAX
    }
    /// The most floats an op binds at once (a GPU adapter's storage-binding limit, less one
    /// binding alignment): larger tensors are bound in ranges of whole images, so one image of a
    /// tensor, and a tensor an op binds whole, must fit (see `MemoryPlan::check_fits`).
    fn max_binding_floats(&self) -> usize {
        usize::MAX
    }

    // ---- profiling ------------------------------------------------------------------------------
    /// Label the ops recorded from now on (layer, type, phase) for [`Backend::take_timings`].
    /// Backends that do not time their work ignore it.
    fn set_scope(&self, _scope: Scope) {}
    /// Device time of every kernel launch recorded since the last call, if this backend measures
    /// it (the GPU through timestamp queries). Call after the step's download: the times arrive
    /// with it, so this does not wait for anything the download did not.
    fn take_timings(&self) -> Option<Vec<DispatchTime>> {
        None
    }

    // ---- elementwise (blas-like) --------------------------------------------------------------
    fn fill(&self, x: &Self::Buf, value: f32);
    /// dst = src
    fn copy(&self, src: &Self::Buf, dst: &Self::Buf);
    /// dst = src when `flag` (a one-float view) is nonzero; else nothing. The flag is read on
    /// the device: a step can undo itself without a readback (loss scaling's skipped steps).
    fn copy_if_flagged(&self, flag: &Self::Buf, src: &Self::Buf, dst: &Self::Buf);
    /// out = x rounded to the nearest f16 value (ties to even; ±Inf past f16's range), kept as
    /// f32: where mixed precision stores a tensor in f16. `out` may be `x` itself.
    fn round_f16(&self, x: &Self::Buf, out: &Self::Buf);
    /// y += a * x
    fn axpy(&self, a: f32, x: &Self::Buf, y: &Self::Buf);
    /// x *= a (in place)
    fn scal(&self, a: f32, x: &Self::Buf);
    /// out = op(x), elementwise (out may alias x).
    fn unary_forward(&self, op: Unary, x: &Self::Buf, out: &Self::Buf);
    /// dx += g · op′(x), given the forward's input `x` and output `y` (exp reads y, log and pow x).
    fn unary_backward(&self, op: Unary, x: &Self::Buf, y: &Self::Buf, g: &Self::Buf, dx: &Self::Buf);
    /// out = a op b, elementwise (out may alias a or b).
    fn binary_forward(&self, op: Binary, a: &Self::Buf, b: &Self::Buf, out: &Self::Buf);
    /// da += g · ∂(a op b)/∂a, db += g · ∂(a op b)/∂b.
    fn binary_backward(&self, op: Binary, a: &Self::Buf, b: &Self::Buf, g: &Self::Buf, da: &Self::Buf, db: &Self::Buf);

    // ---- convolution --------------------------------------------------------------------------
    /// What the operands of the convolution GEMMs that follow hold (mixed precision's pass says
    /// [`GemmOperands::F16`] before each pass, fp32's [`GemmOperands::F32`]). With f16 operands
    /// a backend may multiply on f16 hardware: the products are exact either way, and
    /// accumulation stays f32, so only the order of the sums may change.
    fn set_gemm_operands(&self, ops: GemmOperands);
    /// Which arithmetic the convolution GEMMs run with for `ops`, in words (for `runner bench`
    /// and the run record: a path that is slower than asked for is said, not hidden).
    fn gemm_path(&self, ops: GemmOperands) -> String;

    /// What a network will run, told once when it is built: its convolutions (each shape, and
    /// whether its backward data is needed) and the activations its layers apply, so that a
    /// backend can make what they need ahead of the first step (the GPU backend compiles the
    /// pipelines, in parallel). Changes no result; the default does nothing.
    fn prepare(&self, _convs: &[(ConvShape, bool)], _activations: &[Activation]) {}
    /// y = conv(x, w), overwritten. w is `[filters][c/groups][size][size]` (Darknet order).
    fn conv_forward(&self, x: &Self::Buf, w: &Self::Buf, y: &Self::Buf, s: &ConvShape);
    /// dx += convᵀ(dy, w) (gradient w.r.t. the input; col2im adds).
    fn conv_backward_data(&self, dy: &Self::Buf, w: &Self::Buf, dx: &Self::Buf, s: &ConvShape);
    /// dw += dy · im2col(x)ᵀ, summed over the batch.
    fn conv_backward_weights(&self, x: &Self::Buf, dy: &Self::Buf, dw: &Self::Buf, s: &ConvShape);
    /// y[b][c][i] += bias[c] (in place on y).
    fn bias_add(&self, y: &Self::Buf, bias: &Self::Buf, s: &ChannelShape);
    /// dbias[c] += Σ_{b,i} dy[b][c][i].
    fn bias_backward(&self, dy: &Self::Buf, dbias: &Self::Buf, s: &ChannelShape);

    // ---- batch normalisation (darknet-spec §0: unbiased variance, eps 1e-5 inside the root,
    //      running stats r = 0.99 r + 0.01 batch_stat, beta trained) ----------------------------
    /// Training forward: computes batch mean/var (written to `mean`, `var`), updates the running
    /// statistics, writes `x_norm` and `y = gamma*x_norm + beta`. `x` may alias `y`. `stats`:
    /// how mean and variance are summed ([`BnStats::DarknetCpu`] only to reproduce Darknet-CPU).
    #[allow(clippy::too_many_arguments)]
    fn batchnorm_forward_train(
        &self, x: &Self::Buf, y: &Self::Buf, x_norm: &Self::Buf, mean: &Self::Buf, var: &Self::Buf,
        rolling_mean: &Self::Buf, rolling_var: &Self::Buf, gamma: &Self::Buf, beta: &Self::Buf,
        batch: usize, channels: usize, spatial: usize, stats: BnStats,
    );
    /// Inference forward with the running statistics. `x` may alias `y`.
    #[allow(clippy::too_many_arguments)]
    fn batchnorm_forward_infer(
        &self, x: &Self::Buf, y: &Self::Buf, rolling_mean: &Self::Buf, rolling_var: &Self::Buf,
        gamma: &Self::Buf, beta: &Self::Buf, batch: usize, channels: usize, spatial: usize,
    );
    /// dgamma += Σ dy·x_norm, dbeta += Σ dy, and `dx` (overwritten; may alias `dy`):
    /// [`BnBackward::Exact`], the derivative of the training forward:
    /// dx = (gamma/√(var+eps))·(dy − mean(dy) − x_norm·Σ(dy·x_norm)/(N−1));
    /// [`BnBackward::DarknetCpu`]: dx = gamma·dy/(√var+eps) − (gamma/√(var+eps))·(mean(dy) + x_norm·Σ(dy·x_norm)/N).
    #[allow(clippy::too_many_arguments)]
    fn batchnorm_backward(
        &self, dy: &Self::Buf, x_norm: &Self::Buf, var: &Self::Buf, gamma: &Self::Buf,
        dgamma: &Self::Buf, dbeta: &Self::Buf, dx: &Self::Buf,
        batch: usize, channels: usize, spatial: usize, form: BnBackward,
    );

    // ---- activations ----------------------------------------------------------------------------
    /// y = f(x). `y` may alias `x`.
    fn activation_forward(&self, x: &Self::Buf, y: &Self::Buf, act: Activation);
    /// dx = dy * f'(x) where `x` is the pre-activation and `y` the output (Darknet computes the
    /// derivative from the output for leaky/relu/logistic/tanh, from x for mish/hard-mish/swish).
    /// Overwrites dx; `dx` may alias `dy`.
    fn activation_backward(&self, x: &Self::Buf, y: &Self::Buf, dy: &Self::Buf, dx: &Self::Buf, act: Activation);

    // ---- pooling / resampling -------------------------------------------------------------------
    fn maxpool_forward(&self, x: &Self::Buf, y: &Self::Buf, s: &PoolShape);
    /// dx[argmax] += dy (argmax recomputed from x, first maximum wins as in Darknet).
    fn maxpool_backward(&self, x: &Self::Buf, dy: &Self::Buf, dx: &Self::Buf, s: &PoolShape);
    /// Global average pool: y[b][c] = mean over spatial.
    fn avgpool_forward(&self, x: &Self::Buf, y: &Self::Buf, s: &ChannelShape);
    /// dx += dy / spatial.
    fn avgpool_backward(&self, dy: &Self::Buf, dx: &Self::Buf, s: &ChannelShape);
    /// Nearest upsample, y = scale * x repeated stride×stride.
    fn upsample_forward(&self, x: &Self::Buf, y: &Self::Buf, s: &UpsampleShape);
    /// dx += scale * Σ over each stride×stride block of dy.
    fn upsample_backward(&self, dy: &Self::Buf, dx: &Self::Buf, s: &UpsampleShape);
    fn reorg_forward(&self, x: &Self::Buf, y: &Self::Buf, s: &ReorgShape);
    /// dx += reorgᵀ(dy).
    fn reorg_backward(&self, dy: &Self::Buf, dx: &Self::Buf, s: &ReorgShape);

    // ---- route / shortcut / scale_channels ----------------------------------------------------
    /// Strided block copy used by route (forward: copy a channel slice of every image into the
    /// output; backward: accumulate it back). See [`SliceCopy`].
    fn copy_slices(&self, src: &Self::Buf, dst: &Self::Buf, s: &SliceCopy);
    /// y[b][c][i] = x[b][c][i] * scale[b][c].
    fn scale_channels_forward(&self, x: &Self::Buf, scale: &Self::Buf, y: &Self::Buf, s: &ChannelShape);
    /// dx += dy*scale; dscale[b][c] += Σ_i dy*x.
    fn scale_channels_backward(&self, x: &Self::Buf, scale: &Self::Buf, dy: &Self::Buf, dx: &Self::Buf, dscale: &Self::Buf, s: &ChannelShape);

    // ---- dropout (counter-based RNG: same bits on every backend) -------------------------------
    /// y = keep ? x * 1/(1-p) : 0, keep decided by `crate::rng::dropout_keep(seed, i, p)`.
    fn dropout_forward(&self, x: &Self::Buf, y: &Self::Buf, p: f32, seed: u64);
    /// dx += keep ? dy/(1-p) : 0 with the same mask.
    fn dropout_backward(&self, dy: &Self::Buf, dx: &Self::Buf, p: f32, seed: u64);

    // ---- yolo ---------------------------------------------------------------------------------
    /// The [yolo] layer: activates `x` into `out` (Darknet's l.output), matches `truths`
    /// (`[batch][max_boxes][x,y,w,h,class]`, x == 0 ends an image's list) and writes the loss
    /// gradient w.r.t. `x` into `dx` (overwritten; ordinary gradient = −Darknet delta) and the
    /// head's statistics into `stats` (see [`crate::yolo::YoloStats`] for the layout).
    fn yolo_forward_backward(&self, x: &Self::Buf, out: &Self::Buf, truths: &Self::Buf, dx: &Self::Buf, stats: &Self::Buf, p: &YoloParams);

    // ---- classifier losses ([softmax], [cost]) --------------------------------------------------
    /// y = exp((x − max)/T) / Σ exp((x − max)/T) over each group of `s.group_len()` values.
    fn softmax_forward(&self, x: &Self::Buf, y: &Self::Buf, s: &SoftmaxShape);
    /// Darknet's softmax cross-entropy on the forward's output `y` against `truth` (same layout):
    /// dx = y − t (overwritten; 0 where t is `SECRET_NUM`) — the ordinary gradient w.r.t. the
    /// logits when T = 1 and each group's truths sum to 1, which Darknet uses in every case — and
    /// `stats` (one record, `crate::yolo_stats` layout) gets the cost Σ −t·ln y in COST,
    /// CLASS_LOSS and CLS_ONLY_LOSS, 0 elsewhere.
    fn softmax_loss(&self, y: &Self::Buf, truth: &Self::Buf, dx: &Self::Buf, stats: &Self::Buf, s: &SoftmaxShape);
    /// `[cost]`: error = per-element cost of `x` against `truth` (Darknet's l.output), dx = −Darknet
    /// delta (overwritten), `stats` as in [`Backend::softmax_loss`] with Σ error.
    fn cost_forward(&self, kind: CostKind, x: &Self::Buf, truth: &Self::Buf, error: &Self::Buf, dx: &Self::Buf, stats: &Self::Buf);

    // ---- optimisers (darknet-spec §c, gradients accumulated as ordinary gradients) -------------
    /// Darknet SGD on one parameter tensor whose summed gradient sits in `upd`:
    /// upd += decay*B*w; w -= (lr/B)*upd; upd *= momentum.
    fn sgd_update(&self, w: &Self::Buf, upd: &Self::Buf, lr: f32, momentum: f32, decay: f32, batch: f32);
    /// Darknet Adam: d = upd + decay*B*w; m = b1 m + (1-b1) d; v = b2 v + (1-b2) d²;
    /// w -= lr * (m/(1-b1^t)) / (√(v/(1-b2^t)) + eps); upd = 0.
    #[allow(clippy::too_many_arguments)]
    fn adam_update(&self, w: &Self::Buf, upd: &Self::Buf, m: &Self::Buf, v: &Self::Buf, lr: f32, b1: f32, b2: f32, eps: f32, decay: f32, batch: f32, t: u32);

    // ---- composite ops: the fusion seam ---------------------------------------------------------
    // The network calls these. Their default bodies are the plain ops above ([`plain`]); a backend
    // may override one with a fused kernel, and the parity tests check every override against the
    // plain ops (the CPU backend's fused kernels against its own reference mode, which keeps them).

    /// A convolution without batch norm: `y = act(conv(x, w) + bias)`. `pre_act` receives the
    /// pre-activation when given (activations whose backward needs it); otherwise the
    /// activation runs in place on `y`. `store`: how `y` is stored ([`Store`]).
    #[allow(clippy::too_many_arguments)]
    fn conv_bias_activation_forward(
        &self, x: &Self::Buf, w: &Self::Buf, bias: &Self::Buf, y: &Self::Buf, pre_act: Option<&Self::Buf>, act: Activation, s: &ConvShape,
        store: Store,
    ) {
        plain::conv_bias_activation_forward(self, x, w, bias, y, pre_act, act, s, store)
    }

    /// Batch norm in training (batch statistics summed as `stats` says, running statistics
    /// updated) followed by `act`: `y = act(gamma·x_norm + beta)`. `x` may alias `y`. `pre_act`
    /// as in [`Backend::conv_bias_activation_forward`]; it must be given for activations whose
    /// backward needs their input (`network::layer::needs_pre_activation`). `store`: how `y` is
    /// stored ([`Store`]).
    #[allow(clippy::too_many_arguments)]
    fn batchnorm_activation_forward(
        &self, x: &Self::Buf, y: &Self::Buf, pre_act: Option<&Self::Buf>, bn: &BnTensors<'_, Self::Buf>, act: Activation, s: &ChannelShape,
        stats: BnStats, store: Store,
    ) {
        plain::batchnorm_activation_forward(self, x, y, pre_act, bn, act, s, stats, store)
    }

    /// Backward of [`Backend::batchnorm_activation_forward`]: `delta` holds dL/dy and is
    /// overwritten with dL/dx; dgamma and dbeta accumulate. `store`: how the incoming and the
    /// outgoing gradient are stored ([`Store`]).
    #[allow(clippy::too_many_arguments)]
    fn activation_batchnorm_backward(
        &self, delta: &Self::Buf, y: &Self::Buf, pre_act: Option<&Self::Buf>, bn: &BnTensors<'_, Self::Buf>, act: Activation, s: &ChannelShape,
        form: BnBackward, store: Store,
    ) {
        plain::activation_batchnorm_backward(self, delta, y, pre_act, bn, act, s, form, store)
    }

    /// Backward of the activation and bias of [`Backend::conv_bias_activation_forward`]:
    /// `delta` (dL/dy) becomes dL/d(conv output) in place; dbias accumulates. `store` as in
    /// [`Backend::activation_batchnorm_backward`].
    #[allow(clippy::too_many_arguments)]
    fn activation_bias_backward(
        &self, delta: &Self::Buf, y: &Self::Buf, pre_act: Option<&Self::Buf>, dbias: &Self::Buf, act: Activation, s: &ChannelShape, store: Store,
    ) {
        plain::activation_bias_backward(self, delta, y, pre_act, dbias, act, s, store)
    }

    // ---- reductions into a small result buffer -------------------------------------------------
    /// out[index] = Σ x (deterministic order).
    fn sum_into(&self, x: &Self::Buf, out: &Self::Buf, index: usize);
    /// out[index] = Σ x² (deterministic order).
    fn sum_squares_into(&self, x: &Self::Buf, out: &Self::Buf, index: usize);
    /// out[index] = 1 if any element of x is NaN or ±Inf, else 0.
    fn nonfinite_into(&self, x: &Self::Buf, out: &Self::Buf, index: usize);
}

/// How a composite layer op stores the tensor it passes on: the forward's output `y`, and in
/// the backward the gradient it reads (as the layers above summed it) and the one it writes (the
/// convolution GEMMs' operand). Mixed precision stores them in f16; a backend may round them as
/// its fused kernels read and write them rather than in passes of their own
/// ([`Backend::round_f16`]), which is what the plain forms do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Store {
    /// As computed.
    #[default]
    F32,
    /// Rounded to the nearest f16 value (kept in f32 buffers).
    F16,
}

/// [`Backend::round_f16`] of `x` in place when `store` is [`Store::F16`].
pub fn store_in_place<B: Backend + ?Sized>(b: &B, x: &B::Buf, store: Store) {
    if store == Store::F16 {
        b.round_f16(x, x);
    }
}

/// What the convolution GEMMs' operands hold ([`Backend::set_gemm_operands`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GemmOperands {
    /// Any f32 values (the fp32 path).
    #[default]
    F32,
    /// Only f16 values, stored as f32 (mixed precision rounds them where they are stored).
    F16,
}

/// The composite ops as plain ops: the trait's default bodies, callable by a backend that
/// overrides a composite but keeps the plain form reachable (the CPU's reference mode).
pub mod plain {
    use super::{Backend, BnTensors, Store, store_in_place};
    use crate::shapes::{Activation, BnBackward, BnStats, ChannelShape, ConvShape};

    /// [`Backend::conv_bias_activation_forward`] as conv, bias add, activation, rounding.
    #[allow(clippy::too_many_arguments)]
    pub fn conv_bias_activation_forward<B: Backend + ?Sized>(
        b: &B, x: &B::Buf, w: &B::Buf, bias: &B::Buf, y: &B::Buf, pre_act: Option<&B::Buf>, act: Activation, s: &ConvShape, store: Store,
    ) {
        let target = pre_act.unwrap_or(y);
        b.conv_forward(x, w, target, s);
        b.bias_add(target, bias, &ChannelShape::new(s.batch, s.filters, s.out_h * s.out_w));
        if act != Activation::Linear || pre_act.is_some() {
            b.activation_forward(target, y, act);
        }
        store_in_place(b, y, store);
    }

    /// [`Backend::batchnorm_activation_forward`] as batch norm, activation, rounding.
    #[allow(clippy::too_many_arguments)]
    pub fn batchnorm_activation_forward<B: Backend + ?Sized>(
        b: &B, x: &B::Buf, y: &B::Buf, pre_act: Option<&B::Buf>, bn: &BnTensors<'_, B::Buf>, act: Activation, s: &ChannelShape,
        stats: BnStats, store: Store,
    ) {
        let target = pre_act.unwrap_or(y);
        b.batchnorm_forward_train(
            x, target, bn.x_norm, bn.mean, bn.var, bn.rolling_mean, bn.rolling_var, bn.gamma, bn.beta, s.batch, s.channels, s.spatial,
            stats,
        );
        if act != Activation::Linear || pre_act.is_some() {
            b.activation_forward(target, y, act);
        }
        store_in_place(b, y, store);
    }

    /// [`Backend::activation_batchnorm_backward`] as rounding, activation backward, batch norm
    /// backward, rounding.
    #[allow(clippy::too_many_arguments)]
    pub fn activation_batchnorm_backward<B: Backend + ?Sized>(
        b: &B, delta: &B::Buf, y: &B::Buf, pre_act: Option<&B::Buf>, bn: &BnTensors<'_, B::Buf>, act: Activation, s: &ChannelShape,
        form: BnBackward, store: Store,
    ) {
        store_in_place(b, delta, store);
        if act != Activation::Linear {
            b.activation_backward(pre_act.unwrap_or(y), y, delta, delta, act);
        }
        b.batchnorm_backward(delta, bn.x_norm, bn.var, bn.gamma, bn.dgamma, bn.dbeta, delta, s.batch, s.channels, s.spatial, form);
        store_in_place(b, delta, store);
    }

    /// [`Backend::activation_bias_backward`] as rounding, activation backward, bias backward,
    /// rounding.
    #[allow(clippy::too_many_arguments)]
    pub fn activation_bias_backward<B: Backend + ?Sized>(
        b: &B, delta: &B::Buf, y: &B::Buf, pre_act: Option<&B::Buf>, dbias: &B::Buf, act: Activation, s: &ChannelShape, store: Store,
    ) {
        store_in_place(b, delta, store);
        if act != Activation::Linear {
            b.activation_backward(pre_act.unwrap_or(y), y, delta, delta, act);
        }
        b.bias_backward(delta, dbias, s);
        store_in_place(b, delta, store);
    }
}
