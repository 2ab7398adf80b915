// Mixed precision's convolution GEMMs on cooperative matrices (tensor cores, simdgroup matrices):
// the same three implicit GEMMs as conv.wgsl, with the same gather (include/conv_gather.wgsl),
// but the tiles staged in workgroup memory as f16 and multiplied as 16×16×16 f16 matrices
// accumulating in f32. Mixed precision's pass gives these kernels operands that already hold f16
// values (layer outputs, gradients and the weights' f16 copies are rounded where they are
// stored), so staging them as f16 is exact and every product is the exact product the fp32
// kernels form; only the order of the f32 sums differs. Built only where the device offers f16,
// cooperative matrices of that shape and 32-wide subgroups (gpu/device.rs).
//
// 256 invocations = 8 subgroups of 32 (invocation t in subgroup t / 32), laid out SGR × SGC over
// the BM × BN tile; each subgroup owns 32 × (16·FN) of C as 2 × FN accumulator fragments. K is
// walked BK (16, 32 or 64) at a time, BK / 16 matrix steps per tile, the next tile loaded into
// registers while the current one is multiplied, as in conv.wgsl. With STAGES = 2 the staged
// tiles alternate between two halves of workgroup memory, so a tile needs one barrier instead
// of two. Results leave through a 16×16 f32 staging block per subgroup, so the write-out (bias,
// scattered columns, +=, split-K partials) is conv.wgsl's.
// On the column path (p.col, include/conv_gather.wgsl) the forward and backward-weights GEMMs
// read B from the f16 im2col matrix instead of gathering it from x: eight values per load.
// Workgroup memory: STAGES · (BM + BN) · BK f16 values + 8 KiB of staging: 16 KiB at 128 × 128
// with BK 16 and one stage (wgpu's default limit); deeper, double or padded tiles only where the
// device grants more (gpu/device.rs, mixed_tiling).

enable f16;
enable wgpu_cooperative_matrix;

const SGR: u32 = BM / 32u;
const SGC: u32 = 8u / SGR;
const FN: u32 = BN / (16u * SGC); // fragment columns per subgroup: 1, 2 or 4 (fragment rows: 2)

// A row-major [m][k] and B row-major [k][n] (forward, backward data) or column-major [n][k]
// (backward weights): each layout makes consecutive invocations store consecutive elements.
// Rows are padded by PAD values (gpu/device.rs, MixedTiling::pad) where the device grants the
// memory: unpadded, the rows of a 16×16 matrix load are 32 (A) or 256 (B) bytes apart and fall
// in the same few memory banks.
const AS: u32 = BK + PAD;                        // A's row stride ([m][k])
const BRS: u32 = BN + PAD;                       // B's row stride, row-major ([k][n])
const BCS: u32 = BK + PAD;                       // B's column stride, column-major ([n][k])
const A_STAGE: u32 = BM * AS;
const B_STAGE: u32 = BK * BN + PAD * max(BK, BN); // room for either layout
var<workgroup> Ah: array<f16, STAGES * A_STAGE>;
var<workgroup> Bh: array<f16, STAGES * B_STAGE>;
var<workgroup> Cs: array<f32, 2048>; // one 16×16 fragment per subgroup, row-major

// A subgroup's accumulators, rows i and columns j as cij (columns past FN unused). Kept as
// named values rather than an array so that nothing indexes them at run time.
struct Acc {
    c00: coop_mat16x16<f32, C>,
    c01: coop_mat16x16<f32, C>,
    c02: coop_mat16x16<f32, C>,
    c03: coop_mat16x16<f32, C>,
    c10: coop_mat16x16<f32, C>,
    c11: coop_mat16x16<f32, C>,
    c12: coop_mat16x16<f32, C>,
    c13: coop_mat16x16<f32, C>,
}

