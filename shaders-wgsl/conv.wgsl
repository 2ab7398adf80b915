// Convolution as implicit GEMM: C[m][n] (=|+=) Σ_k A[m][k]·B[k][n], the im2col matrix never stored.
// Tiles of 64×64 outputs, 16 of K at a time, 16×16 invocations each computing 4×4 outputs;
// workgroup memory 2 × 64×16 floats = 8 KiB. Sums run over K in one fixed order: deterministic.
//
// conv_forward         A = w            [mg × cg·s²]   B = im2col(x)   [cg·s² × batch·oh·ow]   C = y  (=)
// conv_backward_data   A = wᵀ (per g)   [cg × mg·s²]   B = gather(dy)  [mg·s² × batch·h·w]     C = dx (+=)
// conv_backward_weights A = dy          [mg × batch·oh·ow]  B = im2col(x)ᵀ                      C = dw (+=)
// The group g is wid.y / m_tiles. Backward weights may split K over wid.z into a scratch buffer
// (b4) that conv_splitk_reduce then sums in split order.

struct P {
    batch: u32,
    c: u32,
    h: u32,
    w: u32,
    filters: u32,
    size: u32,
    stride: u32,
    pad: u32,
    oh: u32,
    ow: u32,
    cg: u32,       // input channels per group
    mg: u32,       // filters per group
    m: u32,        // GEMM rows
    n: u32,        // GEMM columns
    k: u32,        // GEMM depth
    m_tiles: u32,  // ceil(m / 64)
    o1: u32,
    o2: u32,
    o3: u32,
    o4: u32,
    kchunk: u32,   // K per split (multiple of 16); = k rounded up when not split
    splits: u32,   // number of K splits (backward weights); 1 = write C directly
    total: u32,    // conv_splitk_reduce: number of weights
    has_bias: u32, // unused by this kernel
}

@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> b1: array<f32>;
@group(0) @binding(2) var<storage, read_write> b2: array<f32>;
@group(0) @binding(3) var<storage, read_write> b3: array<f32>;
@group(0) @binding(4) var<storage, read_write> b4: array<f32>;

const MODE_FWD: u32 = 0u;
const MODE_BWD_DATA: u32 = 1u;
const MODE_BWD_W: u32 = 2u;

var<workgroup> ta: array<f32, 1024>; // [16 k][64 m]
var<workgroup> tb: array<f32, 1024>; // [16 k][64 n]

// x[b][g*cg + c][oy*stride - pad + ky][ox*stride - pad + kx], 0 outside the image. x is b1.
fn im2col(b: u32, g: u32, pix: u32, kk: u32) -> f32 {
    let ss = p.size * p.size;
    let c = kk / ss;
    let r = kk % ss;
    let ky = r / p.size;
    let kx = r % p.size;
    let oy = pix / p.ow;
    let ox = pix % p.ow;
    let iy = i32(oy * p.stride + ky) - i32(p.pad);
    let ix = i32(ox * p.stride + kx) - i32(p.pad);
    if (iy < 0 || ix < 0 || iy >= i32(p.h) || ix >= i32(p.w)) {
        return 0.0;
    }
    return b1[p.o1 + ((b * p.c + g * p.cg + c) * p.h + u32(iy)) * p.w + u32(ix)];
}

fn load_a(mode: u32, g: u32, m: u32, k: u32) -> f32 {
    if (m >= p.m || k >= p.k) {
        return 0.0;
    }
    let ss = p.size * p.size;
    if (mode == MODE_FWD) {
        return b2[p.o2 + (g * p.mg + m) * p.k + k];
    } else if (mode == MODE_BWD_DATA) {
        let f = k / ss;
        let r = k % ss;
        return b2[p.o2 + ((g * p.mg + f) * p.cg + m) * ss + r];
    }
    // MODE_BWD_W: dy[b][g*mg + m][pix] with k = (b, pix)
    let ohw = p.oh * p.ow;
    let b = k / ohw;
    let pix = k % ohw;
    return b2[p.o2 + (b * p.filters + g * p.mg + m) * ohw + pix];
}

fn load_b(mode: u32, g: u32, k: u32, n: u32) -> f32 {
    if (k >= p.k || n >= p.n) {
        return 0.0;
    }
    let ohw = p.oh * p.ow;
    if (mode == MODE_FWD) {
        return im2col(n / ohw, g, n % ohw, k);
    } else if (mode == MODE_BWD_DATA) {
        // dy[b][g*mg + f][oy][ox] where input pixel (iy, ix) = (oy*stride - pad + ky, ...)
        let ss = p.size * p.size;
        let f = k / ss;
        let r = k % ss;
        let ky = r / p.size;
        let kx = r % p.size;
        let hw = p.h * p.w;
        let b = n / hw;
        let pix = n % hw;
        let ty = i32(pix / p.w + p.pad) - i32(ky);
        let tx = i32(pix % p.w + p.pad) - i32(kx);
        if (ty < 0 || tx < 0) {
            return 0.0;
        }
        let uy = u32(ty);
        let ux = u32(tx);
        if (uy % p.stride != 0u || ux % p.stride != 0u) {
            return 0.0;
        }
        let oy = uy / p.stride;
        let ox = ux / p.stride;
        if (oy >= p.oh || ox >= p.ow) {
            return 0.0;
        }
        return b1[p.o1 + ((b * p.filters + g * p.mg + f) * p.oh + oy) * p.ow + ox];
    }
    // MODE_BWD_W: im2col(x)ᵀ with k = (b, pix), n = (c, ky, kx)
    return im2col(k / ohw, g, k % ohw, n);
}

