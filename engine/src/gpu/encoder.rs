//! Recording dispatches into one command encoder.
//!
//! Ops only record; [`Recorder::flush`] submits. Params of every dispatch go into a host mirror of
//! the params arena (one 256-byte slot each, bound with a dynamic offset); the mirror is written
//! with a single `queue.write_buffer` right before the submit. That write is ordered before the
//! submitted commands, so all slots of one submission must be distinct: the bump allocator resets
//! only at a flush, and a full arena forces one. Bind groups are cached by (layout, storages), so a
//! network reaches a steady state where no bind group is created.
//!
//! Dispatches share one open compute pass until something else (a copy, a query resolve, the
//! submit) needs the encoder; wgpu orders the dispatches of a pass by their buffer use. With
//! timing on, each dispatch is bracketed by two timestamps: written inside the pass where the
//! device has `TIMESTAMP_QUERY_INSIDE_PASSES`, otherwise as the begin/end timestamps of a pass of
//! its own. The query set is resolved into a read-back buffer as part of the submission, so the
//! times come back with the step's statistics, without a wait of their own.

use std::collections::HashMap;
use std::sync::Arc;

use super::buffers::{GpuBuf, MemoryStats};
use super::upload::Uploads;
use super::pipelines::{GemmTile, Kernel, MAX_BUFFERS, PARAMS_BYTES, Pipelines};
use crate::profile::{DispatchTime, Scope, Work};

/// Slots in the params arena (one submission holds at most this many dispatches).
const ARENA_SLOTS: u64 = 4096;
/// Timestamp queries per submission (wgpu's per-set maximum): two per dispatch.
const QUERIES: u32 = wgpu::QUERY_SET_MAX_QUERIES;

/// Submissions whose times are kept until read.
const MAX_PENDING: usize = 64;

/// Buffer count and, per buffer, (storage id, start of the bound window).
type BindKey = (usize, [(u64, u64); MAX_BUFFERS]);

/// What a timed dispatch was.
#[derive(Clone, Copy, Debug)]
struct Label {
    scope: Scope,
    kernel: &'static str,
    work: Work,
}

/// Timestamp queries and their read-back buffers.
struct Timer {
    set: wgpu::QuerySet,
    /// Timestamps may be written between dispatches of one pass.
    inside_passes: bool,
    resolve: wgpu::Buffer,
    /// Dispatches recorded since the last flush.
    labels: Vec<Label>,
    /// Submitted read-backs not yet read.
    pending: Vec<(wgpu::Buffer, Vec<Label>)>,
    free: Vec<wgpu::Buffer>,
    /// Nanoseconds per timestamp tick.
    period_ns: f64,
}

pub(crate) struct Recorder {
    /// The open compute pass (it locks `encoder` until dropped; declared first so it drops first).
    pass: Option<wgpu::ComputePass<'static>>,
    encoder: Option<wgpu::CommandEncoder>,
    arena: wgpu::Buffer,
    slot_bytes: u64,
    mirror: Vec<u8>,
    slots_used: u64,
    bind_groups: HashMap<BindKey, wgpu::BindGroup>,
    timer: Option<Timer>,
    /// Staging buffers of uploads (gpu/upload.rs).
    pub(crate) uploads: Uploads,
    /// Label of the next dispatches (set by the network through `Backend::set_scope`).
    pub(crate) scope: Scope,
    /// Statistics for tests and reports.
    pub(crate) dispatches: u64,
    pub(crate) submissions: u64,
    pub(crate) bind_groups_created: u64,
}