// Invocation t's A values sit at (kl, ml) = (e % BK, e / BK), e = t + NT·i: element e row-major.
fn store_a_h(t: u32, stage: u32) {
    for (var i = 0u; i < LA; i++) {
        let e = t + NT * i;
        Ah[stage * A_STAGE + (e / BK) * AS + e % BK] = f16(ra[i]);
    }
}

// B values of invocation t sit at (kl_i, nl) with nl = t % BN (forward, backward data).
fn store_b_rows_h(t: u32, stage: u32) {
    let nl = t % BN;
    for (var i = 0u; i < LB; i++) {
        Bh[stage * B_STAGE + (t / BN + (NT / BN) * i) * BRS + nl] = f16(rb[i]);
    }
}

// B values of invocation t sit at (kl, nl_i) = (t % BK, t / BK + (NT / BK)·i) (backward
// weights): column-major, that is element e = t + NT·i of the unpadded layout.
fn store_b_cols_h(t: u32, stage: u32) {
    for (var i = 0u; i < LB; i++) {
        let e = t + NT * i;
        Bh[stage * B_STAGE + (e / BK) * BCS + e % BK] = f16(rb[i]);
    }
}

// ---- the column path's B, 8 f16 values of a row of the im2col matrix (two vec4<f16>, 16 bytes)
// per load; CV loads per invocation and tile (BK·BN / 8 of them in all).
@group(0) @binding(5) var<storage, read_write> b5: array<vec4<f16>>;
const CVN: u32 = BK * BN / 8u;
const CV: u32 = (CVN + NT - 1u) / NT;
var<private> rv: array<vec4<f16>, 2u * CV>;

// Value (k, n) of the im2col matrix (include/conv_gather.wgsl's scalar loaders, which the
// kernels below do not take: they read 8 values at a time).
fn col_value(k: u32, n: u32) -> f32 {
    let width = p.batch * p.ohwp;
    if (k >= p.kp || n >= width) {
        return 0.0;
    }
    let h = 8u * p.o5 + k * width + n;
    return f32(b5[h / 4u][h % 4u]);
}

// Value (m, k) of the packed f16 weights (include/conv_gather.wgsl's scalar loaders; unused here).
fn col_a_value(m: u32, k: u32) -> f32 {
    if (k >= p.kp) {
        return 0.0;
    }
    let h = 8u * p.oa + m * p.kp + k;
    return f32(b5[h / 4u][h % 4u]);
}

// The 8 values from f16 index h on (h a multiple of 8), zero if !ok.
fn load8(h: u32, ok: bool) -> array<vec4<f16>, 2> {
    var r: array<vec4<f16>, 2>;
    if (ok) {
        r[0] = b5[h / 4u];
        r[1] = b5[h / 4u + 1u];
    }
    return r;
}

fn load8_b(i: u32, h: u32, ok: bool) {
    let r = load8(h, ok);
    rv[2u * i] = r[0];
    rv[2u * i + 1u] = r[1];
}

// The column path's A: rows m0.. of the packed weights, K from k0 (8 values per load), into
// stage `stage` of Ah ([m][k], BK per row) through rva.
const CVAN: u32 = BM * BK / 8u;
const CVA: u32 = (CVAN + NT - 1u) / NT;
var<private> rva: array<vec4<f16>, 2u * CVA>;

fn load_fwd_col_a(t: u32, m0: u32, k0: u32) {
    for (var i = 0u; i < CVA; i++) {
        let v = t + NT * i;
        let k = k0 + 8u * (v % (BK / 8u));
        let r = load8(8u * p.oa + (m0 + v / (BK / 8u)) * p.kp + k, v < CVAN && k < p.kp);
        rva[2u * i] = r[0];
        rva[2u * i + 1u] = r[1];
    }
}

fn store_col_a(t: u32, stage: u32) {
    for (var i = 0u; i < CVA; i++) {
        let v = t + NT * i;
        if (v < CVAN) {
            let base = stage * A_STAGE + (v / (BK / 8u)) * AS + 8u * (v % (BK / 8u));
            for (var j = 0u; j < 4u; j++) {
                Ah[base + j] = rva[2u * i][j];
                Ah[base + 4u + j] = rva[2u * i + 1u][j];
            }
        }
    }
}

