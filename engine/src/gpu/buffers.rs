//! Device storage, views into it, and byte accounting.
//!
//! A [`GpuBuf`] is a view: shared storage plus an offset and a length in floats. Kernels bind a
//! storage buffer and receive the view's float offset within the binding in their params block,
//! because storage-buffer binding offsets must be aligned (256 bytes) and views start anywhere.
//! A buffer that fits one binding (the adapter's `max_storage_buffer_binding_size`) is bound
//! whole; a larger one (up to `max_buffer_size`) is bound through a window around the view
//! ([`GpuBuf::window`]), and ops whose views are larger than a binding split their dispatches over
//! the batch (gpu/chunk.rs).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Counters shared by the backend and every storage it made (storage may outlive nothing, but is
/// dropped by whoever holds the last view, so the counters live behind an Arc).
#[derive(Debug, Default)]
pub(crate) struct MemoryStats {
    allocated: AtomicU64,
    peak: AtomicU64,
    /// Ids of dropped storages whose cached bind groups must go (they keep the buffer alive).
    pub(crate) dead: Mutex<Vec<u64>>,
}

impl MemoryStats {
    pub(crate) fn add(&self, bytes: u64) {
        let now = self.allocated.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.peak.fetch_max(now, Ordering::Relaxed);
    }
    pub(crate) fn sub(&self, bytes: u64) {
        self.allocated.fetch_sub(bytes, Ordering::Relaxed);
    }
    pub(crate) fn current(&self) -> (u64, u64) {
        (self.allocated.load(Ordering::Relaxed), self.peak.load(Ordering::Relaxed))
    }
    /// Storage ids are unique across every backend and stats of the process (bind-group cache keys).
    pub(crate) fn new_id(&self) -> u64 {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        NEXT.fetch_add(1, Ordering::Relaxed)
    }
}

/// One wgpu buffer made by [`crate::Backend::alloc`].
pub(crate) struct Storage {
    pub(crate) id: u64,
    pub(crate) buffer: wgpu::Buffer,
    /// Bytes counted in the stats (the requested floats × 4).
    bytes: u64,
    /// Bytes of the wgpu buffer (at least 4).
    size: u64,
    /// The backend's binding limit and binding-offset alignment, in bytes.
    max_binding: u64,
    align: u64,
    stats: Arc<MemoryStats>,
}

impl Drop for Storage {
    fn drop(&mut self) {
        self.stats.sub(self.bytes);
        if let Ok(mut dead) = self.stats.dead.lock() {
            dead.push(self.id);
        }
    }
}

/// A view of `len` f32 values starting `offset` floats into a device buffer.
#[derive(Clone)]
pub struct GpuBuf {
    pub(crate) storage: Arc<Storage>,
    pub(crate) offset: usize,
    pub(crate) len: usize,
}

impl fmt::Debug for GpuBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GpuBuf(storage {}, offset {}, len {})", self.storage.id, self.offset, self.len)
    }
}

impl GpuBuf {
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Float offset within the bound range ([`GpuBuf::window`]) as a kernel parameter: less than
    /// one binding, so it cannot overflow u32.
    pub(crate) fn off(&self) -> u32 {
        ((self.offset as u64 * 4 - self.window().0) / 4) as u32
    }

    /// Whether the view can be bound at all (it lies within one binding-sized window). Ops split
    /// their work over the batch until every view they bind does.
    pub(crate) fn fits_binding(&self) -> bool {
        self.try_window().is_some()
    }

    /// Most floats a view may hold to be bindable wherever it starts (the window starts at the
    /// aligned-down offset, so up to one alignment less than a binding).
    pub(crate) fn max_view_floats(&self) -> usize {
        let s = &self.storage;
        (s.max_binding.saturating_sub(s.align) / 4) as usize
    }

