// Convolution bias. bias_add: one invocation per element (2-D grid of 256-wide workgroups).
// bias_backward: one workgroup per channel; each invocation sums a fixed strided subset in order,
// then a fixed tree combines the 256 partial sums (deterministic, no atomics).

struct P {
    batch: u32,
    channels: u32,
    spatial: u32,
    o1: u32,
    o2: u32,
}

@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> b1: array<f32>;
@group(0) @binding(2) var<storage, read_write> b2: array<f32>;

var<workgroup> red: array<f32, 256>;

fn tree_sum(lid: u32, v: f32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s = s >> 1u) {
        if (lid < s) {
            red[lid] = red[lid] + red[lid + s];
        }
        workgroupBarrier();
    }
    return red[0];
}

// y (b1) [b][c][i] += bias (b2) [c]
@compute @workgroup_size(256)
fn bias_add(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = (wid.y * nwg.x + wid.x) * 256u + lid.x;
    if (i >= p.batch * p.channels * p.spatial) { return; }
    let c = (i / p.spatial) % p.channels;
    b1[p.o1 + i] = b1[p.o1 + i] + b2[p.o2 + c];
}

// dbias (b2) [c] += Σ_{b,i} dy (b1) [b][c][i]; workgroup (wid.y * nwg.x + wid.x) = channel.
@compute @workgroup_size(256)
fn bias_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let c = wid.y * nwg.x + wid.x;
    var s = 0.0;
    if (c < p.channels) {
        for (var b = 0u; b < p.batch; b++) {
            let base = p.o1 + (b * p.channels + c) * p.spatial;
            for (var i = lid.x; i < p.spatial; i += 256u) {
                s = s + b1[base + i];
            }
        }
    }
    let total = tree_sum(lid.x, s);
    if (lid.x == 0u && c < p.channels) {
        b2[p.o2 + c] = b2[p.o2 + c] + total;
    }
}
