//! Records ⇄ polars DataFrames, and the Parquet/CSV files of a run folder.
//! Column names and order are part of the schema (SCHEMA.md, `SCHEMA_VERSION`).

use crate::ReportError;
use crate::deltas::DeltaRecord;
use crate::records::{EpochRecord, IterationRecord, MemorySample, RunSummary};
use polars::prelude::*;
use std::fs::File;
use std::path::Path;

pub const ITERATION_COLUMNS: &[&str] = &[
    "backend", "iteration", "epoch", "images", "loss", "box_loss", "obj_loss", "class_loss", "avg_iou",
    "recall50", "recall75", "count", "lr", "images_per_s", "step_s", "data_wait_s", "data_load_s",
    "host_forward_s", "host_backward_s", "host_update_s", "host_wait_s", "device_forward_s",
    "device_loss_s", "device_backward_s", "device_update_s", "device_other_s", "rss_bytes", "gpu_bytes",
    "loss_scale", "skipped",
];

/// Float columns of the iteration table (in order) and, for reading schema-2 folders, the name
/// the column had there.
const ITERATION_FLOATS: &[(&str, Option<&str>)] = &[
    ("loss", None),
    ("box_loss", None),
    ("obj_loss", None),
    ("class_loss", None),
    ("avg_iou", None),
    ("recall50", None),
    ("recall75", None),
    ("count", None),
    ("lr", None),
    ("images_per_s", None),
    ("data_wait_s", Some("t_data_s")),
    ("data_load_s", Some("t_data_s")),
    ("host_forward_s", Some("t_forward_s")),
    ("host_backward_s", Some("t_backward_s")),
    ("host_update_s", Some("t_update_s")),
    ("host_wait_s", Some("t_sync_s")),
];

/// Device time columns: empty (null) where nothing was timed.
const DEVICE_COLUMNS: [&str; 5] = ["device_forward_s", "device_loss_s", "device_backward_s", "device_update_s", "device_other_s"];
pub const EPOCH_COLUMNS: &[&str] =
    &["backend", "epoch", "map50", "map50_95", "precision", "recall", "f1", "top1", "top5"];
pub const MEMORY_COLUMNS: &[&str] = &["t_s", "rss_bytes", "swap_bytes", "gpu_bytes", "backend"];
pub const SUMMARY_COLUMNS: &[&str] = &["key", "value", "unit"];
pub const DELTA_COLUMNS: &[&str] = &[
    "backend", "reference", "iteration", "reference_loss", "loss", "abs_delta", "rel_delta",
    "rel_delta_window_mean",
];

/// The tables of a run folder, by file stem.
pub const TABLE_NAMES: &[&str] = &["iterations", "epochs", "memory", "summary", "deltas"];

pub(crate) fn col<T, P: ?Sized>(name: &str, values: T) -> Column
where
    Series: NamedFrom<T, P>,
{
    Column::new(name.into(), values)
}

pub(crate) fn frame(height: usize, columns: Vec<Column>) -> Result<DataFrame, ReportError> {
    Ok(DataFrame::new(height, columns)?)
}

pub fn iterations_frame(rows: &[IterationRecord]) -> Result<DataFrame, ReportError> {
    let f = |g: fn(&IterationRecord) -> f64| rows.iter().map(g).collect::<Vec<f64>>();
    let o = |g: fn(&IterationRecord) -> Option<f64>| rows.iter().map(g).collect::<Vec<Option<f64>>>();
    let u = |g: fn(&IterationRecord) -> u64| rows.iter().map(g).collect::<Vec<u64>>();
    frame(
        rows.len(),
        vec![
            col("backend", rows.iter().map(|r| r.backend.as_str()).collect::<Vec<_>>()),
            col("iteration", u(|r| r.iteration)),
            col("epoch", u(|r| r.epoch)),
            col("images", u(|r| r.images)),
            col("loss", f(|r| r.loss)),
            col("box_loss", f(|r| r.box_loss)),
            col("obj_loss", f(|r| r.obj_loss)),
            col("class_loss", f(|r| r.class_loss)),
            col("avg_iou", f(|r| r.avg_iou)),
            col("recall50", f(|r| r.recall50)),
            col("recall75", f(|r| r.recall75)),
            col("count", f(|r| r.count)),
            col("lr", f(|r| r.lr)),
            col("images_per_s", f(|r| r.images_per_s)),
            col("step_s", f(|r| r.step_s)),
            col("data_wait_s", f(|r| r.data_wait_s)),
            col("data_load_s", f(|r| r.data_load_s)),
            col("host_forward_s", f(|r| r.host_forward_s)),
            col("host_backward_s", f(|r| r.host_backward_s)),
            col("host_update_s", f(|r| r.host_update_s)),
            col("host_wait_s", f(|r| r.host_wait_s)),
            col("device_forward_s", o(|r| r.device_forward_s)),
            col("device_loss_s", o(|r| r.device_loss_s)),
            col("device_backward_s", o(|r| r.device_backward_s)),
            col("device_update_s", o(|r| r.device_update_s)),
            col("device_other_s", o(|r| r.device_other_s)),
            col("rss_bytes", u(|r| r.rss_bytes)),
            col("gpu_bytes", u(|r| r.gpu_bytes)),
            col("loss_scale", o(|r| r.loss_scale)),
            col("skipped", rows.iter().map(|r| r.skipped).collect::<Vec<bool>>()),
        ],
    )
}

