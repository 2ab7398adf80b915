// conv.wgsl's inner product of one K tile, on any device: each invocation reads its TM rows of
// A and TN columns of B from workgroup memory (vec4 reads) and does TM·TN FMAs per k. Each output
// adds its products in k order, as include/tile_lanes.wgsl's does.

fn multiply_tile(ty: u32, tx: u32, t: u32) {
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

// Accumulator q, for the write-out.
fn acc_at(q: u32) -> vec4<f32> {
    return acc[q];
}
