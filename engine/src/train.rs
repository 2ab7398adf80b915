//! The training step: subdivisions × (forward + loss + backward), then one optimiser update,
//! with one readback of the per-head statistics. No printing here: the caller gets a
//! [`StepRecord`] and decides what to show.

use std::time::Instant;

use crate::backend::Backend;
use crate::lr::learning_rate;
use crate::network::pass::Update;
use crate::network::{LayerOp, Mode, Network, NetworkError, TensorPhase};
use crate::profile::{DispatchTime, Phase, Scope};
use crate::yolo_stats as ys;

/// Which optimiser a trainer runs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Optimizer {
    Sgd,
    Adam,
}

/// Per-head statistics of one step (summed over subdivisions).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HeadRecord {
    pub layer: usize,
    /// Darknet's layer cost summed over the step's passes.
    pub cost: f64,
    pub class_loss: f64,
    pub box_loss: f64,
    pub obj_loss: f64,
    pub cls_only_loss: f64,
    pub avg_iou: f64,
    pub count: f64,
    pub recall50: f64,
    pub recall75: f64,
}

/// What one training step returns.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepRecord {
    /// 1-based iteration this step performed.
    pub iteration: u64,
    /// Darknet's printed loss: the mean over the loss layers ([yolo] heads, or a classifier's softmax and [cost]) of their cost, ÷ full batch (per image).
    pub loss: f64,
    /// The loss's parts on the loss's own scale (mean over heads, ÷ full batch), so that
    /// `box_loss + obj_loss + class_loss == loss`: box part of the cost, objectness Σδ², class Σδ².
    pub box_loss: f64,
    pub obj_loss: f64,
    pub class_loss: f64,
    pub avg_iou: f64,
    pub recall50: f64,
    pub recall75: f64,
    pub count: f64,
    pub lr: f32,
    /// The loss scale this step ran with (dynamic loss scaling only).
    pub loss_scale: Option<f32>,
    /// The step's scaled gradients overflowed: its update was undone on the device and the
    /// scale halved (dynamic loss scaling only).
    pub skipped: bool,
    pub heads: Vec<HeadRecord>,
    /// Host seconds spent in each phase: on the CPU the work itself; on a GPU the recording of
    /// the phase's dispatches, with the device's execution in `t_sync` (the one wait per step).
    pub t_forward: f64,
    pub t_backward: f64,
    pub t_update: f64,
    pub t_sync: f64,
    /// Of `t_forward`, the seconds spent handing the batch to the backend (`set_input`: on a GPU
    /// the copy into the upload staging memory); 0 for a micro-batch [`Trainer::step_staging`]
    /// staged during the step before.
    pub t_upload: f64,
    /// The seconds [`Trainer::step_staging`] spent staging the next step's input while the device
    /// ran this step: after the submission, before the wait (not part of `t_sync`).
    pub t_staged: f64,
    /// Device time of every kernel launch of the step, where the backend measures it (GPU
    /// timestamps); empty otherwise.
    pub timings: Vec<DispatchTime>,
}

impl StepRecord {
    /// Device seconds of the step's launches in `phase` (0 without timings).
    pub fn device_seconds(&self, phase: Phase) -> f64 {
        self.timings.iter().filter(|t| t.scope.phase == phase).map(|t| t.seconds).sum()
    }
}

/// Errors of a training step.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Network(#[from] NetworkError),
    #[error("iteration {iteration}: the loss became {loss}; first non-finite value in layer {layer} ({kind}) {what}")]
    NonFinite { iteration: u64, loss: f64, layer: usize, kind: &'static str, what: &'static str },
    #[error("iteration {iteration}: the loss became {loss} (no layer output or gradient is non-finite: the loss itself overflowed)")]
    NonFiniteLoss { iteration: u64, loss: f64 },
    /// The loss stayed finite but the update left a parameter, BN running statistic or optimiser
    /// buffer non-finite (training diverged): found by the per-step check.
    #[error("iteration {iteration}: training diverged: layer {layer} ({kind}) {tensor} holds {count} non-finite value(s) (NaN or Inf) after the update, although the loss ({loss}) is finite; lower the learning rate")]
    NonFiniteState { iteration: u64, loss: f64, layer: usize, kind: &'static str, tensor: String, count: usize },
    #[error("batch has {got_floats} floats, the step needs {expected_floats}: {expected} images of {channels}×{height}×{width} (batch × subdivisions images, channels × height × width floats each)")]
    BatchSize { got_floats: usize, expected_floats: usize, expected: usize, channels: usize, height: usize, width: usize },
    #[error("the model has no loss layer ([yolo], [softmax] or [cost]): there is nothing to train")]
    NoLossLayer,
}

