// [cost] (CPU twin engine/src/cpu/cost.rs): per-element error of x against the truth, d = t − x,
// and dx = −(Darknet delta); one workgroup with a fixed strided subset per invocation and a fixed
// tree for Σ error (deterministic). COST_*, STATS_* and SECRET_NUM come from the preamble.

struct P {
    n: u32,
    kind: u32,
    o1: u32,
    o2: u32,
    o3: u32,
    o4: u32,
    o5: u32,
}

@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> b1: array<f32>;
@group(0) @binding(2) var<storage, read_write> b2: array<f32>;
@group(0) @binding(3) var<storage, read_write> b3: array<f32>;
@group(0) @binding(4) var<storage, read_write> b4: array<f32>;
@group(0) @binding(5) var<storage, read_write> b5: array<f32>;

// x (b1), truth (b2) → error (b3), dx (b4), stats record (b5)
@compute @workgroup_size(256)
fn cost_forward(@builtin(local_invocation_id) lid: vec3<u32>) {
    var acc = 0.0;
    for (var i = lid.x; i < p.n; i += 256u) {
        let t = b2[p.o2 + i];
        let d = t - b1[p.o1 + i];
        var err = d * d;
        var delta = d;
        if (p.kind == COST_MASKED && t == SECRET_NUM) {
            err = 0.0;
            delta = 0.0;
        } else if (p.kind == COST_SMOOTH && abs(d) >= 1.0) {
            err = 2.0 * abs(d) - 1.0;
            delta = sign(d);
        }
        b3[p.o3 + i] = err;
        b4[p.o4 + i] = -delta;
        acc += err;
    }
    // The include's fixed tree (include/reduce.wgsl): reruns give the same bits.
    let total = tree_sum(lid.x, acc);
    if (lid.x == 0u) {
        for (var k = 0u; k < STATS_LEN; k++) {
            b5[p.o5 + k] = 0.0;
        }
        b5[p.o5 + STATS_COST] = total;
        b5[p.o5 + STATS_CLASS_LOSS] = total;
        b5[p.o5 + STATS_CLS_ONLY_LOSS] = total;
    }
}
