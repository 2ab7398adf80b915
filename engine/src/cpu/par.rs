//! Threads of the CPU backend, and the rule that keeps results independent of their number.
//!
//! Every op splits its work into items chosen from the *shape alone* (images, channels, planes,
//! fixed-size chunks, GEMM column tiles), never from the thread count, and each item is computed by
//! one thread in the same order as the single-threaded loop would. An item writes only its own
//! outputs; a reduction over items (a per-channel sum, a weight gradient over the batch) is made
//! inside one item or combined afterwards in item order. So 1, 2 or N threads give bit-identical
//! results: the threads only decide *who* computes an item, never *what* it computes.

use std::ops::Range;

/// Floats per item of elementwise work: big enough that scheduling costs nothing, small enough
/// that two threads share a 100k-float tensor.
pub(super) const CHUNK: usize = 1 << 14;

/// Runs `f` compiled for AVX-512 where this CPU has it, else as it is: the same IEEE operations
/// in the same order either way (Rust never fuses a multiply and an add by itself), only more of
/// them per instruction. For the hot loops of an item; what `f` calls is widened only where it
/// is inlined into `f`.
#[inline(always)]
pub(super) fn wide<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512bw") {
        #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl")]
        unsafe fn run<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        // SAFETY: the CPU has the features (checked above).
        return unsafe { run(f) };
    }
    f()
}

/// Whether [`wide`] runs AVX-512 code on this CPU (for paths that are only worth taking there).
pub(super) fn has_wide() -> bool {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512bw") {
        return true;
    }
    false
}

/// A pool of worker threads (none for one thread: the caller's thread does all the work).
pub(super) struct Par {
    pool: Option<rayon::ThreadPool>,
    threads: usize,
}

impl Par {
    /// `threads` workers (0 = one per available core).
    pub(super) fn new(threads: usize) -> Par {
        let threads = if threads == 0 { std::thread::available_parallelism().map_or(1, |n| n.get()) } else { threads };
        let pool = (threads > 1).then(|| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .thread_name(|i| format!("cpu-backend-{i}"))
                .build()
                .expect("cpu backend: cannot start worker threads")
        });
        Par { pool, threads }
    }

    pub(super) fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `f(i)` for every item `i < items`, on the workers.
    pub(super) fn for_each(&self, items: usize, f: impl Fn(usize) + Send + Sync) {
        match &self.pool {
            Some(pool) if items > 1 => {
                use rayon::prelude::*;
                pool.install(|| (0..items).into_par_iter().for_each(f));
            }
            _ => (0..items).for_each(f),
        }
    }

    /// Runs `f(i, scratch)` for every item `i < items`, where `scratch` is `per` floats of
    /// `slabs` owned by the worker running the item (`slabs` holds `threads() · per`). A worker
    /// runs one item at a time, so items reuse their worker's slab without sharing it; which
    /// slab an item gets never changes what it computes.
    pub(super) fn for_each_scratch(&self, items: usize, slabs: &mut [f32], per: usize, f: impl Fn(usize, &mut [f32]) + Send + Sync) {
        assert!(slabs.len() >= per * self.threads, "cpu backend: {} floats of scratch for {} workers of {per}", slabs.len(), self.threads);
        match &self.pool {
            Some(pool) if items > 1 => {
                use rayon::prelude::*;
                let s = SharedMut::new(slabs);
                pool.install(|| {
                    (0..items).into_par_iter().for_each(|i| {
                        // Inside install the items run on this pool's workers only.
                        let t = rayon::current_thread_index().expect("cpu backend: item outside the worker pool");
                        // SAFETY: worker t alone takes slab t, for one item at a time (an item
                        // makes no rayon calls, so its worker cannot start another meanwhile).
                        f(i, unsafe { s.slice_mut(t * per..(t + 1) * per) })
                    })
                });
            }
            _ => (0..items).for_each(|i| f(i, &mut slabs[..per])),
        }
    }

    /// `f(i)` for every item, collected in item order.
    pub(super) fn map<T: Send>(&self, items: usize, f: impl Fn(usize) -> T + Send + Sync) -> Vec<T> {
        match &self.pool {
            Some(pool) if items > 1 => {
                use rayon::prelude::*;
                pool.install(|| (0..items).into_par_iter().map(f).collect())
            }
            _ => (0..items).map(f).collect(),
        }
    }

    /// `f(range, chunk)` over consecutive pieces of `out` of `piece` floats (the last may be
    /// shorter); `range` is the piece's place in `out`.
    pub(super) fn chunks(&self, out: &mut [f32], piece: usize, f: impl Fn(Range<usize>, &mut [f32]) + Send + Sync) {
        let piece = piece.max(1);
        let ptr = SharedMut::new(out);
        let items = out.len().div_ceil(piece);
        self.for_each(items, |i| {
            let r = i * piece..((i + 1) * piece).min(ptr.len);
            // SAFETY: the pieces are disjoint ranges of `out`, each handed to one item.
            f(r.clone(), unsafe { ptr.slice_mut(r) })
        });
    }
}

