//! The wgpu backend: every [`crate::Backend`] op as a WGSL compute kernel (shaders-wgsl/), run on
//! Metal, Vulkan or DX12 through wgpu.
//!
//! - device.rs: adapter listing and selection, device limits.
//! - buffers.rs: storage, views ([`GpuBuf`]) and byte accounting.
//! - pipelines.rs: shader registry, bind layouts and the pipeline cache.
//! - encoder.rs: recording dispatches into one command encoder, params arena, bind-group cache.
//! - ops.rs: the trait implementation (shapes → params → dispatches).
//! - yolo.rs: the [yolo] head's passes and their cached scratch.
//!
//! Ops record into one encoder; nothing waits except [`crate::Backend::download`]. Every kernel
//! is deterministic: reductions use fixed strided sums and fixed trees, never float atomics, so
//! two runs on one device give the same bits.

mod buffers;
mod device;
mod encoder;
mod ops;
mod pipelines;
mod yolo;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

pub use buffers::GpuBuf;
pub use device::{AdapterInfoRecord, AdapterSelector, GpuError, INSTALL_HINT, list_adapters};

use buffers::MemoryStats;
use encoder::{Recorder, grid_1d};
use pipelines::{Kernel, Pipelines};

/// Counters describing how the backend has been driven (for reports and tests).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GpuStats {
    pub dispatches: u64,
    pub submissions: u64,
    pub bind_groups_created: u64,
    /// Calls of an op the GPU does not implement (every op is implemented today: stays 0).
    pub unsupported_calls: u64,
}

/// A [`crate::Backend`] on one wgpu device.
pub struct GpuBackend {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: AdapterInfoRecord,
    limits: wgpu::Limits,
    pipelines: Pipelines,
    rec: Mutex<Recorder>,
    /// User allocations (what `memory_bytes` reports).
    stats: Arc<MemoryStats>,
    /// The backend's own buffers (reduction partials, split-K scratch).
    internal: Arc<MemoryStats>,
    reduce_scratch: GpuBuf,
    splitk_scratch: Mutex<GpuBuf>,
    /// Per-head yolo scratch (anchors, tallies, loss partials), made once per head shape.
    yolo_scratch: Mutex<yolo::ScratchCache>,
    unsupported_calls: AtomicU64,
}

impl std::fmt::Debug for GpuBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GpuBackend({})", self.info)
    }
}

/// Most partial sums a whole-tensor reduction produces (one per workgroup of the first pass).
const REDUCE_PARTS: usize = 256;

impl GpuBackend {
    /// Opens the adapter `selector` picks; unset selector fields come from the environment
    /// (`WGPU_BACKEND`, `WGPU_ADAPTER_NAME`, `WGPU_POWER_PREF`, `WGPU_ADAPTER_INDEX`).
    pub fn new(selector: &AdapterSelector) -> Result<GpuBackend, GpuError> {
        let sel = selector.clone().with_env();
        let adapter = device::select_adapter(&sel)?;
        let info = device::describe(&adapter);
        let (device, queue, limits) = device::request_device(&adapter)?;
        let pipelines = Pipelines::new(&device);
        let rec = Mutex::new(Recorder::new(&device, &limits));
        let stats = Arc::new(MemoryStats::default());
        let internal = Arc::new(MemoryStats::default());
        let max_binding = limits.max_storage_buffer_binding_size;
        let reduce_scratch = buffers::alloc(&device, &internal, REDUCE_PARTS, max_binding, "reduce partials");
        let splitk_scratch = Mutex::new(buffers::alloc(&device, &internal, 1, max_binding, "split-k partials"));
        Ok(GpuBackend {
            device,
            queue,
            info,
            limits,
            pipelines,
            rec,
            stats,
            internal,
            reduce_scratch,
            splitk_scratch,
            yolo_scratch: Mutex::new(yolo::ScratchCache::new()),
            unsupported_calls: AtomicU64::new(0),
        })
    }

    /// The adapter this backend runs on.
    pub fn adapter_info(&self) -> &AdapterInfoRecord {
        &self.info
    }

    /// The limits the device was created with.
    pub fn limits(&self) -> &wgpu::Limits {
        &self.limits
    }

    /// Compiles every kernel now instead of at first use.
    pub fn warm_up(&self) {
        self.pipelines.warm_up(&self.device);
    }

    /// Bytes of the backend's own scratch buffers (not counted in `memory_bytes`).
    pub fn internal_bytes(&self) -> u64 {
        self.internal.current().0
    }

