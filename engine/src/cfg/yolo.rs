//! `[yolo]` with Darknet's parse_yolo_section defaults (darknet-spec §a), not yolov4-tiny's.

use super::error::CfgError;
use super::model::{NmsKind, YoloCfg};
use super::reader::Reader;
use crate::shapes::IouLoss;

/// Most anchors a [yolo] layer may have.
const MAX_ANCHORS: usize = 4096;

/// [yolo] keys Darknet knows that only matter for its tracking/embedding/display features.
pub(crate) const YOLO_IGNORED: &[&str] = &[
    "map", "embedding_layer", "track_history_size", "sim_thresh", "dets_for_track", "dets_for_show",
    "track_ciou_norm", "show_details", "stride", "stride_x", "stride_y",
];

fn iou_kind(r: &mut Reader<'_>, key: &str, default: IouLoss, allow_mse: bool) -> Result<IouLoss, CfgError> {
    let Some((v, line)) = r.string(key) else { return Ok(default) };
    match IouLoss::from_darknet(&v) {
        Some(IouLoss::Mse) if !allow_mse => Err(r.bad(key, &v, line, "expected iou, giou, diou or ciou")),
        Some(k) => Ok(k),
        None if allow_mse => Err(r.bad(key, &v, line, "expected mse, iou, giou, diou or ciou")),
        None => Err(r.bad(key, &v, line, "expected iou, giou, diou or ciou")),
    }
}

pub(crate) fn parse_yolo(r: &mut Reader<'_>) -> Result<YoloCfg, CfgError> {
    let classes = r.positive("classes", 20)?;
    let num = r.positive("num", 1)?;
    // Darknet's anchor sets have a handful of entries; a huge `num` would only allocate.
    if num > MAX_ANCHORS {
        let (v, line) = r.get("num").unwrap_or_default();
        return Err(r.bad("num", &v, line, format!("at most {MAX_ANCHORS} anchors")));
    }
    let mask = match r.list::<usize>("mask", "non-negative integers")? {
        None => (0..num).collect(),
        Some((mask, line)) => {
            if let Some(&bad) = mask.iter().find(|&&m| m >= num) {
                let raw = mask.iter().map(|m| m.to_string()).collect::<Vec<_>>().join(",");
                return Err(r.bad("mask", &raw, line, format!("anchor index {bad} is out of range: num={num} anchors")));
            }
            mask
        }
    };
    let (values, line) = r.list::<f32>("anchors", "numbers")?.ok_or_else(|| r.missing("anchors"))?;
    if values.len() != 2 * num {
        let raw = values.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(",");
        return Err(r.bad("anchors", &raw, line, format!("expected num={num} pairs (w,h), found {} numbers", values.len())));
    }
    let anchors: Vec<(f32, f32)> = values.chunks(2).map(|p| (p[0], p[1])).collect();

    let max_delta = r.f32("max_delta", f32::MAX)?;
    let counters_per_class = match r.list::<f32>("counters_per_class", "numbers")? {
        None => Vec::new(),
        Some((c, line)) if c.len() != classes => {
            let raw = c.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(",");
            return Err(r.bad("counters_per_class", &raw, line, format!("expected {classes} values, one per class")));
        }
        Some((c, _)) => c,
    };
    let nms_kind = match r.string("nms_kind") {
        None => NmsKind::Default,
        Some((v, line)) => match v.as_str() {
            "default" => NmsKind::Default,
            "greedynms" => NmsKind::Greedy,
            "diounms" => NmsKind::Diou,
            _ => return Err(r.bad("nms_kind", &v, line, "expected default, greedynms or diounms")),
        },
    };
    r.reject_f32_unless("delta_normalizer", 1.0, "GPU-only delta scaling")?;
    Ok(YoloCfg {
        classes,
        mask,
        anchors,
        jitter: r.f32("jitter", 0.2)?,
        resize: r.f32("resize", 1.0)?,
        scale_x_y: r.f32("scale_x_y", 1.0)?,
        cls_normalizer: r.f32("cls_normalizer", 1.0)?,
        iou_normalizer: r.f32("iou_normalizer", 0.75)?,
        obj_normalizer: r.f32("obj_normalizer", 1.0)?,
        iou_loss: iou_kind(r, "iou_loss", IouLoss::Mse, true)?,
        iou_thresh_kind: iou_kind(r, "iou_thresh_kind", IouLoss::Iou, false)?,
        ignore_thresh: r.f32("ignore_thresh", 0.5)?,
        truth_thresh: r.f32("truth_thresh", 1.0)?,
        iou_thresh: r.f32("iou_thresh", 1.0)?,
        random: r.f32("random", 0.0)?,
        label_smooth_eps: r.f32("label_smooth_eps", 0.0)?,
        focal_loss: r.flag("focal_loss", false)?,
        max_delta,
        new_coords: r.flag("new_coords", false)?,
        objectness_smooth: r.flag("objectness_smooth", false)?,
        max_boxes: r.positive("max", 200)?,
        nms_kind,
        beta_nms: r.f32("beta_nms", 0.6)?,
        counters_per_class,
    })
}
