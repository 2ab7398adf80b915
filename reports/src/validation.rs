//! What a validation shows beyond mAP: per-class results of every evaluated epoch (`classes`),
//! and of the last validation per backend the precision/recall/F1 curves over the confidence
//! threshold (`curves`) and the confusion matrix (`confusion`). Tables in SCHEMA.md.

use crate::tables::{col, f64s, frame, i64s, strs, u64s};
use crate::{ReportError, tables};
use polars::prelude::DataFrame;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// One class after one epoch's validation of one backend.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ClassRecord {
    pub backend: String,
    pub epoch: u64,
    pub class: u64,
    /// The class name from the dataset (`.names` or the synthetic shapes).
    pub name: String,
    /// Labelled objects of the class in the validation split.
    pub truths: u64,
    /// Candidate detections of the class (probability > 0 after NMS).
    pub detections: u64,
    /// Average precision at IoU 0.5 (0..1), as `darknet detector map` prints per class.
    pub ap50: f64,
    /// AP averaged over IoU 0.50:0.05:0.95.
    pub ap50_95: f64,
    /// At the detection threshold 0.25 (0..1).
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

/// The value of `class` for curve points over all classes (their mean).
pub const ALL_CLASSES: i64 = -1;

/// One point of a class's curves at one confidence threshold (last validation of a backend).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    pub backend: String,
    /// Class index, or [`ALL_CLASSES`] for the mean over classes.
    pub class: i64,
    pub name: String,
    /// Detections with probability above this count (0..1).
    pub confidence: f64,
    /// Precision of those detections (1 where there are none), at IoU 0.5.
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

/// One cell of a confusion matrix (last validation of a backend).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ConfusionCell {
    pub backend: String,
    /// The labelled class, or "background" for a detection that matched no object.
    pub truth: String,
    /// The detected class, or "background" for an object no detection matched.
    pub predicted: String,
    pub count: u64,
}

/// Row and column name of unmatched objects and detections.
pub const BACKGROUND: &str = "background";

pub const CLASS_COLUMNS: &[&str] =
    &["backend", "epoch", "class", "name", "truths", "detections", "ap50", "ap50_95", "precision", "recall", "f1"];
pub const CURVE_COLUMNS: &[&str] = &["backend", "class", "name", "confidence", "precision", "recall", "f1"];
pub const CONFUSION_COLUMNS: &[&str] = &["backend", "truth", "predicted", "count"];

/// The validation tables of a run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Validation {
    pub classes: Vec<ClassRecord>,
    pub curves: Vec<CurvePoint>,
    pub confusion: Vec<ConfusionCell>,
}

impl Validation {
    pub fn is_empty(&self) -> bool {
        self.classes.is_empty() && self.curves.is_empty() && self.confusion.is_empty()
    }
}

pub fn classes_frame(rows: &[ClassRecord]) -> Result<DataFrame, ReportError> {
    let f = |g: fn(&ClassRecord) -> f64| rows.iter().map(g).collect::<Vec<f64>>();
    let u = |g: fn(&ClassRecord) -> u64| rows.iter().map(g).collect::<Vec<u64>>();
    let s = |g: fn(&ClassRecord) -> &str| rows.iter().map(g).collect::<Vec<&str>>();
    frame(
        rows.len(),
        vec![
            col("backend", s(|r| &r.backend)),
            col("epoch", u(|r| r.epoch)),
            col("class", u(|r| r.class)),
            col("name", s(|r| &r.name)),
            col("truths", u(|r| r.truths)),
            col("detections", u(|r| r.detections)),
            col("ap50", f(|r| r.ap50)),
            col("ap50_95", f(|r| r.ap50_95)),
            col("precision", f(|r| r.precision)),
            col("recall", f(|r| r.recall)),
            col("f1", f(|r| r.f1)),
        ],
    )
}

