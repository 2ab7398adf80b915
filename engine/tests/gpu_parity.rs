//! GPU kernels against host references (f64 loops written from the trait's formulas and the
//! spec), on small odd shapes that are not multiples of the workgroup size or tile.
//!
//! No adapter: every test prints why and returns, unless REQUIRE_GPU=1, where it fails.
//! Tolerances (stated per check): elementwise ops rtol 1e-5/atol 1e-6 (transcendentals 2e-5/1e-6:
//! GPU exp/log differ from libm by a few ulp); sums over K terms rtol 1e-4/atol 1e-5·scale, where
//! scale = Σ|terms| (GPU sums in a different order, lavapipe rounds FMA differently).


use engine::Backend;
use engine::backend::BnTensors;
use engine::cpu::CpuBackend;
use engine::gpu::{AdapterSelector, GpuBackend, GpuBuf};
use engine::network::layer::needs_pre_activation;
use engine::shapes::{Activation, BnBackward, BnStats, ChannelShape, ConvShape, PoolShape, ReorgShape, SliceCopy, UpsampleShape};

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

// ---- references -------------------------------------------------------------------------------

fn conv_ref(x: &[f32], w: &[f32], s: &ConvShape) -> Vec<f64> {
    let (cg, mg) = (s.c / s.groups, s.filters / s.groups);
    let mut y = vec![0.0; s.output_len()];
    for b in 0..s.batch {
        for f in 0..s.filters {
            let g = f / mg;
            for oy in 0..s.out_h {
                for ox in 0..s.out_w {
                    let mut acc = 0.0f64;
                    for c in 0..cg {
                        for ky in 0..s.size {
                            for kx in 0..s.size {
                                let iy = (oy * s.stride + ky) as isize - s.pad as isize;
                                let ix = (ox * s.stride + kx) as isize - s.pad as isize;
                                if iy < 0 || ix < 0 || iy >= s.h as isize || ix >= s.w as isize {
                                    continue;
                                }
                                let xv = x[((b * s.c + g * cg + c) * s.h + iy as usize) * s.w + ix as usize];
                                let wv = w[((f * cg + c) * s.size + ky) * s.size + kx];
                                acc += xv as f64 * wv as f64;
                            }
                        }
                    }
                    y[((b * s.filters + f) * s.out_h + oy) * s.out_w + ox] = acc;
                }
            }
        }
    }
    y
}

/// (dx, dw) contributions of conv for upstream gradient dy, plus |·| sums for tolerances.
fn conv_grads_ref(x: &[f32], w: &[f32], dy: &[f32], s: &ConvShape) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
    let (cg, mg) = (s.c / s.groups, s.filters / s.groups);
    let mut dx = vec![0.0; s.input_len()];
    let mut dxa = vec![0.0; s.input_len()];
    let mut dw = vec![0.0; s.weight_len()];
    let mut dwa = vec![0.0; s.weight_len()];
    for b in 0..s.batch {
        for f in 0..s.filters {
            let g = f / mg;
            for oy in 0..s.out_h {
                for ox in 0..s.out_w {
                    let d = dy[((b * s.filters + f) * s.out_h + oy) * s.out_w + ox] as f64;
                    for c in 0..cg {
                        for ky in 0..s.size {
                            for kx in 0..s.size {
                                let iy = (oy * s.stride + ky) as isize - s.pad as isize;
                                let ix = (ox * s.stride + kx) as isize - s.pad as isize;
                                if iy < 0 || ix < 0 || iy >= s.h as isize || ix >= s.w as isize {
                                    continue;
                                }
                                let xi = ((b * s.c + g * cg + c) * s.h + iy as usize) * s.w + ix as usize;
                                let wi = ((f * cg + c) * s.size + ky) * s.size + kx;
                                dx[xi] += d * w[wi] as f64;
                                dxa[xi] += (d * w[wi] as f64).abs();
                                dw[wi] += d * x[xi] as f64;
                                dwa[wi] += (d * x[xi] as f64).abs();
                            }
                        }
                    }
                }
            }
        }
    }
    (dx, dxa, dw, dwa)
}

#[track_caller]
fn assert_sum_close(what: &str, got: &[f32], want: &[f64], abs_sum: &[f64]) {
    for i in 0..got.len() {
        let tol = 1e-5 * abs_sum[i] + 1e-6;
        let err = (got[i] as f64 - want[i]).abs();
        assert!(err <= tol, "{what}[{i}]: gpu {} vs reference {} (err {err:e}, tol {tol:e})", got[i], want[i]);
    }
}

// ---- tests ------------------------------------------------------------------------------------

