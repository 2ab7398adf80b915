//! Building a [`Network`]: the memory plan (every buffer allocated once) and Darknet's weight
//! initialisation from a seeded ChaCha stream.

use rand::Rng;

use super::layer::{needs_pre_activation, BatchNorm, Conv, Layer, LayerOp, Param};
use super::plan::{self, ActivationPlan, Checkpointing, PlanOptions, TensorId, TensorKind};
use super::{Network, NetworkError};
use crate::backend::Backend;
use crate::cfg::{LayerKind, LayerShape, ModelCfg};
use crate::rng::{stream, Purpose};
use crate::shapes::{ConvShape, PoolShape, ReorgShape, SoftmaxShape, UpsampleShape, YoloParams};
use crate::yolo_stats::STATS_LEN;

/// Options for [`Network::build`].
#[derive(Clone, Debug)]
pub struct BuildOptions {
    /// Allocate Adam moments for every parameter.
    pub adam: bool,
    /// Truth slots per image (Darknet's `max`, 200 by default).
    pub max_boxes: usize,
    /// Seed of the run (weight init stream and dropout masks).
    pub seed: u64,
    /// Gradient checkpointing (`[train] checkpointing`).
    pub checkpointing: Checkpointing,
    /// Bytes the network may allocate on its backend (`[train] memory_budget`): the build fails,
    /// naming the smallest budget that would fit, when the plan needs more.
    pub memory_budget: Option<u64>,
    /// Share memory between activation tensors whose lifetimes do not overlap (off only to
    /// compare against the layout without a plan).
    pub memory_reuse: bool,
    /// Fill every activation tensor with NaN as soon as its value is dead (a test of the
    /// plan: a read outside a tensor's lifetime then shows in the results).
    #[doc(hidden)]
    pub poison_dead: bool,
    /// Dynamic loss scaling (mixed precision): a shadow copy of the state arenas, so that a step
    /// whose scaled gradients overflow restores the state from before it on the device
    /// ([`crate::train::LossScale`]). Doubles the state's memory.
    pub loss_scaling: bool,
    /// fp32, or mixed precision: layer outputs, gradients and the convolutions' GEMM operands
    /// rounded to f16 ([`Precision`]).
    pub precision: Precision,
}

/// Arithmetic precision of training (`[train] precision`).
///
/// `Mixed` stores in f16 what PyTorch's mixed precision stores in f16: every layer's output
/// (except the loss layers') and every gradient with respect to one, and the convolutions' GEMMs
/// read f16 copies of the weights (refreshed from the fp32 master weights before each step's
/// first forward) and f16 gradients. Accumulation, batch-norm statistics, the loss layers,
/// parameter gradients and the optimiser stay fp32. This version rounds values to f16 where
/// they would be stored (the `round_f16` op) and keeps them in f32 buffers: the numerics of mixed
/// precision on every backend, the reference the f16-storage kernels are checked against. Train
/// it with loss scaling ([`BuildOptions::loss_scaling`]) so small gradients do not vanish.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    #[default]
    Fp32,
    Mixed,
}

impl Precision {
    /// Whether training in this precision needs dynamic loss scaling
    /// ([`BuildOptions::loss_scaling`]): mixed does, so small gradients survive f16.
    pub fn needs_loss_scaling(self) -> bool {
        self == Precision::Mixed
    }

    /// What the convolution GEMMs' operands hold in this precision (mixed rounds every one of
    /// them to f16 where it is stored).
    pub fn gemm_operands(self) -> crate::backend::GemmOperands {
        match self {
            Precision::Fp32 => crate::backend::GemmOperands::F32,
            Precision::Mixed => crate::backend::GemmOperands::F16,
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::Fp32 => "fp32",
            Precision::Mixed => "mixed",
        })
    }
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Precision, String> {
        match s {
            "fp32" => Ok(Precision::Fp32),
            "mixed" => Ok(Precision::Mixed),
            _ => Err(format!("precision must be \"fp32\" or \"mixed\", not \"{s}\"")),
        }
    }
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            adam: false,
            max_boxes: 200,
            seed: 0,
            checkpointing: Checkpointing::None,
            memory_budget: None,
            memory_reuse: true,
            poison_dead: false,
            loss_scaling: false,
            precision: Precision::Fp32,
        }
    }
}

