//! Everything `runner run` checks before it trains, in one place: `runner check` runs the same
//! checks (plus a full decode of every image), so a run that `check` passes does not stop on
//! something that could be known before training.
//!
//! - the model: it has a loss layer, cfg overrides apply, the graph is consistent, it reads RGB,
//!   no `[yolo] random=1` (multi-scale training is not implemented);
//! - the data: synthetic-set limits, or for a Darknet dataset every list entry, label line and
//!   image header (classes agreeing with the model's heads);
//! - the backends: every GPU named exists and no two name the same adapter;
//! - memory: the network's memory plan per backend and the loader's batches, refused when the
//!   host memory cannot hold them.

use anyhow::{Result, bail};
use engine::cfg::{LayerKind, ModelCfg};
use engine::data::darknet::{DataFile, Dataset, LabelPolicy};
use engine::data::synth::SynthSpec;
use engine::gpu::AdapterInfoRecord;
use engine::network::{BuildOptions, MemoryPlan};

use crate::experiment::{BackendSpec, DataSource, Experiment, GpuSelector, overrides};

/// The data a run trains and validates on.
pub enum Data {
    /// Generated into the run folder when training starts.
    Synthetic(SynthSpec),
    Darknet { train: Dataset, valid: Dataset },
}

/// What the checks found, for `run` to use and `check` to print.
pub struct Plan {
    pub cfg: ModelCfg,
    pub data: Data,
    pub build: BuildOptions,
    /// One line per backend with its memory estimate.
    pub memory: Vec<String>,
}

pub fn check(exp: &Experiment) -> Result<Plan> {
    let cfg = overrides::model_cfg(exp)?;
    check_model(exp, &cfg)?;
    let data = check_data(exp, &cfg)?;
    let adapters = check_backends(&exp.backends.list)?;
    let optimizer = overrides::optimizer(exp, &cfg);
    let (checkpointing, memory_budget) = overrides::memory(exp)?;
    let precision = overrides::precision(exp);
    let build = BuildOptions {
        adam: optimizer == engine::train::Optimizer::Adam,
        max_boxes: 200,
        seed: exp.experiment.seed,
        checkpointing,
        memory_budget,
        precision,
        loss_scaling: precision.needs_loss_scaling(),
        ..Default::default()
    };
    let memory = check_memory(exp, &cfg, &build, &adapters)?;
    Ok(Plan { cfg, data, build, memory })
}

fn cfg_name(exp: &Experiment) -> String {
    match &exp.model.source {
        crate::experiment::ModelSource::File(p) => p.display().to_string(),
        _ => exp.model.cfg.clone(),
    }
}

fn check_model(exp: &Experiment, cfg: &ModelCfg) -> Result<()> {
    cfg.shapes()?;
    let name = cfg_name(exp);
    let heads: Vec<_> = cfg
        .layers
        .iter()
        .filter_map(|l| if let LayerKind::Yolo(y) = &l.kind { Some((y, &l.origin)) } else { None })
        .collect();
    if let Some((_, origin)) = heads.iter().find(|(y, _)| y.random != 0.0) {
        bail!("{origin}: [yolo] random=1 asks for multi-scale training, which this engine does not implement; set random=0 (the network then trains at {}×{})", cfg.net.width, cfg.net.height);
    }
    if cfg.net.channels != 3 {
        bail!("{name}: [net] channels={} but the data loader makes RGB images (3 channels); set channels=3", cfg.net.channels);
    }
    Ok(())
}

/// The classes of the model's [yolo] heads, when they all agree (a classifier's: its loss inputs).
pub fn head_classes(cfg: &ModelCfg) -> Option<usize> {
    if cfg.is_classifier() {
        return cfg.classifier_classes();
    }
    let mut classes = cfg.layers.iter().filter_map(|l| if let LayerKind::Yolo(y) = &l.kind { Some(y.classes) } else { None });
    let first = classes.next()?;
    classes.all(|c| c == first).then_some(first)
}

