//! The activation memory plan: when every activation tensor lives, and where it sits.
//!
//! A network's activation tensors (layer outputs and gradients, batch-norm x_norm, kept
//! pre-activations, the raw convolution output batch norm reads) are not all needed at once. The
//! plan lists the steps of the two programs a network runs — a training pass (forward, then the
//! backward, with the recompute steps gradient checkpointing adds) and an inference pass — with
//! what each step reads and writes (`schedule.rs`, where every op's keep-for-backward rule is
//! stated). Each tensor then lives in intervals, from a write to its last read; tensors whose
//! intervals never overlap share memory (`place.rs`), so gradients take the place of outputs the
//! backward no longer needs, and a checkpointed segment's tensors exist only while the segment
//! is recomputed and differentiated. A gradient is zeroed right before its first use in a pass.
//!
//! The plan depends on the cfg, the mini-batch and the options alone: [`super::MemoryPlan::of`]
//! computes the bytes a build will allocate without a backend, and [`ActivationPlan::check`]
//! proves that no two tensors live at the same step overlap.

mod checkpoint;
mod place;
mod schedule;

use std::collections::HashMap;

pub use checkpoint::Checkpointing;
pub(crate) use checkpoint::resolve_checkpointing;
pub(crate) use place::ALIGN;

use crate::cfg::{LayerKind, LayerShape, ModelCfg};
use crate::shapes::Activation;

use super::layer::needs_pre_activation;

/// Floats an activation arena holds at most (128 MiB, wgpu's default storage-binding limit: an
/// arena that fits one binding is bound whole on every adapter) unless one tensor alone is
/// larger: then its arena is as large as that tensor, GPU kernels bind windows of it and split
/// their work over images (gpu/chunk.rs), and `MemoryPlan::check_fits` refuses what the device
/// cannot hold or bind even so.
pub const ACTIVATION_ARENA_FLOATS: usize = 1 << 25;

/// Which tensor of a layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TensorKind {
    /// The layer's output.
    Output,
    /// The gradient of the loss w.r.t. the output ([yolo]: w.r.t. its input, written in the forward).
    Delta,
    /// Batch norm's normalised values.
    XNorm,
    /// The pre-activation, kept for activations whose derivative needs it.
    PreAct,
    /// The convolution's raw output, batch norm's input.
    ConvOut,
    /// The throwaway gradient of a scale_channels layer whose scales are the network input.
    DScale,
}

impl TensorKind {
    pub fn name(self) -> &'static str {
        match self {
            TensorKind::Output => "output",
            TensorKind::Delta => "gradient",
            TensorKind::XNorm => "x_norm",
            TensorKind::PreAct => "pre-activation",
            TensorKind::ConvOut => "conv output",
            TensorKind::DScale => "scale gradient",
        }
    }
}

/// One tensor: layer and kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TensorId {
    pub layer: usize,
    pub kind: TensorKind,
}

/// One step of a program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Training forward of a layer.
    Forward(usize),
    /// After the training forward: the network's output may be read.
    ForwardEnd,
    /// A checkpointed layer's forward again, right before its segment's backward.
    Recompute(usize),
    Backward(usize),
    /// Inference forward of a layer.
    Infer(usize),
    /// After the inference forward: the heads' outputs are decoded.
    InferEnd,
}

/// How a step touches a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Use {
    Read,
    /// Overwrites every value.
    Write,
    /// Reads and writes (accumulates or works in place).
    Update,
}

/// The part of a layer the plan needs.
#[derive(Clone, Debug)]
pub(crate) struct LayerDesc {
    pub op: Op,
    /// Floats of the output and of the input for the mini-batch.
    pub len: usize,
    pub in_len: usize,
    pub linear: bool,
    pub bn: bool,
    pub pre_act: bool,
    /// Forward FLOPs for the mini-batch.
    pub flops: f64,
}

#[derive(Clone, Debug)]
pub(crate) enum Op {
    Conv,
    Route(Vec<usize>),
    Maxpool,
    Avgpool,
    Upsample,
    Shortcut(Vec<usize>),
    Reorg,
    ScaleChannels(usize),
    Dropout,
    Yolo,
    /// Classifier losses: like [yolo], they write their gradient in the forward.
    Softmax,
    Cost,
}

