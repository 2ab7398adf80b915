//! GPU kernels against host references (f64 loops written from the trait's formulas and the
//! spec), on small odd shapes that are not multiples of the workgroup size or tile.
//!
//! No adapter: every test prints why and returns, unless REQUIRE_GPU=1, where it fails.
//! Tolerances (stated per check): elementwise ops rtol 1e-5/atol 1e-6 (transcendentals 2e-5/1e-6:
//! GPU exp/log differ from libm by a few ulp); sums over K terms rtol 1e-4/atol 1e-5·scale, where
//! scale = Σ|terms| (GPU sums in a different order, lavapipe rounds FMA differently).


use engine::Backend;
use engine::backend::{BnTensors, Store};
use engine::cpu::CpuBackend;
use engine::gpu::{AdapterSelector, GpuBackend, GpuBuf};
use engine::network::layer::needs_pre_activation;
use engine::shapes::{Activation, Binary, BnBackward, BnStats, ChannelShape, ConvShape, PoolShape, ReorgShape, SliceCopy, Unary, UpsampleShape};

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

// One module per op family, named like its kernel file (shaders-wgsl/<op>.wgsl) and CPU twin
// (engine/src/cpu/<op>.rs); this file keeps the shared helpers and the cross-cutting tests.
#[path = "parity/conv.rs"]
mod conv;
#[path = "parity/blas.rs"]
mod blas;
#[path = "parity/bias.rs"]
mod bias;
#[path = "parity/batchnorm.rs"]
mod batchnorm;
#[path = "parity/activation.rs"]
mod activation;
#[path = "parity/pool.rs"]
mod pool;
#[path = "parity/resample.rs"]
mod resample;
#[path = "parity/route.rs"]
mod route;
#[path = "parity/dropout.rs"]
mod dropout;
#[path = "parity/optim.rs"]
mod optim;
#[path = "parity/reduce.rs"]
mod reduce;
#[path = "parity/softmax.rs"]
mod softmax;
#[path = "parity/cost.rs"]
mod cost;
#[path = "parity/half.rs"]
mod half;
#[path = "parity/conv_mixed.rs"]
mod conv_mixed;

/// Deterministic pseudo-random data in [lo, hi).
fn data(n: usize, seed: u64, lo: f32, hi: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            lo + (hi - lo) * ((s >> 40) as f32 / (1u64 << 24) as f32)
        })
        .collect()
}

fn up(g: &GpuBackend, v: &[f32]) -> GpuBuf {
    let b = g.alloc(v.len());
    g.upload(&b, v);
    b
}

#[track_caller]
fn assert_close(what: &str, got: &[f32], want: &[f64], rtol: f64, atol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w).abs();
        assert!(
            err <= atol + rtol * w.abs() || (g.is_nan() && w.is_nan()),
            "{what}[{i}]: gpu {g} vs reference {w} (err {err:e}, tol {:e})",
            atol + rtol * w.abs()
        );
    }
}

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

#[track_caller]
fn assert_sum_close(what: &str, got: &[f32], want: &[f64], abs_sum: &[f64]) {
    for i in 0..got.len() {
        let tol = 1e-5 * abs_sum[i] + 1e-6;
        let err = (got[i] as f64 - want[i]).abs();
        assert!(err <= tol, "{what}[{i}]: gpu {} vs reference {} (err {err:e}, tol {tol:e})", got[i], want[i]);
    }
}

#[test]
fn kernels_are_deterministic() {
    let g = gpu_or_skip!();
    let s = ConvShape::new(2, 3, 40, 40, 4, 3, 1, 1, 1);
    let x = up(g, &data(s.input_len(), 220, -1.0, 1.0));
    let dy = up(g, &data(s.output_len(), 221, -1.0, 1.0));
    let mut runs = Vec::new();
    for _ in 0..2 {
        let dw = g.alloc(s.weight_len());
        let out = g.alloc(1);
        g.conv_backward_weights(&x, &dy, &dw, &s);
        g.sum_into(&dy, &out, 0);
        runs.push((g.download(&dw), g.download(&out)));
    }
    assert_eq!(runs[0], runs[1], "two identical runs differ");
}

