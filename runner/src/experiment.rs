//! Experiment files (TOML): what to train, on what data, on which backends, and the parity gates.
//!
//! `load` turns every mistake into ONE line `file:line:column: `key`: message`, covering syntax,
//! unknown keys, wrong types, missing files (resolved relative to the experiment file's folder) and
//! inconsistent values. Values left out mean "as the model cfg says".
// The CLI uses these types field by field as it grows; until then parts are unused in the binary.
#![allow(dead_code)]

#[path = "experiment/backend.rs"]
mod backend;
#[path = "experiment/de.rs"]
mod de;
#[path = "experiment/locate.rs"]
mod locate;
#[path = "experiment/overrides.rs"]
pub mod overrides;
#[path = "experiment/resolved.rs"]
pub mod resolved;
#[path = "experiment/validate.rs"]
mod validate;

#[allow(unused_imports)] // GpuSelector: used by the CLI and the tests, not by every crate that includes this module
pub use backend::{BackendSpec, GpuSelector};
use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};

/// Model names the engine builds without a cfg file.
pub const BUILTIN_MODELS: &[&str] = &engine::cfg::BUILTIN_NAMES;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    pub experiment: ExperimentMeta,
    pub model: ModelSection,
    pub data: DataSection,
    #[serde(default)]
    pub train: TrainSection,
    pub backends: BackendsSection,
    #[serde(default)]
    pub thresholds: Thresholds,
    #[serde(default)]
    pub report: ReportSection,
    /// The experiment file (set by `load`).
    #[serde(skip)]
    pub file: PathBuf,
    /// Its text, for the report and the experiment hash (set by `load`).
    #[serde(skip)]
    pub text: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentMeta {
    pub name: String,
    /// Seeds every random stream (init, data order, augmentation, synthetic data by default).
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub description: String,
}

/// Where the network comes from.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum ModelSource {
    /// One of [`BUILTIN_MODELS`].
    Builtin(String),
    /// A Darknet .cfg file (resolved path).
    File(PathBuf),
    /// Not resolved yet (only before `load` finished).
    #[default]
    Unresolved,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// A built-in model name or a .cfg path relative to the experiment file.
    pub cfg: String,
    /// Overrides `classes=` of every [yolo] layer (and the filters before it).
    pub classes: Option<usize>,
    pub width: Option<usize>,
    pub height: Option<usize>,
    /// Darknet .weights to start from (resolved path after `load`).
    pub weights: Option<PathBuf>,
    /// Set by `load`.
    #[serde(skip)]
    pub source: ModelSource,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, try_from = "de::RawData")]
pub struct DataSection {
    pub source: DataSource,
    /// Keep aspect ratio when resizing (Darknet `letter_box`); None: as the cfg says.
    pub letterbox: Option<bool>,
    /// Seeded permutation of the images each epoch (false: file order, for fixtures).
    pub shuffle: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub enum DataSource {
    Synthetic(SyntheticData),
    Darknet(DarknetData),
}

/// Generated images of coloured shapes; image size is the model's width × height.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyntheticData {
    pub images: usize,
    pub val_images: usize,
    pub classes: usize,
    /// Object side lengths in pixels.
    pub min_size: usize,
    pub max_size: usize,
    pub max_objects: usize,
    /// Defaults to the experiment seed.
    pub seed: Option<u64>,
}

