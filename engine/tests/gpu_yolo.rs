//! The GPU [yolo] head (shaders-wgsl/yolo.wgsl) against its CPU twin `forward_backward_cpu`, on
//! random inputs and truths over every loss variant, odd grids and uneven batches.
//!
//! No adapter: every test prints why and returns, unless REQUIRE_GPU=1, where it fails.
//! Tolerances: out and dx |gpu − cpu| ≤ 1e-4 + 1e-4·|cpu| (the CPU rounds exp/ln/atan from double,
//! the GPU computes them in f32); every stats field ≤ 1e-5 + 1e-4·|cpu| (GPU sums in f32 trees,
//! the CPU in f64). Reruns on the GPU must give identical bits.


use engine::Backend;
use engine::gpu::{AdapterSelector, GpuBackend};
use engine::shapes::{IouLoss, YoloParams};
use engine::cpu::yolo::forward_backward_cpu;
use engine::yolo_stats as st;

mod common;
use common::shared_gpu as gpu;

macro_rules! gpu_or_skip {
    () => {
        match gpu() {
            Some(g) => g,
            None => return,
        }
    };
}

const NET: usize = 96;

/// A yolov4-tiny head on a w×h grid of a 96×96 network, 5 truth slots per image.
fn head(w: usize, h: usize, mask: &[usize], classes: usize, batch: usize) -> YoloParams {
    common::yolov4_tiny_head(w, h, mask, classes, batch, NET, 5)
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 40) as f32 / (1u64 << 24) as f32
    }
    fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.next()
    }
}

type Truth = [f32; 5];

/// Random truths: image b gets counts[b] boxes (the rest of its slots stay 0 = terminator).
fn random_truths(p: &YoloParams, counts: &[usize], rng: &mut Rng) -> Vec<Vec<Truth>> {
    counts
        .iter()
        .map(|&c| {
            (0..c)
                .map(|_| {
                    [
                        rng.range(0.03, 0.97),
                        rng.range(0.03, 0.97),
                        rng.range(0.06, 0.7),
                        rng.range(0.06, 0.7),
                        (rng.next() * p.classes as f32).floor().min(p.classes as f32 - 1.0),
                    ]
                })
                .collect()
        })
        .collect()
}

fn truth_buf(p: &YoloParams, per_image: &[Vec<Truth>]) -> Vec<f32> {
    let mut t = vec![0.0; p.batch * p.max_boxes * 5];
    for (b, list) in per_image.iter().enumerate() {
        for (k, tr) in list.iter().enumerate() {
            t[(b * p.max_boxes + k) * 5..][..5].copy_from_slice(tr);
        }
    }
    t
}

fn idx(p: &YoloParams, b: usize, n: usize, e: usize, cell: usize) -> usize {
    let wh = p.w * p.h;
    (b * p.mask.len() + n) * (5 + p.classes) * wh + e * wh + cell
}

/// Random logits in [-2, 2); at each truth's cell, every mask anchor's box logits are set so
/// the prediction lands near the truth (IoUs spread over 0.3..1: ignore_thresh, recall75 and
/// truth_thresh all take both branches).
fn inputs(p: &YoloParams, truths: &[Vec<Truth>], rng: &mut Rng) -> Vec<f32> {
    let mut x: Vec<f32> = (0..p.len()).map(|_| rng.range(-2.0, 2.0)).collect();
    let s = p.scale_x_y;
    for (b, list) in truths.iter().enumerate() {
        for t in list {
            let i = ((t[0] * p.w as f32) as usize).min(p.w - 1);
            let j = ((t[1] * p.h as f32) as usize).min(p.h - 1);
            let cell = j * p.w + i;
            for (n, &a) in p.mask.iter().enumerate() {
                let (aw, ah) = p.anchors[a];
                for (e, frac) in [(0, t[0] * p.w as f32 - i as f32), (1, t[1] * p.h as f32 - j as f32)] {
                    let frac = (frac + rng.range(-0.15, 0.15)).clamp(0.02, 0.98);
                    x[idx(p, b, n, e, cell)] = if p.new_coords {
                        frac
                    } else {
                        let sig = ((frac + 0.5 * (s - 1.0)) / s).clamp(0.01, 0.99);
                        (sig / (1.0 - sig)).ln()
                    };
                }
                for (e, size, anchor, net) in [(2, t[2], aw, p.net_w), (3, t[3], ah, p.net_h)] {
                    let r = size * net as f32 / anchor * rng.range(0.75, 1.3);
                    x[idx(p, b, n, e, cell)] = if p.new_coords { (r / 4.0).sqrt() } else { r.ln() };
                }
            }
        }
    }
    x
}