#[test]
fn blas_elementwise_ops_on_views() {
    let g = gpu_or_skip!();
    let n = 1037; // not a multiple of 256
    // One arena; the views start at odd float offsets so every kernel must honour its offset.
    let arena = g.alloc(6 * n + 13);
    let v = |i: usize| g.view(&arena, 3 + i * n, n);
    let (a, b, out, da, db) = (v(0), v(1), v(2), v(3), v(4));
    let ha = data(n, 1, -2.0, 2.0);
    let hb: Vec<f32> = data(n, 2, 0.5, 3.0);
    let hg = data(n, 3, -1.0, 1.0);
    g.upload(&a, &ha);
    g.upload(&b, &hb);
    let fa = f64s(&ha);
    let fb = f64s(&hb);
    let fg = f64s(&hg);
    let ew = |f: &dyn Fn(usize) -> f64| (0..n).map(f).collect::<Vec<f64>>();

    g.add(&a, &b, &out);
    assert_close("add", &g.download(&out), &ew(&|i| fa[i] + fb[i]), 1e-6, 1e-7);
    g.mul(&a, &b, &out);
    assert_close("mul", &g.download(&out), &ew(&|i| fa[i] * fb[i]), 1e-6, 1e-7);
    g.div(&a, &b, &out);
    assert_close("div", &g.download(&out), &ew(&|i| fa[i] / fb[i]), 1e-6, 1e-7);
    g.exp(&a, &out);
    assert_close("exp", &g.download(&out), &ew(&|i| fa[i].exp()), 2e-5, 1e-6);
    g.log(&b, &out);
    assert_close("log", &g.download(&out), &ew(&|i| fb[i].ln()), 2e-5, 2e-6);
    g.pow(&b, 1.7, &out);
    assert_close("pow", &g.download(&out), &ew(&|i| fb[i].powf(1.7)), 2e-5, 1e-6);
    g.pow(&a, 3.0, &out); // negative base, odd integer exponent keeps the sign
    assert_close("pow int", &g.download(&out), &ew(&|i| fa[i].powi(3)), 2e-5, 1e-5);
    g.copy(&a, &out);
    assert_eq!(g.download(&out), ha, "copy");
    g.axpy(0.5, &b, &out);
    assert_close("axpy", &g.download(&out), &ew(&|i| fa[i] + 0.5 * fb[i]), 1e-6, 1e-7);
    g.scal(-2.0, &out);
    assert_close("scal", &g.download(&out), &ew(&|i| -2.0 * (fa[i] + 0.5 * fb[i])), 1e-6, 1e-6);
    g.fill(&out, 0.25);
    assert!(g.download(&out).iter().all(|&x| x == 0.25), "fill");
    // out may alias an input
    g.add(&out, &a, &out);
    assert_close("add aliased", &g.download(&out), &ew(&|i| 0.25 + fa[i]), 1e-6, 1e-7);

    let gbuf = v(5);
    g.upload(&gbuf, &hg);
    let start_a = data(n, 4, -1.0, 1.0);
    let start_b = data(n, 5, -1.0, 1.0);
    let (sa, sb) = (f64s(&start_a), f64s(&start_b));
    let reset = || {
        g.upload(&da, &start_a);
        g.upload(&db, &start_b);
    };
    reset();
    g.mul_backward(&a, &b, &gbuf, &da, &db);
    assert_close("mul_backward da", &g.download(&da), &ew(&|i| sa[i] + fg[i] * fb[i]), 1e-6, 1e-6);
    assert_close("mul_backward db", &g.download(&db), &ew(&|i| sb[i] + fg[i] * fa[i]), 1e-6, 1e-6);
    reset();
    g.div_backward(&a, &b, &gbuf, &da, &db);
    assert_close("div_backward da", &g.download(&da), &ew(&|i| sa[i] + fg[i] / fb[i]), 1e-5, 1e-6);
    assert_close("div_backward db", &g.download(&db), &ew(&|i| sb[i] - fg[i] * fa[i] / (fb[i] * fb[i])), 1e-5, 1e-6);
    reset();
    g.exp_backward(&b, &gbuf, &da);
    assert_close("exp_backward", &g.download(&da), &ew(&|i| sa[i] + fg[i] * fb[i]), 1e-6, 1e-6);
    reset();
    g.log_backward(&b, &gbuf, &da);
    assert_close("log_backward", &g.download(&da), &ew(&|i| sa[i] + fg[i] / fb[i]), 1e-5, 1e-6);
    reset();
    g.pow_backward(&b, 2.5, &gbuf, &da);
    assert_close("pow_backward", &g.download(&da), &ew(&|i| sa[i] + fg[i] * 2.5 * fb[i].powf(1.5)), 2e-5, 1e-5);

    // Floats around the views were never written.
    let all = g.download(&arena);
    assert!(all[..3].iter().all(|&x| x == 0.0) && all[3 + 6 * n..].iter().all(|&x| x == 0.0), "writes outside views");
}

fn conv_case(g: &GpuBackend, s: ConvShape, seed: u64) {
    let hx = data(s.input_len(), seed, -1.0, 1.0);
    let hw = data(s.weight_len(), seed + 1, -0.5, 0.5);
    let hdy = data(s.output_len(), seed + 2, -1.0, 1.0);
    let (x, w, dy) = (up(g, &hx), up(g, &hw), up(g, &hdy));
    let y = g.alloc(s.output_len());
    g.fill(&y, 7.0); // overwritten, not accumulated
    g.conv_forward(&x, &w, &y, &s);
    let want = conv_ref(&hx, &hw, &s);
    // Reference |·| sums for the forward: Σ|x·w| ≤ K·max; use a plain tolerance on K terms.
    let k = (s.c / s.groups * s.size * s.size) as f64;
    assert_close(&format!("conv_forward {s:?}"), &g.download(&y), &want, 1e-4, 1e-6 * k);

    let (dx_ref, dxa, dw_ref, dwa) = conv_grads_ref(&hx, &hw, &hdy, &s);
    let dx0 = data(s.input_len(), seed + 3, -1.0, 1.0);
    let dw0 = data(s.weight_len(), seed + 4, -1.0, 1.0);
    let (dx, dw) = (up(g, &dx0), up(g, &dw0));
    g.conv_backward_data(&dy, &w, &dx, &s);
    g.conv_backward_weights(&x, &dy, &dw, &s);
    let dx_want: Vec<f64> = dx_ref.iter().zip(&dx0).map(|(a, &b)| a + b as f64).collect();
    let dw_want: Vec<f64> = dw_ref.iter().zip(&dw0).map(|(a, &b)| a + b as f64).collect();
    let dxa: Vec<f64> = dxa.iter().map(|a| a + 1.0).collect();
    let dwa: Vec<f64> = dwa.iter().map(|a| a + 1.0).collect();
    assert_sum_close(&format!("conv_backward_data {s:?}"), &g.download(&dx), &dx_want, &dxa);
    assert_sum_close(&format!("conv_backward_weights {s:?}"), &g.download(&dw), &dw_want, &dwa);
}

