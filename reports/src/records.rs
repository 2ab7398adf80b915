//! Plain record types written by the runner and read back by `runner report`.
//! Units are in the field names or doc comments; reports/SCHEMA.md is the reference.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One training iteration (one weight update) of one backend.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct IterationRecord {
    /// "cpu", "gpu", "gpu:1", ... as named in the experiment.
    pub backend: String,
    /// 1-based iteration (weight update) number.
    pub iteration: u64,
    /// 0-based epoch the iteration belongs to.
    pub epoch: u64,
    /// Images trained in this iteration (the cfg's batch).
    pub images: u64,
    /// Total loss as Darknet prints it: per image, averaged over the [yolo] heads.
    pub loss: f64,
    /// The loss's parts, on the same scale: `box_loss + obj_loss + class_loss == loss`.
    pub box_loss: f64,
    pub obj_loss: f64,
    pub class_loss: f64,
    /// Mean IoU of the assigned predictions (0..1).
    pub avg_iou: f64,
    /// Fraction of truths with IoU > 0.5 (0..1).
    pub recall50: f64,
    /// Fraction of truths with IoU > 0.75 (0..1).
    pub recall75: f64,
    /// Number of truths assigned to predictions.
    pub count: f64,
    /// Learning rate used for this update.
    pub lr: f64,
    /// `images ÷ (data_wait_s + step_s)`.
    pub images_per_s: f64,
    /// Wall seconds of this backend's training step (forward, loss, backward, update, readback).
    pub step_s: f64,
    /// Seconds the training loop waited for the loader to hand over the batch.
    pub data_wait_s: f64,
    /// Seconds a loader thread spent reading and augmenting the batch (ahead of time, overlapping
    /// training; equal to `data_wait_s` without loader threads).
    pub data_load_s: f64,
    /// Host seconds per phase: on the CPU backend the computation itself (the [yolo] loss is
    /// inside forward); on a GPU the recording (encoding) of the phase's kernel launches.
    pub host_forward_s: f64,
    pub host_backward_s: f64,
    pub host_update_s: f64,
    /// Host seconds waiting for the device to finish the step and copying its statistics back
    /// (0 on the CPU).
    pub host_wait_s: f64,
    /// Device seconds per phase from GPU timestamp queries (sum over the phase's kernel launches);
    /// `None` where nothing was timed (CPU backend, GPU without timestamp queries).
    pub device_forward_s: Option<f64>,
    pub device_loss_s: Option<f64>,
    pub device_backward_s: Option<f64>,
    pub device_update_s: Option<f64>,
    /// Device work outside the four phases (uploads, the state check).
    pub device_other_s: Option<f64>,
    /// Process resident set size after the iteration, bytes.
    pub rss_bytes: u64,
    /// GPU memory allocated by this backend after the iteration, bytes (0 on CPU).
    pub gpu_bytes: u64,
    /// Mixed precision: the loss scale of this step (`None` without loss scaling).
    pub loss_scale: Option<f64>,
    /// Mixed precision: the scaled gradients overflowed, so the step was undone and the scale
    /// halved.
    pub skipped: bool,
}

impl IterationRecord {
    /// The iteration's wall time as this backend saw it: waiting for data, then its step.
    pub fn wall_s(&self) -> f64 {
        self.data_wait_s + self.step_s
    }

    /// Device seconds of the whole step, when the device was timed.
    pub fn device_s(&self) -> Option<f64> {
        Some(
            self.device_forward_s? + self.device_loss_s? + self.device_backward_s? + self.device_update_s? + self.device_other_s?,
        )
    }
}

/// Validation metrics after one epoch of one backend.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub backend: String,
    pub epoch: u64,
    /// mAP at IoU 0.5 (0..1).
    pub map50: f64,
    /// mAP averaged over IoU 0.50:0.05:0.95 (0..1).
    pub map50_95: f64,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// A classifier's top-1 and top-k accuracy on the validation split (0..1; k is the dataset's
    /// `top`, 5 by default); `None` for a detector.
    pub top1: Option<f64>,
    pub top5: Option<f64>,
}