pub fn curves_frame(rows: &[CurvePoint]) -> Result<DataFrame, ReportError> {
    let f = |g: fn(&CurvePoint) -> f64| rows.iter().map(g).collect::<Vec<f64>>();
    let s = |g: fn(&CurvePoint) -> &str| rows.iter().map(g).collect::<Vec<&str>>();
    frame(
        rows.len(),
        vec![
            col("backend", s(|r| &r.backend)),
            col("class", rows.iter().map(|r| r.class).collect::<Vec<i64>>()),
            col("name", s(|r| &r.name)),
            col("confidence", f(|r| r.confidence)),
            col("precision", f(|r| r.precision)),
            col("recall", f(|r| r.recall)),
            col("f1", f(|r| r.f1)),
        ],
    )
}

pub fn confusion_frame(rows: &[ConfusionCell]) -> Result<DataFrame, ReportError> {
    let s = |g: fn(&ConfusionCell) -> &str| rows.iter().map(g).collect::<Vec<&str>>();
    frame(
        rows.len(),
        vec![
            col("backend", s(|r| &r.backend)),
            col("truth", s(|r| &r.truth)),
            col("predicted", s(|r| &r.predicted)),
            col("count", rows.iter().map(|r| r.count).collect::<Vec<u64>>()),
        ],
    )
}

pub fn classes_from_frame(df: &DataFrame) -> Result<Vec<ClassRecord>, ReportError> {
    let (backend, name) = (strs(df, "backend")?, strs(df, "name")?);
    let (epoch, class, truths, detections) = (u64s(df, "epoch")?, u64s(df, "class")?, u64s(df, "truths")?, u64s(df, "detections")?);
    let fl: Vec<Vec<f64>> = CLASS_COLUMNS[6..].iter().map(|n| f64s(df, n)).collect::<Result<_, _>>()?;
    Ok((0..df.height())
        .map(|i| ClassRecord {
            backend: backend[i].clone(),
            epoch: epoch[i],
            class: class[i],
            name: name[i].clone(),
            truths: truths[i],
            detections: detections[i],
            ap50: fl[0][i],
            ap50_95: fl[1][i],
            precision: fl[2][i],
            recall: fl[3][i],
            f1: fl[4][i],
        })
        .collect())
}

pub fn curves_from_frame(df: &DataFrame) -> Result<Vec<CurvePoint>, ReportError> {
    let (backend, name, class) = (strs(df, "backend")?, strs(df, "name")?, i64s(df, "class")?);
    let fl: Vec<Vec<f64>> = CURVE_COLUMNS[3..].iter().map(|n| f64s(df, n)).collect::<Result<_, _>>()?;
    Ok((0..df.height())
        .map(|i| CurvePoint {
            backend: backend[i].clone(),
            class: class[i],
            name: name[i].clone(),
            confidence: fl[0][i],
            precision: fl[1][i],
            recall: fl[2][i],
            f1: fl[3][i],
        })
        .collect())
}

pub fn confusion_from_frame(df: &DataFrame) -> Result<Vec<ConfusionCell>, ReportError> {
    let (backend, truth, predicted, count) = (strs(df, "backend")?, strs(df, "truth")?, strs(df, "predicted")?, u64s(df, "count")?);
    Ok((0..df.height())
        .map(|i| ConfusionCell { backend: backend[i].clone(), truth: truth[i].clone(), predicted: predicted[i].clone(), count: count[i] })
        .collect())
}

/// Writes the three tables (those with rows) into `tdir`; returns the files written.
pub fn write_validation(tdir: &Path, v: &Validation, parquet: bool, csv: bool) -> Result<Vec<PathBuf>, ReportError> {
    let mut files = Vec::new();
    let frames = [
        ("classes", v.classes.is_empty(), classes_frame(&v.classes)?),
        ("curves", v.curves.is_empty(), curves_frame(&v.curves)?),
        ("confusion", v.confusion.is_empty(), confusion_frame(&v.confusion)?),
    ];
    for (stem, empty, mut df) in frames {
        if empty {
            continue;
        }
        if parquet {
            let p = tdir.join(format!("{stem}.parquet"));
            tables::write_parquet(&mut df, &p)?;
            files.push(p);
        }
        if csv {
            let p = tdir.join(format!("{stem}.csv"));
            tables::write_csv(&mut df, &p)?;
            files.push(p);
        }
    }
    Ok(files)
}

