//! `runner run EXPERIMENT.toml`: train every backend of the experiment from one initial weight
//! set on the same batches, record everything, write the report folder and gate.
//!
//! Nothing is lost: the run folder is made when training starts (a run refused by the checks
//! leaves none); `summary.json` (status `running`) and the iteration and epoch tables are on disk
//! from the first iteration on and appended as the run goes, so a killed run can still be
//! reported (`runner report`). SIGINT/SIGTERM stop at the next iteration boundary with a
//! checkpoint, the tables, charts and report.
//!
//! Exit code: 0 every gate holds (or no gates are defined), 1 a gate failed, 2 an error (partial
//! results still written), 130/143 interrupted by SIGINT/SIGTERM.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use engine::data::loader::{Batch, BatchPlan, Loader, LoaderConfig};
use engine::profile::Phase;
use engine::train::StepRecord;
use reports::{
    EpochRecord, IterationRecord, Journal, OutputFormats, ResumedFrom, RunData, RunStatus, RunSummary, Validation, Verdict,
};

use super::{gates, new_run_dir};
use super::memory::MemorySampler;
use super::preflight::{self, Data};
use super::progress::Progress;
use crate::experiment::{self, Experiment, RunMode, overrides};

mod checkpoints;
pub(crate) mod lane;
pub(crate) mod signals;
mod validation;

use lane::Slot;
use signals::{Signals, Stop};