fn store(mode: u32, g: u32, split: u32, m: u32, n: u32, v: f32) {
    if (mode == MODE_FWD) {
        let ohw = p.oh * p.ow;
        let b = n / ohw;
        b3[p.o3 + (b * p.filters + g * p.mg + m) * ohw + n % ohw] = v;
    } else if (mode == MODE_BWD_DATA) {
        let hw = p.h * p.w;
        let b = n / hw;
        let i = p.o3 + (b * p.c + g * p.cg + m) * hw + n % hw;
        b3[i] = b3[i] + v;
    } else if (p.splits == 1u) {
        let i = p.o3 + (g * p.mg + m) * p.n + n;
        b3[i] = b3[i] + v;
    } else {
        // Partial sums of this split; laid out like dw so the reduce is elementwise.
        b4[p.o4 + split * p.total + (g * p.mg + m) * p.n + n] = v;
    }
}

fn gemm(mode: u32, lid: vec3<u32>, m_tile: u32, n_tile: u32, g: u32, split: u32) {
    let tx = lid.x;
    let ty = lid.y;
    let lin = ty * 16u + tx;
    let m0 = m_tile * 64u;
    let n0 = n_tile * 64u;
    let k_begin = split * p.kchunk;
    let k_end = min(p.k, k_begin + p.kchunk);
    var acc: array<f32, 16>;
    for (var i = 0u; i < 16u; i++) {
        acc[i] = 0.0;
    }
    for (var k0 = k_begin; k0 < k_end; k0 += 16u) {
        for (var i = 0u; i < 4u; i++) {
            let e = lin + 256u * i;
            let am = e / 16u;
            let ak = e % 16u;
            var av = 0.0;
            if (k0 + ak < k_end) {
                av = load_a(mode, g, m0 + am, k0 + ak);
            }
            ta[ak * 64u + am] = av;
            let bk = e / 64u;
            let bn = e % 64u;
            var bv = 0.0;
            if (k0 + bk < k_end) {
                bv = load_b(mode, g, k0 + bk, n0 + bn);
            }
            tb[bk * 64u + bn] = bv;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < 16u; kk++) {
            var a: array<f32, 4>;
            var b: array<f32, 4>;
            for (var i = 0u; i < 4u; i++) {
                a[i] = ta[kk * 64u + ty + 16u * i];
                b[i] = tb[kk * 64u + tx + 16u * i];
            }
            for (var i = 0u; i < 4u; i++) {
                for (var j = 0u; j < 4u; j++) {
                    acc[i * 4u + j] = acc[i * 4u + j] + a[i] * b[j];
                }
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let m = m0 + ty + 16u * i;
        for (var j = 0u; j < 4u; j++) {
            let n = n0 + tx + 16u * j;
            if (m < p.m && n < p.n) {
                store(mode, g, split, m, n, acc[i * 4u + j]);
            }
        }
    }
}

// Grid: x × z cover the n tiles (z only when x would exceed 65,535), y = m_tiles × groups.
@compute @workgroup_size(16, 16)
fn conv_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    gemm(MODE_FWD, lid, wid.y % p.m_tiles, wid.z * nwg.x + wid.x, wid.y / p.m_tiles, 0u);
}

@compute @workgroup_size(16, 16)
fn conv_backward_data(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    gemm(MODE_BWD_DATA, lid, wid.y % p.m_tiles, wid.z * nwg.x + wid.x, wid.y / p.m_tiles, 0u);
}

// Grid: x = n tiles, y = m_tiles × groups, z = K splits.
@compute @workgroup_size(16, 16)
fn conv_backward_weights(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    gemm(MODE_BWD_W, lid, wid.y % p.m_tiles, wid.x, wid.y / p.m_tiles, wid.z);
}

// dw (b3) += Σ_split partial (b4), in split order. 1-D over the weights.
@compute @workgroup_size(256)
fn conv_splitk_reduce(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = (wid.y * nwg.x + wid.x) * 256u + lid.x;
    if (i >= p.total) {
        return;
    }
    var s = 0.0;
    for (var z = 0u; z < p.splits; z++) {
        s = s + b4[p.o4 + z * p.total + i];
    }
    b3[p.o3 + i] = b3[p.o3 + i] + s;
}
