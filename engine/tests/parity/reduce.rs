//! Parity of shaders-wgsl/reduce.wgsl: sum, sum of squares and the non-finite count.

use super::*;

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

/// The reduction trees summed by one invocation (CPU adapters' default) and by the whole
/// workgroup (GPUs') add the same values in the same order: whole-tensor sums, the bias gradient
/// and batch norm's statistics and backward come out bit for bit the same, at sizes with partial
/// chunks and several chunks per channel.
#[test]
fn serial_and_parallel_trees_give_the_same_bits() {
    gpu_or_skip!();
    let make = |serial| GpuBackend::new(&AdapterSelector { serial_trees: Some(serial), ..Default::default() }).expect("a second device");
    let run = |g: &GpuBackend| {
        let mut out = Vec::new();
        let sums = g.alloc(2);
        let hx = data(100_003, 230, -1.0, 1.0);
        let x = up(g, &hx);
        g.sum_into(&x, &sums, 0);
        g.sum_squares_into(&x, &sums, 1);
        out.push(g.download(&sums));
        for (batch, channels, spatial) in [(3, 5, 333), (2, 4, 4096), (4, 3, 17)] {
            let n = batch * channels * spatial;
            let (hx, hdy) = (data(n, 231, -2.0, 2.0), data(n, 232, -1.0, 1.0));
            let (x, dy) = (up(g, &hx), up(g, &hdy));
            let per_channel = |v: f32| up(g, &vec![v; channels]);
            let dbias = per_channel(0.0);
            g.bias_backward(&dy, &dbias, &ChannelShape::new(batch, channels, spatial));
            let (y, x_norm, dx) = (g.alloc(n), g.alloc(n), g.alloc(n));
            let (mean, var, rm, rv) = (per_channel(0.0), per_channel(0.0), per_channel(0.0), per_channel(1.0));
            let (gamma, beta, dgamma, dbeta) = (per_channel(1.5), per_channel(0.25), per_channel(0.0), per_channel(0.0));
            g.batchnorm_forward_train(&x, &y, &x_norm, &mean, &var, &rm, &rv, &gamma, &beta, batch, channels, spatial, BnStats::Accurate);
            g.batchnorm_backward(&dy, &x_norm, &var, &gamma, &dgamma, &dbeta, &dx, batch, channels, spatial, BnBackward::Exact);
            for b in [&dbias, &y, &mean, &var, &dx, &dgamma, &dbeta] {
                out.push(g.download(b));
            }
        }
        out.into_iter().map(|v| v.into_iter().map(f32::to_bits).collect::<Vec<u32>>()).collect::<Vec<_>>()
    };
    assert_eq!(run(&make(true)), run(&make(false)), "serial and parallel trees differ");
}