    /// The byte range (start, size) of the storage bound for this view: the whole buffer when it
    /// fits one binding (offsets are then absolute, as they always were), else a binding-sized
    /// window holding the view. Windows start on a grid of half a binding where the view allows
    /// (few distinct windows, so few bind groups), else at the view's aligned-down start.
    pub(crate) fn window(&self) -> (u64, u64) {
        self.try_window().unwrap_or_else(|| {
            panic!(
                "gpu: a view of {} bytes cannot be bound within the adapter's storage binding limit of {} bytes \
                 (the op binding it does not split its work over the batch)",
                self.len as u64 * 4,
                self.storage.max_binding
            )
        })
    }

    fn try_window(&self) -> Option<(u64, u64)> {
        let s = &self.storage;
        if s.size <= s.max_binding {
            return Some((0, s.size));
        }
        let (start, end) = (self.offset as u64 * 4, (self.offset + self.len) as u64 * 4);
        let fine = start / s.align * s.align;
        let half = (s.max_binding / 2) / s.align * s.align;
        let coarse = start.checked_div(half).map_or(fine, |k| k * half);
        let w0 = if end - coarse <= s.max_binding { coarse } else { fine };
        let size = (s.size - w0).min(s.max_binding / 4 * 4);
        (end <= w0 + size).then_some((w0, size))
    }
    pub(crate) fn id(&self) -> u64 {
        self.storage.id
    }
    pub(crate) fn buffer(&self) -> &wgpu::Buffer {
        &self.storage.buffer
    }
}

/// Makes a zeroed device buffer (wgpu zero-initialises every buffer before first use).
pub(crate) fn alloc(
    device: &wgpu::Device,
    stats: &Arc<MemoryStats>,
    len: usize,
    limits: &wgpu::Limits,
    label: &str,
) -> GpuBuf {
    let bytes = (len as u64) * 4;
    // Networks are refused before they allocate what cannot fit (MemoryPlan::check_fits).
    assert!(
        bytes <= limits.max_buffer_size && len <= u32::MAX as usize,
        "gpu alloc of {len} floats ({bytes} bytes) exceeds the adapter's buffer size limit of {} bytes",
        limits.max_buffer_size
    );
    // Zero-sized buffers cannot be bound; keep one float.
    let size = bytes.max(4);
    let buffer = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    stats.add(bytes);
    let storage = Storage {
        id: stats.new_id(),
        buffer,
        bytes,
        size,
        max_binding: limits.max_storage_buffer_binding_size,
        align: u64::from(limits.min_storage_buffer_offset_alignment).max(4),
        stats: stats.clone(),
    };
    GpuBuf { storage: Arc::new(storage), offset: 0, len }
}

/// A view of `len` floats at `offset` within `buf`.
pub(crate) fn view(buf: &GpuBuf, offset: usize, len: usize) -> GpuBuf {
    assert!(
        offset.checked_add(len).is_some_and(|end| end <= buf.len),
        "view [{offset}, +{len}) outside a buffer of {} floats",
        buf.len
    );
    GpuBuf { storage: buf.storage.clone(), offset: buf.offset + offset, len }
}

/// A read mapping of a buffer begun by [`map_read`], for the device's queue to finish.
pub(crate) struct ReadMapping(std::sync::mpsc::Receiver<Result<(), wgpu::BufferAsyncError>>);

/// Starts mapping the first `bytes` of `buf` for reading (it completes once the submitted work
/// before it has run).
pub(crate) fn map_read(buf: &wgpu::Buffer, bytes: u64) -> ReadMapping {
    let (tx, rx) = std::sync::mpsc::channel();
    buf.map_async(wgpu::MapMode::Read, ..bytes, move |r| {
        let _ = tx.send(r);
    });
    ReadMapping(rx)
}

impl ReadMapping {
    /// Waits for the device and the mapping of `what` (named in the panic if either fails).
    pub(crate) fn wait(self, device: &wgpu::Device, what: &str) {
        if let Err(e) = device.poll(wgpu::PollType::wait_indefinitely()) {
            panic!("gpu: waiting for the device ({what}) failed: {e}");
        }
        match self.0.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("gpu: mapping {what} failed: {e}"),
            Err(e) => panic!("gpu: the mapping callback of {what} never ran: {e}"),
        }
    }
}
