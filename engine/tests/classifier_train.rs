//! A classifier end to end (issue 16): the built-in tiny-classifier on the synthetic shapes in
//! their classification form, trained with Darknet's SGD; it must fit one fixed batch (the loss
//! falls by 5×, top-1 on that batch reaches 100 %), and the GPU must train like the CPU.

use std::sync::Arc;

use engine::cpu::CpuBackend;
use engine::data::loader::{BatchPlan, LoaderConfig};
use engine::data::synth::SynthSpec;
use engine::network::classify::TopK;
use engine::network::{BuildOptions, Network};
use engine::train::{Optimizer, Trainer};
use engine::Backend;

mod common;

/// `steps` SGD steps on one fixed batch of 8 images (3 classes, 32×32); (losses, top-1 hits).
fn fit<B: Backend>(backend: B, steps: usize) -> (Vec<f64>, usize) {
    let dir = std::env::temp_dir().join(format!("engine-classifier-{}-{}", std::process::id(), backend.name().len()));
    let spec = SynthSpec { classes: 3, train_images: 8, val_images: 1, width: 32, height: 32, min_size: 0.45, max_size: 0.85, classify: true, seed: 2, ..Default::default() };
    let data = spec.write(&dir).expect("synthetic set");
    let (mut cfg, _) = engine::cfg::load("tiny-classifier").expect("built-in cfg");
    cfg.set_batch(8, 1).unwrap();
    cfg.net.learning_rate = 0.05;
    let net = Network::build(backend, cfg, &BuildOptions::default()).unwrap();
    let set = data.train_set(engine::data::LabelPolicy::Strict).unwrap();
    let plan = BatchPlan::new(Arc::new(set), LoaderConfig::validation(8, 32, 32)).unwrap();
    let batch = plan.make_batch(0, &mut None).unwrap();
    let mut trainer = Trainer::new(net, Optimizer::Sgd);
    let losses = (0..steps).map(|_| trainer.step(&batch.images, &batch.truths).unwrap().loss).collect();
    let mut acc = TopK::new(5);
    trainer.net.classify_batch(&batch, &mut acc);
    let _ = std::fs::remove_dir_all(&dir);
    (losses, acc.top1)
}

#[test]
fn cpu_classifier_fits_a_batch() {
    let (losses, top1) = fit(CpuBackend::new(), 300);
    assert!(losses[299] < losses[0] / 5.0, "loss {} → {}", losses[0], losses[299]);
    assert_eq!(top1, 8, "top-1 hits on the fitted batch");
}

#[test]
fn gpu_classifier_trains_like_the_cpu() {
    let Some(g) = common::gpu_or_skip() else { return };
    let (gpu, gpu_top1) = fit(g, 10);
    let (cpu, cpu_top1) = fit(CpuBackend::new(), 10);
    for (i, (c, g)) in cpu.iter().zip(&gpu).enumerate() {
        assert!((c - g).abs() <= 1e-3 * c.abs(), "iteration {}: cpu {c} gpu {g}", i + 1);
    }
    assert_eq!(cpu_top1, gpu_top1);
}
