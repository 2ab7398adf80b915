// Wide kernels: each invocation moves WIDE values (a per-device constant of the generated
// preamble, pipelines.rs: 4 on GPUs), 256 apart, so each of its WIDE accesses is part of a
// workgroup access of 256 consecutive floats, and all its reads are issued before any write.
// Measured on an H100 (yolov4-tiny 416, batch 64, mixed precision, per step): fill 2.39 → 1.23
// ms, copy_slices 3.44 → 3.22 ms. Kernels that compute per value (batch norm's normalise,
// backward apply and chunk sums, round_f16, scal) ran as fast or slower with 4 values per
// invocation, so they stay at one. Only kernels that move values (copy_slices adds at most one
// value to another) are wide: which invocation handles a value cannot change what it becomes.

// The first value of invocation lid in workgroup (flat) wid.y·nwg.x + wid.x; its others follow
// 256 apart.
fn wide_first(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.y * nwg.x + wid.x) * (256u * WIDE) + lid;
}
