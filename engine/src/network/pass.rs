//! Forward, backward and the optimiser update, recorded on the backend without readback.

use super::layer::{BatchNorm, Conv, Layer, LayerOp, Param};
use super::plan::{Step, TensorKind};
use super::{Mode, Network};
use crate::backend::{Backend, BnTensors, GemmOperands, Store, store_in_place};
use crate::profile::{Phase, Scope};
use crate::rng::dropout_seed;
use crate::shapes::{Activation, BnBackward, BnStats, ChannelShape, SliceCopy};
use crate::yolo_stats::STATS_LEN;

/// Optimiser settings for one update (learning rate already from the policy).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Update {
    /// Darknet SGD with momentum and weight decay.
    Sgd { lr: f32, momentum: f32, decay: f32 },
    /// Darknet Adam (`t` = 1-based iteration for the bias correction).
    Adam { lr: f32, b1: f32, b2: f32, eps: f32, decay: f32, t: u32 },
}

/// A conv layer's batch-norm tensors as the composite ops take them.
fn bn_tensors<'a, B: Backend>(c: &'a Conv<B>, bn: &'a BatchNorm<B>) -> BnTensors<'a, B::Buf> {
    BnTensors {
        x_norm: &bn.x_norm,
        mean: &bn.mean,
        var: &bn.variance,
        rolling_mean: &bn.rolling_mean,
        rolling_var: &bn.rolling_variance,
        gamma: &bn.scales.value,
        beta: &c.biases.value,
        dgamma: &bn.scales.grad,
        dbeta: &c.biases.grad,
    }
}

impl<B: Backend> Network<B> {
    /// The buffer layer `i` reads as its (first) input.
    fn input_of(&self, i: usize) -> &B::Buf {
        if i == 0 { &self.input } else { &self.layers[i - 1].output }
    }

    /// Gradient buffer of layer `i`'s first input, or `None` for the network input.
    fn input_delta_of(&self, i: usize) -> Option<&B::Buf> {
        if i == 0 { None } else { Some(&self.layers[i - 1].delta) }
    }

    /// Record a forward pass over the current input. In training mode the [yolo] heads also
    /// compute their gradients and write pass `pass`'s statistics.
    pub fn forward(&self, mode: Mode, pass: usize, iteration: u64) {
        self.backend.set_gemm_operands(self.gemm_operands());
        if self.mixed() {
            let b = &self.backend;
            b.set_scope(Scope::network(Phase::Forward));
            if pass == 0 {
                // The step's f16 weights, from the fp32 master weights the last update left.
                for l in &self.layers {
                    if let LayerOp::Conv(c) = &l.op {
                        b.round_f16(&c.weights.value, c.gemm_weights());
                    }
                }
            }
            // The input arrived rounded (set_input's upload_f16).
        }
        let range = match mode {
            Mode::Train => 0..self.plan.forward_end(),
            Mode::Infer => self.plan.infer_start()..self.plan.steps.len(),
        };
        for t in range {
            self.zero_before(t);
            match self.plan.steps[t] {
                Step::Forward(i) | Step::Infer(i) => self.forward_layer(i, mode, pass, iteration, false),
                _ => {}
            }
            self.poison_after(t);
        }
    }

    /// Mixed precision ([`super::build::Precision::Mixed`]).
    pub(super) fn mixed(&self) -> bool {
        self.build_options.precision == super::build::Precision::Mixed
    }

    /// What the conv GEMMs' operands hold in this network's passes: under mixed precision every
    /// operand (layer input, gradient after the activation/BN backward, weights' f16 copy) is
    /// rounded to f16 where it is stored.
    pub fn gemm_operands(&self) -> GemmOperands {
        self.build_options.precision.gemm_operands()
    }

    /// How layer outputs and gradients are stored (f16 under mixed precision); the composite
    /// conv ops are told, the other layers get [`Network::store_half`].
    fn store(&self) -> Store {
        if self.mixed() { Store::F16 } else { Store::F32 }
    }

