// The [yolo] training head (darknet-spec §a): GPU twin of engine::yolo::forward_backward_cpu.
// Bindings: b1 x, b2 out, b3 truths, b4 dx (holds Darknet's delta until yolo_finish negates it),
// b5 stats, b6 scratch. Scratch (from o6): anchors in pixels [2·num], anchors / net size [2·num],
// mask [n] (as floats), per-image tallies [batch·9], per-workgroup loss partials [parts·4].
// Passes: yolo_activate (per element) → yolo_negatives (per anchor·cell: Darknet's loop 1) →
// yolo_positives (one thread per image, truths in order: Darknet's loop 2) → yolo_finish (per
// anchor·cell: iou_thresh averaging, squares, sign flip, workgroup partials) → yolo_stats (one
// workgroup). Sums use fixed trees and fixed serial orders only: reruns give the same bits.

struct P {
    batch: u32,
    w: u32,
    h: u32,
    classes: u32,
    n: u32,
    num_anchors: u32,
    net_w: u32,
    net_h: u32,
    max_boxes: u32,
    wh: u32,
    outputs: u32,
    // batch · n · wh (anchor-cells)
    total: u32,
    o1: u32,
    o2: u32,
    o3: u32,
    o4: u32,
    o5: u32,
    o6: u32,
    // bit 0 new_coords, 1 focal_loss, 2 objectness_smooth, 3 max_delta set, 4 iou_thresh < 1
    flags: u32,
    // 0 mse, 1 iou, 2 giou, 3 diou, 4 ciou
    iou_loss: u32,
    iou_thresh_kind: u32,
    parts: u32,
    len: u32,
    scale_x_y: f32,
    beta: f32,
    ignore_thresh: f32,
    truth_thresh: f32,
    iou_thresh: f32,
    iou_normalizer: f32,
    obj_normalizer: f32,
    label_smooth_eps: f32,
    max_delta: f32,
}

@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> b1: array<f32>;
@group(0) @binding(2) var<storage, read_write> b2: array<f32>;
@group(0) @binding(3) var<storage, read_write> b3: array<f32>;
@group(0) @binding(4) var<storage, read_write> b4: array<f32>;
@group(0) @binding(5) var<storage, read_write> b5: array<f32>;
@group(0) @binding(6) var<storage, read_write> b6: array<f32>;

const NEW_COORDS: u32 = 1u;
const FOCAL: u32 = 2u;
const OBJ_SMOOTH: u32 = 4u;
const MAX_DELTA: u32 = 8u;
const AVERAGE: u32 = 16u;

const K_GIOU: u32 = 2u;
const K_DIOU: u32 = 3u;
const K_CIOU: u32 = 4u;

// Per-image tally slots (scratch): Darknet's process_batch counters.
const T_IOU: u32 = 0u;
const T_IOU_LOSS: u32 = 1u;
const T_GIOU_LOSS: u32 = 2u;
const T_R50: u32 = 3u;
const T_R75: u32 = 4u;
const T_OBJ: u32 = 5u;
const T_CAT: u32 = 6u;
const T_COUNT: u32 = 7u;
const T_TRUTHS: u32 = 8u;
const TALLY: u32 = 9u;

const CLASS_MATCH_THRESH: f32 = 0.25;
// 4/π² and 8/π², rounded once from double.
const FOUR_OVER_PI2: f32 = 0.40528473456935109;
const EIGHT_OVER_PI2: f32 = 0.81056946913870218;

struct Box {
    x: f32,
    y: f32,
    w: f32,
    h: f32,
}

var<private> tally: array<f32, 9>;
var<workgroup> red: array<vec4<f32>, 256>;

fn flag(f: u32) -> bool {
    return (p.flags & f) != 0u;
}

// Exponent bits all ones = Inf or NaN (bit test: immune to fast-math).
fn finite(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7f800000u) != 0x7f800000u;
}

fn flat(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wid.y * nwg.x + wid.x) * 256u + lid.x;
}

