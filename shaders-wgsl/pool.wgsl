// Max pooling (Darknet: window origin −padding/2, out-of-range = −FLT_MAX, strict '>' so the first
// maximum wins) and global average pooling.
// maxpool_backward gathers: each input element sums dy of the outputs whose window contains it
// and whose recomputed argmax is this element, in output order — no atomics, deterministic.

struct P {
    batch: u32,
    c: u32,
    h: u32,
    w: u32,
    size: u32,
    stride: u32,
    off: u32,      // padding / 2
    oh: u32,
    ow: u32,
    o1: u32,
    o2: u32,
    o3: u32,
    spatial: u32,  // avgpool
}

@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> b1: array<f32>;
@group(0) @binding(2) var<storage, read_write> b2: array<f32>;
@group(0) @binding(3) var<storage, read_write> b3: array<f32>;

const NEG_FLT_MAX: f32 = -3.40282347e+38;


// Index (within the (b, c) plane) of the maximum of output (oy, ox), reading x from b1.
fn argmax(plane: u32, oy: u32, ox: u32) -> i32 {
    var best = NEG_FLT_MAX;
    var best_i = -1;
    for (var n = 0u; n < p.size; n++) {
        for (var m = 0u; m < p.size; m++) {
            let y = i32(oy * p.stride + n) - i32(p.off);
            let x = i32(ox * p.stride + m) - i32(p.off);
            var v = NEG_FLT_MAX;
            let idx = y * i32(p.w) + x;
            if (y >= 0 && x >= 0 && y < i32(p.h) && x < i32(p.w)) {
                v = b1[p.o1 + plane + u32(idx)];
            }
            if (v > best) {
                best = v;
                best_i = idx;
            }
        }
    }
    return best_i;
}

// x = b1, y = b2; one invocation per output.
@compute @workgroup_size(256)
fn maxpool_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = (wid.y * nwg.x + wid.x) * 256u + lid.x;
    let ohw = p.oh * p.ow;
    if (i >= p.batch * p.c * ohw) { return; }
    let bc = i / ohw;
    let r = i % ohw;
    let oy = r / p.ow;
    let ox = r % p.ow;
    let plane = bc * p.h * p.w;
    var best = NEG_FLT_MAX;
    for (var n = 0u; n < p.size; n++) {
        for (var m = 0u; m < p.size; m++) {
            let y = i32(oy * p.stride + n) - i32(p.off);
            let x = i32(ox * p.stride + m) - i32(p.off);
            var v = NEG_FLT_MAX;
            if (y >= 0 && x >= 0 && y < i32(p.h) && x < i32(p.w)) {
                v = b1[p.o1 + plane + u32(y) * p.w + u32(x)];
            }
            if (v > best) {
                best = v;
            }
        }
    }
    b2[p.o2 + i] = best;
}

// x = b1, dy = b2, dx = b3 (+=); one invocation per input element.
@compute @workgroup_size(256)
fn maxpool_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = (wid.y * nwg.x + wid.x) * 256u + lid.x;
    let hw = p.h * p.w;
    if (i >= p.batch * p.c * hw) { return; }
    let bc = i / hw;
    let r = i % hw;
    let iy = r / p.w;
    let ix = r % p.w;
    let plane = bc * hw;
    // Outputs whose window [o*stride − off, o*stride − off + size) contains the pixel.
    let ty = i32(iy + p.off) - i32(p.size) + 1;
    let tx = i32(ix + p.off) - i32(p.size) + 1;
    var oy0 = 0u;
    if (ty > 0) { oy0 = (u32(ty) + p.stride - 1u) / p.stride; }
    var ox0 = 0u;
    if (tx > 0) { ox0 = (u32(tx) + p.stride - 1u) / p.stride; }
    let oy1 = min(p.oh, (iy + p.off) / p.stride + 1u);
    let ox1 = min(p.ow, (ix + p.off) / p.stride + 1u);
    var acc = b3[p.o3 + i];
    for (var oy = oy0; oy < oy1; oy++) {
        for (var ox = ox0; ox < ox1; ox++) {
            if (argmax(plane, oy, ox) == i32(r)) {
                acc = acc + b2[p.o2 + (bc * p.oh + oy) * p.ow + ox];
            }
        }
    }
    b3[p.o3 + i] = acc;
}

// The same where windows do not overlap (stride ≥ size): every input has at most one output
// whose window holds it, so one invocation per output adds its gradient to its window's
// maximum and leaves the others as they are: the gather's result, with a quarter of the
// reads and writes at size 2. x = b1, dy = b2, dx = b3 (+=).
@compute @workgroup_size(256)
fn maxpool_backward_windows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = (wid.y * nwg.x + wid.x) * 256u + lid.x;
    let ohw = p.oh * p.ow;
    if (i >= p.batch * p.c * ohw) { return; }
    let bc = i / ohw;
    let r = i % ohw;
    let plane = bc * p.h * p.w;
    let a = argmax(plane, r / p.ow, r % p.ow);
    if (a >= 0) {
        let o = p.o3 + plane + u32(a);
        b3[o] = b3[o] + b2[p.o2 + i];
    }
}

// y (b2) [b][c] = mean over spatial of x (b1); one workgroup per (b, c).
@compute @workgroup_size(256)
fn avgpool_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let bc = wid.y * nwg.x + wid.x;
    let valid = bc < p.batch * p.c;
    var s = 0.0;
    if (valid) {
        for (var i = lid.x; i < p.spatial; i += 256u) {
            s = s + b1[p.o1 + bc * p.spatial + i];
        }
    }
    let total = tree_sum(lid.x, s);
    if (lid.x == 0u && valid) {
        b2[p.o2 + bc] = total / f32(p.spatial);
    }
}

// dx (b2) += dy (b1) [b][c] / spatial; one invocation per input element.
@compute @workgroup_size(256)
fn avgpool_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = (wid.y * nwg.x + wid.x) * 256u + lid.x;
    if (i >= p.batch * p.c * p.spatial) { return; }
    b2[p.o2 + i] = b2[p.o2 + i] + b1[p.o1 + i / p.spatial] / f32(p.spatial);
}