/// One sample of the process memory timeline.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MemorySample {
    /// Seconds since the run started.
    pub t_s: f64,
    pub rss_bytes: u64,
    /// Swap attributable to the run: the process's own swapped-out bytes where the OS reports
    /// them (Linux), else the growth of the system's used swap since the run started.
    pub swap_bytes: u64,
    pub gpu_bytes: u64,
    /// The backend being built, training or evaluated when the sample was taken ("" for none:
    /// loading data, writing, or backends training concurrently).
    pub backend: String,
}

/// Result of one pass/fail gate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GateResult {
    pub name: String,
    pub measured: f64,
    pub limit: f64,
    pub pass: bool,
    /// One human line: what was compared, where the worst value was.
    pub detail: String,
    /// False when the comparison cannot show a difference (e.g. mAP 0 against mAP 0): the gate
    /// holds but proves nothing. Reported as "not informative".
    #[serde(default = "yes")]
    pub informative: bool,
}

fn yes() -> bool {
    true
}

impl GateResult {
    pub fn new(name: &str, measured: f64, limit: f64, pass: bool, detail: String) -> Self {
        GateResult { name: name.into(), measured, limit, pass, detail, informative: true }
    }

    /// The same gate, marked as proving nothing, with why.
    pub fn not_informative(mut self, why: &str) -> Self {
        self.informative = false;
        self.detail = format!("{} — not informative: {why}", self.detail);
        self
    }
}

/// Where a backend's time per iteration went, in mean seconds per iteration. The parts add up to
/// the iteration's wall time (`data_wait_s + step_s`). (Schema-2 summaries had other phases:
/// they read as zeros, and `read_run` recomputes them from the records.)
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PhaseTimes {
    pub data_wait_s: f64,
    /// Device seconds where the device was timed (`source` "device"), else host seconds.
    pub forward_s: f64,
    /// The [yolo] heads (device only; inside `forward_s` on the host).
    pub loss_s: f64,
    pub backward_s: f64,
    pub update_s: f64,
    /// Device work outside the phases (device only).
    pub other_s: f64,
    /// The rest of the step: on a timed GPU the host time the device was not covering (encoding,
    /// submission, waiting, readback); on the CPU the statistics readback and bookkeeping.
    pub host_s: f64,
    /// "device" (GPU timestamps) or "host" (wall clock around each phase).
    #[serde(default)]
    pub source: String,
}