fn logistic(x: f32) -> f32 {
    return 1.0 / (1.0 + exp(-x));
}

// ---- scratch ----------------------------------------------------------------------------------
fn anchor_px(a: u32) -> vec2<f32> {
    return vec2<f32>(b6[p.o6 + 2u * a], b6[p.o6 + 2u * a + 1u]);
}
fn anchor_norm(a: u32) -> vec2<f32> {
    let o = p.o6 + 2u * p.num_anchors;
    return vec2<f32>(b6[o + 2u * a], b6[o + 2u * a + 1u]);
}
fn mask_at(n: u32) -> u32 {
    return u32(b6[p.o6 + 4u * p.num_anchors + n]);
}
fn tally_base(b: u32) -> u32 {
    return p.o6 + 4u * p.num_anchors + p.n + b * TALLY;
}
fn partials_base() -> u32 {
    return p.o6 + 4u * p.num_anchors + p.n + p.batch * TALLY;
}

// ---- layout -----------------------------------------------------------------------------------
// Index (view-relative) of entry e of mask slot n at cell of image b.
fn entry(b: u32, n: u32, e: u32, cell: u32) -> u32 {
    return b * p.outputs + n * (5u + p.classes) * p.wh + e * p.wh + cell;
}

// Truth t of image b, and its class as Darknet reads it (float truncated; NaN reads as 0).
fn truth_box(b: u32, t: u32) -> Box {
    let o = p.o3 + (b * p.max_boxes + t) * 5u;
    return Box(b3[o], b3[o + 1u], b3[o + 2u], b3[o + 3u]);
}
fn truth_class(b: u32, t: u32) -> i32 {
    let v = b3[p.o3 + (b * p.max_boxes + t) * 5u + 4u];
    if (!finite(v) && (bitcast<u32>(v) & 0x007fffffu) != 0u) {
        return 0;
    }
    if (v <= -1.0) {
        return -1;
    }
    if (v >= f32(p.classes)) {
        return i32(p.classes);
    }
    return i32(trunc(v));
}

// ---- boxes (engine/src/yolo/boxes.rs) ----------------------------------------------------------
fn overlap(x1: f32, w1: f32, x2: f32, w2: f32) -> f32 {
    let l = max(x1 - w1 * 0.5, x2 - w2 * 0.5);
    let r = min(x1 + w1 * 0.5, x2 + w2 * 0.5);
    return r - l;
}

fn box_intersection(a: Box, b: Box) -> f32 {
    let w = overlap(a.x, a.w, b.x, b.w);
    if (w <= 0.0) {
        return 0.0;
    }
    let h = overlap(a.y, a.h, b.y, b.h);
    if (h <= 0.0) {
        return 0.0;
    }
    return w * h;
}

fn box_iou(a: Box, b: Box) -> f32 {
    let i = box_intersection(a, b);
    if (i == 0.0) {
        return 0.0;
    }
    return i / (a.w * a.h + b.w * b.h - i);
}

// Enclosing box as (top, bot, left, right).
fn box_c(a: Box, b: Box) -> vec4<f32> {
    return vec4<f32>(
        min(a.y - a.h * 0.5, b.y - b.h * 0.5),
        max(a.y + a.h * 0.5, b.y + b.h * 0.5),
        min(a.x - a.w * 0.5, b.x - b.w * 0.5),
        max(a.x + a.w * 0.5, b.x + b.w * 0.5),
    );
}

fn box_giou(a: Box, b: Box) -> f32 {
    let cb = box_c(a, b);
    let c = (cb.w - cb.z) * (cb.y - cb.x);
    let iou = box_iou(a, b);
    if (c == 0.0) {
        return iou;
    }
    let u = a.w * a.h + b.w * b.h - box_intersection(a, b);
    return iou - (c - u) / c;
}

