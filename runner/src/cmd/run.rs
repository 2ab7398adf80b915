//! `runner run EXPERIMENT.toml`: train every backend of the experiment from one initial weight
//! set on the same batches, record everything, write the report folder and gate.
//! Exit code: 0 every gate holds, 1 a gate failed, 2 an error (partial results still written).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use engine::cfg::ModelCfg;
use engine::cpu::CpuBackend;
use engine::data::darknet::{DataFile, Dataset, LabelPolicy};
use engine::data::image::Augment;
use engine::data::loader::{BatchPlan, Loader, LoaderConfig, Stop};
use engine::data::synth::SynthSpec;
use engine::eval::map::MapAccumulator;
use engine::gpu::{AdapterSelector, GpuBackend};
use engine::network::{BuildOptions, Network};
use engine::train::{StepRecord, Trainer};
use engine::Backend;
use reports::{DeviceInfo, EpochRecord, IterationRecord, OutputFormats, RunData, RunSummary};

use super::{gates, new_run_dir};
use super::memory::MemorySampler;
use super::progress::Progress;
use crate::experiment::{self, BackendSpec, DataSource, Experiment, GpuSelector, ModelSource, RunMode};

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

/// One backend's trainer, behind one type.
enum Lane {
    Cpu(Trainer<CpuBackend>),
    Gpu(Trainer<GpuBackend>),
}

impl Lane {
    fn step(&mut self, images: &[f32], truths: &[f32]) -> Result<StepRecord> {
        Ok(match self {
            Lane::Cpu(t) => t.step(images, truths)?,
            Lane::Gpu(t) => t.step(images, truths)?,
        })
    }
    fn gpu_bytes(&self) -> u64 {
        match self {
            Lane::Cpu(_) => 0,
            Lane::Gpu(t) => t.net.memory_bytes().0,
        }
    }
    fn load_weights(&self, path: &Path) -> Result<()> {
        match self {
            Lane::Cpu(t) => t.net.load_weights(path)?,
            Lane::Gpu(t) => t.net.load_weights(path)?,
        };
        Ok(())
    }
    fn conv_params(&self) -> Vec<Option<engine::weights::ConvParams>> {
        match self {
            Lane::Cpu(t) => t.net.conv_params(),
            Lane::Gpu(t) => t.net.conv_params(),
        }
    }
    fn set_conv_params(&self, params: &[Option<engine::weights::ConvParams>]) {
        match self {
            Lane::Cpu(t) => t.net.set_conv_params(params),
            Lane::Gpu(t) => t.net.set_conv_params(params),
        }
    }
    fn iteration(&self) -> u64 {
        match self {
            Lane::Cpu(t) => t.iteration,
            Lane::Gpu(t) => t.iteration,
        }
    }
    fn save_checkpoint(&self, path: &Path, tag: &str) -> Result<()> {
        match self {
            Lane::Cpu(t) => t.save_checkpoint(path, tag)?,
            Lane::Gpu(t) => t.save_checkpoint(path, tag)?,
        }
        Ok(())
    }
    fn resume(&mut self, path: &Path) -> Result<engine::checkpoint::CheckpointInfo> {
        Ok(match self {
            Lane::Cpu(t) => t.resume(path)?,
            Lane::Gpu(t) => t.resume(path)?,
        })
    }
    fn evaluate(&self, val: &BatchPlan, classes: usize) -> Result<MapAccumulator> {
        match self {
            Lane::Cpu(t) => evaluate(&t.net, val, classes),
            Lane::Gpu(t) => evaluate(&t.net, val, classes),
        }
    }
}

fn evaluate<B: Backend>(net: &Network<B>, val: &BatchPlan, classes: usize) -> Result<MapAccumulator> {
    let mut acc = MapAccumulator::new(classes);
    let mut cache = None;
    for i in 0..val.num_batches() {
        let batch = val.make_batch(i, &mut cache)?;
        net.evaluate_batch(&batch, &mut acc)?;
    }
    Ok(acc)
}

