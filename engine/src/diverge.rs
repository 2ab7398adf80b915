//! Lockstep divergence localisation (`runner diverge`): two trainers of one network, one weight
//! set and the same batches; after each iteration every layer's forward output, gradients and
//! updated parameters of one are compared with the other's, in execution order, so the first
//! tensor past the tolerance names where the two part.
//!
//! Everything here reads back through [`Backend::download`]: a diagnostic, not a training path.

use crate::backend::Backend;
use crate::cpu::pool::argmax;
use crate::cpu::yolo::CLASS_MATCH_THRESH;
use crate::network::{LayerOp, LayerTensor, Network, TensorPhase};
use crate::shapes::{PoolShape, YoloParams};
use crate::train::{PendingUpdate, StepRecord, TrainError, Trainer};
use crate::yolo::{Layout, box_iou, get_yolo_box};
use crate::yolo::boxes::BBox;

/// The per-tensor parity tolerance of the project's whole-network test
/// (`engine/tests/gpu_network.rs`: every parameter gradient and every parameter after an SGD or
/// Adam step within ‖gpu − cpu‖ / ‖cpu‖ < 1e-3). Loss gates are looser (1e-2 per iteration), but
/// a tensor that parts by more than the network test allows is where a loss curve will part.
pub const DEFAULT_TOLERANCE: f64 = 1e-3;

/// Floor of a reference norm in the relative difference (as the parity tests' `rel_norm_diff`
/// and the loss deltas' `REL_DELTA_EPS`).
pub const TINY: f64 = 1e-12;

/// A comparison that cannot be made: the two snapshots are of different networks.
#[derive(Debug, thiserror::Error)]
pub enum DivergeError {
    #[error("the two networks differ: {a} layers vs {b}")]
    LayerCount { a: usize, b: usize },
    #[error("layer {layer} {tensor}: {a} elements vs {b}")]
    TensorLength { layer: usize, tensor: &'static str, a: usize, b: usize },
    #[error(transparent)]
    Train(#[from] TrainError),
}

/// One layer's downloaded tensors and, where the layer is a known source of legitimate
/// divergence, what decides it (computed on the host from the downloaded tensors).
#[derive(Clone, Debug, Default)]
pub struct LayerSnapshot {
    pub kind: &'static str,
    pub tensors: Vec<LayerTensor>,
    /// [maxpool]: the input index each window picked (`u32::MAX`: a window of padding only).
    pub argmax: Option<Vec<u32>>,
    /// [yolo]: per prediction, whether its best IoU with a truth is above ignore_thresh.
    pub ignored: Option<Vec<bool>>,
}

/// Every layer of one network at one point of an iteration.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub layers: Vec<LayerSnapshot>,
}

impl Snapshot {
    /// Downloads the tensors of `phases` of every layer of `net`.
    pub fn capture<B: Backend>(net: &Network<B>, phases: &[TensorPhase]) -> Snapshot {
        let b = &net.backend;
        let truths = phases.contains(&TensorPhase::Forward).then(|| b.download(&net.truths));
        let mut layers: Vec<LayerSnapshot> = Vec::with_capacity(net.layers.len());
        for (i, l) in net.layers.iter().enumerate() {
            let tensors: Vec<LayerTensor> = phases.iter().flat_map(|&p| net.layer_tensors(i, p)).collect();
            let mut s = LayerSnapshot { kind: l.kind_name(), tensors, ..Default::default() };
            if let Some(truths) = &truths {
                match &l.op {
                    LayerOp::Maxpool(shape) => {
                        let input = match i {
                            0 => b.download(&net.input),
                            _ => b.download(&net.layers[i - 1].output),
                        };
                        s.argmax = Some(window_argmax(&input, shape));
                    }
                    LayerOp::Yolo { params, .. } => s.ignored = Some(ignore_flags(&b.download(&l.output), truths, params)),
                    _ => {}
                }
            }
            layers.push(s);
        }
        Snapshot { layers }
    }

