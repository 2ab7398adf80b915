//! The [yolo] head on the CPU (darknet-spec §a): what its gradient is the gradient of, Darknet's
//! dx_box_iou against finite differences, hand-worked matches, the loss at initialisation, decode.
//!
//! Expected values are derived here from the spec's formulas with independent f64 code, never
//! copied from the implementation's output.

use engine::shapes::{IouLoss, YoloParams};
use engine::eval::{Bbox, Detection};
use engine::cpu::yolo::forward_backward_cpu;
use engine::yolo::{BBox, detections, dx_box_iou};
use engine::yolo_stats as st;

mod common;

const ANCHORS: [(f32, f32); 6] = common::YOLOV4_TINY_ANCHORS;

/// A yolov4-tiny head with Darknet's defaults for everything the cfg leaves unset.
fn head(grid: usize, mask: &[usize], net: usize, classes: usize, batch: usize) -> YoloParams {
    common::yolov4_tiny_head(grid, grid, mask, classes, batch, net, 4)
}

/// Truth buffer `[batch][max_boxes][x,y,w,h,class]` from per-image lists.
fn truth_buf(p: &YoloParams, per_image: &[&[[f32; 5]]]) -> Vec<f32> {
    let mut t = vec![0.0; p.batch * p.max_boxes * 5];
    for (b, list) in per_image.iter().enumerate() {
        for (k, tr) in list.iter().enumerate() {
            t[(b * p.max_boxes + k) * 5..][..5].copy_from_slice(tr);
        }
    }
    t
}

struct Run {
    out: Vec<f32>,
    dx: Vec<f32>,
    stats: Vec<f32>,
}

fn run(x: &[f32], truths: &[f32], p: &YoloParams) -> Run {
    let mut r = Run { out: vec![0.0; p.len()], dx: vec![0.0; p.len()], stats: vec![0.0; st::STATS_LEN] };
    forward_backward_cpu(x, &mut r.out, truths, &mut r.dx, &mut r.stats, p);
    r
}

fn idx(p: &YoloParams, b: usize, n: usize, e: usize, i: usize, j: usize) -> usize {
    let wh = p.w * p.h;
    b * p.mask.len() * (5 + p.classes) * wh + n * (5 + p.classes) * wh + e * wh + j * p.w + i
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// Plain IoU in f64 (clamped intersection), written from the definition.
fn iou64(a: [f64; 4], b: [f64; 4]) -> f64 {
    let ov = |c1: f64, w1: f64, c2: f64, w2: f64| ((c1 + w1 / 2.0).min(c2 + w2 / 2.0) - (c1 - w1 / 2.0).max(c2 - w2 / 2.0)).max(0.0);
    let i = ov(a[0], a[2], b[0], b[2]) * ov(a[1], a[3], b[1], b[3]);
    if i == 0.0 { 0.0 } else { i / (a[2] * a[3] + b[2] * b[3] - i) }
}

/// Best anchor over all anchors by shape-only IoU (strict >, first max wins).
fn best_anchor(tw: f64, th: f64, net: f64) -> usize {
    let mut best = (0.0, 0);
    for (a, &(aw, ah)) in ANCHORS.iter().enumerate() {
        let iou = iou64([0.0, 0.0, aw as f64 / net, ah as f64 / net], [0.0, 0.0, tw, th]);
        if iou > best.0 {
            best = (iou, a);
        }
    }
    best.1
}

/// Small deterministic generator (the test needs no statistical quality).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.next()
    }
}

fn close(a: f64, e: f64, atol: f64, rtol: f64) -> bool {
    (a - e).abs() <= atol + rtol * e.abs()
}

// ---- (1) iou_loss = mse: the gradient is BCE on logits and ½·k·(t − out)² on the box --------------