    pub fn stats(&self) -> GpuStats {
        let rec = self.lock();
        GpuStats {
            dispatches: rec.dispatches,
            submissions: rec.submissions,
            bind_groups_created: rec.bind_groups_created,
            unsupported_calls: self.unsupported_calls.load(Ordering::Relaxed),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Recorder> {
        // A panic while recording leaves the recorder usable (at worst a half-built encoder).
        self.rec.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records one dispatch with the recorder already locked (ops made of several dispatches
    /// that share scratch memory hold the lock across them).
    fn dispatch_locked(&self, rec: &mut Recorder, k: Kernel, bufs: &[&GpuBuf], params: &[u32], grid: [u32; 3]) {
        rec.dispatch(&self.device, &self.queue, &self.pipelines, &[&self.stats, &self.internal], k, bufs, params, grid);
    }

    fn dispatch(&self, k: Kernel, bufs: &[&GpuBuf], params: &[u32], grid: [u32; 3]) {
        let mut rec = self.lock();
        self.dispatch_locked(&mut rec, k, bufs, params, grid);
    }

    /// One invocation per element of `n`, 256 per workgroup.
    fn dispatch_1d(&self, k: Kernel, bufs: &[&GpuBuf], params: &[u32], n: usize) {
        if n == 0 {
            return;
        }
        self.dispatch(k, bufs, params, self.grid((n as u64).div_ceil(256)));
    }

    /// `groups` workgroups laid out 2-D (kernels recover the flat id as wid.y * nwg.x + wid.x).
    fn grid(&self, groups: u64) -> [u32; 3] {
        grid_1d(groups, self.limits.max_compute_workgroups_per_dimension)
    }

    /// The split-K scratch, grown to at least `len` floats.
    fn splitk(&self, len: usize) -> GpuBuf {
        let mut s = self.splitk_scratch.lock().unwrap_or_else(|e| e.into_inner());
        if s.len() < len {
            *s = buffers::alloc(
                &self.device,
                &self.internal,
                len,
                self.limits.max_storage_buffer_binding_size,
                "split-k partials",
            );
        }
        s.clone()
    }

    fn alloc_buf(&self, len: usize) -> GpuBuf {
        buffers::alloc(&self.device, &self.stats, len, self.limits.max_storage_buffer_binding_size, "tensor")
    }

    fn flush_recorded(&self) {
        self.lock().flush(&self.queue);
    }

    fn upload_data(&self, buf: &GpuBuf, data: &[f32]) {
        assert_eq!(data.len(), buf.len(), "upload of {} floats into a view of {}", data.len(), buf.len());
        if data.is_empty() {
            return;
        }
        // queue.write_buffer lands before the next submission's commands, so work already
        // recorded (which may read the old contents) must be submitted first.
        let mut rec = self.lock();
        if rec.has_work() {
            rec.flush(&self.queue);
        }
        self.queue.write_buffer(buf.buffer(), buf.offset as u64 * 4, bytemuck::cast_slice(data));
    }

    fn download_data(&self, buf: &GpuBuf) -> Vec<f32> {
        let bytes = buf.len() as u64 * 4;
        if bytes == 0 {
            return Vec::new();
        }
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("download"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        {
            let mut rec = self.lock();
            rec.encoder(&self.device).copy_buffer_to_buffer(buf.buffer(), buf.offset as u64 * 4, &staging, 0, bytes);
            rec.flush(&self.queue);
        }
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        if let Err(e) = self.device.poll(wgpu::PollType::wait_indefinitely()) {
            panic!("gpu: waiting for the device failed: {e}");
        }
        match rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("gpu: mapping the download buffer failed: {e}"),
            Err(e) => panic!("gpu: download callback never ran: {e}"),
        }
        let view = staging.get_mapped_range(..).unwrap_or_else(|e| panic!("gpu: reading the download buffer: {e:?}"));
        let out = bytemuck::cast_slice::<u8, f32>(&view).to_vec();
        drop(view);
        staging.unmap();
        out
    }
}

/// Params block builder: u32 words, f32 stored as bits, in WGSL struct field order.
#[derive(Default)]
struct Params(Vec<u32>);

impl Params {
    fn new() -> Params {
        Params(Vec::with_capacity(24))
    }
    fn u(mut self, v: usize) -> Params {
        assert!(v <= u32::MAX as usize, "kernel parameter {v} exceeds u32");
        self.0.push(v as u32);
        self
    }
    fn f(mut self, v: f32) -> Params {
        self.0.push(v.to_bits());
        self
    }
    /// A view's float offset.
    fn o(mut self, b: &GpuBuf) -> Params {
        self.0.push(b.off());
        self
    }
    fn pad_to(mut self, words: usize) -> Params {
        while self.0.len() < words {
            self.0.push(0);
        }
        self
    }
}
