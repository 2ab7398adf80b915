//! CPU backend proofs: central-difference gradient checks for every op with a backward, and
//! forward checks against naive f64 references / hand formulas.
//!
//! Gradient method: loss L = Σ r⊙y with a fixed random r (so dy = r); the analytic gradient comes
//! from the backward op; the numeric one is (L(x+h) − L(x−h)) / step, where the forward runs in
//! f32, L is summed in f64 and step = (x+h) − (x−h) is taken in f64 from the two f32 inputs.
//! Error = max over elements of |num − ana| / max(1, |ana|). Accumulating backward ops get their
//! gradient buffers pre-filled with random values (subtracted afterwards), so "+=" is checked too;
//! overwriting ones get garbage that must disappear.

use engine::backend::Backend;
use engine::cpu::{CpuBackend, CpuBuf};
use engine::shapes::{Binary, Unary};

mod common;

// Op families live in tests/gradcheck/ (kept out of Cargo's test auto-discovery).
#[path = "gradcheck/conv_bn.rs"]
mod conv_bn;
#[path = "gradcheck/layers.rs"]
mod layers;
#[path = "gradcheck/loss.rs"]
mod loss;

// ---- helpers ------------------------------------------------------------------------------------

/// splitmix64: test data only.
struct Rng(u64);

impl Rng {
    fn new(name: &str) -> Rng {
        // FNV-1a of the check name, so every check has its own fixed data.
        Rng(name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3)))
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * ((self.next() >> 40) as f32 / (1u64 << 24) as f32)
    }
    fn vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform(lo, hi)).collect()
    }
    /// Uniform values at least `margin` away from every kink.
    fn vec_away(&mut self, n: usize, lo: f32, hi: f32, kinks: &[f32], margin: f32) -> Vec<f32> {
        (0..n)
            .map(|_| loop {
                let v = self.uniform(lo, hi);
                if kinks.iter().all(|k| (v - k).abs() > margin) {
                    break v;
                }
            })
            .collect()
    }
    /// n distinct values spaced `gap` apart, shuffled (no ties, so maxima stay put under ±h).
    fn distinct(&mut self, n: usize, gap: f32) -> Vec<f32> {
        let mut v: Vec<f32> = (0..n).map(|i| (i as f32 - n as f32 / 2.0) * gap).collect();
        for i in (1..n).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
        v
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// The backward adds into its gradient buffer.
    Acc,
    /// The backward overwrites its gradient buffer.
    Over,
}
use Mode::{Acc, Over};

const H: f32 = 1e-2;

fn upload(be: &CpuBackend, v: &[f32]) -> CpuBuf {
    let b = be.alloc(v.len());
    be.upload(&b, v);
    b
}

/// Gradient check of one op. `fwd` runs the forward on the input buffers and returns the saved
/// tensors, output first; `bwd(be, inputs, saved, dy, grads)` runs the backward into `grads`
/// (one buffer per input). Checks the inputs listed in `wrt` and returns the max error.
fn gradcheck(
    name: &str,
    inputs: &[Vec<f32>],
    wrt: &[(usize, Mode)],
    tol: f64,
    fwd: impl Fn(&CpuBackend, &[CpuBuf]) -> Vec<CpuBuf>,
    bwd: impl Fn(&CpuBackend, &[CpuBuf], &[CpuBuf], &CpuBuf, &[CpuBuf]),
) -> f64 {
    let be = CpuBackend::new();
    let mut rng = Rng::new(name);
    let run = |vals: &[Vec<f32>]| -> Vec<f32> {
        let ins: Vec<CpuBuf> = vals.iter().map(|v| upload(&be, v)).collect();
        be.download(&fwd(&be, &ins)[0])
    };
    let r = rng.vec(run(inputs).len(), -1.0, 1.0);
    let loss = |vals: &[Vec<f32>]| -> f64 { run(vals).iter().zip(&r).map(|(&y, &r)| y as f64 * r as f64).sum() };

    let ins: Vec<CpuBuf> = inputs.iter().map(|v| upload(&be, v)).collect();
    let saved = fwd(&be, &ins);
    let dy = upload(&be, &r);
    let pre: Vec<Vec<f32>> = inputs.iter().map(|v| rng.vec(v.len(), -1.0, 1.0)).collect();
    let grads: Vec<CpuBuf> = pre.iter().map(|p| upload(&be, p)).collect();
    bwd(&be, &ins, &saved, &dy, &grads);

    let mut worst = 0.0f64;
    for &(k, mode) in wrt {
        let got = be.download(&grads[k]);
        let mut vals = inputs.to_vec();
        for j in 0..inputs[k].len() {
            let ana = got[j] as f64 - if mode == Acc { pre[k][j] as f64 } else { 0.0 };
            let x = inputs[k][j];
            vals[k][j] = x + H;
            let lp = loss(&vals);
            let xp = vals[k][j];
            vals[k][j] = x - H;
            let lm = loss(&vals);
            let step = xp as f64 - vals[k][j] as f64;
            vals[k][j] = x;
            let num = (lp - lm) / step;
            let err = (num - ana).abs() / ana.abs().max(1.0);
            assert!(err.is_finite(), "{name}: input {k}[{j}] non-finite (num {num}, ana {ana})");
            worst = worst.max(err);
        }
    }
    println!("gradcheck {name:<55} max rel err {worst:.2e} (tol {tol:.0e})");
    assert!(worst < tol, "{name}: max rel err {worst:.3e} ≥ tol {tol:.0e}");
    worst
}

