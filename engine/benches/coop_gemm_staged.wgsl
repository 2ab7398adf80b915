// Probe variant (issue 15): A (M×K) and B (K×N) stored as f16, staged 8 bytes at a time into
// workgroup memory (128×32 of A and 32×128 of B: 16 KiB, the default limit), 256 invocations = 8
// subgroups of 32 in 4×2, each 32×64 of C = 2×4 coop_mat16x16<f32> accumulators; workgroup tile
// 128×128, K in steps of 32. M, N multiples of 128, K of 32. C must hold zeros before.

enable f16;
enable wgpu_cooperative_matrix;

struct Dims { m: u32, n: u32, k: u32, pad: u32 }

@group(0) @binding(0) var<storage, read> a: array<vec4<f16>>;
@group(0) @binding(1) var<storage, read> b: array<vec4<f16>>;
@group(0) @binding(2) var<storage, read_write> c: array<f32>;
@group(0) @binding(3) var<uniform> dims: Dims;

var<workgroup> tile_a: array<f16, 4096>; // 128 × 32, row-major
var<workgroup> tile_b: array<f16, 4096>; // 32 × 128, row-major

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let warp = li / 32u;
    let row0 = wg.y * 128u;
    let col0 = wg.x * 128u;
    let wr = (warp / 2u) * 32u;
    let wc = (warp % 2u) * 64u;
    let n = dims.n;
    let k = dims.k;
    let o = (row0 + wr) * n + col0 + wc;
    var c00 = coopLoadT<coop_mat16x16<f32, C>>(&c[o], n);
    var c01 = coopLoadT<coop_mat16x16<f32, C>>(&c[o + 16u], n);
    var c02 = coopLoadT<coop_mat16x16<f32, C>>(&c[o + 32u], n);
    var c03 = coopLoadT<coop_mat16x16<f32, C>>(&c[o + 48u], n);
    var c10 = coopLoadT<coop_mat16x16<f32, C>>(&c[o + 16u * n], n);
    var c11 = coopLoadT<coop_mat16x16<f32, C>>(&c[o + 16u * n + 16u], n);
    var c12 = coopLoadT<coop_mat16x16<f32, C>>(&c[o + 16u * n + 32u], n);
    var c13 = coopLoadT<coop_mat16x16<f32, C>>(&c[o + 16u * n + 48u], n);
    for (var k0 = 0u; k0 < k; k0 += 32u) {
        // 1024 vec4 per tile, 4 per invocation: A rows of 8 vec4, B rows of 32 vec4.
        for (var e = li; e < 1024u; e += 256u) {
            let ar = e / 8u;
            let ac = (e % 8u) * 4u;
            let va = a[((row0 + ar) * k + k0 + ac) / 4u];
            tile_a[ar * 32u + ac] = va.x;
            tile_a[ar * 32u + ac + 1u] = va.y;
            tile_a[ar * 32u + ac + 2u] = va.z;
            tile_a[ar * 32u + ac + 3u] = va.w;
            let br = e / 32u;
            let bc = (e % 32u) * 4u;
            let vb = b[((k0 + br) * n + col0 + bc) / 4u];
            tile_b[br * 128u + bc] = vb.x;
            tile_b[br * 128u + bc + 1u] = vb.y;
            tile_b[br * 128u + bc + 2u] = vb.z;
            tile_b[br * 128u + bc + 3u] = vb.w;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < 32u; kk += 16u) {
            let a0 = coopLoadT<coop_mat16x16<f16, A>>(&tile_a[wr * 32u + kk], 32u);
            let a1 = coopLoadT<coop_mat16x16<f16, A>>(&tile_a[(wr + 16u) * 32u + kk], 32u);
            let b0 = coopLoadT<coop_mat16x16<f16, B>>(&tile_b[kk * 128u + wc], 128u);
            let b1 = coopLoadT<coop_mat16x16<f16, B>>(&tile_b[kk * 128u + wc + 16u], 128u);
            let b2 = coopLoadT<coop_mat16x16<f16, B>>(&tile_b[kk * 128u + wc + 32u], 128u);
            let b3 = coopLoadT<coop_mat16x16<f16, B>>(&tile_b[kk * 128u + wc + 48u], 128u);
            c00 = coopMultiplyAdd(a0, b0, c00);
            c01 = coopMultiplyAdd(a0, b1, c01);
            c02 = coopMultiplyAdd(a0, b2, c02);
            c03 = coopMultiplyAdd(a0, b3, c03);
            c10 = coopMultiplyAdd(a1, b0, c10);
            c11 = coopMultiplyAdd(a1, b1, c11);
            c12 = coopMultiplyAdd(a1, b2, c12);
            c13 = coopMultiplyAdd(a1, b3, c13);
        }
        workgroupBarrier();
    }
    // Arguments bound by lets first: naga 30 lowers a coopStore before it emits the expressions
    // written inline in its arguments.
    let p00 = &c[o];
    let p01 = &c[o + 16u];
    let p02 = &c[o + 32u];
    let p03 = &c[o + 48u];
    let p10 = &c[o + 16u * n];
    let p11 = &c[o + 16u * n + 16u];
    let p12 = &c[o + 16u * n + 32u];
    let p13 = &c[o + 16u * n + 48u];
    let r00 = c00;
    let r01 = c01;
    let r02 = c02;
    let r03 = c03;
    let r10 = c10;
    let r11 = c11;
    let r12 = c12;
    let r13 = c13;
    coopStoreT(r00, p00, n);
    coopStoreT(r01, p01, n);
    coopStoreT(r02, p02, n);
    coopStoreT(r03, p03, n);
    coopStoreT(r10, p10, n);
    coopStoreT(r11, p11, n);
    coopStoreT(r12, p12, n);
    coopStoreT(r13, p13, n);
}
