//! Device storage, views into it, and byte accounting.
//!
//! A [`GpuBuf`] is a view: shared storage plus an offset and a length in floats. Kernels bind the
//! whole storage buffer and receive the view's float offset in their params block, because
//! storage-buffer binding offsets must be 256-byte aligned and views start anywhere.

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
    /// Float offset as a kernel parameter. Views beyond 2^32 floats (16 GiB) cannot be addressed by
    /// WGSL's u32 indices, so alloc refuses them and this cannot overflow.
    pub(crate) fn off(&self) -> u32 {
        self.offset as u32
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
    max_binding: u64,
    label: &str,
) -> GpuBuf {
    let bytes = (len as u64) * 4;
    assert!(
        bytes <= max_binding && len <= u32::MAX as usize,
        "gpu alloc of {len} floats ({bytes} bytes) exceeds the adapter's storage binding limit of {max_binding} bytes"
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
    let storage = Storage { id: stats.new_id(), buffer, bytes, stats: stats.clone() };
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
