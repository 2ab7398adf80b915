// Convolution bias. bias_add: one invocation per element (2-D grid of 256-wide workgroups).
// bias_backward: per-channel sums in two deterministic passes (include/reduce.wgsl): every
// (channel, chunk) workgroup sums its chunk, then one invocation per channel adds its chunks in
// order into dbias. No atomics.

struct P {
    batch: u32,
    channels: u32,
    spatial: u32,
    o1: u32,
    o2: u32,
    chunks: u32,
    ppc: u32,
    pieces: u32,
    piece_len: u32,
}

@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> b1: array<f32>;
@group(0) @binding(2) var<storage, read_write> b2: array<f32>;

// y (b1) [b][c][i] += bias (b2) [c]
@compute @workgroup_size(256)
fn bias_add(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = (wid.y * nwg.x + wid.x) * 256u + lid;
    if (i >= p.batch * p.channels * p.spatial) { return; }
    let c = (i / p.spatial) % p.channels;
    b1[p.o1 + i] = b1[p.o1 + i] + b2[p.o2 + c];
}

// dy (b1) → scratch (b2) [o2 + q·channels + c] = Σ over chunk q of channel c (chunk-major, as in
// batchnorm.wgsl).
@compute @workgroup_size(256)
fn bias_partials(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let g = wid.y * nwg.x + wid.x;
    let valid = g < p.channels * p.chunks;
    let c = g % p.channels;
    let r = chunk_range(g / p.channels, p.batch, p.spatial, p.ppc, p.pieces, p.piece_len);
    let len = r.w - r.z;
    var s = 0.0;
    if (valid) {
        for (var b = r.x; b < r.y; b++) {
            let base = p.o1 + (b * p.channels + c) * p.spatial + r.z;
            for (var i = lid; i < len; i += 256u) {
                s = s + b1[base + i];
            }
        }
    }
    let total = tree_sum(lid, s);
    if (lid == 0u && valid) {
        b2[p.o2 + g] = total;
    }
}

// scratch (b1) → dbias (b2) [c] += Σ_q partial[c][q], in chunk order.
@compute @workgroup_size(256)
fn bias_combine(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let c = (wid.y * nwg.x + wid.x) * 256u + lid;
    if (c >= p.channels) { return; }
    var s = 0.0;
    for (var q = 0u; q < p.chunks; q++) {
        s = s + b1[p.o1 + q * p.channels + c];
    }
    b2[p.o2 + c] = b2[p.o2 + c] + s;
}
