//! Host side of the [yolo] head on the GPU (shaders-wgsl/yolo.wgsl): params packing, the cached
//! per-head scratch (anchors, mask, per-image tallies, loss partials) and the five dispatches.
//! Everything runs on the device; nothing is read back.

use std::collections::HashMap;

use super::buffers;
use super::params::{YoloP, off, u};
use super::pipelines::{GemmTile, Kernel, iou_code};
use super::GpuBackend;
use super::GpuBuf;
use crate::profile::Work;
use crate::shapes::YoloParams;
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
        let buf = buffers::alloc(&self.device, &self.internal, len, &self.limits, "yolo scratch");
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
        let flags = p.new_coords as u32
            | (p.focal_loss as u32) << 1
            | (p.objectness_smooth as u32) << 2
            | ((p.max_delta != f32::MAX) as u32) << 3
            | ((p.iou_thresh < 1.0) as u32) << 4;
        let params = YoloP {
            batch: u(p.batch),
            w: u(p.w),
            h: u(p.h),
            classes: u(p.classes),
            n: u(n),
            num_anchors: u(p.anchors.len()),
            net_w: u(p.net_w),
            net_h: u(p.net_h),
            max_boxes: u(p.max_boxes),
            wh: u(wh),
            outputs: u(n * (5 + p.classes) * wh),
            total: u(total),
            o1: off(x),
            o2: off(out),
            o3: off(truths),
            o4: off(dx),
            o5: off(stats),
            o6: off(&scratch),
            flags,
            iou_loss: iou_code(p.iou_loss),
            iou_thresh_kind: iou_code(p.iou_thresh_kind),
            parts: u(parts(p)),
            len: u(len),
            scale_x_y: p.scale_x_y,
            // Darknet computes the offset in double and passes it as float.
            beta: (-0.5 * (p.scale_x_y as f64 - 1.0)) as f32,
            ignore_thresh: p.ignore_thresh,
            truth_thresh: p.truth_thresh,
            iou_thresh: p.iou_thresh,
            iou_normalizer: p.iou_normalizer,
            obj_normalizer: p.obj_normalizer,
            label_smooth_eps: p.label_smooth_eps,
            max_delta: p.max_delta,
        };
        let bufs = [x, out, truths, dx, stats, &scratch];
        let per_cell = self.grid(total.div_ceil(GROUP) as u64);
        // One lock for the whole op: its passes share the scratch.
        // Counted work: the activation reads x and writes out; the loss passes read out and
        // write dx; the matching passes compare each anchor-cell with every truth slot.
        let t = GemmTile::DEFAULT;
        let elementwise = Work::elementwise(len, 1, 1, 4);
        let matching = Work { flops: (total * p.max_boxes * 20) as f64, bytes: (len * 4) as f64 };
        let mut rec = self.lock();
        if len > 0 {
            let g = self.grid(len.div_ceil(GROUP) as u64);
            self.dispatch_locked(&mut rec, Kernel::YoloActivate, t, &bufs, &params, g, elementwise);
        }
        if total > 0 {
            self.dispatch_locked(&mut rec, Kernel::YoloNegatives, t, &bufs, &params, per_cell, matching);
        }
        if p.batch > 0 {
            let g = [p.batch.div_ceil(POSITIVES_GROUP) as u32, 1, 1];
            let work = Work { flops: (p.batch * p.max_boxes * p.anchors.len() * 20) as f64, bytes: 0.0 };
            self.dispatch_locked(&mut rec, Kernel::YoloPositives, t, &bufs, &params, g, work);
        }
        if total > 0 {
            self.dispatch_locked(&mut rec, Kernel::YoloFinish, t, &bufs, &params, per_cell, elementwise);
        }
        self.dispatch_locked(&mut rec, Kernel::YoloStats, t, &bufs, &params, [1, 1, 1], Work::default());
    }
}
