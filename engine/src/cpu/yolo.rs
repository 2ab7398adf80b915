//! The [yolo] head op (shaders-wgsl/yolo.wgsl): activation of the head's input, then truth
//! matching, Darknet's deltas, cost and statistics (darknet-spec §a, Darknet's forward_yolo_layer
//! / process_batch). Box maths, layout and decode are shared with the rest of the engine in
//! `crate::yolo`.
//!
//! [`deltas_and_stats`] writes Darknet's `delta` (target − output, the NEGATIVE gradient); the
//! caller negates it. What that delta is, per entry (all on the activated output, no logistic
//! derivative — Darknet's backward passes it straight to the convolution):
//! - objectness and classes: `y − p`, i.e. minus the gradient of binary cross-entropy w.r.t. the
//!   logit (objectness scaled by obj_normalizer);
//! - box, iou_loss=mse: `scale·iou_normalizer·(t − out)` with scale = 2 − w·h: minus the gradient
//!   of ½·scale·iou_normalizer·(t − out)² w.r.t. `out` (for x, y the activated, scaled value);
//! - box, IoU family: `iou_normalizer·dx_box_iou` with dw, dh × exp(tw), exp(th).
//!
//! Darknet's cost is not the function these deltas are the gradient of: it is
//! Σ δ² (mse) or iou_normalizer·Σ(1 − IoU)/count + obj_normalizer·Σ δ²(objectness, classes).

use crate::shapes::{IouLoss, YoloParams};
use crate::yolo::boxes::{BBox, box_giou, box_iou, box_iou_kind, dx_box_iou};
use crate::yolo::decode::get_yolo_box;
use crate::yolo::{Layout, logistic};
use crate::yolo_stats as st;

/// Class probability above which an anchor counts as "having a class" for ignore_thresh.
pub(crate) const CLASS_MATCH_THRESH: f32 = 0.25;

/// The scores of a prediction against its truth that feed statistics (Darknet also computes
/// DIoU and CIoU there, for nothing it prints).
#[derive(Clone, Copy, Debug, Default)]
struct Ious {
    iou: f32,
    giou: f32,
}

/// Running sums of one head (Darknet's process_batch counters).
#[derive(Default)]
struct Tally {
    count: f64,
    tot_iou: f64,
    tot_iou_loss: f64,
    tot_giou_loss: f64,
    recall50: f64,
    recall75: f64,
    avg_obj: f64,
    avg_cat: f64,
    anyobj: f64,
    truths: f64,
}

/// One truth box of the batch and its class id (as Darknet reads it: float truncated to int).
#[derive(Clone, Copy, Debug)]
struct Truth {
    bbox: BBox,
    class_id: i64,
}

/// The truths of image `b` up to Darknet's terminator (x == 0).
fn image_truths<'a>(truths: &'a [f32], p: &'a YoloParams, b: usize) -> impl Iterator<Item = Truth> + 'a {
    (0..p.max_boxes)
        .map(move |t| {
            let o = (b * p.max_boxes + t) * 5;
            let v = &truths[o..o + 5];
            Truth { bbox: BBox::new(v[0], v[1], v[2], v[3]), class_id: v[4] as i64 }
        })
        .take_while(|t| t.bbox.x != 0.0)
}

struct Head<'a> {
    p: &'a YoloParams,
    l: Layout,
    out: &'a mut [f32],
    delta: &'a mut [f32],
    tally: Tally,
}

/// Fill `delta` with Darknet's delta for the activated output `out` and `stats` with the head's
/// statistics (layout in `crate::yolo_stats`). `out` is modified only where Darknet does
/// (a NaN/Inf objectness is set to 0).
pub(crate) fn deltas_and_stats(out: &mut [f32], truths: &[f32], delta: &mut [f32], stats: &mut [f32], p: &YoloParams) {
    assert_eq!(truths.len(), p.batch * p.max_boxes * 5, "yolo truths length");
    assert_eq!(delta.len(), p.len(), "yolo delta length");
    assert!(stats.len() >= st::STATS_LEN, "yolo stats length");
    delta.fill(0.0);
    let mut head = Head { p, l: Layout::new(p), out, delta, tally: Tally::default() };
    for b in 0..p.batch {
        head.negatives_and_truth_thresh(truths, b);
        head.positives(truths, b);
    }
    if p.iou_thresh < 1.0 {
        head.average_box_deltas();
    }
    head.write_stats(stats);
}

