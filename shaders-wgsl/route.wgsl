// Route (strided block copy) and scale_channels.

struct P {
    batch: u32,
    len: u32,         // copy_slices: floats per image; scale_channels: channels
    src_stride: u32,
    src_offset: u32,
    dst_stride: u32,
    dst_offset: u32,
    accumulate: u32,
    spatial: u32,
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


fn flat(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wid.y * nwg.x + wid.x) * 256u + lid.x;
}

// dst (b2) [b*dst_stride + dst_offset + j] (= or +=) src (b1) [b*src_stride + src_offset + j].
// Wide (include/wide.wgsl): the WIDE values of an invocation are all read before any is written.
@compute @workgroup_size(256)
fn copy_slices(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i0 = wide_first(wid, nwg, lid.x);
    let n = p.batch * p.len;
    var d: array<u32, WIDE>;
    var v: array<f32, WIDE>;
    for (var k = 0u; k < WIDE; k++) {
        let i = i0 + 256u * k;
        if (i < n) {
            let b = i / p.len;
            let j = i % p.len;
            d[k] = p.o2 + b * p.dst_stride + p.dst_offset + j;
            v[k] = b1[p.o1 + b * p.src_stride + p.src_offset + j];
            if (p.accumulate != 0u) {
                v[k] = b2[d[k]] + v[k];
            }
        }
    }
    for (var k = 0u; k < WIDE; k++) {
        if (i0 + 256u * k < n) {
            b2[d[k]] = v[k];
        }
    }
}

// y (b3) [b][c][i] = x (b1) [b][c][i] * scale (b2) [b][c]
@compute @workgroup_size(256)
fn scale_channels_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat(wid, nwg, lid);
    if (i >= p.batch * p.len * p.spatial) { return; }
    b3[p.o3 + i] = b1[p.o1 + i] * b2[p.o2 + i / p.spatial];
}

// x = b1, scale = b2, dy = b3: dx (b4) += dy*scale, dscale (b5) [b][c] += Σ_i dy*x.
// One workgroup per (b, c): fixed strided partial sums + fixed tree.
@compute @workgroup_size(256)
fn scale_channels_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let bc = wid.y * nwg.x + wid.x;
    let valid = bc < p.batch * p.len;
    var s = 0.0;
    if (valid) {
        let sc = b2[p.o2 + bc];
        for (var i = lid.x; i < p.spatial; i += 256u) {
            let k = bc * p.spatial + i;
            let dy = b3[p.o3 + k];
            s = s + dy * b1[p.o1 + k];
            b4[p.o4 + k] = b4[p.o4 + k] + dy * sc;
        }
    }
    let total = tree_sum(lid.x, s);
    if (lid.x == 0u && valid) {
        b5[p.o5 + bc] = b5[p.o5 + bc] + total;
    }
}
