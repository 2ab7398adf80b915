//! The CPU backend: every [`Backend`] op run at once on host memory, on a pool of threads.
//!
//! It is the reference the GPU backend is checked against, so each op is written from the
//! formulas in the trait docs and darknet-spec §b/§c; one op family per submodule, named like
//! its `shaders-wgsl/<op>.wgsl` twin. It is also how users without a usable GPU train, so the hot
//! ops run on plain slices (vectorised by the compiler) across threads, and the composite ops are
//! fused (`fused.rs`). Two promises hold for every op:
//! - **Same numbers for any thread count.** Work is split into items chosen from the shape
//!   alone and every sum keeps one fixed order (see `par.rs`), so 1, 2 and N threads give
//!   bit-identical results.
//! - **Same numbers as the plain reference.** [`CpuBackend::reference`] runs one thread and the
//!   composite ops as the trait's plain ops ([`crate::backend::plain`]); the fused kernels do
//!   the same arithmetic in the same order, and the tests compare the two bit for bit.
//!
//! # Memory model
//! A [`CpuBuf`] is a view (storage + offset + length) into a shared [`Storage`] of `Cell<f32>`.
//! Ops take `&CpuBuf` and still write (interior mutability), exactly as a GPU records writes to
//! buffers it only holds handles to. Soundness rests on two rules kept in this module:
//! - **One op at a time per backend.** Every op (upload/download included) holds the backend's
//!   queue lock while it touches storage, and a buffer can only be used with the backend that
//!   allocated it (checked). The op's worker threads touch storage only inside the op, through
//!   plain slices made under the lock and split into disjoint pieces, so no two threads ever
//!   touch one float at the same time; that makes the `unsafe impl Send/Sync for Storage` correct.
//! - **Aliasing.** An op makes `&[f32]`/`&mut [f32]` from views only after checking how they
//!   overlap: an output must be disjoint from every other argument, except where the trait allows
//!   in place, where it must be disjoint or the very same view ([`par::Inout`]). The rarely used
//!   unary and binary elementwise ops (`Unary`, `Binary`) keep working on `&[Cell<f32>]` index by
//!   index, which is memory-safe for any overlap.

pub use half::round_f16;
mod activation;
mod batchnorm;
mod bias;
mod blas;
mod conv;
mod conv_mixed;
mod cost;
mod dropout;
mod fused;
mod half;
mod ops;
mod optim;
mod par;
pub(crate) mod pool;
mod reduce;
mod resample;
mod route;
mod softmax;
pub mod yolo;

use std::cell::Cell;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use crate::profile::{DispatchTime, Scope, Work};
use par::{Inout, Par};

/// State shared by a backend and every storage it allocated.
struct Shared {
    /// The "queue": held by every op.
    queue: Mutex<Queue>,
    allocated: AtomicU64,
    peak: AtomicU64,
    /// The conv GEMMs' operands are declared f16 (`Backend::set_gemm_operands`): checked.
    f16_operands: AtomicBool,
}

impl Shared {
    fn add_bytes(&self, bytes: u64) {
        let now = self.allocated.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.peak.fetch_max(now, Ordering::Relaxed);
    }
}

/// What the queue lock guards: scratch memory and the op timings.
struct Queue {
    /// im2col/col2im columns (grow-only, so a step allocates nothing once warm).
    col: Vec<f32>,
    /// A GEMM's output or gathered input when several images share one GEMM (grow-only).
    gemm: Vec<f32>,
    /// Label of the ops run from now on ([`crate::Backend::set_scope`]).
    scope: Scope,
    /// Time every op (on by default: two clock reads per op).
    timing: bool,
    times: Vec<DispatchTime>,
}

/// Device memory of the CPU backend: a fixed block of floats, freed (and un-counted) on drop.
struct Storage {
    data: Box<[Cell<f32>]>,
    owner: Arc<Shared>,
}

// SAFETY: `Cell` is not `Sync` because unsynchronised writes from two threads would race. Every
// access to `data` happens inside an op of the owning backend while it holds `owner.queue` (see
// the module docs): accesses from different ops are serialised, and the worker threads of one op
// touch disjoint floats.
unsafe impl Sync for Storage {}
// SAFETY: as above; moving the storage between threads is fine since access is serialised.
unsafe impl Send for Storage {}

impl Drop for Storage {
    fn drop(&mut self) {
        let bytes = (self.data.len() * 4) as u64;
        self.owner.allocated.fetch_sub(bytes, Ordering::Relaxed);
    }
}

/// A view of `len` floats at `offset` in a [`Storage`].
#[derive(Clone)]
pub struct CpuBuf {
    storage: Arc<Storage>,
    offset: usize,
    len: usize,
}