/// With iou_loss=mse, ignore_thresh = truth_thresh = 1 (no ignoring, no truth_thresh positives) and
/// truths in distinct cells, `dx` is exactly the gradient of
///   L = Σ_all anchors obj_norm·BCE(σ(z_obj), y_obj) + Σ_positives Σ_c BCE(σ(z_c), onehot_c)
///     + Σ_positives ½·(2 − w·h)·iou_norm·Σ_k (t_k − out_k)²
/// where for w, h out = z (the logit itself), so dx = ∂L/∂z; for x, y out = s·σ(z) − (s−1)/2 and
/// Darknet applies no chain factor, so dx = ∂L/∂out = (∂L/∂z) / (s·σ'(z)).
/// Checked by central differences of L in f64 (h = 1e-5), tolerance 2e-5 + 1e-4·|g|.
/// Also: COST = Σδ², CLASS_LOSS = obj_norm·Σδ²(objectness, classes).
#[test]
fn mse_gradient_is_bce_on_logits_and_half_square_on_box() {
    let mut p = head(3, &[3, 4, 5], 96, 3, 2);
    p.iou_loss = IouLoss::Mse;
    p.iou_normalizer = 0.5;
    p.obj_normalizer = 1.3;
    p.ignore_thresh = 1.0;
    let truths: [&[[f32; 5]]; 2] = [
        &[[0.359375, 0.359375, 0.65625, 0.65625, 0.0], [0.8, 0.85, 0.9, 0.85, 2.0]],
        &[[0.5, 0.2, 0.15, 0.2, 1.0]], // best anchor 0: not in this head
    ];
    let tb = truth_buf(&p, &truths);
    let mut rng = Lcg(7);
    let x: Vec<f32> = (0..p.len()).map(|_| rng.range(-2.0, 2.0) as f32).collect();
    let r = run(&x, &tb, &p);

    // Positives by hand: best anchor over all six, kept if in this head's mask.
    let net = p.net_w as f64;
    let mut positives = Vec::new(); // (b, n, i, j, truth)
    for (b, list) in truths.iter().enumerate() {
        for t in list.iter() {
            let a = best_anchor(t[2] as f64, t[3] as f64, net);
            if let Some(n) = p.mask.iter().position(|&m| m == a) {
                let (i, j) = ((t[0] * p.w as f32) as usize, (t[1] * p.h as f32) as usize);
                positives.push((b, n, i, j, *t));
            }
        }
    }
    assert_eq!(positives.len(), 2, "hand count of positives in this head");
    let s = p.scale_x_y as f64;
    let loss = |z: &[f64]| -> f64 {
        let bce = |zz: f64, y: f64| {
            let q = sigmoid(zz);
            -(y * q.ln() + (1.0 - y) * (1.0 - q).ln())
        };
        let mut l = 0.0;
        for b in 0..p.batch {
            for n in 0..p.mask.len() {
                for j in 0..p.h {
                    for i in 0..p.w {
                        let pos = positives.iter().any(|&(pb, pn, pi, pj, _)| (pb, pn, pi, pj) == (b, n, i, j));
                        l += p.obj_normalizer as f64 * bce(z[idx(&p, b, n, 4, i, j)], if pos { 1.0 } else { 0.0 });
                    }
                }
            }
        }
        for &(b, n, i, j, t) in &positives {
            let a = ANCHORS[p.mask[n]];
            for c in 0..p.classes {
                l += bce(z[idx(&p, b, n, 5 + c, i, j)], if c == t[4] as usize { 1.0 } else { 0.0 });
            }
            let target = [
                t[0] as f64 * p.w as f64 - i as f64,
                t[1] as f64 * p.h as f64 - j as f64,
                (t[2] as f64 * net / a.0 as f64).ln(),
                (t[3] as f64 * net / a.1 as f64).ln(),
            ];
            let k = (2.0 - t[2] as f64 * t[3] as f64) * p.iou_normalizer as f64;
            for (e, tk) in target.iter().enumerate() {
                let zz = z[idx(&p, b, n, e, i, j)];
                let out = if e < 2 { s * sigmoid(zz) - 0.5 * (s - 1.0) } else { zz };
                l += 0.5 * k * (tk - out) * (tk - out);
            }
        }
        l
    };
    let mut z: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let h = 1e-5;
    let mut checked = 0;
    for e in 0..z.len() {
        let z0 = z[e];
        z[e] = z0 + h;
        let lp = loss(&z);
        z[e] = z0 - h;
        let lm = loss(&z);
        z[e] = z0;
        let mut g = (lp - lm) / (2.0 * h);
        let wh = p.w * p.h;
        let kind = (e % ((5 + p.classes) * wh)) / wh;
        if kind < 2 && g != 0.0 {
            let q = sigmoid(z0);
            g /= s * q * (1.0 - q);
        }
        let d = r.dx[e] as f64;
        assert!(close(d, g, 2e-5, 1e-4), "entry {e} (kind {kind}): dx {d} vs FD {g}");
        if g != 0.0 {
            checked += 1;
        }
    }
    // every objectness, the 2 positives' 3 classes and 4 box entries
    assert_eq!(checked, 2 * 3 * 9 + 2 * 3 + 2 * 4);

    let wh = p.w * p.h;
    let (mut all, mut nonbox) = (0.0f64, 0.0f64);
    for (e, &d) in r.dx.iter().enumerate() {
        let d2 = d as f64 * d as f64;
        all += d2;
        if (e % ((5 + p.classes) * wh)) / wh >= 4 {
            nonbox += d2;
        }
    }
    assert!(close(r.stats[st::COST] as f64, all, 1e-6, 1e-6), "{} vs {all}", r.stats[st::COST]);
    assert!(close(r.stats[st::CLASS_LOSS] as f64, 1.3 * nonbox, 1e-6, 1e-6));
    assert_eq!(r.stats[st::COUNT], 2.0);
    assert_eq!(r.stats[st::TRUTHS], 3.0);
}

// ---- (2) dx_box_iou against finite differences -------------------------------------------------

type B64 = [f64; 4];

fn edges(b: B64) -> (f64, f64, f64, f64) {
    (b[1] - b[3] / 2.0, b[1] + b[3] / 2.0, b[0] - b[2] / 2.0, b[0] + b[2] / 2.0)
}
/// Intersection sides, NOT clamped at 0 (Darknet's dx_box_iou works with Iw·Ih as is).
fn sides(p: B64, t: B64) -> (f64, f64) {
    let (pt, pb, pl, pr) = edges(p);
    let (tt, tb, tl, tr) = edges(t);
    (pr.min(tr) - pl.max(tl), pb.min(tb) - pt.max(tt))
}
/// I'/U' with the unclamped product I' = Iw·Ih (= IoU wherever the boxes overlap).
fn iou_unclamped(p: B64, t: B64) -> f64 {
    let (iw, ih) = sides(p, t);
    let i = iw * ih;
    i / (p[2] * p[3] + t[2] * t[3] - i)
}
fn enclosing(p: B64, t: B64) -> (f64, f64) {
    let (pt, pb, pl, pr) = edges(p);
    let (tt, tb, tl, tr) = edges(t);
    (pr.max(tr) - pl.min(tl), pb.max(tb) - pt.min(tt))
}
/// U'/C (GIoU's extra term, up to the constant −1).
fn giou_term(p: B64, t: B64) -> f64 {
    let (iw, ih) = sides(p, t);
    let (cw, ch) = enclosing(p, t);
    (p[2] * p[3] + t[2] * t[3] - iw * ih) / (cw * ch)
}
fn centre_dist2(p: B64, t: B64) -> f64 {
    (p[0] - t[0]).powi(2) + (p[1] - t[1]).powi(2)
}
fn diag2(p: B64, t: B64) -> f64 {
    let (cw, ch) = enclosing(p, t);
    cw * cw + ch * ch
}
fn aspect_v(p: B64, t: B64) -> f64 {
    let d = (t[2] / t[3]).atan() - (p[2] / p[3]).atan();
    4.0 / (std::f64::consts::PI * std::f64::consts::PI) * d * d
}
/// Central difference of f w.r.t. component k of the prediction.
fn fd(f: &dyn Fn(B64) -> f64, p: B64, k: usize) -> f64 {
    let h = 1e-6;
    let (mut a, mut b) = (p, p);
    a[k] += h;
    b[k] -= h;
    (f(a) - f(b)) / (2.0 * h)
}

