//! The wgpu backend: every [`crate::Backend`] op as a WGSL compute kernel (shaders-wgsl/), run on
//! Metal, Vulkan or DX12 through wgpu.
//!
//! - device.rs: adapter listing and selection, device limits.
//! - buffers.rs: storage, views ([`GpuBuf`]), their bound windows and byte accounting.
//! - chunk.rs: ops over tensors larger than one storage binding run over ranges of images.
//! - pipelines.rs: shader registry (generated preamble + .wgsl), bind layouts, pipeline cache.
//! - params.rs: typed kernel parameter records, one per WGSL `struct P`.
//! - encoder.rs: recording dispatches into one command encoder, params arena, bind-group cache,
//!   timestamp queries.
//! - upload.rs: host data into tensors through kept staging buffers, copies recorded in order.
//! - ops.rs: the trait implementation (shapes → params → dispatches).
//! - yolo.rs: the [yolo] head's passes and their cached scratch.
//!
//! Ops record into one encoder; nothing waits except [`crate::Backend::download`]. Every kernel
//! is deterministic: reductions use fixed strided sums and fixed trees, never float atomics, so
//! two runs on one device give the same bits.

mod buffers;
mod channels;
mod chunk;
mod conv;
mod conv_col;
mod device;
mod encoder;
mod lanes;
mod ops;
mod params;
mod pipelines;
mod upload;
mod yolo;

use std::sync::{Arc, Mutex, MutexGuard};

pub use buffers::GpuBuf;
pub use device::{AdapterInfoRecord, AdapterSelector, GpuError, INSTALL_HINT, MixedGemm, MixedTiling, list_adapters};
pub use conv::GemmKind;
pub use pipelines::{GemmTile, deep_mixed_sources, shader_sources};

use buffers::MemoryStats;
use encoder::{Recorder, grid_1d};
use params::KernelParams;
use pipelines::{CompileOptions, Kernel, Pipelines};

use crate::backend::Download;
use crate::profile::{DispatchTime, Scope, Work};

