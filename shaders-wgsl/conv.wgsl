// Convolution as implicit GEMM, C[m][n] (=|+=) Σ_k A[m][k]·B[k][n], the im2col matrix never stored.
//
// conv_forward          A = w           [mg × cg·s²]        B = im2col(x)     [cg·s² × batch·oh·ow]   C = y  (=)
// conv_backward_data    A = wᵀ (per g)  [cg × mg·s²]        B = gather(dy)    [mg·s² × batch·h·w]     C = dx (+=)
// conv_backward_weights A = dy          [mg × batch·oh·ow]  B = im2col(x)ᵀ                            C = dw (+=)
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
    m_tiles: u32,  // ceil(m / BM)
    o1: u32,
    o2: u32,
    o3: u32,
    o4: u32,
    kchunk: u32,   // conv_backward_weights: K tiles per split
    splits: u32,   // conv_backward_weights: number of K splits; 1 = add into dw directly
    total: u32,    // number of weights (split-K partial layout, conv_splitk_reduce)
    has_bias: u32, // conv_forward: add bias (b4) in the write-out
    // conv_backward_data, one stride phase: input pixels (py + stride·qy, px + stride·qx) for
    // qy < qh, qx < qw receive taps ky = ky0 + stride·jy (jy < nky), kx = kx0 + stride·jx (jx < nkx).
    py: u32,
    px: u32,
    qh: u32,
    qw: u32,
    ky0: u32,
    kx0: u32,
    nky: u32,
    nkx: u32,
}

@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> b1: array<f32>;
@group(0) @binding(2) var<storage, read_write> b2: array<f32>;
@group(0) @binding(3) var<storage, read_write> b3: array<f32>;
@group(0) @binding(4) var<storage, read_write> b4: array<f32>;

const NT: u32 = 256u;
const BM: u32 = TY * TM;
const BN: u32 = TX * TN;
const LA: u32 = BM * BK / NT;  // A values each invocation loads per tile
const LB: u32 = BK * BN / NT;  // B values each invocation loads per tile
const TM4: u32 = TM / 4u;
const TN4: u32 = TN / 4u;

var<workgroup> As: array<vec4<f32>, BK * BM / 4u>; // [k][m]
var<workgroup> Bs: array<vec4<f32>, BK * BN / 4u>; // [k][n]

var<private> acc: array<vec4<f32>, TM * TN4>;     // [row TM][column group TN4]
var<private> ra: array<f32, LA>;
var<private> rb: array<f32, LB>;
// Per-invocation B state fixed for the whole K walk (backward weights: one per B value it loads).
var<private> bcol: array<u32, LB>;
var<private> bky: array<u32, LB>;
var<private> bkx: array<u32, LB>;
// Output column offsets of this invocation's TN columns (or 0xffffffff past the edge).
var<private> ccol: array<u32, TN>;

fn ksize() -> u32 {
    return select(p.size, KS, KS != 0u);
}

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

fn multiply_tile(ty: u32, tx: u32) {
    for (var kk = 0u; kk < BK; kk++) {
        var a: array<vec4<f32>, TM4>;
        var b: array<vec4<f32>, TN4>;
        for (var i = 0u; i < TM4; i++) {
            a[i] = As[kk * (BM / 4u) + ty + TY * i];
        }
        for (var j = 0u; j < TN4; j++) {
            b[j] = Bs[kk * (BN / 4u) + tx + TX * j];
        }
        for (var i = 0u; i < TM4; i++) {
            for (var r = 0u; r < 4u; r++) {
                let av = vec4<f32>(a[i][r]);
                for (var j = 0u; j < TN4; j++) {
                    let q = (i * 4u + r) * TN4 + j;
                    acc[q] = fma(av, b[j], acc[q]);
                }
            }
        }
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

// ---- forward: y[b][g·mg + m][pix] = Σ_k w[g·mg + m][k] · x[b][g·cg + c][iy][ix] (+ bias) ------

fn load_fwd(t: u32, g: u32, m0: u32, k0: u32, n_ok: bool, xbase: u32, iy0: i32, ix0: i32) {
    for (var i = 0u; i < LA; i++) {
        let e = t + NT * i;
        let m = m0 + e / BK;
        let k = k0 + e % BK;
        var v = 0.0;
        if (m < p.m && k < p.k) {
            v = b2[p.o2 + (g * p.mg + m) * p.k + k];
        }
        ra[i] = v;
    }
    let ks = ksize();
    let ss = ks * ks;
    let hw = p.h * p.w;
    for (var i = 0u; i < LB; i++) {
        let k = k0 + t / BN + (NT / BN) * i;
        let c = k / ss;
        let r = k - c * ss;
        let ky = r / ks;
        let kx = r - ky * ks;
        let iy = iy0 + i32(ky);
        let ix = ix0 + i32(kx);
        var v = 0.0;
        if (n_ok && k < p.k && iy >= 0 && ix >= 0 && iy < i32(p.h) && ix < i32(p.w)) {
            v = b1[xbase + c * hw + u32(iy) * p.w + u32(ix)];
        }
        rb[i] = v;
    }
}

@compute @workgroup_size(256)
fn conv_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let g = wid.y / p.m_tiles;
    let m0 = (wid.y % p.m_tiles) * BM;
    let n0 = (wid.z * nwg.x + wid.x) * BN;
    let ty = t / TX;
    let tx = t % TX;
    let ohw = p.oh * p.ow;
    // This invocation's B column: output pixel (b, oy, ox).
    let n = n0 + t % BN;
    let n_ok = n < p.n;
    let b = n / ohw;
    let pix = n % ohw;
    let iy0 = i32((pix / p.ow) * p.stride) - i32(p.pad);
    let ix0 = i32((pix % p.ow) * p.stride) - i32(p.pad);
    let xbase = p.o1 + (b * p.c + g * p.cg) * p.h * p.w;
    let tiles = (p.k + BK - 1u) / BK;

    clear_acc();
    load_fwd(t, g, m0, 0u, n_ok, xbase, iy0, ix0);
    store_a(t);
    store_b_rows(t);
    workgroupBarrier();
    for (var kt = 0u; kt < tiles; kt++) {
        let more = kt + 1u < tiles;
        if (more) {
            load_fwd(t, g, m0, (kt + 1u) * BK, n_ok, xbase, iy0, ix0);
        }
        multiply_tile(ty, tx);
        workgroupBarrier();
        if (more) {
            store_a(t);
            store_b_rows(t);
        }
        workgroupBarrier();
    }

    for (var j = 0u; j < TN4; j++) {
        for (var q = 0u; q < 4u; q++) {
            let nn = n0 + col_of(tx, j, q);
            ccol[j * 4u + q] = select(0xffffffffu, (nn / ohw) * p.filters * ohw + nn % ohw, nn < p.n);
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
                    let v = acc[(i * 4u + r) * TN4 + j];
                    for (var q = 0u; q < 4u; q++) {
                        let col = ccol[j * 4u + q];
                        if (col != 0xffffffffu) {
                            b3[p.o3 + col + f * ohw] = v[q] + bias;
                        }
                    }
                }
            }
        }
    }
}