/// What Darknet's dx_box_iou must equal, built from finite differences of its ingredients
/// (see the doc of `engine::yolo::dx_box_iou`):
/// - IoU:  (∂x, ∂y, 2∂w, 2∂h) of I'/U'  — Darknet does not halve the w, h edge sums;
/// - GIoU: the same of I'/U' + U'/C; without overlap only U'/C;
/// - DIoU: IoU part + distance term; w, h: −∂(S/D)/∂w (true); x, y: (−∂S/∂x·D − S·∂D/∂x)/D²
///   (Darknet's sign of the S·∂D term, opposite to the true −∂(S/D)/∂x); without overlap only
///   the distance term;
/// - CIoU: DIoU's + α·(w²+h²)·∂(−v)/∂w (and h) with α = v/(1 − I'/U' + v + 1e-6) frozen.
fn expected_dx(p: B64, t: B64, kind: IouLoss) -> [f64; 4] {
    let (iw, ih) = sides(p, t);
    let overlap = iw > 0.0 && ih > 0.0;
    let twice = [1.0, 1.0, 2.0, 2.0];
    // Darknet skips the quotient when U' <= 0 (far-apart boxes with both sides negative).
    let u = p[2] * p[3] + t[2] * t[3] - iw * ih;
    let iou_part: Vec<f64> =
        (0..4).map(|k| if u > 0.0 { twice[k] * fd(&|q| iou_unclamped(q, t), p, k) } else { 0.0 }).collect();
    let mut g = [0.0; 4];
    match kind {
        IouLoss::Iou => g.copy_from_slice(&iou_part),
        IouLoss::Giou => {
            for k in 0..4 {
                let gt = twice[k] * fd(&|q| giou_term(q, t), p, k);
                g[k] = if overlap { iou_part[k] + gt } else { gt };
            }
        }
        IouLoss::Diou | IouLoss::Ciou => {
            let s = centre_dist2(p, t);
            let d = diag2(p, t);
            let mut dist = [0.0; 4];
            for k in 0..2 {
                dist[k] = (-fd(&|q| centre_dist2(q, t), p, k) * d - s * fd(&|q| diag2(q, t), p, k)) / (d * d);
            }
            for k in 2..4 {
                dist[k] = -fd(&|q| centre_dist2(q, t) / diag2(q, t), p, k);
            }
            if kind == IouLoss::Ciou {
                let v = aspect_v(p, t);
                let alpha = v / (1.0 - iou_unclamped(p, t) + v + 1e-6);
                for k in 2..4 {
                    dist[k] += alpha * (p[2] * p[2] + p[3] * p[3]) * -fd(&|q| aspect_v(q, t), p, k);
                }
            }
            for k in 0..4 {
                g[k] = if overlap { iou_part[k] + dist[k] } else { dist[k] };
            }
        }
        IouLoss::Mse => unreachable!(),
    }
    g
}

/// 600 random pairs per kind (overlapping and disjoint; pairs with an edge of the prediction within
/// 2e-3 of the truth's are skipped: the score has kinks there; so are pairs with |U'| < 1e-2). Tolerance: 2e-4 + 2e-3·|g|
/// (the implementation runs in f32, the reference in f64 with h = 1e-6).
#[test]
fn dx_box_iou_matches_finite_differences() {
    let mut rng = Lcg(42);
    for kind in [IouLoss::Iou, IouLoss::Giou, IouLoss::Diou, IouLoss::Ciou] {
        let (mut n_overlap, mut n_apart) = (0, 0);
        while n_overlap + n_apart < 600 {
            let t: B64 = [rng.range(0.2, 0.8), rng.range(0.2, 0.8), rng.range(0.05, 0.5), rng.range(0.05, 0.5)];
            let p: B64 = [rng.range(0.1, 0.9), rng.range(0.1, 0.9), rng.range(0.05, 0.6), rng.range(0.05, 0.6)];
            let (pe, te) = (edges(p), edges(t));
            let all = [pe.0, pe.1, pe.2, pe.3];
            let tall = [te.0, te.1, te.2, te.3];
            if all.iter().any(|a| tall.iter().any(|b| (a - b).abs() < 2e-3)) {
                continue;
            }
            let (iw, ih) = sides(p, t);
            if (p[2] * p[3] + t[2] * t[3] - iw * ih).abs() < 1e-2 {
                continue; // U' near 0: the artefact term is ill-conditioned
            }
            // Plain IoU's gradient without overlap is Darknet's I'/U' artefact; checked all the same.
            if iw > 0.0 && ih > 0.0 { n_overlap += 1 } else { n_apart += 1 }
            let f = |b: B64| BBox::new(b[0] as f32, b[1] as f32, b[2] as f32, b[3] as f32);
            let got = dx_box_iou(f(p), f(t), kind);
            // Reference at the f32-rounded boxes the implementation saw.
            let r = |b: BBox| [b.x as f64, b.y as f64, b.w as f64, b.h as f64];
            let e = expected_dx(r(f(p)), r(f(t)), kind);
            let got = [got.dx as f64, got.dy as f64, got.dw as f64, got.dh as f64];
            for k in 0..4 {
                assert!(close(got[k], e[k], 2e-4, 2e-3), "{kind:?} pred {p:?} truth {t:?} comp {k}: {} vs {}", got[k], e[k]);
            }
        }
        assert!(n_overlap >= 100 && n_apart >= 100, "{kind:?}: {n_overlap} overlapping, {n_apart} apart");
    }
}

