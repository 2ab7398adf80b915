// Convolution as implicit GEMM in fp32, C[m][n] (=|+=) Σ_k A[m][k]·B[k][n], the im2col matrix never
// stored; the GEMMs, params and loaders are described in include/conv_gather.wgsl.
//
// Register blocking: the generated preamble fixes the tile (TY, TX, TM, TN, BK) and the kernel size
// KS the index arithmetic is specialised for (0 = any size, read from p.size). 256 invocations as
// TY × TX; each owns TM × TN outputs (rows (ty + TY·i)·4 + r, columns (tx + TX·j)·4 + q), so a
// workgroup owns a BM × BN block of C with BM = TY·TM, BN = TX·TN. K is walked BK at a time: every
// invocation loads its share of the next A and B tiles into registers while the current tiles in
// workgroup memory are multiplied (vec4 reads, TM·TN FMAs per k), then the registers are stored.
// Index decoding happens once per invocation (its fixed B column) and once per tile (its k row),
// never per multiply. Each output sums K in one fixed order, whatever the tile: deterministic.
//
// The group g is wid.y / m_tiles. conv_backward_weights walks K as (image, pixel-tile) pairs that
// never straddle an image; it may split them over wid.z into per-split partials (b4) that
// conv_splitk_reduce then adds in split order.

const TM4: u32 = TM / 4u;
const TN4: u32 = TN / 4u;

// The column path's f16 im2col matrix, two values per word (include/conv_gather.wgsl).
@group(0) @binding(5) var<storage, read_write> b5: array<vec4<u32>>;

// Value (k, n) of the f16 im2col matrix, 0 outside its kp × batch·ohwp.
fn col_value(k: u32, n: u32) -> f32 {
    let width = p.batch * p.ohwp; // a multiple of 16: rows start on whole vec4 words
    if (k >= p.kp || n >= width) {
        return 0.0;
    }
    let half = k * (width / 2u) + n / 2u;
    let word = b5[p.o5 + half / 4u][half % 4u];
    return f16_to_f32((word >> (16u * (n % 2u))) & 0xffffu);
}

// Value (m, k) of the packed f16 weights (rows past the real ones are zero), 0 past kp.
fn col_a_value(m: u32, k: u32) -> f32 {
    if (k >= p.kp) {
        return 0.0;
    }
    let half = m * p.kp + k;
    let word = 4u * p.oa + half / 2u;
    return f16_to_f32((b5[word / 4u][word % 4u] >> (16u * (k % 2u))) & 0xffffu);
}

var<workgroup> As: array<vec4<f32>, BK * BM / 4u>; // [k][m]
var<workgroup> Bs: array<vec4<f32>, BK * BN / 4u>; // [k][n]

var<private> acc: array<vec4<f32>, TM * TN4>;     // [row TM][column group TN4]
// Output column offsets of this invocation's TN columns (or 0xffffffff past the edge).
var<private> ccol: array<u32, TN>;


fn store_a(t: u32) {
    for (var i = 0u; i < LA; i++) {
        let e = t + NT * i;
        let kl = e % BK;
        let ml = e / BK;
        let s = kl * BM + ml;
        As[s / 4u][s % 4u] = ra[i];
    }
}

// B values of invocation t sit at (kl_i, nl) with nl = t % BN (forward, backward data).
fn store_b_rows(t: u32) {
    let nl = t % BN;
    for (var i = 0u; i < LB; i++) {
        let kl = t / BN + (NT / BN) * i;
        let s = kl * BN + nl;
        Bs[s / 4u][s % 4u] = rb[i];
    }
}

// B values of invocation t sit at (kl, nl_i) with kl = t % BK (backward weights).
fn store_b_cols(t: u32) {
    let kl = t % BK;
    for (var i = 0u; i < LB; i++) {
        let nl = t / BK + (NT / BK) * i;
        let s = kl * BN + nl;
        Bs[s / 4u][s % 4u] = rb[i];
    }
}

fn clear_acc() {
    for (var q = 0u; q < TM * TN4; q++) {
        acc[q] = vec4<f32>(0.0);
    }
}

// Row m_local of acc row index (i, r).
fn row_of(ty: u32, i: u32, r: u32) -> u32 {
    return (ty + TY * i) * 4u + r;
}

fn col_of(tx: u32, j: u32, q: u32) -> u32 {
    return (tx + TX * j) * 4u + q;
}


// ---- the three GEMMs (operands and output as in include/conv_gather.wgsl) ----------------------