pub fn epochs_frame(rows: &[EpochRecord]) -> Result<DataFrame, ReportError> {
    let f = |g: fn(&EpochRecord) -> f64| rows.iter().map(g).collect::<Vec<f64>>();
    frame(
        rows.len(),
        vec![
            col("backend", rows.iter().map(|r| r.backend.as_str()).collect::<Vec<_>>()),
            col("epoch", rows.iter().map(|r| r.epoch).collect::<Vec<u64>>()),
            col("map50", f(|r| r.map50)),
            col("map50_95", f(|r| r.map50_95)),
            col("precision", f(|r| r.precision)),
            col("recall", f(|r| r.recall)),
            col("f1", f(|r| r.f1)),
            col("top1", rows.iter().map(|r| r.top1).collect::<Vec<Option<f64>>>()),
            col("top5", rows.iter().map(|r| r.top5).collect::<Vec<Option<f64>>>()),
        ],
    )
}

pub fn memory_frame(rows: &[MemorySample]) -> Result<DataFrame, ReportError> {
    let u = |g: fn(&MemorySample) -> u64| rows.iter().map(g).collect::<Vec<u64>>();
    frame(
        rows.len(),
        vec![
            col("t_s", rows.iter().map(|r| r.t_s).collect::<Vec<f64>>()),
            col("rss_bytes", u(|r| r.rss_bytes)),
            col("swap_bytes", u(|r| r.swap_bytes)),
            col("gpu_bytes", u(|r| r.gpu_bytes)),
            col("backend", rows.iter().map(|r| r.backend.as_str()).collect::<Vec<_>>()),
        ],
    )
}

pub fn summary_frame(summary: &RunSummary) -> Result<DataFrame, ReportError> {
    let rows = summary.to_rows();
    frame(
        rows.len(),
        vec![
            col("key", rows.iter().map(|r| r.0.as_str()).collect::<Vec<_>>()),
            col("value", rows.iter().map(|r| r.1.as_str()).collect::<Vec<_>>()),
            col("unit", rows.iter().map(|r| r.2).collect::<Vec<_>>()),
        ],
    )
}

pub fn deltas_frame(rows: &[DeltaRecord]) -> Result<DataFrame, ReportError> {
    let f = |g: fn(&DeltaRecord) -> f64| rows.iter().map(g).collect::<Vec<f64>>();
    frame(
        rows.len(),
        vec![
            col("backend", rows.iter().map(|r| r.backend.as_str()).collect::<Vec<_>>()),
            col("reference", rows.iter().map(|r| r.reference.as_str()).collect::<Vec<_>>()),
            col("iteration", rows.iter().map(|r| r.iteration).collect::<Vec<u64>>()),
            col("reference_loss", f(|r| r.reference_loss)),
            col("loss", f(|r| r.loss)),
            col("abs_delta", f(|r| r.abs_delta)),
            col("rel_delta", f(|r| r.rel_delta)),
            col("rel_delta_window_mean", f(|r| r.rel_delta_window_mean)),
        ],
    )
}

// Reading: every column is cast to the schema's type, so CSV-inferred types (i64 for counts) also work.

pub(crate) fn f64s(df: &DataFrame, name: &str) -> Result<Vec<f64>, ReportError> {
    let c = df.column(name)?.cast(&DataType::Float64)?;
    Ok(c.f64()?.iter().map(|v| v.unwrap_or(f64::NAN)).collect())
}

/// The values of an integer column, which may have no missing value.
fn required<T>(values: impl Iterator<Item = Option<T>>, name: &str) -> Result<Vec<T>, ReportError> {
    values.map(|v| v.ok_or_else(|| ReportError::Schema(format!("column `{name}` has a missing value")))).collect()
}