#[test]
fn upload_is_ordered_after_recorded_work() {
    let g = gpu_or_skip!();
    let a = up(g, &[1.0, 2.0, 3.0]);
    let b = g.alloc(3);
    g.copy(&a, &b); // recorded, not yet submitted
    g.upload(&a, &[9.0, 9.0, 9.0]); // must not overtake the copy
    assert_eq!(g.download(&b), vec![1.0, 2.0, 3.0]);
    assert_eq!(g.download(&a), vec![9.0, 9.0, 9.0]);
}

/// A training loop's uploads reuse the pool's staging buffers: after the first step's, uploads
/// of the same sizes (each step ending in a read-back) allocate nothing, and an upload after
/// recorded work lands after it without a submission of its own.
#[test]
fn uploads_reuse_their_staging_buffers() {
    // A private backend: the shared one's counters move under parallel tests.
    let Some(_) = gpu() else { return };
    let g = GpuBackend::new(&AdapterSelector::default()).expect("second backend");
    let (images, truths, out) = (g.alloc(300_000), g.alloc(50), g.alloc(50));
    // The copy is recorded before the second upload, so it reads the previous step's truths.
    let step = |k: f32| {
        g.upload(&images, &vec![k; 300_000]);
        g.copy(&truths, &out);
        g.upload(&truths, &[k; 50]);
        g.download(&out)
    };
    assert_eq!(step(1.0), vec![0.0; 50]);
    let first = g.stats();
    assert!(first.staging_bytes >= 4 * 300_050, "the pool holds the uploads: {first:?}");
    for k in 2..6 {
        assert_eq!(step(k as f32), vec![k as f32 - 1.0; 50], "step {k}");
        assert_eq!(g.download(&images)[299_999], k as f32);
    }
    let later = g.stats();
    assert_eq!(later.staging_bytes, first.staging_bytes, "steady uploads allocate no staging memory");
    // Per step: one submission for the step (uploads, copy, read-back) and one for the check.
    assert_eq!(later.submissions - first.submissions, 4 * 2);
}

#[test]
fn memory_accounting_and_bind_group_reuse() {
    // A private backend: the shared one's counters move under parallel tests.
    let Some(_) = gpu() else { return };
    let g = GpuBackend::new(&AdapterSelector::default()).expect("second backend");
    assert_eq!(g.memory_bytes(), (0, 0));
    let a = g.alloc(1000);
    let b = g.alloc(24);
    assert_eq!(g.memory_bytes(), (4096, 4096));
    let v = g.view(&a, 10, 24);
    assert_eq!(g.memory_bytes().0, 4096, "views allocate nothing");
    g.binary_forward(Binary::Add, &v, &b, &v);
    g.binary_forward(Binary::Add, &v, &b, &v);
    let before = g.stats();
    for _ in 0..5 {
        g.binary_forward(Binary::Add, &v, &b, &v);
    }
    let after = g.stats();
    assert_eq!(after.bind_groups_created, before.bind_groups_created, "steady state creates no bind groups");
    assert_eq!(after.dispatches, before.dispatches + 5);
    drop((a, v));
    assert_eq!(g.memory_bytes(), (96, 4096), "freed bytes leave the peak");
    drop(b);
}

#[test]
fn many_dispatches_overflow_the_params_arena_safely() {
    let g = gpu_or_skip!();
    // More dispatches than params-arena slots in one submission: the recorder must flush in
    // between, and every dispatch must still see its own params.
    let x = g.alloc(4);
    let sum = g.view(&x, 3, 1);
    for i in 0..5000usize {
        let slot = g.view(&x, i % 3, 1);
        g.fill(&slot, i as f32);
        g.axpy(0.5, &slot, &sum);
    }
    let got = g.download(&x);
    // Sums of halves below 2^24 are exact in f32.
    let want_sum = 0.5 * (0..5000u64).sum::<u64>() as f32;
    assert_eq!(got, vec![4998.0, 4999.0, 4997.0, want_sum]);
}

