//! Boxes and the IoU family (darknet-spec §a, Darknet's box.cpp).
//!
//! Arithmetic is f32 in Darknet's operation order; where Darknet's C promotes to double (`exp`,
//! `atan`, `pow`, `M_PI`, double literals) we compute in f64 and round once, as C does, so the
//! loss matches Darknet to float precision.

use crate::shapes::IouLoss;
use std::f64::consts::PI;

/// A box as Darknet keeps it: centre x, y and width, height (normalised image units).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BBox {
    pub x: f32,
    pub y: f32,
    pub w: f32,
    pub h: f32,
}

impl BBox {
    pub fn new(x: f32, y: f32, w: f32, h: f32) -> BBox {
        BBox { x, y, w, h }
    }
    fn tblr(self) -> Tblr {
        Tblr {
            top: self.y - self.h / 2.0,
            bot: self.y + self.h / 2.0,
            left: self.x - self.w / 2.0,
            right: self.x + self.w / 2.0,
        }
    }
}

/// Edges of a box (Darknet's `boxabs`).
#[derive(Clone, Copy, Debug)]
struct Tblr {
    top: f32,
    bot: f32,
    left: f32,
    right: f32,
}

/// Length of the overlap of two 1-d segments given by centre and width (negative if apart).
fn overlap(x1: f32, w1: f32, x2: f32, w2: f32) -> f32 {
    let left = (x1 - w1 / 2.0).max(x2 - w2 / 2.0);
    let right = (x1 + w1 / 2.0).min(x2 + w2 / 2.0);
    right - left
}

pub fn box_intersection(a: BBox, b: BBox) -> f32 {
    let w = overlap(a.x, a.w, b.x, b.w);
    if w <= 0.0 {
        return 0.0;
    }
    let h = overlap(a.y, a.h, b.y, b.h);
    if h <= 0.0 {
        return 0.0;
    }
    w * h
}

pub fn box_union(a: BBox, b: BBox) -> f32 {
    a.w * a.h + b.w * b.h - box_intersection(a, b)
}

/// Intersection over union; 0 when the boxes do not overlap.
pub fn box_iou(a: BBox, b: BBox) -> f32 {
    let i = box_intersection(a, b);
    if i == 0.0 {
        return 0.0;
    }
    let u = a.w * a.h + b.w * b.h - i;
    i / u
}

/// Smallest box enclosing both (Darknet's `box_c`).
fn box_c(a: BBox, b: BBox) -> Tblr {
    Tblr {
        top: (a.y - a.h / 2.0).min(b.y - b.h / 2.0),
        bot: (a.y + a.h / 2.0).max(b.y + b.h / 2.0),
        left: (a.x - a.w / 2.0).min(b.x - b.w / 2.0),
        right: (a.x + a.w / 2.0).max(b.x + b.w / 2.0),
    }
}

/// GIoU = IoU − (C − U)/C with C the enclosing box's area.
pub fn box_giou(a: BBox, b: BBox) -> f32 {
    let c_box = box_c(a, b);
    let c = (c_box.right - c_box.left) * (c_box.bot - c_box.top);
    let iou = box_iou(a, b);
    if c == 0.0 {
        return iou;
    }
    let u = box_union(a, b);
    iou - (c - u) / c
}

/// Squared diagonal of the enclosing box and squared centre distance.
fn diag_and_dist(a: BBox, b: BBox) -> (f32, f32) {
    let c_box = box_c(a, b);
    let w = c_box.right - c_box.left;
    let h = c_box.bot - c_box.top;
    let d = (a.x - b.x) * (a.x - b.x) + (a.y - b.y) * (a.y - b.y);
    (w * w + h * h, d)
}

/// Darknet's DIoU as used by greedy NMS and `iou_thresh_kind=diou`: IoU − (d²/c²)^0.6.
pub fn box_diou(a: BBox, b: BBox) -> f32 {
    let (c, d) = diag_and_dist(a, b);
    let iou = box_iou(a, b);
    if c == 0.0 {
        return iou;
    }
    iou - ((d / c) as f64).powf(0.6) as f32
}