/// Where the boxes overlap, IoU's and GIoU's x, y components are the TRUE gradient of the scores
/// as Darknet computes them (box_iou, box_giou), and w, h are twice the true gradient.
#[test]
fn iou_and_giou_gradients_are_true_gradients_where_boxes_overlap() {
    use engine::yolo::{box_giou, box_iou};
    let t = BBox::new(0.45, 0.52, 0.3, 0.22);
    let p = [0.5, 0.47, 0.26, 0.31];
    for (kind, score) in [(IouLoss::Iou, box_iou as fn(BBox, BBox) -> f32), (IouLoss::Giou, box_giou)] {
        // f32 score: use a wide step so rounding stays small against the difference.
        let h = 1e-3f64;
        let g = dx_box_iou(BBox::new(p[0] as f32, p[1] as f32, p[2] as f32, p[3] as f32), t, kind);
        let got = [g.dx, g.dy, g.dw / 2.0, g.dh / 2.0];
        for k in 0..4 {
            let (mut a, mut b) = (p, p);
            a[k] += h;
            b[k] -= h;
            let bb = |v: [f64; 4]| BBox::new(v[0] as f32, v[1] as f32, v[2] as f32, v[3] as f32);
            let fdv = (score(bb(a), t) as f64 - score(bb(b), t) as f64) / (2.0 * h);
            assert!(close(got[k] as f64, fdv, 2e-3, 1e-2), "{kind:?} comp {k}: {} vs {fdv}", got[k]);
        }
    }
}

// ---- (3) hand-worked: one truth per head, logits 0 -------------------------------------------

/// yolov4-tiny at 224 (heads 7×7 mask 3,4,5 and 14×14 mask 1,2,3), 3 classes, one image with
/// truth A (0.55, 0.45, 0.6×0.7, class 1) and B (0.2, 0.8, 0.12×0.2, class 2).
/// By hand: A is 134.4×156.8 px -> IoU with anchor 4 (135×169) = 21073.9/22815 = 0.924, the best
/// -> head 1 only, mask slot 1, cell (3, 3). B is 26.9×44.8 px -> anchor 2 (37×58): 1204.2/2146
/// = 0.561 beats anchor 1 (23×27): 621/1204.2 = 0.516 -> head 2 only, mask slot 1, cell (2, 11).
/// With all logits 0: objectness = classes = 0.5, x = y = 1.05·0.5 − 0.025 = 0.5, so every
/// prediction is its anchor centred in its cell. Expected deltas: objectness +0.5 at the match,
/// 0 where the best IoU with a truth is > 0.7 (every class prob 0.5 > 0.25), −0.5 elsewhere;
/// classes onehot − 0.5 at the match; box per iou_loss. dx = −delta.
struct Hand {
    p: YoloParams,
    x: Vec<f32>,
    truths: [[f32; 5]; 2],
}

impl Hand {
    fn new(grid: usize, mask: &[usize], iou_loss: IouLoss) -> Hand {
        let mut p = head(grid, mask, 224, 3, 1);
        p.iou_loss = iou_loss;
        p.iou_normalizer = if iou_loss == IouLoss::Mse { 0.5 } else { 0.07 };
        let x = vec![0.0; p.len()];
        Hand { p, x, truths: [[0.55, 0.45, 0.6, 0.7, 1.0], [0.2, 0.8, 0.12, 0.2, 2.0]] }
    }
    /// Prediction of slot n at (i, j) decoded by hand from the logits.
    fn pred(&self, n: usize, i: usize, j: usize) -> [f64; 4] {
        let p = &self.p;
        let s = p.scale_x_y as f64;
        let a = ANCHORS[p.mask[n]];
        let xy = |e| s * sigmoid(self.x[idx(p, 0, n, e, i, j)] as f64) - 0.5 * (s - 1.0);
        [
            (i as f64 + xy(0)) / p.w as f64,
            (j as f64 + xy(1)) / p.h as f64,
            (self.x[idx(p, 0, n, 2, i, j)] as f64).exp() * a.0 as f64 / 224.0,
            (self.x[idx(p, 0, n, 3, i, j)] as f64).exp() * a.1 as f64 / 224.0,
        ]
    }
    /// The single match in this head: (slot, i, j, truth).
    fn matched(&self) -> (usize, usize, usize, [f32; 5]) {
        let m: Vec<_> = self
            .truths
            .iter()
            .filter_map(|t| {
                let a = best_anchor(t[2] as f64, t[3] as f64, 224.0);
                let n = self.p.mask.iter().position(|&m| m == a)?;
                Some((n, (t[0] * self.p.w as f32) as usize, (t[1] * self.p.h as f32) as usize, *t))
            })
            .collect();
        assert_eq!(m.len(), 1);
        m[0]
    }
    /// Expected Darknet delta for every entry except the matched box (returned separately).
    fn expected_nonbox_delta(&self) -> Vec<f64> {
        let p = &self.p;
        let (mn, mi, mj, mt) = self.matched();
        let mut d = vec![0.0; p.len()];
        for n in 0..p.mask.len() {
            for j in 0..p.h {
                for i in 0..p.w {
                    let pr = self.pred(n, i, j);
                    let best = self.truths.iter().map(|t| iou64(pr, [t[0] as f64, t[1] as f64, t[2] as f64, t[3] as f64])).fold(0.0, f64::max);
                    d[idx(p, 0, n, 4, i, j)] = if (n, i, j) == (mn, mi, mj) {
                        0.5
                    } else if best > 0.7 {
                        0.0
                    } else {
                        -0.5
                    };
                }
            }
        }
        for c in 0..p.classes {
            d[idx(p, 0, mn, 5 + c, mi, mj)] = if c == mt[4] as usize { 0.5 } else { -0.5 };
        }
        d
    }
    fn run(&self) -> Run {
        let tb = truth_buf(&self.p, &[&self.truths]);
        run(&self.x, &tb, &self.p)
    }
}

