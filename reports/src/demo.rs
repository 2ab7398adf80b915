//! A synthetic run (fake but plausible records) for tests, the example and trying the report.

use crate::records::{
    DeviceInfo, EpochRecord, GateResult, IterationRecord, MemorySample, ParityLimits, RunSummary,
};
use crate::kernels::KernelRecord;
use crate::run_dir::RunData;

/// Deterministic pseudo-noise in [-1, 1] (no rand dependency needed for fake data).
fn noise(i: u64, salt: u64) -> f64 {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ salt.wrapping_mul(0xD1B5_4A32_D192_ED03);
    x ^= x >> 29;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 32;
    (x % 20_001) as f64 / 10_000.0 - 1.0
}

/// Two backends ("cpu", "gpu") × `iterations`, 3 epochs, a memory timeline and three gates
/// (the last one failing, so both verdicts show up).
pub fn synthetic_run(iterations: u64) -> RunData {
    let per_epoch = iterations.div_ceil(3).max(1);
    let mut its = Vec::new();
    let mut mem = Vec::new();
    let mut t = 0.0;
    for (b, backend) in ["cpu", "gpu"].into_iter().enumerate() {
        let speed = if b == 0 { 1.0 } else { 0.125 };
        for i in 1..=iterations {
            let base = 900.0 * (-(i as f64) / 6.0).exp() + 4.0 + 0.3 * noise(i, 1);
            let loss = if b == 0 { base } else { base * (1.0 + 2e-4 * noise(i, 2)) };
            let (td, tf, tb, tu, ts) =
                (0.004, 0.040 * speed, 0.080 * speed, 0.010 * speed, if b == 0 { 0.0 } else { 0.002 });
            let total: f64 = td + tf + tb + tu + ts;
            t += total;
            let rss = 400_000_000 + 1_000_000 * (i % per_epoch);
            let gpu = if b == 0 { 0 } else { 250_000_000 };
            its.push(IterationRecord {
                backend: backend.into(),
                iteration: i,
                epoch: (i - 1) / per_epoch,
                loss,
                box_loss: loss * 0.3,
                obj_loss: loss * 0.6,
                class_loss: loss * 0.1,
                avg_iou: (0.1 + 0.02 * i as f64).min(0.8),
                recall50: (0.02 * i as f64).min(0.9),
                recall75: (0.01 * i as f64).min(0.6),
                count: 12.0,
                lr: 0.001,
                images_per_s: 4.0 / total,
                t_data_s: td,
                t_forward_s: tf,
                t_backward_s: tb,
                t_update_s: tu,
                t_sync_s: ts,
                rss_bytes: rss,
                gpu_bytes: gpu,
            });
            mem.push(MemorySample { t_s: t, rss_bytes: rss, swap_bytes: 0, gpu_bytes: gpu });
        }
    }
    let epochs = (0..3)
        .flat_map(|e| {
            ["cpu", "gpu"].into_iter().map(move |b| {
                let m = 0.1 + 0.15 * e as f64 + if b == "gpu" { 0.004 } else { 0.0 };
                EpochRecord {
                    backend: b.into(),
                    epoch: e,
                    map50: m,
                    map50_95: m * 0.45,
                    precision: m + 0.1,
                    recall: m + 0.05,
                    f1: m + 0.07,
                }
            })
        })
        .collect();
    let summary = RunSummary {
        experiment_name: "synthetic-demo".into(),
        experiment_hash: "0123abcd".into(),
        git_commit: "deadbeef".into(),
        seed: 42,
        started_at: "2025-01-01T00:00:00Z".into(),
        wall_time_s: t,
        versions: [("runner".to_string(), "0.1.0".to_string())].into_iter().collect(),
        devices: vec![
            DeviceInfo { backend: "cpu".into(), name: "Demo CPU (8 cores)".into(), details: Default::default() },
            DeviceInfo {
                backend: "gpu".into(),
                name: "Demo GPU".into(),
                details: [("api".to_string(), "Metal".to_string())].into_iter().collect(),
            },
        ],
        parity: ParityLimits { window: 10, loss_rel_delta_iter: Some(1e-3), loss_rel_delta_window: Some(5e-4) },
        ..Default::default()
    };
    let gates = vec![
        GateResult { name: "loss_rel_delta_iter".into(), measured: 2e-4, limit: 1e-3, pass: true, detail: "worst at iteration 7".into() },
        GateResult { name: "map_abs_delta".into(), measured: 0.004, limit: 0.02, pass: true, detail: "worst at epoch 2".into() },
        GateResult { name: "min_gpu_speedup".into(), measured: 5.1, limit: 8.0, pass: false, detail: "gpu 51 images/s vs cpu 10".into() },
    ];
    let toml = "[experiment]\nname = \"synthetic-demo\"\nseed = 42\n".to_string();
    let mut run = RunData::new(its, epochs, mem, summary, gates, toml);
    run.kernels = synthetic_kernels();
    run
}

/// GPU time of a few layers, forward and backward, as the kernels table holds it.
fn synthetic_kernels() -> Vec<KernelRecord> {
    let mut rows = Vec::new();
    for layer in 0..6i64 {
        for (phase, kernel, scale) in [("forward", "conv_forward 128x128k8s3", 1.0), ("backward", "conv_backward_data 128x128k8s3", 2.0)] {
            let gpu_s = 1e-3 * scale * (1.0 + 0.5 * noise(layer as u64, 7).abs());
            rows.push(KernelRecord {
                backend: "gpu".into(),
                layer,
                layer_type: "conv".into(),
                phase: phase.into(),
                kernel: kernel.into(),
                dispatches: 1.0,
                gpu_s,
                gflops: 2e9 / gpu_s / 1e9,
                gbytes_per_s: 8e7 / gpu_s / 1e9,
            });
        }
    }
    rows
}