impl Op {
    /// Loss layers: their gradient is written in the training forward, they are never
    /// recomputed.
    pub(crate) fn is_loss(&self) -> bool {
        matches!(self, Op::Yolo | Op::Softmax | Op::Cost)
    }
}

/// The layers of `cfg` as the plan sees them, for mini-batches of `mb`.
pub(crate) fn describe(cfg: &ModelCfg, shapes: &[LayerShape], mb: usize) -> Vec<LayerDesc> {
    cfg.layers
        .iter()
        .zip(shapes)
        .map(|(lc, sh)| {
            let (op, act, bn) = match &lc.kind {
                LayerKind::Convolutional(c) => (Op::Conv, c.activation, c.batch_normalize),
                LayerKind::Route(r) => (Op::Route(r.layers.clone()), Activation::Linear, false),
                LayerKind::Maxpool(_) => (Op::Maxpool, Activation::Linear, false),
                LayerKind::Avgpool => (Op::Avgpool, Activation::Linear, false),
                LayerKind::Upsample { .. } => (Op::Upsample, Activation::Linear, false),
                LayerKind::Shortcut { from, activation } => (Op::Shortcut(from.clone()), *activation, false),
                LayerKind::Reorg { .. } => (Op::Reorg, Activation::Linear, false),
                LayerKind::ScaleChannels { from } => (Op::ScaleChannels(*from), Activation::Linear, false),
                LayerKind::Dropout { .. } => (Op::Dropout, Activation::Linear, false),
                LayerKind::Yolo(_) => (Op::Yolo, Activation::Linear, false),
                LayerKind::Softmax { .. } => (Op::Softmax, Activation::Linear, false),
                LayerKind::Cost { .. } => (Op::Cost, Activation::Linear, false),
            };
            LayerDesc {
                op,
                len: mb.saturating_mul(sh.output.len()),
                in_len: mb.saturating_mul(sh.input.len()),
                linear: act == Activation::Linear,
                bn,
                pre_act: needs_pre_activation(act),
                flops: crate::cfg::layer_bflops(&lc.kind, sh) * 1e9 * mb as f64,
            }
        })
        .collect()
}

/// One planned tensor.
#[derive(Clone, Debug)]
pub struct Tensor {
    pub id: TensorId,
    /// Floats.
    pub len: usize,
    /// Steps (inclusive ranges, ascending, disjoint) in which it holds a value.
    pub intervals: Vec<(usize, usize)>,
    /// Never shares memory and is never zeroed by the plan (gradients Darknet's CPU build never
    /// resets, `DarknetCpuQuirks::stale_layer_grads`).
    pub persistent: bool,
    pub arena: usize,
    /// Floats into its arena.
    pub offset: usize,
}

/// Options of a plan.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlanOptions {
    /// Checkpoint boundaries (layers whose outputs the forward keeps); empty: no checkpointing.
    pub boundaries: Vec<usize>,
    /// Share memory between tensors whose lifetimes do not overlap (off: every tensor has
    /// memory of its own, as without a plan).
    pub reuse: bool,
    /// Keep the gradients of layers Darknet's CPU build never zeroes (route, upsample, …) for
    /// the whole run, unshared and never zeroed.
    pub stale_deltas: bool,
}

/// The activation memory plan of one network.
#[derive(Clone, Debug)]
pub struct ActivationPlan {
    pub steps: Vec<Step>,
    pub tensors: Vec<Tensor>,
    index: HashMap<TensorId, usize>,
    /// Floats of every arena.
    pub arenas: Vec<usize>,
    /// Per step: tensors it reads and writes.
    pub uses: Vec<Vec<(usize, Use)>>,
    /// Per step: gradients to zero before it.
    pub zero: Vec<Vec<usize>>,
    /// Per step: tensors whose value is dead after it.
    pub dies: Vec<Vec<usize>>,
    pub options: PlanOptions,
    /// Forward FLOPs of a training pass, and those its recompute steps add.
    pub forward_flops: f64,
    pub recompute_flops: f64,
    /// Per layer: its GPU ops bind its tensors whole (see [`ActivationPlan::binds_whole`]).
    whole: Vec<bool>,
    /// Per layer: a later layer binds its output and gradient whole.
    read_whole: Vec<bool>,
}