#[test]
fn hand_worked_best_anchors() {
    assert_eq!(best_anchor(0.6, 0.7, 224.0), 4);
    assert_eq!(best_anchor(0.12, 0.2, 224.0), 2);
}

#[test]
fn hand_worked_one_truth_per_head_mse() {
    for (grid, mask, slot, cell) in [(7, [3, 4, 5], 1, (3, 3)), (14, [1, 2, 3], 1, (2, 11))] {
        let h = Hand::new(grid, &mask, IouLoss::Mse);
        let p = &h.p;
        let (mn, mi, mj, t) = h.matched();
        assert_eq!((mn, (mi, mj)), (slot, cell));
        let mut d = h.expected_nonbox_delta();
        let scale = 2.0 - t[2] as f64 * t[3] as f64;
        let a = ANCHORS[mask[mn]];
        let target = [
            t[0] as f64 * grid as f64 - mi as f64,
            t[1] as f64 * grid as f64 - mj as f64,
            (t[2] as f64 * 224.0 / a.0 as f64).ln(),
            (t[3] as f64 * 224.0 / a.1 as f64).ln(),
        ];
        let out = [0.5, 0.5, 0.0, 0.0];
        for e in 0..4 {
            d[idx(p, 0, mn, e, mi, mj)] = scale * (target[e] - out[e]) * 0.5;
        }
        let r = h.run();
        for (e, (&got, &want)) in r.dx.iter().zip(&d).enumerate() {
            assert!(close(got as f64, -want, 1e-6, 1e-5), "grid {grid} entry {e}: {got} vs {}", -want);
        }
        let ignored = (0..p.len()).filter(|&e| (e / (p.w * p.h)) % 8 == 4 && d[e] == 0.0).count();
        assert!(ignored < p.mask.len() * p.w * p.h);
        let cost: f64 = d.iter().map(|v| v * v).sum();
        let iou = iou64(h.pred(mn, mi, mj), [t[0] as f64, t[1] as f64, t[2] as f64, t[3] as f64]);
        assert!(close(r.stats[st::COST] as f64, cost, 1e-5, 1e-6), "cost {} vs {cost}", r.stats[st::COST]);
        assert_eq!(r.stats[st::COUNT], 1.0);
        assert!(close(r.stats[st::IOU_SUM] as f64, iou, 1e-6, 1e-5));
        assert!(close(r.stats[st::IOU_LOSS_SUM] as f64, 1.0 - iou, 1e-6, 1e-5));
        assert_eq!(r.stats[st::RECALL50], if iou > 0.5 { 1.0 } else { 0.0 });
        assert_eq!(r.stats[st::RECALL75], if iou > 0.75 { 1.0 } else { 0.0 });
        assert_eq!(r.stats[st::OBJ_SUM], 0.5);
        assert_eq!(r.stats[st::CLASS_PROB_SUM], 0.5);
        assert!(close(r.stats[st::ANYOBJ_SUM] as f64, 0.5 * 3.0 * (grid * grid) as f64, 1e-4, 1e-6));
        assert_eq!(r.stats[st::TRUTHS], 2.0);
        let cls: f64 = 3.0 * 0.25;
        assert!(close(r.stats[st::CLS_ONLY_LOSS] as f64, cls, 1e-6, 1e-6));
    }
}

