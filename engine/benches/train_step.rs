//! `cargo bench -p engine --bench train_step -- [cpu|gpu] [size] [batch] [iterations]`
//!
//! Trains yolov4-tiny (80 classes) at size×size on random images with a few random boxes and
//! prints images/s (steady state: the first iteration, which compiles pipelines, is excluded),
//! mean seconds per phase and peak device bytes, as one JSON line. Quote it as a ratio against
//! a peer measured in the same run (ci/bench/torch_peer.py), never as a lone figure.

use std::time::Instant;

use engine::cpu::CpuBackend;
use engine::gpu::{AdapterSelector, GpuBackend};
use engine::network::{BuildOptions, Network};
use engine::train::{Optimizer, Trainer};
use engine::Backend;
use rand::{Rng, SeedableRng};

fn bench<B: Backend>(backend: B, size: usize, batch: usize, iterations: usize) -> String {
    let (mut cfg, _) = engine::cfg::load("yolov4-tiny").expect("built-in cfg");
    cfg.set_size(size, size).expect("size");
    cfg.set_batch(batch, 1).expect("batch");
    cfg.net.burn_in = 0;
    let t_build = Instant::now();
    let net = Network::build(backend, cfg, &BuildOptions { seed: 1, ..Default::default() }).expect("build");
    let build_s = t_build.elapsed().as_secs_f64();
    let name = net.backend.name();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
    let images: Vec<f32> = (0..batch * 3 * size * size).map(|_| rng.random_range(0.0..1.0)).collect();
    let mut truths = vec![0.0f32; batch * net.max_boxes * 5];
    for b in 0..batch {
        for k in 0..4 {
            let t = &mut truths[(b * net.max_boxes + k) * 5..][..5];
            t.copy_from_slice(&[rng.random_range(0.2..0.8), rng.random_range(0.2..0.8), rng.random_range(0.05..0.4), rng.random_range(0.05..0.4), rng.random_range(0..80) as f32]);
        }
    }
    let mut trainer = Trainer::new(net, Optimizer::Sgd);
    let first = Instant::now();
    trainer.step(&images, &truths).expect("step");
    let first_s = first.elapsed().as_secs_f64();
    let (mut fwd, mut bwd, mut upd, mut sync) = (0.0, 0.0, 0.0, 0.0);
    let t0 = Instant::now();
    let mut loss = 0.0;
    for _ in 1..iterations {
        let r = trainer.step(&images, &truths).expect("step");
        fwd += r.t_forward;
        bwd += r.t_backward;
        upd += r.t_update;
        sync += r.t_sync;
        loss = r.loss;
    }
    let n = (iterations - 1).max(1) as f64;
    let dt = t0.elapsed().as_secs_f64();
    let (bytes, peak) = trainer.net.memory_bytes();
    format!(
        "{{\"backend\":\"{name}\",\"size\":{size},\"batch\":{batch},\"iterations\":{iterations},\"images_per_s\":{:.3},\"first_iteration_s\":{first_s:.3},\"build_s\":{build_s:.3},\"record_forward_s\":{:.4},\"record_backward_s\":{:.4},\"record_update_s\":{:.4},\"sync_s\":{:.4},\"device_bytes\":{bytes},\"peak_device_bytes\":{peak},\"last_loss\":{loss:.4}}}",
        batch as f64 * n / dt,
        fwd / n,
        bwd / n,
        upd / n,
        sync / n
    )
}

fn main() {
    // cargo bench passes `--bench`; keep only our positional arguments.
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let which = args.first().map(String::as_str).unwrap_or("gpu");
    let size = args.get(1).and_then(|v| v.parse().ok()).unwrap_or(96);
    let batch = args.get(2).and_then(|v| v.parse().ok()).unwrap_or(4);
    let iterations = args.get(3).and_then(|v| v.parse().ok()).unwrap_or(5).max(2);
    let line = match which {
        "cpu" => bench(CpuBackend::new(), size, batch, iterations),
        _ => bench(GpuBackend::new(&AdapterSelector::default()).expect("GPU adapter"), size, batch, iterations),
    };
    println!("{line}");
}
