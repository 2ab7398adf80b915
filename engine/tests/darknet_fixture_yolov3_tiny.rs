//! The yolov3-tiny Darknet fixture (`tests/fixtures/darknet-yolov3-tiny-160`, README there):
//! Darknet's CPU build trained yolov3-tiny (MSE box loss, maxpool size 2 stride 1, masks 3,4,5 and
//! 0,1,2) at 160×160 for three iterations on one image listed twice, from weights this engine
//! generates from a seed, and printed its losses at full precision. The engine, fed the same files
//! through the normal dataset path, must reproduce them.
//!
//! Iteration 1 is forward + loss. Fed Darknet's own layer inputs, our maxpools are bit-identical
//! to Darknet's and our [yolo] deltas differ by at most 1.2e-7, so the MSE branch, its (2 − w·h)
//! scale, the printed box loss, avg IoU and the anchor/mask matching are Darknet's. What moves
//! iteration 1 is upstream: Darknet's CPU build sums each BN layer's batch mean and variance in f32,
//! one element at a time; over N = 2·160·160 values that rounding shifts layer 0's outputs by up to
//! 7.9e-5 and the heads' inputs by ~1e-4, which the few large MSE box residuals turn into a 3.6e-5
//! difference of a head's box loss. With `DarknetCpuQuirks::bn_f32_stats` every iteration-1 figure
//! matches to < 1e-5; iterations 2 and 3 need the other Darknet-CPU quirks as well.

mod common;

use std::path::{Path, PathBuf};

use common::darknet::{fixture_batch, num, read_expected, rel};
use engine::cpu::CpuBackend;
use engine::network::{BuildOptions, DarknetCpuQuirks, Network};
use engine::train::{Optimizer, StepRecord, Trainer};
use engine::Backend;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/darknet-yolov3-tiny-160")
}

/// `expected.json`, read once per test binary.
fn expected() -> &'static serde_json::Value {
    static EXPECTED: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
    EXPECTED.get_or_init(|| read_expected(&fixture_dir()))
}

/// FNV-1a (64 bit): identifies the starting weights without keeping their 35 MB in the repository.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3))
}

/// The fixture's cfg with this engine's Darknet weight init from the recorded seed, and the
/// `.weights` encoding of those weights.
fn seeded_network<B: Backend>(backend: B) -> (Network<B>, Vec<u8>) {
    let (cfg, warnings) = engine::cfg::parse_file(&fixture_dir().join("model.cfg")).expect("model.cfg parses");
    assert!(warnings.is_empty(), "model.cfg warnings: {warnings:?}");
    let seed = expected()["init_weights"]["seed"].as_u64().expect("init_weights.seed");
    let net = Network::build(backend, cfg, &BuildOptions { max_boxes: 200, seed, ..Default::default() }).expect("builds");
    let bytes = engine::weights::encode_weights("init.weights", 0, &net.conv_dims(), &net.conv_params(), None).expect("encodes");
    (net, bytes)
}

/// The fixture's network with the weights Darknet started from, checked byte for byte (length
/// and FNV-1a of the `.weights` encoding) against the file Darknet was given.
fn fixture_network<B: Backend>(backend: B) -> Network<B> {
    let (net, bytes) = seeded_network(backend);
    let init = &expected()["init_weights"];
    let want = u64::from_str_radix(init["fnv1a64"].as_str().expect("init_weights.fnv1a64"), 16).expect("hex");
    assert_eq!(bytes.len() as u64, init["bytes"].as_u64().unwrap(), "starting weights: size differs from Darknet's init.weights");
    assert_eq!(
        fnv1a64(&bytes),
        want,
        "the weight init from the fixture's seed no longer gives the init.weights Darknet trained from: \
         regenerate the fixture (its README)"
    );
    net
}

