//! `cargo bench -p engine --bench train_step -- [cpu|gpu] [size] [batch] [iterations]`
//!
//! Trains yolov4-tiny (80 classes) at size×size on random data (`engine::bench`) and prints
//! images/s (steady state: the first iteration, which compiles pipelines, is excluded), the GPU's
//! top kernels (to stderr) and peak device bytes as one JSON line. `runner bench` measures the
//! same and writes the kernels table; quote either as a ratio against a peer measured in the same
//! run (ci/bench/torch_peer.py), never as a lone figure.

use engine::bench::{BenchResult, run};
use engine::cpu::CpuBackend;
use engine::gpu::{AdapterSelector, GpuBackend};

fn line(r: &BenchResult, size: usize, batch: usize) -> String {
    let ms = |phase| r.kernels.by_phase().iter().find(|(p, _)| *p == phase).map_or(0.0, |(_, s)| s / r.kernels.steps.max(1) as f64 * 1e3);
    use engine::profile::Phase;
    format!(
        "{{\"backend\":\"{}\",\"size\":{size},\"batch\":{batch},\"iterations\":{},\"images_per_s\":{:.3},\"step_s\":{:.4},\"first_iteration_s\":{:.3},\"build_s\":{:.3},\"device_forward_ms\":{:.3},\"device_loss_ms\":{:.3},\"device_backward_ms\":{:.3},\"device_update_ms\":{:.3},\"device_bytes\":{},\"peak_device_bytes\":{},\"last_loss\":{:.4}}}",
        r.backend,
        r.steps + 1,
        r.images_per_s,
        r.step_s,
        r.first_step_s,
        r.build_s,
        ms(Phase::Forward),
        ms(Phase::Loss),
        ms(Phase::Backward),
        ms(Phase::Update),
        r.bytes,
        r.peak_bytes,
        r.last_loss
    )
}

fn main() {
    // cargo bench passes `--bench`; keep only our positional arguments.
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let which = args.first().map(String::as_str).unwrap_or("gpu");
    let size = args.get(1).and_then(|v| v.parse().ok()).unwrap_or(96);
    let batch = args.get(2).and_then(|v| v.parse().ok()).unwrap_or(4);
    let iterations: usize = args.get(3).and_then(|v| v.parse().ok()).unwrap_or(5).max(2);
    let (mut cfg, _) = engine::cfg::load("yolov4-tiny").expect("built-in cfg");
    cfg.set_size(size, size).expect("size");
    cfg.set_batch(batch, 1).expect("batch");
    let opts = engine::network::BuildOptions { seed: 1, ..Default::default() };
    let r = match which {
        "cpu" => run(CpuBackend::new(), cfg, iterations - 1, 1, &opts),
        _ => run(GpuBackend::new(&AdapterSelector::default()).expect("GPU adapter"), cfg, iterations - 1, 1, &opts),
    }
    .expect("training step");
    if !r.kernels.is_empty() {
        eprintln!("device time {:.3} ms per step; top kernels:\n{}", r.kernels.total_s() / r.kernels.steps as f64 * 1e3, r.kernels.top_kernels_text(15));
    }
    println!("{}", line(&r, size, batch));
}