impl std::fmt::Debug for CpuBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CpuBuf({:p}+{}, len {})", Arc::as_ptr(&self.storage), self.offset, self.len)
    }
}

impl CpuBuf {
    /// The view's cells. Only called inside an op, under the queue lock.
    fn cells(&self) -> &[Cell<f32>] {
        &self.storage.data[self.offset..self.offset + self.len]
    }

    /// The view as a plain slice for reading.
    ///
    /// # Safety
    /// Under the queue lock, and nothing may write these floats while the slice lives.
    unsafe fn read(&self) -> &[f32] {
        // SAFETY: forwarded to the caller.
        unsafe { read_slice(self.cells()) }
    }

    /// The view as a plain slice for writing.
    ///
    /// # Safety
    /// Under the queue lock, and no other reference may cover these floats while it lives.
    #[allow(clippy::mut_from_ref)]
    unsafe fn write(&self) -> &mut [f32] {
        // SAFETY: forwarded to the caller.
        unsafe { write_slice(self.cells()) }
    }

    fn overlaps(&self, other: &CpuBuf) -> bool {
        Arc::ptr_eq(&self.storage, &other.storage)
            && self.len > 0
            && other.len > 0
            && self.offset < other.offset + other.len
            && other.offset < self.offset + self.len
    }

    fn same_view(&self, other: &CpuBuf) -> bool {
        Arc::ptr_eq(&self.storage, &other.storage) && self.offset == other.offset && self.len == other.len
    }
}

/// Read-only plain slice of cells.
///
/// # Safety
/// Nothing may write these cells while the returned slice lives.
unsafe fn read_slice(c: &[Cell<f32>]) -> &[f32] {
    // SAFETY: Cell<f32> has the layout of f32; the caller rules out concurrent writes.
    unsafe { std::slice::from_raw_parts(c.as_ptr() as *const f32, c.len()) }
}

/// Exclusive plain slice of cells.
///
/// # Safety
/// Nothing else may read or write these cells while the returned slice lives.
#[allow(clippy::mut_from_ref)]
unsafe fn write_slice(c: &[Cell<f32>]) -> &mut [f32] {
    // SAFETY: Cell permits mutation through a shared reference; the caller guarantees exclusivity.
    unsafe { std::slice::from_raw_parts_mut(c.as_ptr() as *mut f32, c.len()) }
}

/// Panics unless `out` is disjoint from every input (ops that use plain slices need this).
fn assert_disjoint(op: &str, outs: &[&CpuBuf], ins: &[&CpuBuf]) {
    for (i, o) in outs.iter().enumerate() {
        for x in ins.iter().chain(&outs[i + 1..]) {
            assert!(!o.overlaps(x), "cpu {op}: an output view overlaps another argument ({o:?} vs {x:?})");
        }
    }
}

/// The output `out` of an op that may run in place on `x`: the very same view, or disjoint.
///
/// # Safety
/// Under the queue lock; no other slice of `out` may be alive while the result lives.
unsafe fn inout<'a>(op: &str, x: &'a CpuBuf, out: &'a CpuBuf) -> Inout<'a> {
    assert_eq!(x.len, out.len, "cpu {op}: buffer lengths differ");
    // SAFETY: exclusivity of `out` is the caller's promise; `x` is either `out` itself (then only
    // the one &mut slice exists) or disjoint from it (checked).
    unsafe {
        if x.same_view(out) {
            Inout::Same(out.write())
        } else {
            assert_disjoint(op, &[out], &[x]);
            Inout::Split(x.read(), out.write())
        }
    }
}

/// Floats of the two scratch buffers (im2col columns and GEMM output per worker thread, gathered
/// gradients) a convolution of shape `s` needs on the CPU backend; each buffer grows to the
/// largest any layer needs, the first times the thread count.
pub fn conv_scratch_lens(s: &crate::shapes::ConvShape) -> (usize, usize) {
    (conv::col_len(s), conv::gemm_len(s))
}

pub use conv::{ConvOp, GemmCall, gemm_calls, run_gemm_call};

/// How a [`CpuBackend`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuOptions {
    /// Worker threads (0 = one per available core). Results do not depend on it.
    pub threads: usize,
    /// Run the composite ops as fused kernels (the default). `false` runs them as the trait's
    /// plain ops: the readable reference the fused kernels are tested against.
    pub fused: bool,
}

impl Default for CpuOptions {
    fn default() -> Self {
        CpuOptions { threads: 0, fused: true }
    }
}

/// The CPU backend. Create one per network; buffers are tied to it.
pub struct CpuBackend {
    shared: Arc<Shared>,
    par: Par,
    fused: bool,
}

impl Default for CpuBackend {
    fn default() -> Self {
        Self::new()
    }
}