/// A step between [`Trainer::gradients`] and [`Trainer::apply_update`].
#[must_use = "the step is finished only by Trainer::apply_update"]
#[derive(Debug)]
pub struct PendingUpdate {
    iteration: u64,
    lr: f32,
    t_forward: f64,
    t_backward: f64,
    t_upload: f64,
}

/// A step whose read-back has started (`Trainer::start_update`).
struct StartedUpdate {
    pending: PendingUpdate,
    t_update: f64,
    /// Host seconds of the submission.
    t_submit: f64,
    stats: crate::backend::Download,
}

/// Dynamic loss scaling, for mixed precision (where small gradients would underflow f16): the
/// loss layers' gradients are multiplied by `scale` before the backward and every parameter
/// gradient divided by it before the update. The scale is a power of two, so in fp32 both
/// multiplications are exact and training is bit-identical to training without scaling. When
/// the step leaves any state non-finite (the scaled gradients overflowed) the device restores
/// the state from before the step (BN running statistics and SGD momentum included), the step
/// counts as skipped and the scale halves; after `growth_interval` clean steps it doubles.
/// At a scale of 1 a non-finite state is divergence, reported as without scaling.
#[derive(Clone, Debug, PartialEq)]
pub struct LossScale {
    /// The scale of the next step (a power of two, ≥ 1).
    pub scale: f32,
    /// Clean steps after which the scale doubles.
    pub growth_interval: u32,
    /// Clean steps since the last change.
    pub clean: u32,
    /// Steps skipped so far.
    pub skipped: u64,
}

impl LossScale {
    /// The usual start: 2^16, doubling after 2000 clean steps.
    pub fn dynamic() -> LossScale {
        LossScale { scale: 65536.0, growth_interval: 2000, clean: 0, skipped: 0 }
    }

    /// The largest scale: doubling stops here (2^24, well inside f32 for gradients of order 1).
    pub const MAX: f32 = 16_777_216.0;

    /// After a step: halve on overflow (true when skipped), else count it and double after
    /// `growth_interval` clean steps.
    fn after_step(&mut self, overflowed: bool) -> bool {
        if overflowed && self.scale > 1.0 {
            self.scale = (self.scale * 0.5).max(1.0);
            self.clean = 0;
            self.skipped += 1;
            return true;
        }
        self.clean += 1;
        if self.clean >= self.growth_interval {
            self.scale = (self.scale * 2.0).min(Self::MAX);
            self.clean = 0;
        }
        false
    }
}

/// Drives a [`Network`] through Darknet's training iterations.
pub struct Trainer<B: Backend> {
    pub net: Network<B>,
    pub optimizer: Optimizer,
    /// Iterations completed (Darknet's `cur_iteration`).
    pub iteration: u64,
    /// Dynamic loss scaling: on when the network was built with
    /// [`crate::network::BuildOptions::loss_scaling`].
    pub loss_scale: Option<LossScale>,
    /// The next step's first micro-batch is already uploaded ([`Trainer::step_staging`]).
    staged: bool,
}

impl<B: Backend> Trainer<B> {
    pub fn new(net: Network<B>, optimizer: Optimizer) -> Trainer<B> {
        let loss_scale = net.overflow_flag.is_some().then(LossScale::dynamic);
        Trainer { net, optimizer, iteration: 0, loss_scale, staged: false }
    }

