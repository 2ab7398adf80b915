//! The CPU backend: every [`Backend`] op run at once on host memory.
//!
//! It is the reference the GPU backend is checked against, so each op is written plainly from
//! the formulas in the trait docs and darknet-spec §b/§c; one op family per submodule, named like
//! the future `shaders-wgsl/<op>.wgsl` file.
//!
//! # Memory model
//! A [`CpuBuf`] is a view (storage + offset + length) into a shared [`Storage`] of `Cell<f32>`.
//! Ops take `&CpuBuf` and still write (interior mutability), exactly as a GPU records writes to
//! buffers it only holds handles to. Soundness rests on two rules kept in this module:
//! - **One op at a time per backend.** Every op (upload/download included) holds the backend's
//!   queue lock while it touches storage, and a buffer can only be used with the backend that
//!   allocated it (checked). So no two threads ever touch one storage at the same time, which is
//!   what makes the `unsafe impl Send/Sync for Storage` below correct.
//! - **Aliasing.** Ops that may alias ("in place allowed" in the trait, and all elementwise ops)
//!   work on `&[Cell<f32>]` index by index, so overlapping views are memory-safe by construction
//!   and give the in-place result when the op reads element `i` before writing element `i`.
//!   Ops that hand raw slices to GEMM (convolution) or to the yolo loss create `&[f32]`/`&mut [f32]`
//!   only after asserting that the output views do not overlap any input view.

mod activation;
mod batchnorm;
mod blas;
mod conv;
mod dropout;
mod optim;
mod pool;
mod reduce;
mod resample;
mod route;

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::backend::Backend;
use crate::shapes::{Activation, BnBackward, BnStats, ConvShape, PoolShape, ReorgShape, SliceCopy, UpsampleShape, YoloParams};

/// State shared by a backend and every storage it allocated.
struct Shared {
    /// The "queue": held by every op. Holds the reusable im2col scratch.
    queue: Mutex<Scratch>,
    allocated: AtomicU64,
    peak: AtomicU64,
}

impl Shared {
    fn add_bytes(&self, bytes: u64) {
        let now = self.allocated.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.peak.fetch_max(now, Ordering::Relaxed);
    }
}

/// Scratch memory reused across ops (grow-only, so a step allocates nothing once warm).
#[derive(Default)]
struct Scratch {
    col: Vec<f32>,
}

/// Device memory of the CPU backend: a fixed block of floats, freed (and un-counted) on drop.
struct Storage {
    data: Box<[Cell<f32>]>,
    owner: Arc<Shared>,
}

// SAFETY: `Cell` is not `Sync` because unsynchronised writes from two threads would race. Every
// access to `data` happens inside an op of the owning backend while it holds `owner.queue` (see
// the module docs), so accesses are serialised across threads.
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

    fn overlaps(&self, other: &CpuBuf) -> bool {
        Arc::ptr_eq(&self.storage, &other.storage)
            && self.len > 0
            && other.len > 0
            && self.offset < other.offset + other.len
            && other.offset < self.offset + self.len
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

/// The CPU backend. Cheap to clone? No: create one per network; buffers are tied to it.
pub struct CpuBackend {
    shared: Arc<Shared>,
}

impl Default for CpuBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl CpuBackend {
    pub fn new() -> CpuBackend {
        CpuBackend {
            shared: Arc::new(Shared {
                queue: Mutex::new(Scratch::default()),
                allocated: AtomicU64::new(0),
                peak: AtomicU64::new(0),
            }),
        }
    }

    /// Takes the queue lock after checking that every buffer belongs to this backend.
    fn begin(&self, bufs: &[&CpuBuf]) -> MutexGuard<'_, Scratch> {
        for b in bufs {
            assert!(
                Arc::ptr_eq(&b.storage.owner, &self.shared),
                "cpu backend: buffer {b:?} was allocated by another backend"
            );
        }
        // A panicking op (failed shape assert) poisons the lock; the scratch has no invariant.
        self.shared.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Grows the im2col scratch to at least `need` floats (counted as device memory).
    fn col_scratch<'a>(&self, scratch: &'a mut Scratch, need: usize) -> &'a mut [f32] {
        if scratch.col.len() < need {
            self.shared.add_bytes(((need - scratch.col.len()) * 4) as u64);
            scratch.col.resize(need, 0.0);
        }
        &mut scratch.col[..need]
    }
}