/// |got − want| ≤ tol·max(1, |want|) elementwise; prints the worst error.
fn assert_close(name: &str, got: &[f32], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{name}: length");
    let mut worst = 0.0f64;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w).abs() / w.abs().max(1.0);
        assert!(err <= tol, "{name}[{i}]: got {g}, want {w} (rel err {err:.3e} > {tol:.0e})");
        worst = worst.max(err);
    }
    println!("forward   {name:<55} max rel err {worst:.2e} (tol {tol:.0e})");
}

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

// ---- elementwise --------------------------------------------------------------------------------

#[test]
fn elementwise_gradients() {
    let mut rng = Rng::new("elementwise");
    let n = 37;
    let a = rng.vec(n, -2.0, 2.0);
    let b = rng.vec_away(n, -2.0, 2.0, &[0.0], 0.5);
    let pos = rng.vec(n, 0.5, 2.0);
    let tol = 2e-3;
    gradcheck("add", &[a.clone(), b.clone()], &[(0, Acc), (1, Acc)], tol,
        |be, i| { let y = be.alloc(n); be.binary_forward(Binary::Add, &i[0], &i[1], &y); vec![y] },
        |be, i, _, dy, g| be.binary_backward(Binary::Add, &i[0], &i[1], dy, &g[0], &g[1]));
    gradcheck("mul", &[a.clone(), b.clone()], &[(0, Acc), (1, Acc)], tol,
        |be, i| { let y = be.alloc(n); be.binary_forward(Binary::Mul, &i[0], &i[1], &y); vec![y] },
        |be, i, _, dy, g| be.binary_backward(Binary::Mul, &i[0], &i[1], dy, &g[0], &g[1]));
    gradcheck("div", &[a.clone(), b.clone()], &[(0, Acc), (1, Acc)], tol,
        |be, i| { let y = be.alloc(n); be.binary_forward(Binary::Div, &i[0], &i[1], &y); vec![y] },
        |be, i, _, dy, g| be.binary_backward(Binary::Div, &i[0], &i[1], dy, &g[0], &g[1]));
    gradcheck("exp", std::slice::from_ref(&a), &[(0, Acc)], tol,
        |be, i| { let y = be.alloc(n); be.unary_forward(Unary::Exp, &i[0], &y); vec![y] },
        |be, i, s, dy, g| be.unary_backward(Unary::Exp, &i[0], &s[0], dy, &g[0]));
    gradcheck("log", std::slice::from_ref(&pos), &[(0, Acc)], tol,
        |be, i| { let y = be.alloc(n); be.unary_forward(Unary::Log, &i[0], &y); vec![y] },
        |be, i, s, dy, g| be.unary_backward(Unary::Log, &i[0], &s[0], dy, &g[0]));
    for p in [2.0f32, 0.5, -1.5, 3.0] {
        gradcheck(&format!("pow p={p}"), std::slice::from_ref(&pos), &[(0, Acc)], tol,
            |be, i| { let y = be.alloc(n); be.unary_forward(Unary::Pow(p), &i[0], &y); vec![y] },
            |be, i, s, dy, g| be.unary_backward(Unary::Pow(p), &i[0], &s[0], dy, &g[0]));
    }
}