/// Segments of a plan's checkpointing (1 without checkpointing).
pub fn segment_count(plan: &ActivationPlan) -> usize {
    schedule::segment_ends(plan.whole.len(), &plan.options.boundaries).len().max(1)
}

/// Bytes for messages: GiB with two decimals, rounded up (a budget of that size fits), and the
/// exact count.
pub fn bytes_text(bytes: u64) -> String {
    let gib = (bytes as f64 / (1u64 << 30) as f64 * 100.0).ceil() / 100.0;
    format!("{gib:.2} GiB ({bytes} bytes)")
}

/// A byte count written as a number with an optional unit: `6GiB`, `512 MiB`, `1.5GB`, `4096`
/// (B, KB/MB/GB = powers of 1000, KiB/MiB/GiB = powers of 1024; case-insensitive).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = (t[..split].trim(), t[split..].trim());
    let scale: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        _ => return Err(format!("`{s}`: unknown unit `{unit}` (use B, KB, MB, GB, KiB, MiB or GiB)")),
    };
    let v: f64 = num.parse().map_err(|_| format!("`{s}`: expected a size such as 6GiB or 512MiB"))?;
    let bytes = v * scale as f64;
    if !(bytes >= 1.0 && bytes < u64::MAX as f64) {
        return Err(format!("`{s}`: a size must be at least one byte"));
    }
    Ok(bytes as u64)
}

/// The tensors a layer owns: every layer has an output and a gradient.
fn layer_tensors(d: &[LayerDesc], i: usize) -> Vec<TensorKind> {
    let l = &d[i];
    let mut k = vec![TensorKind::Output, TensorKind::Delta];
    if l.bn {
        k.extend([TensorKind::XNorm, TensorKind::ConvOut]);
    }
    if l.pre_act {
        k.push(TensorKind::PreAct);
    }
    if i == 0 && matches!(l.op, Op::ScaleChannels(_)) {
        k.push(TensorKind::DScale);
    }
    k
}

/// Whether Darknet's CPU build zeroes this layer's gradient before a pass (its layers with a
/// `train` flag; [yolo] writes its own in the forward).
fn darknet_zeroes(op: &Op) -> bool {
    matches!(op, Op::Conv | Op::Maxpool | Op::Shortcut(_)) || op.is_loss()
}

impl ActivationPlan {
    /// The plan of the described layers with `options`.
    pub(crate) fn new(d: &[LayerDesc], options: PlanOptions) -> ActivationPlan {
        let steps = schedule::steps(d, &options.boundaries);
        let mut tensors = Vec::new();
        let mut index = HashMap::new();
        for (i, l) in d.iter().enumerate() {
            for kind in layer_tensors(d, i) {
                let id = TensorId { layer: i, kind };
                let persistent = options.stale_deltas && kind == TensorKind::Delta && !darknet_zeroes(&l.op);
                index.insert(id, tensors.len());
                let len = if kind == TensorKind::DScale { l.in_len } else { l.len };
                tensors.push(Tensor { id, len, intervals: Vec::new(), persistent, arena: 0, offset: 0 });
            }
        }
        let uses: Vec<Vec<(usize, Use)>> = steps
            .iter()
            .map(|&s| schedule::uses(d, s).into_iter().map(|(id, u)| (index[&id], u)).collect())
            .collect();
        let (zero, dies) = lifetimes(&mut tensors, &uses);
        let cap = ACTIVATION_ARENA_FLOATS.max(tensors.iter().map(|t| t.len.div_ceil(ALIGN) * ALIGN).max().unwrap_or(0));
        let arenas = place::place(&mut tensors, options.reuse, cap);
        let forward_flops = d.iter().map(|l| l.flops).sum();
        let recompute_flops =
            steps.iter().map(|s| if let Step::Recompute(j) = s { d[*j].flops } else { 0.0 }).sum();
        // What gpu/chunk.rs splits over images: convolutions (with batch norm, bias, activation),
        // maxpool, route, upsample and shortcut. Every other op binds its tensors whole.
        let whole: Vec<bool> =
            d.iter().map(|l| !matches!(l.op, Op::Conv | Op::Route(_) | Op::Maxpool | Op::Upsample | Op::Shortcut(_))).collect();
        // A layer's output (and gradient) is read whole by the next layer when that one binds
        // whole, and by a scale_channels naming it in `from=`, wherever that is.
        let mut read_whole: Vec<bool> = (0..d.len()).map(|i| whole.get(i + 1).copied().unwrap_or(false)).collect();
        for l in d {
            if let Op::ScaleChannels(from) = l.op
                && let Some(r) = read_whole.get_mut(from)
            {
                *r = true;
            }
        }
        ActivationPlan { steps, tensors, index, arenas, uses, zero, dies, options, forward_flops, recompute_flops, whole, read_whole }
    }

