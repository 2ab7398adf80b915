//! Divergence that keeps the loss finite is caught: a NaN/Inf in a parameter, a BN running
//! statistic or an optimiser buffer stops the step that leaves it there, naming layer and tensor
//! (the check runs on the device, CPU and GPU alike), and no checkpoint is written with it.

mod common;

use engine::Backend;
use engine::checkpoint::CheckpointError;
use engine::cpu::CpuBackend;
use engine::data::synth::SynthSpec;
use engine::network::{BufferLimits, BuildOptions, LayerOp, MemoryPlan, Network, Precision};
use engine::train::{Optimizer, TrainError, Trainer};

const SIZE: usize = 64;

fn trainer<B: Backend>(backend: B, optimizer: Optimizer) -> Trainer<B> {
    let (mut cfg, _) = engine::cfg::load("yolov4-tiny").expect("built-in cfg");
    cfg.set_classes(2).unwrap();
    cfg.set_size(SIZE, SIZE).unwrap();
    cfg.set_batch(2, 1).unwrap();
    cfg.net.learning_rate = 1e-3;
    cfg.net.burn_in = 0;
    let opts = BuildOptions { seed: 4, adam: optimizer == Optimizer::Adam, ..Default::default() };
    Trainer::new(Network::build(backend, cfg, &opts).unwrap(), optimizer)
}

/// One synthetic batch of two images.
fn batch() -> (Vec<f32>, Vec<f32>) {
    let spec = SynthSpec { classes: 2, width: SIZE, height: SIZE, seed: 9, ..Default::default() };
    let mut images = Vec::new();
    let mut truths = vec![0.0; 2 * 200 * 5];
    for i in 0..2 {
        let (img, labels) = spec.render(0, i);
        let mut planar = vec![0.0; 3 * SIZE * SIZE];
        img.to_planar(&mut planar);
        images.extend(planar);
        for (k, l) in labels.iter().enumerate() {
            truths[(i as usize * 200 + k) * 5..][..5].copy_from_slice(&[l.x, l.y, l.w, l.h, l.class as f32]);
        }
    }
    (images, truths)
}

/// The `n`-th conv layer (index in the network).
fn conv_layer<B: Backend>(t: &Trainer<B>, n: usize) -> usize {
    t.net.layers.iter().enumerate().filter(|(_, l)| matches!(l.op, LayerOp::Conv(_))).nth(n).unwrap().0
}

/// Puts `value` into element 1 of a state tensor of layer `layer`: one the loss of the next step
/// never reads (its running variance, or the weights' Adam second moment, whose Inf only makes
/// the update 0).
fn poison<B: Backend>(t: &Trainer<B>, layer: usize, tensor: &str, value: f32) {
    let LayerOp::Conv(c) = &t.net.layers[layer].op else { panic!("not a conv layer") };
    let buf = match tensor {
        "rolling_variance" => &c.bn.as_ref().unwrap().rolling_variance,
        "weights Adam second moment" => &c.weights.adam.as_ref().unwrap().1,
        _ => unreachable!(),
    };
    let b = &t.net.backend;
    let mut v = b.download(buf);
    v[1] = value;
    b.upload(buf, &v);
}