// Forward: rows k0.. of the tile, columns n0.. (8 per load), zero past the matrix.
fn load_fwd_col_b(t: u32, k0: u32, n0: u32) {
    let width = p.batch * p.ohwp;
    for (var i = 0u; i < CV; i++) {
        let v = t + NT * i;
        let k = k0 + v / (BN / 8u);
        let n = n0 + 8u * (v % (BN / 8u));
        load8_b(i, 8u * p.o5 + k * width + n, v < CVN && k < p.kp && n < width);
    }
}

// Backward weights: weight columns n0.. are rows of the matrix, the tile's pixels pix0.. of
// image b its columns (8 per load), zero past them.
fn load_bwd_w_col_b(t: u32, n0: u32, b: u32, pix0: u32) {
    let width = p.batch * p.ohwp;
    for (var i = 0u; i < CV; i++) {
        let v = t + NT * i;
        let n = n0 + v / (BK / 8u);
        let pix = pix0 + 8u * (v % (BK / 8u));
        load8_b(i, 8u * p.o5 + n * width + b * p.ohwp + pix, v < CVN && n < p.n && pix < p.ohwp);
    }
}

// The loaded values into staging: load v's 8 values go to `base(v)` on; forward rows are BN
// apart in Bh (row-major), backward weights' columns BK apart (column-major), both as loaded.
fn store_col_b(t: u32, stage: u32, row_major: bool) {
    for (var i = 0u; i < CV; i++) {
        let v = t + NT * i;
        if (v < CVN) {
            var base: u32;
            if (row_major) {
                base = (v / (BN / 8u)) * BRS + 8u * (v % (BN / 8u));
            } else {
                base = (v / (BK / 8u)) * BCS + 8u * (v % (BK / 8u));
            }
            base += stage * B_STAGE;
            for (var j = 0u; j < 4u; j++) {
                Bh[base + j] = rv[2u * i][j];
                Bh[base + 4u + j] = rv[2u * i + 1u][j];
            }
        }
    }
}

// The next K tile of a forward GEMM into registers, and from them into stage `stage`.
fn fwd_load(t: u32, g: u32, m0: u32, n0: u32, k0: u32, col: FwdColumn) {
    if (p.col != 0u) {
        load_fwd_col_a(t, m0, k0);
        load_fwd_col_b(t, k0, n0);
    } else {
        load_fwd(t, g, m0, k0, col.ok, col.xbase, col.iy0, col.ix0);
    }
}

fn fwd_store(t: u32, stage: u32) {
    if (p.col != 0u) {
        store_col_a(t, stage);
        store_col_b(t, stage, true);
    } else {
        store_a_h(t, stage);
        store_b_rows_h(t, stage);
    }
}

// The same for backward weights' K tile `tile` (an image's pixel tile).
fn bwd_w_load(t: u32, g: u32, m0: u32, n0: u32, tile: u32, tiles_per_image: u32) {
    if (p.col != 0u) {
        let b = tile / tiles_per_image;
        let pix0 = (tile - b * tiles_per_image) * BK;
        load_bwd_w_a(t, g, m0, b, pix0 + t % BK);
        load_bwd_w_col_b(t, n0, b, pix0);
    } else {
        load_bwd_w(t, g, m0, tile, tiles_per_image);
    }
}

fn bwd_w_store(t: u32, stage: u32) {
    store_a_h(t, stage);
    if (p.col != 0u) {
        store_col_b(t, stage, false);
    } else {
        store_b_cols_h(t, stage);
    }
}

// The subgroup's B fragments for matrix step kk of the staged tile, from row-major (forward,
// backward data) or column-major (backward weights) staging; `base` is the stage's first value.
struct BFrags {
    b0: coop_mat16x16<f16, B>,
    b1: coop_mat16x16<f16, B>,
    b2: coop_mat16x16<f16, B>,
    b3: coop_mat16x16<f16, B>,
}

