//! Whole network on the GPU backend against the CPU backend: yolov4-tiny (3 classes, 64×64),
//! one initial weight set, one batch. Loss, every parameter gradient, and the parameters after
//! an SGD step and after an Adam step must agree; two GPU runs must be bit-identical.
//!
//! No adapter: the test prints why and returns, unless REQUIRE_GPU=1 (CI), where it fails.

use engine::cpu::CpuBackend;
use engine::data::image::Augment;
use engine::data::loader::{BatchPlan, LoaderConfig, Stop};
use engine::data::synth::SynthSpec;
use engine::gpu::GpuBackend;
use engine::network::{BuildOptions, Mode, Network, Update};
use engine::train::{Optimizer, Trainer};
use engine::Backend;
use std::sync::Arc;
use rand::{Rng, SeedableRng};

mod common;
use common::{gpu_or_skip as gpu, rel_norm_diff};

fn cfg() -> engine::cfg::ModelCfg {
    let (mut cfg, _) = engine::cfg::load("yolov4-tiny").unwrap();
    cfg.set_classes(3).unwrap();
    cfg.set_size(64, 64).unwrap();
    cfg.set_batch(2, 1).unwrap();
    cfg.net.learning_rate = 1e-3;
    cfg.net.burn_in = 0;
    cfg
}

fn batches(n: u64) -> Vec<engine::data::loader::Batch> {
    // One folder per call: the tests of this file run in parallel and each removes its own.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("engine-gpu-network-{}-{call}", std::process::id()));
    let spec = SynthSpec { classes: 3, train_images: 16, val_images: 2, width: 64, height: 64, seed: 3, ..Default::default() };
    let data = spec.write(&dir).unwrap();
    let set = data.train_set(Default::default()).unwrap();
    let plan = BatchPlan::new(Arc::new(set), LoaderConfig::training(2, 64, 64, 3, Augment::NONE, Stop::Batches(n))).unwrap();
    let mut cache = None;
    let out = (0..n).map(|i| plan.make_batch(i, &mut cache).unwrap()).collect();
    let _ = std::fs::remove_dir_all(&dir);
    out
}

fn pair(adam: bool) -> Option<(Network<CpuBackend>, Network<GpuBackend>)> {
    let g = gpu()?;
    let opts = BuildOptions { adam, seed: 9, ..Default::default() };
    let cpu = Network::build(CpuBackend::new(), cfg(), &opts).unwrap();
    let gpu = Network::build(g, cfg(), &opts).unwrap();
    gpu.copy_params_from(&cpu);
    Some((cpu, gpu))
}

/// Gradients and parameters are compared as ‖g_gpu − g_cpu‖ / ‖g_cpu‖ per tensor.
const GRAD_TOL: f64 = 1e-3;
const LOSS_TOL: f64 = 1e-4;

#[test]
fn loss_gradients_and_updates_match_the_cpu() {
    let Some((cpu, gpu)) = pair(true) else { return };
    // Truths from a synthetic batch, pixels uniform noise: the synthetic images' flat shapes
    // give maxpool windows whose top two values differ only in the last bits, where CPU and
    // GPU summation orders legitimately pick different winners (measured: 2.5e-2 on the
    // gradient below the first maxpool with the synthetic pixels, 1e-5 with noise).
    let b = &batches(1)[0];
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let images: Vec<f32> = (0..b.images.len()).map(|_| rng.random_range(0.0..1.0)).collect();
    cpu.set_input(&images, &b.truths).unwrap();
    gpu.set_input(&images, &b.truths).unwrap();
    cpu.zero_grads();
    gpu.zero_grads();
    cpu.forward(Mode::Train, 0, 1);
    gpu.forward(Mode::Train, 0, 1);
    cpu.backward(1);
    gpu.backward(1);
    let cs = cpu.backend.download(&cpu.stats);
    let gs = gpu.backend.download(&gpu.stats);
    let cost = |s: &[f32]| s.chunks(engine::yolo_stats::STATS_LEN).map(|h| h[engine::yolo_stats::COST] as f64).sum::<f64>();
    let (lc, lg) = (cost(&cs), cost(&gs));
    let rel = (lc - lg).abs() / lc;
    println!("loss (Σ head costs): cpu {lc:.6} gpu {lg:.6} rel {rel:.2e} (tolerance {LOSS_TOL:e})");
    assert!(rel < LOSS_TOL);
    let mut worst = 0.0f64;
    for (i, (pc, pg)) in cpu.params().iter().zip(gpu.params()).enumerate() {
        let d = rel_norm_diff(&cpu.backend.download(&pc.grad), &gpu.backend.download(&pg.grad));
        worst = worst.max(d);
        assert!(d < GRAD_TOL, "parameter tensor {i}: gradient relative difference {d:.2e}");
    }
    println!("worst parameter-gradient relative difference {worst:.2e} (tolerance {GRAD_TOL:e})");

    // SGD from the common start (its momentum buffer is the gradient just compared).
    let u = Update::Sgd { lr: 1e-3, momentum: 0.9, decay: 5e-4 };
    cpu.update(u, 2.0);
    gpu.update(u, 2.0);
    let worst = cpu.params().iter().zip(gpu.params()).map(|(pc, pg)| rel_norm_diff(&cpu.backend.download(&pc.value), &gpu.backend.download(&pg.value))).fold(0.0, f64::max);
    println!("sgd: worst parameter relative difference after the step {worst:.2e} (tolerance {GRAD_TOL:e})");
    assert!(worst < GRAD_TOL, "sgd step: parameters differ by {worst:.2e}");
}