/// The experiment's model cfg with its overrides applied.
pub fn model_cfg(exp: &Experiment) -> Result<ModelCfg> {
    let (mut cfg, warnings) = match &exp.model.source {
        ModelSource::Builtin(name) => engine::cfg::load(name)?,
        ModelSource::File(p) => engine::cfg::parse_file(p)?,
        ModelSource::Unresolved => bail!("{}: [model] cfg was not resolved", exp.file.display()),
    };
    for w in warnings {
        eprintln!("{w}");
    }
    if let Some(c) = exp.model.classes {
        cfg.set_classes(c)?;
    }
    if exp.model.width.is_some() || exp.model.height.is_some() {
        cfg.set_size(exp.model.width.unwrap_or(cfg.net.width), exp.model.height.unwrap_or(cfg.net.height))?;
    }
    let t = &exp.train;
    if t.batch.is_some() || t.subdivisions.is_some() {
        cfg.set_batch(t.batch.unwrap_or(cfg.net.batch), t.subdivisions.unwrap_or(cfg.net.subdivisions))?;
    }
    let n = &mut cfg.net;
    if let Some(v) = t.learning_rate { n.learning_rate = v as f32; }
    if let Some(v) = t.momentum { n.momentum = v as f32; }
    if let Some(v) = t.decay { n.decay = v as f32; }
    if let Some(v) = t.burn_in { n.burn_in = v; }
    if let Some(v) = t.power { n.power = v as f32; }
    if let Some(v) = t.max_batches { n.max_batches = v; }
    if let Some(v) = t.learning_rate_min { n.learning_rate_min = v as f32; }
    if let Some(p) = t.policy {
        use crate::experiment::PolicyName as P;
        use engine::cfg::Policy;
        n.policy = match p {
            P::Constant => Policy::Constant,
            P::Step => Policy::Step { step: t.step.unwrap_or(1), scale: t.scale.unwrap_or(1.0) as f32 },
            P::Steps => Policy::Steps {
                steps: t.steps.clone().unwrap_or_default(),
                scales: t.scales.clone().unwrap_or_default().iter().map(|&s| s as f32).collect(),
            },
            P::Exp => Policy::Exp { gamma: t.gamma.unwrap_or(1.0) as f32 },
            P::Poly => Policy::Poly,
            P::Sig => Policy::Sig { gamma: t.gamma.unwrap_or(1.0) as f32, step: t.step.unwrap_or(1) },
            P::Random => Policy::Random,
            P::Sgdr => Policy::Sgdr { cycle: t.sgdr_cycle.unwrap_or(n.max_batches), mult: t.sgdr_mult.unwrap_or(2) },
        };
    }
    Ok(cfg)
}

/// Augmentation from the cfg (`[net]` + last `[yolo]` jitter/resize) with the experiment's switches.
fn augment(exp: &Experiment, cfg: &ModelCfg) -> Result<Augment> {
    let a = &exp.train.augment;
    if !a.enabled {
        return Ok(Augment { letter_box: exp.data.letterbox.unwrap_or(cfg.net.letter_box), ..Augment::NONE });
    }
    let (jitter, resize) = cfg
        .layers
        .iter()
        .rev()
        .find_map(|l| match &l.kind {
            engine::cfg::LayerKind::Yolo(y) => Some((y.jitter, y.resize)),
            _ => None,
        })
        .unwrap_or((0.0, 1.0));
    let mut aug = Augment::from_cfg(&cfg.net, a.jitter.map(|v| v as f32).unwrap_or(jitter), a.resize.map(|v| v as f32).unwrap_or(resize));
    if let Some(v) = a.hue { aug.hue = v as f32; }
    if let Some(v) = a.saturation { aug.saturation = v as f32; }
    if let Some(v) = a.exposure { aug.exposure = v as f32; }
    if let Some(v) = a.flip { aug.flip = v; }
    if let Some(v) = a.mosaic { aug.mosaic = v; }
    if let Some(v) = a.mixup { aug.mixup = v; }
    if let Some(v) = a.blur { aug.blur = v; }
    if let Some(v) = a.gaussian_noise { aug.gaussian_noise = v; }
    if let Some(v) = exp.data.letterbox { aug.letter_box = v; }
    Ok(aug)
}

