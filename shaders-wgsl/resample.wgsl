// Nearest upsample (Darknet upsample_cpu) and reorg (Darknet reorg_cpu called with forward = 0).

struct P {
    batch: u32,
    c: u32,
    h: u32,
    w: u32,
    stride: u32,
    o1: u32,
    o2: u32,
    scale: f32,
}

@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> b1: array<f32>;
@group(0) @binding(2) var<storage, read_write> b2: array<f32>;

fn flat(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wid.y * nwg.x + wid.x) * 256u + lid.x;
}

// y (b2) [b][c][oy][ox] = scale * x (b1) [b][c][oy/s][ox/s]; one invocation per output.
@compute @workgroup_size(256)
fn upsample_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat(wid, nwg, lid);
    let ow = p.w * p.stride;
    let oh = p.h * p.stride;
    if (i >= p.batch * p.c * oh * ow) { return; }
    let bc = i / (oh * ow);
    let r = i % (oh * ow);
    let oy = r / ow;
    let ox = r % ow;
    b2[p.o2 + i] = p.scale * b1[p.o1 + (bc * p.h + oy / p.stride) * p.w + ox / p.stride];
}

// dx (b2) += scale * Σ_block dy (b1), block in row-major order (as Darknet's scatter loop adds).
@compute @workgroup_size(256)
fn upsample_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat(wid, nwg, lid);
    if (i >= p.batch * p.c * p.h * p.w) { return; }
    let bc = i / (p.h * p.w);
    let r = i % (p.h * p.w);
    let iy = r / p.w;
    let ix = r % p.w;
    let ow = p.w * p.stride;
    let oh = p.h * p.stride;
    var acc = b2[p.o2 + i];
    for (var dy = 0u; dy < p.stride; dy++) {
        for (var dx = 0u; dx < p.stride; dx++) {
            acc = acc + p.scale * b1[p.o1 + (bc * oh + iy * p.stride + dy) * ow + ix * p.stride + dx];
        }
    }
    b2[p.o2 + i] = acc;
}

// Darknet's reorg index map for element i of [batch][c][h][w] (input dims): the flat index it
// pairs with in the other buffer, read as [batch][c/s²][h·s][w·s].
fn reorg_pair(i: u32) -> u32 {
    let s = p.stride;
    let out_c = p.c / (s * s);
    let ii = i % p.w;
    let j = (i / p.w) % p.h;
    let k = (i / (p.w * p.h)) % p.c;
    let b = i / (p.w * p.h * p.c);
    let c2 = k % out_c;
    let offset = k / out_c;
    let w2 = ii * s + offset % s;
    let h2 = j * s + offset / s;
    return w2 + p.w * s * (h2 + p.h * s * (c2 + out_c * b));
}

// y (b2) [i] = x (b1) [pair(i)]
@compute @workgroup_size(256)
fn reorg_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat(wid, nwg, lid);
    if (i >= p.batch * p.c * p.h * p.w) { return; }
    b2[p.o2 + i] = b1[p.o1 + reorg_pair(i)];
}

// dx (b2) [pair(i)] += dy (b1) [i]; pair is a permutation, so no two invocations share a target.
@compute @workgroup_size(256)
fn reorg_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat(wid, nwg, lid);
    if (i >= p.batch * p.c * p.h * p.w) { return; }
    let t = p.o2 + reorg_pair(i);
    b2[t] = b2[t] + b1[p.o1 + i];
}
