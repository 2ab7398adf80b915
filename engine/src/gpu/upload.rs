//! Host data into device tensors through staging buffers the backend keeps.
//!
//! `queue.write_buffer` stages every call in fresh host-visible memory, and lands before the
//! next submission's commands, so the backend had to submit the work recorded so far first: a
//! training step's batch (133 MB for yolov4-tiny at 416×416, batch 64) cost a new mapped
//! allocation, written while the device sat idle, and a second submission per step.
//!
//! Here each upload is copied into a mapped staging buffer from a pool, and the copy into the
//! tensor is recorded in the step's encoder, in order with the dispatches around it. After the
//! submission that holds the copy, the buffer is mapped again (`map_async`); it is back in the
//! pool once the device has finished with it, which a step's read-back wait ensures. A steady
//! training loop therefore reuses the same few buffers and allocates nothing (two of the
//! input's size where the next step's input is staged while a step runs).
//!
//! Mixed precision's network input goes up as f16 (`upload_f16`): converted on the host straight
//! into the staging buffer, two values to a word, and unpacked on the device: half the bytes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use half::slice::HalfFloatSliceExt;

use super::params::{HalfP, off, u};
use super::pipelines::Kernel;
use super::{GpuBackend, GpuBuf};
use crate::profile::Work;

/// Staging buffers smaller than this are made at this size, so that small uploads share them.
const MIN_STAGING: u64 = 1 << 16;
/// Buffers the pool keeps beyond those in flight; larger uploads replace smaller buffers.
const KEEP: usize = 4;
/// Fitting buffers in flight before an upload waits for one to come back instead of making
/// another: two, so that a step's input can be staged while the step before it still reads
/// its own (`Trainer::step_staging`).
const IN_FLIGHT: usize = 2;

/// Where a staging buffer stands (`Staging::state`).
const MAPPED: u8 = 0;
const MAPPING: u8 = 1;
const FAILED: u8 = 2;

struct Staging {
    buf: wgpu::Buffer,
    /// MAPPED, MAPPING or FAILED, set by the map callback.
    state: Arc<AtomicU8>,
}

impl Staging {
    fn size(&self) -> u64 {
        self.buf.size()
    }
}

/// The pool: buffers mapped and free, buffers holding a recorded copy (unmapped, waiting for
/// the submit), and buffers being mapped again after it.
#[derive(Default)]
pub(crate) struct Uploads {
    free: Vec<Staging>,
    recorded: Vec<Staging>,
    mapping: Vec<Staging>,
}

impl Uploads {
    /// Bytes of all staging buffers the pool holds (host-visible memory).
    pub(crate) fn bytes(&self) -> u64 {
        self.free.iter().chain(&self.recorded).chain(&self.mapping).map(Staging::size).sum()
    }

    /// A mapped staging buffer of at least `len` bytes, written by `fill`, and returned unmapped
    /// to be the source of a copy recorded in the current encoder; [`Uploads::submitted`] must
    /// follow the submit. `fill` gets parts of the range (each a multiple of 4 bytes long, but the
    /// last) with the byte offset of their start, on up to [`MAX_COPY_THREADS`] threads.
    pub(crate) fn stage_with(&mut self, device: &wgpu::Device, len: usize, fill: &Fill<'_>) -> &wgpu::Buffer {
        let size = len as u64;
        self.collect();
        let fits = |s: &Staging| s.size() >= size;
        if !self.free.iter().any(fits) && self.mapping.iter().filter(|s| fits(s)).count() >= IN_FLIGHT {
            // Buffers that fit are still in flight: wait for the device rather than allocate.
            if let Err(e) = device.poll(wgpu::PollType::wait_indefinitely()) {
                panic!("gpu: waiting for an upload buffer failed: {e}");
            }
            self.collect();
        }
        // The smallest free buffer that fits; else a new one, dropping the smallest free ones
        // beyond what the pool keeps.
        let pick = self.free.iter().enumerate().filter(|(_, s)| fits(s)).min_by_key(|(_, s)| s.size()).map(|(i, _)| i);
        let staging = match pick {
            Some(i) => self.free.swap_remove(i),
            None => {
                self.free.sort_by_key(Staging::size);
                while self.free.len() >= KEEP {
                    self.free.remove(0);
                }
                Staging {
                    buf: device.create_buffer(&wgpu::BufferDescriptor {
                        label: Some("upload staging"),
                        size: size.max(MIN_STAGING).next_multiple_of(wgpu::COPY_BUFFER_ALIGNMENT),
                        usage: wgpu::BufferUsages::MAP_WRITE | wgpu::BufferUsages::COPY_SRC,
                        mapped_at_creation: true,
                    }),
                    state: Arc::new(AtomicU8::new(MAPPED)),
                }
            }
        };
        {
            let mut view = staging.buf.get_mapped_range_mut(..size).unwrap_or_else(|e| panic!("gpu: writing an upload buffer: {e:?}"));
            fill_on_threads(view.slice(..), len, fill);
        }
        staging.buf.unmap();
        self.recorded.push(staging);
        &self.recorded.last().expect("just pushed").buf
    }