    /// Adds the tensors of a later capture of the same network (the update phase).
    pub fn extend(&mut self, later: Snapshot) {
        for (mine, theirs) in self.layers.iter_mut().zip(later.layers) {
            mine.tensors.extend(theirs.tensors);
            mine.argmax = mine.argmax.take().or(theirs.argmax);
            mine.ignored = mine.ignored.take().or(theirs.ignored);
        }
    }
}

/// The argmax of every window of a maxpool input (the CPU op's rule: first strict maximum).
fn window_argmax(input: &[f32], s: &PoolShape) -> Vec<u32> {
    let plane = s.h * s.w;
    let mut out = Vec::with_capacity(s.output_len());
    for p in input.chunks_exact(plane).take(s.batch * s.c) {
        for oy in 0..s.out_h {
            for ox in 0..s.out_w {
                out.push(argmax(p, s, oy, ox).1.map_or(u32::MAX, |i| i as u32));
            }
        }
    }
    out
}

/// Per prediction (image, anchor, cell) of a [yolo] head's activated output: is its best IoU
/// with a truth of a class it predicts above ignore_thresh? The rule of the head's first loop
/// (`cpu/yolo.rs`), where a flip turns an objectness gradient on or off.
fn ignore_flags(out: &[f32], truths: &[f32], p: &YoloParams) -> Vec<bool> {
    let l = Layout::new(p);
    let mut flags = Vec::with_capacity(p.batch * p.mask.len() * l.wh);
    for b in 0..p.batch {
        let boxes: Vec<BBox> = (0..p.max_boxes)
            .filter_map(|t| truths.get((b * p.max_boxes + t) * 5..(b * p.max_boxes + t + 1) * 5))
            .take_while(|v| v[0] != 0.0)
            .filter(|v| v[4] >= 0.0 && (v[4] as i64) < p.classes as i64)
            .map(|v| BBox::new(v[0], v[1], v[2], v[3]))
            .collect();
        for n in 0..p.mask.len() {
            for cell in 0..l.wh {
                let (i, j) = (cell % p.w, cell / p.w);
                let pred = get_yolo_box(out, p.anchors[p.mask[n]], l.entry(b, n, 0, cell), i, j, p, l.wh);
                let class_match = (0..p.classes).any(|c| out[l.entry(b, n, 5 + c, cell)] > CLASS_MATCH_THRESH);
                let best = if class_match { boxes.iter().map(|t| box_iou(pred, *t)).fold(0.0f32, f32::max) } else { 0.0 };
                flags.push(best > p.ignore_thresh);
            }
        }
    }
    flags
}

/// One tensor of one layer compared between the two networks.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorDiff {
    pub layer: usize,
    pub layer_type: &'static str,
    pub phase: TensorPhase,
    pub tensor: &'static str,
    /// ‖a − b‖ / max(‖a‖, TINY), `a` the reference (first) network.
    pub rel_diff: f64,
    pub max_abs_diff: f64,
    /// Elements with |a − b| > tolerance · max(|a|, rms(a)): the rms floor keeps elements near
    /// zero, where any rounding is a large relative change, from being counted.
    pub n_outside: usize,
    pub n: usize,
}

impl TensorDiff {
    /// Past the tolerance (a NaN difference is).
    pub fn exceeds(&self, tolerance: f64) -> bool {
        self.rel_diff.is_nan() || self.rel_diff > tolerance
    }
}

/// A known, legitimate source of divergence, counted where it happened.
#[derive(Clone, Debug, PartialEq)]
pub struct KnownSource {
    pub layer: usize,
    pub layer_type: &'static str,
    /// "argmax flips" (maxpool windows whose winner differs) or "ignore flips" (yolo predictions
    /// whose best IoU is on different sides of ignore_thresh).
    pub what: &'static str,
    pub count: usize,
    pub n: usize,
}

/// Every tensor of two snapshots compared, in execution order.
#[derive(Clone, Debug, Default)]
pub struct Comparison {
    pub tolerance: f64,
    /// Forward in layer order, backward in reverse layer order, update in layer order.
    pub diffs: Vec<TensorDiff>,
    pub known: Vec<KnownSource>,
}

impl Comparison {
    /// The first tensor, in execution order, past the tolerance.
    pub fn first_divergence(&self) -> Option<&TensorDiff> {
        self.diffs.iter().find(|d| d.exceeds(self.tolerance))
    }
}

