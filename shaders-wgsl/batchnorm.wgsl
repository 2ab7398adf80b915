// Batch normalisation (darknet-spec §0): batch variance Σ(x−mean)²/(N−1) with N = batch·spatial,
// eps 1e-5 inside the root, running stats r = 0.99 r + 0.01 batch_stat, exact backward.
// Per-channel reductions: one workgroup per channel, fixed strided partial sums + fixed tree.
// bn_stats with form 1 instead sums as Darknet's CPU build does (BnStats::DarknetCpu, for fidelity
// tests only).

struct P {
    batch: u32,
    channels: u32,
    spatial: u32,
    o1: u32,
    o2: u32,
    o3: u32,
    o4: u32,
    o5: u32,
    o6: u32,
    o7: u32,
    // bn_backward: 0 exact derivative, 1 Darknet's CPU formula (see BnBackward).
    // bn_stats: 0 accurate sums, 1 Darknet's CPU sums (see BnStats) with the f32 bits of its
    // scales 1/N and 1/(N−1) in o6 and o7.
    form: u32,
    pad1: u32,
}

const EPS: f32 = 1e-5;

@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> b1: array<f32>;
@group(0) @binding(2) var<storage, read_write> b2: array<f32>;
@group(0) @binding(3) var<storage, read_write> b3: array<f32>;
@group(0) @binding(4) var<storage, read_write> b4: array<f32>;
@group(0) @binding(5) var<storage, read_write> b5: array<f32>;
@group(0) @binding(6) var<storage, read_write> b6: array<f32>;
@group(0) @binding(7) var<storage, read_write> b7: array<f32>;

var<workgroup> red: array<f32, 256>;
var<workgroup> red2: array<f32, 256>;

