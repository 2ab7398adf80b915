//! Parity of shaders-wgsl/activation.wgsl: every activation forward and backward against f64 formulas.

use super::*;

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

/// Kernels built for the one activation they apply (CPU adapters' default: llvmpipe would
/// evaluate every arm of the activation switch) and built for any (GPUs') give the same bits,
/// forward and backward, for every activation, alone and fused after batch norm.
#[test]
fn activation_variants_give_the_same_bits() {
    gpu_or_skip!();
    let make = |v| GpuBackend::new(&AdapterSelector { act_variants: Some(v), ..Default::default() }).expect("a second device");
    let run = |g: &GpuBackend| {
        let mut out = Vec::new();
        let n = 611;
        let (x, dy) = (up(g, &data(n, 110, -8.0, 8.0)), up(g, &data(n, 111, -1.0, 1.0)));
        let (y, dx) = (g.alloc(n), g.alloc(n));
        let cs = ChannelShape::new(3, 5, 41);
        for a in Activation::ALL {
            g.activation_forward(&x, &y, a);
            g.activation_backward(&x, &y, &dy, &dx, a);
            out.push(g.download(&y));
            out.push(g.download(&dx));
            let case = BnCase::new(g, &cs, a, 120);
            case.run(g, &cs, a, BnBackward::Exact, Store::F32, |_| {});
            out.extend(case.outputs().into_iter().map(|(_, b)| g.download(b)));
        }
        out
    };
    let bits = |v: Vec<Vec<f32>>| v.into_iter().map(|t| t.into_iter().map(f32::to_bits).collect::<Vec<_>>()).collect::<Vec<_>>();
    assert_eq!(bits(run(&make(true))), bits(run(&make(false))));
}