/// Compares two snapshots of the same network; `a` is the reference.
pub fn compare(a: &Snapshot, b: &Snapshot, tolerance: f64) -> Result<Comparison, DivergeError> {
    if a.layers.len() != b.layers.len() {
        return Err(DivergeError::LayerCount { a: a.layers.len(), b: b.layers.len() });
    }
    let mut c = Comparison { tolerance, ..Default::default() };
    let n = a.layers.len();
    let order = TensorPhase::ALL.into_iter().flat_map(|p| {
        let layers: Box<dyn Iterator<Item = usize>> = if p == TensorPhase::Backward { Box::new((0..n).rev()) } else { Box::new(0..n) };
        layers.map(move |i| (p, i))
    });
    for (phase, i) in order {
        let (la, lb) = (&a.layers[i], &b.layers[i]);
        for (ta, tb) in la.tensors.iter().zip(&lb.tensors).filter(|(t, _)| t.phase == phase) {
            if ta.data.len() != tb.data.len() {
                return Err(DivergeError::TensorLength { layer: i, tensor: ta.name, a: ta.data.len(), b: tb.data.len() });
            }
            c.diffs.push(diff(i, la.kind, ta, &tb.data, tolerance));
        }
    }
    for (i, (la, lb)) in a.layers.iter().zip(&b.layers).enumerate() {
        if let (Some(x), Some(y)) = (&la.argmax, &lb.argmax) {
            let count = x.iter().zip(y).filter(|(p, q)| p != q).count();
            c.known.push(KnownSource { layer: i, layer_type: la.kind, what: "argmax flips", count, n: x.len() });
        }
        if let (Some(x), Some(y)) = (&la.ignored, &lb.ignored) {
            let count = x.iter().zip(y).filter(|(p, q)| p != q).count();
            c.known.push(KnownSource { layer: i, layer_type: la.kind, what: "ignore flips", count, n: x.len() });
        }
    }
    Ok(c)
}

fn diff(layer: usize, layer_type: &'static str, a: &LayerTensor, b: &[f32], tolerance: f64) -> TensorDiff {
    let (mut num, mut den, mut max_abs) = (0.0f64, 0.0f64, 0.0f64);
    for (&x, &y) in a.data.iter().zip(b) {
        let d = (x as f64 - y as f64).abs();
        num += d * d;
        den += (x as f64) * (x as f64);
        // NaN must win the maximum.
        max_abs = if d.is_nan() || max_abs.is_nan() { f64::NAN } else { max_abs.max(d) };
    }
    let n = a.data.len();
    let rms = (den / n.max(1) as f64).sqrt();
    let n_outside = a
        .data
        .iter()
        .zip(b)
        .filter(|&(&x, &y)| {
            let d = (x as f64 - y as f64).abs();
            d.is_nan() || d > tolerance * (x.abs() as f64).max(rms)
        })
        .count();
    TensorDiff { layer, layer_type, phase: a.phase, tensor: a.name, rel_diff: num.sqrt() / den.sqrt().max(TINY), max_abs_diff: max_abs, n_outside, n }
}

/// A trainer the lockstep can drive, whatever its backend (object safe, so a caller can hold
/// two different backends side by side).
pub trait Probe {
    fn gradients(&mut self, images: &[f32], truths: &[f32]) -> Result<PendingUpdate, TrainError>;
    fn apply_update(&mut self, pending: PendingUpdate) -> Result<StepRecord, TrainError>;
    fn capture(&self, phases: &[TensorPhase]) -> Snapshot;
}

impl<B: Backend> Probe for Trainer<B> {
    fn gradients(&mut self, images: &[f32], truths: &[f32]) -> Result<PendingUpdate, TrainError> {
        Trainer::gradients(self, images, truths)
    }
    fn apply_update(&mut self, pending: PendingUpdate) -> Result<StepRecord, TrainError> {
        Trainer::apply_update(self, pending)
    }
    fn capture(&self, phases: &[TensorPhase]) -> Snapshot {
        Snapshot::capture(&self.net, phases)
    }
}

/// One lockstep iteration: what each trainer's step returned and the comparison.
pub struct Lockstep {
    /// The two steps' results (an update may fail — a non-finite state — after the tensors the
    /// comparison needs were taken).
    pub steps: [Result<StepRecord, TrainError>; 2],
    pub comparison: Comparison,
}

/// One iteration of both trainers on the same batch, compared before (forward, backward) and
/// after (update) the optimiser update. `a` is the reference.
pub fn lockstep(a: &mut dyn Probe, b: &mut dyn Probe, images: &[f32], truths: &[f32], tolerance: f64) -> Result<Lockstep, DivergeError> {
    let pa = a.gradients(images, truths)?;
    let pb = b.gradients(images, truths)?;
    let mut sa = a.capture(&[TensorPhase::Forward, TensorPhase::Backward]);
    let mut sb = b.capture(&[TensorPhase::Forward, TensorPhase::Backward]);
    let steps = [a.apply_update(pa), b.apply_update(pb)];
    sa.extend(a.capture(&[TensorPhase::Update]));
    sb.extend(b.capture(&[TensorPhase::Update]));
    Ok(Lockstep { steps, comparison: compare(&sa, &sb, tolerance)? })
}
