// The convolutions' implicit-GEMM gather, shared by conv.wgsl (fp32 register tiles) and
// conv_mixed.wgsl (cooperative matrices on f16 operands): the params, the bindings, and the
// loaders that read the next K tile of A and B (the im2col matrix is never stored) into each
// invocation's registers ra/rb. Invocation t's values sit at fixed (k, m) and (k, n) places of
// the tile, so both modules store them into workgroup memory the same way.
//
// conv_forward          A = w           [mg × cg·s²]        B = im2col(x)     [cg·s² × batch·oh·ow]   C = y  (=)
// conv_backward_data    A = wᵀ (per g)  [cg × mg·s²]        B = gather(dy)    [mg·s² × batch·h·w]     C = dx (+=)
// conv_backward_weights A = dy          [mg × batch·oh·ow]  B = im2col(x)ᵀ                            C = dw (+=)
//
// The including module's preamble fixes BM, BN (through TY·TM and TX·TN), BK and KS.

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
    direct: u32,   // conv_mixed.wgsl: 1 lets whole tiles write out directly, 0 stages every tile
    // Mixed precision's column path (col = 1): forward and backward weights read B from the f16
    // im2col matrix conv_im2col_f16 wrote to b5 (at word o5), kp rows (K rounded up to 16, the
    // extra rows zero) of batch·ohwp columns (each image's ohw pixels rounded up to 16, zero
    // past ohw), two values per u32 word. The forward's columns are then those batch·ohwp.
    col: u32,
    kp: u32,
    ohwp: u32,
    o5: u32,
    // conv_forward: add to y instead of overwriting it (the column path's backward data, run as
    // the forward of dy with the flipped weights, adds into dx).
    accumulate: u32,
    // The column path's forward reads A from the f16 weights conv_pack_weights_f16 wrote to b5 at
    // word oa: rows padded to a multiple of 128 and K to kp, zeros past them (flip: the
    // backward data's weights, channel-major with the taps flipped).
    oa: u32,
    flip: u32,
}

@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> b1: array<f32>;
@group(0) @binding(2) var<storage, read_write> b2: array<f32>;
@group(0) @binding(3) var<storage, read_write> b3: array<f32>;
@group(0) @binding(4) var<storage, read_write> b4: array<f32>;
// Binding 5, the column path's f16 operands (bound, unread, by dispatches without it), is
// declared by each module: conv.wgsl reads it as words, conv_mixed.wgsl as f16 values. Each
// also defines col_value(k, n), the im2col matrix's value (k, n), and col_a_value(m, k), the
// packed weights' value (m, k), both zero outside them.

const NT: u32 = 256u;
const BM: u32 = TY * TM;
const BN: u32 = TX * TN;
const LA: u32 = BM * BK / NT;  // A values each invocation loads per tile
const LB: u32 = BK * BN / NT;  // B values each invocation loads per tile

var<private> ra: array<f32, LA>;
var<private> rb: array<f32, LB>;
// Per-invocation B state fixed for the whole K walk (backward weights: one per B value it loads).
var<private> bcol: array<u32, LB>;
var<private> bky: array<u32, LB>;
var<private> bkx: array<u32, LB>;

fn ksize() -> u32 {
    return select(p.size, KS, KS != 0u);
}

// ---- forward: y[b][g·mg + m][pix] = Σ_k w[g·mg + m][k] · x[b][g·cg + c][iy][ix] (+ bias) ------

fn load_fwd(t: u32, g: u32, m0: u32, k0: u32, n_ok: bool, xbase: u32, iy0: i32, ix0: i32) {
    if (p.col != 0u) {
        // Column path: A from the packed f16 weights, B column n0 + t % BN of the f16 im2col
        // matrix (n_ok: n < p.n).
        for (var i = 0u; i < LA; i++) {
            let e = t + NT * i;
            ra[i] = col_a_value(m0 + e / BK, k0 + e % BK);
        }
        let n = select(0xffffffffu, xbase, n_ok);
        for (var i = 0u; i < LB; i++) {
            rb[i] = col_value(k0 + t / BN + (NT / BN) * i, n);
        }
        return;
    }
    load_fwd_a(t, g, m0, k0);
    load_fwd_b(t, k0, n_ok, xbase, iy0, ix0);
}

// A = w, row-major [m][k]: element e = t + NT·i of the tile at (m, k) = (e / BK, e % BK).
fn load_fwd_a(t: u32, g: u32, m0: u32, k0: u32) {
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
}

