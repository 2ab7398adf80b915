// Dropout with the counter-based hash of engine/src/rng.rs (same bits as the CPU):
// uniform(seed, i) = (hash32(i ^ hash32(s0 ^ hash32(s1))) >> 8) / 2^24, keep when uniform ≥ p.

struct P {
    n: u32,
    s0: u32,      // low 32 bits of the seed
    s1: u32,      // high 32 bits
    o1: u32,
    o2: u32,
    prob: f32,
    scale: f32,   // 1 / (1 - p), computed on the host
    keep: f32,    // 1 - p, computed on the host
}

@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> b1: array<f32>;
@group(0) @binding(2) var<storage, read_write> b2: array<f32>;

// "lowbias32"
fn hash32(v: u32) -> u32 {
    var x = v;
    x = x ^ (x >> 16u);
    x = x * 0x7feb352du;
    x = x ^ (x >> 15u);
    x = x * 0x846ca68bu;
    x = x ^ (x >> 16u);
    return x;
}

fn uniform01(i: u32) -> f32 {
    let h = hash32(i ^ hash32(p.s0 ^ hash32(p.s1)));
    return f32(h >> 8u) * (1.0 / 16777216.0);
}

fn flat(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wid.y * nwg.x + wid.x) * 256u + lid.x;
}

// y (b2) = keep ? x (b1) * scale : 0
@compute @workgroup_size(256)
fn dropout_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat(wid, nwg, lid);
    if (i >= p.n) { return; }
    var v = 0.0;
    if (uniform01(i) >= p.prob) {
        v = b1[p.o1 + i] * p.scale;
    }
    b2[p.o2 + i] = v;
}

// dx (b2) += keep ? dy (b1) * scale : 0 (the CPU twin's rounding)
@compute @workgroup_size(256)
fn dropout_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat(wid, nwg, lid);
    if (i >= p.n) { return; }
    if (uniform01(i) >= p.prob) {
        b2[p.o2 + i] = b2[p.o2 + i] + b1[p.o1 + i] * p.scale;
    }
}