// (enclosing diagonal², centre distance²)
fn diag_and_dist(a: Box, b: Box) -> vec2<f32> {
    let cb = box_c(a, b);
    let w = cb.w - cb.z;
    let h = cb.y - cb.x;
    let d = (a.x - b.x) * (a.x - b.x) + (a.y - b.y) * (a.y - b.y);
    return vec2<f32>(w * w + h * h, d);
}

fn box_diou(a: Box, b: Box) -> f32 {
    let cd = diag_and_dist(a, b);
    let iou = box_iou(a, b);
    if (cd.x == 0.0) {
        return iou;
    }
    let r = cd.y / cd.x;
    if (r <= 0.0) {
        return iou;
    }
    return iou - pow(r, 0.6);
}

// (v, atan difference)
fn aspect_term(pred: Box, truth: Box) -> vec2<f32> {
    let diff = atan(truth.w / truth.h) - atan(pred.w / pred.h);
    return vec2<f32>(FOUR_OVER_PI2 * diff * diff, diff);
}

fn box_ciou(a: Box, b: Box) -> f32 {
    let cu = diag_and_dist(a, b);
    let iou = box_iou(a, b);
    if (cu.x == 0.0) {
        return iou;
    }
    let d = cu.y / cu.x;
    let v = aspect_term(a, b).x;
    let alpha = v / ((1.0 - iou + v) + 0.000001);
    return iou - (d + alpha * v);
}

fn box_iou_kind(a: Box, b: Box, kind: u32) -> f32 {
    switch kind {
        case 2u: { return box_giou(a, b); }
        case 3u: { return box_diou(a, b); }
        case 4u: { return box_ciou(a, b); }
        default: { return box_iou(a, b); }
    }
}

fn ind(c: bool, v: f32) -> f32 {
    return select(0.0, v, c);
}