/// Op timings kept until [`crate::Backend::take_timings`] collects them.
const MAX_TIMES: usize = 1 << 16;

/// An op in progress: holds the queue lock, and records the op's host time when dropped.
struct OpGuard<'a> {
    queue: MutexGuard<'a, Queue>,
    kernel: &'static str,
    work: Work,
    start: Option<Instant>,
}

impl Deref for OpGuard<'_> {
    type Target = Queue;
    fn deref(&self) -> &Queue {
        &self.queue
    }
}

impl DerefMut for OpGuard<'_> {
    fn deref_mut(&mut self) -> &mut Queue {
        &mut self.queue
    }
}

impl Drop for OpGuard<'_> {
    fn drop(&mut self) {
        if let Some(start) = self.start {
            let q = &mut *self.queue;
            // Timings wait for `take_timings` (the trainer takes them every step); work that
            // nobody collects (inference) stops being recorded instead of growing without end.
            if q.times.len() >= MAX_TIMES {
                return;
            }
            q.times.push(DispatchTime { scope: q.scope, kernel: self.kernel, seconds: start.elapsed().as_secs_f64(), work: self.work });
        }
    }
}

impl CpuBackend {
    /// Fused kernels on one thread per available core.
    pub fn new() -> CpuBackend {
        Self::with_options(CpuOptions::default())
    }

    /// Fused kernels on `threads` threads (0 = one per available core).
    pub fn with_threads(threads: usize) -> CpuBackend {
        Self::with_options(CpuOptions { threads, ..CpuOptions::default() })
    }

    /// The readable reference: one thread, composite ops as the plain ops.
    pub fn reference() -> CpuBackend {
        Self::with_options(CpuOptions { threads: 1, fused: false })
    }

    pub fn with_options(o: CpuOptions) -> CpuBackend {
        CpuBackend {
            shared: Arc::new(Shared {
                queue: Mutex::new(Queue {
                    col: Vec::new(),
                    gemm: Vec::new(),
                    scope: Scope::NONE,
                    timing: true,
                    times: Vec::new(),
                }),
                allocated: AtomicU64::new(0),
                peak: AtomicU64::new(0),
                f16_operands: AtomicBool::new(false),
            }),
            par: Par::new(o.threads),
            fused: o.fused,
        }
    }

    /// Worker threads this backend runs ops on.
    pub fn threads(&self) -> usize {
        self.par.threads()
    }

    /// Whether the composite ops run fused (false: [`CpuBackend::reference`]).
    pub fn fused(&self) -> bool {
        self.fused
    }

    /// Turns per-op host timing ([`crate::Backend::take_timings`]) on or off (on by default).
    pub fn set_timing(&self, on: bool) {
        let mut q = self.lock();
        q.timing = on;
        q.times.clear();
    }

    pub fn timing(&self) -> bool {
        self.lock().timing
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panicking op (failed shape assert) poisons the lock; the queue has no invariant.
        self.shared.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the queue lock after checking that every buffer belongs to this backend.
    fn begin(&self, bufs: &[&CpuBuf]) -> MutexGuard<'_, Queue> {
        for b in bufs {
            assert!(
                Arc::ptr_eq(&b.storage.owner, &self.shared),
                "cpu backend: buffer {b:?} was allocated by another backend"
            );
        }
        self.lock()
    }

    /// Starts op `kernel` (its name in the kernels table) on `bufs`, counted as `work`.
    /// Under f16 GEMM operands, panics if one of `operands` holds a value that is not f16
    /// (conv_mixed.rs says why).
    fn check_gemm_operands(&self, op: &str, operands: &[(&str, &CpuBuf)]) {
        if self.shared.f16_operands.load(Ordering::Relaxed) {
            let cells: Vec<(&str, &[Cell<f32>])> = operands.iter().map(|(n, b)| (*n, b.cells())).collect();
            conv_mixed::check_operands(op, &cells);
        }
    }