fn b_rows(sn: u32, stage: u32, kk: u32) -> BFrags {
    let base = stage * B_STAGE + 16u * kk * BRS + sn;
    var b: BFrags;
    b.b0 = coopLoadT<coop_mat16x16<f16, B>>(&Bh[base], BRS);
    if (FN > 1u) {
        b.b1 = coopLoadT<coop_mat16x16<f16, B>>(&Bh[base + 16u], BRS);
    }
    if (FN > 2u) {
        b.b2 = coopLoadT<coop_mat16x16<f16, B>>(&Bh[base + 32u], BRS);
        b.b3 = coopLoadT<coop_mat16x16<f16, B>>(&Bh[base + 48u], BRS);
    }
    return b;
}

fn b_cols(sn: u32, stage: u32, kk: u32) -> BFrags {
    let base = stage * B_STAGE + sn * BCS + 16u * kk;
    var b: BFrags;
    b.b0 = coopLoad<coop_mat16x16<f16, B>>(&Bh[base], BCS);
    if (FN > 1u) {
        b.b1 = coopLoad<coop_mat16x16<f16, B>>(&Bh[base + 16u * BCS], BCS);
    }
    if (FN > 2u) {
        b.b2 = coopLoad<coop_mat16x16<f16, B>>(&Bh[base + 32u * BCS], BCS);
        b.b3 = coopLoad<coop_mat16x16<f16, B>>(&Bh[base + 48u * BCS], BCS);
    }
    return b;
}

// acc += this subgroup's rows (from sm) of A's matrix step kk times its B fragments of that step.
fn multiply_coop(acc_in: Acc, sm: u32, stage: u32, kk: u32, b: BFrags) -> Acc {
    var acc = acc_in;
    let base = stage * A_STAGE + sm * AS + 16u * kk;
    let a0 = coopLoadT<coop_mat16x16<f16, A>>(&Ah[base], AS);
    let a1 = coopLoadT<coop_mat16x16<f16, A>>(&Ah[base + 16u * AS], AS);
    acc.c00 = coopMultiplyAdd(a0, b.b0, acc.c00);
    acc.c10 = coopMultiplyAdd(a1, b.b0, acc.c10);
    if (FN > 1u) {
        acc.c01 = coopMultiplyAdd(a0, b.b1, acc.c01);
        acc.c11 = coopMultiplyAdd(a1, b.b1, acc.c11);
    }
    if (FN > 2u) {
        acc.c02 = coopMultiplyAdd(a0, b.b2, acc.c02);
        acc.c12 = coopMultiplyAdd(a1, b.b2, acc.c12);
        acc.c03 = coopMultiplyAdd(a0, b.b3, acc.c03);
        acc.c13 = coopMultiplyAdd(a1, b.b3, acc.c13);
    }
    return acc;
}

// Fragment f (row f / FN, column f % FN) of the subgroup.
fn fragment(acc: Acc, f: u32) -> coop_mat16x16<f32, C> {
    switch (f % FN + 4u * (f / FN)) {
        case 0u: { return acc.c00; }
        case 1u: { return acc.c01; }
        case 2u: { return acc.c02; }
        case 3u: { return acc.c03; }
        case 4u: { return acc.c10; }
        case 5u: { return acc.c11; }
        case 6u: { return acc.c12; }
        default: { return acc.c13; }
    }
}

// Fragment f of the subgroup into its staging block (the caller then barriers and reads it).
fn stage_fragment(sg: u32, acc: Acc, f: u32) {
    // Arguments bound by lets first: naga 30 lowers a coopStore before it emits expressions
    // written inline in its arguments.
    let dst = &Cs[sg * 256u];
    let v = fragment(acc, f);
    coopStoreT(v, dst, 16u);
}