fn check_data(exp: &Experiment, cfg: &ModelCfg) -> Result<Data> {
    // The data's class count must be the heads'; `source` names where the data's count is set.
    let same_classes = |source: String, classes: usize| -> Result<()> {
        match head_classes(cfg) {
            Some(c) if c == classes => Ok(()),
            heads => bail!(
                "{source}: classes = {classes} but {}'s [yolo] layers have classes={} (set [model] classes = {classes} to retrain the heads)",
                cfg_name(exp),
                heads.map_or("(several)".into(), |c| c.to_string()),
            ),
        }
    };
    match &exp.data.source {
        DataSource::Synthetic(s) => {
            let spec = synth_spec(exp, s, cfg);
            spec.validate().map_err(|e| anyhow::anyhow!("{}: `data.synthetic`: {e}", exp.file.display()))?;
            same_classes(format!("{} (data.synthetic)", exp.file.display()), s.classes)?;
            Ok(Data::Synthetic(spec))
        }
        DataSource::Darknet(d) => {
            let data = DataFile::load(&d.data_file)?;
            data.class_names()?;
            same_classes(d.data_file.display().to_string(), data.classes)?;
            if data.is_classifier() != cfg.is_classifier() {
                let (d_kind, m_kind) = if data.is_classifier() { ("a classifier's (it has `labels`)", "a detector") } else { ("a detector's (no `labels`)", "a classifier") };
                bail!("{}: this dataset is {d_kind} but {} is {m_kind}", d.data_file.display(), cfg_name(exp));
            }
            let train = data.train_set(LabelPolicy::Strict)?;
            let valid = if data.valid.is_some() { data.valid_set(LabelPolicy::Strict)? } else { train.clone() };
            for set in [&train, &valid] {
                set.check_images(false)?;
            }
            Ok(Data::Darknet { train, valid })
        }
    }
}

/// The synthetic dataset of the experiment at the model's input size.
pub fn synth_spec(exp: &Experiment, s: &crate::experiment::SyntheticData, cfg: &ModelCfg) -> SynthSpec {
    let side = cfg.net.width.min(cfg.net.height).max(1) as f32;
    SynthSpec {
        classes: s.classes,
        train_images: s.images,
        val_images: s.val_images,
        width: cfg.net.width,
        height: cfg.net.height,
        min_size: s.min_size as f32 / side,
        max_size: s.max_size as f32 / side,
        max_objects: s.max_objects,
        seed: s.seed.unwrap_or(exp.experiment.seed),
        classify: cfg.is_classifier(),
    }
}

/// Every GPU named must exist, and two names must not pick the same adapter (which would train
/// twice on one device and call it a comparison). Returns the adapter each GPU backend opens.
pub fn check_backends(list: &[BackendSpec]) -> Result<Vec<(BackendSpec, AdapterInfoRecord)>> {
    let gpus: Vec<&GpuSelector> = list.iter().filter_map(|b| if let BackendSpec::Gpu(g) = b { Some(g) } else { None }).collect();
    if gpus.is_empty() {
        return Ok(Vec::new());
    }
    let adapters = engine::gpu::list_adapters();
    let mut picked: Vec<(usize, &GpuSelector)> = Vec::new();
    for sel in gpus {
        let i = resolve(sel, &adapters)?;
        if let Some((_, other)) = picked.iter().find(|(j, _)| *j == i) {
            let (a, b) = (BackendSpec::Gpu((*other).clone()), BackendSpec::Gpu(sel.clone()));
            bail!("backends `{a}` and `{b}` are the same adapter ([{i}] {}): list it once", adapters[i].name);
        }
        picked.push((i, sel));
    }
    Ok(picked.into_iter().map(|(i, sel)| (BackendSpec::Gpu(sel.clone()), adapters[i].clone())).collect())
}

/// The adapter (index in [`engine::gpu::list_adapters`]) that the GPU backend opens for `sel`,
/// following its rules (environment variables included).
fn resolve(sel: &GpuSelector, adapters: &[AdapterInfoRecord]) -> Result<usize> {
    let s = sel.adapter_selector().with_env();
    if adapters.is_empty() {
        bail!("no GPU adapter found: {}", engine::gpu::INSTALL_HINT);
    }
    let names = || adapters.iter().map(|a| format!("[{}] {}", a.index, a.name)).collect::<Vec<_>>().join(", ");
    let chosen = if let Some(i) = s.index {
        if i >= adapters.len() {
            bail!("backend `gpu:{i}`: adapter index {i} out of range: {} adapter(s) found: {}", adapters.len(), names());
        }
        i
    } else {
        let want = s.name.as_deref().map(str::to_lowercase);
        let candidates: Vec<&AdapterInfoRecord> =
            adapters.iter().filter(|a| want.as_ref().is_none_or(|w| a.name.to_lowercase().contains(w))).collect();
        if candidates.is_empty() {
            bail!("backend `gpu:{}`: no adapter name contains it; available: {}", s.name.unwrap_or_default(), names());
        }
        let low = s.power == Some(wgpu::PowerPreference::LowPower);
        candidates.iter().min_by_key(|a| rank(a, low)).map(|a| a.index).unwrap_or(0)
    };
    if !adapters[chosen].compute_capable {
        bail!("adapter [{chosen}] {} cannot run compute shaders (backend {})", adapters[chosen].name, adapters[chosen].backend);
    }
    Ok(chosen)
}

