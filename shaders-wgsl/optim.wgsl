// Darknet SGD and Adam (darknet-spec §c) on ordinary summed gradients; coefficients that do not
// depend on the element (decay·B, lr/B, bias corrections) are computed once on the host.

struct P {
    n: u32,
    o1: u32,
    o2: u32,
    o3: u32,
    o4: u32,
    lr: f32,
    momentum: f32,   // sgd
    decay_b: f32,    // decay * batch
    lr_over_b: f32,  // sgd: lr / batch
    b1: f32,
    b2: f32,
    eps: f32,
    bc1: f32,        // 1 - b1^t
    bc2: f32,        // 1 - b2^t
}

@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> w: array<f32>;
@group(0) @binding(2) var<storage, read_write> upd: array<f32>;
@group(0) @binding(3) var<storage, read_write> m: array<f32>;
@group(0) @binding(4) var<storage, read_write> v: array<f32>;

fn flat(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wid.y * nwg.x + wid.x) * 256u + lid.x;
}

// upd += decay*B*w; w -= (lr/B)*upd; upd *= momentum
@compute @workgroup_size(256)
fn sgd_update(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat(wid, nwg, lid);
    if (i >= p.n) { return; }
    let wi = w[p.o1 + i];
    let u = upd[p.o2 + i] + p.decay_b * wi;
    w[p.o1 + i] = wi - p.lr_over_b * u;
    upd[p.o2 + i] = u * p.momentum;
}

// d = upd + decay*B*w; m = b1 m + (1-b1) d; v = b2 v + (1-b2) d²;
// w -= lr * (m/(1-b1^t)) / (√(v/(1-b2^t)) + eps); upd = 0
@compute @workgroup_size(256)
fn adam_update(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat(wid, nwg, lid);
    if (i >= p.n) { return; }
    let wi = w[p.o1 + i];
    let d = upd[p.o2 + i] + p.decay_b * wi;
    let mi = p.b1 * m[p.o3 + i] + (1.0 - p.b1) * d;
    let vi = p.b2 * v[p.o4 + i] + (1.0 - p.b2) * d * d;
    m[p.o3 + i] = mi;
    v[p.o4 + i] = vi;
    w[p.o1 + i] = wi - p.lr * (mi / p.bc1) / (sqrt(vi / p.bc2) + p.eps);
    upd[p.o2 + i] = 0.0;
}