/// Counters describing how the backend has been driven (for reports and tests).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GpuStats {
    pub dispatches: u64,
    pub submissions: u64,
    pub bind_groups_created: u64,
    /// Host-visible bytes held by the upload staging pool (gpu/upload.rs).
    pub staging_bytes: u64,
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
    /// Mixed precision's input upload: the f16 values before they are unpacked (gpu/upload.rs).
    f16_scratch: Mutex<GpuBuf>,
    channel_scratch: Mutex<GpuBuf>,
    /// Mixed precision's column path: f16 weights and im2col matrix (gpu/conv_col.rs).
    col_scratch: Mutex<GpuBuf>,
    /// Per-head yolo scratch (anchors, tallies, loss partials), made once per head shape.
    yolo_scratch: Mutex<yolo::ScratchCache>,
    /// The device offers timestamp queries (per-dispatch timing is possible).
    timestamps: bool,
    /// GEMM tiles forced by a tile sweep (`force_gemm_tile`), overriding the rule.
    forced_tiles: Mutex<Vec<(conv::GemmKind, GemmTile)>>,
    /// conv_mixed.wgsl writes whole tiles out directly (`set_coop_direct`).
    coop_direct: std::sync::atomic::AtomicBool,
    /// The forward and backward-weights GEMMs read an f16 im2col matrix (`set_coop_col`).
    coop_col: std::sync::atomic::AtomicBool,
    /// What mixed precision's conv GEMMs run on here.
    mixed_gemm: MixedGemm,
    /// What the conv GEMMs' operands hold now (`Backend::set_gemm_operands`).
    gemm_operands: Mutex<crate::backend::GemmOperands>,
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
        let mixed_gemm = device::mixed_gemm_support(&adapter);
        let lanes = lanes::wanted(&adapter, sel.lanes);
        let (device, queue, mut limits) = device::request_device(&adapter, &mixed_gemm, lanes.is_some())?;
        if let Some(cap) = sel.max_binding_bytes {
            // Only the backend's own decisions (windows, chunks) see the lowered limit.
            let floor = u64::from(limits.min_storage_buffer_offset_alignment).max(256) * 4;
            limits.max_storage_buffer_binding_size = limits.max_storage_buffer_binding_size.min(cap.max(floor) / 4 * 4);
        }
        let cpu = info.device_type == "cpu";
        let mut options = CompileOptions::for_adapter(cpu, cpu && info.backend == wgpu::Backend::Vulkan.to_str());
        if let Some(serial) = sel.serial_trees {
            options.serial_trees = serial;
        }
        if let Some(v) = sel.act_variants {
            options.act_variants = v;
        }
        if let Some(wide) = sel.wide {
            options.wide = wide.clamp(1, pipelines::MAX_WIDE);
        }
        // Checked once here: the kernels built for subgroup lanes assume their layout.
        options.lanes = lanes.filter(|&n| lanes::layout_holds(&device, &queue, n)).unwrap_or(0);
        let pipelines = Pipelines::new(&device, options);
        let timestamps = device.features().contains(wgpu::Features::TIMESTAMP_QUERY);
        let mut recorder = Recorder::new(&device, &limits);
        // Timing is on by default where the device can time: it costs little (see set_timing).
        recorder.set_timing(&device, &queue, timestamps);
        let rec = Mutex::new(recorder);
        let stats = Arc::new(MemoryStats::default());
        let internal = Arc::new(MemoryStats::default());
        let reduce_scratch = buffers::alloc(&device, &internal, REDUCE_PARTS, &limits, "reduce partials");
        let splitk_scratch = Mutex::new(buffers::alloc(&device, &internal, 1, &limits, "split-k partials"));
        let f16_scratch = Mutex::new(buffers::alloc(&device, &internal, 1, &limits, "f16 upload"));
        let channel_scratch = Mutex::new(buffers::alloc(&device, &internal, 1, &limits, "channel partials"));
        let col_scratch = Mutex::new(buffers::alloc(&device, &internal, 4, &limits, "f16 im2col matrix"));
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
            f16_scratch,
            channel_scratch,
            col_scratch,
            yolo_scratch: Mutex::new(yolo::ScratchCache::new()),
            timestamps,
            forced_tiles: Mutex::new(Vec::new()),
            coop_direct: std::sync::atomic::AtomicBool::new(conv::coop_direct_from_env()),
            coop_col: std::sync::atomic::AtomicBool::new(conv_col::coop_col_from_env()),
            mixed_gemm,
            gemm_operands: Mutex::new(Default::default()),
        })
    }

    /// The adapter this backend runs on.
    pub fn adapter_info(&self) -> &AdapterInfoRecord {
        &self.info
    }

    /// Subgroup lanes the fp32 conv GEMMs share A's rows through (0: none; CPU adapters with
    /// subgroups, gpu/lanes.rs).
    pub fn subgroup_lanes(&self) -> u32 {
        self.pipelines.lanes()
    }

    /// Pipelines made so far, for the test that `Backend::prepare` makes what a training step
    /// uses.
    #[doc(hidden)]
    pub fn pipeline_count(&self) -> usize {
        self.pipelines.count()
    }

    /// What mixed precision's conv GEMMs run on with this device.
    pub fn mixed_gemm(&self) -> &MixedGemm {
        &self.mixed_gemm
    }

    /// The limits the device was created with.
    pub fn limits(&self) -> &wgpu::Limits {
        &self.limits
    }

    /// Whether the device can time dispatches (`TIMESTAMP_QUERY`). Without it, steps return no
    /// device times and callers should say that only host time is recorded.
    pub fn timestamps_supported(&self) -> bool {
        self.timestamps
    }

    /// Turns per-dispatch GPU timing on or off (on by default where supported). Work already
    /// recorded keeps its setting; call between steps.
    pub fn set_timing(&self, on: bool) {
        let mut rec = self.lock();
        if rec.has_work() {
            rec.flush(&self.device, &self.queue);
        }
        rec.set_timing(&self.device, &self.queue, on && self.timestamps);
    }

    /// Whether dispatches are being timed.
    pub fn timing(&self) -> bool {
        self.lock().timing()
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
            staging_bytes: rec.uploads.bytes(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Recorder> {
        // A panic while recording leaves the recorder usable (at worst a half-built encoder).
        self.rec.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records one dispatch with the recorder already locked (ops made of several dispatches
    /// that share scratch memory hold the lock across them).
    #[allow(clippy::too_many_arguments)]
    fn dispatch_locked<P: KernelParams>(
        &self, rec: &mut Recorder, k: Kernel, tile: GemmTile, bufs: &[&GpuBuf], params: &P, grid: [u32; 3], work: Work,
    ) {
        self.dispatch_act_locked(rec, k, tile, pipelines::ACT_ANY, bufs, params, grid, work);
    }

    /// [`Self::dispatch_locked`] of a kernel applying activation `act` (its code in `params`):
    /// where the device specialises activations, a pipeline built for that one runs.
    #[allow(clippy::too_many_arguments)]
    fn dispatch_act_locked<P: KernelParams>(
        &self, rec: &mut Recorder, k: Kernel, tile: GemmTile, act: u32, bufs: &[&GpuBuf], params: &P, grid: [u32; 3], work: Work,
    ) {
        debug_assert_eq!(k.module().params_module(), P::MODULE, "{k:?} given params of another module");
        let stats = [&self.stats, &self.internal];
        rec.dispatch(&self.device, &self.queue, &self.pipelines, &stats, k, tile, act, bufs, bytemuck::bytes_of(params), grid, work);
    }

    fn dispatch<P: KernelParams>(&self, k: Kernel, bufs: &[&GpuBuf], params: &P, grid: [u32; 3], work: Work) {
        let mut rec = self.lock();
        self.dispatch_locked(&mut rec, k, GemmTile::DEFAULT, bufs, params, grid, work);
    }

    /// One invocation per element of `n` (per WIDE elements for a wide kernel), 256 per
    /// workgroup.
    fn dispatch_1d<P: KernelParams>(&self, k: Kernel, bufs: &[&GpuBuf], params: &P, n: usize, work: Work) {
        if n == 0 {
            return;
        }
        self.dispatch(k, bufs, params, self.grid_1d(k, n), work);
    }

    /// [`Self::dispatch_1d`] of a kernel applying activation `act` (see
    /// [`Self::dispatch_act_locked`]).
    fn dispatch_act_1d<P: KernelParams>(&self, k: Kernel, act: u32, bufs: &[&GpuBuf], params: &P, n: usize, work: Work) {
        if n == 0 {
            return;
        }
        let grid = self.grid_1d(k, n);
        self.dispatch_act_locked(&mut self.lock(), k, GemmTile::DEFAULT, act, bufs, params, grid, work);
    }

    /// The grid of `k` over `n` elements.
    fn grid_1d(&self, k: Kernel, n: usize) -> [u32; 3] {
        let per_group = if k.wide() { 256 * u64::from(self.pipelines.wide()) } else { 256 };
        self.grid((n as u64).div_ceil(per_group))
    }

    /// `groups` workgroups laid out 2-D (kernels recover the flat id as wid.y * nwg.x + wid.x).
    fn grid(&self, groups: u64) -> [u32; 3] {
        grid_1d(groups, self.limits.max_compute_workgroups_per_dimension)
    }

    /// A scratch buffer of the backend, grown to at least `len` floats. Ops that use one record
    /// all their dispatches before the next op can reuse it, and the GPU runs them in order.
    fn scratch(&self, slot: &Mutex<GpuBuf>, len: usize, label: &str) -> GpuBuf {
        let mut s = slot.lock().unwrap_or_else(|e| e.into_inner());
        if s.len() < len {
            *s = buffers::alloc(&self.device, &self.internal, len, &self.limits, label);
        }
        s.clone()
    }

    /// The split-K partials of the backward-weights GEMM.
    fn splitk(&self, len: usize) -> GpuBuf {
        self.scratch(&self.splitk_scratch, len, "split-k partials")
    }

    /// The per-channel reduction partials (batch norm, bias).
    fn channel_scratch(&self, len: usize) -> GpuBuf {
        self.scratch(&self.channel_scratch, len, "channel partials")
    }

    fn alloc_buf(&self, len: usize) -> GpuBuf {
        buffers::alloc(&self.device, &self.stats, len, &self.limits, "tensor")
    }

    fn flush_recorded(&self) {
        self.lock().flush(&self.device, &self.queue);
    }

    fn set_scope_label(&self, scope: Scope) {
        self.lock().scope = scope;
    }

    fn take_dispatch_times(&self) -> Option<Vec<DispatchTime>> {
        let mut rec = self.lock();
        if !rec.timing() {
            return None;
        }
        // Only timed work is submitted here: an upload recorded for the next step (a staged
        // input, Trainer::step_staging) waits for that step's submission.
        if rec.has_timed_work() {
            rec.flush(&self.device, &self.queue);
        }
        Some(rec.take_times(&self.device))
    }

    fn upload_data(&self, buf: &GpuBuf, data: &[f32]) {
        assert_eq!(data.len(), buf.len(), "upload of {} floats into a view of {}", data.len(), buf.len());
        if data.is_empty() {
            return;
        }
        // Recorded in order with the work around it: no submission of its own.
        self.lock().upload(&self.device, buf.buffer(), buf.offset as u64 * 4, bytemuck::cast_slice(data));
    }

    fn download_data(&self, buf: &GpuBuf) -> Vec<f32> {
        self.download_begin(buf).wait()
    }

    /// Records the copy of `buf` into a read-back buffer, submits everything recorded and
    /// returns at once; the [`Download`] waits for the device and reads the values.
    fn download_begin(&self, buf: &GpuBuf) -> Download {
        let bytes = buf.len() as u64 * 4;
        if bytes == 0 {
            return Download::ready(Vec::new());
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
            rec.flush(&self.device, &self.queue);
        }
        let mapping = buffers::map_read(&staging, bytes);
        let device = self.device.clone();
        Download::later(move || {
            mapping.wait(&device, "the download buffer");
            let view = staging.get_mapped_range(..).unwrap_or_else(|e| panic!("gpu: reading the download buffer: {e:?}"));
            let out = bytemuck::cast_slice::<u8, f32>(&view).to_vec();
            drop(view);
            staging.unmap();
            out
        })
    }
}