#[test]
fn one_dimensional_work_beyond_65535_workgroups() {
    let g = gpu_or_skip!();
    // 65,535 × 256 + 300 elements: the grid must spill into y (and the kernels fold it back).
    let n = 65_535 * 256 + 300;
    let arena = g.alloc(n + 7);
    let v = g.view(&arena, 5, n);
    g.fill(&v, 0.5);
    let out = g.alloc(2);
    g.sum_into(&arena, &out, 1);
    let got = g.download(&out);
    assert_eq!(got[1] as f64, 0.5 * n as f64, "sum of the filled view");
    let all = g.download(&arena);
    assert_eq!(&all[..5], &[0.0; 5]);
    assert_eq!(&all[n + 5..], &[0.0; 2]);
    assert!(all[5..n + 5].iter().all(|&x| x == 0.5));
}

// ---- GPU against the CPU backend (engine::cpu::CpuBackend), every op --------------------------

/// How a named output is compared (reference = CPU):
/// Exact: bit-equal (data movement, max, the dropout mask).
/// Elem: |gpu − cpu| ≤ 1e-5·|cpu| + 1e-6 (one or two roundings apart).
/// Trans: ≤ 3e-5·|cpu| + 3e-6 (GPU exp/log/pow are a few ulp from libm).
/// Sum: ≤ 2e-4·|cpu| + 2e-5·max|cpu| (different summation order / FMA over many terms).
#[derive(Clone, Copy, Debug)]
enum Tol {
    Exact,
    Elem,
    Trans,
    Sum,
}

fn upb<B: Backend>(b: &B, v: &[f32]) -> B::Buf {
    let buf = b.alloc(v.len());
    b.upload(&buf, v);
    buf
}

/// Runs every op but yolo on `b` with fixed inputs; returns named, downloaded outputs.
/// The tensors of one batch-norm composite case: random input, statistics, parameters and
/// incoming gradient drawn from `seed` (shared by the composite checks here and in parity/half.rs).
struct BnCase<B: Backend> {
    x: B::Buf,
    y: B::Buf,
    pre: Option<B::Buf>,
    xn: B::Buf,
    mean: B::Buf,
    var: B::Buf,
    rm: B::Buf,
    rv: B::Buf,
    gamma: B::Buf,
    beta: B::Buf,
    dgamma: B::Buf,
    dbeta: B::Buf,
    delta: B::Buf,
}

impl<B: Backend> BnCase<B> {
    fn new(b: &B, cs: &ChannelShape, act: Activation, seed: u64) -> Self {
        let (nn, c) = (cs.len(), cs.channels);
        BnCase {
            x: upb(b, &data(nn, seed, -2.0, 3.0)),
            y: b.alloc(nn),
            pre: needs_pre_activation(act).then(|| b.alloc(nn)),
            xn: b.alloc(nn),
            mean: b.alloc(c),
            var: b.alloc(c),
            rm: upb(b, &data(c, seed + 1, -0.1, 0.1)),
            rv: upb(b, &data(c, seed + 2, 0.5, 1.0)),
            gamma: upb(b, &data(c, seed + 3, 0.5, 1.5)),
            beta: upb(b, &data(c, seed + 4, -0.5, 0.5)),
            dgamma: upb(b, &data(c, seed + 5, -1.0, 1.0)),
            dbeta: upb(b, &data(c, seed + 6, -1.0, 1.0)),
            delta: upb(b, &data(nn, seed + 7, -1.0, 1.0)),
        }
    }