// Darknet's dx_box_iou: (dx, dy, dw, dh) of the IoU-family score w.r.t. pred.
fn dx_box_iou(pred: Box, truth: Box, kind: u32) -> vec4<f32> {
    let ptop = pred.y - pred.h * 0.5;
    let pbot = pred.y + pred.h * 0.5;
    let pleft = pred.x - pred.w * 0.5;
    let pright = pred.x + pred.w * 0.5;
    let pred_t = min(ptop, pbot);
    let pred_b = max(ptop, pbot);
    let pred_l = min(pleft, pright);
    let pred_r = max(pleft, pright);
    let t_top = truth.y - truth.h * 0.5;
    let t_bot = truth.y + truth.h * 0.5;
    let t_left = truth.x - truth.w * 0.5;
    let t_right = truth.x + truth.w * 0.5;

    let x_area = (pred_b - pred_t) * (pred_r - pred_l);
    let xhat = (t_bot - t_top) * (t_right - t_left);
    let ih = min(pred_b, t_bot) - max(pred_t, t_top);
    let iw = min(pred_r, t_right) - max(pred_l, t_left);
    let i = iw * ih;
    let u = x_area + xhat - i;
    let s = (pred.x - truth.x) * (pred.x - truth.x) + (pred.y - truth.y) * (pred.y - truth.y);
    let giou_cw = max(pred_r, t_right) - min(pred_l, t_left);
    let giou_ch = max(pred_b, t_bot) - min(pred_t, t_top);
    let giou_c = giou_cw * giou_ch;

    let dx_t = -(pred_r - pred_l);
    let dx_b = pred_r - pred_l;
    let dx_l = -(pred_b - pred_t);
    let dx_r = pred_b - pred_t;
    let di_t = select(0.0, -iw, pred_t > t_top);
    let di_b = select(0.0, iw, pred_b < t_bot);
    let di_l = select(0.0, -ih, pred_l > t_left);
    let di_r = select(0.0, ih, pred_r < t_right);
    let du_t = dx_t - di_t;
    let du_b = dx_b - di_b;
    let du_l = dx_l - di_l;
    let du_r = dx_r - di_r;
    let dc_t = select(0.0, -giou_cw, pred_t < t_top);
    let dc_b = select(0.0, giou_cw, pred_b > t_bot);
    let dc_l = select(0.0, -giou_ch, pred_l < t_left);
    let dc_r = select(0.0, giou_ch, pred_r > t_right);

    var p_dt = 0.0;
    var p_db = 0.0;
    var p_dl = 0.0;
    var p_dr = 0.0;
    if (u > 0.0) {
        p_dt = (u * di_t - i * du_t) / (u * u);
        p_db = (u * di_b - i * du_b) / (u * u);
        p_dl = (u * di_l - i * du_l) / (u * u);
        p_dr = (u * di_r - i * du_r) / (u * u);
    }
    if (ptop >= pbot) {
        p_dt = p_db;
    }
    if (pleft >= pright) {
        p_dl = p_dr;
    }

    let no_overlap = iw <= 0.0 || ih <= 0.0;
    if (kind == K_GIOU) {
        let c2 = giou_c * giou_c;
        let g_t = (giou_c * du_t - u * dc_t) / c2;
        let g_b = (giou_c * du_b - u * dc_b) / c2;
        let g_l = (giou_c * du_l - u * dc_l) / c2;
        let g_r = (giou_c * du_r - u * dc_r) / c2;
        if (giou_c > 0.0) {
            p_dt += g_t;
            p_db += g_b;
            p_dl += g_l;
            p_dr += g_r;
        }
        if (no_overlap) {
            p_dt = g_t;
            p_db = g_b;
            p_dl = g_l;
            p_dr = g_r;
        }
    }

    let cb = box_c(pred, truth);
    let cw = cb.w - cb.z;
    let ch = cb.y - cb.x;
    let c = cw * cw + ch * ch;
    let top_out = pred_t < t_top;
    let bot_out = pred_b > t_bot;
    let left_out = pred_l < t_left;
    let right_out = pred_r > t_right;
    let dcw_dx = ind(right_out, 1.0) - ind(left_out, 1.0);
    let dcw_dw = ind(right_out, 0.5) - ind(left_out, -0.5);
    let dch_dy = ind(bot_out, 1.0) - ind(top_out, 1.0);
    let dch_dh = ind(bot_out, 0.5) - ind(top_out, -0.5);
    let dist_x = (2.0 * (truth.x - pred.x) * c - (2.0 * cw * dcw_dx) * s) / (c * c);
    let dist_y = (2.0 * (truth.y - pred.y) * c - (2.0 * ch * dch_dy) * s) / (c * c);
    let dist_w = (2.0 * cw * dcw_dw) * s / (c * c);
    let dist_h = (2.0 * ch * dch_dh) * s / (c * c);

    var d = vec4<f32>(p_dl + p_dr, p_dt + p_db, p_dr - p_dl, p_db - p_dt);
    if (kind == K_DIOU || kind == K_CIOU) {
        var ar = vec2<f32>(0.0, 0.0);
        if (kind == K_CIOU) {
            let vd = aspect_term(pred, truth);
            let alpha = vd.x / ((1.0 - i / u + vd.x) + 0.000001);
            let k = EIGHT_OVER_PI2 * vd.y;
            ar = vec2<f32>(alpha * (k * pred.h), alpha * (-k * pred.w));
        }
        let dist = vec4<f32>(dist_x, dist_y, dist_w + ar.x, dist_h + ar.y);
        if (c > 0.0) {
            d += dist;
        }
        if (no_overlap) {
            d = dist;
        }
    }
    return d;
}

// ---- the head ---------------------------------------------------------------------------------
// Darknet's get_yolo_box for the anchor entry at box_index (view-relative in out).
fn get_yolo_box(a: u32, box_index: u32, i: u32, j: u32) -> Box {
    let o = p.o2 + box_index;
    let tx = b2[o];
    let ty = b2[o + p.wh];
    let tw = b2[o + 2u * p.wh];
    let th = b2[o + 3u * p.wh];
    let x = (f32(i) + tx) / f32(p.w);
    let y = (f32(j) + ty) / f32(p.h);
    if (flag(NEW_COORDS)) {
        let an = anchor_px(a);
        return Box(x, y, tw * tw * 4.0 * an.x / f32(p.net_w), th * th * 4.0 * an.y / f32(p.net_h));
    }
    let k = anchor_norm(a);
    return Box(x, y, exp(tw) * k.x, exp(th) * k.y);
}

