// Darknet activations (darknet-spec §b). Codes follow engine::shapes::Activation::code():
// 0 linear, 1 logistic, 2 relu, 3 leaky, 4 tanh, 5 mish, 6 swish, 7 hard_mish.
// Backward uses the output y for leaky/relu/logistic/tanh and the input x for mish/swish/hard_mish.

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

const MISH_THRESHOLD: f32 = 20.0;

fn logistic(x: f32) -> f32 {
    return 1.0 / (1.0 + exp(-x));
}

// Darknet's tanh_activate; saturates cleanly to ±1 (exp overflow gives 2/inf = 0).
fn tanh_d(x: f32) -> f32 {
    return 2.0 / (1.0 + exp(-2.0 * x)) - 1.0;
}

fn softplus(x: f32) -> f32 {
    if (x > MISH_THRESHOLD) {
        return x;
    }
    if (x < -MISH_THRESHOLD) {
        return exp(x);
    }
    return log(exp(x) + 1.0);
}

fn activate(x: f32, act: u32) -> f32 {
    switch act {
        case 1u: { return logistic(x); }
        case 2u: { return select(0.0, x, x > 0.0); }
        case 3u: { return select(0.1 * x, x, x > 0.0); }
        case 4u: { return tanh_d(x); }
        case 5u: { return x * tanh_d(softplus(x)); }
        case 6u: { return x * logistic(x); }
        case 7u: {
            if (x > 0.0) { return x; }
            if (x > -2.0) { return x * x * 0.5 + x; }
            return 0.0;
        }
        default: { return x; }
    }
}

fn gradient(x: f32, y: f32, act: u32) -> f32 {
    switch act {
        case 1u: { return y * (1.0 - y); }
        case 2u: { return select(0.0, 1.0, y > 0.0); }
        case 3u: { return select(0.1, 1.0, y > 0.0); }
        case 4u: { return 1.0 - y * y; }
        case 5u: {
            let sp = softplus(x);
            let grad_sp = 1.0 - exp(-sp);
            let tsp = tanh_d(sp);
            let grad_tsp = (1.0 - tsp * tsp) * grad_sp;
            return x * grad_tsp + tsp;
        }
        case 6u: {
            let s = logistic(x);
            let sy = x * s;
            return sy + s * (1.0 - sy);
        }
        case 7u: {
            if (x > 0.0) { return 1.0; }
            if (x > -2.0) { return x + 1.0; }
            return 0.0;
        }
        default: { return 1.0; }
    }
}

// y (b2) = f(x (b1)); y may alias x.
@compute @workgroup_size(256)
fn act_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = (wid.y * nwg.x + wid.x) * 256u + lid.x;
    if (i >= p.n) { return; }
    b2[p.o2 + i] = activate(b1[p.o1 + i], p.act);
}

// x = b1, y = b2, dy = b3, dx (b4) = dy * f'(x, y); dx may alias dy.
@compute @workgroup_size(256)
fn act_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = (wid.y * nwg.x + wid.x) * 256u + lid.x;
    if (i >= p.n) { return; }
    b4[p.o4 + i] = b3[p.o3 + i] * gradient(b1[p.o1 + i], b2[p.o2 + i], p.act);
}
