//! Recording dispatches into one command encoder.
//!
//! Ops only record; [`Recorder::flush`] submits. Params of every dispatch go into a host mirror of
//! the params arena (one 256-byte slot each, bound with a dynamic offset); the mirror is written
//! with a single `queue.write_buffer` right before the submit. That write is ordered before the
//! submitted commands, so all slots of one submission must be distinct: the bump allocator resets
//! only at a flush, and a full arena forces one. Bind groups are cached by (layout, storages), so a
//! network reaches a steady state where no bind group is created.

use std::collections::HashMap;
use std::sync::Arc;

use super::buffers::{GpuBuf, MemoryStats};
use super::pipelines::{Kernel, MAX_BUFFERS, PARAMS_BYTES, Pipelines};

/// Slots in the params arena (one submission holds at most this many dispatches).
const ARENA_SLOTS: u64 = 4096;

type BindKey = (usize, [u64; MAX_BUFFERS]);

pub(crate) struct Recorder {
    encoder: Option<wgpu::CommandEncoder>,
    arena: wgpu::Buffer,
    slot_bytes: u64,
    mirror: Vec<u8>,
    slots_used: u64,
    bind_groups: HashMap<BindKey, wgpu::BindGroup>,
    /// Statistics for tests and reports.
    pub(crate) dispatches: u64,
    pub(crate) submissions: u64,
    pub(crate) bind_groups_created: u64,
}

/// Work-group counts for `groups` 1-D workgroups: x ≤ 65,535, the rest spilled into y.
pub(crate) fn grid_1d(groups: u64, max_dim: u32) -> [u32; 3] {
    let groups = groups.max(1);
    let x = groups.min(max_dim as u64);
    let y = groups.div_ceil(x);
    assert!(y <= max_dim as u64, "dispatch of {groups} workgroups is too large");
    [x as u32, y as u32, 1]
}

impl Recorder {
    pub(crate) fn new(device: &wgpu::Device, limits: &wgpu::Limits) -> Recorder {
        let slot_bytes = PARAMS_BYTES.max(limits.min_uniform_buffer_offset_alignment as u64);
        let arena = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("params arena"),
            size: slot_bytes * ARENA_SLOTS,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Recorder {
            encoder: None,
            arena,
            slot_bytes,
            mirror: Vec::with_capacity((slot_bytes * 64) as usize),
            slots_used: 0,
            bind_groups: HashMap::new(),
            dispatches: 0,
            submissions: 0,
            bind_groups_created: 0,
        }
    }

    pub(crate) fn has_work(&self) -> bool {
        self.encoder.is_some()
    }

    pub(crate) fn encoder(&mut self, device: &wgpu::Device) -> &mut wgpu::CommandEncoder {
        self.encoder
            .get_or_insert_with(|| device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("ops") }))
    }

    /// Submits everything recorded so far (params first). Does not wait.
    pub(crate) fn flush(&mut self, queue: &wgpu::Queue) -> Option<wgpu::SubmissionIndex> {
        let encoder = self.encoder.take()?;
        if !self.mirror.is_empty() {
            queue.write_buffer(&self.arena, 0, &self.mirror);
        }
        self.mirror.clear();
        self.slots_used = 0;
        self.submissions += 1;
        Some(queue.submit([encoder.finish()]))
    }

    /// Drops cached bind groups that reference storages freed since the last call.
    fn purge(&mut self, stats: &[&Arc<MemoryStats>]) {
        let mut dead = Vec::new();
        for s in stats {
            if let Ok(mut d) = s.dead.lock() {
                dead.append(&mut d);
            }
        }
        if !dead.is_empty() {
            self.bind_groups.retain(|(n, ids), _| !ids[..*n].iter().any(|id| dead.contains(id)));
        }
    }

    /// Records one dispatch of `kernel` over `bufs` with `params` (u32 words; f32 as bits).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn dispatch(
        &mut self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        pipelines: &Pipelines,
        stats: &[&Arc<MemoryStats>],
        kernel: Kernel,
        bufs: &[&GpuBuf],
        params: &[u32],
        grid: [u32; 3],
    ) {
        let n = kernel.buffers();
        assert_eq!(bufs.len(), n, "{kernel:?} takes {n} buffers");
        assert!(params.len() * 4 <= PARAMS_BYTES as usize, "{kernel:?}: params too large");
        if grid.contains(&0) {
            return;
        }
        if self.slots_used == ARENA_SLOTS {
            self.flush(queue);
        }
        self.purge(stats);

        let slot = self.slots_used;
        self.slots_used += 1;
        let start = (slot * self.slot_bytes) as usize;
        self.mirror.resize(start + self.slot_bytes as usize, 0);
        self.mirror[start..start + params.len() * 4].copy_from_slice(bytemuck::cast_slice(params));

        let mut ids = [0u64; MAX_BUFFERS];
        for (i, b) in bufs.iter().enumerate() {
            ids[i] = b.id();
        }
        let key = (n, ids);
        if !self.bind_groups.contains_key(&key) {
            let mut entries = vec![wgpu::BindGroupEntry {
                binding: 0,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: &self.arena,
                    offset: 0,
                    size: wgpu::BufferSize::new(PARAMS_BYTES),
                }),
            }];
            for (i, b) in bufs.iter().enumerate() {
                entries.push(wgpu::BindGroupEntry { binding: i as u32 + 1, resource: b.buffer().as_entire_binding() });
            }
            let bg = device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(kernel.entry()),
                layout: &pipelines.bind_layouts[n],
                entries: &entries,
            });
            self.bind_groups.insert(key, bg);
            self.bind_groups_created += 1;
        }
        let pipeline = pipelines.get(device, kernel);
        self.encoder(device);
        let (Some(encoder), Some(bg)) = (self.encoder.as_mut(), self.bind_groups.get(&key)) else {
            unreachable!("encoder and bind group were just created");
        };
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: None, timestamp_writes: None });
        pass.set_pipeline(pipeline);
        pass.set_bind_group(0, bg, &[(slot * self.slot_bytes) as u32]);
        pass.dispatch_workgroups(grid[0], grid[1], grid[2]);
        drop(pass);
        self.dispatches += 1;
    }
}
