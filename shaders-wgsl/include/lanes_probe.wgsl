// Start-up check behind include/tile_lanes.wgsl (gpu/lanes.rs, `layout_holds`): in a workgroup of 256
// invocations, is invocation t lane t % LANES of a subgroup of LANES? flags[t] = 1 where it is.

@group(0) @binding(0) var<storage, read_write> flags: array<u32, 256>;

@compute @workgroup_size(256)
fn lanes_probe(@builtin(local_invocation_index) t: u32, @builtin(subgroup_invocation_id) lane: u32, @builtin(subgroup_size) size: u32) {
    // The lane that holds invocation t − t % LANES must be lane 0 of the same subgroup.
    let first = subgroupShuffle(t, 0u);
    flags[t] = select(0u, 1u, size == LANES && lane == t % LANES && first == t - t % LANES);
}