// Row and column within the workgroup tile of staged element idx (< 256) of fragment f.
fn frag_row(sm: u32, f: u32, idx: u32) -> u32 {
    return sm + 16u * (f / FN) + idx / 16u;
}
fn frag_col(sn: u32, f: u32, idx: u32) -> u32 {
    return sn + 16u * (f % FN) + idx % 16u;
}

// ---- direct write-out: where a workgroup's whole tile of C is a block of a row-major
// destination (rows `stride` apart, columns contiguous), each subgroup loads and stores its
// fragments there itself, with no staging and no barriers. Only where the host sets p.direct
// (off by default until a device run has measured it: gpu/conv.rs, coop_direct_from_env).
// Cooperative loads and stores want 16-byte alignment of the start and the stride (Vulkan),
// hence the multiples of 4. The test is on workgroup-uniform values, so every subgroup takes
// the same path.

fn direct_ok(tile_base: u32, stride: u32) -> bool {
    return p.direct != 0u && tile_base % 4u == 0u && stride % 4u == 0u;
}

// The subgroup's fragments of C from b3, rows `stride` apart from `base` (its first element).
fn load_acc_b3(base: u32, stride: u32) -> Acc {
    var acc: Acc;
    let r1 = base + 16u * stride;
    acc.c00 = coopLoadT<coop_mat16x16<f32, C>>(&b3[base], stride);
    acc.c10 = coopLoadT<coop_mat16x16<f32, C>>(&b3[r1], stride);
    if (FN > 1u) {
        acc.c01 = coopLoadT<coop_mat16x16<f32, C>>(&b3[base + 16u], stride);
        acc.c11 = coopLoadT<coop_mat16x16<f32, C>>(&b3[r1 + 16u], stride);
    }
    if (FN > 2u) {
        acc.c02 = coopLoadT<coop_mat16x16<f32, C>>(&b3[base + 32u], stride);
        acc.c12 = coopLoadT<coop_mat16x16<f32, C>>(&b3[r1 + 32u], stride);
        acc.c03 = coopLoadT<coop_mat16x16<f32, C>>(&b3[base + 48u], stride);
        acc.c13 = coopLoadT<coop_mat16x16<f32, C>>(&b3[r1 + 48u], stride);
    }
    return acc;
}

fn store_acc_b3(acc: Acc, base: u32, stride: u32) {
    for (var f = 0u; f < 2u * FN; f++) {
        // Bound by lets first (naga 30 emits a coopStore before inline argument expressions).
        let dst = &b3[base + 16u * (f / FN) * stride + 16u * (f % FN)];
        let v = fragment(acc, f);
        coopStoreT(v, dst, stride);
    }
}

// Split-K partials (backward weights) go to b4.
fn store_acc_b4(acc: Acc, base: u32, stride: u32) {
    for (var f = 0u; f < 2u * FN; f++) {
        // Bound by lets first (naga 30 emits a coopStore before inline argument expressions).
        let dst = &b4[base + 16u * (f / FN) * stride + 16u * (f % FN)];
        let v = fragment(acc, f);
        coopStoreT(v, dst, stride);
    }
}