/// Floats per state arena: 64 MiB, half of wgpu's default storage-binding limit, so an arena
/// binds on every adapter. A tensor larger than this gets an arena of its own.
pub const STATE_ARENA_FLOATS: usize = 1 << 24;

/// One trainable tensor's buffers before they become a [`Param`]: `T` is a length while
/// planning, a view once the arenas exist.
struct ParamParts<T> {
    value: T,
    grad: T,
    adam: Option<(T, T)>,
    len: usize,
}

/// A convolutional layer's persistent state: weights, biases, and with batch normalisation its
/// scales and running mean and variance.
struct ConvState<T> {
    weights: ParamParts<T>,
    biases: ParamParts<T>,
    bn: Option<(ParamParts<T>, T, T)>,
}

/// The one place that lists a conv layer's state tensors, in arena order; `take(len)` makes each.
fn conv_state<T>(weight_len: usize, filters: usize, bn: bool, adam: bool, take: &mut impl FnMut(usize) -> T) -> ConvState<T> {
    let weights = param_parts(weight_len, adam, take);
    let biases = param_parts(filters, adam, take);
    let bn = bn.then(|| {
        let scales = param_parts(filters, adam, take);
        (scales, take(filters), take(filters))
    });
    ConvState { weights, biases, bn }
}

fn param_parts<T>(len: usize, adam: bool, take: &mut impl FnMut(usize) -> T) -> ParamParts<T> {
    ParamParts { value: take(len), grad: take(len), adam: if adam { Some((take(len), take(len))) } else { None }, len }
}

fn param<B: Backend>(p: ParamParts<B::Buf>, decay: bool) -> Param<B> {
    Param { value: p.value, grad: p.grad, adam: p.adam, decay, len: p.len }
}

/// Places tensors of `lens` (in order) into arenas: returns each tensor's (arena, offset) and
/// each arena's length.
fn pack(lens: &[usize]) -> (Vec<(usize, usize)>, Vec<usize>) {
    let (mut places, mut arenas) = (Vec::with_capacity(lens.len()), Vec::<usize>::new());
    for &len in lens {
        let last = arenas.len().wrapping_sub(1);
        match arenas.last_mut() {
            Some(used) if *used + len <= STATE_ARENA_FLOATS => {
                places.push((last, *used));
                *used += len;
            }
            _ => {
                places.push((arenas.len(), 0));
                arenas.push(len);
            }
        }
    }
    (places, arenas)
}

/// Every conv layer's (weight length, filters, batch-normalised) for mini-batches of `mb`.
fn conv_layers(cfg: &ModelCfg, shapes: &[LayerShape], mb: usize) -> Vec<(ConvShape, usize, bool)> {
    cfg.layers
        .iter()
        .zip(shapes)
        .filter_map(|(lc, sh)| match &lc.kind {
            LayerKind::Convolutional(c) => {
                let inp = sh.input;
                let shape = ConvShape::new(mb, inp.c, inp.h, inp.w, c.filters, c.size, c.stride, c.padding, c.groups);
                Some((shape, c.filters, c.batch_normalize))
            }
            _ => None,
        })
        .collect()
}

/// Floats of one image's class vector: the input of the classifier loss layers (0 without one;
/// shape inference makes them all equal).
pub(crate) fn label_len(cfg: &ModelCfg, shapes: &[LayerShape]) -> usize {
    cfg.layers.iter().zip(shapes).find(|(l, _)| l.kind.is_classifier_loss()).map_or(0, |(_, s)| s.input.len())
}

/// Lengths (floats) of every conv layer's weights: mixed precision's f16 copies, packed like the
/// state (the plan counts them, the build allocates them).
fn weight_lens(convs: &[(ConvShape, usize, bool)]) -> Vec<usize> {
    convs.iter().map(|c| c.0.weight_len()).collect()
}

/// Lengths (floats) of the state tensors of every conv layer, in arena order.
fn state_lens(convs: &[(ConvShape, usize, bool)], adam: bool) -> Vec<usize> {
    let mut lens = Vec::new();
    for (shape, filters, bn) in convs {
        conv_state(shape.weight_len(), *filters, *bn, adam, &mut |len| lens.push(len));
    }
    lens
}

