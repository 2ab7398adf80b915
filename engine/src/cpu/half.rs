//! Mixed precision (issue 15): rounding f32 values to the nearest f16 value, kept as f32
//! (shaders-wgsl/half.wgsl, the same integer algorithm, so the two agree bit for bit).

use super::par::{CHUNK, Inout, Par};

/// `v` rounded to the nearest f16 value (ties to even), as f32: what an f32 → f16 → f32
/// conversion gives. Beyond f16's range (at or past 65520) the result is ±Inf; NaN stays NaN.
pub fn round_f16(v: f32) -> f32 {
    let bits = v.to_bits();
    let sign = bits & 0x8000_0000;
    let a = bits & 0x7fff_ffff;
    if a >= 0x7f80_0000 {
        return v;
    }
    if a >= 0x477f_f000 {
        return f32::from_bits(sign | 0x7f80_0000);
    }
    if a < 0x3380_0000 {
        // Below 2^-24, the smallest f16 subnormal: above half of it rounds up to it, the rest
        // (the tie at 2^-25 included: to even) to zero.
        return f32::from_bits(if a > 0x3300_0000 { sign | 0x3380_0000 } else { sign });
    }
    let e = (a >> 23) as i32 - 127;
    // Mantissa bits f16 cannot keep: 13 for normals (exponent ≥ −14), more for subnormals.
    let drop = if e < -14 { (13 + (-14 - e)) as u32 } else { 13 };
    let mask = (1u32 << drop) - 1;
    let half = 1u32 << (drop - 1);
    let rem = a & mask;
    let mut r = a & !mask;
    if rem > half || (rem == half && (r >> drop) & 1 == 1) {
        // May carry into the exponent: still the right value.
        r += 1 << drop;
    }
    f32::from_bits(sign | r)
}

/// out = round_f16(x) elementwise (out may be x itself).
pub(super) fn round_slice(par: &Par, io: Inout<'_>) {
    match io {
        Inout::Same(y) => par.chunks(y, CHUNK, |_, y| {
            for v in y {
                *v = round_f16(*v);
            }
        }),
        Inout::Split(x, y) => par.chunks(y, CHUNK, |r, y| {
            for (v, &xv) in y.iter_mut().zip(&x[r]) {
                *v = round_f16(xv);
            }
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::round_f16;

    /// The f32 value of an f16 bit pattern (finite patterns only), computed independently of
    /// the rounding: sign · mantissa · 2^exponent.
    fn f16_value(h: u16) -> f32 {
        let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
        let e = ((h >> 10) & 0x1f) as i32;
        let m = (h & 0x3ff) as f64;
        let v = if e == 0 { m * 2f64.powi(-24) } else { (1.0 + m / 1024.0) * 2f64.powi(e - 15) };
        (sign * v) as f32
    }

    #[test]
    fn every_f16_value_is_kept_and_every_midpoint_goes_to_the_even_neighbour() {
        for h in 0..0x7c00u16 {
            for s in [0u16, 0x8000] {
                let v = f16_value(h | s);
                assert_eq!(round_f16(v).to_bits(), v.to_bits(), "{:#06x} = {v:e} is an f16 value", h | s);
            }
            if h + 1 < 0x7c00 {
                // Halfway to the next f16 value: the neighbour with an even mantissa wins.
                let (lo, hi) = (f16_value(h) as f64, f16_value(h + 1) as f64);
                let mid = ((lo + hi) / 2.0) as f32;
                let even = if h % 2 == 0 { lo } else { hi } as f32;
                assert_eq!(round_f16(mid), even, "midpoint of {h:#06x} and the next");
                // Just off the midpoint: the nearer neighbour.
                assert_eq!(round_f16(f32::from_bits(mid.to_bits() - 1)), lo as f32, "below the midpoint of {h:#06x}");
                assert_eq!(round_f16(f32::from_bits(mid.to_bits() + 1)), hi as f32, "above the midpoint of {h:#06x}");
            }
        }
    }

    /// Mixed precision's GPU input upload converts with the `half` crate (hardware conversion
    /// where the CPU has it): every value must come back as round_f16 leaves it.
    #[test]
    fn the_half_crate_converts_as_round_f16_rounds() {
        let check = |v: f32| {
            let h = half::f16::from_f32(v).to_f32();
            if v.is_nan() {
                assert!(h.is_nan());
            } else {
                assert_eq!(h.to_bits(), round_f16(v).to_bits(), "{v:e} ({:#010x})", v.to_bits());
            }
        };
        for h in 0..0x7c00u16 {
            for s in [0u16, 0x8000] {
                let v = f16_value(h | s);
                check(v);
                check(f32::from_bits(v.to_bits() + 1));
                check(f32::from_bits(v.to_bits().saturating_sub(1)));
            }
            if h + 1 < 0x7c00 {
                let mid = ((f16_value(h) as f64 + f16_value(h + 1) as f64) / 2.0) as f32;
                check(mid);
                check(-mid);
            }
        }
        for v in [65504.0, 65519.996, 65520.0, 1e30, f32::INFINITY, 1e-30, 2f32.powi(-25), 2f32.powi(-24) * 0.5001] {
            check(v);
            check(-v);
        }
        // The slice conversion (the SIMD path the upload takes) agrees with the scalar one.
        let xs: Vec<f32> = (0..4099u32).map(|i| f32::from_bits(i.wrapping_mul(2_654_435_761) & 0x7f7f_ffff) * if i % 3 == 0 { -1.0 } else { 1.0 }).collect();
        let mut hs = vec![half::f16::ZERO; xs.len()];
        half::slice::HalfFloatSliceExt::convert_from_f32_slice(&mut hs[..], &xs);
        for (x, h) in xs.iter().zip(&hs) {
            assert_eq!(h.to_f32().to_bits(), round_f16(*x).to_bits(), "{x:e}");
        }
    }

    #[test]
    fn range_ends() {
        assert_eq!(round_f16(65504.0), 65504.0);
        assert_eq!(round_f16(65519.996), 65504.0);
        assert_eq!(round_f16(65520.0), f32::INFINITY);
        assert_eq!(round_f16(-1e30), f32::NEG_INFINITY);
        assert_eq!(round_f16(f32::INFINITY), f32::INFINITY);
        assert!(round_f16(f32::NAN).is_nan());
        let tiny = 2f32.powi(-24);
        assert_eq!(round_f16(tiny * 0.5), 0.0, "the tie at 2^-25 goes to zero (even)");
        assert_eq!(round_f16(tiny * 0.5001), tiny);
        assert_eq!(round_f16(-tiny * 0.25).to_bits(), (-0.0f32).to_bits());
        assert_eq!(round_f16(1e-30), 0.0);
    }
}