    fn tensors(&self) -> BnTensors<'_, B::Buf> {
        BnTensors {
            x_norm: &self.xn, mean: &self.mean, var: &self.var, rolling_mean: &self.rm, rolling_var: &self.rv,
            gamma: &self.gamma, beta: &self.beta, dgamma: &self.dgamma, dbeta: &self.dbeta,
        }
    }

    /// The composite's forward and backward; `between(buf)` runs on `y` after the forward, and
    /// on `delta` before and after the backward (where mixed precision stores in f16).
    fn run(&self, b: &B, cs: &ChannelShape, act: Activation, form: BnBackward, store: Store, between: impl Fn(&B::Buf)) {
        b.batchnorm_activation_forward(&self.x, &self.y, self.pre.as_ref(), &self.tensors(), act, cs, BnStats::Accurate, store);
        between(&self.y);
        between(&self.delta);
        b.activation_batchnorm_backward(&self.delta, &self.y, self.pre.as_ref(), &self.tensors(), act, cs, form, store);
        between(&self.delta);
    }

    /// Every output, named; the pre-activation last where there is one.
    fn outputs(&self) -> Vec<(&'static str, &B::Buf)> {
        let mut outs = vec![("y", &self.y), ("x_norm", &self.xn), ("mean", &self.mean), ("var", &self.var), ("rolling_mean", &self.rm)];
        outs.extend([("rolling_var", &self.rv), ("dx", &self.delta), ("dgamma", &self.dgamma), ("dbeta", &self.dbeta)]);
        outs.extend(self.pre.as_ref().map(|p| ("pre-activation", p)));
        outs
    }
}

