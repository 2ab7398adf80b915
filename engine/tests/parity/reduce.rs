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
