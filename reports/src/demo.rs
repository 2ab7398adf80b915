//! A synthetic run (fake but plausible records) for tests, the example and trying the report.

use crate::records::{
    DeviceInfo, EpochRecord, GateResult, IterationRecord, MemorySample, ParityLimits, RunSummary,
};
use crate::kernels::KernelRecord;
use crate::validation::{ALL_CLASSES, BACKGROUND, ClassRecord, ConfusionCell, CurvePoint, Validation};
use crate::run_data::RunData;

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
            let step = tf + tb + tu + ts + 0.001;
            t += td + step;
            let rss = 400_000_000 + 1_000_000 * (i % per_epoch);
            let gpu = if b == 0 { 0 } else { 250_000_000 };
            // The GPU's host phases only record work; its device ran it (timestamps).
            let (host, device) = if b == 0 {
                ((tf, tb, tu, ts), [None; 5])
            } else {
                ((1e-4, 1e-4, 1e-4, step - 3e-4), [Some(tf * 0.9), Some(tf * 0.1), Some(tb), Some(tu), Some(ts * 0.5)])
            };
            its.push(IterationRecord {
                backend: backend.into(),
                iteration: i,
                epoch: (i - 1) / per_epoch,
                images: 4,
                loss,
                box_loss: loss * 0.3,
                obj_loss: loss * 0.6,
                class_loss: loss * 0.1,
                avg_iou: (0.1 + 0.02 * i as f64).min(0.8),
                recall50: (0.02 * i as f64).min(0.9),
                recall75: (0.01 * i as f64).min(0.6),
                count: 12.0,
                lr: 0.001,
                images_per_s: 4.0 / (td + step),
                step_s: step,
                data_wait_s: td,
                data_load_s: 3.0 * td,
                host_forward_s: host.0,
                host_backward_s: host.1,
                host_update_s: host.2,
                host_wait_s: host.3,
                device_forward_s: device[0],
                device_loss_s: device[1],
                device_backward_s: device[2],
                device_update_s: device[3],
                device_other_s: device[4],
                rss_bytes: rss,
                gpu_bytes: gpu,
                // The GPU lane trains in mixed precision: its first two steps overflow.
                loss_scale: (backend == "gpu").then(|| 65536.0 / 2f64.powi((i.min(3) - 1) as i32)),
                skipped: backend == "gpu" && i <= 2,
            });
            mem.push(MemorySample { t_s: t, rss_bytes: rss, swap_bytes: 0, gpu_bytes: gpu, backend: backend.into() });
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
                    // The demo fills the classifier columns too, so the accuracy chart is drawn.
                    top1: Some(0.3 + 0.2 * e as f64),
                    top5: Some(0.6 + 0.15 * e as f64),
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
        parity: ParityLimits { window: 10, loss_rel_delta_iter: Some(1e-3), loss_rel_delta_iter_first: None, loss_rel_delta_window: Some(5e-4) },
        ..Default::default()
    };
    let gates = vec![
        GateResult::new("loss_rel_delta_iter", 2e-4, 1e-3, true, "worst at iteration 7".into()),
        GateResult::new("map_abs_delta", 0.004, 0.02, true, "worst at epoch 2".into()),
        GateResult::new("min_gpu_speedup", 5.1, 8.0, false, "gpu 51 images/s vs cpu 10".into()),
    ];
    let toml = "[experiment]\nname = \"synthetic-demo\"\nseed = 42\n".to_string();
    let mut run = RunData::new(its, epochs, mem, summary, gates, toml);
    run.kernels = synthetic_kernels();
    run.validation = synthetic_validation();
    run
}

/// Per-class results of the 3 epochs, curves and confusion of the last, for both backends.
fn synthetic_validation() -> Validation {
    let names = ["rectangle", "ellipse"];
    let mut v = Validation::default();
    for backend in ["cpu", "gpu"] {
        for epoch in 0..3u64 {
            for (class, name) in names.iter().enumerate() {
                let ap = 0.1 + 0.15 * epoch as f64 + 0.05 * class as f64;
                v.classes.push(ClassRecord {
                    backend: backend.into(),
                    epoch,
                    class: class as u64,
                    name: (*name).into(),
                    truths: 20,
                    detections: 60,
                    ap50: ap,
                    ap50_95: ap * 0.45,
                    precision: ap + 0.1,
                    recall: ap + 0.05,
                    f1: ap + 0.07,
                });
            }
        }
        for (class, name) in [(0i64, "rectangle"), (1, "ellipse"), (ALL_CLASSES, "all classes")] {
            for i in 0..=20 {
                let c = i as f64 / 20.0;
                let (p, r) = (0.4 + 0.6 * c, (1.0 - c * c) * (0.8 - 0.05 * class as f64));
                v.curves.push(CurvePoint { backend: backend.into(), class, name: name.into(), confidence: c, precision: p, recall: r, f1: 2.0 * p * r / (p + r) });
            }
        }
        let labels = ["rectangle", "ellipse", BACKGROUND];
        for (t, truth) in labels.iter().enumerate() {
            for (p, predicted) in labels.iter().enumerate() {
                let count = if t == p && t < 2 { 15 } else { (t + 2 * p) as u64 % 4 };
                v.confusion.push(ConfusionCell { backend: backend.into(), truth: (*truth).into(), predicted: (*predicted).into(), count });
            }
        }
    }
    v
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
