// Mixed precision (issue 15): rounding f32 values to the nearest f16 value, kept as f32. The
// tensors mixed precision stores in f16 (activations, gradients, the GEMMs' weight copies) pass
// through here. Integer arithmetic on the bit pattern rather than pack2x16float: WGSL leaves that
// builtin's rounding, its subnormals and its out-of-range results to the implementation, while
// the CPU twin (engine/src/cpu/half.rs) and this kernel must agree bit for bit; an overflow must
// become ±Inf, which is what loss scaling looks for.

struct P {
    n: u32,
    o1: u32,
    o2: u32,
    pad: u32,
}

@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

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

// out = round_f16(x); out may be x itself.
@compute @workgroup_size(256)
fn round_f16(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = (wid.y * nwg.x + wid.x) * 256u + lid.x;
    if (i >= p.n) { return; }
    out[p.o2 + i] = round_f16_value(x[p.o1 + i]);
}