/// DIoU-NMS score with exponent `beta` (nms_kind=diounms, beta_nms).
pub fn box_diounms(a: BBox, b: BBox, beta: f32) -> f32 {
    let (c, d) = diag_and_dist(a, b);
    let iou = box_iou(a, b);
    if c == 0.0 {
        return iou;
    }
    iou - ((d / c) as f64).powf(beta as f64) as f32
}

/// CIoU's aspect-ratio term v = 4/π²·(atan(wt/ht) − atan(wp/hp))², and the atan difference.
fn aspect_term(pred: BBox, truth: BBox) -> (f32, f64) {
    let ar_gt = truth.w / truth.h;
    let ar_pred = pred.w / pred.h;
    let diff = (ar_gt as f64).atan() - (ar_pred as f64).atan();
    ((4.0 / (PI * PI) * diff * diff) as f32, diff)
}

/// CIoU = IoU − (d²/c² + α·v), α = v / (1 − IoU + v + 1e-6).
pub fn box_ciou(a: BBox, b: BBox) -> f32 {
    let (c, u) = diag_and_dist(a, b);
    let iou = box_iou(a, b);
    if c == 0.0 {
        return iou;
    }
    let d = u / c;
    let (v, _) = aspect_term(a, b);
    let alpha = (v as f64 / ((1.0 - iou + v) as f64 + 0.000001)) as f32;
    iou - (d + alpha * v)
}

/// The IoU-like score of `kind` (Mse falls back to plain IoU, as in Darknet's box_iou_kind).
pub fn box_iou_kind(a: BBox, b: BBox, kind: IouLoss) -> f32 {
    match kind {
        IouLoss::Giou => box_giou(a, b),
        IouLoss::Diou => box_diou(a, b),
        IouLoss::Ciou => box_ciou(a, b),
        IouLoss::Iou | IouLoss::Mse => box_iou(a, b),
    }
}

/// Darknet's gradient of the IoU-family score w.r.t. the predicted box (x, y, w, h).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct DxBox {
    pub dx: f32,
    pub dy: f32,
    pub dw: f32,
    pub dh: f32,
}

