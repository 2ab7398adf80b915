//! `engine::diverge` (behind `runner diverge`): two CPU trainers of one weight set on the same
//! batches report no divergence; a perturbation planted in one layer of one of them is named
//! exactly — that layer, that phase, that tensor — as the first divergence.

use engine::cpu::CpuBackend;
use engine::data::synth::SynthSpec;
use engine::diverge::{DEFAULT_TOLERANCE, lockstep};
use engine::network::tensors::Fault;
use engine::network::{BuildOptions, LayerOp, Network, TensorPhase};
use engine::train::{Optimizer, Trainer};

const SIZE: usize = 64;

fn trainer(subdivisions: usize) -> Trainer<CpuBackend> {
    let (mut cfg, _) = engine::cfg::load("yolov4-tiny").expect("built-in cfg");
    cfg.set_classes(2).unwrap();
    cfg.set_size(SIZE, SIZE).unwrap();
    cfg.set_batch(2, subdivisions).unwrap();
    cfg.net.learning_rate = 1e-3;
    cfg.net.burn_in = 0;
    // Layer tensors are read after the step: every tensor in memory of its own.
    let opts = BuildOptions { seed: 4, memory_reuse: false, ..Default::default() };
    Trainer::new(Network::build(CpuBackend::new(), cfg, &opts).unwrap(), Optimizer::Sgd)
}

/// Synthetic batch `k` of two images.
fn batch(k: u64) -> (Vec<f32>, Vec<f32>) {
    let spec = SynthSpec { classes: 2, width: SIZE, height: SIZE, seed: 9, ..Default::default() };
    let mut images = Vec::new();
    let mut truths = vec![0.0; 2 * 200 * 5];
    for i in 0..2 {
        let (img, labels) = spec.render(0, 2 * k + i);
        let mut planar = vec![0.0; 3 * SIZE * SIZE];
        img.to_planar(&mut planar);
        images.extend(planar);
        for (j, l) in labels.iter().enumerate() {
            truths[(i as usize * 200 + j) * 5..][..5].copy_from_slice(&[l.x, l.y, l.w, l.h, l.class as f32]);
        }
    }
    (images, truths)
}

/// The `n`-th conv layer's index.
fn conv_layer(t: &Trainer<CpuBackend>, n: usize) -> usize {
    t.net.layers.iter().enumerate().filter(|(_, l)| matches!(l.op, LayerOp::Conv(_))).nth(n).unwrap().0
}

/// (iteration, layer, phase, tensor) of the first divergence over `iterations` lockstep steps.
fn first_divergence(a: &mut Trainer<CpuBackend>, b: &mut Trainer<CpuBackend>, iterations: u64) -> Option<(u64, usize, TensorPhase, &'static str)> {
    for k in 0..iterations {
        let (images, truths) = batch(k);
        let step = lockstep(a, b, &images, &truths, DEFAULT_TOLERANCE).unwrap();
        for s in &step.steps {
            assert!(s.is_ok(), "{:?}", s.as_ref().err());
        }
        assert!(step.comparison.known.iter().any(|k| k.what == "argmax flips"), "maxpool argmax not compared");
        assert!(step.comparison.known.iter().any(|k| k.what == "ignore flips"), "yolo ignore flips not compared");
        if let Some(d) = step.comparison.first_divergence() {
            return Some((k + 1, d.layer, d.phase, d.tensor));
        }
        // Identical trainers: every difference is exactly zero, every flip count 0.
        assert!(step.comparison.diffs.iter().all(|d| d.rel_diff == 0.0 && d.n_outside == 0));
        assert!(step.comparison.known.iter().all(|k| k.count == 0));
    }
    None
}

#[test]
fn identical_cpu_runs_do_not_diverge() {
    let (mut a, mut b) = (trainer(2), trainer(2));
    assert_eq!(first_divergence(&mut a, &mut b, 2), None);
}

#[test]
fn a_planted_forward_fault_is_named_with_its_layer_and_phase() {
    let (mut a, mut b) = (trainer(1), trainer(1));
    let layer = conv_layer(&b, 4);
    b.net.fault = Some(Fault { layer, phase: TensorPhase::Forward, index: 7, epsilon: 1e3 });
    assert_eq!(first_divergence(&mut a, &mut b, 2), Some((1, layer, TensorPhase::Forward, "output")));
}

#[test]
fn a_planted_gradient_fault_is_named_with_its_layer_and_phase() {
    let (mut a, mut b) = (trainer(2), trainer(2));
    let layer = conv_layer(&b, 9);
    b.net.fault = Some(Fault { layer, phase: TensorPhase::Backward, index: 3, epsilon: 1e3 });
    assert_eq!(first_divergence(&mut a, &mut b, 2), Some((1, layer, TensorPhase::Backward, "weights grad")));
}

#[test]
fn step_split_in_two_gives_the_same_losses_as_step() {
    let (mut a, mut b) = (trainer(2), trainer(2));
    for k in 0..2 {
        let (images, truths) = batch(k);
        let whole = a.step(&images, &truths).unwrap();
        let pending = b.gradients(&images, &truths).unwrap();
        let _ = b.net.layer_tensors(0, TensorPhase::Forward);
        let split = b.apply_update(pending).unwrap();
        assert_eq!(whole.loss.to_bits(), split.loss.to_bits());
    }
}