fn smooth_label(y: f32) -> f32 {
    if (p.label_smooth_eps != 0.0) {
        return y * (1.0 - p.label_smooth_eps) + 0.5 * p.label_smooth_eps;
    }
    return y;
}

// Darknet's delta_yolo_class at class entry 0 = index; returns out of the truth's class.
fn delta_class(index: u32, class_id: u32) -> f32 {
    let s = p.wh;
    let ti = index + s * class_id;
    let out_t = b2[p.o2 + ti];
    // An earlier truth already set this anchor's classes: only its own class is raised.
    if (b4[p.o4 + ti] != 0.0) {
        let r = smooth_label(1.0) - out_t;
        if (finite(r)) {
            b4[p.o4 + ti] = r;
        }
        return out_t;
    }
    if (flag(FOCAL)) {
        let pt = out_t + 0.000000000000001;
        let grad = -(1.0 - pt) * (2.0 * pt * log(pt) + pt - 1.0);
        for (var c = 0u; c < p.classes; c++) {
            let k = index + s * c;
            let y = select(0.0, 1.0, c == class_id);
            b4[p.o4 + k] = (y - b2[p.o2 + k]) * 0.5 * grad;
        }
    } else {
        for (var c = 0u; c < p.classes; c++) {
            let k = index + s * c;
            let r = smooth_label(select(0.0, 1.0, c == class_id)) - b2[p.o2 + k];
            if (finite(r)) {
                b4[p.o4 + k] = r;
            }
        }
    }
    return out_t;
}

// Darknet's delta_yolo_box (accumulating) of anchor a at box_index; returns (IoU, GIoU).
fn delta_box(truth: Box, a: u32, box_index: u32, i: u32, j: u32) -> vec2<f32> {
    let s = p.wh;
    var pred = get_yolo_box(a, box_index, i, j);
    let ious = vec2<f32>(box_iou(pred, truth), box_giou(pred, truth));
    if (pred.w == 0.0) {
        pred.w = 1.0;
    }
    if (pred.h == 0.0) {
        pred.h = 1.0;
    }
    let ob = p.o2 + box_index;
    let od = p.o4 + box_index;
    let an = anchor_px(a);
    if (p.iou_loss == 0u) {
        let scale = 2.0 - truth.w * truth.h;
        var t = vec4<f32>(truth.x * f32(p.w) - f32(i), truth.y * f32(p.h) - f32(j), 0.0, 0.0);
        if (flag(NEW_COORDS)) {
            t.z = sqrt(truth.w * f32(p.net_w) / (4.0 * an.x));
            t.w = sqrt(truth.h * f32(p.net_h) / (4.0 * an.y));
        } else {
            t.z = log(truth.w * f32(p.net_w) / an.x);
            t.w = log(truth.h * f32(p.net_h) / an.y);
        }
        for (var e = 0u; e < 4u; e++) {
            b4[od + e * s] += scale * (t[e] - b2[ob + e * s]) * p.iou_normalizer;
        }
    } else {
        var g = dx_box_iou(pred, truth, p.iou_loss);
        if (!flag(NEW_COORDS)) {
            g.z = g.z * exp(b2[ob + 2u * s]);
            g.w = g.w * exp(b2[ob + 3u * s]);
        }
        for (var e = 0u; e < 4u; e++) {
            var d = g[e] * p.iou_normalizer;
            if (!finite(d)) {
                d = 0.0;
            }
            if (flag(MAX_DELTA)) {
                d = clamp(d, -p.max_delta, p.max_delta);
            }
            b4[od + e * s] += d;
        }
    }
    return ious;
}