    /// The plan of `cfg` for mini-batches of `mb`.
    pub fn of(cfg: &ModelCfg, shapes: &[LayerShape], mb: usize, options: PlanOptions) -> ActivationPlan {
        ActivationPlan::new(&describe(cfg, shapes, mb), options)
    }

    /// Index (in `tensors`) of the tensor `kind` of `layer`, if the layer has one.
    pub fn tensor_index(&self, layer: usize, kind: TensorKind) -> Option<usize> {
        self.index.get(&TensorId { layer, kind }).copied()
    }

    /// Whether an op a GPU does not split over images (a [yolo] head, avgpool, reorg, dropout,
    /// scale_channels, the classifier losses) binds this tensor whole: its own tensors and the
    /// output and gradient of the layer before it (its input). Everything else is bound in
    /// ranges of whole images where it is larger than one binding.
    pub fn binds_whole(&self, id: TensorId) -> bool {
        let whole = |i: usize| self.whole.get(i).copied().unwrap_or(false);
        match id.kind {
            TensorKind::Output | TensorKind::Delta => whole(id.layer) || self.read_whole.get(id.layer).copied().unwrap_or(false),
            TensorKind::DScale => whole(id.layer),
            _ => false,
        }
    }

    /// The tensor `kind` of `layer`, if the layer has one.
    pub fn tensor(&self, layer: usize, kind: TensorKind) -> Option<&Tensor> {
        self.index.get(&TensorId { layer, kind }).map(|&k| &self.tensors[k])
    }

    /// Floats of all arenas.
    pub fn arena_floats(&self) -> usize {
        self.arenas.iter().sum()
    }

    /// The most floats live at one step (what a perfect placement would need).
    pub fn peak_live_floats(&self) -> usize {
        (0..self.steps.len()).map(|s| self.live_at(s).map(|k| self.tensors[k].len).sum::<usize>()).max().unwrap_or(0)
    }

    /// Floats without the plan: every tensor in memory of its own.
    pub fn unshared_floats(&self) -> usize {
        self.tensors.iter().map(|t| t.len).sum()
    }