struct Out {
    out: Vec<f32>,
    dx: Vec<f32>,
    stats: Vec<f32>,
}

fn run_cpu(x: &[f32], t: &[f32], p: &YoloParams) -> Out {
    let mut r = Out { out: vec![0.0; p.len()], dx: vec![0.0; p.len()], stats: vec![0.0; st::STATS_LEN] };
    forward_backward_cpu(x, &mut r.out, t, &mut r.dx, &mut r.stats, p);
    r
}

/// Two GPU runs on the same buffers (pre-filled with junk to prove they are overwritten).
fn run_gpu(g: &GpuBackend, x: &[f32], t: &[f32], p: &YoloParams) -> (Out, Out) {
    let up = |v: &[f32]| {
        let b = g.alloc(v.len());
        g.upload(&b, v);
        b
    };
    let (xb, tb) = (up(x), up(t));
    let out = up(&vec![7.0; p.len()]);
    let dx = up(&vec![-3.0; p.len()]);
    let stats = up(&[5.0; st::STATS_LEN]);
    let once = || {
        g.yolo_forward_backward(&xb, &out, &tb, &dx, &stats, p);
        Out { out: g.download(&out), dx: g.download(&dx), stats: g.download(&stats) }
    };
    (once(), once())
}

/// Largest |gpu − cpu| and whether all are within atol + rtol·|cpu|; first failure described.
fn compare(what: &str, gpu: &[f32], cpu: &[f32], atol: f64, rtol: f64) -> (f64, Option<String>) {
    assert_eq!(gpu.len(), cpu.len(), "{what}: length");
    let mut worst = 0.0f64;
    let mut fail = None;
    for (i, (&g, &c)) in gpu.iter().zip(cpu).enumerate() {
        let err = (g as f64 - c as f64).abs();
        let ok = err <= atol + rtol * (c as f64).abs() || (g.is_nan() && c.is_nan());
        worst = worst.max(err);
        if !ok && fail.is_none() {
            fail = Some(format!("{what}[{i}]: gpu {g} vs cpu {c} (err {err:e})"));
        }
    }
    (worst, fail)
}

const STAT_NAMES: [&str; 14] = [
    "COST", "CLASS_LOSS", "BOX_LOSS", "IOU_SUM", "COUNT", "RECALL50", "RECALL75", "IOU_LOSS_SUM", "OBJ_LOSS",
    "CLS_ONLY_LOSS", "OBJ_SUM", "ANYOBJ_SUM", "CLASS_PROB_SUM", "TRUTHS",
];

/// CPU vs GPU on one head; returns the CPU result for case-specific checks.
#[track_caller]
fn check(name: &str, p: &YoloParams, truths: &[Vec<Truth>], seed: u64) -> Out {
    let g = gpu().expect("checked by the caller");
    let mut rng = Rng(seed);
    let x = inputs(p, truths, &mut rng);
    let t = truth_buf(p, truths);
    let cpu = run_cpu(&x, &t, p);
    let (a, b) = run_gpu(g, &x, &t, p);
    let mut fails = Vec::new();
    let (e_out, f) = compare("out", &a.out, &cpu.out, 1e-4, 1e-4);
    fails.extend(f);
    let (e_dx, f) = compare("dx", &a.dx, &cpu.dx, 1e-4, 1e-4);
    fails.extend(f);
    let mut worst_stat = (0.0f64, 0.0f64, "");
    for (k, name) in STAT_NAMES.iter().enumerate() {
        let (err, f) = compare(name, &a.stats[k..k + 1], &cpu.stats[k..k + 1], 1e-5, 1e-4);
        fails.extend(f);
        let rel = err / (cpu.stats[k] as f64).abs().max(1e-30);
        if rel > worst_stat.0 {
            worst_stat = (rel, err, name);
        }
    }
    assert_eq!(&a.stats[STAT_NAMES.len()..], &[0.0, 0.0], "{name}: reserved stats slots");
    eprintln!(
        "{name}: max |Δout| {e_out:.2e}, max |Δdx| {e_dx:.2e}, worst stat {} rel {:.2e} (abs {:.2e}); cost {}, count {}",
        worst_stat.2, worst_stat.0, worst_stat.1, cpu.stats[st::COST], cpu.stats[st::COUNT]
    );
    assert!(fails.is_empty(), "{name}: GPU differs from the CPU twin:\n{}", fails.join("\n"));
    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    assert!(
        bits(&a.out) == bits(&b.out) && bits(&a.dx) == bits(&b.dx) && bits(&a.stats) == bits(&b.stats),
        "{name}: a GPU rerun gave different bits"
    );
    cpu
}