impl PhaseTimes {
    pub const NAMES: [&'static str; 7] = ["data wait", "forward", "loss", "backward", "update", "other", "host"];
    /// Keys in the summary table (`backend.<b>.phase.<key>`).
    pub const KEYS: [&'static str; 7] = ["data_wait", "forward", "loss", "backward", "update", "other", "host"];

    pub fn values(&self) -> [f64; 7] {
        [self.data_wait_s, self.forward_s, self.loss_s, self.backward_s, self.update_s, self.other_s, self.host_s]
    }

    /// Mean phase times of `its` (all of one backend): device times when every record has them.
    pub fn of(its: &[&IterationRecord]) -> PhaseTimes {
        let m = |g: &dyn Fn(&IterationRecord) -> f64| mean(its.iter().map(|r| g(r)));
        let timed = !its.is_empty() && its.iter().all(|r| r.device_s().is_some());
        let step = m(&|r| r.step_s);
        let mut p = if timed {
            let d = |g: fn(&IterationRecord) -> Option<f64>| m(&|r| g(r).unwrap_or(0.0));
            PhaseTimes {
                forward_s: d(|r| r.device_forward_s),
                loss_s: d(|r| r.device_loss_s),
                backward_s: d(|r| r.device_backward_s),
                update_s: d(|r| r.device_update_s),
                other_s: d(|r| r.device_other_s),
                source: "device".into(),
                ..Default::default()
            }
        } else {
            PhaseTimes {
                forward_s: m(&|r| r.host_forward_s),
                backward_s: m(&|r| r.host_backward_s),
                update_s: m(&|r| r.host_update_s),
                source: "host".into(),
                ..Default::default()
            }
        };
        p.data_wait_s = m(&|r| r.data_wait_s);
        let parts = p.forward_s + p.loss_s + p.backward_s + p.update_s + p.other_s;
        p.host_s = (step - parts).max(0.0);
        p
    }
}

/// Aggregates of one backend, derived from its records.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BackendSummary {
    pub backend: String,
    pub iterations: u64,
    pub epochs: u64,
    /// Mean loss of the last `FINAL_LOSS_WINDOW` iterations (one iteration is too noisy to compare).
    pub final_loss: f64,
    pub final_map50: Option<f64>,
    pub final_map50_95: Option<f64>,
    /// Images trained (all iterations).
    #[serde(default)]
    pub images: u64,
    /// Throughput: images ÷ wall time (data wait + step) summed over the iterations after the
    /// first (the first pays for compilation and allocation); all of them when there is one.
    pub images_per_s: f64,
    pub phase: PhaseTimes,
    /// Wall time of all iterations (data wait + step), seconds.
    pub train_time_s: f64,
    /// Peak process RSS in this backend's windows: the samples taken while it was built, stepped
    /// or evaluated, and the RSS after each of its iterations. Backends training concurrently
    /// share one process, so then their training windows are not separable.
    pub peak_rss_bytes: u64,
    pub peak_gpu_bytes: u64,
}

/// Iterations averaged into [`BackendSummary::final_loss`].
pub const FINAL_LOSS_WINDOW: usize = 10;

impl BackendSummary {
    /// Aggregates the records of `backend` (records of other backends are ignored).
    pub fn from_records(backend: &str, iterations: &[IterationRecord], epochs: &[EpochRecord], memory: &[MemorySample]) -> Self {
        let its: Vec<&IterationRecord> = iterations.iter().filter(|r| r.backend == backend).collect();
        let eps: Vec<&EpochRecord> = epochs.iter().filter(|r| r.backend == backend).collect();
        let n = its.len();
        let tail = &its[n.saturating_sub(FINAL_LOSS_WINDOW)..];
        let final_loss = mean(tail.iter().map(|r| r.loss));
        let steady: &[&IterationRecord] = if n > 1 { &its[1..] } else { &its[..] };
        let steady_images: u64 = steady.iter().map(|r| r.images).sum();
        let steady_time: f64 = steady.iter().map(|r| r.wall_s()).sum();
        let last_epoch = eps.iter().max_by_key(|e| e.epoch);
        let sampled = memory.iter().filter(|m| m.backend == backend).map(|m| m.rss_bytes);
        BackendSummary {
            backend: backend.to_string(),
            iterations: n as u64,
            epochs: its.iter().map(|r| r.epoch + 1).max().unwrap_or(0),
            final_loss,
            final_map50: last_epoch.map(|e| e.map50),
            final_map50_95: last_epoch.map(|e| e.map50_95),
            images: its.iter().map(|r| r.images).sum(),
            images_per_s: if steady_time > 0.0 { steady_images as f64 / steady_time } else { 0.0 },
            train_time_s: its.iter().map(|r| r.wall_s()).sum(),
            phase: PhaseTimes::of(&its),
            peak_rss_bytes: its.iter().map(|r| r.rss_bytes).chain(sampled).max().unwrap_or(0),
            peak_gpu_bytes: its.iter().map(|r| r.gpu_bytes).max().unwrap_or(0),
        }
    }
}

/// What the run was on: one entry per backend.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DeviceInfo {
    pub backend: String,
    /// Adapter or CPU model name.
    pub name: String,
    /// Anything else worth knowing (driver, API, cores, limits), shown verbatim.
    pub details: BTreeMap<String, String>,
}

/// The limits the parity charts draw as bands (copied from the experiment's [thresholds]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ParityLimits {
    /// Trailing window (iterations) of the running-mean relative loss delta.
    pub window: usize,
    pub loss_rel_delta_iter: Option<f64>,
    /// The per-iteration limit covers iterations 1..=N only (None: every iteration).
    #[serde(default)]
    pub loss_rel_delta_iter_first: Option<u64>,
    pub loss_rel_delta_window: Option<f64>,
}

impl Default for ParityLimits {
    fn default() -> Self {
        ParityLimits { window: 10, loss_rel_delta_iter: None, loss_rel_delta_iter_first: None, loss_rel_delta_window: None }
    }
}

