//! Parity of shaders-wgsl/half.wgsl: rounding to f16 agrees with the CPU twin bit for bit, on
//! every midpoint between neighbouring f16 values (where the tie rule decides), just off them,
//! across the subnormal range, at the overflow edge and on Inf/NaN, in place and into a view.

use super::*;

#[test]
fn round_f16_matches_the_cpu_bit_for_bit() {
    let g = gpu_or_skip!();
    let mut hx: Vec<f32> = Vec::new();
    for h in (0..0x7bffu32).step_by(7) {
        // f16 values by construction: the CPU twin keeps them, so their neighbours' midpoints
        // are the f32 halfway values.
        let lo = engine::cpu::round_f16(f16_value(h));
        let hi = engine::cpu::round_f16(f16_value(h + 1));
        let mid = ((lo as f64 + hi as f64) / 2.0) as f32;
        for v in [lo, mid, f32::from_bits(mid.to_bits() - 1), f32::from_bits(mid.to_bits() + 1)] {
            hx.extend([v, -v]);
        }
    }
    hx.extend([65504.0, 65519.99, 65520.0, 1e30, -1e30, f32::INFINITY, f32::NEG_INFINITY, 1e-30, 2f32.powi(-25), 2.9e-8, 0.0, -0.0]);
    hx.extend(data(4099, 9, -70000.0, 70000.0));
    hx.extend(data(4099, 10, -1e-4, 1e-4));
    let want: Vec<u32> = hx.iter().map(|&v| engine::cpu::round_f16(v).to_bits()).collect();
    let x = up(g, &hx);
    let out = g.alloc(hx.len());
    g.round_f16(&x, &out);
    assert_bits("into another buffer", &g.download(&out), &want);
    g.round_f16(&x, &x);
    assert_bits("in place", &g.download(&x), &want);
    let nan = up(g, &[f32::NAN]);
    g.round_f16(&nan, &nan);
    assert!(g.download(&nan)[0].is_nan(), "NaN stays NaN");
}

/// `upload_f16` (mixed precision's input upload: f16 values two to a word, unpacked on the
/// device) leaves what `upload` and then `round_f16` leave, bit for bit: on every f16 value and
/// the values around them, subnormals, the overflow edge and Inf, with pairs whose word reads as
/// an f32 NaN or subnormal, an odd count, and into a view that starts past a buffer's start
/// (the floats around it keep their values). NaN comes back as NaN.
#[test]
fn upload_f16_equals_upload_then_round_f16() {
    let g = gpu_or_skip!();
    let mut hx: Vec<f32> = Vec::new();
    for h in (0..0x7c00u32).step_by(5) {
        let v = f16_value(h);
        hx.extend([v, -v, f32::from_bits(v.to_bits() + 1), -f32::from_bits(v.to_bits().saturating_sub(1))]);
    }
    // The word 0x0000_0001 reads as an f32 subnormal (value 2w in the low half); the NaN case
    // below makes a word that reads as an f32 NaN.
    hx.extend([f16_value(1), 0.0, -0.0, f16_value(1)]);
    hx.extend([65504.0, 65519.99, 65520.0, 1e30, -1e30, f32::INFINITY, f32::NEG_INFINITY, 1e-30, 2f32.powi(-25), 0.0, -0.0]);
    hx.extend(data(4099, 11, -70000.0, 70000.0));
    hx.extend(data(40_001, 12, 0.0, 1.0));
    assert!(hx.len() % 2 == 1, "an odd count: the last word has one value");
    let want: Vec<u32> = hx.iter().map(|&v| engine::cpu::round_f16(v).to_bits()).collect();
    let whole = up(g, &vec![7.5; hx.len() + 6]);
    let view = g.view(&whole, 3, hx.len());
    g.upload_f16(&view, &hx);
    let got = g.download(&whole);
    assert_bits("upload_f16", &got[3..3 + hx.len()], &want);
    assert!(got[..3].iter().chain(&got[3 + hx.len()..]).all(|&v| v == 7.5), "floats around the view changed");
    let nan = g.alloc(3);
    g.upload_f16(&nan, &[1.0, f32::NAN, -2.0]);
    let n = g.download(&nan);
    assert!(n[0] == 1.0 && n[1].is_nan() && n[2] == -2.0, "{n:?}");
}

fn assert_bits(what: &str, got: &[f32], want: &[u32]) {
    for (i, (g, &w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.to_bits(), w, "{what}[{i}]: gpu {g:e} vs cpu {:e}", f32::from_bits(w));
    }
}

/// An f16 bit pattern's value: sign · mantissa · 2^exponent (finite patterns).
fn f16_value(h: u32) -> f32 {
    let e = ((h >> 10) & 0x1f) as i32;
    let m = (h & 0x3ff) as f64;
    (if e == 0 { m * 2f64.powi(-24) } else { (1.0 + m / 1024.0) * 2f64.powi(e - 15) }) as f32
}