// ---- passes -----------------------------------------------------------------------------------
// out = activated x; dx (the delta) = 0.
@compute @workgroup_size(256)
fn yolo_activate(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_id) lid: vec3<u32>) {
    let idx = flat(wid, nwg, lid);
    if (idx >= p.len) {
        return;
    }
    let e = (idx % p.outputs) / p.wh % (5u + p.classes);
    var v = b1[p.o1 + idx];
    if (!flag(NEW_COORDS) && (e < 2u || e >= 4u)) {
        v = logistic(v);
    }
    if (e < 2u) {
        v = v * p.scale_x_y + p.beta;
    }
    b2[p.o2 + idx] = v;
    b4[p.o4 + idx] = 0.0;
}

// Loop 1, one invocation per (image, mask slot, cell): negative objectness unless ignored, and
// truth_thresh positives (which touch only this anchor-cell).
@compute @workgroup_size(256)
fn yolo_negatives(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_id) lid: vec3<u32>) {
    let id = flat(wid, nwg, lid);
    if (id >= p.total) {
        return;
    }
    let per_image = p.n * p.wh;
    let b = id / per_image;
    let n = (id % per_image) / p.wh;
    let cell = id % p.wh;
    let i = cell % p.w;
    let j = cell / p.w;
    let a = mask_at(n);
    let obj_index = entry(b, n, 4u, cell);
    let box_index = entry(b, n, 0u, cell);
    let class_index = entry(b, n, 5u, cell);
    let pred = get_yolo_box(a, box_index, i, j);
    var class_id_match = false;
    for (var c = 0u; c < p.classes; c++) {
        if (b2[p.o2 + class_index + c * p.wh] > CLASS_MATCH_THRESH) {
            class_id_match = true;
        }
    }
    var best_match_iou = 0.0;
    var best_iou = 0.0;
    var best_t = -1;
    var any_truth = false;
    for (var t = 0u; t < p.max_boxes; t++) {
        let tb = truth_box(b, t);
        if (tb.x == 0.0) {
            break;
        }
        let cls = truth_class(b, t);
        if (cls < 0 || cls >= i32(p.classes)) {
            continue;
        }
        any_truth = true;
        let iou = box_iou(pred, tb);
        if (iou > best_match_iou && class_id_match) {
            best_match_iou = iou;
        }
        if (iou > best_iou) {
            best_iou = iou;
            best_t = i32(t);
        }
    }
    if (any_truth && !finite(b2[p.o2 + obj_index])) {
        b2[p.o2 + obj_index] = 0.0;
    }
    let obj = b2[p.o2 + obj_index];
    let od = p.o4 + obj_index;
    b4[od] = p.obj_normalizer * (0.0 - obj);
    if (best_match_iou > p.ignore_thresh) {
        if (flag(OBJ_SMOOTH)) {
            let d = p.obj_normalizer * (best_match_iou - obj);
            if (d > b4[od]) {
                b4[od] = d;
            }
        } else {
            b4[od] = 0.0;
        }
    }
    if (best_t >= 0 && best_iou > p.truth_thresh) {
        let iou_multiplier = best_iou * best_iou;
        if (flag(OBJ_SMOOTH)) {
            b4[od] = p.obj_normalizer * (iou_multiplier - obj);
        } else {
            b4[od] = p.obj_normalizer * (1.0 - obj);
        }
        let class_id = u32(truth_class(b, u32(best_t)));
        delta_class(class_index, class_id);
        if (flag(OBJ_SMOOTH)) {
            let ci = class_index + p.wh * class_id;
            b4[p.o4 + ci] = iou_multiplier - b2[p.o2 + ci];
        }
        delta_box(truth_box(b, u32(best_t)), a, box_index, i, j);
    }
}