/// Same case with iou_loss=ciou and a non-zero w logit (0.3) at the matched anchor: the box
/// deltas are iou_normalizer·dx_box_iou(pred, truth, ciou) with dw × exp(0.3) (no other chain
/// factor), and COST = 0.07·(1 − IoU)/1 + Σ δ²(objectness, classes).
#[test]
fn hand_worked_one_truth_per_head_ciou() {
    for (grid, mask) in [(7, [3, 4, 5]), (14, [1, 2, 3])] {
        let mut h = Hand::new(grid, &mask, IouLoss::Ciou);
        let (mn, mi, mj, t) = h.matched();
        let wi = idx(&h.p, 0, mn, 2, mi, mj);
        h.x[wi] = 0.3;
        let p = &h.p;
        let mut d = h.expected_nonbox_delta();
        let nonbox: f64 = d.iter().map(|v| v * v).sum();
        let pr = h.pred(mn, mi, mj);
        let tb = BBox::new(t[0], t[1], t[2], t[3]);
        let g = dx_box_iou(BBox::new(pr[0] as f32, pr[1] as f32, pr[2] as f32, pr[3] as f32), tb, IouLoss::Ciou);
        let want = [g.dx as f64, g.dy as f64, g.dw as f64 * 0.3f64.exp(), g.dh as f64];
        for e in 0..4 {
            d[idx(p, 0, mn, e, mi, mj)] = 0.07 * want[e];
        }
        let r = h.run();
        for (e, (&got, &want)) in r.dx.iter().zip(&d).enumerate() {
            assert!(close(got as f64, -want, 1e-6, 1e-4), "grid {grid} entry {e}: {got} vs {}", -want);
        }
        let iou = iou64(pr, [t[0] as f64, t[1] as f64, t[2] as f64, t[3] as f64]);
        let cost = 0.07 * (1.0 - iou) + nonbox;
        assert!(close(r.stats[st::COST] as f64, cost, 1e-5, 1e-6), "cost {} vs {cost}", r.stats[st::COST]);
        let box_sq: f64 = (0..4).map(|e| (0.07 * want[e]).powi(2)).sum();
        assert!(close(r.stats[st::BOX_LOSS] as f64, box_sq, 1e-5, 1e-3));
        assert!(close(r.stats[st::CLASS_LOSS] as f64, nonbox, 1e-5, 1e-6));
    }
}

// ---- (4) the loss at initialisation ----------------------------------------------------------

/// Network loss as Darknet prints it: mean over heads of COST, divided by the batch.
fn network_loss(x0: f32, classes: usize, batch: usize, per_image: &[&[[f32; 5]]]) -> (f64, Vec<Run>, Vec<YoloParams>) {
    let heads = [head(7, &[3, 4, 5], 224, classes, batch), head(14, &[1, 2, 3], 224, classes, batch)];
    let mut runs = Vec::new();
    let mut total = 0.0;
    for p in &heads {
        let tb = truth_buf(p, per_image);
        let r = run(&vec![x0; p.len()], &tb, p);
        total += r.stats[st::COST] as f64;
        runs.push(r);
    }
    (total / heads.len() as f64 / batch as f64, runs, heads.to_vec())
}

/// With every logit 0 and no truths, every objectness is 0.5 and gets delta −0.5; nothing else
/// has a delta. So COST = 0.25·batch·anchors_per_head·cells and the printed loss is
/// 0.25·3·(7² + 14²)/2 = 91.875 — the spec's "≈ 91.9 for 3 classes at 224". The factor 3 is the
/// number of anchors per head, not the number of classes: 8 classes give the same figure.
#[test]
fn loss_at_init_without_truths_is_quarter_per_anchor_cell() {
    for classes in [3, 8] {
        for batch in [1, 2] {
            let empty: Vec<&[[f32; 5]]> = vec![&[]; batch];
            let (loss, runs, heads) = network_loss(0.0, classes, batch, &empty);
            for (r, p) in runs.iter().zip(&heads) {
                let closed = 0.25 * (batch * p.mask.len() * p.w * p.h) as f64;
                assert!(close(r.stats[st::COST] as f64, closed, 1e-4, 1e-6));
                assert_eq!(r.stats[st::COUNT], 0.0);
            }
            assert!(close(loss, 0.25 * 3.0 * (49.0 + 196.0) / 2.0, 1e-4, 1e-6), "{loss}");
            assert!((loss - 91.9).abs() < 0.05);
        }
    }
}

/// With truths the closed form at x = 0 (ciou) is, per head,
///   COST = 0.25·(anchor cells not ignored, matches included) + 0.25·C·count + 0.07·Σ(1 − IoU)/count
/// (objectness delta is ±0.5 whether positive or negative; each match adds C class deltas of
/// ±0.5). Checked on the fixture's three labels at 224 in both images; still ≈ 91.9 + a little.
#[test]
fn loss_at_init_with_truths_matches_closed_form() {
    let labels: &[[f32; 5]] = &[
        [0.359375, 0.359375, 0.65625, 0.65625, 0.0],
        [0.828125, 0.234375, 0.21875, 0.21875, 1.0],
        [0.515625, 0.859375, 0.28125, 0.21875, 2.0],
    ];
    let (loss, runs, heads) = network_loss(0.0, 3, 2, &[labels, labels]);
    let mut closed_total = 0.0;
    for (r, p) in runs.iter().zip(&heads) {
        let (mut not_ignored, mut count, mut iou_loss) = (0usize, 0usize, 0.0f64);
        let mut matches = Vec::new();
        for t in labels {
            let a = best_anchor(t[2] as f64, t[3] as f64, 224.0);
            if let Some(n) = p.mask.iter().position(|&m| m == a) {
                matches.push((n, (t[0] * p.w as f32) as usize, (t[1] * p.h as f32) as usize, *t));
            }
        }
        for n in 0..3 {
            for j in 0..p.h {
                for i in 0..p.w {
                    let a = ANCHORS[p.mask[n]];
                    let pr = [(i as f64 + 0.5) / p.w as f64, (j as f64 + 0.5) / p.h as f64, a.0 as f64 / 224.0, a.1 as f64 / 224.0];
                    let best = labels.iter().map(|t| iou64(pr, [t[0] as f64, t[1] as f64, t[2] as f64, t[3] as f64])).fold(0.0, f64::max);
                    let m = matches.iter().find(|m| (m.0, m.1, m.2) == (n, i, j));
                    if best <= 0.7 || m.is_some() {
                        not_ignored += 1;
                    }
                    if let Some(m) = m {
                        count += 1;
                        iou_loss += 1.0 - iou64(pr, [m.3[0] as f64, m.3[1] as f64, m.3[2] as f64, m.3[3] as f64]);
                    }
                }
            }
        }
        // distinct cells per head here, so no class delta is shared
        let closed = 2.0 * (0.25 * not_ignored as f64 + 0.25 * 3.0 * count as f64) + 0.07 * iou_loss / count as f64;
        assert_eq!(r.stats[st::COUNT] as usize, 2 * count);
        assert!(close(r.stats[st::COST] as f64, closed, 1e-4, 1e-6), "{} vs {closed}", r.stats[st::COST]);
        closed_total += closed;
    }
    assert!(close(loss, closed_total / 2.0 / 2.0, 1e-5, 1e-6));
    assert!(loss > 91.875 && loss < 91.875 * 1.02, "{loss}");
}