/// The composite conv ops with `Store::F16` equal, bit for bit, the same ops with `Store::F32`
/// and a `round_f16` pass wherever mixed precision stores in f16: the forward's output after the
/// op, the backward's incoming gradient before it and its outgoing gradient after it. On the GPU
/// this checks batchnorm.wgsl's rounding as it reads and writes against half.wgsl's pass; on
/// the CPU, the composites' rounding against the same passes. Every other output (x_norm, the
/// statistics, dgamma/dbeta, dbias, the pre-activation) is unchanged, also bit for bit.
#[test]
fn composites_store_f16_as_rounding_passes() {
    let g = gpu_or_skip!();
    stores_equal_rounding_passes(g, "gpu");
    stores_equal_rounding_passes(&CpuBackend::new(), "cpu");
}

fn stores_equal_rounding_passes<B: Backend>(b: &B, name: &str) {
    for (i, act) in [Activation::Leaky, Activation::Linear, Activation::Mish].into_iter().enumerate() {
        let fused = composite_outputs(b, act, 700 + 10 * i as u64, true);
        let passes = composite_outputs(b, act, 700 + 10 * i as u64, false);
        for ((what, f), (_, p)) in fused.iter().zip(&passes) {
            let rounded = f.iter().filter(|v| engine::cpu::round_f16(**v).to_bits() == v.to_bits()).count();
            assert_eq!(f.len(), p.len(), "{name} {what} {act:?}");
            for (k, (x, y)) in f.iter().zip(p).enumerate() {
                assert_eq!(x.to_bits(), y.to_bits(), "{name} {what} {act:?}[{k}]: Store::F16 {x:e}, rounding passes {y:e}");
            }
            // The stored outputs must hold f16 values (else neither side rounded).
            if what.contains(" stored ") {
                assert_eq!(rounded, f.len(), "{name} {what} {act:?} holds only f16 values");
            }
        }
    }
}

/// Every output of the BN composite (forward and backward) and of the bias composite, stored in
/// f16: by the ops themselves (`fused`) or by `round_f16` passes around `Store::F32` ops. Labels
/// of tensors mixed precision stores in f16 start with "stored".
fn composite_outputs<B: Backend>(b: &B, act: Activation, seed: u64, fused: bool) -> Vec<(String, Vec<f32>)> {
    use engine::backend::Store;
    let store = if fused { Store::F16 } else { Store::F32 };
    let round = |buf: &B::Buf| {
        if !fused {
            b.round_f16(buf, buf);
        }
    };
    let cs = ChannelShape::new(3, 6, 47);
    let c = BnCase::new(b, &cs, act, seed);
    c.run(b, &cs, act, BnBackward::Exact, store, round);
    let stored = |n: &str| if n == "y" || n == "dx" { format!("batchnorm stored {n}") } else { format!("batchnorm {n}") };
    let mut got: Vec<(String, Vec<f32>)> = c.outputs().into_iter().map(|(n, buf)| (stored(n), b.download(buf))).collect();

    let s = ConvShape::new(2, 8, 7, 6, 19, 3, 1, 1, 1);
    let cx = upb(b, &data(s.input_len(), seed + 8, -1.0, 1.0).iter().map(|&v| engine::cpu::round_f16(v)).collect::<Vec<_>>());
    let w = upb(b, &data(s.weight_len(), seed + 9, -0.5, 0.5).iter().map(|&v| engine::cpu::round_f16(v)).collect::<Vec<_>>());
    let bias = upb(b, &data(s.filters, seed + 10, -1.0, 1.0));
    let cy = b.alloc(s.output_len());
    let cpre = needs_pre_activation(act).then(|| b.alloc(s.output_len()));
    b.conv_bias_activation_forward(&cx, &w, &bias, &cy, cpre.as_ref(), act, &s, store);
    round(&cy);
    let ccs = ChannelShape::new(s.batch, s.filters, s.out_h * s.out_w);
    let (cdelta, dbias) = (upb(b, &data(s.output_len(), seed + 11, -1.0, 1.0)), upb(b, &data(s.filters, seed + 12, -1.0, 1.0)));
    round(&cdelta);
    b.activation_bias_backward(&cdelta, &cy, cpre.as_ref(), &dbias, act, &ccs, store);
    round(&cdelta);
    let mut conv = vec![("stored y", &cy), ("stored dx", &cdelta), ("dbias", &dbias)];
    conv.extend(cpre.as_ref().map(|p| ("pre-activation", p)));
    got.extend(conv.into_iter().map(|(n, buf)| (format!("conv_bias_activation {n}"), b.download(buf))));
    got
}