fn datasets(exp: &Experiment, cfg: &ModelCfg, run_dir: &Path) -> Result<(Dataset, Dataset, Vec<String>)> {
    let data = match &exp.data.source {
        DataSource::Synthetic(s) => {
            let spec = SynthSpec {
                classes: s.classes,
                train_images: s.images,
                val_images: s.val_images,
                width: cfg.net.width,
                height: cfg.net.height,
                min_size: s.min_size as f32 / cfg.net.width.min(cfg.net.height) as f32,
                max_size: s.max_size as f32 / cfg.net.width.min(cfg.net.height) as f32,
                max_objects: s.max_objects,
                seed: s.seed.unwrap_or(exp.experiment.seed),
            };
            spec.write(&run_dir.join("data"))?
        }
        DataSource::Darknet(d) => DataFile::load(&d.data_file)?,
    };
    let names = data.class_names()?;
    let train = data.train_set(LabelPolicy::Strict)?;
    let valid = if data.valid.is_some() { data.valid_set(LabelPolicy::Strict)? } else { data.train_set(LabelPolicy::Strict)? };
    Ok((train, valid, names))
}

fn lane(spec: &BackendSpec, cfg: &ModelCfg, opts: &BuildOptions, optimizer: engine::train::Optimizer) -> Result<(Lane, DeviceInfo)> {
    Ok(match spec {
        BackendSpec::Cpu => {
            let net = Network::build(CpuBackend::new(), cfg.clone(), opts)?;
            let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
            let mut details = std::collections::BTreeMap::new();
            details.insert("threads".into(), threads.to_string());
            (Lane::Cpu(Trainer::new(net, optimizer)), DeviceInfo { backend: "cpu".into(), name: std::env::consts::ARCH.into(), details })
        }
        BackendSpec::Gpu(sel) => {
            let selector = match sel {
                GpuSelector::First => AdapterSelector::default(),
                GpuSelector::Index(i) => AdapterSelector::by_index(*i),
                GpuSelector::Name(n) => AdapterSelector::by_name(n),
            };
            let backend = GpuBackend::new(&selector)?;
            let info = backend.adapter_info().clone();
            let mut details = std::collections::BTreeMap::new();
            details.insert("adapter".into(), info.to_string());
            let name = spec.to_string();
            let net = Network::build(backend, cfg.clone(), opts)?;
            (Lane::Gpu(Trainer::new(net, optimizer)), DeviceInfo { backend: name, name: info.name.clone(), details })
        }
    })
}

pub fn run(a: &RunArgs) -> Result<ExitCode> {
    let started = Instant::now();
    let exp = experiment::load(&a.experiment)?;
    let cfg = model_cfg(&exp)?;
    // `[report] out_dir` is already resolved against the experiment file's folder.
    let out_dir = a.out.clone().unwrap_or_else(|| exp.report.out_dir.clone());
    let run_dir = new_run_dir(&out_dir, &exp.experiment.name)?;
    println!("run folder: {}", run_dir.display());
    let formats = OutputFormats::from_names(&exp.report.formats).map_err(anyhow::Error::msg)?;
    let sampler = MemorySampler::start();

    let mut run = Recorder { gpu_bytes: sampler.gpu_bytes.clone(), ..Default::default() };
    let result = train(&exp, &cfg, &run_dir, a.resume.as_deref(), &mut run);
    let memory = sampler.stop();
    let mut summary = RunSummary {
        experiment_name: exp.experiment.name.clone(),
        experiment_hash: super::hash_hex(exp.text.as_bytes()),
        git_commit: super::git_commit(),
        seed: exp.experiment.seed,
        started_at: super::now_rfc3339(),
        wall_time_s: started.elapsed().as_secs_f64(),
        versions: super::versions(),
        devices: run.devices.clone(),
        ..Default::default()
    };
    summary.parity.window = exp.thresholds.window;
    summary.parity.loss_rel_delta_iter = exp.thresholds.loss_rel_delta_iter;
    summary.parity.loss_rel_delta_window = exp.thresholds.loss_rel_delta_window;
    if let Err(e) = &result {
        summary.extra.insert("error".into(), format!("{e:#}"));
    }
    if let Some(r) = &run.resumed_from {
        summary.extra.insert("resumed_from".into(), r.clone());
    }
    let mut data = RunData::new(run.iterations, run.epochs, memory, summary, Vec::new(), exp.text.clone());
    data.gates = gates::evaluate(&exp, &data);
    let files = reports::write_run(&run_dir, &data, formats)?;
    println!("{}", data.gate_report().markdown(&data.summary));
    let html = files.files.iter().find(|p| p.extension().is_some_and(|e| e == "html"));
    println!("report: {}", html.unwrap_or(&run_dir).display());
    match result {
        Err(e) => Err(e.context(format!("run stopped; partial results in {}", run_dir.display()))),
        Ok(()) if data.gates.iter().all(|g| g.pass) => Ok(ExitCode::SUCCESS),
        Ok(()) => Ok(ExitCode::from(1)),
    }
}