impl Backend for CpuBackend {
    type Buf = CpuBuf;

    fn name(&self) -> String {
        "cpu".to_string()
    }

    fn alloc(&self, len: usize) -> CpuBuf {
        // vec! of zeros gets zeroed pages from the allocator; then reinterpret as cells.
        let plain: Box<[f32]> = vec![0.0f32; len].into_boxed_slice();
        // SAFETY: Cell<f32> is repr(transparent) over f32, so the slice layouts are identical.
        let data: Box<[Cell<f32>]> = unsafe { Box::from_raw(Box::into_raw(plain) as *mut [Cell<f32>]) };
        self.shared.add_bytes((len * 4) as u64);
        CpuBuf { storage: Arc::new(Storage { data, owner: self.shared.clone() }), offset: 0, len }
    }

    fn view(&self, buf: &CpuBuf, offset: usize, len: usize) -> CpuBuf {
        assert!(offset + len <= buf.len, "cpu view: {offset}+{len} exceeds view length {}", buf.len);
        CpuBuf { storage: buf.storage.clone(), offset: buf.offset + offset, len }
    }

    fn len(&self, buf: &CpuBuf) -> usize {
        buf.len
    }

    fn upload(&self, buf: &CpuBuf, data: &[f32]) {
        assert_eq!(data.len(), buf.len, "cpu upload: data length != buffer length");
        let _q = self.begin(&[buf]);
        for (c, &v) in buf.cells().iter().zip(data) {
            c.set(v);
        }
    }

    fn download(&self, buf: &CpuBuf) -> Vec<f32> {
        let _q = self.begin(&[buf]);
        buf.cells().iter().map(Cell::get).collect()
    }

    fn flush(&self) {}

    fn memory_bytes(&self) -> (u64, u64) {
        (self.shared.allocated.load(Ordering::Relaxed), self.shared.peak.load(Ordering::Relaxed))
    }

    // ---- elementwise ---------------------------------------------------------------------------
    fn fill(&self, x: &CpuBuf, value: f32) {
        let _q = self.begin(&[x]);
        blas::fill(x.cells(), value);
    }
    fn copy(&self, src: &CpuBuf, dst: &CpuBuf) {
        let _q = self.begin(&[src, dst]);
        blas::copy(src.cells(), dst.cells());
    }
    fn axpy(&self, a: f32, x: &CpuBuf, y: &CpuBuf) {
        let _q = self.begin(&[x, y]);
        blas::axpy(a, x.cells(), y.cells());
    }
    fn scal(&self, a: f32, x: &CpuBuf) {
        let _q = self.begin(&[x]);
        blas::scal(a, x.cells());
    }
    fn add(&self, a: &CpuBuf, b: &CpuBuf, out: &CpuBuf) {
        let _q = self.begin(&[a, b, out]);
        blas::binary(a.cells(), b.cells(), out.cells(), |x, y| x + y);
    }
    fn mul(&self, a: &CpuBuf, b: &CpuBuf, out: &CpuBuf) {
        let _q = self.begin(&[a, b, out]);
        blas::binary(a.cells(), b.cells(), out.cells(), |x, y| x * y);
    }
    fn div(&self, a: &CpuBuf, b: &CpuBuf, out: &CpuBuf) {
        let _q = self.begin(&[a, b, out]);
        blas::binary(a.cells(), b.cells(), out.cells(), |x, y| x / y);
    }
    fn exp(&self, x: &CpuBuf, out: &CpuBuf) {
        let _q = self.begin(&[x, out]);
        blas::unary(x.cells(), out.cells(), f32::exp);
    }
    fn log(&self, x: &CpuBuf, out: &CpuBuf) {
        let _q = self.begin(&[x, out]);
        blas::unary(x.cells(), out.cells(), f32::ln);
    }
    fn pow(&self, x: &CpuBuf, p: f32, out: &CpuBuf) {
        let _q = self.begin(&[x, out]);
        blas::unary(x.cells(), out.cells(), |v| v.powf(p));
    }
    fn mul_backward(&self, a: &CpuBuf, b: &CpuBuf, g: &CpuBuf, da: &CpuBuf, db: &CpuBuf) {
        let _q = self.begin(&[a, b, g, da, db]);
        blas::binary_backward(a.cells(), b.cells(), g.cells(), da.cells(), db.cells(), |a, b, g| (g * b, g * a));
    }
    fn div_backward(&self, a: &CpuBuf, b: &CpuBuf, g: &CpuBuf, da: &CpuBuf, db: &CpuBuf) {
        let _q = self.begin(&[a, b, g, da, db]);
        blas::binary_backward(a.cells(), b.cells(), g.cells(), da.cells(), db.cells(), |a, b, g| (g / b, -g * a / (b * b)));
    }
    fn exp_backward(&self, y: &CpuBuf, g: &CpuBuf, dx: &CpuBuf) {
        let _q = self.begin(&[y, g, dx]);
        blas::unary_backward(y.cells(), g.cells(), dx.cells(), |y, g| g * y);
    }
    fn log_backward(&self, x: &CpuBuf, g: &CpuBuf, dx: &CpuBuf) {
        let _q = self.begin(&[x, g, dx]);
        blas::unary_backward(x.cells(), g.cells(), dx.cells(), |x, g| g / x);
    }
    fn pow_backward(&self, x: &CpuBuf, p: f32, g: &CpuBuf, dx: &CpuBuf) {
        let _q = self.begin(&[x, g, dx]);
        blas::unary_backward(x.cells(), g.cells(), dx.cells(), |x, g| g * p * x.powf(p - 1.0));
    }