// B = im2col(x) gathered from x: invocation t's column is fixed (xbase, iy0, ix0: fwd_column).
fn load_fwd_b(t: u32, k0: u32, n_ok: bool, xbase: u32, iy0: i32, ix0: i32) {
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

// The B column of invocation t in a forward tile starting at column n0: output pixel (b, oy, ox).
struct FwdColumn {
    ok: bool,
    xbase: u32,
    iy0: i32,
    ix0: i32,
}

fn fwd_column(t: u32, g: u32, n0: u32) -> FwdColumn {
    let ohw = p.oh * p.ow;
    let n = n0 + t % BN;
    if (p.col != 0u) {
        // The column path reads column n of the im2col matrix (load_fwd): carried as xbase.
        return FwdColumn(n < p.n, n, 0, 0);
    }
    let b = n / ohw;
    let pix = n % ohw;
    return FwdColumn(
        n < p.n,
        p.o1 + (b * p.c + g * p.cg) * p.h * p.w,
        i32((pix / p.ow) * p.stride) - i32(p.pad),
        i32((pix % p.ow) * p.stride) - i32(p.pad),
    );
}

// Columns per image of the forward GEMM: its pixels, or ohwp on the column path.
fn fwd_plane() -> u32 {
    return select(p.oh * p.ow, p.ohwp, p.col != 0u);
}

// Offset in y (less the filter's plane) of forward output column nn, or 0xffffffff past the edge
// (or on a column path's padding column).
fn fwd_out_col(nn: u32) -> u32 {
    let ohw = p.oh * p.ow;
    let plane = fwd_plane();
    let pix = nn % plane;
    return select(0xffffffffu, (nn / plane) * p.filters * ohw + pix, nn < p.n && pix < ohw);
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

// The B column of invocation t in a backward-data tile starting at column n0: input pixel
// (b, py + stride·qy, px + stride·qx) of the phase.
struct DataColumn {
    ok: bool,
    dybase: u32,
    yp: i32,
    xp: i32,
}

fn data_column(t: u32, g: u32, n0: u32) -> DataColumn {
    let qhw = p.qh * p.qw;
    let st = phase_stride();
    let n = n0 + t % BN;
    let b = n / qhw;
    let q = n % qhw;
    return DataColumn(
        n < p.n,
        p.o1 + (b * p.filters + g * p.mg) * p.oh * p.ow,
        i32(p.py + st * (q / p.qw) + p.pad),
        i32(p.px + st * (q % p.qw) + p.pad),
    );
}

// Offset in dx (less the channel's plane) of backward-data output column nn, or 0xffffffff.
fn data_out_col(nn: u32) -> u32 {
    let qhw = p.qh * p.qw;
    let st = phase_stride();
    let r = nn % qhw;
    let pix = (p.py + st * (r / p.qw)) * p.w + p.px + st * (r % p.qw);
    return select(0xffffffffu, (nn / qhw) * p.c * p.h * p.w + pix, nn < p.n);
}

// ---- backward weights: dw[g·mg + m][(c,ky,kx)] += Σ_(b,pix) dy[b][g·mg + m][pix] · x[b][g·cg + c][iy][ix]
//      K is walked as `tiles` pixel tiles of BK per image; split s takes tiles [s·kchunk, (s+1)·kchunk).

fn load_bwd_w(t: u32, g: u32, m0: u32, tile: u32, tiles_per_image: u32) {
    let ohw = p.oh * p.ow;
    let b = tile / tiles_per_image;
    let pix = (tile - b * tiles_per_image) * BK + t % BK;
    let pix_ok = pix < ohw;
    load_bwd_w_a(t, g, m0, b, pix);
    if (p.col != 0u) {
        // Column path: B[pixel][(c, ky, kx)] is the im2col matrix's [(c, ky, kx)][b·ohwp + pixel].
        for (var i = 0u; i < LB; i++) {
            var v = 0.0;
            if (pix_ok && bcol[i] != 0xffffffffu) {
                v = col_value(bcol[i], b * p.ohwp + pix);
            }
            rb[i] = v;
        }
        return;
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

// A = dy, k-contiguous: this invocation's A values share its pixel (zero from ohw on).
fn load_bwd_w_a(t: u32, g: u32, m0: u32, b: u32, pix: u32) {
    let ohw = p.oh * p.ow;
    let dyrow = p.o2 + (b * p.filters + g * p.mg) * ohw + pix;
    for (var i = 0u; i < LA; i++) {
        let m = m0 + (t + NT * i) / BK;
        var v = 0.0;
        if (pix < ohw && m < p.m) {
            v = b2[dyrow + m * ohw];
        }
        ra[i] = v;
    }
}

// The B columns (c, ky, kx) invocation t loads in a backward-weights tile starting at column n0,
// decoded once for the whole K walk.
fn decode_weight_columns(t: u32, g: u32, n0: u32) {
    let ks = ksize();
    let ss = ks * ks;
    let hw = p.h * p.w;
    for (var i = 0u; i < LB; i++) {
        let n = n0 + t / BK + (NT / BK) * i;
        let c = n / ss;
        let r = n - c * ss;
        // The column path reads row n of the im2col matrix instead of x's channel plane.
        bcol[i] = select(0xffffffffu, select((g * p.cg + c) * hw, n, p.col != 0u), n < p.n);
        bky[i] = r / ks;
        bkx[i] = r - (r / ks) * ks;
    }
}

// dw[f][nn] += v, or this split's partial of it (laid out like dw, so the reduce is elementwise).
fn write_weight_gradient(split: u32, f: u32, nn: u32, v: f32) {
    if (nn < p.n) {
        let row = f * p.n;
        if (p.splits == 1u) {
            let o = p.o3 + row + nn;
            b3[o] = b3[o] + v;
        } else {
            b4[p.o4 + split * p.total + row + nn] = v;
        }
    }
}
