//! Mixed precision as numerics (engine::network::Precision::Mixed, issue 15): every layer output
//! and gradient the step stores is an f16 value; training is deterministic and checkpointing does
//! not change a bit of it; the GPU (lavapipe in CI) trains like the CPU within a stated
//! tolerance; and mixed training tracks fp32 training.

use engine::cpu::{round_f16, CpuBackend};
use engine::gpu::MixedGemm;
use engine::network::{BuildOptions, Checkpointing, Mode, Network, Precision};
use engine::train::{Optimizer, Trainer};
use engine::Backend;

mod common;

fn opts(precision: Precision) -> BuildOptions {
    BuildOptions { seed: 5, precision, loss_scaling: precision.needs_loss_scaling(), ..Default::default() }
}

fn trainer<B: Backend>(backend: B, o: &BuildOptions) -> Trainer<B> {
    Trainer::new(Network::build(backend, common::small::cfg(), o).expect("builds"), Optimizer::Sgd)
}

/// Every parameter, gradient/momentum and running statistic.
fn state<B: Backend>(net: &Network<B>) -> Vec<f32> {
    net.state_arenas.iter().flat_map(|a| net.backend.download(a)).collect()
}

fn is_half(v: f32) -> bool {
    round_f16(v).to_bits() == v.to_bits()
}

#[test]
fn stored_tensors_are_f16_values_and_the_loss_layer_is_not() {
    let data = common::small::batches(1);
    // Every tensor in memory of its own, so each can be read after the step.
    let o = BuildOptions { memory_reuse: false, ..opts(Precision::Mixed) };
    let mut t = trainer(CpuBackend::new(), &o);
    let (x, y) = &data[0];
    t.step(x, y).expect("step");
    let net = &t.net;
    let mut rounded = 0;
    for (i, l) in net.layers.iter().enumerate() {
        let out = net.backend.download(&l.output);
        let delta = net.backend.download(&l.delta);
        if l.op.is_loss() {
            assert!(out.iter().any(|&v| !is_half(v)), "layer {i} ({}): the loss layer keeps fp32 outputs", l.kind_name());
            continue;
        }
        assert!(out.iter().all(|&v| is_half(v)), "layer {i} ({}): an output is not an f16 value", l.kind_name());
        assert!(delta.iter().all(|&v| is_half(v)), "layer {i} ({}): a gradient is not an f16 value", l.kind_name());
        rounded += 1;
    }
    assert!(rounded >= 4, "{rounded} layers checked");
    // fp32 training of the same batch differs (mixed precision does round).
    let mut f = trainer(CpuBackend::new(), &BuildOptions { memory_reuse: false, ..opts(Precision::Fp32) });
    f.step(x, y).expect("step");
    assert_ne!(state(&f.net), state(&t.net), "mixed and fp32 gave the same state");
}

#[test]
fn mixed_training_is_bit_identical_with_the_plan_and_checkpointing() {
    let data = common::small::batches(3);
    let run = |o: &BuildOptions| {
        let mut t = trainer(CpuBackend::new(), o);
        let losses: Vec<u64> = data.iter().map(|(x, y)| t.step(x, y).expect("step").loss.to_bits()).collect();
        (losses, state(&t.net).iter().map(|v| v.to_bits()).collect::<Vec<_>>())
    };
    let reference = run(&BuildOptions { memory_reuse: false, ..opts(Precision::Mixed) });
    assert_eq!(run(&opts(Precision::Mixed)), reference, "memory plan");
    assert_eq!(run(&BuildOptions { checkpointing: Checkpointing::Layers(vec![1, 3]), ..opts(Precision::Mixed) }), reference, "checkpointing");
}

/// Relative difference of two losses.
fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / a.abs().max(1e-12)
}

#[test]
fn mixed_gpu_trains_like_mixed_cpu() {
    let Some(g) = common::gpu_or_skip() else { return };
    let (mixed_gemm, path) = (g.mixed_gemm().clone(), g.gemm_path(engine::backend::GemmOperands::F16));
    let data = common::small::batches(10);
    let mut c = trainer(CpuBackend::new(), &opts(Precision::Mixed));
    let mut q = trainer(g, &opts(Precision::Mixed));
    let (mut worst, mut clean) = (0.0f64, 0);
    for (i, (x, y)) in data.iter().enumerate() {
        let (a, b) = (c.step(x, y).expect("cpu step"), q.step(x, y).expect("gpu step"));
        // The first steps overflow at the starting scale of 2^16 on both backends alike.
        assert_eq!((a.skipped, a.loss_scale), (b.skipped, b.loss_scale), "step {}", i + 1);
        worst = worst.max(rel(a.loss, b.loss));
        clean += usize::from(!a.skipped);
    }
    assert!(clean >= 3, "only {clean} clean steps");
    let d = common::rel_norm_diff(&state(&c.net), &state(&q.net));
    println!("mixed GPU vs CPU: {clean} clean steps of 10, worst loss difference {worst:.2e}, state difference {d:.2e}");
    // A value near an f16 rounding boundary may round to different neighbours on the two
    // backends (their f32 sums differ in order): 1 f16 ulp, 2^-11 relative, on a few elements,
    // and every later step carries the difference on. On cooperative matrices the sums differ
    // more: the matrix units add the exact f16 products in their own order and rounding (NVIDIA
    // tensor cores align a group's products before adding, dropping low bits, rather than
    // rounding each add), so more values land on the other side of a boundary.
    let (loss_tol, state_tol) = match mixed_gemm {
        MixedGemm::Coop16 { .. } => (2e-3, 1e-2),
        MixedGemm::Fp32 { .. } => (5e-4, 2e-3),
    };
    println!("GEMMs: {path}");
    assert!(worst <= loss_tol, "losses differ by {worst:.2e} (tolerance {loss_tol:e})");
    assert!(d <= state_tol, "state differs by {d:.2e} (tolerance {state_tol:e})");
}

