//! Parity of shaders-wgsl/conv.wgsl (forward, backward data, backward weights, split-K) against f64 loops.

use super::*;

/// The f64 forward: every output the sum of its taps in the plain order.
fn conv_ref(x: &[f32], w: &[f32], s: &ConvShape) -> Vec<f64> {
    let mut y = vec![0.0; s.output_len()];
    common::conv_taps(s, |xi, wi, yi| y[yi] += x[xi] as f64 * w[wi] as f64);
    y
}

/// (dx, dw) contributions of conv for upstream gradient dy, plus |·| sums for tolerances.
fn conv_grads_ref(x: &[f32], w: &[f32], dy: &[f32], s: &ConvShape) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
    let (mut dx, mut dxa) = (vec![0.0; s.input_len()], vec![0.0; s.input_len()]);
    let (mut dw, mut dwa) = (vec![0.0; s.weight_len()], vec![0.0; s.weight_len()]);
    common::conv_taps(s, |xi, wi, yi| {
        let d = dy[yi] as f64;
        dx[xi] += d * w[wi] as f64;
        dxa[xi] += (d * w[wi] as f64).abs();
        dw[wi] += d * x[xi] as f64;
        dwa[wi] += (d * x[xi] as f64).abs();
    });
    (dx, dxa, dw, dwa)
}

/// What a checked convolution gave: the operands, the starting gradients and the GPU's results,
/// with the forward's K and the gradients' |·| sums (the tolerances), for further comparisons.
pub(super) struct ConvRun {
    pub hx: Vec<f32>,
    pub hw: Vec<f32>,
    pub hdy: Vec<f32>,
    pub dx0: Vec<f32>,
    pub dw0: Vec<f32>,
    pub y: Vec<f32>,
    pub dx: Vec<f32>,
    pub dw: Vec<f32>,
    pub k: f64,
    pub dxa: Vec<f64>,
    pub dwa: Vec<f64>,
}

/// Forward, backward data and backward weights of `s` on the GPU against f64 loops, on seeded
/// data passed through `prep` (the identity, or mixed precision's rounding to f16); `label`
/// names the case in failures.
pub(super) fn check_conv(g: &GpuBackend, s: ConvShape, seed: u64, label: &str, prep: fn(f32) -> f32) -> ConvRun {
    let operand = |n, seed, lo, hi| data(n, seed, lo, hi).into_iter().map(prep).collect::<Vec<f32>>();
    let hx = operand(s.input_len(), seed, -1.0, 1.0);
    let hw = operand(s.weight_len(), seed + 1, -0.5, 0.5);
    let hdy = operand(s.output_len(), seed + 2, -1.0, 1.0);
    let (x, w, dy) = (up(g, &hx), up(g, &hw), up(g, &hdy));
    let y = g.alloc(s.output_len());
    g.fill(&y, 7.0); // overwritten, not accumulated
    g.conv_forward(&x, &w, &y, &s);
    let want = conv_ref(&hx, &hw, &s);
    // Reference |·| sums for the forward: Σ|x·w| ≤ K·max; use a plain tolerance on K terms.
    let k = (s.c / s.groups * s.size * s.size) as f64;
    let gy = g.download(&y);
    assert_close(&format!("conv_forward{label} {s:?}"), &gy, &want, 1e-4, 1e-6 * k);

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
    let (gdx, gdw) = (g.download(&dx), g.download(&dw));
    assert_sum_close(&format!("conv_backward_data{label} {s:?}"), &gdx, &dx_want, &dxa);
    assert_sum_close(&format!("conv_backward_weights{label} {s:?}"), &gdw, &dw_want, &dwa);
    ConvRun { hx, hw, hdy, dx0, dw0, y: gy, dx: gdx, dw: gdw, k, dxa, dwa }
}

fn conv_case(g: &GpuBackend, s: ConvShape, seed: u64) {
    check_conv(g, s, seed, "", |v| v);
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
