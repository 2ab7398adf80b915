// Batch normalisation (darknet-spec §0): batch variance Σ(x−mean)²/(N−1) with N = batch·spatial,
// eps 1e-5 inside the root, running stats r = 0.99 r + 0.01 batch_stat, exact backward.
//
// Statistics: bn_partials gives every (channel, chunk) a workgroup (include/reduce.wgsl) that
// writes the chunk's mean and Σ(x−mean_chunk)²; bn_combine merges a channel's chunks in chunk
// order (Chan's pairwise update, as exact as the two-pass formula). bn_normalize then writes
// x_norm and y = act(gamma·x_norm + beta), the activation fused in (ACT_LINEAR: plain batch norm).
// Backward mirrors it: bn_backward_partials sums dz and dz·x_norm per chunk, where dz is the
// gradient before the fused activation (recomputing the pre-activation gamma·x_norm + beta where
// the activation's derivative needs it); bn_backward_combine accumulates dgamma/dbeta and the
// channel's coefficients; bn_backward_apply writes dx elementwise.
// With store_f16 the kernels round what mixed precision stores in f16 as they read or write it,
// instead of a rounding pass over memory of their own (include/half.wgsl).
// bn_stats_darknet_cpu instead sums the statistics as Darknet's CPU build does (BnStats::DarknetCpu,
// for fidelity tests only).

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
    o8: u32,
    // bn_backward_*: BN_EXACT or BN_DARKNET_CPU (see BnBackward).
    form: u32,
    // Fused activation (ACT_*); ACT_LINEAR for plain batch norm.
    act: u32,
    // bn_normalize: 1 = also write the pre-activation to b8.
    has_pre: u32,
    // Chunking of each channel (include/reduce.wgsl), and where the backward coefficients sit in
    // the scratch (float index after the partials).
    chunks: u32,
    ppc: u32,
    pieces: u32,
    piece_len: u32,
    coefs: u32,
    // bn_stats_darknet_cpu: Darknet's f32 scales 1/N and 1/(N − 1).
    inv_n: f32,
    inv_n1: f32,
    // Mixed precision: 1 = the tensor passed on is stored in f16. bn_normalize rounds y (the
    // next layer's input), the backward rounds dy where it reads it and dx where it writes it
    // (the convolution's gradient operand); x_norm, the pre-activation and the sums stay f32.
    store_f16: u32,
}

const EPS: f32 = 1e-5;

// v as mixed precision stores the tensor it belongs to (store_f16), else as it is.
fn as_stored(v: f32) -> f32 {
    return select(v, round_f16_value(v), p.store_f16 != 0u);
}

@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> b1: array<f32>;
@group(0) @binding(2) var<storage, read_write> b2: array<f32>;
@group(0) @binding(3) var<storage, read_write> b3: array<f32>;
@group(0) @binding(4) var<storage, read_write> b4: array<f32>;
@group(0) @binding(5) var<storage, read_write> b5: array<f32>;
@group(0) @binding(6) var<storage, read_write> b6: array<f32>;
@group(0) @binding(7) var<storage, read_write> b7: array<f32>;
@group(0) @binding(8) var<storage, read_write> b8: array<f32>;

fn flat(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.y * nwg.x + wid.x) * 256u + lid;
}

// The activation's derivative needs its input (not only its output).
fn needs_input(act_param: u32) -> bool {
    let act = act_code(act_param);
    return act == ACT_MISH || act == ACT_SWISH || act == ACT_HARD_MISH;
}

fn chunk_of(q: u32) -> vec4<u32> {
    return chunk_range(q, p.batch, p.spatial, p.ppc, p.pieces, p.piece_len);
}

// x = b1 → scratch (b2) [o2 + (q·channels + c)·2 ..] = (chunk mean, Σ(x − chunk mean)²).
// Workgroup (flat) = q·channels + c. Partials are chunk-major so that a dispatch over a range of
// images (a tensor larger than one binding, gpu/chunk.rs) writes one contiguous block of them.
@compute @workgroup_size(RED_WG)
fn bn_partials(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let g = wid.y * nwg.x + wid.x;
    let valid = g < p.channels * p.chunks;
    let c = g % p.channels;
    let r = chunk_of(g / p.channels);
    let len = r.w - r.z;
    // Tree lane lid + RED_WG·a sums its pixels (every 256th from it) in component a.
    var s = vec4<f32>(0.0);
    if (valid) {
        for (var b = r.x; b < r.y; b++) {
            let base = p.o1 + (b * p.channels + c) * p.spatial + r.z;
            for (var i = lid; i < len; i += 256u) {
                s.x = s.x + b1[base + i];
                for (var a = 1u; a < RED_LANES; a++) {
                    if (i + a * RED_WG < len) {
                        s[a] = s[a] + b1[base + i + a * RED_WG];
                    }
                }
            }
        }
    }
    let mean = tree_sum_lanes(lid, s) / f32(max(chunk_count(r), 1u));
    var q = vec4<f32>(0.0);
    if (valid) {
        for (var b = r.x; b < r.y; b++) {
            let base = p.o1 + (b * p.channels + c) * p.spatial + r.z;
            for (var i = lid; i < len; i += 256u) {
                let d = b1[base + i] - mean;
                q.x = q.x + d * d;
                for (var a = 1u; a < RED_LANES; a++) {
                    if (i + a * RED_WG < len) {
                        let e = b1[base + i + a * RED_WG] - mean;
                        q[a] = q[a] + e * e;
                    }
                }
            }
        }
    }
    let m2 = tree_sum_lanes(lid, q);
    if (lid == 0u && valid) {
        b2[p.o2 + 2u * g] = mean;
        b2[p.o2 + 2u * g + 1u] = m2;
    }
}

