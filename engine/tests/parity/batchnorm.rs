//! Parity of shaders-wgsl/batchnorm.wgsl: training/inference forward, backward and the Darknet-CPU statistics against f64 loops and the CPU twin.

use super::*;

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