    /// `buf` (a layer output or a gradient) stored as [`Network::store`] says; a loss layer's
    /// stay f32.
    fn store_half(&self, l: &Layer<B>, buf: &B::Buf) {
        if !l.op.is_loss() {
            store_in_place(&self.backend, buf, self.store());
        }
    }

    /// Whether layer `i`'s output already holds what f16 storage would after its forward, so
    /// that rounding it again would change nothing: the composite conv ops round it as they
    /// write it, and route, maxpool, reorg and upsample at scale 1 pass on values of their
    /// inputs, which are stored in f16 themselves (unless a loss layer wrote them).
    fn output_in_f16(&self, i: usize, mode: Mode) -> bool {
        let stored = |j: usize| !self.layers[j].op.is_loss();
        let input_stored = i == 0 || stored(i - 1);
        match &self.layers[i].op {
            LayerOp::Conv(c) => mode == Mode::Train || c.bn.is_none(),
            LayerOp::Route { inputs, .. } => inputs.iter().all(|&j| stored(j)),
            LayerOp::Maxpool(_) | LayerOp::Reorg(_) => input_stored,
            LayerOp::Upsample(s) => input_stored && s.scale == 1.0,
            _ => false,
        }
    }

    /// Gradients whose lifetime starts at step `t` start at zero (they accumulate).
    fn zero_before(&self, t: usize) {
        for &k in &self.plan.zero[t] {
            self.backend.fill(&self.activation_views[k], 0.0);
        }
    }

    /// With [`super::BuildOptions::poison_dead`], tensors whose value is dead after step `t`
    /// become NaN, so a read the plan did not foresee cannot go unnoticed.
    fn poison_after(&self, t: usize) {
        if self.poison_dead {
            for &k in &self.plan.dies[t] {
                self.backend.fill(&self.activation_views[k], f32::NAN);
            }
        }
    }