    // ---- convolution ---------------------------------------------------------------------------
    fn conv_forward(&self, x: &CpuBuf, w: &CpuBuf, y: &CpuBuf, s: &ConvShape) {
        let mut q = self.begin(&[x, w, y]);
        assert_disjoint("conv_forward", &[y], &[x, w]);
        let col = self.col_scratch(&mut q, conv::col_len(s));
        // SAFETY: y is disjoint from x and w (asserted) and the queue lock is held.
        unsafe { conv::forward(read_slice(x.cells()), read_slice(w.cells()), write_slice(y.cells()), s, col) }
    }
    fn conv_backward_data(&self, dy: &CpuBuf, w: &CpuBuf, dx: &CpuBuf, s: &ConvShape) {
        let mut q = self.begin(&[dy, w, dx]);
        assert_disjoint("conv_backward_data", &[dx], &[dy, w]);
        let col = self.col_scratch(&mut q, conv::col_len(s));
        // SAFETY: dx is disjoint from dy and w (asserted) and the queue lock is held.
        unsafe { conv::backward_data(read_slice(dy.cells()), read_slice(w.cells()), write_slice(dx.cells()), s, col) }
    }
    fn conv_backward_weights(&self, x: &CpuBuf, dy: &CpuBuf, dw: &CpuBuf, s: &ConvShape) {
        let mut q = self.begin(&[x, dy, dw]);
        assert_disjoint("conv_backward_weights", &[dw], &[x, dy]);
        let col = self.col_scratch(&mut q, conv::col_len(s));
        // SAFETY: dw is disjoint from x and dy (asserted) and the queue lock is held.
        unsafe { conv::backward_weights(read_slice(x.cells()), read_slice(dy.cells()), write_slice(dw.cells()), s, col) }
    }
    fn bias_add(&self, y: &CpuBuf, bias: &CpuBuf, batch: usize, channels: usize, spatial: usize) {
        let _q = self.begin(&[y, bias]);
        conv::bias_add(y.cells(), bias.cells(), batch, channels, spatial);
    }
    fn bias_backward(&self, dy: &CpuBuf, dbias: &CpuBuf, batch: usize, channels: usize, spatial: usize) {
        let _q = self.begin(&[dy, dbias]);
        conv::bias_backward(dy.cells(), dbias.cells(), batch, channels, spatial);
    }

