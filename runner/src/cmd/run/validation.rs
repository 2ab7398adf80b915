//! What a validation leaves in the run folder: the epoch's record and per-class results, and of
//! the last validation the precision/recall/F1 curves, the confusion matrix and a few images with
//! the labelled objects beside the detections (drawn as `runner detect` draws them).

use std::path::Path;

use anyhow::{Context, Result};
use engine::data::image::RgbImage;
use engine::eval::{Bbox, MapReport};
use reports::annotate::{Annotation, annotate, annotate_truth};
use reports::validation::{ALL_CLASSES, BACKGROUND, curve_at};
use reports::{ClassRecord, ConfusionCell, CurvePoint, EpochRecord};

use super::lane::{DETECT_THRESH, Evaluation, Sample};

/// Validation images written after the last epoch, per backend.
pub const IMAGES: usize = 4;

/// Confidence thresholds of the curves: 0, 0.01, …, 1.
fn grid() -> Vec<f64> {
    (0..=100).map(|i| i as f64 / 100.0).collect()
}

fn name(names: &[String], class: usize) -> String {
    names.get(class).cloned().unwrap_or_else(|| class.to_string())
}

/// The epoch record and one record per class: AP@0.5 and AP@[.5:.95] (mean over IoU 0.50:0.05:0.95,
/// as Darknet's and COCO's), P/R/F1 at the detection threshold.
pub fn epoch_records(backend: &str, epoch: u64, ev: &Evaluation, names: &[String]) -> (EpochRecord, Vec<ClassRecord>) {
    let reports: Vec<MapReport> = (0..10).map(|i| ev.map.summary(0, (50 + 5 * i) as f32 / 100.0, DETECT_THRESH)).collect();
    let at50 = &reports[0];
    let e = EpochRecord {
        backend: backend.into(),
        epoch,
        map50: at50.map,
        map50_95: reports.iter().map(|r| r.map).sum::<f64>() / reports.len() as f64,
        precision: at50.precision,
        recall: at50.recall,
        f1: at50.f1,
        top1: ev.topk.map(|t| t.top1_accuracy()),
        top5: ev.topk.map(|t| t.topk_accuracy()),
    };
    let classes = at50
        .classes
        .iter()
        .map(|c| ClassRecord {
            backend: backend.into(),
            epoch,
            class: c.class as u64,
            name: name(names, c.class),
            truths: c.truths as u64,
            detections: c.detections as u64,
            ap50: c.ap,
            ap50_95: reports.iter().map(|r| r.classes[c.class].ap).sum::<f64>() / reports.len() as f64,
            precision: c.precision,
            recall: c.recall,
            f1: c.f1,
        })
        .collect();
    (e, classes)
}

/// Precision, recall and F1 over the confidence threshold per class (IoU 0.5), and their mean
/// over the classes that have labelled objects.
pub fn curves(backend: &str, ev: &Evaluation, names: &[String]) -> Vec<CurvePoint> {
    let grid = grid();
    let truths: Vec<u64> = ev.map.summary(0, 0.5, DETECT_THRESH).classes.iter().map(|c| c.truths as u64).collect();
    let mut out = Vec::new();
    let mut mean = vec![(0.0, 0.0, 0.0); grid.len()];
    let mut counted = 0usize;
    for (class, curve) in ev.map.pr_curves(0.5).iter().enumerate() {
        let ranked: Vec<(f64, u64, u64)> = curve.iter().map(|p| (p.prob as f64, p.tp as u64, p.fp as u64)).collect();
        let n = truths.get(class).copied().unwrap_or(0);
        let points = curve_at(&ranked, n, &grid);
        if n > 0 {
            counted += 1;
            for (m, p) in mean.iter_mut().zip(&points) {
                *m = (m.0 + p.1, m.1 + p.2, m.2 + p.3);
            }
        }
        out.extend(points.into_iter().map(|(confidence, precision, recall, f1)| CurvePoint {
            backend: backend.into(),
            class: class as i64,
            name: name(names, class),
            confidence,
            precision,
            recall,
            f1,
        }));
    }
    if counted > 0 {
        let k = counted as f64;
        out.extend(grid.iter().zip(mean).map(|(&confidence, (p, r, f))| CurvePoint {
            backend: backend.into(),
            class: ALL_CLASSES,
            name: "all classes".into(),
            confidence,
            precision: p / k,
            recall: r / k,
            f1: f / k,
        }));
    }
    out
}