impl Head<'_> {
    fn classes_index(&self, b: usize, n: usize, cell: usize) -> usize {
        self.l.entry(b, n, 5, cell)
    }

    /// Loop 1: every cell and anchor — negative objectness unless ignored, and truth_thresh
    /// positives.
    fn negatives_and_truth_thresh(&mut self, truths: &[f32], b: usize) {
        let p = self.p;
        let classes = p.classes as i64;
        for j in 0..p.h {
            for i in 0..p.w {
                let cell = j * p.w + i;
                for n in 0..p.mask.len() {
                    let obj_index = self.l.entry(b, n, 4, cell);
                    let box_index = self.l.entry(b, n, 0, cell);
                    let class_index = self.classes_index(b, n, cell);
                    let pred = get_yolo_box(self.out, p.anchors[p.mask[n]], box_index, i, j, p, self.l.wh);
                    let (mut best_match_iou, mut best_iou, mut best_t) = (0.0f32, 0.0f32, None);
                    for truth in image_truths(truths, p, b) {
                        if truth.class_id < 0 || truth.class_id >= classes {
                            continue;
                        }
                        let o = self.out[obj_index];
                        if !o.is_finite() {
                            self.out[obj_index] = 0.0;
                        }
                        // Any class above 0.25 at this anchor, whatever the truth's class.
                        let class_id_match =
                            (0..p.classes).any(|c| self.out[class_index + c * self.l.wh] > CLASS_MATCH_THRESH);
                        let iou = box_iou(pred, truth.bbox);
                        if iou > best_match_iou && class_id_match {
                            best_match_iou = iou;
                        }
                        if iou > best_iou {
                            best_iou = iou;
                            best_t = Some(truth);
                        }
                    }
                    let obj = self.out[obj_index];
                    self.tally.anyobj += obj as f64;
                    self.delta[obj_index] = p.obj_normalizer * (0.0 - obj);
                    if best_match_iou > p.ignore_thresh {
                        if p.objectness_smooth {
                            let d = p.obj_normalizer * (best_match_iou - obj);
                            if d > self.delta[obj_index] {
                                self.delta[obj_index] = d;
                            }
                        } else {
                            self.delta[obj_index] = 0.0;
                        }
                    }
                    if let Some(truth) = best_t.filter(|_| best_iou > p.truth_thresh) {
                        let iou_multiplier = best_iou * best_iou;
                        self.delta[obj_index] = if p.objectness_smooth {
                            p.obj_normalizer * (iou_multiplier - obj)
                        } else {
                            p.obj_normalizer * (1.0 - obj)
                        };
                        let class_id = truth.class_id as usize;
                        self.delta_class(class_index, class_id, false);
                        if p.objectness_smooth {
                            let ci = class_index + self.l.wh * class_id;
                            self.delta[ci] = iou_multiplier - self.out[ci];
                        }
                        self.delta_box(truth.bbox, p.anchors[p.mask[n]], box_index, i, j);
                    }
                }
            }
        }
    }

    /// Loop 2: every truth — its best anchor (shape-only IoU over all anchors) when in this
    /// head's mask, plus every other mask anchor above iou_thresh.
    fn positives(&mut self, truths: &[f32], b: usize) {
        let p = self.p;
        for truth in image_truths(truths, p, b) {
            let t = truth.bbox;
            // Darknet aborts on such labels; the data loader rejects them before they get here.
            if t.x < 0.0 || t.y < 0.0 || t.x > 1.0 || t.y > 1.0 || t.w < 0.0 || t.h < 0.0 {
                continue;
            }
            if truth.class_id < 0 || truth.class_id >= p.classes as i64 {
                continue;
            }
            self.tally.truths += 1.0;
            // x == 1 would index one past the grid; only a zero-width box can sit there.
            let i = ((t.x * p.w as f32) as usize).min(p.w - 1);
            let j = ((t.y * p.h as f32) as usize).min(p.h - 1);
            let shift = BBox::new(0.0, 0.0, t.w, t.h);
            let anchor_box = |a: usize| BBox::new(0.0, 0.0, p.anchors[a].0 / p.net_w as f32, p.anchors[a].1 / p.net_h as f32);
            let (mut best_iou, mut best_n) = (0.0f32, 0usize);
            for a in 0..p.anchors.len() {
                let iou = box_iou(anchor_box(a), shift);
                if iou > best_iou {
                    best_iou = iou;
                    best_n = a;
                }
            }
            if let Some(mask_n) = p.mask.iter().position(|&m| m == best_n) {
                self.positive(b, mask_n, best_n, i, j, truth);
            }
            if p.iou_thresh < 1.0 {
                for (mask_n, &a) in p.mask.iter().enumerate() {
                    if a != best_n && box_iou_kind(anchor_box(a), shift, p.iou_thresh_kind) > p.iou_thresh {
                        self.positive(b, mask_n, a, i, j, truth);
                    }
                }
            }
        }
    }

    /// Box, objectness and class deltas of one truth at anchor `a` (mask slot `mask_n`).
    fn positive(&mut self, b: usize, mask_n: usize, a: usize, i: usize, j: usize, truth: Truth) {
        let p = self.p;
        let cell = j * p.w + i;
        let box_index = self.l.entry(b, mask_n, 0, cell);
        let ious = self.delta_box(truth.bbox, p.anchors[a], box_index, i, j);
        let t = &mut self.tally;
        t.tot_iou += ious.iou as f64;
        t.tot_iou_loss += (1.0 - ious.iou) as f64;
        t.tot_giou_loss += (1.0 - ious.giou) as f64;
        let obj_index = self.l.entry(b, mask_n, 4, cell);
        let obj = self.out[obj_index];
        t.avg_obj += obj as f64;
        let d = p.obj_normalizer * (1.0 - obj);
        if !p.objectness_smooth || self.delta[obj_index] == 0.0 {
            self.delta[obj_index] = d;
        }
        let class_index = self.classes_index(b, mask_n, cell);
        self.delta_class(class_index, truth.class_id as usize, true);
        let t = &mut self.tally;
        t.count += 1.0;
        if ious.iou > 0.5 {
            t.recall50 += 1.0;
        }
        if ious.iou > 0.75 {
            t.recall75 += 1.0;
        }
    }

    /// Darknet's delta_yolo_class. `tally_cat`: add the truth class's probability to avg_cat.
    fn delta_class(&mut self, index: usize, class_id: usize, tally_cat: bool) {
        let p = self.p;
        let stride = self.l.wh;
        let smooth = |y: f32| {
            if p.label_smooth_eps != 0.0 {
                (y as f64 * (1.0 - p.label_smooth_eps as f64) + 0.5 * p.label_smooth_eps as f64) as f32
            } else {
                y
            }
        };
        let ti = index + stride * class_id;
        if tally_cat {
            self.tally.avg_cat += self.out[ti] as f64;
        }
        // An earlier truth already set this anchor's classes: only its own class is raised.
        if self.delta[ti] != 0.0 {
            let r = smooth(1.0) - self.out[ti];
            if r.is_finite() {
                self.delta[ti] = r;
            }
            return;
        }
        if p.focal_loss {
            let alpha = 0.5f32;
            let pt = self.out[ti] + 0.000000000000001;
            let grad = -(1.0 - pt) * (2.0 * pt * pt.ln() + pt - 1.0);
            for c in 0..p.classes {
                let k = index + stride * c;
                let y = if c == class_id { 1.0 } else { 0.0 };
                self.delta[k] = (y - self.out[k]) * alpha * grad;
            }
        } else {
            for c in 0..p.classes {
                let k = index + stride * c;
                let r = smooth(if c == class_id { 1.0 } else { 0.0 }) - self.out[k];
                if r.is_finite() {
                    self.delta[k] = r;
                }
            }
        }
    }

    /// Darknet's delta_yolo_box (accumulating) for anchor `anchor` at `box_index`.
    fn delta_box(&mut self, truth: BBox, anchor: (f32, f32), box_index: usize, i: usize, j: usize) -> Ious {
        let p = self.p;
        let s = self.l.wh;
        let mut pred = get_yolo_box(self.out, anchor, box_index, i, j, p, s);
        let ious = Ious { iou: box_iou(pred, truth), giou: box_giou(pred, truth) };
        if pred.w == 0.0 {
            pred.w = 1.0;
        }
        if pred.h == 0.0 {
            pred.h = 1.0;
        }
        let o = |e: usize| box_index + e * s;
        if p.iou_loss == IouLoss::Mse {
            let scale = 2.0 - truth.w * truth.h;
            let tx = truth.x * p.w as f32 - i as f32;
            let ty = truth.y * p.h as f32 - j as f32;
            let (tw, th) = if p.new_coords {
                (
                    ((truth.w * p.net_w as f32 / (4.0 * anchor.0)) as f64).sqrt() as f32,
                    ((truth.h * p.net_h as f32 / (4.0 * anchor.1)) as f64).sqrt() as f32,
                )
            } else {
                (
                    ((truth.w * p.net_w as f32 / anchor.0) as f64).ln() as f32,
                    ((truth.h * p.net_h as f32 / anchor.1) as f64).ln() as f32,
                )
            };
            for (e, t) in [tx, ty, tw, th].into_iter().enumerate() {
                self.delta[o(e)] += scale * (t - self.out[o(e)]) * p.iou_normalizer;
            }
        } else {
            let g = dx_box_iou(pred, truth, p.iou_loss);
            let (mut dw, mut dh) = (g.dw, g.dh);
            if !p.new_coords {
                dw = (dw as f64 * (self.out[o(2)] as f64).exp()) as f32;
                dh = (dh as f64 * (self.out[o(3)] as f64).exp()) as f32;
            }
            for (e, d) in [g.dx, g.dy, dw, dh].into_iter().enumerate() {
                let mut d = d * p.iou_normalizer;
                if !d.is_finite() {
                    d = 0.0;
                }
                if p.max_delta != f32::MAX {
                    d = d.clamp(-p.max_delta, p.max_delta);
                }
                self.delta[o(e)] += d;
            }
        }
        ious
    }

    /// Loop 3 (iou_thresh < 1): where objectness has a delta, divide the box deltas by the
    /// number of classes with a positive delta.
    fn average_box_deltas(&mut self) {
        let p = self.p;
        let s = self.l.wh;
        for b in 0..p.batch {
            for cell in 0..s {
                for n in 0..p.mask.len() {
                    if self.delta[self.l.entry(b, n, 4, cell)] == 0.0 {
                        continue;
                    }
                    let ci = self.classes_index(b, n, cell);
                    let k = (0..p.classes).filter(|&c| self.delta[ci + c * s] > 0.0).count();
                    if k > 0 {
                        let bi = self.l.entry(b, n, 0, cell);
                        for e in 0..4 {
                            self.delta[bi + e * s] /= k as f32;
                        }
                    }
                }
            }
        }
    }

    fn write_stats(&self, stats: &mut [f32]) {
        let p = self.p;
        let s = self.l.wh;
        let (mut obj_sq, mut cls_sq, mut box_sq) = (0.0f64, 0.0f64, 0.0f64);
        for b in 0..p.batch {
            for n in 0..p.mask.len() {
                let base = self.l.entry(b, n, 0, 0);
                let sq = |r: std::ops::Range<usize>| self.delta[r].iter().map(|&d| d as f64 * d as f64).sum::<f64>();
                box_sq += sq(base..base + 4 * s);
                obj_sq += sq(base + 4 * s..base + 5 * s);
                cls_sq += sq(base + 5 * s..base + (5 + p.classes) * s);
            }
        }
        let t = &self.tally;
        let all_sq = box_sq + obj_sq + cls_sq;
        // Darknet: classification_loss = obj_normalizer·Σδ²(non-box); iou_loss = Σδ² − that.
        let class_loss = p.obj_normalizer as f64 * (obj_sq + cls_sq);
        let iou_loss_sum = if p.iou_loss == IouLoss::Giou { t.tot_giou_loss } else { t.tot_iou_loss };
        let cost = if p.iou_loss == IouLoss::Mse {
            all_sq
        } else {
            let avg_iou_loss = if t.count > 0.0 { p.iou_normalizer as f64 * iou_loss_sum / t.count } else { 0.0 };
            avg_iou_loss + class_loss
        };
        stats.fill(0.0);
        stats[st::COST] = cost as f32;
        stats[st::CLASS_LOSS] = class_loss as f32;
        stats[st::BOX_LOSS] = (all_sq - class_loss) as f32;
        stats[st::IOU_SUM] = t.tot_iou as f32;
        stats[st::COUNT] = t.count as f32;
        stats[st::RECALL50] = t.recall50 as f32;
        stats[st::RECALL75] = t.recall75 as f32;
        stats[st::IOU_LOSS_SUM] = iou_loss_sum as f32;
        stats[st::OBJ_LOSS] = obj_sq as f32;
        stats[st::CLS_ONLY_LOSS] = cls_sq as f32;
        stats[st::OBJ_SUM] = t.avg_obj as f32;
        stats[st::ANYOBJ_SUM] = t.anyobj as f32;
        stats[st::CLASS_PROB_SUM] = t.avg_cat as f32;
        stats[st::TRUTHS] = t.truths as f32;
    }
}