@compute @workgroup_size(256)
fn conv_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let g = wid.y / p.m_tiles;
    let m0 = (wid.y % p.m_tiles) * BM;
    let n0 = (wid.z * nwg.x + wid.x) * BN;
    let ty = t / TX;
    let tx = t % TX;
    let ohw = p.oh * p.ow;
    let col = fwd_column(t, g, n0);
    let tiles = (p.k + BK - 1u) / BK;

    clear_acc();
    load_fwd(t, g, m0, 0u, col.ok, col.xbase, col.iy0, col.ix0);
    store_a(t);
    store_b_rows(t);
    workgroupBarrier();
    for (var kt = 0u; kt < tiles; kt++) {
        let more = kt + 1u < tiles;
        if (more) {
            load_fwd(t, g, m0, (kt + 1u) * BK, col.ok, col.xbase, col.iy0, col.ix0);
        }
        multiply_tile(ty, tx, t);
        workgroupBarrier();
        if (more) {
            store_a(t);
            store_b_rows(t);
        }
        workgroupBarrier();
    }

    for (var j = 0u; j < TN4; j++) {
        for (var q = 0u; q < 4u; q++) {
            ccol[j * 4u + q] = fwd_out_col(n0 + col_of(tx, j, q));
        }
    }
    for (var i = 0u; i < TM4; i++) {
        for (var r = 0u; r < 4u; r++) {
            let m = m0 + row_of(ty, i, r);
            if (m < p.m) {
                let f = g * p.mg + m;
                var bias = 0.0;
                if (p.has_bias != 0u) {
                    bias = b4[p.o4 + f];
                }
                for (var j = 0u; j < TN4; j++) {
                    let v = acc_at((i * 4u + r) * TN4 + j);
                    for (var q = 0u; q < 4u; q++) {
                        let c = ccol[j * 4u + q];
                        if (c != 0xffffffffu) {
                            let o = p.o3 + c + f * ohw;
                            if (p.accumulate != 0u) {
                                b3[o] = b3[o] + v[q];
                            } else {
                                b3[o] = v[q] + bias;
                            }
                        }
                    }
                }
            }
        }
    }
}

@compute @workgroup_size(256)
fn conv_backward_data(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let g = wid.y / p.m_tiles;
    let m0 = (wid.y % p.m_tiles) * BM;
    let n0 = (wid.z * nwg.x + wid.x) * BN;
    let ty = t / TX;
    let tx = t % TX;
    let hw = p.h * p.w;
    let col = data_column(t, g, n0);
    let tiles = (p.k + BK - 1u) / BK;

    clear_acc();
    load_bwd_data(t, g, m0, 0u, col.ok, col.dybase, col.yp, col.xp);
    store_a(t);
    store_b_rows(t);
    workgroupBarrier();
    for (var kt = 0u; kt < tiles; kt++) {
        let more = kt + 1u < tiles;
        if (more) {
            load_bwd_data(t, g, m0, (kt + 1u) * BK, col.ok, col.dybase, col.yp, col.xp);
        }
        multiply_tile(ty, tx, t);
        workgroupBarrier();
        if (more) {
            store_a(t);
            store_b_rows(t);
        }
        workgroupBarrier();
    }

    for (var j = 0u; j < TN4; j++) {
        for (var qq = 0u; qq < 4u; qq++) {
            ccol[j * 4u + qq] = data_out_col(n0 + col_of(tx, j, qq));
        }
    }
    for (var i = 0u; i < TM4; i++) {
        for (var r = 0u; r < 4u; r++) {
            let m = m0 + row_of(ty, i, r);
            if (m < p.m) {
                let row = p.o3 + (g * p.cg + m) * hw;
                for (var j = 0u; j < TN4; j++) {
                    let v = acc_at((i * 4u + r) * TN4 + j);
                    for (var qq = 0u; qq < 4u; qq++) {
                        let c = ccol[j * 4u + qq];
                        if (c != 0xffffffffu) {
                            b3[row + c] = b3[row + c] + v[qq];
                        }
                    }
                }
            }
        }
    }
}

