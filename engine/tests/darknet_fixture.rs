//! The Darknet fixture (`shared/reference/fixtures/darknet-yolov4-tiny-96`): Darknet itself ran
//! yolov4-tiny at 96×96 on one image listed twice, from `init.weights`, and printed its losses.
//! Our engine, fed the same files through the normal dataset path, must reproduce them.
//!
//! Iteration 1 is forward + loss: it must match to float precision. Iterations 2 and 3 follow
//! SGD updates, and there Darknet's CPU build departs from the gradient of its own loss in four
//! places (`DarknetCpuQuirks`, found by comparing per-layer updates with Darknet's own after one
//! and two iterations): BN beta never trained, a conv's backward overwriting gradient that a
//! route already sent to its input, route/upsample gradient buffers never reset between
//! iterations, and its BN backward formula; a fifth quirk, its BN batch statistics summed in f32
//! one element at a time (found on the yolov3-tiny fixture, `darknet_fixture_yolov3_tiny.rs`),
//! is rounding, not a formula. With all five switched on, all three iterations match Darknet;
//! with them off (this project's semantics, darknet-spec §0) iterations 2 and 3 differ by a few
//! percent, and each quirk is shown to be needed.

mod common;

use std::path::{Path, PathBuf};

use common::darknet::{fixture_batch, num, read_expected, rel};
use engine::cpu::CpuBackend;
use engine::network::{BuildOptions, DarknetCpuQuirks, Network};
use engine::train::{Optimizer, Trainer};
use engine::Backend;

fn fixture_dir() -> PathBuf {
    let mut dir = Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf();
    loop {
        let candidate = dir.join("shared/reference/fixtures/darknet-yolov4-tiny-96");
        if candidate.is_dir() {
            return candidate;
        }
        assert!(dir.pop(), "fixture folder shared/reference/fixtures/darknet-yolov4-tiny-96 not found above the crate");
    }
}

/// `expected.json`, read once per test binary.
fn expected() -> &'static serde_json::Value {
    static EXPECTED: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
    EXPECTED.get_or_init(|| read_expected(&fixture_dir()))
}

fn run_fixture<B: Backend>(backend: B, quirks: DarknetCpuQuirks) -> Vec<engine::train::StepRecord> {
    let dir = fixture_dir();
    let (cfg, warnings) = engine::cfg::parse_file(&dir.join("model.cfg")).expect("model.cfg parses");
    for w in &warnings {
        println!("cfg warning: {w}");
    }
    let (w, h, batch) = (cfg.net.width, cfg.net.height, cfg.net.batch);
    let mut net = Network::build(backend, cfg, &BuildOptions { max_boxes: 200, ..Default::default() }).expect("builds");
    net.set_darknet_cpu(quirks).expect("quirks set");
    let file = net.load_weights(&dir.join("init.weights")).expect("init.weights loads");
    assert_eq!(file.header.seen, 0);

    let b = fixture_batch(&dir, w, h, batch);
    // The input tensor equals the one Darknet trained on, bit for bit.
    let raw = std::fs::read(dir.join("darknet_input_X.f32")).unwrap();
    let darknet_x: Vec<f32> = raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    assert_eq!(darknet_x.len(), b.images.len());
    assert!(darknet_x.iter().zip(&b.images).all(|(a, b)| a.to_bits() == b.to_bits()), "input tensor differs from darknet_input_X.f32");

    let mut trainer = Trainer::new(net, Optimizer::Sgd);
    (0..3).map(|_| trainer.step(&b.images, &b.truths).expect("step")).collect()
}

/// Darknet's loss at iteration `k` (0-based) and its per-head costs.
fn darknet_iteration(k: usize) -> (f64, Vec<f64>) {
    let exp = expected();
    let it = &exp["iterations"][k];
    let heads = it["yolo_layers"].as_array().unwrap().iter().map(|h| num(&h["cost_hankai_full_precision"])).collect();
    (num(&it["loss"]["hankai_full_precision"]), heads)
}

/// Prints every iteration against Darknet; asserts iteration 1 (loss, and per head: cost, avg
/// IoU, count) to float precision. Returns the relative loss differences of iterations 1–3.
fn check_against_darknet(records: &[engine::train::StepRecord], backend: &str) -> Vec<f64> {
    let exp = expected();
    let iters = exp["iterations"].as_array().unwrap();
    assert_eq!(records.len(), iters.len());
    let mut rels = Vec::new();
    for (k, rec) in records.iter().enumerate() {
        let it = &iters[k];
        let darknet = num(&it["loss"]["hankai_full_precision"]);
        let r = rel(rec.loss, darknet);
        println!("{backend} iteration {}: loss {:.7} darknet {:.7} rel diff {:.2e}", k + 1, rec.loss, darknet, r);
        let heads = it["yolo_layers"].as_array().unwrap();
        for (hrec, hexp) in rec.heads.iter().zip(heads) {
            let cost = num(&hexp["cost_hankai_full_precision"]);
            let avg_iou = num(&hexp["hankai"]["avg_iou"]);
            let count = num(&hexp["hankai"]["count"]);
            println!(
                "  head {}: cost {:.7} (darknet {:.7}, rel {:.2e}), avg IoU {:.6} (darknet {:.6}), count {} (darknet {})",
                hrec.layer, hrec.cost, cost, rel(hrec.cost, cost), hrec.avg_iou, avg_iou, hrec.count, count
            );
            if k == 0 {
                assert_eq!(hrec.layer as f64, num(&hexp["layer"]));
                assert!(rel(hrec.cost, cost) < 1e-5, "head {} cost {} vs darknet {}", hrec.layer, hrec.cost, cost);
                // Darknet prints 6 digits; our IoU agrees to ~2e-5 (float rounding of the box decode).
                assert!((hrec.avg_iou - avg_iou).abs() < 1e-4, "head {} avg IoU {} vs darknet {}", hrec.layer, hrec.avg_iou, avg_iou);
                assert_eq!(hrec.count, count);
            }
        }
        if k == 0 {
            assert!(r < 1e-5, "iteration 1 loss {} vs darknet {} (rel {r:.2e})", rec.loss, darknet);
        }
        rels.push(r);
    }
    rels
}