/// The forward pass alone (inference): `out` = Darknet's l.output for input `x`.
/// Logistic on x, y, objectness and classes (none with new_coords), w, h raw; then
/// x, y ← scale_x_y·x − 0.5·(scale_x_y − 1).
pub fn forward_cpu(x: &[f32], out: &mut [f32], p: &YoloParams) {
    assert_eq!(x.len(), p.len(), "yolo input length");
    assert_eq!(out.len(), p.len(), "yolo output length");
    out.copy_from_slice(x);
    let l = Layout::new(p);
    let alpha = p.scale_x_y;
    // Darknet computes the offset in double and passes it as float.
    let beta = (-0.5 * (p.scale_x_y as f64 - 1.0)) as f32;
    for b in 0..p.batch {
        for n in 0..p.mask.len() {
            let xy = l.entry(b, n, 0, 0);
            if !p.new_coords {
                out[xy..xy + 2 * l.wh].iter_mut().for_each(|v| *v = logistic(*v));
                let obj = l.entry(b, n, 4, 0);
                out[obj..obj + (1 + p.classes) * l.wh].iter_mut().for_each(|v| *v = logistic(*v));
            }
            out[xy..xy + 2 * l.wh].iter_mut().for_each(|v| *v = *v * alpha + beta);
        }
    }
}