/// The kernel's name in timing tables: GEMM variants carry their tile (`conv_forward 128x128k8`).
fn kernel_name(kernel: Kernel, tile: GemmTile) -> &'static str {
    use std::sync::{Mutex, OnceLock};
    if !kernel.module().tiled() {
        return kernel.entry();
    }
    // A handful of variants exist per process: intern their names once.
    static NAMES: OnceLock<Mutex<HashMap<(Kernel, GemmTile), &'static str>>> = OnceLock::new();
    let mut names = NAMES.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    names.entry((kernel, tile)).or_insert_with(|| Box::leak(format!("{} {tile}", kernel.entry()).into_boxed_str()))
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
            pass: None,
            encoder: None,
            arena,
            slot_bytes,
            mirror: Vec::with_capacity((slot_bytes * 64) as usize),
            slots_used: 0,
            bind_groups: HashMap::new(),
            timer: None,
            uploads: Uploads::default(),
            scope: Scope::NONE,
            dispatches: 0,
            submissions: 0,
            bind_groups_created: 0,
        }
    }

    /// Turns per-dispatch timing on (the device must have `TIMESTAMP_QUERY`) or off.
    pub(crate) fn set_timing(&mut self, device: &wgpu::Device, queue: &wgpu::Queue, on: bool) {
        if !on {
            self.timer = None;
            return;
        }
        if self.timer.is_some() {
            return;
        }
        let set = device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("dispatch timestamps"),
            ty: wgpu::QueryType::Timestamp,
            count: QUERIES,
        });
        let resolve = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("timestamp resolve"),
            size: QUERIES as u64 * wgpu::QUERY_SIZE as u64,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        self.timer = Some(Timer {
            set,
            inside_passes: device.features().contains(wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES),
            resolve,
            labels: Vec::new(),
            pending: Vec::new(),
            free: Vec::new(),
            period_ns: queue.get_timestamp_period() as f64,
        });
    }

    pub(crate) fn timing(&self) -> bool {
        self.timer.is_some()
    }

    pub(crate) fn has_work(&self) -> bool {
        self.encoder.is_some()
    }

    /// Recorded dispatches whose times are not submitted yet.
    pub(crate) fn has_timed_work(&self) -> bool {
        self.timer.as_ref().is_some_and(|t| !t.labels.is_empty())
    }

    /// The encoder, with any open pass ended (copies and resolves need it unlocked).
    pub(crate) fn encoder(&mut self, device: &wgpu::Device) -> &mut wgpu::CommandEncoder {
        self.pass = None;
        self.encoder
            .get_or_insert_with(|| device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("ops") }))
    }

    /// Records a copy of `data` into `dst` at byte `offset`, in order with the work around it
    /// (through a staging buffer of the pool, gpu/upload.rs).
    pub(crate) fn upload(&mut self, device: &wgpu::Device, dst: &wgpu::Buffer, offset: u64, data: &[u8]) {
        let copy = |mut part: wgpu::WriteOnly<'_, [u8]>, start: usize| {
            let n = part.len();
            part.copy_from_slice(&data[start..start + n]);
        };
        self.upload_with(device, dst, offset, data.len(), &copy);
    }

    /// [`Recorder::upload`] of `len` bytes that `fill` writes into the staging buffer
    /// ([`super::upload::Uploads::stage_with`]).
    pub(crate) fn upload_with(&mut self, device: &wgpu::Device, dst: &wgpu::Buffer, offset: u64, len: usize, fill: &super::upload::Fill<'_>) {
        self.encoder(device);
        let src = self.uploads.stage_with(device, len, fill);
        let encoder = self.encoder.as_mut().expect("made by encoder() above");
        encoder.copy_buffer_to_buffer(src, 0, dst, offset, len as u64);
    }

    /// Submits everything recorded so far (params first). Does not wait.
    pub(crate) fn flush(&mut self, device: &wgpu::Device, queue: &wgpu::Queue) -> Option<wgpu::SubmissionIndex> {
        self.pass = None;
        let mut encoder = self.encoder.take()?;
        if let Some(t) = self.timer.as_mut().filter(|t| !t.labels.is_empty()) {
            let queries = 2 * t.labels.len() as u32;
            let bytes = queries as u64 * wgpu::QUERY_SIZE as u64;
            encoder.resolve_query_set(&t.set, 0..queries, &t.resolve, 0);
            let readback = t.free.pop().unwrap_or_else(|| {
                device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("timestamp read-back"),
                    size: QUERIES as u64 * wgpu::QUERY_SIZE as u64,
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                })
            });
            encoder.copy_buffer_to_buffer(&t.resolve, 0, &readback, 0, bytes);
            t.pending.push((readback, std::mem::take(&mut t.labels)));
            // Nobody reads the times of work outside training steps (inference, tests): keep
            // only the newest submissions' and reuse the rest (GPU order keeps the reuse safe).
            if t.pending.len() > MAX_PENDING {
                let (old, _) = t.pending.remove(0);
                t.free.push(old);
            }
        }
        if !self.mirror.is_empty() {
            queue.write_buffer(&self.arena, 0, &self.mirror);
        }
        self.mirror.clear();
        self.slots_used = 0;
        self.submissions += 1;
        let index = queue.submit([encoder.finish()]);
        self.uploads.submitted();
        Some(index)
    }

    /// Device times of every timed dispatch submitted since the last call, in recording order.
    /// Waits for those submissions (after a download they are already done).
    pub(crate) fn take_times(&mut self, device: &wgpu::Device) -> Vec<DispatchTime> {
        let Some(t) = self.timer.as_mut() else { return Vec::new() };
        let mut out = Vec::new();
        for (buf, labels) in std::mem::take(&mut t.pending) {
            let bytes = 2 * labels.len() as u64 * wgpu::QUERY_SIZE as u64;
            super::buffers::map_read(&buf, bytes).wait(device, "timestamps");
            {
                let view = buf.get_mapped_range(..bytes).unwrap_or_else(|e| panic!("gpu: reading timestamps: {e:?}"));
                let ticks: &[u64] = bytemuck::cast_slice(&view);
                for (i, l) in labels.iter().enumerate() {
                    // Clocks can be reset between passes on some drivers: never report negative time.
                    let dt = ticks[2 * i + 1].saturating_sub(ticks[2 * i]);
                    out.push(DispatchTime { scope: l.scope, kernel: l.kernel, seconds: dt as f64 * t.period_ns * 1e-9, work: l.work });
                }
            }
            buf.unmap();
            t.free.push(buf);
        }
        out
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
            self.bind_groups.retain(|(n, ids), _| !ids[..*n].iter().any(|(id, _)| dead.contains(id)));
        }
    }

    /// Records one dispatch of `kernel` (built for `tile` and activation `act`, see
    /// `Pipelines::get`) over `bufs` with `params`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn dispatch(
        &mut self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        pipelines: &Pipelines,
        stats: &[&Arc<MemoryStats>],
        kernel: Kernel,
        tile: GemmTile,
        act: u32,
        bufs: &[&GpuBuf],
        params: &[u8],
        grid: [u32; 3],
        work: Work,
    ) {
        let n = kernel.buffers();
        assert_eq!(bufs.len(), n, "{kernel:?} takes {n} buffers");
        assert!(params.len() <= PARAMS_BYTES as usize, "{kernel:?}: params too large");
        if grid.contains(&0) {
            return;
        }
        let timer_full = self.timer.as_ref().is_some_and(|t| 2 * (t.labels.len() as u32 + 1) > QUERIES);
        if self.slots_used == ARENA_SLOTS || timer_full {
            self.flush(device, queue);
        }
        self.purge(stats);

        let slot = self.slots_used;
        self.slots_used += 1;
        let start = (slot * self.slot_bytes) as usize;
        self.mirror.resize(start + self.slot_bytes as usize, 0);
        self.mirror[start..start + params.len()].copy_from_slice(params);

        let mut ids = [(0u64, 0u64); MAX_BUFFERS];
        for (i, b) in bufs.iter().enumerate() {
            ids[i] = (b.id(), b.window().0);
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
                let (offset, size) = b.window();
                let resource = wgpu::BindingResource::Buffer(wgpu::BufferBinding { buffer: b.buffer(), offset, size: wgpu::BufferSize::new(size) });
                entries.push(wgpu::BindGroupEntry { binding: i as u32 + 1, resource });
            }
            let bg = device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(kernel.entry()),
                layout: &pipelines.bind_layouts[n],
                entries: &entries,
            });
            self.bind_groups.insert(key, bg);
            self.bind_groups_created += 1;
        }
        let pipeline = pipelines.get(device, kernel, tile, act);

        // Timestamp indices of this dispatch, if timed.
        let timed = self.timer.as_ref().map(|t| (2 * t.labels.len() as u32, t.inside_passes));
        if let Some((_, false)) = timed {
            // A pass of its own, timed at its beginning and end.
            self.pass = None;
        }
        if self.pass.is_none() {
            if self.encoder.is_none() {
                self.encoder = Some(device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("ops") }));
            }
            let timestamp_writes = match (timed, &self.timer) {
                (Some((q, false)), Some(t)) => Some(wgpu::ComputePassTimestampWrites {
                    query_set: &t.set,
                    beginning_of_pass_write_index: Some(q),
                    end_of_pass_write_index: Some(q + 1),
                }),
                _ => None,
            };
            let Some(encoder) = self.encoder.as_mut() else { unreachable!("encoder was just created") };
            let pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: None, timestamp_writes });
            self.pass = Some(pass.forget_lifetime());
        }
        let (Some(pass), Some(bg)) = (self.pass.as_mut(), self.bind_groups.get(&key)) else {
            unreachable!("pass and bind group were just created");
        };
        if let (Some((q, true)), Some(t)) = (timed, &self.timer) {
            pass.write_timestamp(&t.set, q);
        }
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, bg, &[(slot * self.slot_bytes) as u32]);
        pass.dispatch_workgroups(grid[0], grid[1], grid[2]);
        if let Some(t) = self.timer.as_mut() {
            if let Some((q, true)) = timed {
                pass.write_timestamp(&t.set, q + 1);
            }
            t.labels.push(Label { scope: self.scope, kernel: kernel_name(kernel, tile), work });
        }
        if let Some((_, false)) = timed {
            self.pass = None;
        }
        self.dispatches += 1;
    }
}