#[test]
fn mixed_training_tracks_fp32() {
    // fp32 trains on the batches whose mixed step was not skipped (the first steps overflow at
    // the starting scale), so both take the same updates.
    let data = common::small::batches(30);
    let mut m = trainer(CpuBackend::new(), &opts(Precision::Mixed));
    let mut f = trainer(CpuBackend::new(), &opts(Precision::Fp32));
    let (mut sum_f, mut sum_m, mut worst, mut clean) = (0.0, 0.0, 0.0f64, 0);
    for (x, y) in &data {
        let b = m.step(x, y).expect("mixed step");
        if b.skipped {
            continue;
        }
        let a = f.step(x, y).expect("fp32 step");
        sum_f += a.loss;
        sum_m += b.loss;
        worst = worst.max(rel(a.loss, b.loss));
        clean += 1;
    }
    let mean = rel(sum_f, sum_m);
    println!("mixed vs fp32 over {clean} clean steps: worst step {worst:.2e}, mean loss {mean:.2e}");
    assert!(clean >= 20, "only {clean} clean steps of 30");
    assert!(worst <= 0.02, "a step's loss differs by {worst:.2e}");
    assert!(mean <= 0.002, "the mean loss differs by {mean:.2e}");
}

#[test]
fn mixed_inference_uses_the_current_weights() {
    // Inference refreshes the f16 weights too: after an update, predicting from the trained
    // network equals predicting from a network loaded with those weights.
    let data = common::small::batches(2);
    let o = opts(Precision::Mixed);
    let mut t = trainer(CpuBackend::new(), &o);
    t.step(&data[0].0, &data[0].1).expect("step");
    let mut fresh = Network::build(CpuBackend::new(), common::small::cfg(), &o).expect("builds");
    for (a, b) in t.net.state_arenas.iter().zip(&fresh.state_arenas) {
        fresh.backend.upload(b, &t.net.backend.download(a));
    }
    let predict = |net: &mut Network<CpuBackend>| {
        // One pass: the mini-batch of 2 images.
        net.set_input(&data[1].0[..2 * 3 * 16 * 16], &data[1].1[..2 * 200 * 5]).expect("input");
        net.forward(Mode::Infer, 0, 1);
        let last = net.layers.len() - 1;
        net.backend.download(&net.layers[last].output)
    };
    assert_eq!(predict(&mut t.net), predict(&mut fresh));
}

#[test]
fn mixed_resume_is_exact() {
    // The loss scale travels in the checkpoint: stopping after step 3 and resuming gives the
    // bits of the uninterrupted run (steps 1-2 overflow at the starting scale and are skipped).
    let data = common::small::batches(6);
    let dir = std::env::temp_dir().join(format!("mixed-resume-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let weights = dir.join("m_3.weights");
    let mut whole = trainer(CpuBackend::new(), &opts(Precision::Mixed));
    for (i, (x, y)) in data.iter().enumerate() {
        whole.step(x, y).expect("step");
        if i == 2 {
            whole.save_checkpoint(&weights, "t").expect("checkpoint");
        }
    }
    let mut resumed = trainer(CpuBackend::new(), &opts(Precision::Mixed));
    resumed.resume(&weights).expect("resume");
    assert_eq!(resumed.iteration, 3);
    for (x, y) in &data[3..] {
        resumed.step(x, y).expect("step");
    }
    assert_eq!(resumed.loss_scale, whole.loss_scale);
    assert!(resumed.loss_scale.as_ref().is_some_and(|l| l.skipped > 0), "the run skipped steps");
    let bits = |t: &Trainer<CpuBackend>| state(&t.net).iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert!(bits(&resumed) == bits(&whole), "the resumed run differs");
    let _ = std::fs::remove_dir_all(&dir);
}
