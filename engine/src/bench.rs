//! Training throughput on random data: what `runner bench` and `cargo bench --bench train_step`
//! measure. A step is a full training iteration (forward, loss, backward, update, the one
//! read-back); the first `warmup` steps (pipeline compilation, first-use allocations) are not
//! counted. Random pixels and a few random boxes per image come from the counter-based hash of
//! [`crate::rng`], so every backend and every run sees the same data.

use std::time::Instant;

use crate::backend::Backend;
use crate::cfg::ModelCfg;
use crate::network::{BuildOptions, Network};
use crate::profile::KernelTable;
use crate::rng::uniform;
use crate::train::{Optimizer, TrainError, Trainer};

/// Truth boxes per image of the random batch.
const BOXES: usize = 4;

/// What a benchmark measured.
#[derive(Clone, Debug)]
pub struct BenchResult {
    /// `Backend::name` of the backend measured.
    pub backend: String,
    /// Images per wall-clock second over the counted steps.
    pub images_per_s: f64,
    /// Mean wall seconds per counted step.
    pub step_s: f64,
    pub first_step_s: f64,
    pub build_s: f64,
    pub steps: usize,
    /// Device time per layer × phase × kernel over the counted steps (empty without timestamps).
    pub kernels: KernelTable,
    /// Bytes the network holds on the backend, and the peak.
    pub bytes: u64,
    pub peak_bytes: u64,
    pub last_loss: f64,
    /// Mean host seconds per counted step in each part of the step (see [`HostSplit`]).
    pub host: HostSplit,
}

/// Where a step's wall time goes on the host, as means over the counted steps. On a GPU the
/// recording parts are the host's encoding of the dispatches, and `wait` is the one wait for
/// the device; whatever the parts leave of the wall step is the host's work after the wait
/// (reading the statistics and timestamps back).
#[derive(Clone, Copy, Debug, Default)]
pub struct HostSplit {
    /// Handing the batch to the backend (a GPU's copy into the upload staging memory), where
    /// the step itself did it.
    pub upload_s: f64,
    /// Handing the next step's batch to the backend during the wait (`Trainer::run_steps`).
    pub staged_s: f64,
    /// Recording the forward and loss, without the upload.
    pub forward_s: f64,
    pub backward_s: f64,
    pub update_s: f64,
    pub wait_s: f64,
}

impl HostSplit {
    /// Adds one step's parts.
    fn add(&mut self, r: &crate::train::StepRecord) {
        self.upload_s += r.t_upload;
        self.staged_s += r.t_staged;
        self.forward_s += r.t_forward - r.t_upload;
        self.backward_s += r.t_backward;
        self.update_s += r.t_update;
        self.wait_s += r.t_sync;
    }

    /// The sums of `steps` steps as means per step.
    fn mean(self, steps: usize) -> HostSplit {
        let per = steps.max(1) as f64;
        HostSplit {
            upload_s: self.upload_s / per,
            staged_s: self.staged_s / per,
            forward_s: self.forward_s / per,
            backward_s: self.backward_s / per,
            update_s: self.update_s / per,
            wait_s: self.wait_s / per,
        }
    }
}

/// One step's random images `[batch][c][h][w]` in [0, 1) and truths `[batch][max_boxes][5]`.
pub fn random_batch(cfg: &ModelCfg, max_boxes: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let n = cfg.net.batch;
    let per_img = cfg.net.channels * cfg.net.height * cfg.net.width;
    let images: Vec<f32> = (0..n * per_img).map(|i| uniform(seed, i as u32)).collect();
    let classes = cfg.layers.iter().find_map(|l| match &l.kind {
        crate::cfg::LayerKind::Yolo(y) => Some(y.classes),
        _ => None,
    });
    let mut truths = vec![0.0f32; n * max_boxes * 5];
    let draw = |i: usize| uniform(seed ^ 0x5eed_b0c5, i as u32);
    for b in 0..n {
        for k in 0..BOXES.min(max_boxes) {
            let at = (b * max_boxes + k) * 5;
            let r = |j: usize| draw(at + j);
            let class = classes.map_or(0.0, |c| ((r(4) * c as f32) as usize).min(c.saturating_sub(1)) as f32);
            truths[at..at + 5].copy_from_slice(&[0.2 + 0.6 * r(0), 0.2 + 0.6 * r(1), 0.05 + 0.35 * r(2), 0.05 + 0.35 * r(3), class]);
        }
    }
    (images, truths)
}

/// Builds `cfg` on `backend` with `opts` (its seed also draws the batch) and trains
/// `warmup + steps` iterations of SGD on one random batch.
pub fn run<B: Backend>(backend: B, mut cfg: ModelCfg, steps: usize, warmup: usize, opts: &BuildOptions) -> Result<BenchResult, TrainError> {
    let seed = opts.seed;
    // Warm-up steps should not sit in burn_in's tiny learning rates: that is not the steady state.
    cfg.net.burn_in = 0;
    let t_build = Instant::now();
    let net = Network::build(backend, cfg, opts)?;
    let build_s = t_build.elapsed().as_secs_f64();
    let name = net.backend.name();
    let (images, truths) = random_batch(&net.cfg, net.max_boxes, seed);
    let images_per_step = net.mini_batch * net.subdivisions;
    let mut trainer = Trainer::new(net, Optimizer::Sgd);
    let warmup = warmup.max(1);
    let mut kernels = KernelTable::default();
    let mut last_loss = 0.0;
    let mut host = HostSplit::default();
    // One run of warm-up and timed steps, so that the first timed step's input is uploaded
    // during the last warm-up step as every later one is (Trainer::run_steps).
    let first = Instant::now();
    let (mut first_step_s, mut t0, mut done) = (0.0, first, 0);
    let batch = (&images[..], &truths[..]);
    trainer.run_steps(std::iter::repeat_n(batch, warmup + steps), |r| {
        done += 1;
        if done == warmup {
            first_step_s = first.elapsed().as_secs_f64() / warmup as f64;
            t0 = Instant::now();
        } else if done > warmup {
            if !r.timings.is_empty() {
                kernels.add_step(&r.timings);
            }
            last_loss = r.loss;
            host.add(&r);
        }
        Ok(())
    })?;
    let wall = t0.elapsed().as_secs_f64();
    let (bytes, peak_bytes) = trainer.net.memory_bytes();
    Ok(BenchResult {
        backend: name,
        images_per_s: if wall > 0.0 { (steps * images_per_step) as f64 / wall } else { 0.0 },
        step_s: wall / steps.max(1) as f64,
        first_step_s,
        build_s,
        steps,
        kernels,
        bytes,
        peak_bytes,
        last_loss,
        host: host.mean(steps),
    })
}
