// conv.wgsl's inner product of one K tile on CPU adapters (lavapipe), where a subgroup is the
// LANES invocations one SIMD instruction runs (consecutive invocations: the backend checks this
// at start-up) and reading workgroup memory at an address that is not a constant is a loop over
// the lanes. The lanes of a subgroup share their rows of A (TX is a multiple of LANES, so they
// have one ty): each lane reads LOADS of the TM values, and a shuffle from a fixed lane, a
// register move there, hands each value to all lanes (fma_shared). B is read as in include/tile_fma.wgsl.
// The products and their order are include/tile_fma.wgsl's: the same bits.

const LOADS: u32 = (TM + LANES - 1u) / LANES; // at most 4 (GemmTile::shares_lanes)

fn multiply_tile(ty: u32, tx: u32, t: u32) {
    let lane = t % LANES;
    // This lane reads row j·LANES + lane of the TM for all lanes (j < LOADS), at
    // As[kk·BM/4 + at[j]][ac[j]]. Vectors, not arrays: an array indexed in a loop may live in
    // memory, which llvmpipe reads lane by lane.
    let r = min(vec4<u32>(0u, 1u, 2u, 3u) * LANES + lane, vec4<u32>(TM - 1u));
    let at = vec4<u32>(ty) + TY * (r / 4u);
    let ac = r % 4u;
    for (var kk = 0u; kk < BK; kk++) {
        let k4 = kk * (BM / 4u);
        var mine = vec4<f32>(As[k4 + at.x][ac.x], 0.0, 0.0, 0.0);
        if (LOADS > 1u) {
            mine.y = As[k4 + at.y][ac.y];
        }
        if (LOADS > 2u) {
            mine.z = As[k4 + at.z][ac.z];
        }
        if (LOADS > 3u) {
            mine.w = As[k4 + at.w][ac.w];
        }
        var b: array<vec4<f32>, TN4>;
        for (var j = 0u; j < TN4; j++) {
            b[j] = Bs[kk * (BN / 4u) + tx + TX * j];
        }
        fma_shared(mine, b);
    }
}

// acc row ri += a · its TN columns of B.
fn row_fma(ri: u32, a: f32, b: array<vec4<f32>, TN4>) {
    let av = vec4<f32>(a);
    for (var q = 0u; q < TN4; q++) {
        acc[ri * TN4 + q] = fma(av, b[q], acc[ri * TN4 + q]);
    }
}

// fma_shared(mine, b), generated (pipelines.rs) with one line per row, row ri taken from lane
// ri % LANES's value mine[ri / LANES]: a shuffle from a constant lane is what llvmpipe turns
// into a register move (a loop over the rows took 7 s more to compile and ran slower). With it,
// acc_at(q), accumulator q for the write-out, reads acc at constant indices only (a chain of
// selects), so that the accumulators of 16-row tiles stay in registers.