/// The GPU backend's preference order for automatic choice (lower is better): native APIs over
/// GL, discrete over integrated (or the reverse for low power), software renderers last.
fn rank(a: &AdapterInfoRecord, low_power: bool) -> u32 {
    let t = match (low_power, a.device_type.as_str()) {
        (true, "integrated") => 0,
        (true, "discrete") => 1,
        (_, "discrete") => 0,
        (_, "integrated") => 1,
        (_, "virtual") => 2,
        (_, "cpu") => 4,
        _ => 3,
    };
    u32::from(a.backend == "gl") * 10 + t + if a.compute_capable { 0 } else { 100 }
}

const GIB: f64 = (1u64 << 30) as f64;

fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / GIB)
}

/// Memory per backend from the network's memory plan; a run whose host part cannot fit in this
/// machine's memory is refused (rather than aborting on an allocation later).
fn check_memory(
    exp: &Experiment,
    cfg: &ModelCfg,
    build: &BuildOptions,
    adapters: &[(BackendSpec, AdapterInfoRecord)],
) -> Result<Vec<String>> {
    let plan = MemoryPlan::of(cfg, build).map_err(|e| anyhow::anyhow!("{}: {e}", exp.file.display()))?;
    // A GPU holds buffers up to its buffer limit and binds tensors in ranges of images.
    for (spec, a) in adapters {
        let limits = engine::network::BufferLimits { buffer: a.max_buffer_floats(), binding: a.max_binding_floats() };
        plan.check_fits(cfg, build, limits, &format!("{spec} ({})", a.name))
            .map_err(|e| anyhow::anyhow!("{}: {e}", exp.file.display()))?;
    }
    // The CPU backend's conv scratch: im2col columns per worker thread (one per core unless set).
    let threads = super::cpu_thread_count(exp.backends.cpu_threads);
    let workspace = 4 * plan.cpu_workspace(threads) as u64;
    let net_bytes = plan.build_bytes() + workspace;
    // The loader keeps `prefetch` batches in flight plus the one being trained on, and the
    // validation network makes mini-batches of its own.
    let batch_bytes = 4 * (cfg.net.batch * 3 * cfg.net.width * cfg.net.height) as u64;
    let loader_bytes = 6 * batch_bytes;
    let mut host = loader_bytes;
    let mut lines = Vec::new();
    for b in &exp.backends.list {
        let checkpointing = if plan.boundaries > 0 {
            format!(
                ", checkpointing in {} segments (recomputes {:.0}% of the forward FLOPs)",
                plan.boundaries + 1,
                100.0 * plan.recompute_fraction()
            )
        } else {
            String::new()
        };
        let detail = format!(
            "parameters and optimiser state {}, activations {} shared by lifetime ({} without sharing){checkpointing}, largest buffer {}",
            gib(4 * plan.state as u64),
            gib(4 * plan.activations as u64),
            gib(4 * plan.unshared as u64),
            gib(4 * plan.largest as u64)
        );
        match b {
            BackendSpec::Cpu => {
                host += net_bytes;
                lines.push(format!("{b}: about {} of host memory ({detail}, convolution workspace {})", gib(net_bytes), gib(workspace)));
            }
            BackendSpec::Gpu(_) => lines.push(format!("{b}: about {} of device memory ({detail})", gib(plan.build_bytes()))),
        }
    }
    lines.push(format!("data loader: about {} of host memory ({} batches of {})", gib(loader_bytes), 6, gib(batch_bytes)));
    let mut sys = sysinfo::System::new();
    sys.refresh_memory();
    let total = sys.total_memory();
    if total > 0 && host > total {
        bail!(
            "{}: this run needs about {} of host memory ({}×{}, batch {}, backends {}) but this machine has {}; lower width/height or batch (or raise subdivisions)",
            exp.file.display(),
            gib(host),
            cfg.net.width,
            cfg.net.height,
            cfg.net.batch,
            exp.backends.list.iter().map(|b| b.to_string()).collect::<Vec<_>>().join(", "),
            gib(total)
        );
    }
    Ok(lines)
}