    /// Layer `i`'s forward. `recompute`: the same ops again for a checkpointed segment's
    /// backward, with batch norm's running statistics written to a throwaway.
    fn forward_layer(&self, i: usize, mode: Mode, pass: usize, iteration: u64, recompute: bool) {
        let b = &self.backend;
        let mb = self.mini_batch;
        let l = &self.layers[i];
        let x = self.input_of(i);
        let spatial_in = l.input.h * l.input.w;
        let phase = match l.op {
            _ if recompute => Phase::Recompute,
            LayerOp::Yolo { .. } | LayerOp::Cost { .. } => Phase::Loss,
            _ => Phase::Forward,
        };
        b.set_scope(Scope::layer(i, l.kind_name(), phase));
        match &l.op {
            LayerOp::Conv(c) => {
                let cs = ChannelShape::new(mb, c.shape.filters, c.shape.out_h * c.shape.out_w);
                match &c.bn {
                    Some(bn) => {
                        b.conv_forward(x, c.gemm_weights(), &bn.conv_out, &c.shape);
                        match mode {
                            Mode::Train => {
                                let mut t = bn_tensors(c, bn);
                                let (rm, rv);
                                if recompute {
                                    rm = b.view(&self.recompute_stats, 0, c.shape.filters);
                                    rv = b.view(&self.recompute_stats, c.shape.filters, c.shape.filters);
                                    (t.rolling_mean, t.rolling_var) = (&rm, &rv);
                                }
                                let stats = if self.darknet_cpu.bn_f32_stats { BnStats::DarknetCpu } else { BnStats::Accurate };
                                b.batchnorm_activation_forward(&bn.conv_out, &l.output, c.pre_act.as_ref(), &t, c.activation, &cs, stats, self.store())
                            }
                            Mode::Infer => {
                                let target = c.pre_act.as_ref().unwrap_or(&l.output);
                                b.batchnorm_forward_infer(
                                    &bn.conv_out, target, &bn.rolling_mean, &bn.rolling_variance, &bn.scales.value,
                                    &c.biases.value, mb, c.shape.filters, cs.spatial,
                                );
                                if c.activation != Activation::Linear || c.pre_act.is_some() {
                                    b.activation_forward(target, &l.output, c.activation);
                                }
                            }
                        }
                    }
                    None => b.conv_bias_activation_forward(
                        x, c.gemm_weights(), &c.biases.value, &l.output, c.pre_act.as_ref(), c.activation, &c.shape, self.store(),
                    ),
                }
            }
            LayerOp::Route { inputs, groups, group_id } => {
                let out_stride = l.output_shape.len();
                let mut offset = 0;
                for &src in inputs {
                    let s = self.layers[src].output_shape;
                    let part = s.len() / groups;
                    b.copy_slices(&self.layers[src].output, &l.output, &SliceCopy {
                        batch: mb,
                        len: part,
                        src_stride: s.len(),
                        src_offset: group_id * part,
                        dst_stride: out_stride,
                        dst_offset: offset,
                        accumulate: false,
                    });
                    offset += part;
                }
            }
            LayerOp::Maxpool(s) => b.maxpool_forward(x, &l.output, s),
            LayerOp::Avgpool => b.avgpool_forward(x, &l.output, &ChannelShape::new(mb, l.input.c, spatial_in)),
            LayerOp::Upsample(s) => b.upsample_forward(x, &l.output, s),
            LayerOp::Shortcut { from, activation, pre_act } => {
                let target = pre_act.as_ref().unwrap_or(&l.output);
                b.copy(x, target);
                for &f in from {
                    b.axpy(1.0, &self.layers[f].output, target);
                }
                if *activation != Activation::Linear || pre_act.is_some() {
                    b.activation_forward(target, &l.output, *activation);
                }
            }
            LayerOp::Reorg(s) => b.reorg_forward(x, &l.output, s),
            LayerOp::ScaleChannels { from } => {
                // Darknet: the previous layer holds the C×1×1 scales, `from` the C×H×W map.
                let c = l.output_shape.c;
                let spatial = l.output_shape.h * l.output_shape.w;
                b.scale_channels_forward(&self.layers[*from].output, x, &l.output, &ChannelShape::new(mb, c, spatial))
            }
            LayerOp::Dropout { probability } => match mode {
                Mode::Train => b.dropout_forward(x, &l.output, *probability, dropout_seed(self.seed, iteration, i)),
                Mode::Infer => b.copy(x, &l.output),
            },
            LayerOp::Softmax { shape, head } => {
                b.softmax_forward(x, &l.output, shape);
                if mode == Mode::Train {
                    // Darknet computes the cross-entropy whenever truth is present.
                    let stats = b.view(&self.stats, (pass * self.heads.len() + head) * STATS_LEN, STATS_LEN);
                    b.softmax_loss(&l.output, &self.labels, &l.delta, &stats, shape);
                }
            }
            // Without truth (inference) Darknet's [cost] does nothing: its output stays as it was.
            LayerOp::Cost { kind, head, .. } => {
                if mode == Mode::Train {
                    let stats = b.view(&self.stats, (pass * self.heads.len() + head) * STATS_LEN, STATS_LEN);
                    b.cost_forward(*kind, x, &self.labels, &l.output, &l.delta, &stats);
                }
            }
            LayerOp::Yolo { params, head } => match mode {
                Mode::Train => {
                    let stats = b.view(&self.stats, (pass * self.heads.len() + head) * STATS_LEN, STATS_LEN);
                    b.yolo_forward_backward(x, &l.output, &self.truths, &l.delta, &stats, params);
                }
                Mode::Infer => {
                    // Inference needs only the activated output: run the head with no truths
                    // into a throwaway view of its own delta and of pass 0's stats.
                    let stats = b.view(&self.stats, head * STATS_LEN, STATS_LEN);
                    b.fill(&self.truths, 0.0);
                    b.yolo_forward_backward(x, &l.output, &self.truths, &l.delta, &stats, params);
                }
            },
        }
        if !self.output_in_f16(i, mode) {
            self.store_half(l, &l.output);
        }
        if !recompute {
            self.inject_fault(i, super::TensorPhase::Forward);
        }
    }

