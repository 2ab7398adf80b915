//! Convolution, conv bias and batch normalisation checks.

use super::*;
use engine::shapes::{BnBackward, BnStats, ChannelShape, ConvShape};

// ---- convolution --------------------------------------------------------------------------------

/// Direct convolution in f64: y, and for a given dy the data and weight gradients.
fn conv_naive(s: &ConvShape, x: &[f32], w: &[f32], dy: &[f32]) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let mut y = vec![0.0f64; s.output_len()];
    let mut dx = vec![0.0f64; s.input_len()];
    let mut dw = vec![0.0f64; s.weight_len()];
    common::conv_taps(s, |xi, wi, yi| {
        y[yi] += x[xi] as f64 * w[wi] as f64;
        dx[xi] += w[wi] as f64 * dy[yi] as f64;
        dw[wi] += x[xi] as f64 * dy[yi] as f64;
    });
    (y, dx, dw)
}

#[allow(clippy::too_many_arguments)]
fn conv_shape(batch: usize, c: usize, h: usize, w: usize, filters: usize, size: usize, stride: usize, pad: usize, groups: usize) -> ConvShape {
    ConvShape::new(batch, c, h, w, filters, size, stride, pad, groups)
}

fn conv_shapes() -> Vec<ConvShape> {
    vec![
        conv_shape(2, 3, 7, 5, 4, 3, 1, 1, 1),  // odd sizes, pad 1
        conv_shape(2, 3, 7, 5, 4, 3, 1, 0, 1),  // pad 0
        conv_shape(1, 4, 7, 5, 6, 3, 2, 1, 2),  // groups 2, stride 2
        conv_shape(2, 4, 6, 6, 4, 3, 2, 0, 2),  // groups 2, stride 2, pad 0
        conv_shape(2, 5, 4, 3, 3, 1, 1, 0, 1),  // 1×1 direct path
        conv_shape(1, 4, 5, 5, 6, 1, 1, 0, 2),  // 1×1 grouped
        conv_shape(1, 2, 5, 7, 3, 1, 2, 0, 1),  // 1×1 stride 2 (im2col path)
        conv_shape(1, 2, 6, 5, 2, 2, 2, 0, 1),  // even kernel (size 2)
    ]
}

#[test]
fn conv_forward_and_backward_match_naive() {
    let mut shapes = conv_shapes();
    shapes.push(conv_shape(2, 16, 13, 13, 32, 3, 1, 1, 1)); // yolov4-tiny-like, threaded gemm
    shapes.push(conv_shape(1, 32, 13, 13, 16, 1, 1, 0, 1));
    for s in shapes {
        let name = format!("conv naive {}x{}x{} f{} k{} s{} p{} g{}", s.c, s.h, s.w, s.filters, s.size, s.stride, s.pad, s.groups);
        let be = CpuBackend::new();
        let mut rng = Rng::new(&name);
        let (x, w, dy) = (rng.vec(s.input_len(), -1.0, 1.0), rng.vec(s.weight_len(), -1.0, 1.0), rng.vec(s.output_len(), -1.0, 1.0));
        let (want_y, want_dx, want_dw) = conv_naive(&s, &x, &w, &dy);
        let (bx, bw, bdy) = (upload(&be, &x), upload(&be, &w), upload(&be, &dy));
        let y = upload(&be, &vec![f32::NAN; s.output_len()]); // must be overwritten
        be.conv_forward(&bx, &bw, &y, &s);
        assert_close(&format!("{name} y"), &be.download(&y), &want_y, 1e-5);
        let (pre_dx, pre_dw) = (rng.vec(s.input_len(), -1.0, 1.0), rng.vec(s.weight_len(), -1.0, 1.0));
        let (dx, dw) = (upload(&be, &pre_dx), upload(&be, &pre_dw));
        be.conv_backward_data(&bdy, &bw, &dx, &s);
        be.conv_backward_weights(&bx, &bdy, &dw, &s);
        let add = |want: &[f64], pre: &[f32]| -> Vec<f64> { want.iter().zip(pre).map(|(w, &p)| w + p as f64).collect() };
        assert_close(&format!("{name} dx"), &be.download(&dx), &add(&want_dx, &pre_dx), 1e-5);
        assert_close(&format!("{name} dw"), &be.download(&dw), &add(&want_dw, &pre_dw), 1e-5);
    }
}

#[test]
fn conv_gradients() {
    for s in conv_shapes() {
        let name = format!("conv {}x{}x{} f{} k{} s{} p{} g{} b{}", s.c, s.h, s.w, s.filters, s.size, s.stride, s.pad, s.groups, s.batch);
        let mut rng = Rng::new(&name);
        let (x, w) = (rng.vec(s.input_len(), -1.0, 1.0), rng.vec(s.weight_len(), -1.0, 1.0));
        gradcheck(&name, &[x, w], &[(0, Acc), (1, Acc)], 1e-3,
            |be, i| { let y = be.alloc(s.output_len()); be.conv_forward(&i[0], &i[1], &y, &s); vec![y] },
            |be, i, _, dy, g| {
                be.conv_backward_data(dy, &i[1], &g[0], &s);
                be.conv_backward_weights(&i[0], dy, &g[1], &s);
            });
    }
}

#[test]
fn bias_gradient() {
    let (b, c, sp) = (2, 3, 5);
    let mut rng = Rng::new("bias");
    let (y0, bias) = (rng.vec(b * c * sp, -1.0, 1.0), rng.vec(c, -1.0, 1.0));
    gradcheck("bias_add", &[y0, bias], &[(1, Acc)], 1e-3,
        |be, i| { let y = be.alloc(b * c * sp); be.copy(&i[0], &y); be.bias_add(&y, &i[1], &ChannelShape::new(b, c, sp)); vec![y] },
        |be, _, _, dy, g| be.bias_backward(dy, &g[1], &ChannelShape::new(b, c, sp)));
}