#[derive(Default)]
struct Recorder {
    /// Shared with the memory sampler: device bytes of the GPU backends, for the timeline.
    gpu_bytes: Arc<std::sync::atomic::AtomicU64>,
    iterations: Vec<IterationRecord>,
    epochs: Vec<EpochRecord>,
    devices: Vec<DeviceInfo>,
    /// "<run folder> @ iteration N" when the run continued an earlier one.
    resumed_from: Option<String>,
}

/// Where a backend's checkpoints live in a run folder: `checkpoints/<backend>/` (`gpu:0` → `gpu_0`).
fn checkpoint_dir(run_dir: &Path, lane: &str) -> PathBuf {
    let safe: String = lane.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
    run_dir.join("checkpoints").join(safe)
}

/// A lane's checkpoint `<name>_<iteration>.weights` (with its `.state` beside it).
fn checkpoint_path(run_dir: &Path, lane_name: &str, name: &str, lane: &Lane) -> PathBuf {
    checkpoint_dir(run_dir, lane_name).join(format!("{name}_{}.weights", lane.iteration()))
}

/// Every lane's checkpoint at its current iteration.
fn save_checkpoints(lanes: &[(String, Lane)], run_dir: &Path, name: &str, tag: &str, progress: &mut Progress) -> Result<()> {
    for (lane_name, lane) in lanes {
        let dir = checkpoint_dir(run_dir, lane_name);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = checkpoint_path(run_dir, lane_name, name, lane);
        lane.save_checkpoint(&path, tag).with_context(|| format!("backend {lane_name}: saving a checkpoint"))?;
        progress.line(&format!("{lane_name}: checkpoint {}", path.display()));
    }
    Ok(())
}

/// Darknet's `<name>_final.weights`: a copy of each lane's checkpoint at its current iteration.
fn copy_final_weights(lanes: &[(String, Lane)], run_dir: &Path, name: &str) -> Result<()> {
    for (lane_name, lane) in lanes {
        let fin = checkpoint_dir(run_dir, lane_name).join(format!("{name}_final.weights"));
        std::fs::copy(checkpoint_path(run_dir, lane_name, name, lane), &fin).with_context(|| format!("writing {}", fin.display()))?;
    }
    Ok(())
}