fn tree_sum(lid: u32, v: f32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s = s >> 1u) {
        if (lid < s) {
            red[lid] = red[lid] + red[lid + s];
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

// Two sums at once (same tree shape as tree_sum).
fn tree_sum2(lid: u32, v: vec2<f32>) -> vec2<f32> {
    red[lid] = v.x;
    red2[lid] = v.y;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s = s >> 1u) {
        if (lid < s) {
            red[lid] = red[lid] + red[lid + s];
            red2[lid] = red2[lid] + red2[lid + s];
        }
        workgroupBarrier();
    }
    let r = vec2<f32>(red[0], red2[0]);
    workgroupBarrier();
    return r;
}

fn channel_of(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.y * nwg.x + wid.x;
}

// Batch statistics of channel c → mean (b2), var (b3); rolling_mean (b4), rolling_var (b5) updated.
fn store_stats(c: u32, mean: f32, variance: f32) {
    b2[p.o2 + c] = mean;
    b3[p.o3 + c] = variance;
    b4[p.o4 + c] = 0.99 * b4[p.o4 + c] + 0.01 * mean;
    b5[p.o5 + c] = 0.99 * b5[p.o5 + c] + 0.01 * variance;
}

// Darknet's mean_cpu/variance_cpu: one f32 running sum over the channel's N values, element by
// element in (image, position) order (squares: of x − mean). Darknet adds each double pow(d, 2)
// to the f32 sum with one rounding; fma does the same where the device fuses it (else d·d is
// rounded once more, far below the sum's own rounding).
// llvmpipe silently ends a loop after 65535 iterations of the SIMD group running it (8 or 16
// invocations), so the sum is cut into turns of ≤ 16384 values, handed along the workgroup: turn
// t, values [t·chunk, (t+1)·chunk), belongs to invocation (t % 16)·16 + t / 16, which adds it
// after turn t − 1; up to 16 turns land in 16 different SIMD groups (exact up to N = 2^19 there).
fn darknet_cpu_sum(lid: u32, c: u32, mean: f32, squares: bool) -> f32 {
    let n = p.batch * p.spatial;
    let turns = clamp((n + 16383u) / 16384u, 1u, 256u);
    let chunk = (n + turns - 1u) / turns;
    if (lid == 0u) {
        red[0] = 0.0;
    }
    workgroupBarrier();
    for (var t = 0u; t < turns; t++) {
        if (lid == (t % 16u) * 16u + t / 16u) {
            var s = red[0];
            for (var k = t * chunk; k < min((t + 1u) * chunk, n); k++) {
                let v = b1[p.o1 + ((k / p.spatial) * p.channels + c) * p.spatial + k % p.spatial];
                if (squares) {
                    let d = v - mean;
                    s = fma(d, d, s);
                } else {
                    s = s + v;
                }
            }
            red[0] = s;
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

// x = b1 → mean (b2), var (b3); rolling_mean (b4), rolling_var (b5) updated.
@compute @workgroup_size(256)
fn bn_stats(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let c = channel_of(wid, nwg);
    let valid = c < p.channels;
    if (p.form == 1u) {
        if (!valid) {
            return;
        }
        // Darknet's f32 scales, 1/N and 1/(N−1), multiplied rather than divided.
        let mean = darknet_cpu_sum(lid.x, c, 0.0, false) * bitcast<f32>(p.o6);
        let variance = darknet_cpu_sum(lid.x, c, mean, true) * bitcast<f32>(p.o7);
        if (lid.x == 0u) {
            store_stats(c, mean, variance);
        }
        return;
    }
    let n = f32(p.batch * p.spatial);
    var s = 0.0;
    if (valid) {
        for (var b = 0u; b < p.batch; b++) {
            let base = p.o1 + (b * p.channels + c) * p.spatial;
            for (var i = lid.x; i < p.spatial; i += 256u) {
                s = s + b1[base + i];
            }
        }
    }
    let mean = tree_sum(lid.x, s) / n;
    var q = 0.0;
    if (valid) {
        for (var b = 0u; b < p.batch; b++) {
            let base = p.o1 + (b * p.channels + c) * p.spatial;
            for (var i = lid.x; i < p.spatial; i += 256u) {
                let d = b1[base + i] - mean;
                q = q + d * d;
            }
        }
    }
    let variance = tree_sum(lid.x, q) / (n - 1.0);
    if (lid.x == 0u && valid) {
        store_stats(c, mean, variance);
    }
}

// x = b1, y = b2, x_norm = b3, mean = b4, var = b5, gamma = b6, beta = b7. x may alias y.
@compute @workgroup_size(256)
fn bn_normalize(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = (wid.y * nwg.x + wid.x) * 256u + lid.x;
    if (i >= p.batch * p.channels * p.spatial) { return; }
    let c = (i / p.spatial) % p.channels;
    let xn = (b1[p.o1 + i] - b4[p.o4 + c]) / sqrt(b5[p.o5 + c] + EPS);
    b3[p.o3 + i] = xn;
    b2[p.o2 + i] = b6[p.o6 + c] * xn + b7[p.o7 + c];
}

// x = b1, y = b2, rolling_mean = b3, rolling_var = b4, gamma = b5, beta = b6. x may alias y.
@compute @workgroup_size(256)
fn bn_infer(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = (wid.y * nwg.x + wid.x) * 256u + lid.x;
    if (i >= p.batch * p.channels * p.spatial) { return; }
    let c = (i / p.spatial) % p.channels;
    let xn = (b1[p.o1 + i] - b3[p.o3 + c]) / sqrt(b4[p.o4 + c] + EPS);
    b2[p.o2 + i] = b5[p.o5 + c] * xn + b6[p.o6 + c];
}

// dy = b1, x_norm = b2, var = b3, gamma = b4, dgamma = b5 (+=), dbeta = b6 (+=), dx = b7 (=).
// dx may alias dy: each invocation rewrites exactly the elements it read in the reduction phase.
@compute @workgroup_size(256)
fn bn_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let c = channel_of(wid, nwg);
    let valid = c < p.channels;
    var s = vec2<f32>(0.0, 0.0);
    if (valid) {
        for (var b = 0u; b < p.batch; b++) {
            let base = (b * p.channels + c) * p.spatial;
            for (var i = lid.x; i < p.spatial; i += 256u) {
                let dy = b1[p.o1 + base + i];
                s = s + vec2<f32>(dy, dy * b2[p.o2 + base + i]);
            }
        }
    }
    let sums = tree_sum2(lid.x, s);
    if (!valid) {
        return;
    }
    if (lid.x == 0u) {
        b5[p.o5 + c] = b5[p.o5 + c] + sums.y;
        b6[p.o6 + c] = b6[p.o6 + c] + sums.x;
    }
    let n = f32(p.batch * p.spatial);
    let mean_dy = sums.x / n;
    let darknet_cpu = p.form == 1u;
    let proj = select(sums.y / max(n - 1.0, 1.0), sums.y / n, darknet_cpu);
    let k = b4[p.o4 + c] / sqrt(b3[p.o3 + c] + EPS);
    let k_direct = select(k, b4[p.o4 + c] / (sqrt(b3[p.o3 + c]) + EPS), darknet_cpu);
    for (var b = 0u; b < p.batch; b++) {
        let base = (b * p.channels + c) * p.spatial;
        for (var i = lid.x; i < p.spatial; i += 256u) {
            let dy = b1[p.o1 + base + i];
            let xn = b2[p.o2 + base + i];
            b7[p.o7 + base + i] = k_direct * dy - k * (mean_dy + xn * proj);
        }
    }
}