/// `out` shared between items that write disjoint parts of it.
#[derive(Clone, Copy)]
pub(super) struct SharedMut {
    ptr: *mut f32,
    pub len: usize,
}

// SAFETY: a SharedMut is only used to hand disjoint ranges to different items (see `slice_mut`).
unsafe impl Send for SharedMut {}
// SAFETY: as above.
unsafe impl Sync for SharedMut {}

impl SharedMut {
    pub(super) fn new(out: &mut [f32]) -> SharedMut {
        SharedMut { ptr: out.as_mut_ptr(), len: out.len() }
    }

    /// Raw pointer `offset` floats in (for callees such as a GEMM that take pointers and strides).
    pub(super) fn ptr_at(&self, offset: usize) -> *mut f32 {
        assert!(offset <= self.len, "cpu backend: offset {offset} outside {} floats", self.len);
        self.ptr.wrapping_add(offset)
    }

    /// The float at `i`.
    ///
    /// # Safety
    /// `i` must lie in the buffer, and no item may be writing that float.
    #[inline]
    pub(super) unsafe fn read_at(&self, i: usize) -> f32 {
        debug_assert!(i < self.len, "cpu backend: index {i} outside {} floats", self.len);
        // SAFETY: forwarded to the caller.
        unsafe { *self.ptr.add(i) }
    }

    /// # Safety
    /// No other live reference may cover any float of `r` (each item takes its own range), and
    /// the slice must not outlive the buffer `self` was made from.
    pub(super) unsafe fn slice_mut<'a>(self, r: Range<usize>) -> &'a mut [f32] {
        assert!(r.start <= r.end && r.end <= self.len, "cpu backend: range {r:?} outside {} floats", self.len);
        // SAFETY: in bounds (asserted); exclusivity is the caller's promise.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(r.start), r.end - r.start) }
    }
}

/// The output of an op that may run in place: the output view is either the input view itself
/// (`Same`) or disjoint from it (`Split`). Kernels written once over [`Inout::map`] serve both.
pub(super) enum Inout<'a> {
    Same(&'a mut [f32]),
    Split(&'a [f32], &'a mut [f32]),
}

impl Inout<'_> {
    pub(super) fn len(&self) -> usize {
        match self {
            Inout::Same(o) | Inout::Split(_, o) => o.len(),
        }
    }

    /// out[i] = f(i, in[i]) over the whole slice, in `CHUNK` pieces on the workers.
    pub(super) fn map(self, par: &Par, f: impl Fn(usize, f32) -> f32 + Send + Sync) {
        match self {
            Inout::Same(o) => par.chunks(o, CHUNK, |r, o| {
                for (j, v) in o.iter_mut().enumerate() {
                    *v = f(r.start + j, *v);
                }
            }),
            Inout::Split(x, o) => par.chunks(o, CHUNK, |r, o| {
                for (j, (v, &a)) in o.iter_mut().zip(&x[r.clone()]).enumerate() {
                    *v = f(r.start + j, a);
                }
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_every_float_once_for_any_thread_count() {
        for threads in [1, 2, 3] {
            let par = Par::new(threads);
            let mut v = vec![0.0f32; 3 * CHUNK + 17];
            par.chunks(&mut v, CHUNK, |r, c| {
                for (j, x) in c.iter_mut().enumerate() {
                    *x += (r.start + j) as f32;
                }
            });
            assert!(v.iter().enumerate().all(|(i, &x)| x == i as f32), "{threads} threads");
            assert_eq!(par.map(5, |i| i * i), vec![0, 1, 4, 9, 16]);
        }
    }
}
