//! Host side of the [yolo] head on the GPU (shaders-wgsl/yolo.wgsl): params packing, the cached
//! per-head scratch (anchors, mask, per-image tallies, loss partials) and the five dispatches.
//! Everything runs on the device; nothing is read back.

use std::collections::HashMap;

use super::buffers;
use super::pipelines::Kernel;
use super::{GpuBackend, GpuBuf, Params};
use crate::shapes::{IouLoss, YoloParams};
use crate::yolo_stats::STATS_LEN;

/// Floats of one image's tally in the scratch (yolo.wgsl `TALLY`).
const TALLY: usize = 9;
/// Invocations per workgroup of the per-element and per-anchor-cell passes.
const GROUP: usize = 256;
/// Invocations per workgroup of yolo_positives (one per image).
const POSITIVES_GROUP: usize = 64;

/// What fixes a head's scratch: its layout and its anchors (written once at creation).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct ScratchKey {
    batch: usize,
    w: usize,
    h: usize,
    n: usize,
    net: (usize, usize),
    anchors: Vec<(u32, u32)>,
    mask: Vec<usize>,
}

/// Scratch buffers of the yolo heads, one per distinct [`ScratchKey`].
pub(crate) type ScratchCache = HashMap<ScratchKey, GpuBuf>;

fn iou_code(k: IouLoss) -> usize {
    match k {
        IouLoss::Mse => 0,
        IouLoss::Iou => 1,
        IouLoss::Giou => 2,
        IouLoss::Diou => 3,
        IouLoss::Ciou => 4,
    }
}

/// Workgroups of the per-anchor-cell passes = loss partials of a head.
fn parts(p: &YoloParams) -> usize {
    (p.batch * p.mask.len() * p.w * p.h).div_ceil(GROUP)
}

impl GpuBackend {
    /// The scratch of `p`'s head: created (and its anchors written) on first use, then reused.
    fn yolo_scratch(&self, p: &YoloParams) -> GpuBuf {
        let key = ScratchKey {
            batch: p.batch,
            w: p.w,
            h: p.h,
            n: p.mask.len(),
            net: (p.net_w, p.net_h),
            anchors: p.anchors.iter().map(|a| (a.0.to_bits(), a.1.to_bits())).collect(),
            mask: p.mask.clone(),
        };
        let mut cache = self.yolo_scratch.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = cache.get(&key) {
            return b.clone();
        }
        let mut head = Vec::with_capacity(4 * p.anchors.len() + p.mask.len());
        head.extend(p.anchors.iter().flat_map(|a| [a.0, a.1]));
        // Anchors over the network size, as the CPU's anchor_box computes them (f32 division).
        head.extend(p.anchors.iter().flat_map(|a| [a.0 / p.net_w as f32, a.1 / p.net_h as f32]));
        head.extend(p.mask.iter().map(|&m| m as f32));
        let len = head.len() + p.batch * TALLY + 4 * parts(p);
        let buf = buffers::alloc(&self.device, &self.internal, len, self.limits.max_storage_buffer_binding_size, "yolo scratch");
        // A new buffer: no recorded work reads it, so this write may land before that work runs.
        self.queue.write_buffer(buf.buffer(), 0, bytemuck::cast_slice(&head));
        cache.insert(key, buf.clone());
        buf
    }

    /// `Backend::yolo_forward_backward` (see the trait): activate, loop 1, loop 2, loop 3 +
    /// squares + sign, statistics.
    pub(super) fn yolo(&self, x: &GpuBuf, out: &GpuBuf, truths: &GpuBuf, dx: &GpuBuf, stats: &GpuBuf, p: &YoloParams) {
        let len = p.len();
        for (what, b) in [("x", x), ("out", out), ("dx", dx)] {
            assert_eq!(b.len(), len, "gpu yolo {what}: view holds {} floats, the head needs {len}", b.len());
        }
        assert_eq!(truths.len(), p.batch * p.max_boxes * 5, "gpu yolo truths length");
        assert!(stats.len() >= STATS_LEN, "gpu yolo stats: {} floats, need {STATS_LEN}", stats.len());
        assert!(p.w > 0 && p.h > 0, "gpu yolo: empty grid");
        assert!(
            p.mask.iter().all(|&m| m < p.anchors.len()),
            "gpu yolo: mask {:?} indexes past {} anchors",
            p.mask,
            p.anchors.len()
        );
        let scratch = self.yolo_scratch(p);
        let wh = p.w * p.h;
        let n = p.mask.len();
        let total = p.batch * n * wh;
        let flags = p.new_coords as usize
            | (p.focal_loss as usize) << 1
            | (p.objectness_smooth as usize) << 2
            | ((p.max_delta != f32::MAX) as usize) << 3
            | ((p.iou_thresh < 1.0) as usize) << 4;
        let params = Params::new()
            .u(p.batch)
            .u(p.w)
            .u(p.h)
            .u(p.classes)
            .u(n)
            .u(p.anchors.len())
            .u(p.net_w)
            .u(p.net_h)
            .u(p.max_boxes)
            .u(wh)
            .u(n * (5 + p.classes) * wh)
            .u(total)
            .o(x)
            .o(out)
            .o(truths)
            .o(dx)
            .o(stats)
            .o(&scratch)
            .u(flags)
            .u(iou_code(p.iou_loss))
            .u(iou_code(p.iou_thresh_kind))
            .u(parts(p))
            .u(len)
            .u(0)
            .f(p.scale_x_y)
            // Darknet computes the offset in double and passes it as float.
            .f((-0.5 * (p.scale_x_y as f64 - 1.0)) as f32)
            .f(p.ignore_thresh)
            .f(p.truth_thresh)
            .f(p.iou_thresh)
            .f(p.iou_normalizer)
            .f(p.obj_normalizer)
            .f(p.label_smooth_eps)
            .f(p.max_delta)
            .pad_to(36);
        let bufs = [x, out, truths, dx, stats, &scratch];
        let per_cell = self.grid(total.div_ceil(GROUP) as u64);
        // One lock for the whole op: its passes share the scratch.
        let mut rec = self.lock();
        if len > 0 {
            let g = self.grid(len.div_ceil(GROUP) as u64);
            self.dispatch_locked(&mut rec, Kernel::YoloActivate, &bufs, &params.0, g);
        }
        if total > 0 {
            self.dispatch_locked(&mut rec, Kernel::YoloNegatives, &bufs, &params.0, per_cell);
        }
        if p.batch > 0 {
            let g = [p.batch.div_ceil(POSITIVES_GROUP) as u32, 1, 1];
            self.dispatch_locked(&mut rec, Kernel::YoloPositives, &bufs, &params.0, g);
        }
        if total > 0 {
            self.dispatch_locked(&mut rec, Kernel::YoloFinish, &bufs, &params.0, per_cell);
        }
        self.dispatch_locked(&mut rec, Kernel::YoloStats, &bufs, &params.0, [1, 1, 1]);
    }
}