/// Reads whichever of the three tables `tdir` holds (a run without validation has none).
pub fn read_validation(tdir: &Path) -> Result<Validation, ReportError> {
    let read = |stem: &str| tables::table_exists(tdir, stem).then(|| tables::read_table(tdir, stem)).transpose();
    Ok(Validation {
        classes: read("classes")?.map(|df| classes_from_frame(&df)).transpose()?.unwrap_or_default(),
        curves: read("curves")?.map(|df| curves_from_frame(&df)).transpose()?.unwrap_or_default(),
        confusion: read("confusion")?.map(|df| confusion_from_frame(&df)).transpose()?.unwrap_or_default(),
    })
}

/// Precision, recall and F1 of rank-ordered detections at each confidence of `grid`:
/// `ranked` holds (probability, cumulative true positives, cumulative false positives) in
/// descending probability; `truths` the labelled objects. No detection above a threshold gives
/// precision 1 and recall 0 (the curve's start), as Ultralytics draws it.
pub fn curve_at(ranked: &[(f64, u64, u64)], truths: u64, grid: &[f64]) -> Vec<(f64, f64, f64, f64)> {
    grid.iter()
        .map(|&c| {
            let above = ranked.partition_point(|r| r.0 > c);
            let (p, r) = match above.checked_sub(1).map(|i| ranked[i]) {
                Some((_, tp, fp)) => (tp as f64 / (tp + fp).max(1) as f64, if truths > 0 { tp as f64 / truths as f64 } else { 0.0 }),
                None => (1.0, 0.0),
            };
            let f1 = if p + r > 0.0 { 2.0 * p * r / (p + r) } else { 0.0 };
            (c, p, r, f1)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curve_counts_detections_above_each_threshold() {
        // Three detections: 0.9 TP, 0.6 FP, 0.3 TP; four objects.
        let ranked = [(0.9, 1, 0), (0.6, 1, 1), (0.3, 2, 1)];
        let c = curve_at(&ranked, 4, &[0.0, 0.5, 0.95]);
        assert_eq!(c[0], (0.0, 2.0 / 3.0, 0.5, 2.0 * (2.0 / 3.0) * 0.5 / (2.0 / 3.0 + 0.5)));
        assert_eq!((c[1].1, c[1].2), (0.5, 0.25));
        assert_eq!((c[2].1, c[2].2, c[2].3), (1.0, 0.0, 0.0));
    }

    #[test]
    fn tables_round_trip() {
        let dir = std::env::temp_dir().join(format!("validation-rt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let v = Validation {
            classes: vec![ClassRecord { backend: "cpu".into(), epoch: 2, class: 1, name: "square".into(), truths: 9, detections: 30, ap50: 0.8, ap50_95: 0.4, precision: 0.7, recall: 0.6, f1: 0.65 }],
            curves: vec![CurvePoint { backend: "gpu".into(), class: ALL_CLASSES, name: "all".into(), confidence: 0.25, precision: 0.5, recall: 0.5, f1: 0.5 }],
            confusion: vec![ConfusionCell { backend: "cpu".into(), truth: "square".into(), predicted: BACKGROUND.into(), count: 3 }],
        };
        write_validation(&dir, &v, false, true).unwrap();
        assert_eq!(read_validation(&dir).unwrap(), v);
        write_validation(&dir, &v, true, false).unwrap();
        assert_eq!(read_validation(&dir).unwrap(), v);
        std::fs::remove_dir_all(&dir).ok();
    }
}