#[test]
fn conv_forward_and_backward() {
    let g = gpu_or_skip!();
    // batch, c, h, w, filters, size, stride, pad, groups
    conv_case(g, ConvShape::new(2, 3, 7, 5, 5, 3, 1, 1, 1), 10);
    conv_case(g, ConvShape::new(2, 4, 9, 8, 6, 3, 2, 1, 2), 20);
    conv_case(g, ConvShape::new(1, 6, 5, 5, 7, 1, 1, 0, 1), 30);
    conv_case(g, ConvShape::new(1, 4, 6, 6, 4, 3, 1, 1, 4), 40); // depthwise
    conv_case(g, ConvShape::new(1, 5, 11, 10, 3, 2, 2, 0, 1), 50); // even kernel, no pad
    conv_case(g, ConvShape::new(1, 17, 9, 9, 70, 3, 1, 1, 1), 60); // > one 64-tile of filters
}

#[test]
fn conv_backward_weights_split_k() {
    let g = gpu_or_skip!();
    // K = batch·oh·ow = 2·40·40 = 3200 ≥ 2·1024 with a single output tile: takes the split path.
    let s = ConvShape::new(2, 3, 40, 40, 4, 3, 1, 1, 1);
    conv_case(g, s, 70);
    // Reduction partials (256 floats) + at least two splits of partial weights.
    assert!(g.internal_bytes() >= 4 * (256 + 2 * s.weight_len() as u64), "split-K scratch was not used");
}

#[test]
fn bias_add_and_backward() {
    let g = gpu_or_skip!();
    let (batch, ch, sp) = (3, 5, 301);
    let hy = data(batch * ch * sp, 80, -1.0, 1.0);
    let hb = data(ch, 81, -1.0, 1.0);
    let (y, bias) = (up(g, &hy), up(g, &hb));
    g.bias_add(&y, &bias, batch, ch, sp);
    let want: Vec<f64> = (0..hy.len()).map(|i| hy[i] as f64 + hb[(i / sp) % ch] as f64).collect();
    assert_close("bias_add", &g.download(&y), &want, 1e-6, 1e-6);
    let db0 = data(ch, 82, -1.0, 1.0);
    let db = up(g, &db0);
    g.bias_backward(&y, &db, batch, ch, sp);
    let yv = f64s(&g.download(&y));
    let mut want = f64s(&db0);
    let mut abs = vec![1.0; ch];
    for (i, v) in yv.iter().enumerate() {
        want[(i / sp) % ch] += v;
        abs[(i / sp) % ch] += v.abs();
    }
    assert_sum_close("bias_backward", &g.download(&db), &want, &abs);
}

/// `BnStats::DarknetCpu` on the GPU sums as the CPU twin does (f32, Darknet's order): channel 0
/// starts with 2^24 and then holds only 1s, so its f32 running sum stays 2^24 (each +1 rounds back,
/// ties to even) and its mean is 2^24 × (float)(1/N), not the accurate (2^24 + N − 1)/N. Every
/// output within float rounding of the CPU's. The second shape has N = 80000 per channel: more
/// loop iterations than llvmpipe lets one invocation run (65535), so a kernel that summed on one
/// thread would come out short there.
#[test]
fn batchnorm_darknet_cpu_stats() {
    let g = gpu_or_skip!();
    for (k, (batch, ch, sp)) in [(2, 3, 157), (2, 2, 40_000)].into_iter().enumerate() {
        let mut hx = data(batch * ch * sp, 98 + k as u64, -2.0, 3.0);
        hx[..sp].fill(1.0);
        hx[ch * sp..ch * sp + sp].fill(1.0);
        hx[0] = 16_777_216.0;
        let gpu = bn_darknet_stats_on(g, &hx, batch, ch, sp);
        let cpu = bn_darknet_stats_on(&CpuBackend::new(), &hx, batch, ch, sp);
        let f32_sum_mean = 16_777_216.0f32 * (1.0 / (batch * sp) as f64) as f32;
        assert_eq!(cpu.0[0], f32_sum_mean, "CPU mean of the channel starting with 2^24, spatial {sp}");
        assert_eq!(gpu.0[0], f32_sum_mean, "GPU mean of the channel starting with 2^24, spatial {sp}");
        let as64 = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<_>>();
        assert_close(&format!("darknet-cpu bn mean, spatial {sp}"), &gpu.0, &as64(&cpu.0), 1e-6, 1e-6);
        assert_close(&format!("darknet-cpu bn var, spatial {sp}"), &gpu.1, &as64(&cpu.1), 1e-6, 1e-6);
        assert_close(&format!("darknet-cpu bn y, spatial {sp}"), &gpu.2, &as64(&cpu.2), 1e-5, 1e-6);
    }
}

/// Mean, variance and output of a Darknet-CPU-stats training forward (gamma 1, beta 0).
fn bn_darknet_stats_on<B: Backend>(b: &B, hx: &[f32], batch: usize, ch: usize, sp: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let n = hx.len();
    let x = b.alloc(n);
    b.upload(&x, hx);
    let (y, xn, mean, var) = (b.alloc(n), b.alloc(n), b.alloc(ch), b.alloc(ch));
    let (rm, rv, gamma, beta) = (b.alloc(ch), b.alloc(ch), b.alloc(ch), b.alloc(ch));
    b.upload(&gamma, &vec![1.0; ch]);
    b.batchnorm_forward_train(&x, &y, &xn, &mean, &var, &rm, &rv, &gamma, &beta, batch, ch, sp, BnStats::DarknetCpu);
    (b.download(&mean), b.download(&var), b.download(&y))
}

