// [softmax] (CPU twin engine/src/cpu/softmax.rs). softmax_forward: one invocation per group
// ("row") of `n` values, summed in element order like the CPU. softmax_loss: Darknet's
// softmax_x_ent in ONE workgroup (the classifier's few values): each invocation a fixed strided
// subset, then a fixed tree, so the cost is the same bits on every run (no float atomics).
// STATS_*, SECRET_NUM and MIN_PROB come from the generated preamble.

struct P {
    rows: u32,
    n: u32,       // values per group
    total: u32,   // rows × n
    o1: u32,
    o2: u32,
    o3: u32,
    o4: u32,
    inv_t: f32,   // 1 / temperature
}

@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> b1: array<f32>;
@group(0) @binding(2) var<storage, read_write> b2: array<f32>;
@group(0) @binding(3) var<storage, read_write> b3: array<f32>;
@group(0) @binding(4) var<storage, read_write> b4: array<f32>;


// x (b1) → y (b2)
@compute @workgroup_size(256)
fn softmax_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let r = (wid.y * nwg.x + wid.x) * 256u + lid.x;
    if (r >= p.rows) { return; }
    let base = r * p.n;
    var mx = b1[p.o1 + base];
    for (var i = 1u; i < p.n; i++) {
        mx = max(mx, b1[p.o1 + base + i]);
    }
    var sum = 0.0;
    for (var i = 0u; i < p.n; i++) {
        let e = exp((b1[p.o1 + base + i] - mx) * p.inv_t);
        sum += e;
        b2[p.o2 + base + i] = e;
    }
    for (var i = 0u; i < p.n; i++) {
        b2[p.o2 + base + i] = b2[p.o2 + base + i] / sum;
    }
}

// y (b1), truth (b2) → dx (b3) = y − t, stats record (b4) with Σ −t·ln y
@compute @workgroup_size(256)
fn softmax_loss(@builtin(local_invocation_id) lid: vec3<u32>) {
    var acc = 0.0;
    for (var i = lid.x; i < p.total; i += 256u) {
        let t = b2[p.o2 + i];
        let y = b1[p.o1 + i];
        var d = 0.0;
        if (t != SECRET_NUM) {
            d = y - t;
            if (t != 0.0) {
                acc += -t * log(max(y, MIN_PROB));
            }
        }
        b3[p.o3 + i] = d;
    }
    // The include's fixed tree (include/reduce.wgsl): reruns give the same bits.
    let total = tree_sum(lid.x, acc);
    if (lid.x == 0u) {
        for (var k = 0u; k < STATS_LEN; k++) {
            b4[p.o4 + k] = 0.0;
        }
        b4[p.o4 + STATS_COST] = total;
        b4[p.o4 + STATS_CLASS_LOSS] = total;
        b4[p.o4 + STATS_CLS_ONLY_LOSS] = total;
    }
}
