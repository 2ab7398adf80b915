// Deterministic per-channel reductions, shared by batchnorm.wgsl and bias.wgsl.
//
// A channel's values are batch planes of `spatial` floats ([b][c][pixel] layout). They are cut into
// chunks fixed by the shape alone (engine/src/gpu/reduce.rs chooses them): either `ppc` whole
// planes per chunk, or (ppc = 0) each plane cut into `pieces` pieces of `piece_len` pixels. One
// workgroup sums one chunk: each invocation a fixed strided subset in order, then a fixed tree;
// a second kernel combines a channel's chunks in chunk order. No float atomics: reruns give the
// same bits.

var<workgroup> red: array<f32, 256>;
var<workgroup> red2: array<f32, 256>;

// The tree: at each level s = 128, 64, …, 1, red[i] += red[i + s] for i < s. On a CPU adapter
// (SERIAL_TREES, pipelines.rs) every invocation does the same additions in the same order on
// its own, reading red at constant indices (red_tree and red2_tree, generated unrolled): each
// barrier there switches between the workgroup's 32 vector batches, and llvmpipe reads memory
// lane by lane unless the address is a constant; the sums, and so every bit, are the parallel
// tree's.
fn tree_sum(lid: u32, v: f32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    if (SERIAL_TREES) {
        let r = red_tree();
        workgroupBarrier();
        return r;
    } else {
        for (var s = 128u; s > 0u; s = s >> 1u) {
            if (lid < s) {
                red[lid] = red[lid] + red[lid + s];
            }
            workgroupBarrier();
        }
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

// Two sums at once (same tree shape as tree_sum).
fn tree_sum2(lid: u32, v: vec2<f32>) -> vec2<f32> {
    red[lid] = v.x;
    red2[lid] = v.y;
    workgroupBarrier();
    if (SERIAL_TREES) {
        let r = vec2<f32>(red_tree(), red2_tree());
        workgroupBarrier();
        return r;
    } else {
        for (var s = 128u; s > 0u; s = s >> 1u) {
            if (lid < s) {
                red[lid] = red[lid] + red[lid + s];
                red2[lid] = red2[lid] + red2[lid + s];
            }
            workgroupBarrier();
        }
    }
    let r = vec2<f32>(red[0], red2[0]);
    workgroupBarrier();
    return r;
}

// Chunk q of a channel: planes [r.x, r.y) and pixels [r.z, r.w) of each.
fn chunk_range(q: u32, batch: u32, spatial: u32, ppc: u32, pieces: u32, piece_len: u32) -> vec4<u32> {
    if (ppc > 0u) {
        let b0 = q * ppc;
        return vec4<u32>(b0, min(b0 + ppc, batch), 0u, spatial);
    }
    let b = q / pieces;
    let s0 = (q % pieces) * piece_len;
    return vec4<u32>(b, b + 1u, s0, min(s0 + piece_len, spatial));
}

fn chunk_count(r: vec4<u32>) -> u32 {
    return (r.y - r.x) * (r.w - r.z);
}

// The per-chunk statistics kernels (batchnorm.wgsl) run RED_WG invocations: 256 on GPUs, one tree
// lane each; 64 on CPU adapters (SERIAL_TREES), each holding the partials of the four tree lanes
// lid + 64·a (a < 4) as the components of a vec4, every lane summing its values in the same
// order as one invocation of 256 would. Small chunks (the deep layers' few pixels) then cost a
// quarter of the vector batches; the tree's additions, and every bit, stay the same.
const RED_LANES: u32 = 256u / RED_WG;

// The sum of the 256 tree lanes whose partials invocation lid holds in v (RED_LANES of them):
// tree_sum's tree, its first two levels (128 and 64) done in registers when RED_WG = 64.
fn tree_sum_lanes(lid: u32, v: vec4<f32>) -> f32 {
    if (RED_WG == 256u) {
        return tree_sum(lid, v.x);
    }
    // Level 128: lane i adds lane i + 128; level 64: lane i adds lane i + 64.
    red[lid] = (v.x + v.z) + (v.y + v.w);
    workgroupBarrier();
    let r = red_tree64();
    workgroupBarrier();
    return r;
}