// The combines read a channel's chunk partials AHEAD at a time before merging them, so those
// reads are in flight together: one read after another, each waited on, took 0.3 ms for the 704
// chunks of yolov4-tiny's first layer at batch 64. The merge order, and so every bit, is the
// one-at-a-time loop's.
const AHEAD: u32 = 8u;

// Chunk partials q0 .. q0 + k − 1 (k ≤ AHEAD) of channel c, two floats each, from the scratch
// at b1, all read before any is used.
fn chunk_partials(q0: u32, k: u32, c: u32) -> array<vec2<f32>, AHEAD> {
    var part: array<vec2<f32>, AHEAD>;
    for (var j = 0u; j < AHEAD; j++) {
        if (j < k) {
            let at = p.o1 + 2u * ((q0 + j) * p.channels + c);
            part[j] = vec2<f32>(b1[at], b1[at + 1u]);
        }
    }
    return part;
}

// scratch = b1 → mean (b2), var (b3); rolling_mean (b4), rolling_var (b5) updated.
// One invocation per channel merges its chunks in order.
@compute @workgroup_size(256)
fn bn_combine(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let c = flat(wid, nwg, lid);
    if (c >= p.channels) { return; }
    var n = 0.0;
    var mean = 0.0;
    var m2 = 0.0;
    for (var q0 = 0u; q0 < p.chunks; q0 += AHEAD) {
        let k = min(AHEAD, p.chunks - q0);
        let part = chunk_partials(q0, k, c);
        for (var j = 0u; j < k; j++) {
            let nq = f32(chunk_count(chunk_of(q0 + j)));
            let total = n + nq;
            let d = part[j].x - mean;
            mean = mean + d * (nq / total);
            m2 = m2 + part[j].y + d * d * (n * nq / total);
            n = total;
        }
    }
    // N = 1 would divide by zero; the divisor is then 1, as on the CPU.
    let variance = m2 / max(n - 1.0, 1.0);
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

// x = b1 → mean (b2), var (b3); rolling_mean (b4), rolling_var (b5) updated, with Darknet-CPU's
// sums and its f32 scales multiplied rather than divided. One workgroup per channel.
@compute @workgroup_size(256)
fn bn_stats_darknet_cpu(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let c = wid.y * nwg.x + wid.x;
    if (c >= p.channels) {
        return;
    }
    let mean = darknet_cpu_sum(lid, c, 0.0, false) * p.inv_n;
    let variance = darknet_cpu_sum(lid, c, mean, true) * p.inv_n1;
    if (lid == 0u) {
        b2[p.o2 + c] = mean;
        b3[p.o3 + c] = variance;
        b4[p.o4 + c] = 0.99 * b4[p.o4 + c] + 0.01 * mean;
        b5[p.o5 + c] = 0.99 * b5[p.o5 + c] + 0.01 * variance;
    }
}

// x = b1, y = b2, x_norm = b3, mean = b4, var = b5, gamma = b6, beta = b7, pre-activation = b8
// (written when has_pre). x may alias y.
@compute @workgroup_size(256)
fn bn_normalize(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = flat(wid, nwg, lid);
    if (i >= p.batch * p.channels * p.spatial) { return; }
    let c = (i / p.spatial) % p.channels;
    let xn = (b1[p.o1 + i] - b4[p.o4 + c]) / sqrt(b5[p.o5 + c] + EPS);
    b3[p.o3 + i] = xn;
    let z = b6[p.o6 + c] * xn + b7[p.o7 + c];
    if (p.has_pre != 0u) {
        b8[p.o8 + i] = z;
    }
    let y = activate(z, p.act);
    b2[p.o2 + i] = as_stored(y);
}

// x = b1, y = b2, rolling_mean = b3, rolling_var = b4, gamma = b5, beta = b6. x may alias y.
@compute @workgroup_size(256)
fn bn_infer(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = flat(wid, nwg, lid);
    if (i >= p.batch * p.channels * p.spatial) { return; }
    let c = (i / p.spatial) % p.channels;
    let xn = (b1[p.o1 + i] - b3[p.o3 + c]) / sqrt(b4[p.o4 + c] + EPS);
    b2[p.o2 + i] = b5[p.o5 + c] * xn + b6[p.o6 + c];
}

// Gradient w.r.t. the batch-norm output z at element i of channel c: dy (b1) through the fused
// activation (output y = b2; input z = gamma·x_norm + beta, recomputed from b3, b4, b5).
fn grad_z(i: u32, c: u32) -> f32 {
    let dy = as_stored(b1[p.o1 + i]);
    if (act_code(p.act) == ACT_LINEAR) {
        return dy;
    }
    var z = 0.0;
    if (needs_input(p.act)) {
        z = b4[p.o4 + c] * b3[p.o3 + i] + b5[p.o5 + c];
    }
    return dy * gradient(z, b2[p.o2 + i], p.act);
}

// dy = b1, y = b2, x_norm = b3, gamma = b4, beta = b5 → scratch (b6) [o6 + (q·channels + c)·2 ..]
// = (Σ dz, Σ dz·x_norm) over the chunk.
@compute @workgroup_size(RED_WG)
fn bn_backward_partials(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let g = wid.y * nwg.x + wid.x;
    let valid = g < p.channels * p.chunks;
    let c = g % p.channels;
    let r = chunk_of(g / p.channels);
    let len = r.w - r.z;
    // Tree lane lid + RED_WG·a sums in component a (as bn_partials).
    var sd = vec4<f32>(0.0);
    var sx = vec4<f32>(0.0);
    if (valid) {
        for (var b = r.x; b < r.y; b++) {
            let base = (b * p.channels + c) * p.spatial + r.z;
            for (var k = lid; k < len; k += 256u) {
                let dz = grad_z(base + k, c);
                sd.x = sd.x + dz;
                sx.x = sx.x + dz * b3[p.o3 + base + k];
                for (var a = 1u; a < RED_LANES; a++) {
                    let ka = k + a * RED_WG;
                    if (ka < len) {
                        let dza = grad_z(base + ka, c);
                        sd[a] = sd[a] + dza;
                        sx[a] = sx[a] + dza * b3[p.o3 + base + ka];
                    }
                }
            }
        }
    }
    var sums: vec2<f32>;
    if (RED_WG == 256u) {
        sums = tree_sum2(lid, vec2<f32>(sd.x, sx.x));
    } else {
        sums = vec2<f32>(tree_sum_lanes(lid, sd), tree_sum_lanes(lid, sx));
    }
    if (lid == 0u && valid) {
        b6[p.o6 + 2u * g] = sums.x;
        b6[p.o6 + 2u * g + 1u] = sums.y;
    }
}

// scratch = b1, var = b2, gamma = b3, dgamma = b4 (+=), dbeta = b5 (+=). One invocation per
// channel sums its chunks in order and leaves the coefficients of bn_backward_apply in the
// scratch: (k_direct, k, mean(dz), projection).
@compute @workgroup_size(256)
fn bn_backward_combine(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let c = flat(wid, nwg, lid);
    if (c >= p.channels) { return; }
    var s = vec2<f32>(0.0, 0.0);
    for (var q0 = 0u; q0 < p.chunks; q0 += AHEAD) {
        let k = min(AHEAD, p.chunks - q0);
        let part = chunk_partials(q0, k, c);
        for (var j = 0u; j < k; j++) {
            s = s + part[j];
        }
    }
    b4[p.o4 + c] = b4[p.o4 + c] + s.y;
    b5[p.o5 + c] = b5[p.o5 + c] + s.x;
    let n = f32(p.batch * p.spatial);
    let darknet_cpu = p.form == BN_DARKNET_CPU;
    let proj = select(s.y / max(n - 1.0, 1.0), s.y / n, darknet_cpu);
    let gamma = b3[p.o3 + c];
    let k = gamma / sqrt(b2[p.o2 + c] + EPS);
    let k_direct = select(k, gamma / (sqrt(b2[p.o2 + c]) + EPS), darknet_cpu);
    let at = p.o1 + p.coefs + 4u * c;
    b1[at] = k_direct;
    b1[at + 1u] = k;
    b1[at + 2u] = s.x / n;
    b1[at + 3u] = proj;
}

// dy = b1, y = b2, x_norm = b3, gamma = b4, beta = b5, scratch = b6 → dx (b7) =
// k_direct·dz − k·(mean(dz) + x_norm·projection). dx may alias dy.
@compute @workgroup_size(256)
fn bn_backward_apply(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = flat(wid, nwg, lid);
    if (i >= p.batch * p.channels * p.spatial) { return; }
    let c = (i / p.spatial) % p.channels;
    let at = p.o6 + p.coefs + 4u * c;
    let dz = grad_z(i, c);
    let dx = b6[at] * dz - b6[at + 1u] * (b6[at + 2u] + b3[p.o3 + i] * b6[at + 3u]);
    b7[p.o7 + i] = as_stored(dx);
}