// ---- batch normalisation ------------------------------------------------------------------------

const BN_EPS: f64 = 1e-5;

#[test]
fn batchnorm_gradients() {
    for (b, c, sp) in [(2, 3, 20), (1, 2, 9), (4, 2, 1)] {
        let n = b * c * sp;
        let name = format!("batchnorm b{b} c{c} spatial{sp}");
        let mut rng = Rng::new(&name);
        let x = rng.vec(n, -1.0, 2.0);
        let gamma = rng.vec(c, 0.5, 1.5);
        let beta = rng.vec(c, -0.5, 0.5);
        gradcheck(&name, &[x, gamma, beta], &[(0, Over), (1, Acc), (2, Acc)], 1e-3,
            |be, i| {
                let (y, xn) = (be.alloc(n), be.alloc(n));
                let (mean, var, rm, rv) = (be.alloc(c), be.alloc(c), be.alloc(c), be.alloc(c));
                be.batchnorm_forward_train(&i[0], &y, &xn, &mean, &var, &rm, &rv, &i[1], &i[2], b, c, sp, BnStats::Accurate);
                vec![y, xn, var]
            },
            |be, i, s, dy, g| be.batchnorm_backward(dy, &s[1], &s[2], &i[1], &g[1], &g[2], &g[0], b, c, sp, BnBackward::Exact));
    }
}

#[test]
fn batchnorm_forward_matches_formula_and_running_stats() {
    let (b, c, sp) = (3, 4, 6);
    let n = b * c * sp;
    let be = CpuBackend::new();
    let mut rng = Rng::new("batchnorm forward");
    let x = rng.vec(n, -1.0, 3.0);
    let (gamma, beta) = (rng.vec(c, 0.5, 1.5), rng.vec(c, -0.5, 0.5));
    let (rm0, rv0) = (rng.vec(c, -1.0, 1.0), rng.vec(c, 0.1, 2.0));
    // Reference in f64: unbiased variance, eps inside the root, r = 0.99 r + 0.01 stat.
    let (mut mean, mut var) = (vec![0.0f64; c], vec![0.0f64; c]);
    let idx = |bi: usize, ci: usize, i: usize| (bi * c + ci) * sp + i;
    for ci in 0..c {
        let vals: Vec<f64> = (0..b).flat_map(|bi| (0..sp).map(move |i| (bi, i))).map(|(bi, i)| x[idx(bi, ci, i)] as f64).collect();
        mean[ci] = vals.iter().sum::<f64>() / vals.len() as f64;
        var[ci] = vals.iter().map(|v| (v - mean[ci]).powi(2)).sum::<f64>() / (vals.len() - 1) as f64;
    }
    let mut want_xn = vec![0.0f64; n];
    let mut want_y = vec![0.0f64; n];
    for i in 0..n {
        let ci = (i / sp) % c;
        want_xn[i] = (x[i] as f64 - mean[ci]) / (var[ci] + BN_EPS).sqrt();
        want_y[i] = gamma[ci] as f64 * want_xn[i] + beta[ci] as f64;
    }
    let want_rm: Vec<f64> = (0..c).map(|ci| 0.99 * rm0[ci] as f64 + 0.01 * mean[ci]).collect();
    let want_rv: Vec<f64> = (0..c).map(|ci| 0.99 * rv0[ci] as f64 + 0.01 * var[ci]).collect();

    // x aliases y (allowed): run in place.
    let bx = upload(&be, &x);
    let (xn, bm, bv) = (be.alloc(n), be.alloc(c), be.alloc(c));
    let (rm, rv, bg, bb) = (upload(&be, &rm0), upload(&be, &rv0), upload(&be, &gamma), upload(&be, &beta));
    be.batchnorm_forward_train(&bx, &bx, &xn, &bm, &bv, &rm, &rv, &bg, &bb, b, c, sp, BnStats::Accurate);
    assert_close("batchnorm mean", &be.download(&bm), &mean, 1e-6);
    assert_close("batchnorm unbiased var", &be.download(&bv), &var, 1e-6);
    assert_close("batchnorm x_norm", &be.download(&xn), &want_xn, 1e-5);
    assert_close("batchnorm y (in place)", &be.download(&bx), &want_y, 1e-5);
    assert_close("batchnorm rolling mean", &be.download(&rm), &want_rm, 1e-6);
    assert_close("batchnorm rolling var", &be.download(&rv), &want_rv, 1e-6);

    // Inference with the running statistics.
    let bx = upload(&be, &x);
    let y = be.alloc(n);
    be.batchnorm_forward_infer(&bx, &y, &rm, &rv, &bg, &bb, b, c, sp);
    let want: Vec<f64> = (0..n)
        .map(|i| {
            let ci = (i / sp) % c;
            gamma[ci] as f64 * (x[i] as f64 - want_rm[ci]) / (want_rv[ci] + BN_EPS).sqrt() + beta[ci] as f64
        })
        .collect();
    assert_close("batchnorm infer", &be.download(&y), &want, 1e-5);

    // Backward with dx aliasing dy equals the non-aliased result.
    let dy = rng.vec(n, -1.0, 1.0);
    let run = |alias: bool| {
        let (bdy, dg, db) = (upload(&be, &dy), be.alloc(c), be.alloc(c));
        let dx = if alias { bdy.clone() } else { be.alloc(n) };
        be.batchnorm_backward(&bdy, &xn, &bv, &bg, &dg, &db, &dx, b, c, sp, BnBackward::Exact);
        be.download(&dx)
    };
    assert_eq!(run(true), run(false), "batchnorm backward in place differs");
}