/// The confusion matrix as cells (every cell, zeros included, so the table is the whole matrix).
pub fn confusion(backend: &str, ev: &Evaluation, names: &[String]) -> Vec<ConfusionCell> {
    let k = ev.confusion.classes();
    let label = |c: Option<usize>| c.map_or_else(|| BACKGROUND.to_string(), |c| name(names, c));
    let all = || (0..=k).map(move |i| (i < k).then_some(i));
    all()
        .flat_map(|t| all().map(move |p| (t, p)))
        .map(|(t, p)| ConfusionCell { backend: backend.into(), truth: label(t), predicted: label(p), count: ev.confusion.count(t, p) })
        .collect()
}

/// Writes `images/val_<i>_<backend>.png`: the image (enlarged to at least 256 px, nearest
/// neighbour, so labels stay legible) with its labelled objects, beside the same image with the
/// detections above the detection threshold.
pub fn write_images(run_dir: &Path, backend: &str, ev: &Evaluation, names: &[String]) -> Result<()> {
    let dir = run_dir.join(reports::IMAGES_DIR);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let safe: String = backend.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
    for (i, s) in ev.samples.iter().enumerate() {
        let path = dir.join(format!("val_{i}_{safe}.png"));
        side_by_side(s, ev.width, ev.height, names)?.save_png(&path)?;
    }
    Ok(())
}

fn side_by_side(s: &Sample, width: usize, height: usize, names: &[String]) -> Result<RgbImage> {
    let f = (256 / width.max(height).max(1)).max(1);
    let (w, h) = (width * f, height * f);
    let big = enlarge(&s.rgb, width, height, f);
    let to_px = |b: &Bbox| (((b.x - b.w / 2.0) * w as f32), ((b.y - b.h / 2.0) * h as f32), ((b.x + b.w / 2.0) * w as f32), ((b.y + b.h / 2.0) * h as f32));
    let boxes = |class: usize, confidence: f32, b: &Bbox| {
        let (left, top, right, bottom) = to_px(b);
        Annotation { class, confidence, left, top, right, bottom }
    };
    let truth: Vec<Annotation> = s.truths.iter().map(|t| boxes(t.class, 1.0, &t.bbox)).collect();
    let found: Vec<Annotation> = s
        .detections
        .iter()
        .filter_map(|d| {
            let (class, &p) = d.prob.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1))?;
            (p > DETECT_THRESH).then(|| boxes(class, p, &d.bbox))
        })
        .collect();
    let left = annotate_truth(w as u32, h as u32, &big, &truth, names)?.rgb;
    let right = annotate(w as u32, h as u32, &big, &found, names)?.rgb;
    // Both panels with an 8-pixel white gutter.
    let gutter = 8;
    let total = 2 * w + gutter;
    let mut data = vec![255u8; total * h * 3];
    for y in 0..h {
        let row = &mut data[y * total * 3..(y + 1) * total * 3];
        row[..w * 3].copy_from_slice(&left[y * w * 3..(y + 1) * w * 3]);
        row[(w + gutter) * 3..].copy_from_slice(&right[y * w * 3..(y + 1) * w * 3]);
    }
    Ok(RgbImage { width: total, height: h, data })
}

/// Nearest-neighbour enlargement by an integer factor.
fn enlarge(rgb: &[u8], width: usize, height: usize, f: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(rgb.len() * f * f);
    for y in 0..height * f {
        for x in 0..width * f {
            let i = ((y / f) * width + x / f) * 3;
            out.extend_from_slice(&rgb[i..i + 3]);
        }
    }
    out
}