#[test]
fn batchnorm_train_infer_backward() {
    let g = gpu_or_skip!();
    let (batch, ch, sp) = (2, 3, 157);
    let n = batch * ch * sp;
    let hx = data(n, 90, -2.0, 3.0);
    let gamma_h = data(ch, 91, 0.5, 1.5);
    let beta_h = data(ch, 92, -0.5, 0.5);
    let rm0 = data(ch, 93, -0.1, 0.1);
    let rv0 = data(ch, 94, 0.5, 1.0);
    let (x, gamma, beta, rm, rv) = (up(g, &hx), up(g, &gamma_h), up(g, &beta_h), up(g, &rm0), up(g, &rv0));
    let (y, xn, mean, var) = (g.alloc(n), g.alloc(n), g.alloc(ch), g.alloc(ch));
    g.batchnorm_forward_train(&x, &y, &xn, &mean, &var, &rm, &rv, &gamma, &beta, batch, ch, sp, BnStats::Accurate);

    let m = (batch * sp) as f64;
    let idx = |b: usize, c: usize, i: usize| (b * ch + c) * sp + i;
    let mut mean_r = vec![0.0; ch];
    let mut var_r = vec![0.0; ch];
    for c in 0..ch {
        let vals: Vec<f64> = (0..batch).flat_map(|b| (0..sp).map(move |i| (b, i))).map(|(b, i)| hx[idx(b, c, i)] as f64).collect();
        mean_r[c] = vals.iter().sum::<f64>() / m;
        var_r[c] = vals.iter().map(|v| (v - mean_r[c]).powi(2)).sum::<f64>() / (m - 1.0);
    }
    let xn_r: Vec<f64> = (0..n).map(|i| {
        let c = (i / sp) % ch;
        (hx[i] as f64 - mean_r[c]) / (var_r[c] + 1e-5).sqrt()
    }).collect();
    let y_r: Vec<f64> = (0..n).map(|i| gamma_h[(i / sp) % ch] as f64 * xn_r[i] + beta_h[(i / sp) % ch] as f64).collect();
    assert_close("bn mean", &g.download(&mean), &mean_r, 1e-5, 1e-6);
    assert_close("bn var", &g.download(&var), &var_r, 1e-5, 1e-6);
    assert_close("bn x_norm", &g.download(&xn), &xn_r, 1e-4, 1e-5);
    assert_close("bn y", &g.download(&y), &y_r, 1e-4, 1e-5);
    let rm_r: Vec<f64> = (0..ch).map(|c| 0.99 * rm0[c] as f64 + 0.01 * mean_r[c]).collect();
    let rv_r: Vec<f64> = (0..ch).map(|c| 0.99 * rv0[c] as f64 + 0.01 * var_r[c]).collect();
    assert_close("bn rolling_mean", &g.download(&rm), &rm_r, 1e-5, 1e-6);
    assert_close("bn rolling_var", &g.download(&rv), &rv_r, 1e-5, 1e-6);

    // Inference with the (updated) running statistics, in place (x aliases y).
    let yi = up(g, &hx);
    g.batchnorm_forward_infer(&yi, &yi, &rm, &rv, &gamma, &beta, batch, ch, sp);
    let yi_r: Vec<f64> = (0..n).map(|i| {
        let c = (i / sp) % ch;
        gamma_h[c] as f64 * (hx[i] as f64 - rm_r[c]) / (rv_r[c] + 1e-5).sqrt() + beta_h[c] as f64
    }).collect();
    assert_close("bn infer", &g.download(&yi), &yi_r, 1e-4, 1e-5);

    // Backward, dx aliasing dy.
    let hdy = data(n, 95, -1.0, 1.0);
    let dg0 = data(ch, 96, -1.0, 1.0);
    let dbt0 = data(ch, 97, -1.0, 1.0);
    let (dy, dgamma, dbeta) = (up(g, &hdy), up(g, &dg0), up(g, &dbt0));
    g.batchnorm_backward(&dy, &xn, &var, &gamma, &dgamma, &dbeta, &dy, batch, ch, sp, BnBackward::Exact);
    let mut sdy = vec![0.0; ch];
    let mut sdyxn = vec![0.0; ch];
    for i in 0..n {
        let c = (i / sp) % ch;
        sdy[c] += hdy[i] as f64;
        sdyxn[c] += hdy[i] as f64 * xn_r[i];
    }
    let dx_r: Vec<f64> = (0..n).map(|i| {
        let c = (i / sp) % ch;
        gamma_h[c] as f64 / (var_r[c] + 1e-5).sqrt() * (hdy[i] as f64 - sdy[c] / m - xn_r[i] * sdyxn[c] / (m - 1.0))
    }).collect();
    let dg_r: Vec<f64> = (0..ch).map(|c| dg0[c] as f64 + sdyxn[c]).collect();
    let db_r: Vec<f64> = (0..ch).map(|c| dbt0[c] as f64 + sdy[c]).collect();
    assert_close("bn dx", &g.download(&dy), &dx_r, 1e-3, 1e-4);
    assert_close("bn dgamma", &g.download(&dgamma), &dg_r, 1e-4, 1e-3);
    assert_close("bn dbeta", &g.download(&dbeta), &db_r, 1e-4, 1e-3);
}

fn act_ref(x: f64, a: Activation) -> f64 {
    let sig = |v: f64| 1.0 / (1.0 + (-v).exp());
    let softplus = |v: f64| if v > 20.0 { v } else if v < -20.0 { v.exp() } else { (v.exp() + 1.0).ln() };
    match a {
        Activation::Linear => x,
        Activation::Logistic => sig(x),
        Activation::Relu => x.max(0.0),
        Activation::Leaky => if x > 0.0 { x } else { 0.1 * x },
        Activation::Tanh => x.tanh(),
        Activation::Mish => x * softplus(x).tanh(),
        Activation::Swish => x * sig(x),
        Activation::HardMish => if x > 0.0 { x } else if x > -2.0 { x * x / 2.0 + x } else { 0.0 },
    }
}