// Box, objectness and class deltas of one truth at anchor a (mask slot mask_n); tallies.
fn positive(b: u32, mask_n: u32, a: u32, i: u32, j: u32, truth: Box, class_id: u32) {
    let cell = j * p.w + i;
    let ious = delta_box(truth, a, entry(b, mask_n, 0u, cell), i, j);
    tally[T_IOU] += ious.x;
    tally[T_IOU_LOSS] += 1.0 - ious.x;
    tally[T_GIOU_LOSS] += 1.0 - ious.y;
    let obj_index = entry(b, mask_n, 4u, cell);
    let obj = b2[p.o2 + obj_index];
    tally[T_OBJ] += obj;
    let d = p.obj_normalizer * (1.0 - obj);
    if (!flag(OBJ_SMOOTH) || b4[p.o4 + obj_index] == 0.0) {
        b4[p.o4 + obj_index] = d;
    }
    tally[T_CAT] += delta_class(entry(b, mask_n, 5u, cell), class_id);
    tally[T_COUNT] += 1.0;
    if (ious.x > 0.5) {
        tally[T_R50] += 1.0;
    }
    if (ious.x > 0.75) {
        tally[T_R75] += 1.0;
    }
}

// Loop 2, one invocation per image: truths in order (later truths overwrite earlier ones at a
// shared anchor-cell, and delta_yolo_class's "already set" rule depends on that order).
@compute @workgroup_size(64)
fn yolo_positives(@builtin(global_invocation_id) gid: vec3<u32>) {
    let b = gid.x;
    if (b >= p.batch) {
        return;
    }
    for (var k = 0u; k < TALLY; k++) {
        tally[k] = 0.0;
    }
    for (var t = 0u; t < p.max_boxes; t++) {
        let tb = truth_box(b, t);
        if (tb.x == 0.0) {
            break;
        }
        // Darknet aborts on such labels; the data loader rejects them before they get here.
        if (tb.x < 0.0 || tb.y < 0.0 || tb.x > 1.0 || tb.y > 1.0 || tb.w < 0.0 || tb.h < 0.0) {
            continue;
        }
        let cls = truth_class(b, t);
        if (cls < 0 || cls >= i32(p.classes)) {
            continue;
        }
        tally[T_TRUTHS] += 1.0;
        let i = min(u32(tb.x * f32(p.w)), p.w - 1u);
        let j = min(u32(tb.y * f32(p.h)), p.h - 1u);
        let shift = Box(0.0, 0.0, tb.w, tb.h);
        var best_iou = 0.0;
        var best_n = 0u;
        for (var a = 0u; a < p.num_anchors; a++) {
            let an = anchor_norm(a);
            let iou = box_iou(Box(0.0, 0.0, an.x, an.y), shift);
            if (iou > best_iou) {
                best_iou = iou;
                best_n = a;
            }
        }
        for (var n = 0u; n < p.n; n++) {
            if (mask_at(n) == best_n) {
                positive(b, n, best_n, i, j, tb, u32(cls));
                break;
            }
        }
        if (flag(AVERAGE)) {
            for (var n = 0u; n < p.n; n++) {
                let a = mask_at(n);
                let an = anchor_norm(a);
                if (a != best_n && box_iou_kind(Box(0.0, 0.0, an.x, an.y), shift, p.iou_thresh_kind) > p.iou_thresh) {
                    positive(b, n, a, i, j, tb, u32(cls));
                }
            }
        }
    }
    let o = tally_base(b);
    for (var k = 0u; k < TALLY; k++) {
        b6[o + k] = tally[k];
    }
}

fn tree(l: u32, v: vec4<f32>) -> vec4<f32> {
    red[l] = v;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s = s >> 1u) {
        if (l < s) {
            red[l] = red[l] + red[l + s];
        }
        workgroupBarrier();
    }
    return red[0];
}

