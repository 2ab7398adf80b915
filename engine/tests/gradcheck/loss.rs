//! The classifier losses: [softmax]'s cross-entropy and [cost] (sse, masked, smooth). Their
//! gradients are computed in the forward pass, so the check differentiates the recorded cost
//! itself (stats slot COST) by central differences. The softmax cross-entropy's gradient is that of
//! its cost (T = 1, one-hot truth per group); [cost]'s is that of half its cost (Darknet's l2
//! delta convention, as the [yolo] head's).

use super::*;
use engine::shapes::{CostKind, SECRET_NUM, SoftmaxShape};
use engine::yolo_stats::{COST, STATS_LEN};

fn upload(be: &CpuBackend, v: &[f32]) -> CpuBuf {
    let b = be.alloc(v.len());
    be.upload(&b, v);
    b
}

/// Max over elements of |numeric − analytic| / max(1, |analytic|), where numeric is
/// `factor` × ∂cost/∂x by central differences of step 2h.
fn check(name: &str, x: &[f32], h: f32, factor: f64, tol: f64, cost: impl Fn(&[f32]) -> (f64, Vec<f32>)) {
    let (_, grad) = cost(x);
    let mut worst = 0.0f64;
    for i in 0..x.len() {
        let (mut xp, mut xm) = (x.to_vec(), x.to_vec());
        xp[i] += h;
        xm[i] -= h;
        let step = xp[i] as f64 - xm[i] as f64;
        let num = factor * (cost(&xp).0 - cost(&xm).0) / step;
        let ana = grad[i] as f64;
        worst = worst.max((num - ana).abs() / ana.abs().max(1.0));
    }
    assert!(worst <= tol, "{name}: gradient error {worst:e} > {tol:e}");
}

#[test]
fn softmax_cross_entropy_gradient() {
    let be = CpuBackend::new();
    let s = SoftmaxShape { batch: 2, inputs: 10, groups: 2, temperature: 1.0 };
    let mut rng = Rng::new("softmax xent");
    let x = rng.vec(s.len(), -3.0, 3.0);
    // One-hot per group (so Darknet's y − t is the exact gradient), one element masked.
    let mut t = vec![0.0f32; s.len()];
    for r in 0..s.rows() {
        t[r * 5 + (r * 3) % 5] = 1.0;
    }
    let truth = upload(&be, &t);
    let cost = |x: &[f32]| {
        let (bx, y, dx, st) = (upload(&be, x), be.alloc(s.len()), be.alloc(s.len()), be.alloc(STATS_LEN));
        be.softmax_forward(&bx, &y, &s);
        be.softmax_loss(&y, &truth, &dx, &st, &s);
        (be.download(&st)[COST] as f64, be.download(&dx))
    };
    check("softmax cross-entropy", &x, 1e-2, 1.0, 2e-3, cost);
}

#[test]
fn softmax_values_and_masked_truth() {
    let be = CpuBackend::new();
    let s = SoftmaxShape { batch: 1, inputs: 4, groups: 1, temperature: 2.0 };
    let x = [1.0f32, 2.0, 3.0, 1000.0];
    let (bx, y) = (upload(&be, &x), be.alloc(4));
    be.softmax_forward(&bx, &y, &s);
    let e: Vec<f64> = x.iter().map(|&v| ((v as f64 - 1000.0) / 2.0).exp()).collect();
    let sum: f64 = e.iter().sum();
    for (got, want) in be.download(&y).iter().zip(e.iter().map(|v| v / sum)) {
        assert!((*got as f64 - want).abs() < 1e-7, "softmax at T=2: {got} vs {want}");
    }
    // A masked element gets no gradient and no cost; a zero truth costs nothing.
    let truth = upload(&be, &[SECRET_NUM, 0.0, 1.0, 0.0]);
    let (dx, st) = (be.alloc(4), be.alloc(STATS_LEN));
    be.softmax_loss(&y, &truth, &dx, &st, &s);
    let (p, d) = (be.download(&y), be.download(&dx));
    assert_eq!(d[0], 0.0);
    assert_eq!(d[2], p[2] - 1.0);
    assert_eq!(be.download(&st)[COST], -(p[2].max(engine::shapes::SOFTMAX_MIN_PROB)).ln());
}

#[test]
fn cost_gradients() {
    let be = CpuBackend::new();
    let mut rng = Rng::new("cost");
    let n = 24;
    // Keep |t − x| away from smooth-L1's kink at 1.
    let x: Vec<f32> = rng.vec_away(n, -2.5, 2.5, &[-1.0, 1.0], 0.05);
    let mut t = vec![0.0f32; n];
    t[3] = SECRET_NUM;
    for kind in [CostKind::Sse, CostKind::Masked, CostKind::Smooth] {
        let truth = upload(&be, &t);
        let cost = |x: &[f32]| {
            let (bx, err, dx, st) = (upload(&be, x), be.alloc(n), be.alloc(n), be.alloc(STATS_LEN));
            be.cost_forward(kind, &bx, &truth, &err, &dx, &st);
            let stats = be.download(&st);
            let errs = be.download(&err);
            let total: f64 = errs.iter().map(|&e| e as f64).sum();
            assert!((total - stats[COST] as f64).abs() <= 1e-3 * total.abs().max(1.0), "{kind:?}: COST is Σ error");
            (total, be.download(&dx))
        };
        // [cost]'s gradient is that of half its cost.
        check(&format!("cost {}", kind.darknet_name()), &x, 1e-2, 0.5, 2e-3, &cost);
        let (_, g) = cost(&x);
        if kind == CostKind::Masked {
            assert_eq!(g[3], 0.0, "masked element has no gradient");
        }
    }
}