/// How a run ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Written when training starts; a folder still saying so was killed (or is still running).
    Running,
    /// Every iteration ran (a summary.json without a status, from before statuses, also reads so).
    #[default]
    Completed,
    /// Stopped by SIGINT/SIGTERM at an iteration boundary; tables, checkpoint and report written.
    Interrupted,
    /// Stopped by an error (see `extra.error`).
    Failed,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Completed => "completed",
            RunStatus::Interrupted => "interrupted",
            RunStatus::Failed => "failed",
        }
    }
}

/// Where a resumed run continued from.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ResumedFrom {
    /// The earlier run folder, relative to this run folder when they share a parent, else absolute.
    pub run_dir: String,
    /// The checkpoint's iteration: this run's records start at `iteration + 1`.
    pub iteration: u64,
}

/// Run metadata. Stored as summary.json (authoritative) and flattened to the key/value summary table.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    pub schema_version: u32,
    pub experiment_name: String,
    /// Hash of the experiment TOML text (hex), so two runs of one experiment can be matched.
    pub experiment_hash: String,
    /// The commit the runner binary was built from (embedded at build time), "unknown" when built
    /// outside a git checkout.
    pub git_commit: String,
    /// The commit of the repository holding the experiment file at run time (`+modified` when the
    /// file differs from it), empty when the file is in no git repository.
    #[serde(default)]
    pub experiment_commit: String,
    #[serde(default)]
    pub status: RunStatus,
    /// Last iteration completed when the run was interrupted or failed.
    #[serde(default)]
    pub stopped_at_iteration: Option<u64>,
    #[serde(default)]
    pub resumed_from: Option<ResumedFrom>,
    pub seed: u64,
    /// Start time as the runner formats it (RFC 3339 suggested).
    pub started_at: String,
    pub wall_time_s: f64,
    /// Tool and library versions: "runner", "rustc", "wgpu", ...
    pub versions: BTreeMap<String, String>,
    pub devices: Vec<DeviceInfo>,
    pub backends: Vec<BackendSummary>,
    /// Peak process RSS over the whole run (sampled from before the networks are built).
    pub peak_rss_bytes: u64,
    /// Peak swap attributable to the run (see [`MemorySample::swap_bytes`] and `swap_source`).
    pub peak_swap_bytes: u64,
    /// How swap was measured: "process" (the OS reports the process's swap) or "system change"
    /// (growth of the system's used swap since the run started).
    #[serde(default)]
    pub swap_source: String,
    pub peak_gpu_bytes: u64,
    pub parity: ParityLimits,
    /// Free-form extras (shown in the HTML summary table).
    pub extra: BTreeMap<String, String>,
}

impl RunSummary {
    /// Fills `backends` and the peaks from the records, in order of first appearance of each backend.
    pub fn fill_from_records(
        &mut self,
        iterations: &[IterationRecord],
        epochs: &[EpochRecord],
        memory: &[MemorySample],
    ) {
        self.backends = backend_names(iterations)
            .iter()
            .map(|b| BackendSummary::from_records(b, iterations, epochs, memory))
            .collect();
        let it_rss = iterations.iter().map(|r| r.rss_bytes).max().unwrap_or(0);
        let it_gpu = iterations.iter().map(|r| r.gpu_bytes).max().unwrap_or(0);
        self.peak_rss_bytes = it_rss.max(memory.iter().map(|m| m.rss_bytes).max().unwrap_or(0));
        self.peak_swap_bytes = memory.iter().map(|m| m.swap_bytes).max().unwrap_or(0);
        self.peak_gpu_bytes = it_gpu.max(memory.iter().map(|m| m.gpu_bytes).max().unwrap_or(0));
    }

    pub fn backend(&self, name: &str) -> Option<&BackendSummary> {
        self.backends.iter().find(|b| b.backend == name)
    }