// Loop 3 (iou_thresh < 1: box deltas ÷ classes with a positive delta), then per anchor-cell
// Σδ² (box, objectness, classes) and objectness; dx = −delta. One partial per workgroup.
@compute @workgroup_size(256)
fn yolo_finish(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_id) lid: vec3<u32>) {
    let id = flat(wid, nwg, lid);
    var acc = vec4<f32>(0.0);
    if (id < p.total) {
        let per_image = p.n * p.wh;
        let b = id / per_image;
        let n = (id % per_image) / p.wh;
        let cell = id % p.wh;
        let s = p.wh;
        let base = p.o4 + entry(b, n, 0u, cell);
        if (flag(AVERAGE) && b4[base + 4u * s] != 0.0) {
            var k = 0u;
            for (var c = 0u; c < p.classes; c++) {
                if (b4[base + (5u + c) * s] > 0.0) {
                    k += 1u;
                }
            }
            if (k > 0u) {
                for (var e = 0u; e < 4u; e++) {
                    b4[base + e * s] = b4[base + e * s] / f32(k);
                }
            }
        }
        for (var e = 0u; e < 5u + p.classes; e++) {
            let d = b4[base + e * s];
            if (e < 4u) {
                acc.x += d * d;
            } else if (e == 4u) {
                acc.y += d * d;
            } else {
                acc.z += d * d;
            }
            b4[base + e * s] = -d;
        }
        acc.w = b2[p.o2 + entry(b, n, 4u, cell)];
    }
    let r = tree(lid.x, acc);
    let g = wid.y * nwg.x + wid.x;
    if (lid.x == 0u && g < p.parts) {
        let o = partials_base() + 4u * g;
        b6[o] = r.x;
        b6[o + 1u] = r.y;
        b6[o + 2u] = r.z;
        b6[o + 3u] = r.w;
    }
}

// One workgroup: partials and per-image tallies → the stats record (engine/src/yolo_stats.rs).
@compute @workgroup_size(256)
fn yolo_stats(@builtin(local_invocation_id) lid: vec3<u32>) {
    var acc = vec4<f32>(0.0);
    let pb = partials_base();
    for (var g = lid.x; g < p.parts; g += 256u) {
        let o = pb + 4u * g;
        acc += vec4<f32>(b6[o], b6[o + 1u], b6[o + 2u], b6[o + 3u]);
    }
    let r = tree(lid.x, acc);
    if (lid.x != 0u) {
        return;
    }
    var t: array<f32, 9>;
    for (var k = 0u; k < TALLY; k++) {
        t[k] = 0.0;
    }
    for (var b = 0u; b < p.batch; b++) {
        let o = tally_base(b);
        for (var k = 0u; k < TALLY; k++) {
            t[k] += b6[o + k];
        }
    }
    let box_sq = r.x;
    let obj_sq = r.y;
    let cls_sq = r.z;
    let all_sq = box_sq + obj_sq + cls_sq;
    let class_loss = p.obj_normalizer * (obj_sq + cls_sq);
    var iou_loss_sum = t[T_IOU_LOSS];
    if (p.iou_loss == K_GIOU) {
        iou_loss_sum = t[T_GIOU_LOSS];
    }
    var cost = all_sq;
    if (p.iou_loss != 0u) {
        var avg_iou_loss = 0.0;
        if (t[T_COUNT] > 0.0) {
            avg_iou_loss = p.iou_normalizer * iou_loss_sum / t[T_COUNT];
        }
        cost = avg_iou_loss + class_loss;
    }
    let o = p.o5;
    b5[o + 0u] = cost;
    b5[o + 1u] = class_loss;
    // = all_sq − class_loss (the CPU's form), without f32 cancellation when box_sq is small.
    b5[o + 2u] = box_sq + (1.0 - p.obj_normalizer) * (obj_sq + cls_sq);
    b5[o + 3u] = t[T_IOU];
    b5[o + 4u] = t[T_COUNT];
    b5[o + 5u] = t[T_R50];
    b5[o + 6u] = t[T_R75];
    b5[o + 7u] = iou_loss_sum;
    b5[o + 8u] = obj_sq;
    b5[o + 9u] = cls_sq;
    b5[o + 10u] = t[T_OBJ];
    b5[o + 11u] = r.w;
    b5[o + 12u] = t[T_CAT];
    b5[o + 13u] = t[T_TRUTHS];
    b5[o + 14u] = 0.0;
    b5[o + 15u] = 0.0;
}
