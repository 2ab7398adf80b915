// Rounding an f32 value to the nearest f16 value, kept as f32: where mixed precision stores a
// tensor in f16 (half.wgsl, and the fused kernels that round what they write). Integer
// arithmetic on the bit pattern rather than pack2x16float: WGSL leaves that builtin's rounding,
// its subnormals and its out-of-range results to the implementation, while the CPU twin
// (engine/src/cpu/half.rs) and the kernels must agree bit for bit; an overflow must become ±Inf,
// which is what loss scaling looks for.

// Round to nearest, ties to even, like an f32 -> f16 conversion and back.
fn round_f16_value(v: f32) -> f32 {
    let bits = bitcast<u32>(v);
    let sign = bits & 0x80000000u;
    let a = bits & 0x7fffffffu;
    if (a >= 0x7f800000u) {
        return v; // Inf and NaN stay
    }
    if (a >= 0x477ff000u) {
        return bitcast<f32>(sign | 0x7f800000u); // at or past 65520: beyond f16's largest, 65504
    }
    if (a < 0x33800000u) {
        // Below 2^-24, the smallest f16 subnormal: above half of it rounds up to it, the rest
        // (the tie at 2^-25 included: to even) to zero.
        if (a > 0x33000000u) {
            return bitcast<f32>(sign | 0x33800000u);
        }
        return bitcast<f32>(sign);
    }
    // Mantissa bits f16 cannot keep: 13 for normals (exponent >= -14), more for subnormals.
    let e = i32(a >> 23u) - 127;
    var drop = 13u;
    if (e < -14) {
        drop = u32(13 + (-14 - e));
    }
    let mask = (1u << drop) - 1u;
    let half = 1u << (drop - 1u);
    let rem = a & mask;
    var r = a & ~mask;
    if (rem > half || (rem == half && ((r >> drop) & 1u) == 1u)) {
        r = r + (1u << drop); // may carry into the exponent: still the right value
    }
    return bitcast<f32>(sign | r);
}

// The f32 value of f16 bit pattern h (the low 16 bits), exactly, by integer arithmetic: zero and
// subnormals as a multiple of 2^-24, Inf and NaN kept.
fn f16_to_f32(h: u32) -> f32 {
    let sign = (h & 0x8000u) << 16u;
    let e = (h >> 10u) & 0x1fu;
    let m = h & 0x3ffu;
    if (e == 0u) {
        return bitcast<f32>(sign | bitcast<u32>(f32(m) * 5.9604644775390625e-8));
    }
    if (e == 31u) {
        return bitcast<f32>(sign | 0x7f800000u | (m << 13u));
    }
    return bitcast<f32>(sign | ((e + 112u) << 23u) | (m << 13u));
}

// The f16 bit pattern of v rounded to the nearest f16 value (exact for the f16 values mixed
// precision's operands hold), by integer arithmetic like the rounding: NaN stays a (quiet) NaN.
fn f16_bits(v: f32) -> u32 {
    let bits = bitcast<u32>(round_f16_value(v));
    let sign = (bits >> 16u) & 0x8000u;
    let a = bits & 0x7fffffffu;
    if (a >= 0x7f800000u) {
        return sign | 0x7c00u | select(0u, 0x200u, a > 0x7f800000u);
    }
    if (a >= 0x38800000u) {
        return sign | (((a >> 23u) - 112u) << 10u) | ((a >> 13u) & 0x3ffu); // normal: exponent >= -14
    }
    return sign | u32(bitcast<f32>(a) * 16777216.0); // zero or subnormal: a multiple of 2^-24
}