fn every_op<B: Backend>(b: &B) -> Vec<(String, Tol, Vec<f32>)> {
    let mut out = Vec::new();
    let mut put = |name: &str, tol: Tol, v: Vec<f32>| out.push((name.to_string(), tol, v));

    // elementwise on views of one arena
    let n = 777;
    let arena = b.alloc(3 * n + 5);
    let (a, c, d) = (b.view(&arena, 1, n), b.view(&arena, 1 + n, n), b.view(&arena, 1 + 2 * n, n));
    b.upload(&a, &data(n, 300, -2.0, 2.0));
    b.upload(&c, &data(n, 301, 0.5, 2.5));
    let g = upb(b, &data(n, 302, -1.0, 1.0));
    b.binary_forward(Binary::Add, &a, &c, &d);
    put("add", Tol::Elem, b.download(&d));
    b.binary_forward(Binary::Mul, &a, &c, &d);
    put("mul", Tol::Elem, b.download(&d));
    b.binary_forward(Binary::Div, &a, &c, &d);
    put("div", Tol::Elem, b.download(&d));
    b.unary_forward(Unary::Exp, &a, &d);
    put("exp", Tol::Trans, b.download(&d));
    b.unary_forward(Unary::Log, &c, &d);
    put("log", Tol::Trans, b.download(&d));
    b.unary_forward(Unary::Pow(-1.3), &c, &d);
    put("pow", Tol::Trans, b.download(&d));
    b.unary_forward(Unary::Pow(2.0), &a, &d);
    put("pow int", Tol::Trans, b.download(&d));
    b.axpy(0.3, &a, &d);
    b.scal(1.5, &d);
    put("axpy scal", Tol::Elem, b.download(&d));
    b.copy(&a, &d);
    b.fill(&a, -0.75);
    put("copy", Tol::Exact, b.download(&d));
    // copy_if_flagged: a zero flag leaves d as it is, a nonzero one copies.
    let flag = upb(b, &[0.0]);
    b.copy_if_flagged(&flag, &a, &d);
    put("copy_if_flagged unset", Tol::Exact, b.download(&d));
    b.upload(&flag, &[1.0]);
    b.copy_if_flagged(&flag, &c, &d);
    put("copy_if_flagged set", Tol::Exact, b.download(&d));
    put("fill", Tol::Exact, b.download(&a));
    b.upload(&a, &data(n, 303, -2.0, 2.0));
    let (da, db) = (upb(b, &data(n, 304, -1.0, 1.0)), upb(b, &data(n, 305, -1.0, 1.0)));
    b.binary_backward(Binary::Mul, &a, &c, &g, &da, &db);
    b.binary_backward(Binary::Div, &a, &c, &g, &da, &db);
    b.unary_backward(Unary::Exp, &c, &c, &g, &da);
    b.unary_backward(Unary::Log, &c, &c, &g, &db);
    b.unary_backward(Unary::Pow(1.7), &c, &c, &g, &da);
    put("elementwise backward da", Tol::Trans, b.download(&da));
    put("elementwise backward db", Tol::Trans, b.download(&db));

    // convolution
    for (i, s) in [
        ConvShape::new(2, 3, 9, 7, 5, 3, 1, 1, 1),
        ConvShape::new(1, 4, 10, 9, 6, 3, 2, 1, 2),
        ConvShape::new(2, 6, 6, 6, 6, 3, 1, 1, 6),
        ConvShape::new(1, 8, 5, 5, 67, 1, 1, 0, 1),
        ConvShape::new(2, 3, 36, 36, 4, 3, 1, 1, 1), // split-K on the GPU
        // One shape per GEMM tile of the GPU (128, 64 and 32 rows; 1×1, 3×3 and generic sizes).
        ConvShape::new(2, 16, 12, 12, 130, 3, 1, 1, 1),
        ConvShape::new(2, 40, 9, 9, 48, 1, 1, 0, 1),
        ConvShape::new(1, 3, 17, 17, 8, 5, 2, 2, 1),
        ConvShape::new(2, 130, 6, 6, 20, 3, 2, 1, 1),
    ]
    .into_iter()
    .enumerate()
    {
        let seed = 310 + 10 * i as u64;
        let x = upb(b, &data(s.input_len(), seed, -1.0, 1.0));
        let w = upb(b, &data(s.weight_len(), seed + 1, -0.5, 0.5));
        let dy = upb(b, &data(s.output_len(), seed + 2, -1.0, 1.0));
        let y = b.alloc(s.output_len());
        let dx = upb(b, &data(s.input_len(), seed + 3, -1.0, 1.0));
        let dw = upb(b, &data(s.weight_len(), seed + 4, -1.0, 1.0));
        b.conv_forward(&x, &w, &y, &s);
        b.conv_backward_data(&dy, &w, &dx, &s);
        b.conv_backward_weights(&x, &dy, &dw, &s);
        put(&format!("conv_forward {s:?}"), Tol::Sum, b.download(&y));
        put(&format!("conv_backward_data {s:?}"), Tol::Sum, b.download(&dx));
        put(&format!("conv_backward_weights {s:?}"), Tol::Sum, b.download(&dw));
    }

    // bias, batchnorm
    let (bt, ch, sp) = (2, 5, 131);
    let nn = bt * ch * sp;
    let y = upb(b, &data(nn, 400, -2.0, 3.0));
    let bias = upb(b, &data(ch, 401, -1.0, 1.0));
    b.bias_add(&y, &bias, &ChannelShape::new(bt, ch, sp));
    put("bias_add", Tol::Elem, b.download(&y));
    b.bias_backward(&y, &bias, &ChannelShape::new(bt, ch, sp));
    put("bias_backward", Tol::Sum, b.download(&bias));
    let (xn, mean, var) = (b.alloc(nn), b.alloc(ch), b.alloc(ch));
    let (rm, rv) = (upb(b, &data(ch, 402, -0.1, 0.1)), upb(b, &data(ch, 403, 0.5, 1.0)));
    let (gamma, beta) = (upb(b, &data(ch, 404, 0.5, 1.5)), upb(b, &data(ch, 405, -0.5, 0.5)));
    let yb = b.alloc(nn);
    b.batchnorm_forward_train(&y, &yb, &xn, &mean, &var, &rm, &rv, &gamma, &beta, bt, ch, sp, BnStats::Accurate);
    for (name, buf) in [("bn y", &yb), ("bn x_norm", &xn), ("bn mean", &mean), ("bn var", &var), ("bn rolling_mean", &rm), ("bn rolling_var", &rv)] {
        put(name, Tol::Sum, b.download(buf));
    }
    b.batchnorm_forward_infer(&y, &y, &rm, &rv, &gamma, &beta, bt, ch, sp);
    put("bn infer (in place)", Tol::Sum, b.download(&y));
    let dy_h = data(nn, 406, -1.0, 1.0);
    let dx_dn = upb(b, &dy_h);
    let dyb = upb(b, &dy_h);
    let (dgamma, dbeta) = (upb(b, &data(ch, 407, -1.0, 1.0)), upb(b, &data(ch, 408, -1.0, 1.0)));
    b.batchnorm_backward(&dyb, &xn, &var, &gamma, &dgamma, &dbeta, &dyb, bt, ch, sp, BnBackward::Exact);
    put("bn dx (aliasing dy)", Tol::Sum, b.download(&dyb));
    let (dg_dn, db_dn) = (b.alloc(ch), b.alloc(ch));
    b.batchnorm_backward(&dx_dn, &xn, &var, &gamma, &dg_dn, &db_dn, &dx_dn, bt, ch, sp, BnBackward::DarknetCpu);
    put("bn dx, Darknet-CPU form (aliasing dy)", Tol::Sum, b.download(&dx_dn));
    put("bn dgamma", Tol::Sum, b.download(&dgamma));
    put("bn dbeta", Tol::Sum, b.download(&dbeta));

    // composite ops: fused kernels on the GPU, the plain ops above on the CPU
    let cs = ChannelShape::new(3, 6, 47);
    for (i, act) in [Activation::Leaky, Activation::Linear, Activation::Logistic, Activation::Mish, Activation::Swish].into_iter().enumerate() {
        let c = BnCase::new(b, &cs, act, 480 + 20 * i as u64);
        let form = if i == 0 { BnBackward::DarknetCpu } else { BnBackward::Exact };
        c.run(b, &cs, act, form, Store::F32, |_| {});
        for (name, buf) in c.outputs() {
            put(&format!("batchnorm_activation {act:?} {name}"), Tol::Sum, b.download(buf));
        }
    }
    for (i, act) in [Activation::Linear, Activation::Leaky].into_iter().enumerate() {
        let s = ConvShape::new(2, 8, 7, 6, 67, 1, 1, 0, 1);
        let seed = 600 + 10 * i as u64;
        let x = upb(b, &data(s.input_len(), seed, -1.0, 1.0));
        let w = upb(b, &data(s.weight_len(), seed + 1, -0.5, 0.5));
        let bias = upb(b, &data(s.filters, seed + 2, -1.0, 1.0));
        let y = b.alloc(s.output_len());
        b.conv_bias_activation_forward(&x, &w, &bias, &y, None, act, &s, Store::F32);
        put(&format!("conv_bias_activation {act:?}"), Tol::Sum, b.download(&y));
        let delta = upb(b, &data(s.output_len(), seed + 3, -1.0, 1.0));
        let dbias = upb(b, &data(s.filters, seed + 4, -1.0, 1.0));
        let cs = ChannelShape::new(s.batch, s.filters, s.out_h * s.out_w);
        b.activation_bias_backward(&delta, &y, None, &dbias, act, &cs, Store::F32);
        put(&format!("activation_bias_backward {act:?} delta"), Tol::Elem, b.download(&delta));
        put(&format!("activation_bias_backward {act:?} dbias"), Tol::Sum, b.download(&dbias));
    }

    // activations
    let mut hx = data(509, 410, -9.0, 9.0);
    hx[..8].copy_from_slice(&[-25.0, -20.5, -19.5, -2.0, 0.0, 19.5, 20.5, 30.0]);
    let x = upb(b, &hx);
    let dy = upb(b, &data(509, 411, -1.0, 1.0));
    let (ya, dxa) = (b.alloc(509), b.alloc(509));
    for act in Activation::ALL {
        b.activation_forward(&x, &ya, act);
        put(&format!("{act:?} forward"), Tol::Trans, b.download(&ya));
        b.activation_backward(&x, &ya, &dy, &dxa, act);
        put(&format!("{act:?} backward"), Tol::Trans, b.download(&dxa));
    }

    // pooling, resampling
    for (i, s) in [PoolShape::new(2, 3, 13, 13, 2, 2, 1), PoolShape::new(1, 2, 7, 9, 2, 1, 1), PoolShape::new(1, 2, 11, 8, 3, 2, 2)]
        .into_iter()
        .enumerate()
    {
        let hx: Vec<f32> = data(s.input_len(), 420 + i as u64, -3.0, 3.0).iter().map(|v| v.round()).collect();
        let x = upb(b, &hx);
        let y = b.alloc(s.output_len());
        let dy = upb(b, &data(s.output_len(), 425 + i as u64, -1.0, 1.0));
        let dx = upb(b, &data(s.input_len(), 428 + i as u64, -1.0, 1.0));
        b.maxpool_forward(&x, &y, &s);
        b.maxpool_backward(&x, &dy, &dx, &s);
        put(&format!("maxpool fwd {s:?}"), Tol::Exact, b.download(&y));
        put(&format!("maxpool bwd {s:?}"), Tol::Elem, b.download(&dx));
    }
    let x = upb(b, &data(2 * 3 * 301, 430, -1.0, 1.0));
    let ap = b.alloc(6);
    b.avgpool_forward(&x, &ap, &ChannelShape::new(2, 3, 301));
    b.avgpool_backward(&ap, &x, &ChannelShape::new(2, 3, 301));
    put("avgpool fwd", Tol::Sum, b.download(&ap));
    put("avgpool bwd", Tol::Sum, b.download(&x));
    let us = UpsampleShape { batch: 2, c: 3, h: 5, w: 3, stride: 3, scale: 1.5 };
    let x = upb(b, &data(us.input_len(), 431, -1.0, 1.0));
    let yu = b.alloc(us.output_len());
    b.upsample_forward(&x, &yu, &us);
    b.upsample_backward(&yu, &x, &us);
    put("upsample fwd", Tol::Elem, b.download(&yu));
    put("upsample bwd", Tol::Elem, b.download(&x));
    let rs = ReorgShape { batch: 2, c: 12, h: 4, w: 6, stride: 2 };
    let x = upb(b, &data(rs.len(), 432, -1.0, 1.0));
    let yr = b.alloc(rs.len());
    b.reorg_forward(&x, &yr, &rs);
    b.reorg_backward(&yr, &x, &rs);
    put("reorg fwd", Tol::Exact, b.download(&yr));
    put("reorg bwd", Tol::Elem, b.download(&x));

    // route, scale_channels
    let src = upb(b, &data(4 * 37, 440, -1.0, 1.0));
    let dst = upb(b, &data(4 * 41, 441, -1.0, 1.0));
    b.copy_slices(&src, &dst, &SliceCopy { batch: 4, len: 17, src_stride: 37, src_offset: 20, dst_stride: 41, dst_offset: 3, accumulate: false });
    b.copy_slices(&src, &dst, &SliceCopy { batch: 4, len: 19, src_stride: 37, src_offset: 1, dst_stride: 41, dst_offset: 21, accumulate: true });
    put("copy_slices", Tol::Elem, b.download(&dst));
    let (bt, ch, sp) = (2, 4, 83);
    let x = upb(b, &data(bt * ch * sp, 442, -1.0, 1.0));
    let sc = upb(b, &data(bt * ch, 443, -1.0, 1.0));
    let ys = b.alloc(bt * ch * sp);
    b.scale_channels_forward(&x, &sc, &ys, &ChannelShape::new(bt, ch, sp));
    let dx = upb(b, &data(bt * ch * sp, 444, -1.0, 1.0));
    let dsc = upb(b, &data(bt * ch, 445, -1.0, 1.0));
    b.scale_channels_backward(&x, &sc, &ys, &dx, &dsc, &ChannelShape::new(bt, ch, sp));
    put("scale_channels fwd", Tol::Elem, b.download(&ys));
    put("scale_channels dx", Tol::Elem, b.download(&dx));
    put("scale_channels dscale", Tol::Sum, b.download(&dsc));

    // dropout
    let seed = engine::rng::dropout_seed(9, 2, 1);
    let x = upb(b, &data(1031, 450, -1.0, 1.0));
    let yd = b.alloc(1031);
    b.dropout_forward(&x, &yd, 0.4, seed);
    b.dropout_backward(&yd, &x, 0.4, seed);
    put("dropout fwd", Tol::Exact, b.download(&yd));
    put("dropout bwd", Tol::Elem, b.download(&x));

    // optimisers
    let (w, u) = (upb(b, &data(333, 460, -1.0, 1.0)), upb(b, &data(333, 461, -1.0, 1.0)));
    b.sgd_update(&w, &u, 0.01, 0.9, 0.0005, 16.0);
    put("sgd w", Tol::Elem, b.download(&w));
    put("sgd upd", Tol::Elem, b.download(&u));
    let (m, v) = (upb(b, &data(333, 462, -0.1, 0.1)), upb(b, &data(333, 463, 0.0, 0.1)));
    b.upload(&u, &data(333, 464, -1.0, 1.0));
    b.adam_update(&w, &u, &m, &v, 0.001, 0.9, 0.999, 1e-6, 0.0005, 16.0, 5);
    put("adam w", Tol::Trans, b.download(&w));
    put("adam m", Tol::Elem, b.download(&m));
    put("adam v", Tol::Elem, b.download(&v));
    put("adam upd", Tol::Exact, b.download(&u));

    // reductions
    let mut hx = data(70_001, 470, -1.0, 1.0);
    let r = b.alloc(4);
    let x = upb(b, &hx);
    b.sum_into(&x, &r, 0);
    b.sum_squares_into(&x, &r, 1);
    b.nonfinite_into(&x, &r, 2);
    hx[69_999] = f32::NAN;
    b.upload(&x, &hx);
    b.nonfinite_into(&x, &r, 3);
    put("reductions", Tol::Sum, b.download(&r));
    out
}