/// CPU twin of `Backend::yolo_forward_backward` on host slices (see the trait for the contract).
/// `x`, `out`, `dx`: `p.len()` floats; `truths`: `p.batch * p.max_boxes * 5`;
/// `stats`: `crate::yolo_stats::STATS_LEN` floats, overwritten.
///
/// `dx` is the ordinary gradient, −(Darknet's delta), of this head's cost as Darknet defines the
/// delta (see the module docs): not divided by the batch, no logistic derivative on activated entries.
pub fn forward_backward_cpu(x: &[f32], out: &mut [f32], truths: &[f32], dx: &mut [f32], stats: &mut [f32], p: &YoloParams) {
    forward_cpu(x, out, p);
    deltas_and_stats(out, truths, dx, stats, p);
    // Darknet's delta is the negative gradient.
    dx.iter_mut().for_each(|v| *v = -*v);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_activates_and_scales() {
        let p = YoloParams {
            batch: 1,
            w: 1,
            h: 1,
            classes: 1,
            anchors: vec![(10.0, 10.0)],
            mask: vec![0],
            net_w: 32,
            net_h: 32,
            max_boxes: 1,
            scale_x_y: 1.2,
            ..YoloParams::default()
        };
        let x = [1.0f32, -1.0, 0.7, -0.3, 2.0, -2.0];
        let mut out = [0.0f32; 6];
        forward_cpu(&x, &mut out, &p);
        let s = |v: f64| 1.0 / (1.0 + (-v).exp());
        let want = [1.2 * s(1.0) - 0.1, 1.2 * s(-1.0) - 0.1, 0.7, -0.3, s(2.0), s(-2.0)];
        for (o, w) in out.iter().zip(want) {
            assert!((*o as f64 - w).abs() < 1e-6, "{out:?}");
        }
    }
}