    /// Flattened (key, value, unit) rows for the summary table.
    pub fn to_rows(&self) -> Vec<(String, String, &'static str)> {
        let mut rows: Vec<(String, String, &'static str)> = vec![
            ("schema_version".into(), self.schema_version.to_string(), ""),
            ("experiment.name".into(), self.experiment_name.clone(), ""),
            ("experiment.hash".into(), self.experiment_hash.clone(), ""),
            ("git.commit".into(), self.git_commit.clone(), ""),
            ("experiment.commit".into(), self.experiment_commit.clone(), ""),
            ("status".into(), self.status.as_str().into(), ""),
            ("seed".into(), self.seed.to_string(), ""),
            ("started_at".into(), self.started_at.clone(), ""),
            ("wall_time".into(), fmt_f(self.wall_time_s), "s"),
            ("peak.rss".into(), self.peak_rss_bytes.to_string(), "bytes"),
            ("peak.swap".into(), self.peak_swap_bytes.to_string(), "bytes"),
            ("swap.source".into(), self.swap_source.clone(), ""),
            ("peak.gpu".into(), self.peak_gpu_bytes.to_string(), "bytes"),
            ("parity.window".into(), self.parity.window.to_string(), "iterations"),
        ];
        if let Some(it) = self.stopped_at_iteration {
            rows.push(("stopped_at_iteration".into(), it.to_string(), "iterations"));
        }
        if let Some(r) = &self.resumed_from {
            rows.push(("resumed_from.run_dir".into(), r.run_dir.clone(), ""));
            rows.push(("resumed_from.iteration".into(), r.iteration.to_string(), "iterations"));
        }
        if let Some(v) = self.parity.loss_rel_delta_iter {
            rows.push(("parity.loss_rel_delta_iter".into(), fmt_f(v), "ratio"));
        }
        if let Some(v) = self.parity.loss_rel_delta_iter_first {
            rows.push(("parity.loss_rel_delta_iter_first".into(), v.to_string(), "iterations"));
        }
        if let Some(v) = self.parity.loss_rel_delta_window {
            rows.push(("parity.loss_rel_delta_window".into(), fmt_f(v), "ratio"));
        }
        for (k, v) in &self.versions {
            rows.push((format!("version.{k}"), v.clone(), ""));
        }
        for d in &self.devices {
            rows.push((format!("device.{}.name", d.backend), d.name.clone(), ""));
            for (k, v) in &d.details {
                rows.push((format!("device.{}.{k}", d.backend), v.clone(), ""));
            }
        }
        for b in &self.backends {
            let p = format!("backend.{}", b.backend);
            rows.push((format!("{p}.iterations"), b.iterations.to_string(), "iterations"));
            rows.push((format!("{p}.epochs"), b.epochs.to_string(), "epochs"));
            rows.push((format!("{p}.final_loss"), fmt_f(b.final_loss), "loss"));
            if let Some(m) = b.final_map50 {
                rows.push((format!("{p}.final_map50"), fmt_f(m), "ratio"));
            }
            if let Some(m) = b.final_map50_95 {
                rows.push((format!("{p}.final_map50_95"), fmt_f(m), "ratio"));
            }
            rows.push((format!("{p}.images"), b.images.to_string(), "images"));
            rows.push((format!("{p}.images_per_s"), fmt_f(b.images_per_s), "images/s"));
            rows.push((format!("{p}.phase_source"), b.phase.source.clone(), ""));
            for (name, v) in PhaseTimes::KEYS.iter().zip(b.phase.values()) {
                rows.push((format!("{p}.phase.{name}"), fmt_f(v), "s/iteration"));
            }
            rows.push((format!("{p}.train_time"), fmt_f(b.train_time_s), "s"));
            rows.push((format!("{p}.peak_rss"), b.peak_rss_bytes.to_string(), "bytes"));
            rows.push((format!("{p}.peak_gpu"), b.peak_gpu_bytes.to_string(), "bytes"));
        }
        for (k, v) in &self.extra {
            rows.push((format!("extra.{k}"), v.clone(), ""));
        }
        rows
    }
}

/// Backend names in order of first appearance.
pub fn backend_names(iterations: &[IterationRecord]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for r in iterations {
        if !names.contains(&r.backend) {
            names.push(r.backend.clone());
        }
    }
    names
}

pub(crate) fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if n == 0 { 0.0 } else { sum / n as f64 }
}

/// Shortest exact float text (Rust's Display round-trips f64).
pub(crate) fn fmt_f(v: f64) -> String {
    format!("{v}")
}