/// Darknet's `dx_box_iou`: the (ascent) gradient of the IoU-family score w.r.t. `pred`.
///
/// What it equals, exactly (tests/yolo_loss.rs checks each statement by finite differences):
/// with I' = Iw·Ih (intersection sides NOT clamped at 0) and U' = area_p + area_t − I',
/// * IoU part: ∂(I'/U')/∂x, ∂/∂y, and **2×** ∂/∂w, 2× ∂/∂h (Darknet does not halve w,h);
/// * GIoU adds ∂(U'/C)/∂· (C = enclosing area, same ×2 on w,h); without overlap only that term;
/// * DIoU/CIoU add the centre-distance term of IoU − S/D (S = centre distance², D = enclosing
///   diagonal²): for w,h the true −∂(S/D)/∂w; for x,y Darknet's `(2(tx−px)D − ∂D/∂x·S)/D²`, whose
///   S·∂D term has the opposite sign of the true derivative; without overlap only this term;
/// * CIoU adds α·ar_dw, α·ar_dh: α frozen, and ar_dw = (wp²+hp²)·∂(−v)/∂wp (the paper drops the
///   1/(w²+h²) factor).
pub fn dx_box_iou(pred: BBox, truth: BBox, kind: IouLoss) -> DxBox {
    let p = pred.tblr();
    let pred_t = p.top.min(p.bot);
    let pred_b = p.top.max(p.bot);
    let pred_l = p.left.min(p.right);
    let pred_r = p.left.max(p.right);
    let t = truth.tblr();

    let x_area = (pred_b - pred_t) * (pred_r - pred_l);
    let xhat = (t.bot - t.top) * (t.right - t.left);
    let ih = pred_b.min(t.bot) - pred_t.max(t.top);
    let iw = pred_r.min(t.right) - pred_l.max(t.left);
    let i = iw * ih;
    let u = x_area + xhat - i;
    let s = (pred.x - truth.x) * (pred.x - truth.x) + (pred.y - truth.y) * (pred.y - truth.y);
    let giou_cw = pred_r.max(t.right) - pred_l.min(t.left);
    let giou_ch = pred_b.max(t.bot) - pred_t.min(t.top);
    let giou_c = giou_cw * giou_ch;

    // Partial derivatives of the prediction's area and of I, U, C w.r.t. its edges.
    let dx_t = -(pred_r - pred_l);
    let dx_b = pred_r - pred_l;
    let dx_l = -(pred_b - pred_t);
    let dx_r = pred_b - pred_t;
    let di_t = if pred_t > t.top { -iw } else { 0.0 };
    let di_b = if pred_b < t.bot { iw } else { 0.0 };
    let di_l = if pred_l > t.left { -ih } else { 0.0 };
    let di_r = if pred_r < t.right { ih } else { 0.0 };
    let du_t = dx_t - di_t;
    let du_b = dx_b - di_b;
    let du_l = dx_l - di_l;
    let du_r = dx_r - di_r;
    let dc_t = if pred_t < t.top { -giou_cw } else { 0.0 };
    let dc_b = if pred_b > t.bot { giou_cw } else { 0.0 };
    let dc_l = if pred_l < t.left { -giou_ch } else { 0.0 };
    let dc_r = if pred_r > t.right { giou_ch } else { 0.0 };

    let (mut p_dt, mut p_db, mut p_dl, mut p_dr) = (0.0f32, 0.0f32, 0.0f32, 0.0f32);
    if u > 0.0 {
        p_dt = (u * di_t - i * du_t) / (u * u);
        p_db = (u * di_b - i * du_b) / (u * u);
        p_dl = (u * di_l - i * du_l) / (u * u);
        p_dr = (u * di_r - i * du_r) / (u * u);
    }
    // Edge order of a degenerate (flipped) prediction; a no-op for w, h > 0.
    if p.top >= p.bot {
        p_dt = p_db;
    }
    if p.left >= p.right {
        p_dl = p_dr;
    }

    let no_overlap = iw <= 0.0 || ih <= 0.0;
    if kind == IouLoss::Giou {
        let c2 = giou_c * giou_c;
        let g_t = (giou_c * du_t - u * dc_t) / c2;
        let g_b = (giou_c * du_b - u * dc_b) / c2;
        let g_l = (giou_c * du_l - u * dc_l) / c2;
        let g_r = (giou_c * du_r - u * dc_r) / c2;
        if giou_c > 0.0 {
            p_dt += g_t;
            p_db += g_b;
            p_dl += g_l;
            p_dr += g_r;
        }
        if no_overlap {
            (p_dt, p_db, p_dl, p_dr) = (g_t, g_b, g_l, g_r);
        }
    }

    // Enclosing box from the centre form (DIoU/CIoU).
    let c_box = box_c(pred, truth);
    let cw = c_box.right - c_box.left;
    let ch = c_box.bot - c_box.top;
    let c = cw * cw + ch * ch;
    let top_out = pred_t < t.top;
    let bot_out = pred_b > t.bot;
    let left_out = pred_l < t.left;
    let right_out = pred_r > t.right;
    let ind = |b: bool, v: f32| if b { v } else { 0.0 };
    let dcw_dx = ind(right_out, 1.0) - ind(left_out, 1.0);
    let dcw_dw = ind(right_out, 0.5) - ind(left_out, -0.5);
    let dch_dy = ind(bot_out, 1.0) - ind(top_out, 1.0);
    let dch_dh = ind(bot_out, 0.5) - ind(top_out, -0.5);
    // Cw does not depend on y, h and Ch not on x, w: those products vanish.
    let dist_x = (2.0 * (truth.x - pred.x) * c - (2.0 * cw * dcw_dx) * s) / (c * c);
    let dist_y = (2.0 * (truth.y - pred.y) * c - (2.0 * ch * dch_dy) * s) / (c * c);
    let dist_w = (2.0 * cw * dcw_dw) * s / (c * c);
    let dist_h = (2.0 * ch * dch_dh) * s / (c * c);

    let mut d = DxBox { dx: p_dl + p_dr, dy: p_dt + p_db, dw: p_dr - p_dl, dh: p_db - p_dt };
    match kind {
        IouLoss::Diou | IouLoss::Ciou => {
            let (ar_w, ar_h) = if kind == IouLoss::Ciou {
                let (v, diff) = aspect_term(pred, truth);
                let alpha = (v as f64 / ((1.0 - i / u + v) as f64 + 0.000001)) as f32;
                let k = 8.0 / (PI * PI) * diff;
                let ar_dw = (k * pred.h as f64) as f32;
                let ar_dh = (-k * pred.w as f64) as f32;
                (alpha * ar_dw, alpha * ar_dh)
            } else {
                (0.0, 0.0)
            };
            if c > 0.0 {
                d.dx += dist_x;
                d.dy += dist_y;
                d.dw += dist_w + ar_w;
                d.dh += dist_h + ar_h;
            }
            if no_overlap {
                d = DxBox { dx: dist_x, dy: dist_y, dw: dist_w + ar_w, dh: dist_h + ar_h };
            }
        }
        IouLoss::Iou | IouLoss::Giou | IouLoss::Mse => {}
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iou_of_known_boxes() {
        let a = BBox::new(0.5, 0.5, 0.4, 0.4);
        let b = BBox::new(0.6, 0.5, 0.4, 0.4);
        // overlap 0.3 × 0.4 = 0.12; union 0.16 + 0.16 − 0.12 = 0.2
        assert!((box_iou(a, b) - 0.6).abs() < 1e-6);
        assert_eq!(box_iou(a, BBox::new(0.95, 0.5, 0.4, 0.4)), 0.0);
        // enclosing 0.5 × 0.4 = 0.2 = union -> GIoU == IoU
        assert!((box_giou(a, b) - 0.6).abs() < 1e-6);
        // c² = 0.5² + 0.4² = 0.41, d² = 0.01
        let diou = 0.6 - (0.01f64 / 0.41).powf(0.6);
        assert!((box_diou(a, b) as f64 - diou).abs() < 1e-6);
        // same aspect ratio: v = 0 -> CIoU = IoU − d²/c²
        assert!((box_ciou(a, b) as f64 - (0.6 - 0.01 / 0.41)).abs() < 1e-6);
        assert_eq!(box_iou_kind(a, b, IouLoss::Mse), box_iou(a, b));
    }

    #[test]
    fn giou_of_disjoint_boxes_is_negative() {
        let a = BBox::new(0.2, 0.2, 0.2, 0.2);
        let b = BBox::new(0.8, 0.8, 0.2, 0.2);
        // enclosing 0.8², union 0.08 -> −(0.64 − 0.08)/0.64
        assert!((box_giou(a, b) + 0.875).abs() < 1e-6);
    }

    #[test]
    fn identical_boxes_have_zero_centre_gradient() {
        // At pred == truth the score has a kink in w, h; the centre gradient is exactly 0.
        let a = BBox::new(0.4, 0.6, 0.3, 0.2);
        for kind in [IouLoss::Iou, IouLoss::Giou, IouLoss::Diou, IouLoss::Ciou] {
            let d = dx_box_iou(a, a, kind);
            assert!(d.dx.abs() < 1e-6 && d.dy.abs() < 1e-6, "{kind:?}: {d:?}");
            // Darknet takes the one-sided derivative for a growing box: IoU falls (GIoU's U/C
            // term exactly cancels it).
            if kind == IouLoss::Giou {
                assert!(d.dw.abs() < 1e-6 && d.dh.abs() < 1e-6, "{kind:?}: {d:?}");
            } else {
                assert!(d.dw < 0.0 && d.dh < 0.0, "{kind:?}: {d:?}");
            }
        }
    }
}