fn run_fixture<B: Backend>(backend: B, quirks: DarknetCpuQuirks) -> Vec<StepRecord> {
    let mut net = fixture_network(backend);
    net.set_darknet_cpu(quirks).expect("quirks set");
    let c = &net.cfg.net;
    let b = fixture_batch(&fixture_dir(), c.width, c.height, c.batch);
    let mut trainer = Trainer::new(net, Optimizer::Sgd);
    (0..3).map(|_| trainer.step(&b.images, &b.truths).expect("step")).collect()
}

/// Per head, ours against Darknet's at iteration `k` (0-based): relative differences of cost,
/// box part (Darknet's printed `iou_loss`), non-box part (`class_loss`) and avg IoU.
struct HeadDiff {
    layer: usize,
    cost: f64,
    box_loss: f64,
    non_box: f64,
    avg_iou: f64,
}

/// Prints iteration `k` against Darknet; checks layer indices and truth counts. Returns the
/// relative difference of the loss and the per-head differences.
fn compare(rec: &StepRecord, k: usize, backend: &str) -> (f64, Vec<HeadDiff>) {
    let it = &expected()["iterations"][k];
    let batch = num(&expected()["settings"]["batch"]);
    let loss = num(&it["loss"]);
    let r = rel(rec.loss, loss);
    println!("{backend} iteration {}: loss {:.7} darknet {:.7} rel {:.2e}", k + 1, rec.loss, loss, r);
    let heads = it["yolo_layers"].as_array().expect("yolo_layers");
    assert_eq!(rec.heads.len(), heads.len());
    let diffs = rec
        .heads
        .iter()
        .zip(heads)
        .map(|(h, d)| {
            assert_eq!(h.layer as f64, num(&d["layer"]));
            assert_eq!(h.count, num(&d["count"]), "head {}: truths assigned", h.layer);
            let avg_iou = num(&d["tot_iou"]) / num(&d["count"]);
            let hd = HeadDiff {
                layer: h.layer,
                cost: rel(h.cost, num(&d["cost"])),
                box_loss: rel(h.box_loss / batch, num(&d["iou_loss"])),
                non_box: rel(h.class_loss / batch, num(&d["class_loss"])),
                avg_iou: rel(h.avg_iou, avg_iou),
            };
            println!(
                "  head {}: cost {:.7} (rel {:.2e}), box {:.7} (darknet {:.7}, rel {:.2e}), non-box {:.7} (rel {:.2e}), avg IoU {:.7} (darknet {:.7}, rel {:.2e})",
                h.layer, h.cost, hd.cost, h.box_loss / batch, num(&d["iou_loss"]), hd.box_loss,
                h.class_loss / batch, hd.non_box, h.avg_iou, avg_iou, hd.avg_iou
            );
            hd
        })
        .collect();
    (r, diffs)
}

/// Iteration 1 to float precision: loss, and per head cost, box part, non-box part, avg IoU.
fn assert_iteration_1_matches(rec: &StepRecord, backend: &str) {
    let (r, heads) = compare(rec, 0, backend);
    assert!(r < 1e-5, "{backend}: iteration 1 loss {} (rel {r:.2e})", rec.loss);
    for h in heads {
        for (what, d) in [("cost", h.cost), ("box loss", h.box_loss), ("non-box loss", h.non_box), ("avg IoU", h.avg_iou)] {
            assert!(d < 1e-5, "{backend}: iteration 1 head {} {what} differs by {d:.2e}", h.layer);
        }
    }
}