    /// Record the backward pass of the last training forward. Parameter gradients accumulate
    /// (across subdivisions) until [`Network::update`].
    pub fn backward(&self, iteration: u64) {
        self.backward_seeded(iteration, None)
    }

    /// Backward pass with an extra gradient `output_grad` added to the last layer's delta (for
    /// gradient checks of networks without a [yolo] head, and for custom losses). With
    /// checkpointing, each segment's forward runs again right before its backward.
    pub fn backward_seeded(&self, iteration: u64, output_grad: Option<&B::Buf>) {
        let b = &self.backend;
        b.set_gemm_operands(self.gemm_operands());
        b.set_scope(Scope::network(Phase::Backward));
        let last = self.layers.len().wrapping_sub(1);
        for t in self.plan.forward_end()..self.plan.infer_start() {
            self.zero_before(t);
            match self.plan.steps[t] {
                Step::Recompute(j) => self.forward_layer(j, Mode::Train, 0, iteration, true),
                Step::Backward(i) => {
                    if let (Some(g), true) = (output_grad, i == last) {
                        b.axpy(1.0, g, &self.layers[last].delta);
                    }
                    self.backward_layer(i, iteration);
                }
                _ => {}
            }
            self.poison_after(t);
        }
    }

    /// Layer `i`'s backward.
    fn backward_layer(&self, i: usize, iteration: u64) {
        let b = &self.backend;
        let mb = self.mini_batch;
        let l: &Layer<B> = &self.layers[i];
        let x = self.input_of(i);
        let dx = self.input_delta_of(i);
        let spatial_in = l.input.h * l.input.w;
        b.set_scope(Scope::layer(i, l.kind_name(), Phase::Backward));
        // The gradient with respect to the output, as the layers above summed it (the conv
        // composites round it themselves, as they read it).
        if !matches!(l.op, LayerOp::Conv(_)) {
            self.store_half(l, &l.delta);
        }
        match &l.op {
            LayerOp::Conv(c) => {
                let cs = ChannelShape::new(mb, c.shape.filters, c.shape.out_h * c.shape.out_w);
                // The composite leaves the GEMMs' operand, the gradient with respect to the
                // convolution's output, stored as `store` says.
                let store = self.store();
                match &c.bn {
                    Some(bn) => {
                        let form = if self.darknet_cpu.bn_backward { BnBackward::DarknetCpu } else { BnBackward::Exact };
                        b.activation_batchnorm_backward(&l.delta, &l.output, c.pre_act.as_ref(), &bn_tensors(c, bn), c.activation, &cs, form, store);
                    }
                    None => b.activation_bias_backward(&l.delta, &l.output, c.pre_act.as_ref(), &c.biases.grad, c.activation, &cs, store),
                }
                b.conv_backward_weights(x, &l.delta, &c.weights.grad, &c.shape);
                if let Some(dx) = dx {
                    if self.darknet_cpu.conv_overwrites_input_grad {
                        b.fill(dx, 0.0);
                    }
                    b.conv_backward_data(&l.delta, c.gemm_weights(), dx, &c.shape);
                }
            }
            LayerOp::Route { inputs, groups, group_id } => {
                let out_stride = l.output_shape.len();
                let mut offset = 0;
                for &src in inputs {
                    let s = self.layers[src].output_shape;
                    let part = s.len() / groups;
                    b.copy_slices(&l.delta, &self.layers[src].delta, &SliceCopy {
                        batch: mb,
                        len: part,
                        src_stride: out_stride,
                        src_offset: offset,
                        dst_stride: s.len(),
                        dst_offset: group_id * part,
                        accumulate: true,
                    });
                    offset += part;
                }
            }
            LayerOp::Maxpool(s) => {
                if let Some(dx) = dx {
                    b.maxpool_backward(x, &l.delta, dx, s);
                }
            }
            LayerOp::Avgpool => {
                if let Some(dx) = dx {
                    b.avgpool_backward(&l.delta, dx, &ChannelShape::new(mb, l.input.c, spatial_in));
                }
            }
            LayerOp::Upsample(s) => {
                if let Some(dx) = dx {
                    b.upsample_backward(&l.delta, dx, s);
                }
            }
            LayerOp::Shortcut { from, activation, pre_act } => {
                if *activation != Activation::Linear {
                    let pre = pre_act.as_ref().unwrap_or(&l.output);
                    b.activation_backward(pre, &l.output, &l.delta, &l.delta, *activation);
                }
                if let Some(dx) = dx {
                    b.axpy(1.0, &l.delta, dx);
                }
                for &f in from {
                    b.axpy(1.0, &l.delta, &self.layers[f].delta);
                }
            }
            LayerOp::Reorg(s) => {
                if let Some(dx) = dx {
                    b.reorg_backward(&l.delta, dx, s);
                }
            }
            LayerOp::ScaleChannels { from } => {
                let c = l.output_shape.c;
                let spatial = l.output_shape.h * l.output_shape.w;
                let from_l = &self.layers[*from];
                // With the network input as scales, their gradient goes to a planned throwaway.
                let dscale = match dx {
                    Some(d) => d,
                    None => {
                        let k = self.plan.tensor_index(i, TensorKind::DScale).expect("layer 0 scale_channels has a scale gradient");
                        &self.activation_views[k]
                    }
                };
                b.scale_channels_backward(&from_l.output, x, &l.delta, &from_l.delta, dscale, &ChannelShape::new(mb, c, spatial));
            }
            LayerOp::Dropout { probability } => {
                if let Some(dx) = dx {
                    b.dropout_backward(&l.delta, dx, *probability, dropout_seed(self.seed, iteration, i));
                }
            }
            LayerOp::Yolo { .. } => {
                if let Some(dx) = dx {
                    b.axpy(1.0, &l.delta, dx);
                }
            }
            // Darknet passes softmax's delta straight through (its Jacobian taken as the
            // identity: exact for the cross-entropy part, not for what a [cost] adds).
            LayerOp::Softmax { .. } => {
                if let Some(dx) = dx {
                    b.axpy(1.0, &l.delta, dx);
                }
            }
            LayerOp::Cost { scale, .. } => {
                if let Some(dx) = dx {
                    b.axpy(*scale, &l.delta, dx);
                }
            }
        }
    }