fn act_grad_ref(x: f64, y: f64, a: Activation) -> f64 {
    let sig = |v: f64| 1.0 / (1.0 + (-v).exp());
    let softplus = |v: f64| if v > 20.0 { v } else if v < -20.0 { v.exp() } else { (v.exp() + 1.0).ln() };
    match a {
        Activation::Linear => 1.0,
        Activation::Logistic => y * (1.0 - y),
        Activation::Relu => if y > 0.0 { 1.0 } else { 0.0 },
        Activation::Leaky => if y > 0.0 { 1.0 } else { 0.1 },
        Activation::Tanh => 1.0 - y * y,
        Activation::Mish => {
            let sp = softplus(x);
            let t = sp.tanh();
            x * (1.0 - t * t) * (1.0 - (-sp).exp()) + t
        }
        Activation::Swish => {
            let s = sig(x);
            x * s + s * (1.0 - x * s)
        }
        Activation::HardMish => if x > 0.0 { 1.0 } else if x > -2.0 { x + 1.0 } else { 0.0 },
    }
}

#[test]
fn activations_forward_backward() {
    let g = gpu_or_skip!();
    let n = 611;
    let mut hx = data(n, 100, -8.0, 8.0);
    // Thresholds and saturation: softplus's ±20, hard-mish's −2, exp overflow.
    hx[..10].copy_from_slice(&[-25.0, -20.5, -19.5, -2.0, -1.999, 0.0, 19.5, 20.5, 25.0, 90.0]);
    let hdy = data(n, 101, -1.0, 1.0);
    let (x, dy) = (up(g, &hx), up(g, &hdy));
    let (y, dx) = (g.alloc(n), g.alloc(n));
    for a in Activation::ALL {
        g.activation_forward(&x, &y, a);
        let y_r: Vec<f64> = hx.iter().map(|&v| act_ref(v as f64, a)).collect();
        let yv = g.download(&y);
        assert_close(&format!("{a:?} forward"), &yv, &y_r, 2e-5, 2e-6);
        g.activation_backward(&x, &y, &dy, &dx, a);
        // The derivative from y uses the GPU's y (as the backend contract says).
        let dx_r: Vec<f64> = (0..n).map(|i| hdy[i] as f64 * act_grad_ref(hx[i] as f64, yv[i] as f64, a)).collect();
        assert_close(&format!("{a:?} backward"), &g.download(&dx), &dx_r, 5e-5, 5e-6);
    }
    // In place: y aliases x, dx aliases dy.
    let xi = up(g, &hx);
    g.activation_forward(&xi, &xi, Activation::Leaky);
    let want: Vec<f64> = hx.iter().map(|&v| act_ref(v as f64, Activation::Leaky)).collect();
    assert_close("leaky in place", &g.download(&xi), &want, 1e-6, 1e-7);
}

fn maxpool_ref(x: &[f32], dy: &[f32], s: &PoolShape) -> (Vec<f64>, Vec<f64>) {
    let off = (s.padding / 2) as isize;
    let mut y = vec![0.0; s.output_len()];
    let mut dx = vec![0.0; s.input_len()];
    for bc in 0..s.batch * s.c {
        for oy in 0..s.out_h {
            for ox in 0..s.out_w {
                let mut best = f32::MIN;
                let mut bi = usize::MAX;
                for n in 0..s.size {
                    for m in 0..s.size {
                        let iy = (oy * s.stride + n) as isize - off;
                        let ix = (ox * s.stride + m) as isize - off;
                        let valid = iy >= 0 && ix >= 0 && iy < s.h as isize && ix < s.w as isize;
                        let i = if valid { (bc * s.h + iy as usize) * s.w + ix as usize } else { usize::MAX };
                        let v = if valid { x[i] } else { f32::MIN };
                        if v > best {
                            best = v;
                            bi = i;
                        }
                    }
                }
                let o = (bc * s.out_h + oy) * s.out_w + ox;
                y[o] = best as f64;
                dx[bi] += dy[o] as f64;
            }
        }
    }
    (y, dx)
}

#[test]
fn maxpool_forward_backward() {
    let g = gpu_or_skip!();
    // batch, c, h, w, size, stride, padding (Darknet default padding = size − 1)
    for (i, s) in [
        PoolShape::new(2, 3, 13, 13, 2, 2, 1),
        PoolShape::new(1, 2, 8, 7, 2, 1, 1),
        PoolShape::new(1, 3, 9, 11, 3, 2, 2),
        PoolShape::new(2, 2, 10, 10, 5, 1, 4),
    ]
    .into_iter()
    .enumerate()
    {
        // Quantised values make ties, so "first maximum wins" is exercised.
        let hx: Vec<f32> = data(s.input_len(), 110 + i as u64, -4.0, 4.0).iter().map(|v| v.round()).collect();
        let hdy = data(s.output_len(), 120 + i as u64, -1.0, 1.0);
        let dx0 = data(s.input_len(), 130 + i as u64, -1.0, 1.0);
        let (x, dy, dx) = (up(g, &hx), up(g, &hdy), up(g, &dx0));
        let y = g.alloc(s.output_len());
        g.maxpool_forward(&x, &y, &s);
        g.maxpool_backward(&x, &dy, &dx, &s);
        let (y_r, dx_r) = maxpool_ref(&hx, &hdy, &s);
        assert_close(&format!("maxpool fwd {s:?}"), &g.download(&y), &y_r, 0.0, 0.0);
        let dx_r: Vec<f64> = dx_r.iter().zip(&dx0).map(|(a, &b)| a + b as f64).collect();
        assert_close(&format!("maxpool bwd {s:?}"), &g.download(&dx), &dx_r, 1e-6, 1e-6);
    }
}