// ---- targeted semantics ----------------------------------------------------------------------

/// One 2×2 head with one anchor (81×82 at net 96) and a truth almost on the prediction of cell
/// (0,0): IoU 0.95 > ignore_thresh. The objectness of that anchor is ignored only if some class
/// prob there is > 0.25 — any class, not necessarily the truth's.
#[test]
fn ignore_needs_any_class_prob_above_quarter() {
    let mut p = head(2, &[0], 96, 2, 1);
    p.anchors = vec![(81., 82.), (10., 10.)];
    // The truth's best anchor is index 1 (10×10 px box), outside the mask: no positive here.
    let truth = [[0.25f32, 0.25, 10.0 / 96.0, 10.0 / 96.0, 0.0]];
    let mut x = vec![0.0f32; p.len()];
    // Make the prediction at (0,0) nearly the truth: exp(tw)·81/96 = 9.5/96 -> IoU 0.95 (an exact
    // copy can round to IoU > 1 = truth_thresh in f32 and become a positive, as in Darknet).
    x[idx(&p, 0, 0, 2, 0, 0)] = (9.5f32 / 81.0).ln();
    x[idx(&p, 0, 0, 3, 0, 0)] = (10.0f32 / 82.0).ln();
    let tb = truth_buf(&p, &[&truth]);
    let obj = idx(&p, 0, 0, 4, 0, 0);
    for (c0, c1, ignored) in [(-5.0f32, -5.0f32, false), (-5.0, 0.0, true), (0.0, -5.0, true), (-1.2, -1.2, false)] {
        // σ(−1.2) = 0.23: not > 0.25
        x[idx(&p, 0, 0, 5, 0, 0)] = c0;
        x[idx(&p, 0, 0, 6, 0, 0)] = c1;
        let r = run(&x, &tb, &p);
        let o = r.out[obj];
        if ignored {
            assert_eq!(r.dx[obj], 0.0, "classes {c0} {c1}");
        } else {
            assert!(close(r.dx[obj] as f64, o as f64, 1e-7, 0.0), "classes {c0} {c1}: {}", r.dx[obj]);
        }
        assert_eq!(r.stats[st::COUNT], 0.0);
    }
}

/// Two truths of different classes whose best anchor and cell coincide: the second only raises
/// its own class (Darknet's already-set rule) — the first truth's class keeps +(1 − p).
/// The box deltas of both accumulate; objectness is overwritten with 1 − p; count = 2.
#[test]
fn second_truth_on_same_anchor_only_sets_its_class() {
    let mut p = head(3, &[3, 4, 5], 96, 3, 1);
    p.iou_loss = IouLoss::Mse;
    p.iou_normalizer = 1.0;
    let truths = [[0.5f32, 0.5, 0.8, 0.8, 0.0], [0.45, 0.55, 0.85, 0.8, 2.0]];
    let tb = truth_buf(&p, &[&truths]);
    let r = run(&vec![0.0; p.len()], &tb, &p);
    // both: best anchor 3 (81×82), slot 0, cell (1,1)
    assert_eq!(best_anchor(0.8, 0.8, 96.0), 3);
    assert_eq!(best_anchor(0.85, 0.8, 96.0), 3);
    let c = |k: usize| r.dx[idx(&p, 0, 0, 5 + k, 1, 1)];
    assert_eq!((c(0), c(1), c(2)), (-0.5, 0.5, -0.5));
    assert_eq!(r.dx[idx(&p, 0, 0, 4, 1, 1)], -0.5);
    assert_eq!(r.stats[st::COUNT], 2.0);
    // x deltas accumulate: Σ scale_k·(tx_k − 0.5)
    let want: f64 = truths.iter().map(|t| (2.0 - (t[2] * t[3]) as f64) * ((t[0] * 3.0 - 1.0) as f64 - 0.5)).sum();
    assert!(close(r.dx[idx(&p, 0, 0, 0, 1, 1)] as f64, -want, 1e-6, 1e-6));
}

/// iou_thresh < 1: every other mask anchor whose shape IoU with the truth exceeds it also becomes
/// a positive, and afterwards the box deltas of anchors with an objectness delta are divided by
/// the number of classes with a positive delta there (1 here: no change in value).
#[test]
fn iou_thresh_adds_anchors() {
    let mut p = head(3, &[3, 4, 5], 96, 3, 1);
    p.iou_thresh = 0.2;
    let t = [0.5f32, 0.5, 0.95, 0.95, 1.0];
    let tb = truth_buf(&p, &[&[t]]);
    let r = run(&vec![0.0; p.len()], &tb, &p);
    // shape IoUs: anchor 3: 81·82/(91.2²) = 0.80 (best); anchor 4: 91.2²/(135·169) = 0.365 > 0.2;
    // anchor 5: 8317/(344·319) = 0.076 < 0.2.
    assert_eq!(best_anchor(0.95, 0.95, 96.0), 3);
    assert_eq!(r.stats[st::COUNT], 2.0);
    for (n, pos) in [(0, true), (1, true), (2, false)] {
        let o = r.dx[idx(&p, 0, n, 4, 1, 1)];
        assert_eq!(o, if pos { -0.5 } else { 0.5 }, "slot {n}");
        let cls = r.dx[idx(&p, 0, n, 6, 1, 1)];
        assert_eq!(cls, if pos { -0.5 } else { 0.0 }, "slot {n}");
    }
}