#[test]
fn gpu_matches_cpu_backend_on_every_op() {
    let g = gpu_or_skip!();
    let cpu = engine::cpu::CpuBackend::new();
    let want = every_op(&cpu);
    let got = every_op(g);
    assert_eq!(want.len(), got.len());
    for ((name, tol, w), (_, _, v)) in want.iter().zip(&got) {
        assert_eq!(w.len(), v.len(), "{name}: length");
        let scale = w.iter().fold(0.0f64, |m, &x| m.max((x as f64).abs()));
        for (i, (&c, &q)) in w.iter().zip(v).enumerate() {
            let (c, q) = (c as f64, q as f64);
            let bound = match tol {
                Tol::Exact => 0.0,
                Tol::Elem => 1e-5 * c.abs() + 1e-6,
                Tol::Trans => 3e-5 * c.abs() + 3e-6,
                Tol::Sum => 2e-4 * c.abs() + 2e-5 * scale.max(1.0),
            };
            // Exact means equal as numbers: NVIDIA's max() may return +0 where the CPU keeps -0.
            let ok = if matches!(tol, Tol::Exact) { c == q } else { (c - q).abs() <= bound };
            assert!(ok, "{name}[{i}]: gpu {q} vs cpu {c} ({tol:?}, bound {bound:e})");
        }
    }
}

#[test]
fn adapter_listing_and_selection_errors() {
    let g = gpu_or_skip!();
    let list = engine::gpu::list_adapters();
    assert!(!list.is_empty(), "a backend exists, so the list cannot be empty");
    assert!(list.iter().any(|a| a.name == g.adapter_info().name), "the chosen adapter is listed");
    assert!(g.name().starts_with("gpu:"));
    let err = GpuBackend::new(&AdapterSelector::by_name("no-such-adapter-xyz")).unwrap_err();
    assert!(matches!(err, engine::gpu::GpuError::NoNameMatch { .. }), "{err}");
    let err = GpuBackend::new(&AdapterSelector::by_index(list.len() + 5)).unwrap_err();
    assert!(matches!(err, engine::gpu::GpuError::BadIndex { .. }), "{err}");
}