/// What a network allocates when it is built, in floats, computed from the cfg alone (nothing is
/// allocated): for checking that a run fits before it starts. `engine/tests/memory_plan.rs`
/// proves it equals what [`Network::build`] allocates.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct MemoryPlan {
    /// Parameters, gradients/momentum, Adam moments, BN running statistics (the state arenas).
    pub state: usize,
    /// The activation arenas: layer outputs and gradients, x_norm, pre-activations and raw
    /// convolution outputs, placed by the activation plan ([`super::plan`]).
    pub activations: usize,
    /// Small buffers outside the plan: input, truths, statistics, BN batch statistics.
    pub fixed: usize,
    /// The largest single buffer (arena or activation).
    pub largest: usize,
    /// Scratch the CPU backend adds for the largest convolution, not allocated at build time:
    /// im2col columns per worker thread ([`MemoryPlan::cpu_workspace`] for a thread count).
    pub workspace: usize,
    /// The part of that scratch shared by the threads (gathered gradients of grouped convs).
    pub workspace_shared: usize,
    /// The most activation floats alive at one step (what a perfect placement would need).
    pub peak_live: usize,
    /// Activation floats without the plan (every tensor in memory of its own).
    pub unshared: usize,
    /// Checkpoint boundaries in use (0: no checkpointing).
    pub boundaries: usize,
    /// Forward FLOPs of one pass, and the FLOPs checkpointing's recomputation adds to it.
    pub forward_flops: f64,
    pub recompute_flops: f64,
    /// The largest one image of an activation tensor (floats) and which: a GPU binds tensors
    /// larger than one binding in ranges of whole images (see [`MemoryPlan::check_fits`]).
    pub largest_image: (usize, Option<TensorId>),
    /// The largest activation tensor a GPU binds whole ([`ActivationPlan::binds_whole`]).
    pub largest_whole: (usize, Option<TensorId>),
}

/// A plan and the activation layout it was computed from.
pub(crate) struct Planned {
    pub memory: MemoryPlan,
    pub activations: ActivationPlan,
    pub mb: usize,
}

/// Floats of the buffers outside the plan for mini-batches of `mb`.
fn fixed_floats(
    cfg: &ModelCfg, shapes: &[LayerShape], convs: &[(ConvShape, usize, bool)], mb: usize, opts: &BuildOptions, state_arenas: usize,
) -> Vec<usize> {
    let net = &cfg.net;
    let heads = cfg.layers.iter().filter(|l| matches!(l.kind, LayerKind::Yolo(_)) || l.kind.is_classifier_loss()).count();
    let mut v = vec![
        mb.saturating_mul(net.channels * net.height * net.width),
        mb * opts.max_boxes * 5,
        (mb * label_len(cfg, shapes)).max(1),
        (net.subdivisions * heads * STATS_LEN).max(1) + state_arenas,
        recompute_stats_len(convs),
    ];
    if opts.loss_scaling {
        // The step's overflow flag (the per-arena flags summed).
        v.push(1);
    }
    if opts.precision == Precision::Mixed {
        // The f16 copies of the conv weights.
        v.extend(pack(&weight_lens(convs)).1);
    }
    for (_, filters, bn) in convs {
        if *bn {
            v.extend([*filters, *filters]);
        }
    }
    v
}

/// The throwaway running statistics recomputed batch norms write (two of the widest layer).
fn recompute_stats_len(convs: &[(ConvShape, usize, bool)]) -> usize {
    2 * convs.iter().filter(|c| c.2).map(|c| c.1).max().unwrap_or(1)
}

impl MemoryPlan {
    /// The plan of `cfg` (batch, subdivisions and size as set) with `opts`.
    pub fn of(cfg: &ModelCfg, opts: &BuildOptions) -> Result<MemoryPlan, NetworkError> {
        Ok(MemoryPlan::planned(cfg, &cfg.shapes()?, opts, false)?.memory)
    }

    /// Floats of the CPU backend's convolution scratch with `threads` worker threads.
    pub fn cpu_workspace(&self, threads: usize) -> usize {
        self.workspace.saturating_mul(threads.max(1)).saturating_add(self.workspace_shared)
    }

