// Probe for issue 15 (mixed precision): C = A·B with f16 operands and f32 accumulation on
// cooperative matrices (tensor cores / simdgroup matrices), the shape a mixed-precision
// implicit-GEMM convolution would take. A (M×K) and B (K×N) are f32 in memory, rounded to f16
// while staged in workgroup memory (as an im2col gather would stage them); C (M×N) is f32,
// row-major, and must hold zeros before the dispatch (the accumulators start from it).
//
// Workgroup: 128 invocations = 4 subgroups of 32 (the bench checks the adapter's subgroup size),
// output tile 64×64, each subgroup 32×32 = 2×2 coop_mat16x16 accumulators. K in steps of 32.
// M, N multiples of 64 and K a multiple of 32 (the probe's shapes).

enable f16;
enable wgpu_cooperative_matrix;

struct Dims { m: u32, n: u32, k: u32, pad: u32 }

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> c: array<f32>;
@group(0) @binding(3) var<uniform> dims: Dims;

const BM: u32 = 64u;
const BN: u32 = 64u;
const BK: u32 = 32u;

var<workgroup> tile_a: array<f16, 2048>; // BM × BK, row-major
var<workgroup> tile_b: array<f16, 2048>; // BK × BN, row-major

@compute @workgroup_size(128)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let row0 = wg.y * BM;
    let col0 = wg.x * BN;
    let warp = li / 32u;
    let wm = (warp / 2u) * 32u; // the subgroup's rows within the tile
    let wn = (warp % 2u) * 32u; // and columns
    let n = dims.n;
    let k = dims.k;
    let o00 = (row0 + wm) * n + col0 + wn;
    let o01 = o00 + 16u;
    let o10 = o00 + 16u * n;
    let o11 = o10 + 16u;
    var acc00 = coopLoadT<coop_mat16x16<f32, C>>(&c[o00], n);
    var acc01 = coopLoadT<coop_mat16x16<f32, C>>(&c[o01], n);
    var acc10 = coopLoadT<coop_mat16x16<f32, C>>(&c[o10], n);
    var acc11 = coopLoadT<coop_mat16x16<f32, C>>(&c[o11], n);
    for (var k0 = 0u; k0 < k; k0 += BK) {
        // 2048 elements of each tile, 16 per invocation, rounded to f16 on the way in.
        for (var e = li; e < 2048u; e += 128u) {
            let ar = e / BK;
            let ac = e % BK;
            tile_a[e] = f16(a[(row0 + ar) * k + k0 + ac]);
            let br = e / BN;
            let bc = e % BN;
            tile_b[e] = f16(b[(k0 + br) * n + col0 + bc]);
        }
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk += 16u) {
            let a0 = coopLoadT<coop_mat16x16<f16, A>>(&tile_a[wm * BK + kk], BK);
            let a1 = coopLoadT<coop_mat16x16<f16, A>>(&tile_a[(wm + 16u) * BK + kk], BK);
            let b0 = coopLoadT<coop_mat16x16<f16, B>>(&tile_b[kk * BN + wn], BN);
            let b1 = coopLoadT<coop_mat16x16<f16, B>>(&tile_b[kk * BN + wn + 16u], BN);
            acc00 = coopMultiplyAdd(a0, b0, acc00);
            acc01 = coopMultiplyAdd(a0, b1, acc01);
            acc10 = coopMultiplyAdd(a1, b0, acc10);
            acc11 = coopMultiplyAdd(a1, b1, acc11);
        }
        workgroupBarrier();
    }
    // Every argument bound by a `let` first: naga 30 lowers a coopStore before it emits the
    // expressions written inline in its arguments (loads, index arithmetic), so they would be
    // used before they exist.
    let s00 = &c[o00];
    let s01 = &c[o01];
    let s10 = &c[o10];
    let s11 = &c[o11];
    let r00 = acc00;
    let r01 = acc01;
    let r10 = acc10;
    let r11 = acc11;
    coopStoreT(r00, s00, n);
    coopStoreT(r01, s01, n);
    coopStoreT(r10, s10, n);
    coopStoreT(r11, s11, n);
}
