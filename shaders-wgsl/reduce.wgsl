// Whole-tensor reductions in two deterministic passes: reduce_partial gives workgroup g the
// contiguous chunk [g*chunk, (g+1)*chunk) and writes one partial; reduce_final combines the
// partials in one workgroup. Both use fixed strided sums + a fixed tree, so the result depends only
// on the data and its length. Modes: 0 Σx, 1 Σx², 2 any non-finite (1.0 / 0.0, combined by max).

struct P {
    n: u32,
    chunk: u32,
    parts: u32,
    mode: u32,
    o1: u32,
    o2: u32,
    index: u32,
}

@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> b1: array<f32>;
@group(0) @binding(2) var<storage, read_write> b2: array<f32>;

var<workgroup> red: array<f32, 256>;

fn term(v: f32) -> f32 {
    if (p.mode == 1u) {
        return v * v;
    }
    if (p.mode == 2u) {
        // Exponent bits all ones = Inf or NaN (bit test: immune to fast-math).
        return select(0.0, 1.0, (bitcast<u32>(v) & 0x7f800000u) == 0x7f800000u);
    }
    return v;
}

fn combine(a: f32, b: f32) -> f32 {
    if (p.mode == 2u) {
        return max(a, b);
    }
    return a + b;
}

// The tree of include/reduce.wgsl's tree_sum (serial on CPU adapters, same order).
fn tree(lid: u32, v: f32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    if (SERIAL_TREES) {
        if (lid == 0u) {
            for (var s = 128u; s > 0u; s = s >> 1u) {
                for (var i = 0u; i < s; i++) {
                    red[i] = combine(red[i], red[i + s]);
                }
            }
        }
        workgroupBarrier();
    } else {
        for (var s = 128u; s > 0u; s = s >> 1u) {
            if (lid < s) {
                red[lid] = combine(red[lid], red[lid + s]);
            }
            workgroupBarrier();
        }
    }
    return red[0];
}

// x = b1 → partials (b2) [o2 + g]
@compute @workgroup_size(256)
fn reduce_partial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let g = wid.x;
    let begin = g * p.chunk;
    let end = min(p.n, begin + p.chunk);
    var acc = 0.0;
    for (var i = begin + lid.x; i < end; i += 256u) {
        acc = combine(acc, term(b1[p.o1 + i]));
    }
    let r = tree(lid.x, acc);
    if (lid.x == 0u) {
        b2[p.o2 + g] = r;
    }
}

// partials = b1 [o1 .. o1 + parts] → out (b2) [o2 + index]
@compute @workgroup_size(256)
fn reduce_final(@builtin(local_invocation_id) lid: vec3<u32>) {
    var acc = 0.0;
    for (var i = lid.x; i < p.parts; i += 256u) {
        acc = combine(acc, b1[p.o1 + i]);
    }
    let r = tree(lid.x, acc);
    if (lid.x == 0u) {
        b2[p.o2 + p.index] = r;
    }
}
