//! Splitting an op's dispatches over the batch when a view it binds is larger than one storage
//! binding (`max_storage_buffer_binding_size`; 128 MiB on many adapters).
//!
//! Buffers may be as large as `max_buffer_size`; a kernel binds a window of at most one binding
//! around each view (buffers.rs). An op over a tensor larger than that runs its per-image work
//! over ranges of images, each range bound as its own sub-views (the same buffer, so nothing is
//! copied). Everything else is unchanged: when every view binds as it is, an op makes exactly the
//! dispatches it made before. Ops that reduce over the batch (batch-norm statistics, bias and
//! weight gradients) write one partial per range into scratch and combine them in a fixed order,
//! so the statistics still cover the whole mini-batch and reruns give the same bits.

use super::buffers::view;
use super::{GpuBackend, GpuBuf};

/// A range of images of one dispatch: `start` and `count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Images {
    pub start: usize,
    pub count: usize,
}

/// The images of `r` in a view holding `per_image` floats per image; views with `per_image = 0`
/// (weights, per-channel vectors) are bound whole.
pub(crate) fn images(buf: &GpuBuf, per_image: usize, r: Images) -> GpuBuf {
    if per_image == 0 {
        return buf.clone();
    }
    let start = r.start * per_image;
    // The last range of a strided view (route slices) may end before a whole image stride.
    let len = (r.count * per_image).min(buf.len().saturating_sub(start));
    view(buf, start, len)
}

impl GpuBackend {
    /// Image ranges for an op over `batch` images whose views `split` hold the given floats per
    /// image: one range (the whole batch) when every view of `split` binds as it is; else equal
    /// ranges of the most images whose slice of every view fits one binding, a multiple of
    /// `multiple` where that fits. `what` names the op in the error of a single image too large
    /// for one binding (networks refuse those when built: `MemoryPlan::check_fits`).
    pub(super) fn image_ranges(&self, what: &str, batch: usize, split: &[(&GpuBuf, usize)], multiple: usize) -> Vec<Images> {
        if batch == 0 || split.iter().all(|(b, _)| b.fits_binding()) {
            return vec![Images { start: 0, count: batch }];
        }
        let most = self.images_per_range(what, split);
        let per = if most >= multiple.max(1) { most / multiple.max(1) * multiple.max(1) } else { most };
        (0..batch.div_ceil(per)).map(|k| Images { start: k * per, count: per.min(batch - k * per) }).collect()
    }

    /// The most images whose slice of every view of `split` fits one binding (at least 1).
    pub(super) fn images_per_range(&self, what: &str, split: &[(&GpuBuf, usize)]) -> usize {
        let mut most = usize::MAX;
        for (b, per_image) in split.iter().filter(|(_, p)| *p > 0) {
            let n = b.max_view_floats() / per_image;
            assert!(
                n > 0,
                "gpu {what}: one image holds {} bytes, more than the adapter binds at once ({} bytes); \
                 lower width/height",
                per_image * 4,
                b.max_view_floats() * 4
            );
            most = most.min(n);
        }
        most
    }

    /// Ranges of `n` elements for an elementwise op over `bufs` (all of length `n`): one range
    /// when every view binds as it is.
    pub(super) fn element_ranges(&self, what: &str, n: usize, bufs: &[&GpuBuf]) -> Vec<Images> {
        let split: Vec<(&GpuBuf, usize)> = bufs.iter().map(|b| (*b, 1)).collect();
        // 64 floats: chunks keep the 256-byte alignment of the views' starts.
        self.image_ranges(what, n, &split, 64)
    }
}
