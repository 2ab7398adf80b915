//! One backend of a run behind one object-safe trait: the training loop, checkpoints and the
//! epoch evaluation are written once for `dyn Lane`, whatever the backend.

use std::path::Path;

use anyhow::Result;
use engine::Backend;
use engine::checkpoint::{CheckpointError, CheckpointInfo};
use engine::data::loader::BatchPlan;
use engine::eval::map::MapAccumulator;
use engine::gpu::GpuBackend;
use engine::network::{BuildOptions, Network};
use engine::profile::KernelTable;
use engine::train::{StepRecord, TrainError, Trainer};
use engine::weights::ConvParams;
use engine::cfg::ModelCfg;
use reports::DeviceInfo;

use crate::experiment::BackendSpec;

/// What the runner asks of one backend's trainer.
pub trait Lane: Send {
    /// One training iteration on `images` / `truths` (the whole batch).
    fn step(&mut self, images: &[f32], truths: &[f32]) -> Result<StepRecord, TrainError>;
    /// Iterations completed.
    fn iteration(&self) -> u64;
    /// Bytes this backend holds on its device now.
    fn device_bytes(&self) -> u64;
    fn load_weights(&self, path: &Path) -> Result<()>;
    fn conv_params(&self) -> Vec<Option<ConvParams>>;
    fn set_conv_params(&self, params: &[Option<ConvParams>]);
    fn save_checkpoint(&self, path: &Path, tag: &str) -> Result<(), CheckpointError>;
    fn resume(&mut self, path: &Path) -> Result<CheckpointInfo, CheckpointError>;
    /// mAP accumulation over every batch of `val`.
    fn evaluate(&self, val: &BatchPlan, classes: usize) -> Result<MapAccumulator>;
}

impl<B: Backend> Lane for Trainer<B>
where
    Trainer<B>: Send,
{
    fn step(&mut self, images: &[f32], truths: &[f32]) -> Result<StepRecord, TrainError> {
        Trainer::step(self, images, truths)
    }
    fn iteration(&self) -> u64 {
        self.iteration
    }
    fn device_bytes(&self) -> u64 {
        self.net.memory_bytes().0
    }
    fn load_weights(&self, path: &Path) -> Result<()> {
        self.net.load_weights(path)?;
        Ok(())
    }
    fn conv_params(&self) -> Vec<Option<ConvParams>> {
        self.net.conv_params()
    }
    fn set_conv_params(&self, params: &[Option<ConvParams>]) {
        self.net.set_conv_params(params)
    }
    fn save_checkpoint(&self, path: &Path, tag: &str) -> Result<(), CheckpointError> {
        Trainer::save_checkpoint(self, path, tag)
    }
    fn resume(&mut self, path: &Path) -> Result<CheckpointInfo, CheckpointError> {
        Trainer::resume(self, path)
    }
    fn evaluate(&self, val: &BatchPlan, classes: usize) -> Result<MapAccumulator> {
        evaluate(&self.net, val, classes)
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

/// A backend of the run: its name in records (the experiment's spelling), what it runs on, and
/// whether its device bytes are GPU memory (recorded as `gpu_bytes`).
pub struct Slot {
    pub name: String,
    pub lane: Box<dyn Lane>,
    pub device: DeviceInfo,
    pub is_gpu: bool,
    /// Device time per layer × phase × kernel over the run's steps (GPU timestamps).
    pub kernels: KernelTable,
}

impl Slot {
    /// GPU bytes for the records (0 for the CPU, whose "device" is host memory).
    pub fn gpu_bytes(&self) -> u64 {
        if self.is_gpu { self.lane.device_bytes() } else { 0 }
    }
}

/// Builds the network of `spec` and its trainer.
pub fn build(
    spec: &BackendSpec, cfg: &ModelCfg, opts: &BuildOptions, optimizer: engine::train::Optimizer, cpu_threads: Option<usize>,
) -> Result<Slot> {
    let name = spec.to_string();
    Ok(match spec {
        BackendSpec::Cpu => {
            let cpu = crate::cmd::cpu_backend(cpu_threads)?;
            let threads = cpu.threads();
            let net = Network::build(cpu, cfg.clone(), opts)?;
            let mut details = std::collections::BTreeMap::new();
            details.insert("threads".into(), threads.to_string());
            let device = DeviceInfo { backend: name.clone(), name: std::env::consts::ARCH.into(), details };
            Slot { name, lane: Box::new(Trainer::new(net, optimizer)), device, is_gpu: false, kernels: KernelTable::default() }
        }
        BackendSpec::Gpu(sel) => {
            let backend = GpuBackend::new(&sel.adapter_selector())?;
            let info = backend.adapter_info().clone();
            let mut details = std::collections::BTreeMap::new();
            details.insert("adapter".into(), info.to_string());
            let timed = backend.timing();
            details.insert("timestamps".into(), if timed { "on" } else { "unsupported: host time only" }.into());
            if !timed {
                eprintln!("note: {} has no timestamp queries: {name} records host time only (no per-layer GPU time)", info.name);
            }
            let net = Network::build(backend, cfg.clone(), opts)?;
            let device = DeviceInfo { backend: name.clone(), name: info.name.clone(), details };
            Slot { name, lane: Box::new(Trainer::new(net, optimizer)), device, is_gpu: true, kernels: KernelTable::default() }
        }
    })
}