    // ---- batch normalisation -------------------------------------------------------------------
    fn batchnorm_forward_train(
        &self, x: &CpuBuf, y: &CpuBuf, x_norm: &CpuBuf, mean: &CpuBuf, var: &CpuBuf,
        rolling_mean: &CpuBuf, rolling_var: &CpuBuf, gamma: &CpuBuf, beta: &CpuBuf,
        batch: usize, channels: usize, spatial: usize, stats: BnStats,
    ) {
        let _q = self.begin(&[x, y, x_norm, mean, var, rolling_mean, rolling_var, gamma, beta]);
        let bufs = batchnorm::TrainBufs {
            x: x.cells(), y: y.cells(), x_norm: x_norm.cells(), mean: mean.cells(), var: var.cells(),
            rolling_mean: rolling_mean.cells(), rolling_var: rolling_var.cells(),
            gamma: gamma.cells(), beta: beta.cells(),
        };
        batchnorm::forward_train(&bufs, batch, channels, spatial, stats);
    }
    fn batchnorm_forward_infer(
        &self, x: &CpuBuf, y: &CpuBuf, rolling_mean: &CpuBuf, rolling_var: &CpuBuf,
        gamma: &CpuBuf, beta: &CpuBuf, batch: usize, channels: usize, spatial: usize,
    ) {
        let _q = self.begin(&[x, y, rolling_mean, rolling_var, gamma, beta]);
        batchnorm::forward_infer(
            x.cells(), y.cells(), rolling_mean.cells(), rolling_var.cells(), gamma.cells(), beta.cells(),
            batch, channels, spatial,
        );
    }
    fn batchnorm_backward(
        &self, dy: &CpuBuf, x_norm: &CpuBuf, var: &CpuBuf, gamma: &CpuBuf,
        dgamma: &CpuBuf, dbeta: &CpuBuf, dx: &CpuBuf,
        batch: usize, channels: usize, spatial: usize, form: BnBackward,
    ) {
        let _q = self.begin(&[dy, x_norm, var, gamma, dgamma, dbeta, dx]);
        batchnorm::backward(
            dy.cells(), x_norm.cells(), var.cells(), gamma.cells(), dgamma.cells(), dbeta.cells(), dx.cells(),
            batch, channels, spatial, form,
        );
    }

    // ---- activations ---------------------------------------------------------------------------
    fn activation_forward(&self, x: &CpuBuf, y: &CpuBuf, act: Activation) {
        let _q = self.begin(&[x, y]);
        activation::forward(x.cells(), y.cells(), act);
    }
    fn activation_backward(&self, x: &CpuBuf, y: &CpuBuf, dy: &CpuBuf, dx: &CpuBuf, act: Activation) {
        let _q = self.begin(&[x, y, dy, dx]);
        activation::backward(x.cells(), y.cells(), dy.cells(), dx.cells(), act);
    }

    // ---- pooling / resampling ------------------------------------------------------------------
    fn maxpool_forward(&self, x: &CpuBuf, y: &CpuBuf, s: &PoolShape) {
        let _q = self.begin(&[x, y]);
        pool::max_forward(x.cells(), y.cells(), s);
    }
    fn maxpool_backward(&self, x: &CpuBuf, dy: &CpuBuf, dx: &CpuBuf, s: &PoolShape) {
        let _q = self.begin(&[x, dy, dx]);
        pool::max_backward(x.cells(), dy.cells(), dx.cells(), s);
    }
    fn avgpool_forward(&self, x: &CpuBuf, y: &CpuBuf, batch: usize, channels: usize, spatial: usize) {
        let _q = self.begin(&[x, y]);
        pool::avg_forward(x.cells(), y.cells(), batch * channels, spatial);
    }
    fn avgpool_backward(&self, dy: &CpuBuf, dx: &CpuBuf, batch: usize, channels: usize, spatial: usize) {
        let _q = self.begin(&[dy, dx]);
        pool::avg_backward(dy.cells(), dx.cells(), batch * channels, spatial);
    }
    fn upsample_forward(&self, x: &CpuBuf, y: &CpuBuf, s: &UpsampleShape) {
        let _q = self.begin(&[x, y]);
        resample::upsample_forward(x.cells(), y.cells(), s);
    }
    fn upsample_backward(&self, dy: &CpuBuf, dx: &CpuBuf, s: &UpsampleShape) {
        let _q = self.begin(&[dy, dx]);
        resample::upsample_backward(dy.cells(), dx.cells(), s);
    }
    fn reorg_forward(&self, x: &CpuBuf, y: &CpuBuf, s: &ReorgShape) {
        let _q = self.begin(&[x, y]);
        resample::reorg_forward(x.cells(), y.cells(), s);
    }
    fn reorg_backward(&self, dy: &CpuBuf, dx: &CpuBuf, s: &ReorgShape) {
        let _q = self.begin(&[dy, dx]);
        resample::reorg_backward(dy.cells(), dx.cells(), s);
    }

