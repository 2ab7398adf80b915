//! One backend of a run behind one object-safe trait: the training loop, checkpoints and the
//! epoch evaluation are written once for `dyn Lane`, whatever the backend.

use std::path::Path;

use anyhow::Result;
use engine::Backend;
use engine::checkpoint::{CheckpointError, CheckpointInfo};
use engine::data::loader::BatchPlan;
use engine::diverge::Probe;
use engine::eval::map::MapAccumulator;
use engine::network::classify::TopK;
use engine::eval::{ConfusionMatrix, Detection, GroundTruth};
use engine::network::predict::batch_truths;
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
    /// One training iteration on `images` / `truths` (the whole batch), uploading `next` (the
    /// batch the following call takes) while the device runs it.
    fn step(&mut self, images: &[f32], truths: &[f32], next: Option<(&[f32], &[f32])>) -> Result<StepRecord, TrainError>;
    /// Iterations completed.
    fn iteration(&self) -> u64;
    /// Bytes this backend holds on its device now.
    fn device_bytes(&self) -> u64;
    fn load_weights(&self, path: &Path) -> Result<()>;
    fn conv_params(&self) -> Vec<Option<ConvParams>>;
    fn set_conv_params(&self, params: &[Option<ConvParams>]);
    fn save_checkpoint(&self, path: &Path, tag: &str) -> Result<(), CheckpointError>;
    fn resume(&mut self, path: &Path) -> Result<CheckpointInfo, CheckpointError>;
    /// Every batch of `val` through the network: mAP accumulation, confusion matrix, and the
    /// first `keep` images with their detections (for the validation images).
    /// A classifier instead counts top-1 and top-`top` hits (no detections, curves or images).
    fn evaluate(&self, val: &BatchPlan, classes: usize, keep: usize, top: usize) -> Result<Evaluation>;
    /// Drops device timings recorded outside training steps (evaluation), so they are not
    /// counted in the next step.
    fn discard_timings(&self);
    /// Writes the current weights as a Darknet `.weights` file (`seen` = images trained).
    fn save_weights(&self, path: &Path, seen: u64) -> Result<()>;
    /// The trainer as `runner diverge` drives it: a step in two halves, tensors read between.
    fn probe(&mut self) -> &mut dyn Probe;
}

/// A validation pass of one backend.
pub struct Evaluation {
    pub map: MapAccumulator,
    /// At IoU 0.5 and confidence 0.25 (the detection threshold of the P/R/F1 figures).
    pub confusion: ConfusionMatrix,
    /// The first images: (RGB pixels at the network's size, detections, labelled objects).
    pub samples: Vec<Sample>,
    pub width: usize,
    pub height: usize,
    /// A classifier's top-1/top-k hits (None for a detector).
    pub topk: Option<TopK>,
}

/// One validation image as the network saw it, with what it found and what is labelled.
pub struct Sample {
    pub rgb: Vec<u8>,
    pub detections: Vec<Detection>,
    pub truths: Vec<GroundTruth>,
}

/// Confidence threshold of the confusion matrix and the validation images (Darknet's -thresh).
pub const DETECT_THRESH: f32 = 0.25;

impl<B: Backend> Lane for Trainer<B>
where
    Trainer<B>: Send,
{
    fn step(&mut self, images: &[f32], truths: &[f32], next: Option<(&[f32], &[f32])>) -> Result<StepRecord, TrainError> {
        Trainer::step_staging(self, images, truths, next)
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
    fn evaluate(&self, val: &BatchPlan, classes: usize, keep: usize, top: usize) -> Result<Evaluation> {
        if self.net.cfg.is_classifier() {
            let mut acc = TopK::new(top);
            let mut cache = None;
            for i in 0..val.num_batches() {
                self.net.classify_batch(&val.make_batch(i, &mut cache)?, &mut acc);
            }
            let c = &self.net.cfg.net;
            let (map, confusion) = (MapAccumulator::new(classes), ConfusionMatrix::new(classes));
            return Ok(Evaluation { map, confusion, samples: Vec::new(), width: c.width, height: c.height, topk: Some(acc) });
        }
        evaluate(&self.net, val, classes, keep)
    }
    fn discard_timings(&self) {
        let _ = self.net.backend.take_timings();
    }
    fn save_weights(&self, path: &Path, seen: u64) -> Result<()> {
        self.net.save_weights(path, seen)?;
        Ok(())
    }
    fn probe(&mut self) -> &mut dyn Probe {
        self
    }
}

fn evaluate<B: Backend>(net: &Network<B>, val: &BatchPlan, classes: usize, keep: usize) -> Result<Evaluation> {
    let mut map = MapAccumulator::new(classes);
    let mut confusion = ConfusionMatrix::new(classes);
    let mut samples = Vec::new();
    let mut cache = None;
    for i in 0..val.num_batches() {
        let batch = val.make_batch(i, &mut cache)?;
        let per_img = batch.images.len() / batch.n.max(1);
        for (j, dets) in net.detect_batch(&batch).into_iter().enumerate() {
            let truths = batch_truths(&batch, j);
            map.add_image(&dets, &truths)?;
            confusion.add_image(&dets, &truths, DETECT_THRESH, 0.5);
            if samples.len() < keep {
                let rgb = chw_to_rgb(&batch.images[j * per_img..(j + 1) * per_img], batch.width, batch.height);
                samples.push(Sample { rgb, detections: dets, truths });
            }
        }
    }
    let c = &net.cfg.net;
    Ok(Evaluation { map, confusion, samples, width: c.width, height: c.height, topk: None })
}

/// Planar RGB floats in [0, 1] → interleaved 8-bit RGB.
fn chw_to_rgb(chw: &[f32], width: usize, height: usize) -> Vec<u8> {
    let plane = width * height;
    let mut out = vec![0u8; plane * 3];
    for p in 0..plane {
        for c in 0..3 {
            out[p * 3 + c] = (chw.get(c * plane + p).copied().unwrap_or(0.0).clamp(0.0, 1.0) * 255.0).round() as u8;
        }
    }
    out
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
            // Nothing in a run reads the CPU's per-op host times (its phases are the host
            // columns): do not pay for them. `runner bench --backend cpu` turns them on.
            cpu.set_timing(false);
            let threads = cpu.threads();
            let gemm = cpu.gemm_path(opts.precision.gemm_operands());
            let net = Network::build(cpu, cfg.clone(), opts)?;
            let mut details = std::collections::BTreeMap::new();
            details.insert("threads".into(), threads.to_string());
            details.insert("gemm_path".into(), gemm);
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
            let gemm = backend.gemm_path(opts.precision.gemm_operands());
            if opts.precision != engine::network::Precision::Fp32 {
                eprintln!("{name}: {} GEMMs run on {gemm}", opts.precision);
            }
            details.insert("gemm_path".into(), gemm);
            if !timed {
                eprintln!("note: {} has no timestamp queries: {name} records host time only (no per-layer GPU time)", info.name);
            }
            let net = Network::build(backend, cfg.clone(), opts)?;
            let device = DeviceInfo { backend: name.clone(), name: info.name.clone(), details };
            Slot { name, lane: Box::new(Trainer::new(net, optimizer)), device, is_gpu: true, kernels: KernelTable::default() }
        }
    })
}