@compute @workgroup_size(256)
fn conv_backward_weights(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let g = wid.y / p.m_tiles;
    let m0 = (wid.y % p.m_tiles) * BM;
    let n0 = wid.x * BN;
    let split = wid.z;
    let ty = t / TX;
    let tx = t % TX;
    decode_weight_columns(t, g, n0);
    let ohw = p.oh * p.ow;
    let tiles_per_image = (ohw + BK - 1u) / BK;
    let first = split * p.kchunk;
    let last = min(first + p.kchunk, p.batch * tiles_per_image);

    clear_acc();
    if (first < last) {
        load_bwd_w(t, g, m0, first, tiles_per_image);
    }
    store_a(t);
    store_b_cols(t);
    workgroupBarrier();
    for (var kt = first; kt < last; kt++) {
        let more = kt + 1u < last;
        if (more) {
            load_bwd_w(t, g, m0, kt + 1u, tiles_per_image);
        }
        multiply_tile(ty, tx, t);
        workgroupBarrier();
        if (more) {
            store_a(t);
            store_b_cols(t);
        }
        workgroupBarrier();
    }

    for (var i = 0u; i < TM4; i++) {
        for (var r = 0u; r < 4u; r++) {
            let m = m0 + row_of(ty, i, r);
            if (m < p.m) {
                for (var j = 0u; j < TN4; j++) {
                    let v = acc_at((i * 4u + r) * TN4 + j);
                    for (var q = 0u; q < 4u; q++) {
                        write_weight_gradient(split, g * p.mg + m, n0 + col_of(tx, j, q), v[q]);
                    }
                }
            }
        }
    }
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

// Mixed precision's column path (include/conv_gather.wgsl): the f16 im2col matrix of p.batch
// images of x (b1) into b5 from word o5 on. Row k = (c, ky, kx) < kp, column b·ohwp + pixel;
// zero past K and past each image's ohw pixels (so the GEMMs read whole vec4 words without
// bounds of their own). One invocation per u32 word, two neighbouring columns. Groups of 1 only.
// The values are f16 already (mixed precision stores them so): packing them loses nothing.
// Integer conversion (include/half.wgsl), not pack2x16float, which the fp32 module may not need.
@compute @workgroup_size(256)
fn conv_im2col_f16(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = (wid.y * nwg.x + wid.x) * 256u + lid.x;
    let row_words = p.batch * p.ohwp / 2u;
    if (i >= p.kp * row_words) {
        return;
    }
    let k = i / row_words;
    let n = (i - k * row_words) * 2u;
    store_f16_pair(p.o5, i, im2col_value(k, n), im2col_value(k, n + 1u));
}

// Word i from the 16-byte word `at` of b5 on: lo and hi as f16 (lo in the low half).
fn store_f16_pair(at: u32, i: u32, lo: f32, hi: f32) {
    let q = 4u * at + i;
    b5[q / 4u][q % 4u] = f16_bits(lo) | (f16_bits(hi) << 16u);
}

fn im2col_value(k: u32, n: u32) -> f32 {
    let b = n / p.ohwp;
    let pix = n - b * p.ohwp;
    if (k >= p.k || pix >= p.oh * p.ow) {
        return 0.0;
    }
    let ks = ksize();
    let ss = ks * ks;
    let c = k / ss;
    let r = k - c * ss;
    let ky = r / ks;
    let kx = r - ky * ks;
    let oy = pix / p.ow;
    let ox = pix - oy * p.ow;
    let iy = i32(oy * p.stride + ky) - i32(p.pad);
    let ix = i32(ox * p.stride + kx) - i32(p.pad);
    if (iy < 0 || ix < 0 || iy >= i32(p.h) || ix >= i32(p.w)) {
        return 0.0;
    }
    return b1[p.o1 + (b * p.c + c) * p.h * p.w + u32(iy) * p.w + u32(ix)];
}

// The column path's A: the weights w (b1) as f16, p.m rows (a multiple of 128) of kp values
// from word oa of b5 on, zero past the real rows and K. Forward: row f, w[f][(c, ky, kx)]. With
// flip, the backward data of a stride-1 convolution as the forward of dy: row c,
// (f, ky, kx) ↦ w[f][c][size−1−ky][size−1−kx]. One invocation per word (two values).
@compute @workgroup_size(256)
fn conv_pack_weights_f16(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = (wid.y * nwg.x + wid.x) * 256u + lid.x;
    let row_words = p.kp / 2u;
    if (i >= p.m * row_words) {
        return;
    }
    let row = i / row_words;
    let k = (i - row * row_words) * 2u;
    store_f16_pair(p.oa, i, packed_weight(row, k), packed_weight(row, k + 1u));
}

fn packed_weight(row: u32, k: u32) -> f32 {
    let ss = p.size * p.size;
    if (p.flip == 0u) {
        if (row >= p.filters || k >= p.c * ss) {
            return 0.0;
        }
        return b1[p.o1 + row * p.c * ss + k];
    }
    if (row >= p.c || k >= p.filters * ss) {
        return 0.0;
    }
    let f = k / ss;
    let tap = k - f * ss;
    return b1[p.o1 + (f * p.c + row) * ss + ss - 1u - tap];
}
