//! Dynamic loss scaling (engine::train::LossScale, the groundwork of mixed precision). In fp32 a
//! power-of-two scale is exact, so scaled training gives the same bits as unscaled training, with
//! SGD (whose momentum lives in the gradient buffers) and with Adam, on the CPU and on the GPU.
//! A scale so large that the scaled gradients overflow makes steps skips: the device restores
//! the whole state (parameters, momentum, BN running statistics) bit for bit, the scale halves
//! each time, and the first clean step gives exactly what an unscaled trainer gives on that batch.

use engine::cpu::CpuBackend;
use engine::network::{BuildOptions, Network};
use engine::train::{LossScale, Optimizer, Trainer};
use engine::Backend;

mod common;

fn trainer<B: Backend>(backend: B, optimizer: Optimizer, loss_scaling: bool) -> Trainer<B> {
    let cfg = common::small::cfg();
    let opts = BuildOptions { seed: 5, adam: optimizer == Optimizer::Adam, loss_scaling, ..Default::default() };
    Trainer::new(Network::build(backend, cfg, &opts).expect("builds"), optimizer)
}

/// Every parameter, gradient/momentum, Adam moment and running statistic, as bits.
fn state_bits<B: Backend>(net: &Network<B>) -> Vec<u32> {
    net.state_arenas.iter().flat_map(|a| net.backend.download(a)).map(f32::to_bits).collect()
}

fn scaled_training_is_bit_identical<B: Backend>(make: impl Fn() -> B) {
    let data = common::small::batches(3);
    for optimizer in [Optimizer::Sgd, Optimizer::Adam] {
        let mut plain = trainer(make(), optimizer, false);
        let mut scaled = trainer(make(), optimizer, true);
        assert_eq!(scaled.loss_scale, Some(LossScale::dynamic()));
        for (i, (x, y)) in data.iter().enumerate() {
            let a = plain.step(x, y).expect("plain step");
            let b = scaled.step(x, y).expect("scaled step");
            assert_eq!(a.loss.to_bits(), b.loss.to_bits(), "{optimizer:?} step {}: losses differ", i + 1);
            assert_eq!((b.loss_scale, b.skipped), (Some(65536.0), false), "{optimizer:?} step {}", i + 1);
            assert_eq!(a.loss_scale, None);
        }
        assert!(state_bits(&plain.net) == state_bits(&scaled.net), "{optimizer:?}: parameters or optimiser state differ");
    }
}

fn overflowing_steps_are_undone<B: Backend>(make: impl Fn() -> B) {
    let data = common::small::batches(40);
    let mut t = trainer(make(), Optimizer::Sgd, true);
    // One plain step first, so that SGD momentum and the running statistics are not zero.
    t.step(&data[0].0, &data[0].1).expect("first step");
    let huge = 2f32.powi(126);
    t.loss_scale.as_mut().expect("loss scaling is on").scale = huge;
    let mut skipped = 0;
    let mut used = 1;
    loop {
        assert!(used < data.len(), "still overflowing after {skipped} halvings");
        let before = state_bits(&t.net);
        let (x, y) = &data[used];
        used += 1;
        let rec = t.step(x, y).expect("an overflowing step is skipped, not an error");
        assert_eq!(rec.loss_scale, Some(huge / 2f32.powi(skipped)));
        if !rec.skipped {
            break;
        }
        skipped += 1;
        assert!(state_bits(&t.net) == before, "skipped step {used}: the state was not restored bit for bit");
    }
    assert!(skipped > 0, "a scale of 2^126 must overflow the gradients");
    let ls = t.loss_scale.as_ref().expect("on");
    assert_eq!((ls.skipped, ls.scale, ls.clean), (skipped as u64, huge / 2f32.powi(skipped), 1));
    // The clean step equals an unscaled trainer's on the same batch from the same state.
    let mut plain = trainer(make(), Optimizer::Sgd, false);
    plain.step(&data[0].0, &data[0].1).expect("first step");
    let last = &data[used - 1];
    plain.step(&last.0, &last.1).expect("plain step");
    assert!(state_bits(&plain.net) == state_bits(&t.net), "the first clean step after {skipped} skips differs from the unscaled step");
    println!("{skipped} skipped steps restored bit for bit; then a clean step at scale 2^{}", ls.scale.log2());
}

#[test]
fn cpu_scaled_training_is_bit_identical() {
    scaled_training_is_bit_identical(CpuBackend::new);
}

#[test]
fn cpu_overflowing_steps_are_undone() {
    overflowing_steps_are_undone(CpuBackend::new);
}

#[test]
fn gpu_scaled_training_is_bit_identical() {
    if common::gpu_or_skip().is_none() {
        return;
    }
    scaled_training_is_bit_identical(|| common::gpu_or_skip().expect("adapter seen above"));
}

#[test]
fn gpu_overflowing_steps_are_undone() {
    if common::gpu_or_skip().is_none() {
        return;
    }
    overflowing_steps_are_undone(|| common::gpu_or_skip().expect("adapter seen above"));
}