/// A Darknet `.data` dataset. Paths inside the .data are relative to the .data file's folder.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct DarknetData {
    /// The .data file (resolved by `load`).
    pub data_file: PathBuf,
    /// Filled by `load` from the .data file:
    pub classes: usize,
    pub train_list: PathBuf,
    pub valid_list: Option<PathBuf>,
    pub names_file: PathBuf,
    pub names: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Optimizer {
    Sgd,
    Adam,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyName {
    Constant,
    Step,
    Steps,
    Exp,
    Poly,
    Sig,
    Random,
    Sgdr,
}

/// Training overrides; every `None` keeps the cfg's `[net]` value.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSection {
    pub batch: Option<usize>,
    pub subdivisions: Option<usize>,
    /// Passes over the training set; exclusive with `max_batches`.
    pub epochs: Option<u64>,
    /// Iterations (weight updates); exclusive with `epochs`.
    pub max_batches: Option<u64>,
    pub optimizer: Option<Optimizer>,
    #[serde(default, deserialize_with = "de::positive_opt")]
    pub learning_rate: Option<f64>,
    #[serde(default, deserialize_with = "de::unit_interval_open_opt")]
    pub momentum: Option<f64>,
    #[serde(default, deserialize_with = "de::non_negative_opt")]
    pub decay: Option<f64>,
    pub policy: Option<PolicyName>,
    /// `steps` policy.
    pub steps: Option<Vec<u64>>,
    pub scales: Option<Vec<f64>>,
    /// `step` policy.
    pub step: Option<u64>,
    pub scale: Option<f64>,
    /// `exp` and `sig` policies.
    pub gamma: Option<f64>,
    /// `poly`, `random` and burn-in exponent.
    pub power: Option<f64>,
    /// `sgdr` policy.
    pub sgdr_cycle: Option<u64>,
    pub sgdr_mult: Option<u32>,
    #[serde(default, deserialize_with = "de::non_negative_opt")]
    pub learning_rate_min: Option<f64>,
    pub burn_in: Option<u64>,
    /// Adam moments (Darknet b1, b2, eps).
    #[serde(default, deserialize_with = "de::unit_interval_open_opt")]
    pub b1: Option<f64>,
    #[serde(default, deserialize_with = "de::unit_interval_open_opt")]
    pub b2: Option<f64>,
    #[serde(default, deserialize_with = "de::positive_opt")]
    pub eps: Option<f64>,
    #[serde(default)]
    pub augment: Augment,
    /// Write .weights every N iterations (None: only at the end).
    pub checkpoint_every: Option<u64>,
    /// Gradient checkpointing: "none" (default), "auto" (fit `memory_budget` with the least
    /// recomputation, or without a budget the smallest plan) or the boundary layers' indices.
    pub checkpointing: Option<CheckpointingSetting>,
    /// Bytes a backend may hold for the network ("6GiB", "512MiB" or a number of bytes): a plan
    /// that needs more is refused, naming the smallest budget that fits.
    pub memory_budget: Option<ByteSize>,
    /// "fp32" (default) or "mixed": f16 activations and gradients, fp32 accumulation and master
    /// weights, with dynamic loss scaling.
    pub precision: Option<PrecisionSetting>,
}

/// `[train] precision`.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum PrecisionSetting {
    Fp32,
    Mixed,
}

/// `[train] checkpointing`: a name or a list of layer indices.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum CheckpointingSetting {
    Name(String),
    Layers(Vec<usize>),
}

impl CheckpointingSetting {
    pub fn resolve(&self) -> Result<engine::network::Checkpointing, String> {
        match self {
            CheckpointingSetting::Name(n) => n.parse(),
            CheckpointingSetting::Layers(l) => Ok(engine::network::Checkpointing::Layers(l.clone())),
        }
    }
}

/// A byte count: text with a unit or a plain number of bytes.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum ByteSize {
    Bytes(u64),
    Text(String),
}

impl ByteSize {
    pub fn bytes(&self) -> Result<u64, String> {
        match self {
            ByteSize::Bytes(0) => Err("a size must be at least one byte".into()),
            ByteSize::Bytes(b) => Ok(*b),
            ByteSize::Text(t) => engine::network::plan::parse_bytes(t),
        }
    }
}

