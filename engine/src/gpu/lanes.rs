//! Subgroup lanes for the conv GEMMs on CPU adapters (include/tile_lanes.wgsl): which adapters
//! get them, and the start-up check of the subgroup layout the kernels rely on.
//!
//! Why only CPU adapters: llvmpipe (lavapipe) runs a subgroup as one SIMD instruction over its
//! lanes and reads memory at an address that is not a constant one lane at a time, so the TM
//! values of A every lane of a GEMM tile row reads cost TM such loops; read once across the lanes
//! and shuffled (a register move there) they cost TM / LANES. A GPU reads a value all lanes share
//! in one go; there the plain kernel stays.

use super::buffers;

/// Subgroup sizes the kernels are built for (a subgroup must fit in one row of a tile's TY × TX
/// invocations, and every tile has TX ≥ 8).
pub(crate) const SIZES: [u32; 3] = [4, 8, 16];

/// The subgroup size the conv GEMMs would share rows through on `adapter`, before the layout
/// check: a CPU adapter with subgroups of one fixed size in [`SIZES`]; `None` where not, or
/// where `ENGINE_GPU_LANES=0` (to measure what they give) or `allow` is false.
pub(crate) fn wanted(adapter: &wgpu::Adapter, allow: Option<bool>) -> Option<u32> {
    let allow = allow.unwrap_or_else(|| std::env::var("ENGINE_GPU_LANES").map_or(true, |v| v != "0"));
    let info = adapter.get_info();
    let size = info.subgroup_min_size;
    let ok = allow
        && info.device_type == wgpu::DeviceType::Cpu
        && adapter.features().contains(wgpu::Features::SUBGROUP)
        && size == info.subgroup_max_size
        && SIZES.contains(&size);
    ok.then_some(size)
}

/// WGSL of the layout check for subgroups of `lanes`.
pub(crate) fn probe_source(lanes: u32) -> String {
    format!("const LANES: u32 = {lanes}u;\n{}", include_str!("../../../shaders-wgsl/include/lanes_probe.wgsl"))
}

/// Runs the layout check once: whether invocation t of a 256-invocation workgroup is lane
/// t % `lanes` of a subgroup of `lanes` consecutive invocations, as include/tile_lanes.wgsl
/// assumes. Any error (the module, the dispatch, the read-back) counts as no.
pub(crate) fn layout_holds(device: &wgpu::Device, queue: &wgpu::Queue, lanes: u32) -> bool {
    let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some("lanes_probe"),
        source: wgpu::ShaderSource::Wgsl(probe_source(lanes).into()),
    });
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some("lanes_probe"),
        layout: None,
        module: &module,
        entry_point: Some("lanes_probe"),
        compilation_options: Default::default(),
        cache: None,
    });
    let bytes = 256 * 4;
    let flags = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("lanes probe flags"),
        size: bytes,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    let read = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("lanes probe read-back"),
        size: bytes,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let bind = device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some("lanes_probe"),
        layout: &pipeline.get_bind_group_layout(0),
        entries: &[wgpu::BindGroupEntry { binding: 0, resource: flags.as_entire_binding() }],
    });
    let mut enc = device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("lanes_probe") });
    {
        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("lanes_probe"), timestamp_writes: None });
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &bind, &[]);
        pass.dispatch_workgroups(1, 1, 1);
    }
    enc.copy_buffer_to_buffer(&flags, 0, &read, 0, bytes);
    queue.submit([enc.finish()]);
    if pollster::block_on(scope.pop()).is_some() {
        return false;
    }
    buffers::map_read(&read, bytes).wait(device, "the subgroup layout check");
    let all = match read.slice(..).get_mapped_range() {
        Ok(view) => view.chunks_exact(4).all(|w| w == 1u32.to_le_bytes()),
        Err(_) => false,
    };
    read.unmap();
    all
}