/// With every Darknet-CPU quirk on, iterations 2 and 3 (loss and per-head cost) match Darknet.
/// Measured: 9.8e-8 and 2.5e-7 on the CPU backend, 1.7e-6 and 3.6e-5 on the GPU (lavapipe); 6.3e-5
/// and 2.1e-4 on the CPU before `bn_f32_stats` existed. The bound 1e-3 leaves room for summation
/// order (our convolutions and the GPU's reductions sum in another order than Darknet, through 38
/// layers and two updates); the next test shows each quirk is needed.
fn assert_quirks_reproduce_darknet(records: &[engine::train::StepRecord], backend: &str) {
    let rels = check_against_darknet(records, backend);
    for k in 1..3 {
        assert!(rels[k] < 1e-3, "{backend}: iteration {} loss {} vs darknet (rel {:.2e})", k + 1, records[k].loss, rels[k]);
        let (_, heads) = darknet_iteration(k);
        for (h, cost) in records[k].heads.iter().zip(heads) {
            assert!(rel(h.cost, cost) < 2e-3, "{backend}: iteration {} head {} cost {} vs darknet {cost}", k + 1, h.layer, h.cost);
        }
    }
}

/// This project's semantics (no quirk). Measured: 3.1e-2 at iteration 2 and 6.0e-2 at iteration
/// 3 (our loss is lower: the gradients Darknet-CPU drops or mis-scales are trained here). The
/// bound 1e-1 is the size of those effects, and the quirk tests prove that they are the cause.
fn assert_project_semantics_close(records: &[engine::train::StepRecord], backend: &str) {
    let rels = check_against_darknet(records, backend);
    for k in 1..3 {
        assert!(rels[k] < 1e-1, "{backend}: iteration {} loss {} vs darknet (rel {:.2e})", k + 1, records[k].loss, rels[k]);
    }
}

#[test]
fn cpu_reproduces_darknet_losses() {
    let records = run_fixture(CpuBackend::new(), DarknetCpuQuirks::default());
    assert_project_semantics_close(&records, "cpu");
}

#[test]
fn cpu_with_darknet_cpu_quirks_reproduces_all_three_iterations() {
    let records = run_fixture(CpuBackend::new(), DarknetCpuQuirks::ALL);
    assert_quirks_reproduce_darknet(&records, "cpu (Darknet-CPU quirks)");
}

/// Each quirk is needed: leaving any one out moves iterations 2–3 clearly further from Darknet
/// than all five together (sum of the two relative differences, at least 3×; measured: all 3.5e-7,
/// without one of them 1.5e-3, 5.1e-2, 3.5e-2, 3.5e-3 and 2.7e-4).
#[test]
fn cpu_each_darknet_cpu_quirk_is_needed() {
    let all = DarknetCpuQuirks::ALL;
    let score = |q: DarknetCpuQuirks, name: &str| {
        let recs = run_fixture(CpuBackend::new(), q);
        let s: f64 = (1..3).map(|k| rel(recs[k].loss, darknet_iteration(k).0)).sum();
        println!("{name}: iterations 2+3 relative difference {s:.2e}");
        s
    };
    let base = score(all, "all quirks");
    let without = [
        ("without frozen_bn_beta", DarknetCpuQuirks { frozen_bn_beta: false, ..all }),
        ("without conv_overwrites_input_grad", DarknetCpuQuirks { conv_overwrites_input_grad: false, ..all }),
        ("without stale_layer_grads", DarknetCpuQuirks { stale_layer_grads: false, ..all }),
        ("without bn_backward", DarknetCpuQuirks { bn_backward: false, ..all }),
        ("without bn_f32_stats", DarknetCpuQuirks { bn_f32_stats: false, ..all }),
    ];
    for (name, q) in without {
        let s = score(q, name);
        assert!(s > 3.0 * base, "{name}: {s:.2e} is not clearly worse than all quirks ({base:.2e})");
    }
}

#[test]
fn gpu_reproduces_darknet_losses() {
    let Some(gpu) = common::gpu_or_skip() else { return };
    let records = run_fixture(gpu, DarknetCpuQuirks::default());
    assert_project_semantics_close(&records, "gpu");
    // And the GPU follows the CPU: same semantics, same numbers up to float rounding.
    let cpu = run_fixture(CpuBackend::new(), DarknetCpuQuirks::default());
    for (g, c) in records.iter().zip(&cpu) {
        assert!(rel(g.loss, c.loss) < 1e-4, "iteration {}: gpu loss {} vs cpu {}", g.iteration, g.loss, c.loss);
    }
}

#[test]
fn gpu_with_darknet_cpu_quirks_reproduces_all_three_iterations() {
    let Some(gpu) = common::gpu_or_skip() else { return };
    let records = run_fixture(gpu, DarknetCpuQuirks::ALL);
    assert_quirks_reproduce_darknet(&records, "gpu (Darknet-CPU quirks)");
}