pub(crate) fn u64s(df: &DataFrame, name: &str) -> Result<Vec<u64>, ReportError> {
    let c = df.column(name)?.cast(&DataType::UInt64)?;
    required(c.u64()?.iter(), name)
}

pub(crate) fn i64s(df: &DataFrame, name: &str) -> Result<Vec<i64>, ReportError> {
    let c = df.column(name)?.cast(&DataType::Int64)?;
    required(c.i64()?.iter(), name)
}

pub(crate) fn strs(df: &DataFrame, name: &str) -> Result<Vec<String>, ReportError> {
    let c = df.column(name)?.cast(&DataType::String)?;
    Ok(c.str()?.iter().map(|v| v.unwrap_or("").to_string()).collect())
}

/// Nullable floats: `None` where the table holds no value.
fn opt_f64s(df: &DataFrame, name: &str) -> Result<Vec<Option<f64>>, ReportError> {
    let c = df.column(name)?.cast(&DataType::Float64)?;
    Ok(c.f64()?.iter().collect())
}

/// A boolean column (missing values read as false).
fn bools(df: &DataFrame, name: &str) -> Result<Vec<bool>, ReportError> {
    let c = df.column(name)?.cast(&DataType::Boolean)?;
    Ok(c.bool()?.iter().map(|v| v.unwrap_or(false)).collect())
}

fn has(df: &DataFrame, name: &str) -> bool {
    df.get_column_names().iter().any(|c| c.as_str() == name)
}

/// Reads the iteration table; also a schema-2 table (its `t_*` columns under their new names,
/// no device times, images and step time derived from images/s and the phases).
pub fn iterations_from_frame(df: &DataFrame) -> Result<Vec<IterationRecord>, ReportError> {
    let backend = strs(df, "backend")?;
    let (iteration, epoch) = (u64s(df, "iteration")?, u64s(df, "epoch")?);
    let (rss, gpu) = (u64s(df, "rss_bytes")?, u64s(df, "gpu_bytes")?);
    let fl: Vec<Vec<f64>> = ITERATION_FLOATS
        .iter()
        .map(|(n, old)| match old {
            Some(old) if !has(df, n) => f64s(df, old),
            _ => f64s(df, n),
        })
        .collect::<Result<_, _>>()?;
    let n = df.height();
    let step = if has(df, "step_s") { f64s(df, "step_s")? } else { (0..n).map(|i| fl[12][i] + fl[13][i] + fl[14][i] + fl[15][i]).collect() };
    let images = if has(df, "images") { u64s(df, "images")? } else { (0..n).map(|i| (fl[9][i] * step[i]).round().max(0.0) as u64).collect() };
    let device: Vec<Vec<Option<f64>>> = DEVICE_COLUMNS
        .iter()
        .map(|c| if has(df, c) { opt_f64s(df, c) } else { Ok(vec![None; n]) })
        .collect::<Result<_, _>>()?;
    // Folders written before mixed precision have neither column.
    let loss_scale = if has(df, "loss_scale") { opt_f64s(df, "loss_scale")? } else { vec![None; n] };
    let skipped = if has(df, "skipped") { bools(df, "skipped")? } else { vec![false; n] };
    Ok((0..n)
        .map(|i| IterationRecord {
            backend: backend[i].clone(),
            iteration: iteration[i],
            epoch: epoch[i],
            images: images[i],
            loss: fl[0][i],
            box_loss: fl[1][i],
            obj_loss: fl[2][i],
            class_loss: fl[3][i],
            avg_iou: fl[4][i],
            recall50: fl[5][i],
            recall75: fl[6][i],
            count: fl[7][i],
            lr: fl[8][i],
            images_per_s: fl[9][i],
            step_s: step[i],
            data_wait_s: fl[10][i],
            data_load_s: fl[11][i],
            host_forward_s: fl[12][i],
            host_backward_s: fl[13][i],
            host_update_s: fl[14][i],
            host_wait_s: fl[15][i],
            device_forward_s: device[0][i],
            device_loss_s: device[1][i],
            device_backward_s: device[2][i],
            device_update_s: device[3][i],
            device_other_s: device[4][i],
            rss_bytes: rss[i],
            gpu_bytes: gpu[i],
            loss_scale: loss_scale[i],
            skipped: skipped[i],
        })
        .collect())
}

