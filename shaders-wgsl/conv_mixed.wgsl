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
// the BM × BN tile; each subgroup owns 32 × (16·FN) of C as FM × FN accumulator fragments. K is
// walked BK (16) at a time, the next tile loaded into registers while the current one is
// multiplied, as in conv.wgsl. Results leave through a 16×16 f32 staging block per subgroup, so
// the write-out (bias, scattered columns, +=, split-K partials) is conv.wgsl's.
// Workgroup memory at 128 × 128: 4 KiB of A, 4 KiB of B, 8 KiB of staging = 16 KiB.

enable f16;
enable wgpu_cooperative_matrix;

const SGR: u32 = BM / 32u;
const SGC: u32 = 8u / SGR;
const FM: u32 = 2u;
const FN: u32 = BN / (16u * SGC);
const FMN: u32 = FM * FN;

var<workgroup> Ah: array<f16, BK * BM>; // [k][m]: A column-major
var<workgroup> Bh: array<f16, BK * BN>; // [k][n]: B row-major
var<workgroup> Cs: array<f32, 2048>;    // one 16×16 fragment per subgroup, row-major

fn store_a_h(t: u32) {
    for (var i = 0u; i < LA; i++) {
        let e = t + NT * i;
        Ah[(e % BK) * BM + e / BK] = f16(ra[i]);
    }
}

// B values of invocation t sit at (kl_i, nl) with nl = t % BN (forward, backward data).
fn store_b_rows_h(t: u32) {
    let nl = t % BN;
    for (var i = 0u; i < LB; i++) {
        Bh[(t / BN + (NT / BN) * i) * BN + nl] = f16(rb[i]);
    }
}

// B values of invocation t sit at (kl, nl_i) with kl = t % BK (backward weights).
fn store_b_cols_h(t: u32) {
    let kl = t % BK;
    for (var i = 0u; i < LB; i++) {
        Bh[kl * BN + t / BK + (NT / BK) * i] = f16(rb[i]);
    }
}

// acc += this subgroup's rows (from sm) of A times its columns (from sn) of B, over the staged tile.
fn multiply_coop(sm: u32, sn: u32, acc: ptr<function, array<coop_mat16x16<f32, C>, FMN>>) {
    for (var kk = 0u; kk < BK; kk += 16u) {
        let a0 = coopLoad<coop_mat16x16<f16, A>>(&Ah[kk * BM + sm], BM);
        let a1 = coopLoad<coop_mat16x16<f16, A>>(&Ah[kk * BM + sm + 16u], BM);
        for (var j = 0u; j < FN; j++) {
            let b = coopLoadT<coop_mat16x16<f16, B>>(&Bh[kk * BN + sn + 16u * j], BN);
            (*acc)[j] = coopMultiplyAdd(a0, b, (*acc)[j]);
            (*acc)[FN + j] = coopMultiplyAdd(a1, b, (*acc)[FN + j]);
        }
    }
}

// Fragment f of the subgroup into its staging block (the caller then barriers and reads it).
fn stage_fragment(sg: u32, acc: ptr<function, array<coop_mat16x16<f32, C>, FMN>>, f: u32) {
    // Arguments bound by lets first: naga 30 lowers a coopStore before it emits expressions
    // written inline in its arguments.
    let dst = &Cs[sg * 256u];
    let v = (*acc)[f];
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
    var acc: array<coop_mat16x16<f32, C>, FMN>;

    load_fwd(t, g, m0, 0u, col.ok, col.xbase, col.iy0, col.ix0);
    store_a_h(t);
    store_b_rows_h(t);
    workgroupBarrier();
    for (var kt = 0u; kt < tiles; kt++) {
        let more = kt + 1u < tiles;
        if (more) {
            load_fwd(t, g, m0, (kt + 1u) * BK, col.ok, col.xbase, col.iy0, col.ix0);
        }
        multiply_coop(sm, sn, &acc);
        workgroupBarrier();
        if (more) {
            store_a_h(t);
            store_b_rows_h(t);
        }
        workgroupBarrier();
    }

    for (var f = 0u; f < FMN; f++) {
        stage_fragment(sg, &acc, f);
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
    var acc: array<coop_mat16x16<f32, C>, FMN>;

    load_bwd_data(t, g, m0, 0u, col.ok, col.dybase, col.yp, col.xp);
    store_a_h(t);
    store_b_rows_h(t);
    workgroupBarrier();
    for (var kt = 0u; kt < tiles; kt++) {
        let more = kt + 1u < tiles;
        if (more) {
            load_bwd_data(t, g, m0, (kt + 1u) * BK, col.ok, col.dybase, col.yp, col.xp);
        }
        multiply_coop(sm, sn, &acc);
        workgroupBarrier();
        if (more) {
            store_a_h(t);
            store_b_rows_h(t);
        }
        workgroupBarrier();
    }

    for (var f = 0u; f < FMN; f++) {
        stage_fragment(sg, &acc, f);
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
    var acc: array<coop_mat16x16<f32, C>, FMN>;

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
        multiply_coop(sm, sn, &acc);
        workgroupBarrier();
        if (more) {
            store_a_h(t);
            store_b_cols_h(t);
        }
        workgroupBarrier();
    }

    for (var f = 0u; f < FMN; f++) {
        stage_fragment(sg, &acc, f);
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