#[test]
fn elementwise_forward_and_aliasing() {
    let be = CpuBackend::new();
    let mut rng = Rng::new("elementwise forward");
    let (a, b) = (rng.vec(19, -2.0, 2.0), rng.vec(19, 0.5, 2.0));
    let (ba, bb) = (upload(&be, &a), upload(&be, &b));
    // out aliases a (allowed): a ← a / b
    be.binary_forward(Binary::Div, &ba, &bb, &ba);
    let want: Vec<f64> = a.iter().zip(&b).map(|(&x, &y)| (x / y) as f64).collect();
    assert_close("div in place", &be.download(&ba), &want, 0.0);
    be.axpy(0.5, &bb, &ba);
    be.scal(-2.0, &ba);
    let want: Vec<f64> = want.iter().zip(&b).map(|(&w, &y)| -2.0 * (w + 0.5 * y as f64)).collect();
    assert_close("axpy+scal", &be.download(&ba), &want, 1e-6);
    // add through views of one storage: second half += first half
    let arena = upload(&be, &[1.0, 2.0, 3.0, 10.0, 20.0, 30.0]);
    let (lo, hi) = (be.view(&arena, 0, 3), be.view(&arena, 3, 3));
    be.binary_forward(Binary::Add, &lo, &hi, &hi);
    assert_eq!(be.download(&arena), vec![1.0, 2.0, 3.0, 11.0, 22.0, 33.0]);
    be.fill(&lo, 7.0);
    be.copy(&lo, &hi);
    assert_eq!(be.download(&arena), vec![7.0; 6]);
}

// ---- optimisers and reductions ------------------------------------------------------------------

#[test]
fn sgd_one_step_matches_formula() {
    let be = CpuBackend::new();
    let mut rng = Rng::new("sgd");
    let (w0, u0) = (rng.vec(33, -1.0, 1.0), rng.vec(33, -1.0, 1.0));
    let (lr, mom, decay, bsz) = (0.01f32, 0.9f32, 5e-4f32, 64.0f32);
    let (w, u) = (upload(&be, &w0), upload(&be, &u0));
    be.sgd_update(&w, &u, lr, mom, decay, bsz);
    let upd: Vec<f64> = (0..33).map(|i| u0[i] as f64 + decay as f64 * bsz as f64 * w0[i] as f64).collect();
    let want_w: Vec<f64> = (0..33).map(|i| w0[i] as f64 - lr as f64 / bsz as f64 * upd[i]).collect();
    let want_u: Vec<f64> = upd.iter().map(|u| u * mom as f64).collect();
    assert_close("sgd w", &be.download(&w), &want_w, 1e-6);
    assert_close("sgd upd", &be.download(&u), &want_u, 1e-6);
}

#[test]
fn adam_two_steps_match_formula() {
    let be = CpuBackend::new();
    let mut rng = Rng::new("adam");
    let n = 29;
    let w0 = rng.vec(n, -1.0, 1.0);
    let grads = [rng.vec(n, -2.0, 2.0), rng.vec(n, -2.0, 2.0)];
    let (lr, b1, b2, eps, decay, bsz) = (1e-3f64, 0.9f64, 0.999f64, 1e-6f64, 5e-4f64, 16.0f64);
    let (w, u, m, v) = (upload(&be, &w0), be.alloc(n), be.alloc(n), be.alloc(n));
    let (mut ww, mut mm, mut vv) = (f64s(&w0), vec![0.0; n], vec![0.0; n]);
    for (t, g) in grads.iter().enumerate() {
        let t = t as i32 + 1;
        be.upload(&u, g);
        be.adam_update(&w, &u, &m, &v, lr as f32, b1 as f32, b2 as f32, eps as f32, decay as f32, bsz as f32, t as u32);
        for i in 0..n {
            let d = g[i] as f64 + decay * bsz * ww[i];
            mm[i] = b1 * mm[i] + (1.0 - b1) * d;
            vv[i] = b2 * vv[i] + (1.0 - b2) * d * d;
            ww[i] -= lr * (mm[i] / (1.0 - b1.powi(t))) / ((vv[i] / (1.0 - b2.powi(t))).sqrt() + eps);
        }
        assert_close(&format!("adam step {t} w"), &be.download(&w), &ww, 1e-6);
        assert_close(&format!("adam step {t} m"), &be.download(&m), &mm, 1e-5);
        assert_close(&format!("adam step {t} v"), &be.download(&v), &vv, 1e-5);
        assert_eq!(be.download(&u), vec![0.0; n], "adam must zero the update buffer");
    }
}

#[test]
fn reductions() {
    let be = CpuBackend::new();
    let mut rng = Rng::new("reduce");
    let x = rng.vec(1000, -1.0, 1.0);
    let bx = upload(&be, &x);
    let out = upload(&be, &[9.0; 4]);
    be.sum_into(&bx, &out, 1);
    be.sum_squares_into(&bx, &out, 2);
    be.nonfinite_into(&bx, &out, 3);
    let got = be.download(&out);
    let want = [9.0, x.iter().map(|&v| v as f64).sum::<f64>(), x.iter().map(|&v| (v as f64).powi(2)).sum::<f64>(), 0.0];
    assert_close("sum / sum_squares / nonfinite", &got, &want, 1e-6);
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        be.upload(&be.view(&bx, 500, 1), &[bad]);
        be.nonfinite_into(&bx, &out, 0);
        assert_eq!(be.download(&out)[0], 1.0, "nonfinite misses {bad}");
    }
}