/// Load every lane's latest checkpoint from an earlier run folder; returns the iteration.
fn resume_lanes(lanes: &mut [(String, Lane)], from: &Path, name: &str, tag: &str) -> Result<u64> {
    let mut start = None;
    for (lane_name, lane) in lanes.iter_mut() {
        let dir = checkpoint_dir(from, lane_name);
        if !dir.is_dir() {
            bail!("{}: no checkpoints of backend {lane_name} in this run folder (is it a run of this experiment with [train] checkpoint_every?)", dir.display());
        }
        let (it, path) = engine::checkpoint::latest(&dir, name)?
            .ok_or_else(|| anyhow::anyhow!("{}: no checkpoint `{name}_<iteration>.weights` with its .state", dir.display()))?;
        let info = lane.resume(&path).with_context(|| format!("backend {lane_name}"))?;
        if info.tag != tag {
            eprintln!("warning: {}: written by another version of the experiment file (hash {}, now {tag}); resuming anyway", path.display(), info.tag);
        }
        println!("{lane_name}: resuming from {} (iteration {it})", path.display());
        match start {
            None => start = Some(it),
            Some(s) if s != it => bail!("{}: backends' latest checkpoints are at different iterations ({s} and {it}); resume needs one iteration for all", from.display()),
            Some(_) => {}
        }
    }
    Ok(start.unwrap_or(0))
}