    /// Apply one optimiser update to every parameter. `batch` is Darknet's B (the full batch,
    /// mini-batch × subdivisions) that SGD divides the summed gradient by.
    pub fn update(&self, u: Update, batch: f32) {
        let b = &self.backend;
        let frozen: Vec<*const Param<B>> = if self.darknet_cpu.frozen_bn_beta {
            self.layers
                .iter()
                .filter_map(|l| match &l.op {
                    LayerOp::Conv(c) if c.bn.is_some() => Some(&c.biases as *const Param<B>),
                    _ => None,
                })
                .collect()
        } else {
            Vec::new()
        };
        b.set_scope(Scope::network(Phase::Update));
        for p in self.params() {
            if frozen.contains(&(p as *const Param<B>)) {
                // Darknet-CPU never updates BN beta (darknet-spec §0); its gradient is dropped.
                b.fill(&p.grad, 0.0);
                continue;
            }
            let decay = |d: f32| if p.decay { d } else { 0.0 };
            match u {
                Update::Sgd { lr, momentum, decay: d } => b.sgd_update(&p.value, &p.grad, lr, momentum, decay(d), batch),
                Update::Adam { lr, b1, b2, eps, decay: d, t } => {
                    let (m, v) = p.adam.as_ref().expect("network built without Adam state");
                    b.adam_update(&p.value, &p.grad, m, v, lr, b1, b2, eps, decay(d), batch, t);
                }
            }
        }
    }

    /// Zero every parameter gradient (and so SGD momentum).
    pub fn zero_grads(&self) {
        self.backend.set_scope(Scope::network(Phase::Update));
        for p in self.params() {
            self.backend.fill(&p.grad, 0.0);
        }
    }
}
