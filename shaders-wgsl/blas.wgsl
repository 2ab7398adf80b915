// Elementwise (blas-like) kernels. One invocation per element, 256 per workgroup, 2-D grid so that
// more than 65,535 workgroups can be launched: flat index = (wid.y * nwg.x + wid.x) * 256 + lid.
// fill, copy and copy_if_flagged, which only move values, are wide instead (include/wide.wgsl):
// WIDE elements per invocation.
// Every binding is a whole device buffer; views are addressed through the o1..o5 float offsets.

struct P {
    n: u32,
    o1: u32,
    o2: u32,
    o3: u32,
    o4: u32,
    o5: u32,
    a: f32,
    b: f32,
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

// x^e with the conventions of C's powf for the cases networks meet: negative bases with integer
// exponents keep their sign, 0^e is 0 (e > 0), 1 (e == 0) or +inf (e < 0).
fn powf(x: f32, e: f32) -> f32 {
    if (e == 0.0) {
        return 1.0;
    }
    if (x == 0.0) {
        if (e > 0.0) {
            return 0.0;
        }
        return 1.0 / x;
    }
    let r = pow(abs(x), e);
    if (x > 0.0) {
        return r;
    }
    if (floor(e) != e) {
        return pow(x, e); // NaN, as powf gives
    }
    let h = e * 0.5;
    if (floor(h) != h) {
        return -r;
    }
    return r;
}

// b1[i] = a
@compute @workgroup_size(256)
fn fill(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i0 = wide_first(wid, nwg, lid.x);
    for (var j = 0u; j < WIDE; j++) {
        let i = i0 + 256u * j;
        if (i < p.n) {
            b1[p.o1 + i] = p.a;
        }
    }
}

// b2 = b1 over the values of one invocation (wide: all read before any is written).
fn copy_values(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) {
    let i0 = wide_first(wid, nwg, lid.x);
    var v: array<f32, WIDE>;
    for (var j = 0u; j < WIDE; j++) {
        let i = i0 + 256u * j;
        if (i < p.n) {
            v[j] = b1[p.o1 + i];
        }
    }
    for (var j = 0u; j < WIDE; j++) {
        let i = i0 + 256u * j;
        if (i < p.n) {
            b2[p.o2 + i] = v[j];
        }
    }
}

// b2 = b1
@compute @workgroup_size(256)
fn copy(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    copy_values(wid, nwg, lid);
}

// b2 = b1 when the flag b3[o3] is nonzero, else b2 stays (the skip of a loss-scaled step restores
// the state saved before it; the flag is computed on the device, so no readback decides).
@compute @workgroup_size(256)
fn copy_if_flagged(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    if (b3[p.o3] == 0.0) { return; }
    copy_values(wid, nwg, lid);
}

// b2 += a * b1
@compute @workgroup_size(256)
fn axpy(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat(wid, nwg, lid);
    if (i >= p.n) { return; }
    b2[p.o2 + i] = b2[p.o2 + i] + p.a * b1[p.o1 + i];
}

// b1 *= a
@compute @workgroup_size(256)
fn scal(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat(wid, nwg, lid);
    if (i >= p.n) { return; }
    b1[p.o1 + i] = b1[p.o1 + i] * p.a;
}

// b3 = b1 + b2
@compute @workgroup_size(256)
fn add_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat(wid, nwg, lid);
    if (i >= p.n) { return; }
    b3[p.o3 + i] = b1[p.o1 + i] + b2[p.o2 + i];
}

// b3 = b1 * b2
@compute @workgroup_size(256)
fn mul_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat(wid, nwg, lid);
    if (i >= p.n) { return; }
    b3[p.o3 + i] = b1[p.o1 + i] * b2[p.o2 + i];
}

// b3 = b1 / b2
@compute @workgroup_size(256)
fn div_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat(wid, nwg, lid);
    if (i >= p.n) { return; }
    b3[p.o3 + i] = b1[p.o1 + i] / b2[p.o2 + i];
}

// b2 = exp(b1)
@compute @workgroup_size(256)
fn exp_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat(wid, nwg, lid);
    if (i >= p.n) { return; }
    b2[p.o2 + i] = exp(b1[p.o1 + i]);
}

// b2 = ln(b1)
@compute @workgroup_size(256)
fn log_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat(wid, nwg, lid);
    if (i >= p.n) { return; }
    b2[p.o2 + i] = log(b1[p.o1 + i]);
}

// b2 = b1 ^ a
@compute @workgroup_size(256)
fn pow_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat(wid, nwg, lid);
    if (i >= p.n) { return; }
    b2[p.o2 + i] = powf(b1[p.o1 + i], p.a);
}

// a = b1, b = b2, g = b3: da (b4) += g*b, db (b5) += g*a
@compute @workgroup_size(256)
fn mul_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat(wid, nwg, lid);
    if (i >= p.n) { return; }
    let a = b1[p.o1 + i];
    let b = b2[p.o2 + i];
    let g = b3[p.o3 + i];
    b4[p.o4 + i] = b4[p.o4 + i] + g * b;
    b5[p.o5 + i] = b5[p.o5 + i] + g * a;
}

// a = b1, b = b2, g = b3: da (b4) += g/b, db (b5) += -g*a/b²
@compute @workgroup_size(256)
fn div_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat(wid, nwg, lid);
    if (i >= p.n) { return; }
    let a = b1[p.o1 + i];
    let b = b2[p.o2 + i];
    let g = b3[p.o3 + i];
    b4[p.o4 + i] = b4[p.o4 + i] + g / b;
    b5[p.o5 + i] = b5[p.o5 + i] - g * a / (b * b);
}

// y = b1, g = b2: dx (b3) += g*y
@compute @workgroup_size(256)
fn exp_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat(wid, nwg, lid);
    if (i >= p.n) { return; }
    b3[p.o3 + i] = b3[p.o3 + i] + b2[p.o2 + i] * b1[p.o1 + i];
}

// x = b1, g = b2: dx (b3) += g/x
@compute @workgroup_size(256)
fn log_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat(wid, nwg, lid);
    if (i >= p.n) { return; }
    b3[p.o3 + i] = b3[p.o3 + i] + b2[p.o2 + i] / b1[p.o1 + i];
}

// x = b1, g = b2: dx (b3) += g*p*x^(p-1)
@compute @workgroup_size(256)
fn pow_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat(wid, nwg, lid);
    if (i >= p.n) { return; }
    b3[p.o3 + i] = b3[p.o3 + i] + b2[p.o2 + i] * p.a * powf(b1[p.o1 + i], p.a - 1.0);
}