// ---- backward data: dx[b][g·cg + m][iy][ix] += Σ_(f,ky,kx) w[g·mg + f][m][ky][kx] · dy[b][g·mg + f][oy][ox]
//      with oy·stride = iy + pad − ky. With stride > 1 the host runs one dispatch per stride phase
//      (iy mod stride, ix mod stride): within a phase only every stride-th tap can reach a pixel,
//      so K holds just those taps and no multiply is wasted on the taps that never divide. ------

// Taps per row and column of this phase, and the stride; constants where the kernel size is
// specialised (then the host uses it for stride 1 only: every tap in one phase).
fn phase_nky() -> u32 {
    return select(p.nky, KS, KS != 0u);
}
fn phase_nkx() -> u32 {
    return select(p.nkx, KS, KS != 0u);
}
fn phase_stride() -> u32 {
    return select(p.stride, 1u, KS != 0u);
}

fn load_bwd_data(t: u32, g: u32, m0: u32, k0: u32, n_ok: bool, dybase: u32, yp: i32, xp: i32) {
    let ss = p.size * p.size;
    let nkx = phase_nkx();
    let nk = phase_nky() * nkx;
    let st = phase_stride();
    // A = wᵀ: all of this invocation's A values share one k (NT is a multiple of BK).
    let ka = k0 + t % BK;
    let fa = ka / nk;
    let ra_ = ka - fa * nk;
    let kya = p.ky0 + st * (ra_ / nkx);
    let kxa = p.kx0 + st * (ra_ % nkx);
    for (var i = 0u; i < LA; i++) {
        let m = m0 + (t + NT * i) / BK;
        var v = 0.0;
        if (m < p.m && ka < p.k) {
            v = b2[p.o2 + ((g * p.mg + fa) * p.cg + m) * ss + kya * p.size + kxa];
        }
        ra[i] = v;
    }
    let ohw = p.oh * p.ow;
    for (var i = 0u; i < LB; i++) {
        let k = k0 + t / BN + (NT / BN) * i;
        let f = k / nk;
        let r = k - f * nk;
        let jy = r / nkx;
        let ky = p.ky0 + st * jy;
        let kx = p.kx0 + st * (r - jy * nkx);
        // Within the phase, yp − ky is a multiple of the stride: the division is exact.
        let ty_ = yp - i32(ky);
        let tx_ = xp - i32(kx);
        var v = 0.0;
        if (n_ok && k < p.k && ty_ >= 0 && tx_ >= 0) {
            let oy = u32(ty_) / st;
            let ox = u32(tx_) / st;
            if (oy < p.oh && ox < p.ow) {
                v = b1[dybase + f * ohw + oy * p.ow + ox];
            }
        }
        rb[i] = v;
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
    let qhw = p.qh * p.qw;
    let st = phase_stride();
    // This invocation's B column: input pixel (b, py + stride·qy, px + stride·qx) of the phase.
    let n = n0 + t % BN;
    let n_ok = n < p.n;
    let b = n / qhw;
    let q = n % qhw;
    let yp = i32(p.py + st * (q / p.qw) + p.pad);
    let xp = i32(p.px + st * (q % p.qw) + p.pad);
    let dybase = p.o1 + (b * p.filters + g * p.mg) * p.oh * p.ow;
    let tiles = (p.k + BK - 1u) / BK;

    clear_acc();
    load_bwd_data(t, g, m0, 0u, n_ok, dybase, yp, xp);
    store_a(t);
    store_b_rows(t);
    workgroupBarrier();
    for (var kt = 0u; kt < tiles; kt++) {
        let more = kt + 1u < tiles;
        if (more) {
            load_bwd_data(t, g, m0, (kt + 1u) * BK, n_ok, dybase, yp, xp);
        }
        multiply_tile(ty, tx);
        workgroupBarrier();
        if (more) {
            store_a(t);
            store_b_rows(t);
        }
        workgroupBarrier();
    }

    for (var j = 0u; j < TN4; j++) {
        for (var qq = 0u; qq < 4u; qq++) {
            let nn = n0 + col_of(tx, j, qq);
            let r = nn % qhw;
            let pix = (p.py + st * (r / p.qw)) * p.w + p.px + st * (r % p.qw);
            ccol[j * 4u + qq] = select(0xffffffffu, (nn / qhw) * p.c * hw + pix, nn < p.n);
        }
    }
    for (var i = 0u; i < TM4; i++) {
        for (var r = 0u; r < 4u; r++) {
            let m = m0 + row_of(ty, i, r);
            if (m < p.m) {
                let row = p.o3 + (g * p.cg + m) * hw;
                for (var j = 0u; j < TN4; j++) {
                    let v = acc[(i * 4u + r) * TN4 + j];
                    for (var qq = 0u; qq < 4u; qq++) {
                        let col = ccol[j * 4u + qq];
                        if (col != 0xffffffffu) {
                            b3[row + col] = b3[row + col] + v[qq];
                        }
                    }
                }
            }
        }
    }
}

// ---- backward weights: dw[g·mg + m][(c,ky,kx)] += Σ_(b,pix) dy[b][g·mg + m][pix] · x[b][g·cg + c][iy][ix]
//      K is walked as `tiles` pixel tiles of BK per image; split s takes tiles [s·kchunk, (s+1)·kchunk).

fn load_bwd_w(t: u32, g: u32, m0: u32, tile: u32, tiles_per_image: u32) {
    let ohw = p.oh * p.ow;
    let b = tile / tiles_per_image;
    let pix = (tile - b * tiles_per_image) * BK + t % BK;
    let pix_ok = pix < ohw;
    // A = dy, k-contiguous: this invocation's A values share its pixel.
    let dyrow = p.o2 + (b * p.filters + g * p.mg) * ohw + pix;
    for (var i = 0u; i < LA; i++) {
        let m = m0 + (t + NT * i) / BK;
        var v = 0.0;
        if (pix_ok && m < p.m) {
            v = b2[dyrow + m * ohw];
        }
        ra[i] = v;
    }
    let oy = pix / p.ow;
    let ox = pix - oy * p.ow;
    let iy0 = i32(oy * p.stride) - i32(p.pad);
    let ix0 = i32(ox * p.stride) - i32(p.pad);
    let xbase = p.o1 + b * p.c * p.h * p.w;
    for (var i = 0u; i < LB; i++) {
        let iy = iy0 + i32(bky[i]);
        let ix = ix0 + i32(bkx[i]);
        var v = 0.0;
        if (pix_ok && bcol[i] != 0xffffffffu && iy >= 0 && ix >= 0 && iy < i32(p.h) && ix < i32(p.w)) {
            v = b1[xbase + bcol[i] + u32(iy) * p.w + u32(ix)];
        }
        rb[i] = v;
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
    let ks = ksize();
    let ss = ks * ks;
    let hw = p.h * p.w;
    // The B columns (c, ky, kx) this invocation loads, decoded once.
    for (var i = 0u; i < LB; i++) {
        let n = n0 + t / BK + (NT / BK) * i;
        let c = n / ss;
        let r = n - c * ss;
        bcol[i] = select(0xffffffffu, (g * p.cg + c) * hw, n < p.n);
        bky[i] = r / ks;
        bkx[i] = r - (r / ks) * ks;
    }
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
        multiply_tile(ty, tx);
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
                let row = (g * p.mg + m) * p.n;
                for (var j = 0u; j < TN4; j++) {
                    let v = acc[(i * 4u + r) * TN4 + j];
                    for (var q = 0u; q < 4u; q++) {
                        let nn = n0 + col_of(tx, j, q);
                        if (nn < p.n) {
                            if (p.splits == 1u) {
                                let o = p.o3 + row + nn;
                                b3[o] = b3[o] + v[q];
                            } else {
                                // Partial sums of this split, laid out like dw so the reduce is elementwise.
                                b4[p.o4 + split * p.total + row + nn] = v[q];
                            }
                        }
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