    /// The plan and the activation layout (`stale_deltas`: see [`PlanOptions::stale_deltas`]).
    pub(crate) fn planned(cfg: &ModelCfg, shapes: &[LayerShape], opts: &BuildOptions, stale_deltas: bool) -> Result<Planned, NetworkError> {
        let net = &cfg.net;
        if net.subdivisions == 0 || net.batch % net.subdivisions != 0 {
            return Err(NetworkError::Subdivisions { batch: net.batch, subdivisions: net.subdivisions });
        }
        let mb = net.mini_batch();
        let convs = conv_layers(cfg, shapes, mb);
        let (_, arenas) = pack(&state_lens(&convs, opts.adam));
        let fixed = fixed_floats(cfg, shapes, &convs, mb, opts, arenas.len());
        // With loss scaling every state arena has a shadow of the same size.
        let state: usize = arenas.iter().sum::<usize>() * if opts.loss_scaling { 2 } else { 1 };
        let fixed_sum: usize = fixed.iter().sum();
        let n = cfg.layers.len();
        if let Checkpointing::Layers(l) = &opts.checkpointing {
            if let Some(&bad) = l.iter().find(|&&i| i >= n) {
                return Err(NetworkError::Checkpoint { layer: bad, layers: n });
            }
        }
        let desc = plan::describe(cfg, shapes, mb);
        let base = PlanOptions { boundaries: Vec::new(), reuse: opts.memory_reuse, stale_deltas };
        let other = 4 * (state + fixed_sum) as u64;
        let activations = plan::resolve_checkpointing(&desc, &opts.checkpointing, opts.memory_budget, other, base)
            .map_err(|smallest| NetworkError::MemoryBudget { budget: opts.memory_budget.unwrap_or(0), smallest, mb })?;
        // The CPU's two grow-only conv scratch buffers reach their largest sizes separately.
        let (cpu_col, cpu_gemm) = convs.iter().map(|(s, _, _)| crate::cpu::conv_scratch_lens(s)).fold((0, 0), |(a, b), (c, g)| (a.max(c), b.max(g)));
        let (workspace, workspace_shared) = (cpu_col, cpu_gemm);
        let largest = arenas.iter().chain(&activations.arenas).chain(&fixed).copied().max().unwrap_or(0);
        // Ties keep the first tensor (max_by_key keeps the last: reverse first).
        let image = activations.tensors.iter().rev().map(|t| (t.len / mb.max(1), Some(t.id))).max_by_key(|t| t.0);
        let whole = activations.tensors.iter().rev().filter(|t| activations.binds_whole(t.id)).map(|t| (t.len, Some(t.id))).max_by_key(|t| t.0);
        let memory = MemoryPlan {
            state,
            activations: activations.arena_floats(),
            fixed: fixed_sum,
            largest,
            workspace,
            workspace_shared,
            peak_live: activations.peak_live_floats(),
            unshared: activations.unshared_floats(),
            boundaries: plan::segment_count(&activations).saturating_sub(1),
            forward_flops: activations.forward_flops,
            recompute_flops: activations.recompute_flops,
            largest_image: image.unwrap_or_default(),
            largest_whole: whole.unwrap_or_default(),
        };
        Ok(Planned { memory, activations, mb })
    }

    /// The plan with its activation layout (which tensor lives when and where), for reports.
    pub fn detailed(cfg: &ModelCfg, opts: &BuildOptions) -> Result<(MemoryPlan, ActivationPlan), NetworkError> {
        let p = MemoryPlan::planned(cfg, &cfg.shapes()?, opts, false)?;
        Ok((p.memory, p.activations))
    }

    /// The share of a pass's forward FLOPs that checkpointing computes again (0 without it).
    pub fn recompute_fraction(&self) -> f64 {
        self.recompute_flops / self.forward_flops.max(1.0)
    }

    /// Bytes the network allocates at build time.
    pub fn build_bytes(&self) -> u64 {
        4 * (self.state as u64 + self.activations as u64 + self.fixed as u64)
    }
}