#[test]
fn avgpool_upsample_reorg() {
    let g = gpu_or_skip!();
    let (batch, ch, sp) = (2, 3, 299);
    let hx = data(batch * ch * sp, 140, -1.0, 1.0);
    let x = up(g, &hx);
    let y = g.alloc(batch * ch);
    g.avgpool_forward(&x, &y, batch, ch, sp);
    let y_r: Vec<f64> = (0..batch * ch).map(|bc| hx[bc * sp..(bc + 1) * sp].iter().map(|&v| v as f64).sum::<f64>() / sp as f64).collect();
    assert_close("avgpool fwd", &g.download(&y), &y_r, 1e-5, 1e-6);
    let hdy = data(batch * ch, 141, -1.0, 1.0);
    let dy = up(g, &hdy);
    let dx = up(g, &hx);
    g.avgpool_backward(&dy, &dx, batch, ch, sp);
    let dx_r: Vec<f64> = (0..hx.len()).map(|i| hx[i] as f64 + hdy[i / sp] as f64 / sp as f64).collect();
    assert_close("avgpool bwd", &g.download(&dx), &dx_r, 1e-6, 1e-7);

    let s = UpsampleShape { batch: 2, c: 3, h: 5, w: 7, stride: 2, scale: 0.5 };
    let hx = data(s.input_len(), 150, -1.0, 1.0);
    let x = up(g, &hx);
    let y = g.alloc(s.output_len());
    g.upsample_forward(&x, &y, &s);
    let (oh, ow) = (s.h * s.stride, s.w * s.stride);
    let y_r: Vec<f64> = (0..s.output_len()).map(|o| {
        let bc = o / (oh * ow);
        let (oy, ox) = ((o % (oh * ow)) / ow, o % ow);
        0.5 * hx[(bc * s.h + oy / 2) * s.w + ox / 2] as f64
    }).collect();
    assert_close("upsample fwd", &g.download(&y), &y_r, 1e-6, 1e-7);
    let hdy = data(s.output_len(), 151, -1.0, 1.0);
    let dy = up(g, &hdy);
    let dx = up(g, &hx);
    g.upsample_backward(&dy, &dx, &s);
    let mut dx_r = f64s(&hx);
    for o in 0..s.output_len() {
        let bc = o / (oh * ow);
        let (oy, ox) = ((o % (oh * ow)) / ow, o % ow);
        dx_r[(bc * s.h + oy / 2) * s.w + ox / 2] += 0.5 * hdy[o] as f64;
    }
    assert_close("upsample bwd", &g.download(&dx), &dx_r, 1e-6, 1e-6);

    // reorg: Darknet reorg_cpu(forward = 0) with input dims: out[in_index] = x[out_index].
    let s = ReorgShape { batch: 2, c: 8, h: 6, w: 4, stride: 2 };
    let hx = data(s.len(), 160, -1.0, 1.0);
    let x = up(g, &hx);
    let y = g.alloc(s.len());
    g.reorg_forward(&x, &y, &s);
    let out_c = s.c / 4;
    let mut y_r = vec![0.0; s.len()];
    let mut pair = vec![0usize; s.len()];
    for b in 0..s.batch {
        for k in 0..s.c {
            for j in 0..s.h {
                for i in 0..s.w {
                    let in_index = i + s.w * (j + s.h * (k + s.c * b));
                    let (c2, offset) = (k % out_c, k / out_c);
                    let (w2, h2) = (i * 2 + offset % 2, j * 2 + offset / 2);
                    let out_index = w2 + s.w * 2 * (h2 + s.h * 2 * (c2 + out_c * b));
                    y_r[in_index] = hx[out_index] as f64;
                    pair[in_index] = out_index;
                }
            }
        }
    }
    assert_close("reorg fwd", &g.download(&y), &y_r, 0.0, 0.0);
    let hdy = data(s.len(), 161, -1.0, 1.0);
    let dy = up(g, &hdy);
    let dx = up(g, &hx);
    g.reorg_backward(&dy, &dx, &s);
    let mut dx_r = f64s(&hx);
    for i in 0..s.len() {
        dx_r[pair[i]] += hdy[i] as f64;
    }
    assert_close("reorg bwd", &g.download(&dx), &dx_r, 1e-6, 1e-7);
}

#[test]
fn route_copy_slices_and_scale_channels() {
    let g = gpu_or_skip!();
    let hs = data(3 * 50, 170, -1.0, 1.0);
    let hd = data(3 * 70, 171, -1.0, 1.0);
    let (src, dst) = (up(g, &hs), up(g, &hd));
    for accumulate in [false, true] {
        let s = SliceCopy { batch: 3, len: 23, src_stride: 50, src_offset: 27, dst_stride: 70, dst_offset: 5, accumulate };
        g.upload(&dst, &hd);
        g.copy_slices(&src, &dst, &s);
        let mut want = f64s(&hd);
        for b in 0..3 {
            for j in 0..23 {
                let v = hs[b * 50 + 27 + j] as f64;
                let d = &mut want[b * 70 + 5 + j];
                *d = if accumulate { *d + v } else { v };
            }
        }
        assert_close(&format!("copy_slices acc={accumulate}"), &g.download(&dst), &want, 1e-6, 1e-7);
    }

    let (batch, ch, sp) = (2, 3, 263);
    let n = batch * ch * sp;
    let hx = data(n, 172, -1.0, 1.0);
    let hsc = data(batch * ch, 173, -1.0, 1.0);
    let (x, sc) = (up(g, &hx), up(g, &hsc));
    let y = g.alloc(n);
    g.scale_channels_forward(&x, &sc, &y, batch, ch, sp);
    let y_r: Vec<f64> = (0..n).map(|i| hx[i] as f64 * hsc[i / sp] as f64).collect();
    assert_close("scale_channels fwd", &g.download(&y), &y_r, 1e-6, 1e-7);
    let hdy = data(n, 174, -1.0, 1.0);
    let dx0 = data(n, 175, -1.0, 1.0);
    let ds0 = data(batch * ch, 176, -1.0, 1.0);
    let (dy, dx, ds) = (up(g, &hdy), up(g, &dx0), up(g, &ds0));
    g.scale_channels_backward(&x, &sc, &dy, &dx, &ds, batch, ch, sp);
    let dx_r: Vec<f64> = (0..n).map(|i| dx0[i] as f64 + hdy[i] as f64 * hsc[i / sp] as f64).collect();
    let mut ds_r = f64s(&ds0);
    let mut abs = vec![1.0; batch * ch];
    for i in 0..n {
        ds_r[i / sp] += hdy[i] as f64 * hx[i] as f64;
        abs[i / sp] += (hdy[i] * hx[i]).abs() as f64;
    }
    assert_close("scale_channels dx", &g.download(&dx), &dx_r, 1e-6, 1e-6);
    assert_sum_close("scale_channels dscale", &g.download(&ds), &ds_r, &abs);
}

