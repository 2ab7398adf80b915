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
// walked BK = 16 at a time (one matrix step), the next tile loaded into registers while the current one is
// multiplied, as in conv.wgsl. Results leave through a 16×16 f32 staging block per subgroup, so
// the write-out (bias, scattered columns, +=, split-K partials) is conv.wgsl's.
// Workgroup memory at 128 × 128: 4 KiB of A, 4 KiB of B, 8 KiB of staging = 16 KiB.

enable f16;
enable wgpu_cooperative_matrix;

const SGR: u32 = BM / 32u;
const SGC: u32 = 8u / SGR;
const FN: u32 = BN / (16u * SGC); // fragment columns per subgroup: 1, 2 or 4 (fragment rows: 2)

// A row-major [m][k] and B row-major [k][n] (forward, backward data) or column-major [n][k]
// (backward weights): each layout makes consecutive invocations store consecutive elements.
var<workgroup> Ah: array<f16, BM * BK>;
var<workgroup> Bh: array<f16, BK * BN>;
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
fn store_a_h(t: u32) {
    for (var i = 0u; i < LA; i++) {
        Ah[t + NT * i] = f16(ra[i]);
    }
}

// B values of invocation t sit at (kl_i, nl) with nl = t % BN (forward, backward data).
fn store_b_rows_h(t: u32) {
    let nl = t % BN;
    for (var i = 0u; i < LB; i++) {
        Bh[(t / BN + (NT / BN) * i) * BN + nl] = f16(rb[i]);
    }
}

// B values of invocation t sit at (kl, nl_i) = (t % BK, t / BK + (NT / BK)·i) (backward
// weights): column-major, that is element t + NT·i.
fn store_b_cols_h(t: u32) {
    for (var i = 0u; i < LB; i++) {
        Bh[t + NT * i] = f16(rb[i]);
    }
}

// The subgroup's B fragments of the staged tile (BK is 16: one matrix step per tile), from
// row-major (forward, backward data) or column-major (backward weights) staging.
struct BFrags {
    b0: coop_mat16x16<f16, B>,
    b1: coop_mat16x16<f16, B>,
    b2: coop_mat16x16<f16, B>,
    b3: coop_mat16x16<f16, B>,
}

fn b_rows(sn: u32) -> BFrags {
    var b: BFrags;
    b.b0 = coopLoadT<coop_mat16x16<f16, B>>(&Bh[sn], BN);
    if (FN > 1u) {
        b.b1 = coopLoadT<coop_mat16x16<f16, B>>(&Bh[sn + 16u], BN);
    }
    if (FN > 2u) {
        b.b2 = coopLoadT<coop_mat16x16<f16, B>>(&Bh[sn + 32u], BN);
        b.b3 = coopLoadT<coop_mat16x16<f16, B>>(&Bh[sn + 48u], BN);
    }
    return b;
}

fn b_cols(sn: u32) -> BFrags {
    var b: BFrags;
    b.b0 = coopLoad<coop_mat16x16<f16, B>>(&Bh[sn * BK], BK);
    if (FN > 1u) {
        b.b1 = coopLoad<coop_mat16x16<f16, B>>(&Bh[(sn + 16u) * BK], BK);
    }
    if (FN > 2u) {
        b.b2 = coopLoad<coop_mat16x16<f16, B>>(&Bh[(sn + 32u) * BK], BK);
        b.b3 = coopLoad<coop_mat16x16<f16, B>>(&Bh[(sn + 48u) * BK], BK);
    }
    return b;
}

// acc += this subgroup's rows (from sm) of A times its B fragments.
fn multiply_coop(acc_in: Acc, sm: u32, b: BFrags) -> Acc {
    var acc = acc_in;
    let a0 = coopLoadT<coop_mat16x16<f16, A>>(&Ah[sm * BK], BK);
    let a1 = coopLoadT<coop_mat16x16<f16, A>>(&Ah[(sm + 16u) * BK], BK);
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

    load_fwd(t, g, m0, 0u, col.ok, col.xbase, col.iy0, col.ix0);
    store_a_h(t);
    store_b_rows_h(t);
    workgroupBarrier();
    for (var kt = 0u; kt < tiles; kt++) {
        let more = kt + 1u < tiles;
        if (more) {
            load_fwd(t, g, m0, (kt + 1u) * BK, col.ok, col.xbase, col.iy0, col.ix0);
        }
        acc = multiply_coop(acc, sm, b_rows(sn));
        workgroupBarrier();
        if (more) {
            store_a_h(t);
            store_b_rows_h(t);
        }
        workgroupBarrier();
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
                b3[p.o3 + c + fi * ohw] = Cs[sg * 256u + idx] + bias;
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

    load_bwd_data(t, g, m0, 0u, col.ok, col.dybase, col.yp, col.xp);
    store_a_h(t);
    store_b_rows_h(t);
    workgroupBarrier();
    for (var kt = 0u; kt < tiles; kt++) {
        let more = kt + 1u < tiles;
        if (more) {
            load_bwd_data(t, g, m0, (kt + 1u) * BK, col.ok, col.dybase, col.yp, col.xp);
        }
        acc = multiply_coop(acc, sm, b_rows(sn));
        workgroupBarrier();
        if (more) {
            store_a_h(t);
            store_b_rows_h(t);
        }
        workgroupBarrier();
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

    if (first < last) {
        load_bwd_w(t, g, m0, first, tiles_per_image);
    }
    store_a_h(t);
    store_b_cols_h(t);
    workgroupBarrier();
    for (var kt = first; kt < last; kt++) {
        let more = kt + 1u < last;
        if (more) {
            load_bwd_w(t, g, m0, kt + 1u, tiles_per_image);
        }
        acc = multiply_coop(acc, sm, b_cols(sn));
        workgroupBarrier();
        if (more) {
            store_a_h(t);
            store_b_cols_h(t);
        }
        workgroupBarrier();
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