/// Buffers of the activation plan on a backend: the arenas and a view per planned tensor.
pub(crate) struct ActivationViews<B: Backend> {
    pub arenas: Vec<B::Buf>,
    pub views: Vec<B::Buf>,
}

impl<B: Backend> ActivationViews<B> {
    /// Allocates `plan`'s arenas on `b` and makes the views (what the backend cannot hold was
    /// refused by [`MemoryPlan::check_fits`] before).
    pub(crate) fn alloc(b: &B, plan: &ActivationPlan) -> ActivationViews<B> {
        let arenas: Vec<B::Buf> = plan.arenas.iter().map(|&len| b.alloc(len.max(1))).collect();
        let views = plan.tensors.iter().map(|t| b.view(&arenas[t.arena], t.offset, t.len)).collect();
        ActivationViews { arenas, views }
    }
}

impl<B: Backend> Network<B> {
    /// Instantiate `cfg` on `backend` for mini-batches of `cfg.net.batch / cfg.net.subdivisions`
    /// images and initialise its weights as Darknet does (see [`Network::init_weights`]).
    pub fn build(backend: B, cfg: ModelCfg, opts: &BuildOptions) -> Result<Network<B>, NetworkError> {
        let shapes = cfg.shapes()?;
        let Planned { activations: plan, mb, memory } = MemoryPlan::planned(&cfg, &shapes, opts, false)?;
        // Refused before anything is allocated, rather than failing in the middle.
        let limits = super::BufferLimits { buffer: backend.max_buffer_floats(), binding: backend.max_binding_floats() };
        memory.check_fits(&cfg, opts, limits, &backend.name())?;
        let net = &cfg.net;
        let b = &backend;
        // Persistent state first, packed into arenas (see STATE_ARENA_FLOATS).
        let convs = conv_layers(&cfg, &shapes, mb);
        // The first layer reads the network's input, whose gradient nobody needs.
        let first = cfg.layers.first().is_some_and(|l| matches!(l.kind, LayerKind::Convolutional(_)));
        let prepare: Vec<(ConvShape, bool)> = convs.iter().enumerate().map(|(i, c)| (c.0, !(first && i == 0))).collect();
        let mut activations: Vec<crate::shapes::Activation> = Vec::new();
        for l in &cfg.layers {
            if let LayerKind::Convolutional(c) = &l.kind
                && !activations.contains(&c.activation)
            {
                activations.push(c.activation);
            }
        }
        b.prepare(&prepare, &activations);
        let (places, arena_lens) = pack(&state_lens(&convs, opts.adam));
        let acts = ActivationViews::alloc(b, &plan);
        let state_arenas: Vec<B::Buf> = arena_lens.iter().map(|&len| b.alloc(len)).collect();
        let mut place = places.into_iter();
        let mut take = |len: usize| {
            let (arena, offset) = place.next().expect("the state plan lists every state tensor");
            b.view(&state_arenas[arena], offset, len)
        };
        let mut states: std::collections::VecDeque<ConvState<B::Buf>> =
            convs.iter().map(|(shape, filters, bn)| conv_state(shape.weight_len(), *filters, *bn, opts.adam, &mut take)).collect();
        // Mixed precision: the f16 copies of the conv weights, packed like the state.
        let mut half_weights = if opts.precision == Precision::Mixed {
            let (places, lens) = pack(&weight_lens(&convs));
            let arenas: Vec<B::Buf> = lens.iter().map(|&len| b.alloc(len)).collect();
            places.into_iter().zip(&convs).map(|((a, o), c)| Some(b.view(&arenas[a], o, c.0.weight_len()))).collect()
        } else {
            vec![None; convs.len()]
        }
        .into_iter();
        let view = |i: usize, kind: TensorKind| {
            let k = plan.tensor_index(i, kind).expect("the plan lists every layer's tensors");
            acts.views[k].clone()
        };
        let mut layers = Vec::with_capacity(cfg.layers.len());
        let mut heads = Vec::new();
        for (i, (lc, sh)) in cfg.layers.iter().zip(&shapes).enumerate() {
            let (inp, out) = (sh.input, sh.output);
            let op = match &lc.kind {
                LayerKind::Convolutional(c) => {
                    let shape = ConvShape::new(mb, inp.c, inp.h, inp.w, c.filters, c.size, c.stride, c.padding, c.groups);
                    let state = states.pop_front().expect("one state per conv layer");
                    let bn = state.bn.map(|(scales, rolling_mean, rolling_variance)| BatchNorm {
                        scales: param(scales, false),
                        rolling_mean,
                        rolling_variance,
                        mean: b.alloc(c.filters),
                        variance: b.alloc(c.filters),
                        x_norm: view(i, TensorKind::XNorm),
                        conv_out: view(i, TensorKind::ConvOut),
                    });
                    LayerOp::Conv(Conv {
                        shape,
                        activation: c.activation,
                        weights: param(state.weights, true),
                        biases: param(state.biases, false),
                        bn,
                        pre_act: needs_pre_activation(c.activation).then(|| view(i, TensorKind::PreAct)),
                        weights_half: half_weights.next().expect("one f16 weight copy slot per conv"),
                    })
                }
                LayerKind::Route(r) => LayerOp::Route { inputs: r.layers.clone(), groups: r.groups, group_id: r.group_id },
                LayerKind::Maxpool(m) => LayerOp::Maxpool(PoolShape::new(mb, inp.c, inp.h, inp.w, m.size, m.stride, m.padding)),
                LayerKind::Avgpool => LayerOp::Avgpool,
                LayerKind::Upsample { stride, scale } => {
                    LayerOp::Upsample(UpsampleShape { batch: mb, c: inp.c, h: inp.h, w: inp.w, stride: *stride, scale: *scale })
                }
                LayerKind::Shortcut { from, activation } => LayerOp::Shortcut {
                    from: from.clone(),
                    activation: *activation,
                    pre_act: needs_pre_activation(*activation).then(|| view(i, TensorKind::PreAct)),
                },
                LayerKind::Reorg { stride } => {
                    LayerOp::Reorg(ReorgShape { batch: mb, c: inp.c, h: inp.h, w: inp.w, stride: *stride })
                }
                LayerKind::ScaleChannels { from } => LayerOp::ScaleChannels { from: *from },
                LayerKind::Dropout { probability } => LayerOp::Dropout { probability: *probability },
                LayerKind::Yolo(y) => {
                    let params = YoloParams {
                        batch: mb,
                        w: inp.w,
                        h: inp.h,
                        classes: y.classes,
                        anchors: y.anchors.clone(),
                        mask: y.mask.clone(),
                        net_w: net.width,
                        net_h: net.height,
                        max_boxes: opts.max_boxes,
                        scale_x_y: y.scale_x_y,
                        ignore_thresh: y.ignore_thresh,
                        truth_thresh: y.truth_thresh,
                        iou_thresh: y.iou_thresh,
                        iou_thresh_kind: y.iou_thresh_kind,
                        iou_normalizer: y.iou_normalizer,
                        obj_normalizer: y.obj_normalizer,
                        cls_normalizer: y.cls_normalizer,
                        iou_loss: y.iou_loss,
                        label_smooth_eps: y.label_smooth_eps,
                        focal_loss: y.focal_loss,
                        max_delta: y.max_delta,
                        new_coords: y.new_coords,
                        objectness_smooth: y.objectness_smooth,
                    };
                    heads.push(i);
                    LayerOp::Yolo { params, head: heads.len() - 1 }
                }
                LayerKind::Softmax { groups, temperature } => {
                    heads.push(i);
                    let shape = SoftmaxShape { batch: mb, inputs: inp.len(), groups: *groups, temperature: *temperature };
                    LayerOp::Softmax { shape, head: heads.len() - 1 }
                }
                LayerKind::Cost { kind, scale } => {
                    heads.push(i);
                    LayerOp::Cost { kind: *kind, scale: *scale, head: heads.len() - 1 }
                }
            };
            debug_assert_eq!(b.len(&view(i, TensorKind::Output)), mb * out.len());
            layers.push(Layer { op, input: inp, output_shape: out, output: view(i, TensorKind::Output), delta: view(i, TensorKind::Delta) });
        }
        let input_len = mb * net.channels * net.height * net.width;
        let input = b.alloc(input_len);
        let truths = b.alloc(mb * opts.max_boxes * 5);
        let label_len = label_len(&cfg, &shapes);
        let labels = b.alloc((mb * label_len).max(1));
        // The step's statistics, then one non-finite flag per state arena (read back together).
        let health_slot = (net.subdivisions * heads.len() * STATS_LEN).max(1);
        let stats = b.alloc(health_slot + state_arenas.len());
        let recompute_stats = b.alloc(recompute_stats_len(&convs));
        let (shadow_arenas, overflow_flag) = if opts.loss_scaling {
            (arena_lens.iter().map(|&len| b.alloc(len)).collect(), Some(b.alloc(1)))
        } else {
            (Vec::new(), None)
        };
        let subdivisions = net.subdivisions;
        let mut network = Network {
            backend,
            cfg,
            shapes,
            mini_batch: mb,
            layers,
            input,
            truths,
            labels,
            label_len,
            max_boxes: opts.max_boxes,
            stats,
            subdivisions,
            heads,
            plan,
            activation_arenas: acts.arenas,
            activation_views: acts.views,
            recompute_stats,
            poison_dead: opts.poison_dead,
            build_options: opts.clone(),
            state_arenas,
            shadow_arenas,
            overflow_flag,
            health_slot,
            seed: opts.seed,
            darknet_cpu: Default::default(),
            fault: None,
        };
        network.init_weights(opts.seed);
        Ok(network)
    }