/// The CPU result for `p` changed by `edit`, on the inputs `check` would make for `seed`.
fn cpu_only(p: &YoloParams, truths: &[Vec<Truth>], seed: u64, edit: impl Fn(&mut YoloParams)) -> Out {
    let mut q = p.clone();
    edit(&mut q);
    let x = inputs(&q, truths, &mut Rng(seed));
    run_cpu(&x, &truth_buf(&q, truths), &q)
}

fn truths_for(p: &YoloParams, counts: &[usize], seed: u64) -> Vec<Vec<Truth>> {
    random_truths(p, counts, &mut Rng(seed ^ 0x5eed))
}

#[test]
fn ciou_yolov4_tiny_settings() {
    gpu_or_skip!();
    let p = head(7, 5, &[1, 2, 3], 3, 2);
    let tr = truths_for(&p, &[5, 3], 1);
    let cpu = check("ciou 7x5", &p, &tr, 1);
    // The planted predictions must exercise matching and ignore_thresh (else the comparison
    // proves little).
    assert!(cpu.stats[st::COUNT] > 0.0 && cpu.stats[st::RECALL50] > 0.0, "{:?}", cpu.stats);
    assert_ne!(cpu.dx, cpu_only(&p, &tr, 1, |q| q.ignore_thresh = 1.0).dx, "ignore_thresh never applied");
    let p = head(13, 13, &[0, 1, 2], 4, 2);
    let tr = truths_for(&p, &[4, 5], 2);
    check("ciou 13x13", &p, &tr, 2);
}

#[test]
fn mse_giou_diou() {
    gpu_or_skip!();
    for (kind, w, h, seed) in [(IouLoss::Mse, 5, 5, 3), (IouLoss::Giou, 3, 3, 4), (IouLoss::Diou, 6, 4, 5), (IouLoss::Iou, 4, 7, 6)] {
        let mut p = head(w, h, &[0, 1, 2], 3, 2);
        p.iou_loss = kind;
        p.iou_normalizer = if kind == IouLoss::Mse { 0.75 } else { 0.5 };
        p.obj_normalizer = 1.5;
        p.ignore_thresh = 0.5;
        let tr = truths_for(&p, &[4, 2], seed);
        check(&format!("{kind:?} {w}x{h}"), &p, &tr, seed);
    }
}

#[test]
fn iou_thresh_extra_anchors_and_averaging() {
    gpu_or_skip!();
    for (kind, seed) in [(IouLoss::Iou, 7), (IouLoss::Giou, 8), (IouLoss::Diou, 9), (IouLoss::Ciou, 10)] {
        let mut p = head(7, 5, &[0, 1, 2, 3, 4, 5], 3, 2);
        p.iou_thresh = 0.213;
        p.iou_thresh_kind = kind;
        let tr = truths_for(&p, &[5, 4], seed);
        let cpu = check(&format!("iou_thresh 0.213 {kind:?}"), &p, &tr, seed);
        assert!(cpu.stats[st::COUNT] > cpu.stats[st::TRUTHS], "extra anchors never matched: {:?}", cpu.stats);
    }
}