#[derive(Args)]
pub struct RunArgs {
    /// The experiment TOML file
    pub experiment: PathBuf,
    /// Write the run folder under this directory instead of the experiment's [report] out_dir
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue from the latest checkpoint of an earlier run folder of this experiment (each
    /// backend from its own checkpoints/<backend>/); the new run gets a new folder
    #[arg(long, value_name = "RUN_DIR")]
    pub resume: Option<PathBuf>,
}

/// How training ended.
enum Outcome {
    Completed,
    Interrupted(Stop),
    Failed(anyhow::Error),
}

pub fn run(a: &RunArgs) -> Result<ExitCode> {
    let started = Instant::now();
    let started_at = super::now_rfc3339();
    let exp = experiment::load(&a.experiment)?;
    let formats = OutputFormats::from_names(&exp.report.formats).map_err(anyhow::Error::msg)?;
    // Everything that can be known before training is checked before a run folder exists.
    let plan = preflight::check(&exp)?;
    let signals = Signals::install()?;
    // `[report] out_dir` is already resolved against the experiment file's folder.
    let out_dir = a.out.clone().unwrap_or_else(|| exp.report.out_dir.clone());
    let run_dir = new_run_dir(&out_dir, &exp.experiment.name)?;
    let mut summary = RunSummary {
        experiment_name: exp.experiment.name.clone(),
        experiment_hash: super::hash_hex(exp.text.as_bytes()),
        git_commit: super::BUILD_COMMIT.to_string(),
        experiment_commit: super::experiment_commit(&exp.file),
        status: RunStatus::Running,
        seed: exp.experiment.seed,
        started_at,
        versions: super::versions(),
        ..Default::default()
    };
    summary.parity.window = exp.thresholds.window;
    summary.parity.loss_rel_delta_iter = exp.thresholds.loss_rel_delta_iter;
    summary.parity.loss_rel_delta_iter_first = exp.thresholds.loss_rel_delta_iter_first;
    summary.parity.loss_rel_delta_window = exp.thresholds.loss_rel_delta_window;
    summary.swap_source = super::memory::swap_source().into();
    // Sampling starts before the networks are built: their allocation can be the run's peak.
    let sampler = MemorySampler::start(exp.backends.list.iter().map(|b| b.to_string()).collect());
    let mut training = match Training::prepare(&exp, plan, &run_dir, a.resume.as_deref(), &mut summary, sampler.active.clone()) {
        Ok(t) => t,
        Err(e) => {
            sampler.stop();
            // Nothing was trained: the folder holds at most generated data. Keep no empty run.
            let _ = std::fs::remove_dir_all(&run_dir);
            return Err(e);
        }
    };
    println!("run folder: {}", run_dir.display());
    training.gpu_bytes = sampler.gpu_bytes.clone();
    let outcome = training.run(&signals);
    let memory = sampler.stop();
    summary.wall_time_s = started.elapsed().as_secs_f64();
    finish(&exp, training, outcome, memory, summary, formats)
}

/// Writes what the run produced (tables, summary, gates, charts, report) and turns the outcome
/// into the exit code. A failure to write never hides the run's own error.
fn finish(
    exp: &Experiment,
    training: Training,
    outcome: Outcome,
    memory: Vec<reports::MemorySample>,
    mut summary: RunSummary,
    formats: OutputFormats,
) -> Result<ExitCode> {
    let Training { run_dir, journal, iterations, epochs, slots, validation, .. } = training;
    // The appended tables are replaced below: their writer must be closed first.
    drop(journal);
    let last = slots.first().map_or(0, |s| s.lane.iteration());
    summary.status = match &outcome {
        Outcome::Completed => RunStatus::Completed,
        Outcome::Interrupted(_) => RunStatus::Interrupted,
        Outcome::Failed(_) => RunStatus::Failed,
    };
    if !matches!(outcome, Outcome::Completed) {
        summary.stopped_at_iteration = Some(last);
    }
    match &outcome {
        Outcome::Failed(e) => {
            summary.extra.insert("error".into(), format!("{e:#}"));
        }
        Outcome::Interrupted(sig) => {
            summary.extra.insert("interrupted".into(), format!("{} at iteration {last}", sig.name()));
        }
        Outcome::Completed => {}
    }
    let mut data = RunData::new(iterations, epochs, memory, summary, Vec::new(), exp.text.clone());
    data.kernels = slots.iter().flat_map(|s| super::bench::kernel_records(&s.name, &s.kernels)).collect();
    data.validation = validation;
    data.gates = gates::evaluate(exp, &data);
    let written = reports::write_tables(&run_dir, &data, formats).map_err(anyhow::Error::from).and_then(|_| {
        // The charts and the report show the whole run, earlier parts of a resumed run included.
        let (whole, warnings) = reports::with_history(data.clone(), &run_dir);
        for w in warnings {
            eprintln!("warning: {w}");
        }
        Ok(reports::render_run(&run_dir, &whole, formats)?)
    });
    let gate = data.gate_report();
    println!("{}", gate.markdown(&data.summary));
    match &written {
        Ok(files) => {
            let html = files.files.iter().find(|p| p.extension().is_some_and(|e| e == "html"));
            println!("report: {}", html.unwrap_or(&run_dir).display());
        }
        Err(e) if !matches!(outcome, Outcome::Failed(_)) => return Err(anyhow::anyhow!("{e:#}").context(format!("writing the results into {}", run_dir.display()))),
        Err(_) => {}
    }
    match outcome {
        Outcome::Failed(e) => {
            let e = e.context(format!("run stopped at iteration {last}; partial results in {}", run_dir.display()));
            match written {
                // The first failure first (a full disk stops the checkpoint, then the tables).
                Err(w) => Err(anyhow::anyhow!("{e:#}; writing the results also failed: {w:#}")),
                Ok(_) => Err(e),
            }
        }
        Outcome::Interrupted(sig) => {
            eprintln!("interrupted at iteration {last} ({}); checkpoint, tables and report in {}", sig.name(), run_dir.display());
            Ok(ExitCode::from(sig.exit_code()))
        }
        Outcome::Completed => match gate.verdict {
            Verdict::Pass | Verdict::NoGates => Ok(ExitCode::SUCCESS),
            Verdict::Fail => Ok(ExitCode::from(1)),
        },
    }
}

/// `from` as seen from `run_dir`: `../<name>` for sibling folders, else an absolute path.
fn link(run_dir: &Path, from: &Path) -> String {
    let (Ok(here), Ok(there)) = (run_dir.canonicalize(), from.canonicalize()) else {
        return from.display().to_string();
    };
    match (here.parent(), there.parent(), there.file_name()) {
        (Some(a), Some(b), Some(name)) if a == b => Path::new("..").join(name).display().to_string(),
        _ => there.display().to_string(),
    }
}

/// A run between preparation and its end.
struct Training<'e> {
    exp: &'e Experiment,
    slots: Vec<Slot>,
    loader: Loader,
    val: BatchPlan,
    classes: usize,
    /// k of a classifier's top-k accuracy (the dataset's `top`, else 5).
    top: usize,
    tag: String,
    start: u64,
    run_dir: PathBuf,
    journal: Journal,
    iterations: Vec<IterationRecord>,
    epochs: Vec<EpochRecord>,
    /// Per-class results of every validation; curves and confusion of the latest per backend.
    validation: Validation,
    /// Class names of the dataset, for the per-class records and the validation images.
    names: Vec<String>,
    /// Best mAP@0.5 so far per backend (for `<name>_best.weights`).
    best_map: Vec<f64>,
    /// Shared with the memory sampler: device bytes of the GPU backends, for the timeline.
    gpu_bytes: Arc<AtomicU64>,
    /// Shared with the memory sampler: the backend being built, stepping (sequential mode) or
    /// evaluated now, or none.
    active: Arc<AtomicUsize>,
}

