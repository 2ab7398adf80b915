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