#[test]
fn label_smoothing_focal_loss_and_max_delta() {
    gpu_or_skip!();
    let mut p = head(5, 6, &[1, 2, 3], 4, 2);
    p.label_smooth_eps = 0.1;
    check("label_smooth_eps", &p, &truths_for(&p, &[4, 3], 11), 11);
    let mut p = head(5, 6, &[1, 2, 3], 4, 2);
    p.focal_loss = true;
    check("focal_loss", &p, &truths_for(&p, &[4, 3], 12), 12);
    let mut p = head(4, 4, &[2, 3, 4], 2, 2);
    p.max_delta = 0.01;
    p.iou_normalizer = 1.0;
    check("max_delta", &p, &truths_for(&p, &[3, 5], 13), 13);
}

#[test]
fn new_coords() {
    gpu_or_skip!();
    let mut p = head(6, 5, &[2, 3, 4], 3, 2);
    p.new_coords = true;
    p.scale_x_y = 2.0;
    check("new_coords ciou", &p, &truths_for(&p, &[4, 3], 14), 14);
    p.iou_loss = IouLoss::Mse;
    check("new_coords mse", &p, &truths_for(&p, &[3, 4], 15), 15);
}

#[test]
fn truth_thresh_positives_and_objectness_smooth() {
    gpu_or_skip!();
    let mut p = head(5, 5, &[0, 1, 2], 3, 2);
    p.truth_thresh = 0.6;
    p.ignore_thresh = 0.4;
    let tr = truths_for(&p, &[5, 4], 16);
    let cpu = check("truth_thresh", &p, &tr, 16);
    assert_ne!(cpu.dx, cpu_only(&p, &tr, 16, |q| q.truth_thresh = 1.0).dx, "no truth_thresh positive");
    p.objectness_smooth = true;
    check("truth_thresh + objectness_smooth", &p, &truths_for(&p, &[5, 4], 17), 17);
    p.truth_thresh = 1.0;
    check("objectness_smooth", &p, &truths_for(&p, &[5, 4], 18), 18);
}

#[test]
fn truths_sharing_a_cell() {
    gpu_or_skip!();
    let p = head(3, 3, &[0, 1, 2], 3, 1);
    // Same cell (1, 1), same best anchor (1: 23×27 px): the second truth overwrites the box delta
    // sum and raises only its own class ("already set"); the third shares the cell with anchor 2.
    let tr = vec![vec![
        [0.5, 0.5, 0.25, 0.28, 0.0],
        [0.45, 0.52, 0.24, 0.3, 2.0],
        [0.55, 0.4, 0.4, 0.6, 1.0],
        [0.1, 0.9, 0.2, 0.2, 3.0], // class 3 of 3: skipped
    ]];
    check("shared cell", &p, &tr, 19);
}

#[test]
fn uneven_batch_with_an_empty_image() {
    gpu_or_skip!();
    let mut p = head(7, 5, &[0, 1, 2], 3, 3);
    p.max_boxes = 4;
    let tr = truths_for(&p, &[2, 0, 4], 20);
    let cpu = check("batch 3 (2, 0, 4 truths)", &p, &tr, 20);
    assert_eq!(cpu.stats[st::TRUTHS], 6.0);
    assert!(cpu.stats[st::COUNT] > 0.0, "{:?}", cpu.stats);
}

/// The head's scratch is made once per head shape: a second call allocates nothing.
#[test]
fn scratch_is_cached() {
    gpu_or_skip!();
    // A private backend: other tests running in parallel must not move its byte counters.
    let g = GpuBackend::new(&AdapterSelector::default()).expect("adapter present above");
    let p = head(4, 3, &[0, 1, 2], 2, 2);
    let tr = truths_for(&p, &[2, 1], 21);
    let x = inputs(&p, &tr, &mut Rng(21));
    let t = truth_buf(&p, &tr);
    let before = g.internal_bytes();
    run_gpu(&g, &x, &t, &p);
    let after_first = g.internal_bytes();
    assert!(after_first > before, "the scratch is counted in internal bytes");
    run_gpu(&g, &x, &t, &p);
    assert_eq!(g.internal_bytes(), after_first, "second call of the same head allocated scratch");
}