/// A healthy step passes; after a non-finite value is put into `tensor` of the 5th conv layer
/// (a place the loss never reads), the next step stops naming both, with the loss finite.
fn caught<B: Backend>(make: impl Fn() -> B, optimizer: Optimizer, tensor: &str) {
    let (images, truths) = batch();
    let mut t = trainer(make(), optimizer);
    t.step(&images, &truths).expect("a healthy step");
    let layer = conv_layer(&t, 4);
    poison(&t, layer, tensor, f32::INFINITY);
    match t.step(&images, &truths) {
        Err(TrainError::NonFiniteState { iteration, loss, layer: l, tensor: what, count, .. }) => {
            assert_eq!((iteration, l), (2, layer));
            assert!(loss.is_finite(), "the loss stayed finite: only the state check can see this");
            assert!(what.contains(tensor.split(' ').next_back().unwrap()), "{what}");
            assert!(count >= 1);
        }
        other => panic!("expected a non-finite state error, got {other:?}"),
    }
    // Never a checkpoint with it.
    let dir = std::env::temp_dir().join(format!("engine-divergence-{}-{}", tensor.replace(' ', "-"), std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let w = dir.join("x_2.weights");
    match t.save_checkpoint(&w, "tag") {
        Err(CheckpointError::NonFinite { .. }) => {}
        other => panic!("expected a refused checkpoint, got {other:?}"),
    }
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "a file was left behind");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn cpu_catches_an_inf_running_variance() {
    caught(CpuBackend::new, Optimizer::Sgd, "rolling_variance");
}

#[test]
fn cpu_catches_an_inf_adam_moment() {
    caught(CpuBackend::new, Optimizer::Adam, "weights Adam second moment");
}

#[test]
fn gpu_catches_an_inf_running_variance_on_the_device() {
    if common::gpu_or_skip().is_none() {
        return;
    }
    caught(|| common::gpu_or_skip().expect("adapter seen above"), Optimizer::Sgd, "rolling_variance");
}

/// The memory plan is what `Network::build` allocates, byte for byte (CPU accounting), for every
/// built-in model, with SGD and Adam, and mixed precision with loss scaling (the shadow of the
/// state, the f16 weight copies);
/// and the state sits in as few arenas as the plan says.
#[test]
fn memory_plan_matches_the_build() {
    for name in engine::cfg::BUILTIN_NAMES {
        for (adam, loss_scaling, precision) in
            [(false, false, Precision::Fp32), (true, false, Precision::Fp32), (false, true, Precision::Mixed)]
        {
            let (mut cfg, _) = engine::cfg::load(name).unwrap();
            cfg.set_size(64, 64).unwrap();
            cfg.set_batch(4, 2).unwrap();
            let opts = BuildOptions { adam, loss_scaling, precision, ..Default::default() };
            let plan = MemoryPlan::of(&cfg, &opts).unwrap();
            let net = Network::build(CpuBackend::new(), cfg, &opts).unwrap();
            assert_eq!(net.memory_bytes().0, plan.build_bytes(), "{name} adam={adam} loss_scaling={loss_scaling}");
            let state: usize = net.state_arenas.iter().chain(&net.shadow_arenas).map(|a| net.backend.len(a)).sum();
            assert_eq!(state, plan.state, "{name} adam={adam} loss_scaling={loss_scaling}");
        }
    }
}

/// A network whose largest buffer exceeds what the backend holds is refused before anything is
/// allocated, with the smallest subdivisions that fit (yolov4-tiny 416², 32 images per pass: the
/// first layer's output is 177 MB, over a 128 MiB buffer limit). Tensors larger than one binding
/// are not refused: they are bound in ranges of images (tests/gpu_chunked.rs).
#[test]
fn a_buffer_over_the_buffer_limit_is_refused_with_advice() {
    let (mut cfg, _) = engine::cfg::load("yolov4-tiny").unwrap();
    cfg.set_size(416, 416).unwrap();
    cfg.set_batch(32, 1).unwrap();
    let opts = BuildOptions::default();
    let limit = (128 << 20) / 4;
    let fits = |cfg: &engine::cfg::ModelCfg, limit: usize| {
        let limits = BufferLimits { buffer: limit, binding: usize::MAX };
        MemoryPlan::of(cfg, &opts).unwrap().check_fits(cfg, &opts, limits, "gpu")
    };
    let e = fits(&cfg, limit).unwrap_err().to_string();
    assert!(e.contains("largest buffer needs 169 MiB") && e.contains("holds at most 128 MiB"), "{e}");
    assert!(e.contains("raise subdivisions to 2 (mini-batch 16)"), "{e}");
    // The same limit as a binding limit only: bound in ranges of images, it fits.
    let binding = BufferLimits { buffer: usize::MAX, binding: limit };
    MemoryPlan::of(&cfg, &opts).unwrap().check_fits(&cfg, &opts, binding, "gpu").unwrap();
    cfg.set_batch(32, 2).unwrap();
    fits(&cfg, limit).unwrap();
    assert!(MemoryPlan::of(&cfg, &opts).unwrap().largest <= limit);
    // One image per pass that still does not fit: only a smaller input helps.
    let e = fits(&cfg, 1 << 20).unwrap_err().to_string();
    assert!(e.contains("lower width/height (even one image per pass does not fit)"), "{e}");
}

/// The GPU backend refuses (an error, not a panic) a network over its adapter's buffer limit:
/// the input size is chosen from the adapter's own limit so the case holds on every adapter.
#[test]
fn gpu_refuses_a_network_over_its_buffer_limit() {
    let Some(gpu) = common::gpu_or_skip() else { return };
    let limit = gpu.max_buffer_floats();
    // The first conv of yolov4-tiny writes 32 × (S/2)² floats per image.
    let side = ((((limit / 8) as f64).sqrt() as usize) / 32 + 1) * 32;
    let (mut cfg, _) = engine::cfg::load("yolov4-tiny").unwrap();
    cfg.set_size(side, side).unwrap();
    cfg.set_batch(1, 1).unwrap();
    match Network::build(gpu, cfg, &BuildOptions::default()) {
        Err(e @ engine::network::NetworkError::TooLarge { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("holds at most") && msg.contains("lower width/height"), "{msg}");
        }
        Err(e) => panic!("{side}x{side}: another error: {e}"),
        Ok(_) => panic!("{side}x{side} built although its first output exceeds {limit} floats"),
    }
}
