// Activation kernels; the functions themselves are in include/act.wgsl.

struct P {
    n: u32,
    act: u32,
    o1: u32,
    o2: u32,
    o3: u32,
    o4: u32,
}

@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> b1: array<f32>;
@group(0) @binding(2) var<storage, read_write> b2: array<f32>;
@group(0) @binding(3) var<storage, read_write> b3: array<f32>;
@group(0) @binding(4) var<storage, read_write> b4: array<f32>;

// y (b2) = f(x (b1)); y may alias x.
@compute @workgroup_size(256)
fn activation_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = (wid.y * nwg.x + wid.x) * 256u + lid.x;
    if (i >= p.n) { return; }
    b2[p.o2 + i] = activate(b1[p.o1 + i], p.act);
}

// x = b1, y = b2, dy = b3, dx (b4) = dy * f'(x, y); dx may alias dy.
@compute @workgroup_size(256)
fn activation_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = (wid.y * nwg.x + wid.x) * 256u + lid.x;
    if (i >= p.n) { return; }
    b4[p.o4 + i] = b3[p.o3 + i] * gradient(b1[p.o1 + i], b2[p.o2 + i], p.act);
}