    // ---- route / scale_channels ----------------------------------------------------------------
    fn copy_slices(&self, src: &CpuBuf, dst: &CpuBuf, s: &SliceCopy) {
        let _q = self.begin(&[src, dst]);
        route::copy_slices(src.cells(), dst.cells(), s);
    }
    fn scale_channels_forward(&self, x: &CpuBuf, scale: &CpuBuf, y: &CpuBuf, batch: usize, channels: usize, spatial: usize) {
        let _q = self.begin(&[x, scale, y]);
        route::scale_channels_forward(x.cells(), scale.cells(), y.cells(), batch * channels, spatial);
    }
    fn scale_channels_backward(
        &self, x: &CpuBuf, scale: &CpuBuf, dy: &CpuBuf, dx: &CpuBuf, dscale: &CpuBuf,
        batch: usize, channels: usize, spatial: usize,
    ) {
        let _q = self.begin(&[x, scale, dy, dx, dscale]);
        route::scale_channels_backward(x.cells(), scale.cells(), dy.cells(), dx.cells(), dscale.cells(), batch * channels, spatial);
    }

    // ---- dropout -------------------------------------------------------------------------------
    fn dropout_forward(&self, x: &CpuBuf, y: &CpuBuf, p: f32, seed: u64) {
        let _q = self.begin(&[x, y]);
        dropout::forward(x.cells(), y.cells(), p, seed);
    }
    fn dropout_backward(&self, dy: &CpuBuf, dx: &CpuBuf, p: f32, seed: u64) {
        let _q = self.begin(&[dy, dx]);
        dropout::backward(dy.cells(), dx.cells(), p, seed);
    }

    // ---- yolo ----------------------------------------------------------------------------------
    fn yolo_forward_backward(&self, x: &CpuBuf, out: &CpuBuf, truths: &CpuBuf, dx: &CpuBuf, stats: &CpuBuf, p: &YoloParams) {
        let _q = self.begin(&[x, out, truths, dx, stats]);
        assert_disjoint("yolo_forward_backward", &[out, dx, stats], &[x, truths]);
        // SAFETY: the three outputs are pairwise disjoint and disjoint from the inputs (asserted);
        // the queue lock is held.
        unsafe {
            crate::yolo::forward_backward_cpu(
                read_slice(x.cells()), write_slice(out.cells()), read_slice(truths.cells()),
                write_slice(dx.cells()), write_slice(stats.cells()), p,
            )
        }
    }

    // ---- optimisers ----------------------------------------------------------------------------
    fn sgd_update(&self, w: &CpuBuf, upd: &CpuBuf, lr: f32, momentum: f32, decay: f32, batch: f32) {
        let _q = self.begin(&[w, upd]);
        optim::sgd(w.cells(), upd.cells(), lr, momentum, decay, batch);
    }
    fn adam_update(
        &self, w: &CpuBuf, upd: &CpuBuf, m: &CpuBuf, v: &CpuBuf, lr: f32, b1: f32, b2: f32, eps: f32,
        decay: f32, batch: f32, t: u32,
    ) {
        let _q = self.begin(&[w, upd, m, v]);
        let h = optim::AdamHyper { lr, b1, b2, eps, decay, batch, t };
        optim::adam(w.cells(), upd.cells(), m.cells(), v.cells(), &h);
    }

    // ---- reductions ----------------------------------------------------------------------------
    fn sum_into(&self, x: &CpuBuf, out: &CpuBuf, index: usize) {
        let _q = self.begin(&[x, out]);
        out.cells()[index].set(reduce::sum(x.cells()));
    }
    fn sum_squares_into(&self, x: &CpuBuf, out: &CpuBuf, index: usize) {
        let _q = self.begin(&[x, out]);
        out.cells()[index].set(reduce::sum_squares(x.cells()));
    }
    fn nonfinite_into(&self, x: &CpuBuf, out: &CpuBuf, index: usize) {
        let _q = self.begin(&[x, out]);
        out.cells()[index].set(if reduce::any_nonfinite(x.cells()) { 1.0 } else { 0.0 });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let col = (conv::col_len(&s) * 4) as u64;
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
