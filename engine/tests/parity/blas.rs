//! Parity of shaders-wgsl/blas.wgsl: elementwise ops on buffer views against f64 loops; and the
//! wide kernels of every module (include/wide.wgsl) for any width.

use super::*;

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

    g.binary_forward(Binary::Add, &a, &b, &out);
    assert_close("add", &g.download(&out), &ew(&|i| fa[i] + fb[i]), 1e-6, 1e-7);
    g.binary_forward(Binary::Mul, &a, &b, &out);
    assert_close("mul", &g.download(&out), &ew(&|i| fa[i] * fb[i]), 1e-6, 1e-7);
    g.binary_forward(Binary::Div, &a, &b, &out);
    assert_close("div", &g.download(&out), &ew(&|i| fa[i] / fb[i]), 1e-6, 1e-7);
    g.unary_forward(Unary::Exp, &a, &out);
    assert_close("exp", &g.download(&out), &ew(&|i| fa[i].exp()), 2e-5, 1e-6);
    g.unary_forward(Unary::Log, &b, &out);
    assert_close("log", &g.download(&out), &ew(&|i| fb[i].ln()), 2e-5, 2e-6);
    g.unary_forward(Unary::Pow(1.7), &b, &out);
    assert_close("pow", &g.download(&out), &ew(&|i| fb[i].powf(1.7)), 2e-5, 1e-6);
    g.unary_forward(Unary::Pow(3.0), &a, &out); // negative base, odd integer exponent keeps the sign
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
    g.binary_forward(Binary::Add, &out, &a, &out);
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
    g.binary_backward(Binary::Mul, &a, &b, &gbuf, &da, &db);
    assert_close("mul_backward da", &g.download(&da), &ew(&|i| sa[i] + fg[i] * fb[i]), 1e-6, 1e-6);
    assert_close("mul_backward db", &g.download(&db), &ew(&|i| sb[i] + fg[i] * fa[i]), 1e-6, 1e-6);
    reset();
    g.binary_backward(Binary::Div, &a, &b, &gbuf, &da, &db);
    assert_close("div_backward da", &g.download(&da), &ew(&|i| sa[i] + fg[i] / fb[i]), 1e-5, 1e-6);
    assert_close("div_backward db", &g.download(&db), &ew(&|i| sb[i] - fg[i] * fa[i] / (fb[i] * fb[i])), 1e-5, 1e-6);
    reset();
    g.unary_backward(Unary::Exp, &b, &b, &gbuf, &da);
    assert_close("exp_backward", &g.download(&da), &ew(&|i| sa[i] + fg[i] * fb[i]), 1e-6, 1e-6);
    reset();
    g.unary_backward(Unary::Log, &b, &b, &gbuf, &da);
    assert_close("log_backward", &g.download(&da), &ew(&|i| sa[i] + fg[i] / fb[i]), 1e-5, 1e-6);
    reset();
    g.unary_backward(Unary::Pow(2.5), &b, &b, &gbuf, &da);
    assert_close("pow_backward", &g.download(&da), &ew(&|i| sa[i] + fg[i] * 2.5 * fb[i].powf(1.5)), 2e-5, 1e-5);

    // Floats around the views were never written.
    let all = g.download(&arena);
    assert!(all[..3].iter().all(|&x| x == 0.0) && all[3 + 6 * n..].iter().all(|&x| x == 0.0), "writes outside views");
}

// ---- the wide kernels (include/wide.wgsl) ----------------------------------------------------

/// Every wide kernel (fill, copy, copy_if_flagged, copy_slices) on `g`, at sizes that leave
/// partial workgroups and partial last groups of WIDE, the results as bits.
fn run_wide(g: &GpuBackend) -> Vec<Vec<u32>> {
    let mut out = Vec::new();
    for (i, n) in [1usize, 255, 257, 1023, 1025, 4099, 100_003].into_iter().enumerate() {
        let seed = 300 + 10 * i as u64;
        let (x, y, z) = (up(g, &data(n, seed, -3.0, 3.0)), up(g, &data(n, seed + 1, -1.0, 1.0)), g.alloc(n));
        g.fill(&z, 0.5);
        out.push(g.download(&z));
        g.copy(&x, &z);
        out.push(g.download(&z));
        let flag = g.alloc(1);
        for set in [0.0f32, 1.0] {
            g.fill(&flag, set);
            g.copy_if_flagged(&flag, &y, &z);
            out.push(g.download(&z));
        }
    }
    for accumulate in [false, true] {
        let (batch, len, src_stride, dst_stride) = (3, 1037, 2100, 1500);
        let src = up(g, &data(batch * src_stride, 340, -1.0, 1.0));
        let dst = up(g, &data(batch * dst_stride, 341, -1.0, 1.0));
        g.copy_slices(&src, &dst, &SliceCopy { batch, len, src_stride, src_offset: 63, dst_stride, dst_offset: 401, accumulate });
        out.push(g.download(&dst));
    }
    out.into_iter().map(|v| v.into_iter().map(f32::to_bits).collect()).collect()
}

/// The wide kernels give the same bits for any number of values per invocation (what each value
/// becomes is checked against f64 loops and the CPU by each kernel's own test, at the device's
/// width).
#[test]
fn wide_kernels_give_the_same_bits_for_any_width() {
    gpu_or_skip!();
    let make = |wide| GpuBackend::new(&AdapterSelector { wide: Some(wide), ..Default::default() }).expect("a second device");
    let one = run_wide(&make(1));
    for wide in [3, 4] {
        assert_eq!(run_wide(&make(wide)), one, "{wide} values per invocation differ from one");
    }
}