/// Augmentation overrides (darknet-spec §d). `enabled = false` turns every one off.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Augment {
    #[serde(default = "de::yes")]
    pub enabled: bool,
    #[serde(default, deserialize_with = "de::unit_interval_open_opt")]
    pub jitter: Option<f64>,
    /// Darknet `resize` of [yolo] (random rescale of the crop), ≥ 1.
    #[serde(default, deserialize_with = "de::at_least_one_opt")]
    pub resize: Option<f64>,
    #[serde(default, deserialize_with = "de::unit_interval_opt")]
    pub hue: Option<f64>,
    #[serde(default, deserialize_with = "de::at_least_one_opt")]
    pub saturation: Option<f64>,
    #[serde(default, deserialize_with = "de::at_least_one_opt")]
    pub exposure: Option<f64>,
    pub flip: Option<bool>,
    pub mosaic: Option<bool>,
    pub mixup: Option<bool>,
    /// Darknet `blur`: 0 off, 1 background blur, N > 1 kernel size (`true`/`false` = 1/0).
    #[serde(default, deserialize_with = "de::blur_opt")]
    pub blur: Option<u32>,
    /// Darknet `gaussian_noise`: standard deviation in 8-bit units (`false` = 0).
    #[serde(default, deserialize_with = "de::noise_opt")]
    pub gaussian_noise: Option<u32>,
}