pub fn epochs_from_frame(df: &DataFrame) -> Result<Vec<EpochRecord>, ReportError> {
    let backend = strs(df, "backend")?;
    let epoch = u64s(df, "epoch")?;
    let fl: Vec<Vec<f64>> =
        EPOCH_COLUMNS[2..7].iter().map(|n| f64s(df, n)).collect::<Result<_, _>>()?;
    // Folders written before classifiers have no accuracy columns.
    let acc: Vec<Vec<Option<f64>>> =
        ["top1", "top5"].iter().map(|c| if has(df, c) { opt_f64s(df, c) } else { Ok(vec![None; df.height()]) }).collect::<Result<_, _>>()?;
    Ok((0..df.height())
        .map(|i| EpochRecord {
            backend: backend[i].clone(),
            epoch: epoch[i],
            map50: fl[0][i],
            map50_95: fl[1][i],
            precision: fl[2][i],
            recall: fl[3][i],
            f1: fl[4][i],
            top1: acc[0][i],
            top5: acc[1][i],
        })
        .collect())
}

pub fn memory_from_frame(df: &DataFrame) -> Result<Vec<MemorySample>, ReportError> {
    let t = f64s(df, "t_s")?;
    let (rss, swap, gpu) = (u64s(df, "rss_bytes")?, u64s(df, "swap_bytes")?, u64s(df, "gpu_bytes")?);
    // Schema 2 had no `backend` column (no per-backend windows).
    let backend = if has(df, "backend") { strs(df, "backend")? } else { vec![String::new(); df.height()] };
    Ok((0..df.height())
        .map(|i| MemorySample { t_s: t[i], rss_bytes: rss[i], swap_bytes: swap[i], gpu_bytes: gpu[i], backend: backend[i].clone() })
        .collect())
}

pub fn deltas_from_frame(df: &DataFrame) -> Result<Vec<DeltaRecord>, ReportError> {
    let backend = strs(df, "backend")?;
    let reference = strs(df, "reference")?;
    let iteration = u64s(df, "iteration")?;
    let fl: Vec<Vec<f64>> =
        DELTA_COLUMNS[3..].iter().map(|n| f64s(df, n)).collect::<Result<_, _>>()?;
    Ok((0..df.height())
        .map(|i| DeltaRecord {
            backend: backend[i].clone(),
            reference: reference[i].clone(),
            iteration: iteration[i],
            reference_loss: fl[0][i],
            loss: fl[1][i],
            abs_delta: fl[2][i],
            rel_delta: fl[3][i],
            rel_delta_window_mean: fl[4][i],
        })
        .collect())
}

fn io_err(path: &Path, e: std::io::Error) -> ReportError {
    ReportError::Io { path: path.display().to_string(), error: e }
}

fn polars_err(path: &Path, e: PolarsError) -> ReportError {
    ReportError::Table { path: path.display().to_string(), message: e.to_string() }
}

pub fn write_parquet(df: &mut DataFrame, path: &Path) -> Result<(), ReportError> {
    let file = File::create(path).map_err(|e| io_err(path, e))?;
    ParquetWriter::new(file).finish(df).map_err(|e| polars_err(path, e))?;
    Ok(())
}

pub fn write_csv(df: &mut DataFrame, path: &Path) -> Result<(), ReportError> {
    let file = File::create(path).map_err(|e| io_err(path, e))?;
    CsvWriter::new(file).include_header(true).finish(df).map_err(|e| polars_err(path, e))
}

pub fn read_parquet(path: &Path) -> Result<DataFrame, ReportError> {
    let file = File::open(path).map_err(|e| io_err(path, e))?;
    ParquetReader::new(file).finish().map_err(|e| polars_err(path, e))
}

/// Reads a CSV table. Only whole lines count: a last line without its line break (a run killed
/// while appending it) is left out.
pub fn read_csv(path: &Path) -> Result<DataFrame, ReportError> {
    let mut bytes = std::fs::read(path).map_err(|e| io_err(path, e))?;
    let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    bytes.truncate(whole);
    if bytes.is_empty() {
        return Err(ReportError::Table { path: path.display().to_string(), message: "no header line".into() });
    }
    CsvReadOptions::default()
        .with_has_header(true)
        .with_infer_schema_length(None)
        .into_reader_with_file_handle(std::io::Cursor::new(bytes))
        .finish()
        .map_err(|e| polars_err(path, e))
}

/// Whether `dir/<stem>.parquet` or `dir/<stem>.csv` exists.
pub fn table_exists(dir: &Path, stem: &str) -> bool {
    dir.join(format!("{stem}.parquet")).exists() || dir.join(format!("{stem}.csv")).exists()
}

/// Reads `dir/<stem>.parquet`, or `dir/<stem>.csv` when the run was written without Parquet.
pub fn read_table(dir: &Path, stem: &str) -> Result<DataFrame, ReportError> {
    let pq = dir.join(format!("{stem}.parquet"));
    if pq.exists() { read_parquet(&pq) } else { read_csv(&dir.join(format!("{stem}.csv"))) }
}