fn train(exp: &Experiment, cfg: &ModelCfg, run_dir: &Path, resume: Option<&Path>, rec: &mut Recorder) -> Result<()> {
    let (train_set, valid_set, _names) = datasets(exp, cfg, run_dir)?;
    let classes = exp.data_classes();
    let optimizer = match exp.train.optimizer {
        Some(experiment::Optimizer::Adam) => engine::train::Optimizer::Adam,
        Some(experiment::Optimizer::Sgd) => engine::train::Optimizer::Sgd,
        None if cfg.net.adam => engine::train::Optimizer::Adam,
        None => engine::train::Optimizer::Sgd,
    };
    let opts = BuildOptions { adam: optimizer == engine::train::Optimizer::Adam, max_boxes: 200, seed: exp.experiment.seed };
    let mut lanes = Vec::new();
    for spec in &exp.backends.list {
        let (lane, info) = lane(spec, cfg, &opts, optimizer)?;
        rec.devices.push(info);
        lanes.push((spec.to_string(), lane));
    }
    // One initial weight set: the first lane's (initialised from the seed, or loaded), copied.
    if let Some(w) = &exp.model.weights {
        lanes[0].1.load_weights(w)?;
    }
    let params = lanes[0].1.conv_params();
    for (_, l) in lanes.iter().skip(1) {
        l.set_conv_params(&params);
    }
    let tag = super::hash_hex(exp.text.as_bytes());
    let exp_name = exp.experiment.name.as_str();
    let start = match resume {
        Some(from) => {
            let it = resume_lanes(&mut lanes, from, exp_name, &tag)?;
            rec.resumed_from = Some(format!("{} @ iteration {it}", from.display()));
            it
        }
        None => 0,
    };

    let stop = match (exp.train.epochs, exp.train.max_batches) {
        (Some(e), _) => Stop::Epochs(e),
        (None, Some(n)) => Stop::Batches(n),
        (None, None) => Stop::Batches(cfg.net.max_batches.max(1)),
    };
    let mut lc = LoaderConfig::training(cfg.net.batch, cfg.net.width, cfg.net.height, exp.experiment.seed, augment(exp, cfg)?, stop);
    lc.shuffle = exp.data.shuffle;
    lc.start_batch = start;
    let mut loader = Loader::new(Arc::new(train_set), lc)?;
    let mini = cfg.net.batch / cfg.net.subdivisions;
    let val = BatchPlan::new(Arc::new(valid_set), LoaderConfig::validation(mini, cfg.net.width, cfg.net.height))?;
    let total = loader.remaining();
    if total == 0 {
        bail!("nothing to train: the run already reached its last iteration ({start}); raise max_batches or epochs to continue");
    }
    let mut progress = Progress::new(&lanes.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(), total);
    // The epoch of the first batch (not 0 when resuming); set from the first batch.
    let mut epoch = None;
    let checkpoint_due = |iteration: u64| exp.train.checkpoint_every.is_some_and(|n| iteration % n == 0);
    let evaluate_epoch = |lanes: &Vec<(String, Lane)>, epoch: u64, rec: &mut Recorder, progress: &mut Progress| -> Result<()> {
        for (name, lane) in lanes {
            let acc = lane.evaluate(&val, classes)?;
            let r = acc.summary(0, 0.5, 0.25);
            let e = EpochRecord {
                backend: name.clone(),
                epoch,
                map50: r.map,
                map50_95: acc.map_coco(0),
                precision: r.precision,
                recall: r.recall,
                f1: r.f1,
            };
            progress.line(&format!("{name} epoch {epoch}: mAP@0.5 {:.4}  mAP@[.5:.95] {:.4}  P {:.3} R {:.3} F1 {:.3}", e.map50, e.map50_95, e.precision, e.recall, e.f1));
            rec.epochs.push(e);
        }
        Ok(())
    };
    while let Some(batch) = loader.next_batch() {
        let batch = batch?;
        let t_data = loader.last_wait().as_secs_f64();
        if let Some(e) = epoch.filter(|&e| e != batch.epoch) {
            evaluate_epoch(&lanes, e, rec, &mut progress)?;
        }
        epoch = Some(batch.epoch);
        // Sequential: one backend after the other on this thread (clean timings). Concurrent:
        // every backend steps on its own thread at once, on the same batch.
        let steps: Vec<(Result<StepRecord>, f64, u64)> = if exp.backends.mode == RunMode::Concurrent {
            std::thread::scope(|s| {
                let handles: Vec<_> = lanes
                    .iter_mut()
                    .map(|(_, lane)| {
                        let b = &batch;
                        s.spawn(move || {
                            let t0 = Instant::now();
                            let r = lane.step(&b.images, &b.truths);
                            (r, t0.elapsed().as_secs_f64(), lane.gpu_bytes())
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap_or_else(|_| (Err(anyhow::anyhow!("a backend thread panicked")), 0.0, 0))).collect()
            })
        } else {
            lanes
                .iter_mut()
                .map(|(_, lane)| {
                    let t0 = Instant::now();
                    let r = lane.step(&batch.images, &batch.truths);
                    (r, t0.elapsed().as_secs_f64(), lane.gpu_bytes())
                })
                .collect()
        };
        let device_bytes: u64 = steps.iter().map(|(_, _, b)| b).sum();
        rec.gpu_bytes.store(device_bytes, std::sync::atomic::Ordering::Relaxed);
        for ((name, _), (s, dt, gpu_bytes)) in lanes.iter().zip(steps) {
            let s = s.with_context(|| format!("backend {name}"))?;
            let r = IterationRecord {
                backend: name.clone(),
                iteration: s.iteration,
                epoch: batch.epoch,
                loss: s.loss,
                box_loss: s.box_loss,
                obj_loss: s.obj_loss,
                class_loss: s.class_loss,
                avg_iou: s.avg_iou,
                recall50: s.recall50,
                recall75: s.recall75,
                count: s.count,
                lr: s.lr as f64,
                images_per_s: batch.n as f64 / dt.max(1e-9),
                t_data_s: t_data,
                t_forward_s: s.t_forward,
                t_backward_s: s.t_backward,
                t_update_s: s.t_update,
                t_sync_s: s.t_sync,
                rss_bytes: super::memory::rss_bytes(),
                gpu_bytes,
            };
            progress.step(name, &r);
            rec.iterations.push(r);
        }
        if checkpoint_due(lanes[0].1.iteration()) {
            save_checkpoints(&lanes, run_dir, exp_name, &tag, &mut progress)?;
        }
    }
    if let Some(e) = epoch {
        evaluate_epoch(&lanes, e, rec, &mut progress)?;
    }
    // The final weights, always: `<name>_<last>.weights` (+ .state, resumable) unless the last
    // iteration was just saved, and `<name>_final.weights`.
    if !checkpoint_due(lanes[0].1.iteration()) {
        save_checkpoints(&lanes, run_dir, exp_name, &tag, &mut progress)?;
    }
    copy_final_weights(&lanes, run_dir, exp_name)?;
    progress.finish();
    Ok(())
}