/// All Darknet-CPU quirks on: iteration 1 to float precision, iterations 2 and 3 within the
/// bounds of the yolov4-tiny fixture (loss 1e-3, head cost 2e-3). Measured on the CPU: iteration 1
/// loss 1.8e-7, box parts 4.3e-6 and 1.6e-6, avg IoU 4.1e-6 and 2.4e-6; iterations 2 and 3 loss
/// 1.9e-5 and 5.4e-5. What remains at iteration 1: our convolutions sum in another order, and
/// Darknet's OPENCV=0 loader round-trips the image through HSV (inputs differ by ≤ 2.7e-7).
fn assert_quirks_reproduce_darknet(records: &[StepRecord], backend: &str) {
    assert_iteration_1_matches(&records[0], backend);
    for (k, rec) in records.iter().enumerate().skip(1) {
        let (r, heads) = compare(rec, k, backend);
        assert!(r < 1e-3, "{backend}: iteration {} loss {} (rel {r:.2e})", k + 1, rec.loss);
        for h in heads {
            assert!(h.cost < 2e-3, "{backend}: iteration {} head {} cost differs by {:.2e}", k + 1, h.layer, h.cost);
        }
    }
}

#[test]
fn cpu_with_darknet_cpu_quirks_reproduces_all_three_iterations() {
    let records = run_fixture(CpuBackend::new(), DarknetCpuQuirks::ALL);
    assert_quirks_reproduce_darknet(&records, "cpu (Darknet-CPU quirks)");
}

/// This project's semantics (accurate BN sums, no quirk). Iteration 1's loss and non-box parts
/// still match to 1e-5 (measured: loss 2.0e-6, non-box ≤ 3.3e-6), but Darknet's f32 BN rounding
/// moves a head's box part by more than 1e-5 (measured 3.6e-5 and 1.4e-5): turning on only
/// `bn_f32_stats` brings every box part under 1e-5, so that rounding, and nothing in the MSE
/// head, is the difference. Iterations 2 and 3 (measured 2.3% and 2.3% lower than Darknet's)
/// stay within 1e-1 like the yolov4-tiny fixture.
#[test]
fn cpu_iteration_1_differs_from_darknet_only_by_its_f32_bn_sums() {
    let records = run_fixture(CpuBackend::new(), DarknetCpuQuirks::default());
    let (r, heads) = compare(&records[0], 0, "cpu");
    assert!(r < 1e-5, "iteration 1 loss {} (rel {r:.2e})", records[0].loss);
    assert!(heads.iter().all(|h| h.non_box < 1e-5), "non-box parts should match without quirks");
    let worst_box = heads.iter().map(|h| h.box_loss).fold(0.0, f64::max);
    assert!(worst_box > 1e-5, "without bn_f32_stats the box parts match to {worst_box:.2e}: the quirk is not needed any more");
    for (k, rec) in records.iter().enumerate().skip(1) {
        let (r, _) = compare(rec, k, "cpu");
        assert!(r < 1e-1, "iteration {} loss {} (rel {r:.2e})", k + 1, rec.loss);
    }
    let only_f32 = run_fixture(CpuBackend::new(), DarknetCpuQuirks { bn_f32_stats: true, ..Default::default() });
    assert_iteration_1_matches(&only_f32[0], "cpu (bn_f32_stats only)");
}

#[test]
fn gpu_with_darknet_cpu_quirks_reproduces_all_three_iterations() {
    let Some(gpu) = common::gpu_or_skip() else { return };
    let records = run_fixture(gpu, DarknetCpuQuirks::ALL);
    assert_quirks_reproduce_darknet(&records, "gpu (Darknet-CPU quirks)");
}

/// Writes the starting weights for Darknet (the fixture's README): run with
/// `DARKNET_FIXTURE_INIT=path/init.weights cargo test -p engine --test darknet_fixture_yolov3_tiny -- --ignored`.
#[test]
#[ignore = "a tool: writes init.weights for regenerating the fixture with Darknet"]
fn write_init_weights_for_darknet() {
    let path = std::env::var("DARKNET_FIXTURE_INIT").expect("set DARKNET_FIXTURE_INIT to the file to write");
    assert!(!Path::new(&path).exists(), "{path} exists; not overwriting it");
    let (_, bytes) = seeded_network(CpuBackend::new());
    std::fs::write(&path, &bytes).expect("writes");
    println!("wrote {path}: {} bytes, fnv1a64 {:016x}", bytes.len(), fnv1a64(&bytes));
}