    /// Images one step consumes (the cfg's `batch`).
    pub fn step_images(&self) -> usize {
        self.net.mini_batch * self.net.subdivisions
    }

    /// One iteration on `images` (`[batch][c][h][w]`) and `truths` (`[batch][max_boxes][5]`).
    pub fn step(&mut self, images: &[f32], truths: &[f32]) -> Result<StepRecord, TrainError> {
        let pending = self.gradients(images, truths)?;
        self.apply_update(pending)
    }

    /// One [`Trainer::step`] per batch of `batches`, in order, each record handed to `each`
    /// (whose error ends the run). While the device runs a step, the host uploads the next
    /// batch's first micro-batch (on a GPU: converts and copies it into staging memory, the copy
    /// to the device recorded ahead of that step's work), instead of doing it while the device
    /// waits. The work recorded, and so every result, is that of the plain steps; the staging
    /// time is the record's `t_staged`.
    pub fn run_steps<'a>(
        &mut self, batches: impl IntoIterator<Item = (&'a [f32], &'a [f32])>, mut each: impl FnMut(StepRecord) -> Result<(), TrainError>,
    ) -> Result<(), TrainError> {
        let mut batches = batches.into_iter().peekable();
        while let Some((images, truths)) = batches.next() {
            let rec = self.step_staging(images, truths, batches.peek().copied())?;
            if let Err(e) = each(rec) {
                // Whatever was staged belonged to the run that ended.
                self.staged = false;
                return Err(e);
            }
        }
        Ok(())
    }

    /// [`Trainer::step`] on `images` and `truths`, uploading `next` (the batch the following
    /// step will take) while the device runs this one, as [`Trainer::run_steps`] does. The call
    /// after it must be the step on `next`: other work on the network's input in between (an
    /// evaluation) would overwrite what was staged. On an error nothing stays staged.
    pub fn step_staging(&mut self, images: &[f32], truths: &[f32], next: Option<(&[f32], &[f32])>) -> Result<StepRecord, TrainError> {
        let run = (|| {
            let pending = self.gradients(images, truths)?;
            let started = self.start_update(pending);
            let t0 = Instant::now();
            if let Some((images, truths)) = next {
                self.stage_input(images, truths)?;
            }
            let t_staged = t0.elapsed().as_secs_f64();
            let mut rec = self.finish_update(started)?;
            rec.t_staged = t_staged;
            Ok(rec)
        })();
        if run.is_err() {
            self.staged = false;
        }
        run
    }

    /// Uploads the first micro-batch of `images` and `truths` for the next step.
    fn stage_input(&mut self, images: &[f32], truths: &[f32]) -> Result<(), TrainError> {
        self.check_batch(images, truths)?;
        let net = &self.net;
        let (per_img, per_truth) = net.per_image();
        let mb = net.mini_batch;
        net.set_input(&images[..mb * per_img], &truths[..mb * per_truth])?;
        self.staged = true;
        Ok(())
    }

    /// A step's batch is `step_images` images and their truths.
    fn check_batch(&self, images: &[f32], truths: &[f32]) -> Result<(), TrainError> {
        let net = &self.net;
        let (per_img, per_truth) = net.per_image();
        let n = self.step_images();
        if net.heads.is_empty() {
            return Err(TrainError::NoLossLayer);
        }
        if images.len() != n * per_img || truths.len() != n * per_truth {
            let c = &net.cfg.net;
            return Err(TrainError::BatchSize {
                got_floats: images.len(),
                expected_floats: n * per_img,
                expected: n,
                channels: c.channels,
                height: c.height,
                width: c.width,
            });
        }
        Ok(())
    }

    /// The first half of [`Trainer::step`]: every micro-batch's forward, loss and backward,
    /// leaving the summed parameter gradients in place. A caller may read the network's tensors
    /// (`Network::layer_tensors`) before finishing the step with [`Trainer::apply_update`]; the
    /// two calls record exactly the work of one `step`, so the results are the same.
    pub fn gradients(&mut self, images: &[f32], truths: &[f32]) -> Result<PendingUpdate, TrainError> {
        let mut staged = std::mem::take(&mut self.staged);
        self.check_batch(images, truths)?;
        let net = &self.net;
        let (per_img, per_truth) = net.per_image();
        let iteration = self.iteration + 1;
        let lr = learning_rate(&net.cfg.net, iteration);
        let mb = net.mini_batch;
        let scale = self.loss_scale.as_ref().map(|l| l.scale);
        if let Some(s) = scale {
            // The state as it was, for the device to restore if the step overflows; SGD's
            // momentum in the gradient buffers is scaled with the gradients that add to it.
            let b = &net.backend;
            b.set_scope(Scope::network(Phase::Update));
            for (arena, shadow) in net.state_arenas.iter().zip(&net.shadow_arenas) {
                b.copy(arena, shadow);
            }
            for p in net.params() {
                b.scal(s, &p.grad);
            }
        }
        let (mut t_forward, mut t_backward, mut t_upload) = (0.0, 0.0, 0.0);
        for pass in 0..net.subdivisions {
            let t0 = Instant::now();
            let r = pass * mb..(pass + 1) * mb;
            // step_staging uploaded the first micro-batch while the step before ran.
            if !std::mem::take(&mut staged) {
                net.set_input(&images[r.start * per_img..r.end * per_img], &truths[r.start * per_truth..r.end * per_truth])?;
                t_upload += t0.elapsed().as_secs_f64();
            }
            net.forward(Mode::Train, pass, iteration);
            if let Some(s) = scale {
                // The loss layers wrote their gradients in the forward; everything below is
                // linear in them.
                net.backend.set_scope(Scope::network(Phase::Loss));
                for &h in &net.heads {
                    net.backend.scal(s, &net.layers[h].delta);
                }
            }
            let t1 = Instant::now();
            net.backward(iteration);
            t_forward += (t1 - t0).as_secs_f64();
            t_backward += t1.elapsed().as_secs_f64();
        }
        if let Some(s) = scale {
            net.backend.set_scope(Scope::network(Phase::Update));
            for p in net.params() {
                net.backend.scal(1.0 / s, &p.grad);
            }
        }
        if let Some(f) = net.fault {
            net.inject_fault(f.layer, TensorPhase::Backward);
        }
        Ok(PendingUpdate { iteration, lr, t_forward, t_backward, t_upload })
    }

    /// The second half of [`Trainer::step`]: the optimiser update, the state check and the
    /// step's one readback.
    pub fn apply_update(&mut self, pending: PendingUpdate) -> Result<StepRecord, TrainError> {
        let started = self.start_update(pending);
        self.finish_update(started)
    }

    /// [`Trainer::apply_update`] up to the read-back, which it starts (on a GPU: submits the
    /// step) without waiting for it.
    fn start_update(&mut self, pending: PendingUpdate) -> StartedUpdate {
        let PendingUpdate { iteration, lr, .. } = pending;
        let net = &self.net;
        let b = &net.backend;
        let n = self.step_images();
        let t2 = Instant::now();
        let c = &net.cfg.net;
        let update = match self.optimizer {
            Optimizer::Sgd => Update::Sgd { lr, momentum: c.momentum, decay: c.decay },
            Optimizer::Adam => Update::Adam { lr, b1: c.b1, b2: c.b2, eps: c.eps, decay: c.decay, t: iteration as u32 },
        };
        net.update(update, n as f32);
        // Divergence that keeps the loss finite (an Inf running variance, an exploding Adam
        // moment) shows only in the state: one reduction per state arena (two dispatches on a
        // GPU) writes a flag beside the statistics, read back with them.
        for (k, arena) in net.state_arenas.iter().enumerate() {
            b.nonfinite_into(arena, &net.stats, net.health_slot + k);
        }
        // Loss scaling above 1: a flagged step restores the state saved before it, on the device.
        // At 1 the state stays as the step left it, for the divergence report below.
        if let (Some(ls), Some(flag)) = (&self.loss_scale, &net.overflow_flag)
            && ls.scale > 1.0
        {
            let flags = b.view(&net.stats, net.health_slot, net.state_arenas.len());
            b.sum_into(&flags, flag, 0);
            for (arena, shadow) in net.state_arenas.iter().zip(&net.shadow_arenas) {
                b.copy_if_flagged(flag, shadow, arena);
            }
        }
        let t3 = Instant::now();
        // The only read of the step. On a GPU it submits everything recorded in the step, the
        // uploads of every pass's input included, in one submission; finish_update waits, so
        // `t_sync` holds the device's execution time (less what the host did in between).
        let stats = b.download_start(&net.stats);
        let t_submit = t3.elapsed().as_secs_f64();
        StartedUpdate { pending, t_update: (t3 - t2).as_secs_f64(), t_submit, stats }
    }

    /// The rest of [`Trainer::apply_update`]: waits for the read-back and checks the step.
    fn finish_update(&mut self, started: StartedUpdate) -> Result<StepRecord, TrainError> {
        let StartedUpdate { pending, t_update, t_submit, stats } = started;
        let PendingUpdate { iteration, lr, t_forward, t_backward, t_upload } = pending;
        let net = &self.net;
        let b = &net.backend;
        let t4 = Instant::now();
        let stats = stats.wait();
        let t_sync = t_submit + t4.elapsed().as_secs_f64();
        // Timestamps were resolved in the same submission: reading them waits for nothing more.
        let timings = b.take_timings().unwrap_or_default();
        b.set_scope(Scope::NONE);
        let mut rec = self.record(&stats, iteration, lr);
        rec.t_forward = t_forward;
        rec.t_backward = t_backward;
        rec.t_upload = t_upload;
        rec.t_update = t_update;
        rec.t_sync = t_sync;
        rec.timings = timings;
        self.iteration = iteration;
        if !rec.loss.is_finite() {
            return Err(self.diagnose_nonfinite(iteration, &rec));
        }
        let flagged = stats[net.health_slot..].iter().any(|&f| f != 0.0);
        if let Some(ls) = &mut self.loss_scale {
            rec.loss_scale = Some(ls.scale);
            rec.skipped = ls.after_step(flagged);
            if rec.skipped {
                return Ok(rec);
            }
        }
        if flagged {
            return Err(self.diagnose_state(iteration, rec.loss));
        }
        Ok(rec)
    }

    /// Slow path, only after the state check raised a flag: the first conv layer and tensor
    /// (in layer order) holding a non-finite value, and how many it holds.
    fn diagnose_state(&self, iteration: u64, loss: f64) -> TrainError {
        let b = &self.net.backend;
        for (layer, l) in self.net.layers.iter().enumerate() {
            let LayerOp::Conv(c) = &l.op else { continue };
            // SGD keeps its momentum in the gradient buffer (Darknet's `*_updates`).
            let grad = if self.optimizer == Optimizer::Sgd { "momentum" } else { "gradient" };
            let mut tensors: Vec<(String, &B::Buf)> = Vec::new();
            for (name, p) in [("weights", &c.weights), ("biases", &c.biases)]
                .into_iter()
                .chain(c.bn.as_ref().map(|bn| ("scales", &bn.scales)))
            {
                tensors.push((name.to_string(), &p.value));
                tensors.push((format!("{name} {grad}"), &p.grad));
                if let Some((m, v)) = &p.adam {
                    tensors.push((format!("{name} Adam first moment"), m));
                    tensors.push((format!("{name} Adam second moment"), v));
                }
            }
            if let Some(bn) = &c.bn {
                tensors.push(("rolling_mean".into(), &bn.rolling_mean));
                tensors.push(("rolling_variance".into(), &bn.rolling_variance));
            }
            for (tensor, buf) in tensors {
                let count = b.download(buf).iter().filter(|v| !v.is_finite()).count();
                if count > 0 {
                    return TrainError::NonFiniteState { iteration, loss, layer, kind: l.kind_name(), tensor, count };
                }
            }
        }
        // A flag without a culprit cannot happen (the arenas hold exactly these tensors).
        TrainError::NonFiniteState { iteration, loss, layer: 0, kind: "conv", tensor: "state".into(), count: 0 }
    }

    /// Sum the per-pass statistics into a record.
    fn record(&self, stats: &[f32], iteration: u64, lr: f32) -> StepRecord {
        let net = &self.net;
        let heads = net.heads.len();
        let batch = self.step_images() as f64;
        let mut rec = StepRecord { iteration, lr, ..Default::default() };
        for (h, &layer) in net.heads.iter().enumerate() {
            let mut hr = HeadRecord { layer, ..Default::default() };
            let mut iou_sum = 0.0;
            for pass in 0..net.subdivisions {
                let s = &stats[(pass * heads + h) * ys::STATS_LEN..][..ys::STATS_LEN];
                hr.cost += s[ys::COST] as f64;
                hr.class_loss += s[ys::CLASS_LOSS] as f64;
                hr.box_loss += s[ys::BOX_LOSS] as f64;
                hr.obj_loss += s[ys::OBJ_LOSS] as f64;
                hr.cls_only_loss += s[ys::CLS_ONLY_LOSS] as f64;
                hr.count += s[ys::COUNT] as f64;
                hr.recall50 += s[ys::RECALL50] as f64;
                hr.recall75 += s[ys::RECALL75] as f64;
                iou_sum += s[ys::IOU_SUM] as f64;
            }
            if hr.count > 0.0 {
                hr.avg_iou = iou_sum / hr.count;
            }
            rec.loss += hr.cost;
            rec.box_loss += hr.cost - hr.class_loss;
            // The cost's non-box part is obj_normalizer·(Σδ²obj + Σδ²cls): split it in that
            // proportion, so box + objectness + class is the cost whatever the normaliser.
            let non_box = hr.obj_loss + hr.cls_only_loss;
            if non_box > 0.0 {
                rec.obj_loss += hr.class_loss * hr.obj_loss / non_box;
                rec.class_loss += hr.class_loss * hr.cls_only_loss / non_box;
            }
            rec.count += hr.count;
            rec.recall50 += hr.recall50;
            rec.recall75 += hr.recall75;
            rec.avg_iou += iou_sum;
            rec.heads.push(hr);
        }
        if rec.count > 0.0 {
            rec.avg_iou /= rec.count;
            rec.recall50 /= rec.count;
            rec.recall75 /= rec.count;
        }
        // Darknet prints the mean over heads; the parts get the same scale so they add up to it.
        let scale = heads.max(1) as f64 * batch;
        rec.loss /= scale;
        rec.box_loss /= scale;
        rec.obj_loss /= scale;
        rec.class_loss /= scale;
        rec
    }

    /// Slow path, only after a non-finite loss: find the first layer whose output (in forward
    /// order) or gradient (in backward order) holds NaN/Inf. With memory reuse (the default) no
    /// activation holds its value after the step, so the first head whose loss is non-finite is
    /// named instead.
    fn diagnose_nonfinite(&self, iteration: u64, rec: &StepRecord) -> TrainError {
        let loss = rec.loss;
        if self.net.plan.options.reuse {
            return match rec.heads.iter().find(|h| !h.cost.is_finite()) {
                Some(h) => TrainError::NonFinite { iteration, loss, layer: h.layer, kind: "yolo", what: "loss" },
                None => TrainError::NonFiniteLoss { iteration, loss },
            };
        }
        let b = &self.net.backend;
        let bad = |buf: &B::Buf| b.download(buf).iter().any(|v| !v.is_finite());
        for (i, l) in self.net.layers.iter().enumerate() {
            if bad(&l.output) {
                return TrainError::NonFinite { iteration, loss, layer: i, kind: l.kind_name(), what: "output" };
            }
        }
        for (i, l) in self.net.layers.iter().enumerate().rev() {
            if bad(&l.delta) {
                return TrainError::NonFinite { iteration, loss, layer: i, kind: l.kind_name(), what: "gradient" };
            }
        }
        TrainError::NonFiniteLoss { iteration, loss }
    }
}