    /// After the submission holding the recorded copies: map their buffers again.
    pub(crate) fn submitted(&mut self) {
        for s in self.recorded.drain(..) {
            s.state.store(MAPPING, Ordering::Release);
            let state = Arc::clone(&s.state);
            s.buf.map_async(wgpu::MapMode::Write, .., move |r| {
                state.store(if r.is_ok() { MAPPED } else { FAILED }, Ordering::Release);
            });
            self.mapping.push(s);
        }
    }

    /// Moves buffers whose mapping finished back to the free list (a failed one is dropped).
    fn collect(&mut self) {
        let mut i = 0;
        while i < self.mapping.len() {
            match self.mapping[i].state.load(Ordering::Acquire) {
                MAPPED => {
                    let s = self.mapping.swap_remove(i);
                    self.free.push(s);
                }
                FAILED => {
                    self.mapping.swap_remove(i);
                }
                _ => i += 1,
            }
        }
    }
}

/// Bytes per thread below which a copy into staging memory stays on the calling thread.
const BYTES_PER_THREAD: usize = 8 << 20;
/// Most threads one copy is split over.
const MAX_COPY_THREADS: usize = 8;

/// What writes a staging range: a part of it and the byte offset where that part starts.
pub(crate) type Fill<'a> = dyn Fn(wgpu::WriteOnly<'_, [u8]>, usize) + Sync + 'a;

/// `fill` over `dst` (`len` bytes), split over scoped threads when large: staging memory is
/// often write-combined, where one core's stores reach a fraction of the memory's bandwidth,
/// and a step's batch is copied while the device waits for it. Parts start on multiples of 4
/// bytes, so a fill that writes whole 4-byte words never sees a word split.
fn fill_on_threads(dst: wgpu::WriteOnly<'_, [u8]>, len: usize, fill: &Fill<'_>) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = cores.min(MAX_COPY_THREADS).min(len / BYTES_PER_THREAD).max(1);
    if threads == 1 {
        fill(dst, 0);
        return;
    }
    /// A part of the mapped range, moved to the thread that writes it.
    struct Part<'a>(wgpu::WriteOnly<'a, [u8]>);
    // SAFETY: a WriteOnly is an exclusive, write-only view of its bytes, like `&mut [u8]`
    // (which is Send); the parts come from `split_at`, so no two threads see the same byte, and
    // the scope ends every thread before the mapped range is dropped.
    unsafe impl Send for Part<'_> {}
    let chunk = len.div_ceil(threads).next_multiple_of(4);
    std::thread::scope(|scope| {
        let mut rest = dst;
        let mut start = 0;
        while start < len {
            let n = chunk.min(len - start);
            let (head, tail) = rest.split_at(n);
            rest = tail;
            let head = Part(head);
            scope.spawn(move || {
                let head = head;
                fill(head.0, start);
            });
            start += n;
        }
    });
}

impl GpuBackend {
    /// `Backend::upload_f16`: `data` rounded to f16 on the host (the `half` crate rounds as
    /// round_f16 does; a test checks it), copied as 16-bit values into a scratch buffer and
    /// unpacked into `buf` by `unpack_f16`.
    pub(super) fn upload_f16_data(&self, buf: &GpuBuf, data: &[f32]) {
        assert_eq!(data.len(), buf.len(), "upload of {} floats into a view of {}", data.len(), buf.len());
        if data.is_empty() {
            return;
        }
        self.elementwise("upload_f16", data.len(), &[buf], |n, v| {
            let start = v[0].offset - buf.offset;
            let part = &data[start..start + n];
            let words = n.div_ceil(2);
            let packed = self.scratch(&self.f16_scratch, words, "f16 upload");
            let fill = |dst: wgpu::WriteOnly<'_, [u8]>, at: usize| pack_f16(dst, &part[at / 2..]);
            self.lock().upload_with(&self.device, packed.buffer(), packed.offset as u64 * 4, words * 4, &fill);
            let p = HalfP { n: u(n), o1: off(&packed), o2: off(v[0]), pad: 0 };
            self.dispatch_1d(Kernel::UnpackF16, &[&packed, v[0]], &p, n, Work::elementwise(n, 1, 1, 1));
        });
    }
}

/// Values converted to f16 per block: small enough to stay in the core's cache.
const PACK_BLOCK: usize = 4096;

/// `src` as f16 values into `dst` (2 bytes each, little-endian: value 2w in word w's low half),
/// for as many values as `dst` holds; a last odd byte pair past `src` is zero.
fn pack_f16(mut dst: wgpu::WriteOnly<'_, [u8]>, src: &[f32]) {
    let mut block = [half::f16::ZERO; PACK_BLOCK];
    let values = (dst.len() / 2).min(src.len());
    let mut done = 0;
    while done < values {
        let n = PACK_BLOCK.min(values - done);
        block[..n].convert_from_f32_slice(&src[done..done + n]);
        let bytes: &[u8] = bytemuck::cast_slice(block[..n].reinterpret_cast());
        dst.slice(2 * done..2 * (done + n)).copy_from_slice(bytes);
        done += n;
    }
    if 2 * done < dst.len() {
        dst.slice(2 * done..).fill(0);
    }
}