    /// Tensors holding a value at `step`.
    pub fn live_at(&self, step: usize) -> impl Iterator<Item = usize> + '_ {
        self.tensors
            .iter()
            .enumerate()
            .filter(move |(_, t)| t.persistent || t.intervals.iter().any(|&(a, b)| a <= step && step <= b))
            .map(|(k, _)| k)
    }

    /// Index of the first step of the training backward (the end of its forward) and of the
    /// inference program.
    pub fn forward_end(&self) -> usize {
        self.steps.iter().position(|s| *s == Step::ForwardEnd).unwrap_or(0)
    }
    pub fn infer_start(&self) -> usize {
        self.steps.iter().position(|s| matches!(s, Step::Infer(_) | Step::InferEnd)).unwrap_or(self.steps.len())
    }

    /// Floats each layer keeps from its forward for the backward (live at the end of the
    /// training forward), by layer.
    pub fn kept_floats(&self) -> Vec<usize> {
        let n = self.tensors.iter().map(|t| t.id.layer + 1).max().unwrap_or(0);
        let mut kept = vec![0; n];
        for k in self.live_at(self.forward_end()) {
            kept[self.tensors[k].id.layer] += self.tensors[k].len;
        }
        kept
    }

    /// Proves the plan sound: every tensor inside its arena and aligned, every tensor a step
    /// uses alive at that step, gradients zeroed only where a lifetime starts, and no two
    /// tensors alive at the same step overlapping in memory.
    pub fn check(&self) -> Result<(), String> {
        let name = |k: usize| {
            let t = &self.tensors[k];
            format!("layer {} {}", t.id.layer, t.id.kind.name())
        };
        for (k, t) in self.tensors.iter().enumerate() {
            if t.arena >= self.arenas.len() || t.offset + t.len > self.arenas[t.arena] || t.offset % ALIGN != 0 {
                return Err(format!("{} at arena {} offset {} (+{}) is outside or misaligned", name(k), t.arena, t.offset, t.len));
            }
        }
        for (s, step) in self.steps.iter().enumerate() {
            let mut live: Vec<usize> = self.live_at(s).collect();
            for &(k, _) in &self.uses[s] {
                if !live.contains(&k) {
                    return Err(format!("step {s} ({step:?}) uses {} outside its lifetime", name(k)));
                }
            }
            for &k in &self.zero[s] {
                let t = &self.tensors[k];
                if t.id.kind != TensorKind::Delta || !t.intervals.iter().any(|i| i.0 == s) {
                    return Err(format!("step {s} zeroes {} where no gradient lifetime starts", name(k)));
                }
            }
            live.sort_by_key(|&k| (self.tensors[k].arena, self.tensors[k].offset));
            for w in live.windows(2) {
                let (a, b) = (&self.tensors[w[0]], &self.tensors[w[1]]);
                if a.arena == b.arena && a.len > 0 && b.len > 0 && a.offset + a.len > b.offset {
                    return Err(format!("step {s} ({step:?}): {} and {} are both alive and overlap", name(w[0]), name(w[1])));
                }
            }
        }
        Ok(())
    }
}

/// Live intervals of every tensor from the steps' uses; returns, per step, the gradients to
/// zero before it and the tensors that die after it. A write starts a new interval (the value
/// before it is dead from its last read on); a read extends the open one. A gradient used before
/// any write is zeroed first (accumulators start at zero); any other tensor read before a write
/// is a bug in the schedule.
fn lifetimes(tensors: &mut [Tensor], uses: &[Vec<(usize, Use)>]) -> (Vec<Vec<usize>>, Vec<Vec<usize>>) {
    let steps = uses.len();
    let mut zero = vec![Vec::new(); steps];
    let mut open: Vec<Option<(usize, usize)>> = vec![None; tensors.len()];
    for (s, step_uses) in uses.iter().enumerate() {
        for &(k, u) in step_uses {
            let t = &mut tensors[k];
            if t.persistent {
                continue;
            }
            match (u, open[k]) {
                (Use::Write, Some((a, b))) if b < s => {
                    t.intervals.push((a, b));
                    open[k] = Some((s, s));
                }
                (_, Some((a, _))) => open[k] = Some((a, s)),
                (Use::Write, None) => open[k] = Some((s, s)),
                (_, None) => {
                    assert_eq!(t.id.kind, TensorKind::Delta, "plan: step {s} reads {:?} before any write", t.id);
                    zero[s].push(k);
                    open[k] = Some((s, s));
                }
            }
        }
    }
    for (k, t) in tensors.iter_mut().enumerate() {
        if t.persistent {
            t.intervals = vec![(0, steps.saturating_sub(1))];
        } else if let Some(i) = open[k] {
            t.intervals.push(i);
        }
    }
    let mut dies = vec![Vec::new(); steps];
    for (k, t) in tensors.iter().enumerate() {
        if !t.persistent {
            for &(_, b) in &t.intervals {
                dies[b].push(k);
            }
        }
    }
    (zero, dies)
}