impl<'e> Training<'e> {
    /// Data, networks, the initial weights or the resumed state, and the run folder's first
    /// files (summary.json with status `running`, experiment.toml, the appended tables).
    fn prepare(exp: &'e Experiment, plan: preflight::Plan, run_dir: &Path, resume: Option<&Path>, summary: &mut RunSummary, active: Arc<AtomicUsize>) -> Result<Training<'e>> {
        let cfg = &plan.cfg;
        let names: Vec<String> = match &plan.data {
            Data::Synthetic(spec) => spec.names().iter().map(|n| n.to_string()).collect(),
            Data::Darknet { .. } => match &exp.data.source {
                experiment::DataSource::Darknet(d) => d.names.clone(),
                experiment::DataSource::Synthetic(_) => Vec::new(),
            },
        };
        let mut top = 5;
        let (train_set, valid_set) = match plan.data {
            Data::Synthetic(spec) => {
                let data = spec.write(&run_dir.join("data"))?;
                top = data.top.unwrap_or(top);
                (data.train_set(engine::data::LabelPolicy::Strict)?, data.valid_set(engine::data::LabelPolicy::Strict)?)
            }
            Data::Darknet { train, valid } => {
                if let experiment::DataSource::Darknet(d) = &exp.data.source {
                    top = engine::data::darknet::DataFile::load(&d.data_file)?.top.unwrap_or(top);
                }
                (train, valid)
            }
        };
        let optimizer = overrides::optimizer(exp, cfg);
        let mut slots = Vec::new();
        for (i, spec) in exp.backends.list.iter().enumerate() {
            // The memory a backend's build takes (a GPU device, its pipelines) is its own.
            active.store(i, Ordering::Relaxed);
            let slot = lane::build(spec, cfg, &plan.build, optimizer, exp.backends.cpu_threads);
            active.store(super::memory::NO_BACKEND, Ordering::Relaxed);
            let slot = slot?;
            summary.devices.push(slot.device.clone());
            slots.push(slot);
        }
        // One initial weight set: the first backend's (initialised from the seed, or loaded), copied.
        if let Some(w) = &exp.model.weights {
            slots[0].lane.load_weights(w)?;
        }
        let params = slots[0].lane.conv_params();
        for s in slots.iter().skip(1) {
            s.lane.set_conv_params(&params);
        }
        let tag = super::hash_hex(exp.text.as_bytes());
        let start = match resume {
            Some(from) => {
                let it = checkpoints::resume(&mut slots, from, &exp.experiment.name, &tag)?;
                summary.extra.insert("resumed_from".into(), format!("{} @ iteration {it}", from.display()));
                summary.resumed_from = Some(ResumedFrom { run_dir: link(run_dir, from), iteration: it });
                it
            }
            None => 0,
        };
        let mut lc = LoaderConfig::training(cfg.net.batch, cfg.net.width, cfg.net.height, exp.experiment.seed, overrides::augment(exp, cfg), overrides::stop(exp, cfg));
        lc.shuffle = exp.data.shuffle;
        lc.start_batch = start;
        let loader = Loader::new(Arc::new(train_set), lc)?;
        let val = BatchPlan::new(Arc::new(valid_set), LoaderConfig::validation(cfg.net.mini_batch(), cfg.net.width, cfg.net.height))?;
        if loader.remaining() == 0 {
            bail!("nothing to train: the run already reached its last iteration ({start}); raise max_batches or epochs to continue");
        }
        reports::write_summary(run_dir, summary)?;
        std::fs::write(run_dir.join("experiment.toml"), &exp.text).with_context(|| format!("writing {}", run_dir.display()))?;
        let resolved = run_dir.join("resolved.toml");
        std::fs::write(&resolved, experiment::resolved::render(exp, cfg)).with_context(|| format!("writing {}", resolved.display()))?;
        let journal = Journal::create(run_dir)?;
        Ok(Training {
            exp,
            slots,
            loader,
            val,
            classes: exp.data_classes(),
            top,
            tag,
            start,
            run_dir: run_dir.to_path_buf(),
            journal,
            iterations: Vec::new(),
            epochs: Vec::new(),
            validation: Validation::default(),
            names,
            best_map: vec![f64::NEG_INFINITY; exp.backends.list.len()],
            gpu_bytes: Arc::default(),
            active,
        })
    }

    fn checkpoint_due(&self, iteration: u64) -> bool {
        self.exp.train.checkpoint_every.is_some_and(|n| iteration % n == 0)
    }

    fn iteration(&self) -> u64 {
        self.slots[0].lane.iteration()
    }

    fn save_checkpoints(&mut self, progress: &mut Progress) -> Result<()> {
        // The records up to the checkpoint reach the disk with it.
        self.journal.flush()?;
        checkpoints::save(&mut self.slots, &self.run_dir, &self.exp.experiment.name, &self.tag, progress)
    }

    fn run(&mut self, signals: &Signals) -> Outcome {
        let names: Vec<String> = self.slots.iter().map(|s| s.name.clone()).collect();
        let mut progress = Progress::new(&names, self.start, self.start + self.loader.remaining());
        let outcome = match self.train(signals, &mut progress) {
            Ok(None) => Outcome::Completed,
            Ok(Some(sig)) => {
                progress.line(&format!("{}: stopping at iteration {} (a second signal ends the process at once)", sig.name(), self.iteration()));
                // A resumable checkpoint of where it stopped, unless that iteration was just saved.
                let it = self.iteration();
                match (it > self.start && !self.checkpoint_due(it)).then(|| self.save_checkpoints(&mut progress)) {
                    Some(Err(e)) => Outcome::Failed(e.context(format!("interrupted by {}, and the checkpoint could not be written", sig.name()))),
                    _ => Outcome::Interrupted(sig),
                }
            }
            Err(e) => Outcome::Failed(e),
        };
        if let Err(e) = self.journal.flush() {
            eprintln!("warning: {e}");
        }
        progress.finish();
        outcome
    }

    /// The training loop; `Some(signal)` when a signal stopped it at an iteration boundary.
    fn train(&mut self, signals: &Signals, progress: &mut Progress) -> Result<Option<Stop>> {
        // The epoch of the first batch (not 0 when resuming); set from the first batch.
        let mut epoch = None;
        // The batch after the one stepping, fetched first so that each backend uploads it while
        // its device runs the step (Trainer::step_staging); with its data wait and load times. A
        // batch that failed to load ends the run in its turn, after the steps before it.
        let mut ahead = self.fetch_batch();
        loop {
            if let Some(sig) = signals.received() {
                return Ok(Some(sig));
            }
            let Some(fetched) = ahead.take() else { break };
            let (batch, data_wait, data_load) = fetched?;
            if let Some(e) = epoch.filter(|&e| e != batch.epoch) {
                self.evaluate_epoch(e, progress)?;
            }
            epoch = Some(batch.epoch);
            ahead = self.fetch_batch();
            // Not across an epoch's evaluation, which uses the network's input itself.
            let next = match &ahead {
                Some(Ok((b, _, _))) if b.epoch == batch.epoch => Some((&b.images[..], &b.truths[..])),
                _ => None,
            };
            let steps = step_all(&mut self.slots, (&batch.images, &batch.truths), next, self.exp.backends.mode, &self.active);
            let device_bytes: u64 = steps.iter().map(|(_, _, b)| b).sum();
            self.gpu_bytes.store(device_bytes, Ordering::Relaxed);
            let n = self.slots.len();
            for (i, (s, dt, gpu_bytes)) in steps.into_iter().enumerate() {
                let name = self.slots[i].name.clone();
                let s = s.with_context(|| format!("backend {name}"))?;
                if !s.timings.is_empty() {
                    self.slots[i].kernels.add_step(&s.timings);
                }
                // Device time per phase where the GPU timed its launches (None on the CPU, whose
                // per-op times would be host time).
                let timed = self.slots[i].is_gpu && !s.timings.is_empty();
                let device = |p: Phase| timed.then(|| s.device_seconds(p));
                let r = IterationRecord {
                    backend: name,
                    iteration: s.iteration,
                    epoch: batch.epoch,
                    images: batch.n as u64,
                    loss: s.loss,
                    box_loss: s.box_loss,
                    obj_loss: s.obj_loss,
                    class_loss: s.class_loss,
                    avg_iou: s.avg_iou,
                    recall50: s.recall50,
                    recall75: s.recall75,
                    count: s.count,
                    lr: s.lr as f64,
                    images_per_s: batch.n as f64 / (data_wait + dt).max(1e-9),
                    step_s: dt,
                    data_wait_s: data_wait,
                    data_load_s: data_load,
                    host_forward_s: s.t_forward,
                    host_backward_s: s.t_backward,
                    host_update_s: s.t_update,
                    host_wait_s: s.t_sync,
                    device_forward_s: device(Phase::Forward),
                    device_loss_s: device(Phase::Loss),
                    device_backward_s: device(Phase::Backward),
                    device_update_s: device(Phase::Update),
                    device_other_s: device(Phase::Other),
                    rss_bytes: super::memory::rss_bytes(),
                    gpu_bytes,
                    loss_scale: s.loss_scale.map(f64::from),
                    skipped: s.skipped,
                };
                progress.step(&r);
                self.journal.iteration(&r, n)?;
                self.iterations.push(r);
            }
            if self.checkpoint_due(self.iteration()) {
                self.save_checkpoints(progress)?;
            }
        }
        if let Some(e) = epoch {
            self.evaluate_epoch(e, progress)?;
        }
        // The final weights, always: `<name>_<last>.weights` (+ .state, resumable) unless the last
        // iteration was just saved, and `<name>_final.weights`.
        if !self.checkpoint_due(self.iteration()) {
            self.save_checkpoints(progress)?;
        }
        checkpoints::copy_as(&self.slots, &self.run_dir, &self.exp.experiment.name, "final")?;
        Ok(None)
    }

    /// The loader's next batch with its data wait and load seconds; `None` at the end.
    fn fetch_batch(&mut self) -> Option<Result<(Batch, f64, f64)>> {
        let batch = self.loader.next_batch()?;
        Some(batch.map(|b| (b, self.loader.last_wait().as_secs_f64(), self.loader.last_load().as_secs_f64())).map_err(anyhow::Error::from))
    }

    /// Validates every backend after `epoch`: the epoch and per-class records, the curves,
    /// confusion matrix and images of this (so far the last) validation, and `_best.weights`
    /// when the mAP@0.5 beats the backend's earlier epochs.
    fn evaluate_epoch(&mut self, epoch: u64, progress: &mut Progress) -> Result<()> {
        let images = self.val.dataset.len();
        let name = self.exp.experiment.name.clone();
        for (i, s) in self.slots.iter().enumerate() {
            progress.line(&format!("{}: evaluating epoch {epoch} on the validation split ({images} images)…", s.name));
            self.active.store(i, Ordering::Relaxed);
            let ev = s.lane.evaluate(&self.val, self.classes, validation::IMAGES, self.top);
            self.active.store(super::memory::NO_BACKEND, Ordering::Relaxed);
            let ev = ev?;
            s.lane.discard_timings();
            let (e, classes) = validation::epoch_records(&s.name, epoch, &ev, &self.names);
            match (&ev.topk, e.top1, e.top5) {
                (Some(t), Some(top1), Some(topk)) => progress.line(&format!("{} epoch {epoch}: top-1 {top1:.4}  top-{} {topk:.4} ({} images)", s.name, t.k, t.images)),
                _ => progress.line(&format!("{} epoch {epoch}: mAP@0.5 {:.4}  mAP@[.5:.95] {:.4}  P {:.3} R {:.3} F1 {:.3}", s.name, e.map50, e.map50_95, e.precision, e.recall, e.f1)),
            }
            self.journal.epoch(&e)?;
            let v = &mut self.validation;
            v.classes.extend(classes);
            v.curves.retain(|c| c.backend != s.name);
            v.curves.extend(validation::curves(&s.name, &ev, &self.names));
            v.confusion.retain(|c| c.backend != s.name);
            v.confusion.extend(validation::confusion(&s.name, &ev, &self.names));
            validation::write_images(&self.run_dir, &s.name, &ev, &self.names)?;
            // A classifier's best epoch is its best top-1 accuracy.
            let score = e.top1.unwrap_or(e.map50);
            if score > self.best_map[i] {
                self.best_map[i] = score;
                let path = checkpoints::dir(&self.run_dir, &s.name).join(format!("{name}_best.weights"));
                std::fs::create_dir_all(checkpoints::dir(&self.run_dir, &s.name)).with_context(|| format!("creating {}", path.display()))?;
                let seen = s.lane.iteration() * self.loader.plan().cfg.batch as u64;
                s.lane.save_weights(&path, seen).with_context(|| format!("backend {}: writing {}", s.name, path.display()))?;
            }
            self.epochs.push(e);
        }
        Ok(())
    }
}

/// One iteration of every backend on the same batch (images, truths): (result, seconds, GPU
/// bytes) per backend. Each uploads `next`, the batch its next step takes, while its device runs
/// this one. Sequential: one backend after the other on this thread (clean timings).
/// Concurrent: every backend steps on its own thread at once.
/// `active` tells the memory sampler which backend steps (sequential mode only: concurrent
/// backends share every sample).
fn step_all(
    slots: &mut [Slot], batch: (&[f32], &[f32]), next: Option<(&[f32], &[f32])>, mode: RunMode, active: &AtomicUsize,
) -> Vec<(Result<StepRecord>, f64, u64)> {
    let (images, truths) = batch;
    let step = |slot: &mut Slot| {
        let t0 = Instant::now();
        let r = slot.lane.step(images, truths, next).map_err(anyhow::Error::from);
        (r, t0.elapsed().as_secs_f64(), slot.gpu_bytes())
    };
    if mode == RunMode::Concurrent {
        std::thread::scope(|s| {
            let handles: Vec<_> = slots.iter_mut().map(|slot| s.spawn(move || step(slot))).collect();
            handles.into_iter().map(|h| h.join().unwrap_or_else(|_| (Err(anyhow::anyhow!("a backend thread panicked")), 0.0, 0))).collect()
        })
    } else {
        let out = slots
            .iter_mut()
            .enumerate()
            .map(|(i, slot)| {
                active.store(i, Ordering::Relaxed);
                step(slot)
            })
            .collect();
        active.store(super::memory::NO_BACKEND, Ordering::Relaxed);
        out
    }
}