impl Default for Augment {
    fn default() -> Self {
        Augment {
            enabled: true,
            jitter: None,
            resize: None,
            hue: None,
            saturation: None,
            exposure: None,
            flip: None,
            mosaic: None,
            mixup: None,
            blur: None,
            gaussian_noise: None,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunMode {
    /// One backend after the other (clean timing and memory per backend).
    #[default]
    Sequential,
    /// All backends at once, iteration by iteration.
    Concurrent,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendsSection {
    /// "cpu", "gpu" (first adapter), "gpu:<index>" or "gpu:<adapter name substring>".
    pub list: Vec<BackendSpec>,
    #[serde(default)]
    pub mode: RunMode,
    /// Worker threads of the CPU backend (default: one per core; `RUNNER_CPU_THREADS` overrides
    /// it). Results do not depend on it.
    #[serde(default, deserialize_with = "de::positive_usize_opt")]
    pub cpu_threads: Option<usize>,
}

/// Parity and resource gates. A `None` gate is not evaluated.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    /// Max |loss_gpu − loss_cpu| / |loss_cpu| at any single iteration (ratio, 0..1).
    #[serde(default, deserialize_with = "de::unit_interval_opt")]
    pub loss_rel_delta_iter: Option<f64>,
    /// The per-iteration gate covers iterations 1..=N only (default: every iteration). After a
    /// few dozen updates two backends' trajectories part for legitimate float reasons (maxpool
    /// near-ties, ignore-threshold flips), so long runs gate the running mean instead.
    #[serde(default)]
    pub loss_rel_delta_iter_first: Option<u64>,
    /// Max running mean of that ratio over `window` iterations (0..1).
    #[serde(default, deserialize_with = "de::unit_interval_opt")]
    pub loss_rel_delta_window: Option<f64>,
    #[serde(default = "de::default_window", deserialize_with = "de::positive_usize")]
    pub window: usize,
    /// Max |mAP@0.5 gpu − cpu| per epoch (absolute, 0..1).
    #[serde(default, deserialize_with = "de::unit_interval_opt")]
    pub map_abs_delta: Option<f64>,
    /// Max RSS growth within an epoch after `warmup_iterations`, bytes.
    pub rss_growth_bytes: Option<u64>,
    /// Max growth of every backend's memory within an epoch after `warmup_iterations`, relative
    /// to the epoch's start: the process RSS over the backend's iterations, and the device bytes
    /// the backend holds over its samples (0..1).
    #[serde(default, deserialize_with = "de::unit_interval_opt")]
    pub memory_growth_rel: Option<f64>,
    /// Max peak RSS of the whole run (sampled every 200 ms from before the networks are built), bytes.
    pub max_rss_bytes: Option<u64>,
    #[serde(default = "de::default_warmup")]
    pub warmup_iterations: u64,
    /// Max swap the run adds: the process's own swap where the OS reports it (Linux), else the
    /// growth of the system's used swap since the run started, bytes.
    pub max_swap_bytes: Option<u64>,
    /// Min GPU images/s ÷ CPU images/s.
    #[serde(default, deserialize_with = "de::positive_opt")]
    pub min_gpu_speedup: Option<f64>,
    /// Min final-epoch mAP@0.5 on the validation split, every backend (0..1): "the model learns".
    #[serde(default, deserialize_with = "de::unit_interval_opt")]
    pub min_map50: Option<f64>,
    /// A classifier's max |final top-1 accuracy − the first backend's| (absolute, 0..1).
    #[serde(default, deserialize_with = "de::unit_interval_opt")]
    pub top1_abs_delta: Option<f64>,
    /// A classifier's min final top-1 accuracy on the validation split, every backend (0..1).
    #[serde(default, deserialize_with = "de::unit_interval_opt")]
    pub min_top1: Option<f64>,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            loss_rel_delta_iter: None,
            loss_rel_delta_iter_first: None,
            loss_rel_delta_window: None,
            window: de::default_window(),
            map_abs_delta: None,
            rss_growth_bytes: None,
            memory_growth_rel: None,
            max_rss_bytes: None,
            warmup_iterations: de::default_warmup(),
            max_swap_bytes: None,
            min_gpu_speedup: None,
            min_map50: None,
            top1_abs_delta: None,
            min_top1: None,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportSection {
    /// Runs are written to `out_dir/<experiment name>-<timestamp>/` (resolved path after `load`).
    #[serde(default = "de::default_out_dir")]
    pub out_dir: PathBuf,
    /// Subset of `reports::run_dir::FORMAT_NAMES`.
    #[serde(default = "de::all_formats", deserialize_with = "de::formats")]
    pub formats: Vec<String>,
}

impl Default for ReportSection {
    fn default() -> Self {
        ReportSection { out_dir: de::default_out_dir(), formats: de::all_formats() }
    }
}

/// A mistake in an experiment file, as one line.
#[derive(Debug)]
pub struct ExperimentError {
    pub file: PathBuf,
    /// 1-based; 0 when the file could not be read at all.
    pub line: usize,
    pub column: usize,
    /// Dotted key path ("train.batch"), empty when unknown.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ExperimentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        // Quoted user text is cut: a 100 MB key or value is not printed whole.
        if !self.key.is_empty() {
            write!(f, ": `{}`", engine::cfg::error::clip_to(&self.key, 4 * engine::cfg::error::CLIP_CHARS))?;
        }
        write!(f, ": {}", engine::cfg::error::clip_to(&self.message, 4 * engine::cfg::error::CLIP_CHARS))
    }
}

impl std::error::Error for ExperimentError {}

/// Reads, parses and validates an experiment file; relative paths become paths from its folder.
pub fn load(path: impl AsRef<Path>) -> Result<Experiment, ExperimentError> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|e| ExperimentError {
        file: path.to_path_buf(),
        line: 0,
        column: 0,
        key: String::new(),
        message: format!("cannot read experiment file: {e}"),
    })?;
    parse(path, &text)
}

/// As [`load`], for text already read (`path` names it in errors and anchors relative paths).
pub fn parse(path: &Path, text: &str) -> Result<Experiment, ExperimentError> {
    let locator = locate::Locator::new(path, text);
    let mut exp: Experiment = toml::from_str(text).map_err(|e| locator.toml_error(&e))?;
    exp.file = path.to_path_buf();
    exp.text = text.to_string();
    validate::validate(&mut exp, &locator)?;
    Ok(exp)
}

impl Experiment {
    /// The folder relative paths in the file are resolved against.
    pub fn base_dir(&self) -> PathBuf {
        base_dir(&self.file)
    }

    /// Number of the synthetic or .data classes.
    pub fn data_classes(&self) -> usize {
        match &self.data.source {
            DataSource::Synthetic(s) => s.classes,
            DataSource::Darknet(d) => d.classes,
        }
    }
}

pub(crate) fn base_dir(file: &Path) -> PathBuf {
    match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}