#[test]
fn dropout_matches_the_host_hash_bit_for_bit() {
    let g = gpu_or_skip!();
    let n = 4099;
    let p = 0.3f32;
    let seed = engine::rng::dropout_seed(42, 7, 3);
    let hx = data(n, 180, -1.0, 1.0);
    let x = up(g, &hx);
    let y = g.alloc(n);
    g.dropout_forward(&x, &y, p, seed);
    let yv = g.download(&y);
    let scale = 1.0 / (1.0 - p);
    for i in 0..n {
        let keep = engine::rng::dropout_keep(seed, i as u32, p);
        let want = if keep { hx[i] * scale } else { 0.0 };
        assert_eq!(yv[i], want, "dropout forward [{i}] (keep {keep})");
    }
    let dx0 = data(n, 181, -1.0, 1.0);
    let dx = up(g, &dx0);
    g.dropout_backward(&x, &dx, p, seed);
    let dxv = g.download(&dx);
    for i in 0..n {
        let keep = engine::rng::dropout_keep(seed, i as u32, p);
        let want = if keep { dx0[i] as f64 + hx[i] as f64 / (1.0 - p as f64) } else { dx0[i] as f64 };
        assert!((dxv[i] as f64 - want).abs() <= 1e-6, "dropout backward [{i}]: {} vs {want}", dxv[i]);
    }
}

#[test]
fn sgd_and_adam_updates() {
    let g = gpu_or_skip!();
    let n = 517;
    let hw = data(n, 190, -1.0, 1.0);
    let hu = data(n, 191, -1.0, 1.0);
    let (lr, mom, decay, batch) = (0.01f32, 0.9f32, 0.0005f32, 64.0f32);
    let (w, u) = (up(g, &hw), up(g, &hu));
    g.sgd_update(&w, &u, lr, mom, decay, batch);
    let mut w_r = Vec::new();
    let mut u_r = Vec::new();
    for i in 0..n {
        let uu = hu[i] as f64 + decay as f64 * batch as f64 * hw[i] as f64;
        w_r.push(hw[i] as f64 - lr as f64 / batch as f64 * uu);
        u_r.push(uu * mom as f64);
    }
    assert_close("sgd w", &g.download(&w), &w_r, 1e-6, 1e-7);
    assert_close("sgd upd", &g.download(&u), &u_r, 1e-5, 1e-7);

    let hm = data(n, 192, -0.1, 0.1);
    let hv = data(n, 193, 0.0, 0.1);
    let (w, u, m, v) = (up(g, &hw), up(g, &hu), up(g, &hm), up(g, &hv));
    let (b1, b2, eps, t) = (0.9f32, 0.999f32, 1e-6f32, 3u32);
    g.adam_update(&w, &u, &m, &v, lr, b1, b2, eps, decay, batch, t);
    let (b1d, b2d) = (b1 as f64, b2 as f64);
    let mut w_r = Vec::new();
    let mut m_r = Vec::new();
    let mut v_r = Vec::new();
    for i in 0..n {
        let d = hu[i] as f64 + decay as f64 * batch as f64 * hw[i] as f64;
        let mm = b1d * hm[i] as f64 + (1.0 - b1d) * d;
        let vv = b2d * hv[i] as f64 + (1.0 - b2d) * d * d;
        let mhat = mm / (1.0 - b1d.powi(t as i32));
        let vhat = vv / (1.0 - b2d.powi(t as i32));
        w_r.push(hw[i] as f64 - lr as f64 * mhat / (vhat.sqrt() + eps as f64));
        m_r.push(mm);
        v_r.push(vv);
    }
    assert_close("adam m", &g.download(&m), &m_r, 1e-5, 1e-7);
    assert_close("adam v", &g.download(&v), &v_r, 1e-4, 1e-8);
    assert_close("adam w", &g.download(&w), &w_r, 1e-5, 1e-6);
    assert!(g.download(&u).iter().all(|&x| x == 0.0), "adam zeroes upd");
}