    /// Re-plans the activations (gradients kept across passes or not) and moves every layer
    /// onto the new arenas; their values are lost.
    pub(crate) fn replan(&mut self, stale_deltas: bool) -> Result<(), NetworkError> {
        let planned = MemoryPlan::planned(&self.cfg, &self.shapes, &self.build_options, stale_deltas)?;
        let acts = ActivationViews::alloc(&self.backend, &planned.activations);
        let view = |i: usize, kind: TensorKind| {
            planned.activations.tensor_index(i, kind).map(|k| acts.views[k].clone()).expect("the plan lists every layer's tensors")
        };
        for (i, l) in self.layers.iter_mut().enumerate() {
            l.output = view(i, TensorKind::Output);
            l.delta = view(i, TensorKind::Delta);
            match &mut l.op {
                LayerOp::Conv(c) => {
                    if let Some(bn) = &mut c.bn {
                        bn.x_norm = view(i, TensorKind::XNorm);
                        bn.conv_out = view(i, TensorKind::ConvOut);
                    }
                    if let Some(p) = &mut c.pre_act {
                        *p = view(i, TensorKind::PreAct);
                    }
                }
                LayerOp::Shortcut { pre_act: Some(p), .. } => *p = view(i, TensorKind::PreAct),
                _ => {}
            }
        }
        self.plan = planned.activations;
        self.activation_arenas = acts.arenas;
        self.activation_views = acts.views;
        Ok(())
    }