@compute @workgroup_size(256)
fn conv_forward_mixed(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let g = wid.y / p.m_tiles;
    let m0 = (wid.y % p.m_tiles) * BM;
    let n0 = (wid.z * nwg.x + wid.x) * BN;
    let sg = t / 32u;
    let sm = (sg / SGC) * 32u;
    let sn = (sg % SGC) * 16u * FN;
    let ohw = p.oh * p.ow;
    let col = fwd_column(t, g, n0);
    let tiles = (p.k + BK - 1u) / BK;
    var acc: Acc;
    // Direct: no bias, every row in range, and the columns inside one image (then the tile is
    // a block of y: rows ohw apart, pixels contiguous).
    let plane = fwd_plane();
    let pix0 = n0 % plane;
    let tile_base = p.o3 + (n0 / plane) * p.filters * ohw + (g * p.mg + m0) * ohw + pix0;
    let direct = p.has_bias == 0u && m0 + BM <= p.m && n0 + BN <= p.n && pix0 + BN <= ohw && direct_ok(tile_base, ohw);
    if (direct && p.accumulate != 0u) {
        acc = load_acc_b3(tile_base + sm * ohw + sn, ohw);
    }

    fwd_load(t, g, m0, n0, 0u, col);
    fwd_store(t, 0u);
    workgroupBarrier();
    for (var kt = 0u; kt < tiles; kt++) {
        let more = kt + 1u < tiles;
        if (more) {
            fwd_load(t, g, m0, n0, (kt + 1u) * BK, col);
        }
        let stage = kt % STAGES;
        for (var kk = 0u; kk < BK / 16u; kk++) {
            acc = multiply_coop(acc, sm, stage, kk, b_rows(sn, stage, kk));
        }
        // One stage: everyone must be done reading before the next tile overwrites it.
        if (STAGES == 1u) {
            workgroupBarrier();
        }
        if (more) {
            fwd_store(t, (kt + 1u) % STAGES);
        }
        workgroupBarrier();
    }

    if (direct) {
        store_acc_b3(acc, tile_base + sm * ohw + sn, ohw);
        return;
    }
    for (var f = 0u; f < 2u * FN; f++) {
        stage_fragment(sg, acc, f);
        workgroupBarrier();
        for (var e = 0u; e < 8u; e++) {
            let idx = t % 32u + 32u * e;
            let m = m0 + frag_row(sm, f, idx);
            let c = fwd_out_col(n0 + frag_col(sn, f, idx));
            if (m < p.m && c != 0xffffffffu) {
                let fi = g * p.mg + m;
                var bias = 0.0;
                if (p.has_bias != 0u) {
                    bias = b4[p.o4 + fi];
                }
                let o = p.o3 + c + fi * ohw;
                if (p.accumulate != 0u) {
                    b3[o] = b3[o] + Cs[sg * 256u + idx];
                } else {
                    b3[o] = Cs[sg * 256u + idx] + bias;
                }
            }
        }
        workgroupBarrier();
    }
}

@compute @workgroup_size(256)
fn conv_backward_data_mixed(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let g = wid.y / p.m_tiles;
    let m0 = (wid.y % p.m_tiles) * BM;
    let n0 = (wid.z * nwg.x + wid.x) * BN;
    let sg = t / 32u;
    let sm = (sg / SGC) * 32u;
    let sn = (sg % SGC) * 16u * FN;
    let hw = p.h * p.w;
    let col = data_column(t, g, n0);
    let tiles = (p.k + BK - 1u) / BK;
    var acc: Acc;
    // Direct where one phase covers every pixel (stride 1: columns are dx's pixels) and the
    // tile is a block of dx (rows hw apart); dx's old values are the accumulators' start (+=).
    let pix0 = n0 % hw;
    let tile_base = p.o3 + (n0 / hw) * p.c * hw + (g * p.cg + m0) * hw + pix0;
    let direct = p.qh == p.h && p.qw == p.w && m0 + BM <= p.m && n0 + BN <= p.n && pix0 + BN <= hw && direct_ok(tile_base, hw);
    if (direct) {
        acc = load_acc_b3(tile_base + sm * hw + sn, hw);
    }

    load_bwd_data(t, g, m0, 0u, col.ok, col.dybase, col.yp, col.xp);
    store_a_h(t, 0u);
    store_b_rows_h(t, 0u);
    workgroupBarrier();
    for (var kt = 0u; kt < tiles; kt++) {
        let more = kt + 1u < tiles;
        if (more) {
            load_bwd_data(t, g, m0, (kt + 1u) * BK, col.ok, col.dybase, col.yp, col.xp);
        }
        let stage = kt % STAGES;
        for (var kk = 0u; kk < BK / 16u; kk++) {
            acc = multiply_coop(acc, sm, stage, kk, b_rows(sn, stage, kk));
        }
        // One stage: everyone must be done reading before the next tile overwrites it.
        if (STAGES == 1u) {
            workgroupBarrier();
        }
        if (more) {
            store_a_h(t, (kt + 1u) % STAGES);
            store_b_rows_h(t, (kt + 1u) % STAGES);
        }
        workgroupBarrier();
    }

    if (direct) {
        store_acc_b3(acc, tile_base + sm * hw + sn, hw);
        return;
    }
    for (var f = 0u; f < 2u * FN; f++) {
        stage_fragment(sg, acc, f);
        workgroupBarrier();
        for (var e = 0u; e < 8u; e++) {
            let idx = t % 32u + 32u * e;
            let m = m0 + frag_row(sm, f, idx);
            let c = data_out_col(n0 + frag_col(sn, f, idx));
            if (m < p.m && c != 0xffffffffu) {
                let o = p.o3 + (g * p.cg + m) * hw + c;
                b3[o] = b3[o] + Cs[sg * 256u + idx];
            }
        }
        workgroupBarrier();
    }
}