#[test]
fn reductions_sum_sumsq_nonfinite() {
    let g = gpu_or_skip!();
    let out = g.alloc(7);
    for (i, n) in [0usize, 1, 255, 1000, 100_003].into_iter().enumerate() {
        let hx = data(n, 200 + i as u64, -1.0, 1.0);
        let x = up(g, &hx);
        g.sum_into(&x, &out, 1);
        g.sum_squares_into(&x, &out, 4);
        g.nonfinite_into(&x, &out, 6);
        let o = g.download(&out);
        let s: f64 = hx.iter().map(|&v| v as f64).sum();
        let sa: f64 = hx.iter().map(|&v| (v as f64).abs()).sum();
        let sq: f64 = hx.iter().map(|&v| (v as f64).powi(2)).sum();
        assert!((o[1] as f64 - s).abs() <= 1e-6 * sa + 1e-6, "sum n={n}: {} vs {s}", o[1]);
        assert!((o[4] as f64 - sq).abs() <= 1e-5 * sq + 1e-6, "sumsq n={n}: {} vs {sq}", o[4]);
        assert_eq!(o[6], 0.0, "nonfinite n={n}");
        assert_eq!([o[0], o[2], o[3], o[5]], [0.0; 4], "other slots untouched");
    }
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut hx = data(5000, 210, -1.0, 1.0);
        hx[4321] = bad;
        let x = up(g, &hx);
        g.nonfinite_into(&x, &out, 0);
        assert_eq!(g.download(&out)[0], 1.0, "nonfinite detects {bad}");
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
    g.add(&v, &b, &v);
    g.add(&v, &b, &v);
    let before = g.stats();
    for _ in 0..5 {
        g.add(&v, &b, &v);
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
    b.add(&a, &c, &d);
    put("add", Tol::Elem, b.download(&d));
    b.mul(&a, &c, &d);
    put("mul", Tol::Elem, b.download(&d));
    b.div(&a, &c, &d);
    put("div", Tol::Elem, b.download(&d));
    b.exp(&a, &d);
    put("exp", Tol::Trans, b.download(&d));
    b.log(&c, &d);
    put("log", Tol::Trans, b.download(&d));
    b.pow(&c, -1.3, &d);
    put("pow", Tol::Trans, b.download(&d));
    b.pow(&a, 2.0, &d);
    put("pow int", Tol::Trans, b.download(&d));
    b.axpy(0.3, &a, &d);
    b.scal(1.5, &d);
    put("axpy scal", Tol::Elem, b.download(&d));
    b.copy(&a, &d);
    b.fill(&a, -0.75);
    put("copy", Tol::Exact, b.download(&d));
    put("fill", Tol::Exact, b.download(&a));
    b.upload(&a, &data(n, 303, -2.0, 2.0));
    let (da, db) = (upb(b, &data(n, 304, -1.0, 1.0)), upb(b, &data(n, 305, -1.0, 1.0)));
    b.mul_backward(&a, &c, &g, &da, &db);
    b.div_backward(&a, &c, &g, &da, &db);
    b.exp_backward(&c, &g, &da);
    b.log_backward(&c, &g, &db);
    b.pow_backward(&c, 1.7, &g, &da);
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
    b.bias_add(&y, &bias, bt, ch, sp);
    put("bias_add", Tol::Elem, b.download(&y));
    b.bias_backward(&y, &bias, bt, ch, sp);
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
    let nn = cs.len();
    for (i, act) in [Activation::Leaky, Activation::Linear, Activation::Logistic, Activation::Mish, Activation::Swish].into_iter().enumerate() {
        let seed = 480 + 20 * i as u64;
        let x = upb(b, &data(nn, seed, -2.0, 3.0));
        let y = b.alloc(nn);
        let pre = needs_pre_activation(act).then(|| b.alloc(nn));
        let (xn, mean, var) = (b.alloc(nn), b.alloc(cs.channels), b.alloc(cs.channels));
        let (rm, rv) = (upb(b, &data(cs.channels, seed + 1, -0.1, 0.1)), upb(b, &data(cs.channels, seed + 2, 0.5, 1.0)));
        let (gamma, beta) = (upb(b, &data(cs.channels, seed + 3, 0.5, 1.5)), upb(b, &data(cs.channels, seed + 4, -0.5, 0.5)));
        let (dgamma, dbeta) = (upb(b, &data(cs.channels, seed + 5, -1.0, 1.0)), upb(b, &data(cs.channels, seed + 6, -1.0, 1.0)));
        let bn = BnTensors { x_norm: &xn, mean: &mean, var: &var, rolling_mean: &rm, rolling_var: &rv, gamma: &gamma, beta: &beta, dgamma: &dgamma, dbeta: &dbeta };
        b.batchnorm_activation_forward(&x, &y, pre.as_ref(), &bn, act, &cs, BnStats::Accurate);
        let delta = upb(b, &data(nn, seed + 7, -1.0, 1.0));
        let form = if i == 0 { BnBackward::DarknetCpu } else { BnBackward::Exact };
        b.activation_batchnorm_backward(&delta, &y, pre.as_ref(), &bn, act, &cs, form);
        let mut outs = vec![("y", &y), ("x_norm", &xn), ("mean", &mean), ("var", &var), ("rolling_mean", &rm), ("rolling_var", &rv)];
        outs.extend([("dx", &delta), ("dgamma", &dgamma), ("dbeta", &dbeta)]);
        if let Some(p) = &pre {
            outs.push(("pre-activation", p));
        }
        for (name, buf) in outs {
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
        b.conv_bias_activation_forward(&x, &w, &bias, &y, None, act, &s);
        put(&format!("conv_bias_activation {act:?}"), Tol::Sum, b.download(&y));
        let delta = upb(b, &data(s.output_len(), seed + 3, -1.0, 1.0));
        let dbias = upb(b, &data(s.filters, seed + 4, -1.0, 1.0));
        let cs = ChannelShape::new(s.batch, s.filters, s.out_h * s.out_w);
        b.activation_bias_backward(&delta, &y, None, &dbias, act, &cs);
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
    b.avgpool_forward(&x, &ap, 2, 3, 301);
    b.avgpool_backward(&ap, &x, 2, 3, 301);
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
    b.scale_channels_forward(&x, &sc, &ys, bt, ch, sp);
    let dx = upb(b, &data(bt * ch * sp, 444, -1.0, 1.0));
    let dsc = upb(b, &data(bt * ch, 445, -1.0, 1.0));
    b.scale_channels_backward(&x, &sc, &ys, &dx, &dsc, bt, ch, sp);
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