    fn op(&self, kernel: &'static str, work: Work, bufs: &[&CpuBuf]) -> OpGuard<'_> {
        let queue = self.begin(bufs);
        let start = queue.timing.then(Instant::now);
        OpGuard { queue, kernel, work, start }
    }

    fn alloc_zeroed(&self, len: usize) -> CpuBuf {
        // vec! of zeros gets zeroed pages from the allocator; then reinterpret as cells.
        let plain: Box<[f32]> = vec![0.0f32; len].into_boxed_slice();
        // SAFETY: Cell<f32> is repr(transparent) over f32, so the slice layouts are identical.
        let data: Box<[Cell<f32>]> = unsafe { Box::from_raw(Box::into_raw(plain) as *mut [Cell<f32>]) };
        self.shared.add_bytes((len * 4) as u64);
        CpuBuf { storage: Arc::new(Storage { data, owner: self.shared.clone() }), offset: 0, len }
    }

    fn bytes(&self) -> (u64, u64) {
        (self.shared.allocated.load(Ordering::Relaxed), self.shared.peak.load(Ordering::Relaxed))
    }

    /// Grows a scratch vector to at least `need` floats (counted as device memory).
    fn grow<'a>(&self, v: &'a mut Vec<f32>, need: usize) -> &'a mut [f32] {
        if v.len() < need {
            self.shared.add_bytes(((need - v.len()) * 4) as u64);
            v.resize(need, 0.0);
        }
        &mut v[..need]
    }

    /// The conv im2col scratch for shape `s`: one slab of [`conv::col_len`] per worker thread
    /// (`Par::for_each_scratch`), grown as [`CpuBackend::grow`] does.
    fn grow_col<'a>(&self, col: &'a mut Vec<f32>, s: &crate::shapes::ConvShape) -> &'a mut [f32] {
        self.grow(col, conv::col_len(s) * self.par.threads())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Backend;
    use crate::shapes::{Activation, ConvShape};

    #[test]
    fn memory_is_counted_and_released() {
        let be = CpuBackend::new();
        let a = be.alloc(100);
        let v = be.view(&a, 10, 20);
        assert_eq!(be.memory_bytes(), (400, 400));
        let b = be.alloc(50);
        assert_eq!(be.memory_bytes(), (600, 600));
        drop(b);
        assert_eq!(be.memory_bytes(), (400, 600));
        drop(a);
        // The view still holds the storage.
        assert_eq!(be.memory_bytes().0, 400);
        drop(v);
        assert_eq!(be.memory_bytes(), (0, 600));
    }

    #[test]
    fn im2col_scratch_grows_once_and_is_counted() {
        let be = CpuBackend::new();
        let s = ConvShape::new(1, 2, 5, 5, 3, 3, 1, 1, 1);
        let (x, w, y) = (be.alloc(s.input_len()), be.alloc(s.weight_len()), be.alloc(s.output_len()));
        let before = be.memory_bytes().0;
        be.conv_forward(&x, &w, &y, &s);
        let col = (conv::col_len(&s) * be.threads() * 4) as u64;
        assert_eq!(be.memory_bytes().0, before + col);
        be.conv_forward(&x, &w, &y, &s);
        assert_eq!(be.memory_bytes().0, before + col, "scratch must be reused");
    }

    #[test]
    fn views_share_storage() {
        let be = CpuBackend::new();
        let a = be.alloc(6);
        let v = be.view(&a, 2, 3);
        let vv = be.view(&v, 1, 2);
        be.upload(&vv, &[5.0, 6.0]);
        assert_eq!(be.download(&a), vec![0.0, 0.0, 0.0, 5.0, 6.0, 0.0]);
        assert_eq!(be.len(&vv), 2);
    }

    #[test]
    #[should_panic(expected = "overlaps")]
    fn conv_rejects_overlapping_output() {
        let be = CpuBackend::new();
        let s = ConvShape::new(1, 1, 3, 3, 1, 1, 1, 0, 1);
        let arena = be.alloc(20);
        let (x, w) = (be.view(&arena, 0, 9), be.view(&arena, 9, 1));
        let y = be.view(&arena, 5, 9);
        be.conv_forward(&x, &w, &y, &s);
    }

    #[test]
    #[should_panic(expected = "another backend")]
    fn buffers_are_tied_to_their_backend() {
        let (a, b) = (CpuBackend::new(), CpuBackend::new());
        let x = a.alloc(4);
        b.fill(&x, 1.0);
    }

    #[test]
    fn activation_in_place_matches_out_of_place() {
        let be = CpuBackend::new();
        let xs: Vec<f32> = (0..40).map(|i| i as f32 * 0.2 - 4.0).collect();
        for act in Activation::ALL {
            let (x, y) = (be.alloc(40), be.alloc(40));
            be.upload(&x, &xs);
            be.activation_forward(&x, &y, act);
            let dy = be.alloc(40);
            be.upload(&dy, &xs);
            let dx = be.alloc(40);
            be.activation_backward(&x, &y, &dy, &dx, act);
            let want = be.download(&dx);
            be.activation_backward(&x, &y, &dy, &dy, act);
            assert_eq!(be.download(&dy), want, "{act:?} backward in place");
            be.activation_forward(&x, &x, act);
            assert_eq!(be.download(&x), be.download(&y), "{act:?} forward in place");
        }
    }

    #[test]
    fn backend_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<CpuBackend>();
        check::<CpuBuf>();
    }
}