/// The same two classes set twice by two truths at one anchor make averages_yolo_deltas divide
/// that anchor's box deltas by 2 (two classes with a positive delta).
#[test]
fn averages_yolo_deltas_divides_by_positive_classes() {
    let mut p = head(3, &[3, 4, 5], 96, 3, 1);
    p.iou_loss = IouLoss::Mse;
    p.iou_normalizer = 1.0;
    let truths = [[0.5f32, 0.5, 0.8, 0.8, 0.0], [0.45, 0.55, 0.85, 0.8, 2.0]];
    let tb = truth_buf(&p, &[&truths]);
    let x = vec![0.0; p.len()];
    let plain = run(&x, &tb, &p);
    p.iou_thresh = 0.99; // turns the averaging pass on, adds no anchor
    let avg = run(&x, &tb, &p);
    let e = idx(&p, 0, 0, 0, 1, 1);
    assert!(close(avg.dx[e] as f64, plain.dx[e] as f64 / 2.0, 1e-7, 1e-6));
}

/// new_coords: no activation, w = tw²·4·aw/net.
#[test]
fn new_coords_skips_activation() {
    let mut p = head(2, &[3], 96, 1, 1);
    p.new_coords = true;
    p.scale_x_y = 2.0;
    let x: Vec<f32> = (0..p.len()).map(|k| 0.1 * k as f32).collect();
    let r = run(&x, &truth_buf(&p, &[&[]]), &p);
    for (k, (&o, &i)) in r.out.iter().zip(&x).enumerate() {
        let want = if k < 8 { 2.0 * i - 0.5 } else { i };
        assert!(close(o as f64, want as f64, 1e-6, 1e-6), "{k}");
    }
}

/// Best anchor ties: strict '>', the first of equal anchors wins — here anchor 0, outside the mask.
#[test]
fn best_anchor_tie_goes_to_first() {
    let mut p = head(2, &[1], 96, 1, 1);
    p.anchors = vec![(10., 10.), (10., 10.)];
    let tb = truth_buf(&p, &[&[[0.3, 0.3, 0.1, 0.1, 0.0]]]);
    let r = run(&vec![0.0; p.len()], &tb, &p);
    assert_eq!(r.stats[st::COUNT], 0.0);
    p.mask = vec![0];
    let r = run(&vec![0.0; p.len()], &tb, &p);
    assert_eq!(r.stats[st::COUNT], 1.0);
}

// ---- (5) decode ------------------------------------------------------------------------------

/// A 2×2 head with anchors (20,40), (16,16) at net 64, 2 classes, batch 2; detections of image 1.
#[test]
fn decode_hand_made_output() {
    let p = YoloParams { anchors: vec![(20., 40.), (16., 16.)], mask: vec![1, 0], ..head(2, &[0], 64, 2, 2) };
    let mut out = vec![0.1f32; p.len()]; // objectness 0.1 everywhere: below threshold
    let put = |out: &mut Vec<f32>, b, n, e, i, j, v| out[idx(&p, b, n, e, i, j)] = v;
    // image 1, slot 1 (anchor 0 = 20×40), cell i=1, j=0
    for (e, v) in [(0, 0.25), (1, 0.75), (2, 2f32.ln()), (3, 0.0), (4, 0.8), (5, 0.5), (6, 0.2)] {
        put(&mut out, 1, 1, e, 1, 0, v);
    }
    // image 1, slot 0 (anchor 1 = 16×16), cell i=0, j=1: objectness 0.4
    for (e, v) in [(0, 0.5), (1, 0.5), (2, 0.0), (3, 3f32.ln()), (4, 0.4), (5, 0.9), (6, 0.95)] {
        put(&mut out, 1, 0, e, 0, 1, v);
    }
    // image 0 has a strong box that must not show up for image 1
    put(&mut out, 0, 0, 4, 1, 1, 0.99);
    let d = detections(&out, &p, 1, 0.3);
    let want = [
        // cell-major order: cell 1 (i=1, j=0) before cell 2 (i=0, j=1)
        Detection { bbox: Bbox::new(1.25 / 2.0, 0.75 / 2.0, 2.0 * 20.0 / 64.0, 40.0 / 64.0), objectness: 0.8, prob: vec![0.4, 0.0] },
        Detection { bbox: Bbox::new(0.5 / 2.0, 1.5 / 2.0, 16.0 / 64.0, 3.0 * 16.0 / 64.0), objectness: 0.4, prob: vec![0.36, 0.38] },
    ];
    assert_eq!(d.len(), 2);
    for (g, w) in d.iter().zip(&want) {
        let (a, b) = (g.bbox, w.bbox);
        for (u, v) in [(a.x, b.x), (a.y, b.y), (a.w, b.w), (a.h, b.h)] {
            assert!((u - v).abs() < 1e-6, "{g:?} vs {w:?}");
        }
        assert_eq!(g.objectness, w.objectness);
        for (u, v) in g.prob.iter().zip(&w.prob) {
            assert!((u - v).abs() < 1e-6, "{g:?} vs {w:?}");
        }
    }
    assert_eq!(detections(&out, &p, 0, 0.3).len(), 1);
}