    /// Darknet's initialisation: conv weights `√(2/(size²·c/groups))·U[−1,1)`, biases 0, BN
    /// scales 1, rolling mean and variance 0. Draws come from the seed's weight-init ChaCha
    /// stream in layer order, so one seed gives one weight set on every backend.
    pub fn init_weights(&mut self, seed: u64) {
        let mut rng = stream(seed, Purpose::WeightInit);
        for l in &self.layers {
            if let LayerOp::Conv(c) = &l.op {
                let s = &c.shape;
                let fan_in = (s.size * s.size * s.c / s.groups) as f32;
                let scale = (2.0 / fan_in).sqrt();
                let w: Vec<f32> = (0..s.weight_len()).map(|_| scale * rng.random_range(-1.0f32..1.0)).collect();
                self.backend.upload(&c.weights.value, &w);
                self.backend.fill(&c.biases.value, 0.0);
                if let Some(bn) = &c.bn {
                    self.backend.fill(&bn.scales.value, 1.0);
                    self.backend.fill(&bn.rolling_mean, 0.0);
                    self.backend.fill(&bn.rolling_variance, 0.0);
                }
            }
        }
        for p in self.params() {
            self.backend.fill(&p.grad, 0.0);
            if let Some((m, v)) = &p.adam {
                self.backend.fill(m, 0.0);
                self.backend.fill(v, 0.0);
            }
        }
    }
}