@compute @workgroup_size(256)
fn conv_backward_weights_mixed(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let g = wid.y / p.m_tiles;
    let m0 = (wid.y % p.m_tiles) * BM;
    let n0 = wid.x * BN;
    let split = wid.z;
    let sg = t / 32u;
    let sm = (sg / SGC) * 32u;
    let sn = (sg % SGC) * 16u * FN;
    decode_weight_columns(t, g, n0);
    let ohw = p.oh * p.ow;
    let tiles_per_image = (ohw + BK - 1u) / BK;
    let first = split * p.kchunk;
    let last = min(first + p.kchunk, p.batch * tiles_per_image);
    var acc: Acc;
    // Direct where the whole tile is in range: dw (+=, its old values start the accumulators) or
    // this split's partials are row-major with rows p.n apart.
    let row0 = (g * p.mg + m0) * p.n + n0;
    let dw_base = p.o3 + row0;
    let part_base = p.o4 + split * p.total + row0;
    let direct = m0 + BM <= p.m && n0 + BN <= p.n && direct_ok(select(part_base, dw_base, p.splits == 1u), p.n);
    let sub = sm * p.n + sn;
    if (direct && p.splits == 1u) {
        acc = load_acc_b3(dw_base + sub, p.n);
    }

    if (first < last) {
        bwd_w_load(t, g, m0, n0, first, tiles_per_image);
    }
    bwd_w_store(t, 0u);
    workgroupBarrier();
    for (var kt = first; kt < last; kt++) {
        let more = kt + 1u < last;
        if (more) {
            bwd_w_load(t, g, m0, n0, kt + 1u, tiles_per_image);
        }
        let stage = (kt - first) % STAGES;
        for (var kk = 0u; kk < BK / 16u; kk++) {
            acc = multiply_coop(acc, sm, stage, kk, b_cols(sn, stage, kk));
        }
        if (STAGES == 1u) {
            workgroupBarrier();
        }
        if (more) {
            bwd_w_store(t, (kt + 1u - first) % STAGES);
        }
        workgroupBarrier();
    }

    if (direct) {
        if (p.splits == 1u) {
            store_acc_b3(acc, dw_base + sub, p.n);
        } else {
            store_acc_b4(acc, part_base + sub, p.n);
        }
        return;
    }
    for (var f = 0u; f < 2u * FN; f++) {
        stage_fragment(sg, acc, f);
        workgroupBarrier();
        for (var e = 0u; e < 8u; e++) {
            let idx = t % 32u + 32u * e;
            let m = m0 + frag_row(sm, f, idx);
            if (m < p.m) {
                write_weight_gradient(split, g * p.mg + m, n0 + frag_col(sn, f, idx), Cs[sg * 256u + idx]);
            }
        }
        workgroupBarrier();
    }
}
