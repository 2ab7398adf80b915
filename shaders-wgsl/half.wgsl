// Mixed precision (issue 15): rounding f32 values to the nearest f16 value, kept as f32, for the
// tensors mixed precision stores in f16 that no fused kernel writes (include/half.wgsl has the
// rounding, and why it is integer arithmetic); and unpacking f16 values uploaded two to a word.

struct P {
    n: u32,
    o1: u32,
    o2: u32,
    pad: u32,
}

@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

// out = round_f16(x); out may be x itself.
@compute @workgroup_size(256)
fn round_f16(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = (wid.y * nwg.x + wid.x) * 256u + lid.x;
    if (i >= p.n) { return; }
    out[p.o2 + i] = round_f16_value(x[p.o1 + i]);
}

// out[i] = f16 value i of x (two per word: value 2w in word w's low half), for i < n. The words
// arrive in an f32 buffer and are read back as bits.
@compute @workgroup_size(256)
fn unpack_f16(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = (wid.y * nwg.x + wid.x) * 256u + lid.x;
    if (i >= p.n) { return; }
    let word = bitcast<u32>(x[p.o1 + i / 2u]);
    out[p.o2 + i] = f16_to_f32((word >> (16u * (i % 2u))) & 0xffffu);
}
