// Probe variant (issue 15): as coop_gemm_direct.wgsl (f16 operands, fragments straight from
// storage) with a larger subgroup tile: 128 invocations = 4 subgroups of 32 in 2×2, each 64×64
// of C = 4×4 coop_mat16x16<f32> accumulators; workgroup tile 128×128. M, N multiples of 128,
// K of 16. C must hold zeros before the dispatch.

enable f16;
enable wgpu_cooperative_matrix;

struct Dims { m: u32, n: u32, k: u32, pad: u32 }

@group(0) @binding(0) var<storage, read> a: array<f16>;
@group(0) @binding(1) var<storage, read> b: array<f16>;
@group(0) @binding(2) var<storage, read_write> c: array<f32>;
@group(0) @binding(3) var<uniform> dims: Dims;

@compute @workgroup_size(128)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let warp = li / 32u;
    let row = wg.y * 128u + (warp / 2u) * 64u;
    let col = wg.x * 128u + (warp % 2u) * 64u;
    let n = dims.n;
    let k = dims.k;
    let o = row * n + col;
    var c00 = coopLoadT<coop_mat16x16<f32, C>>(&c[o + 0u * n + 0u], n);
    var c01 = coopLoadT<coop_mat16x16<f32, C>>(&c[o + 0u * n + 16u], n);
    var c02 = coopLoadT<coop_mat16x16<f32, C>>(&c[o + 0u * n + 32u], n);
    var c03 = coopLoadT<coop_mat16x16<f32, C>>(&c[o + 0u * n + 48u], n);
    var c10 = coopLoadT<coop_mat16x16<f32, C>>(&c[o + 16u * n + 0u], n);
    var c11 = coopLoadT<coop_mat16x16<f32, C>>(&c[o + 16u * n + 16u], n);
    var c12 = coopLoadT<coop_mat16x16<f32, C>>(&c[o + 16u * n + 32u], n);
    var c13 = coopLoadT<coop_mat16x16<f32, C>>(&c[o + 16u * n + 48u], n);
    var c20 = coopLoadT<coop_mat16x16<f32, C>>(&c[o + 32u * n + 0u], n);
    var c21 = coopLoadT<coop_mat16x16<f32, C>>(&c[o + 32u * n + 16u], n);
    var c22 = coopLoadT<coop_mat16x16<f32, C>>(&c[o + 32u * n + 32u], n);
    var c23 = coopLoadT<coop_mat16x16<f32, C>>(&c[o + 32u * n + 48u], n);
    var c30 = coopLoadT<coop_mat16x16<f32, C>>(&c[o + 48u * n + 0u], n);
    var c31 = coopLoadT<coop_mat16x16<f32, C>>(&c[o + 48u * n + 16u], n);
    var c32 = coopLoadT<coop_mat16x16<f32, C>>(&c[o + 48u * n + 32u], n);
    var c33 = coopLoadT<coop_mat16x16<f32, C>>(&c[o + 48u * n + 48u], n);
    for (var kk = 0u; kk < k; kk += 16u) {
        let a0 = coopLoadT<coop_mat16x16<f16, A>>(&a[(row + 0u) * k + kk], k);
        let a1 = coopLoadT<coop_mat16x16<f16, A>>(&a[(row + 16u) * k + kk], k);
        let a2 = coopLoadT<coop_mat16x16<f16, A>>(&a[(row + 32u) * k + kk], k);
        let a3 = coopLoadT<coop_mat16x16<f16, A>>(&a[(row + 48u) * k + kk], k);
        let b0 = coopLoadT<coop_mat16x16<f16, B>>(&b[kk * n + col + 0u], n);
        let b1 = coopLoadT<coop_mat16x16<f16, B>>(&b[kk * n + col + 16u], n);
        let b2 = coopLoadT<coop_mat16x16<f16, B>>(&b[kk * n + col + 32u], n);
        let b3 = coopLoadT<coop_mat16x16<f16, B>>(&b[kk * n + col + 48u], n);
        c00 = coopMultiplyAdd(a0, b0, c00);
        c01 = coopMultiplyAdd(a0, b1, c01);
        c02 = coopMultiplyAdd(a0, b2, c02);
        c03 = coopMultiplyAdd(a0, b3, c03);
        c10 = coopMultiplyAdd(a1, b0, c10);
        c11 = coopMultiplyAdd(a1, b1, c11);
        c12 = coopMultiplyAdd(a1, b2, c12);
        c13 = coopMultiplyAdd(a1, b3, c13);
        c20 = coopMultiplyAdd(a2, b0, c20);
        c21 = coopMultiplyAdd(a2, b1, c21);
        c22 = coopMultiplyAdd(a2, b2, c22);
        c23 = coopMultiplyAdd(a2, b3, c23);
        c30 = coopMultiplyAdd(a3, b0, c30);
        c31 = coopMultiplyAdd(a3, b1, c31);
        c32 = coopMultiplyAdd(a3, b2, c32);
        c33 = coopMultiplyAdd(a3, b3, c33);
    }
    // Arguments bound by lets first: naga 30 lowers a coopStore before it emits the expressions
    // written inline in its arguments.
    let p00 = &c[o + 0u * n + 0u];
    let p01 = &c[o + 0u * n + 16u];
    let p02 = &c[o + 0u * n + 32u];
    let p03 = &c[o + 0u * n + 48u];
    let p10 = &c[o + 16u * n + 0u];
    let p11 = &c[o + 16u * n + 16u];
    let p12 = &c[o + 16u * n + 32u];
    let p13 = &c[o + 16u * n + 48u];
    let p20 = &c[o + 32u * n + 0u];
    let p21 = &c[o + 32u * n + 16u];
    let p22 = &c[o + 32u * n + 32u];
    let p23 = &c[o + 32u * n + 48u];
    let p30 = &c[o + 48u * n + 0u];
    let p31 = &c[o + 48u * n + 16u];
    let p32 = &c[o + 48u * n + 32u];
    let p33 = &c[o + 48u * n + 48u];
    let r00 = c00;
    let r01 = c01;
    let r02 = c02;
    let r03 = c03;
    let r10 = c10;
    let r11 = c11;
    let r12 = c12;
    let r13 = c13;
    let r20 = c20;
    let r21 = c21;
    let r22 = c22;
    let r23 = c23;
    let r30 = c30;
    let r31 = c31;
    let r32 = c32;
    let r33 = c33;
    coopStoreT(r00, p00, n);
    coopStoreT(r01, p01, n);
    coopStoreT(r02, p02, n);
    coopStoreT(r03, p03, n);
    coopStoreT(r10, p10, n);
    coopStoreT(r11, p11, n);
    coopStoreT(r12, p12, n);
    coopStoreT(r13, p13, n);
    coopStoreT(r20, p20, n);
    coopStoreT(r21, p21, n);
    coopStoreT(r22, p22, n);
    coopStoreT(r23, p23, n);
    coopStoreT(r30, p30, n);
    coopStoreT(r31, p31, n);
    coopStoreT(r32, p32, n);
    coopStoreT(r33, p33, n);
}