#[test]
fn adam_step_matches_the_cpu() {
    let Some((cpu, gpu)) = pair(true) else { return };
    let b = &batches(1)[0];
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(6);
    let images: Vec<f32> = (0..b.images.len()).map(|_| rng.random_range(0.0..1.0)).collect();
    cpu.set_input(&images, &b.truths).unwrap();
    gpu.set_input(&images, &b.truths).unwrap();
    cpu.forward(Mode::Train, 0, 1);
    gpu.forward(Mode::Train, 0, 1);
    cpu.backward(1);
    gpu.backward(1);
    let u = Update::Adam { lr: 1e-3, b1: 0.9, b2: 0.999, eps: 1e-6, decay: 5e-4, t: 1 };
    cpu.update(u, 2.0);
    gpu.update(u, 2.0);
    let worst = cpu.params().iter().zip(gpu.params()).map(|(pc, pg)| rel_norm_diff(&cpu.backend.download(&pc.value), &gpu.backend.download(&pg.value))).fold(0.0, f64::max);
    println!("adam: worst parameter relative difference after the step {worst:.2e} (tolerance {GRAD_TOL:e})");
    assert!(worst < GRAD_TOL, "adam step: parameters differ by {worst:.2e}");
}

#[test]
fn two_gpu_runs_are_bit_identical_for_ten_iterations() {
    let Some(g1) = gpu() else { return };
    let Some(g2) = gpu() else { return };
    let bs = batches(10);
    let run = |g: GpuBackend| -> Vec<u64> {
        let net = Network::build(g, cfg(), &BuildOptions { seed: 4, ..Default::default() }).unwrap();
        let mut t = Trainer::new(net, Optimizer::Sgd);
        bs.iter().map(|b| t.step(&b.images, &b.truths).unwrap().loss.to_bits()).collect()
    };
    let (a, b) = (run(g1), run(g2));
    println!("losses: {:?}", a.iter().map(|&x| f64::from_bits(x)).collect::<Vec<_>>());
    assert_eq!(a, b, "GPU runs with one seed differ");
}

/// `Trainer::run_steps` uploads each step's first micro-batch while the step before runs; the
/// recorded work is that of plain steps, so losses and final parameters are the same bits. On
/// the GPU (fp32, and mixed precision with loss scaling: its input goes up as f16 and its
/// step opens with the state copies) and on the CPU, with one and two micro-batches per step.
#[test]
fn run_steps_gives_the_bits_of_plain_steps() {
    let bs = batches(4);
    fn both<B: Backend>(make: &dyn Fn() -> B, opts: &BuildOptions, subdivisions: usize, bs: &[engine::data::loader::Batch]) {
        let mut cfg = cfg();
        cfg.set_batch(2, subdivisions).unwrap();
        let trainer = || Trainer::new(Network::build(make(), cfg.clone(), opts).unwrap(), Optimizer::Sgd);
        let state = |t: &Trainer<B>| -> Vec<Vec<u32>> {
            t.net.state_arenas.iter().map(|a| t.net.backend.download(a).into_iter().map(f32::to_bits).collect()).collect()
        };
        let mut plain = trainer();
        let plain_losses: Vec<u64> = bs.iter().map(|b| plain.step(&b.images, &b.truths).unwrap().loss.to_bits()).collect();
        let mut run = trainer();
        let mut losses = Vec::new();
        run.run_steps(bs.iter().map(|b| (&b.images[..], &b.truths[..])), |r| {
            losses.push(r.loss.to_bits());
            Ok(())
        })
        .unwrap();
        let what = format!("{} ({:?}, {subdivisions} micro-batches)", plain.net.backend.name(), opts.precision);
        assert_eq!(losses, plain_losses, "{what}: losses differ");
        assert!(state(&run) == state(&plain), "{what}: parameters differ");
    }
    let fp32 = BuildOptions { seed: 5, ..Default::default() };
    for subdivisions in [1, 2] {
        both(&CpuBackend::new, &fp32, subdivisions, &bs);
    }
    if gpu().is_none() {
        return;
    }
    let gpu_backend = || gpu().expect("an adapter");
    let mixed = BuildOptions { seed: 5, precision: engine::network::Precision::Mixed, loss_scaling: true, ..Default::default() };
    for subdivisions in [1, 2] {
        both(&gpu_backend, &fp32, subdivisions, &bs);
        both(&gpu_backend, &mixed, subdivisions, &bs);
    }
}

/// Building the network makes its pipelines ahead, on several threads (`Backend::prepare`): a
/// training step then makes none of its own, so the prediction of which GEMM tiles and
/// activation builds the step runs is the step's own choice.
#[test]
fn building_makes_every_pipeline_a_step_runs() {
    let Some(g) = gpu() else { return };
    let net = Network::build(g, cfg(), &BuildOptions { seed: 4, ..Default::default() }).unwrap();
    let prepared = net.backend.pipeline_count();
    assert!(prepared > 0, "nothing was prepared");
    let mut t = Trainer::new(net, Optimizer::Sgd);
    let b = &batches(1)[0];
    t.step(&b.images, &b.truths).unwrap();
    assert_eq!(t.net.backend.pipeline_count(), prepared, "the step made pipelines of its own");
}
