//! Records written as a run goes: `tables/iterations.csv` and `tables/epochs.csv` get one line per
//! record, appended, and reach the operating system at least every [`FLUSH_EVERY`] iterations and
//! at every [`Journal::flush`] (the runner flushes at checkpoints and epochs). A process killed
//! with SIGKILL therefore leaves tables that `runner report` reads back (a line cut in the middle
//! by the kill is dropped on reading). At the end of a run `write_tables` replaces them with the
//! full tables (Parquet and/or CSV) from memory.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::ReportError;
use crate::records::{EpochRecord, IterationRecord};
use crate::tables::{EPOCH_COLUMNS, ITERATION_COLUMNS};

/// Iterations between two flushes (a line per backend each).
pub const FLUSH_EVERY: usize = 10;

struct Table {
    path: PathBuf,
    out: BufWriter<File>,
}

impl Table {
    fn create(path: PathBuf, columns: &[&str]) -> Result<Table, ReportError> {
        let file = File::create(&path).map_err(|e| ReportError::Io { path: path.display().to_string(), error: e })?;
        let mut t = Table { path, out: BufWriter::new(file) };
        t.line(&columns.iter().map(|c| c.to_string()).collect::<Vec<_>>())?;
        Ok(t)
    }

    fn line(&mut self, fields: &[String]) -> Result<(), ReportError> {
        let text = fields.iter().map(|f| csv_field(f)).collect::<Vec<_>>().join(",") + "\n";
        self.out.write_all(text.as_bytes()).map_err(|e| self.io(e))
    }

    fn flush(&mut self) -> Result<(), ReportError> {
        self.out.flush().map_err(|e| self.io(e))
    }

    fn io(&self, e: std::io::Error) -> ReportError {
        ReportError::Io { path: self.path.display().to_string(), error: e }
    }
}

/// A CSV field, quoted when it holds a comma, a quote or a line break (RFC 4180).
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_string() }
}

/// The appended tables of one run folder.
pub struct Journal {
    iterations: Table,
    epochs: Table,
    /// Iteration lines written since the last flush.
    pending: usize,
}

impl Journal {
    /// Creates `dir/tables/iterations.csv` and `epochs.csv` with their header lines.
    pub fn create(dir: &Path) -> Result<Journal, ReportError> {
        let tdir = dir.join("tables");
        std::fs::create_dir_all(&tdir).map_err(|e| ReportError::Io { path: tdir.display().to_string(), error: e })?;
        let mut j = Journal {
            iterations: Table::create(tdir.join("iterations.csv"), ITERATION_COLUMNS)?,
            epochs: Table::create(tdir.join("epochs.csv"), EPOCH_COLUMNS)?,
            pending: 0,
        };
        j.flush()?;
        Ok(j)
    }

    /// Appends one iteration record; flushes every [`FLUSH_EVERY`] lines per backend.
    pub fn iteration(&mut self, r: &IterationRecord, backends: usize) -> Result<(), ReportError> {
        self.iterations.line(&iteration_fields(r))?;
        self.pending += 1;
        if self.pending >= FLUSH_EVERY * backends.max(1) {
            self.flush()?;
        }
        Ok(())
    }

    /// Appends one epoch record and flushes (epochs are rare and precious).
    pub fn epoch(&mut self, r: &EpochRecord) -> Result<(), ReportError> {
        self.epochs.line(&epoch_fields(r))?;
        self.flush()
    }

    /// Hands everything written so far to the operating system.
    pub fn flush(&mut self) -> Result<(), ReportError> {
        self.pending = 0;
        self.iterations.flush()?;
        self.epochs.flush()
    }
}

/// Floats in Rust's shortest round-trip form (`NaN`, `inf` included), which the reader parses back
/// to the same bits.
fn f(v: f64) -> String {
    format!("{v}")
}

/// An optional float: empty where there is no value (read back as null).
fn opt(v: Option<f64>) -> String {
    v.map(f).unwrap_or_default()
}

/// One iteration record as CSV fields, in [`ITERATION_COLUMNS`] order.
pub fn iteration_fields(r: &IterationRecord) -> Vec<String> {
    vec![
        r.backend.clone(),
        r.iteration.to_string(),
        r.epoch.to_string(),
        r.images.to_string(),
        f(r.loss),
        f(r.box_loss),
        f(r.obj_loss),
        f(r.class_loss),
        f(r.avg_iou),
        f(r.recall50),
        f(r.recall75),
        f(r.count),
        f(r.lr),
        f(r.images_per_s),
        f(r.step_s),
        f(r.data_wait_s),
        f(r.data_load_s),
        f(r.host_forward_s),
        f(r.host_backward_s),
        f(r.host_update_s),
        f(r.host_wait_s),
        opt(r.device_forward_s),
        opt(r.device_loss_s),
        opt(r.device_backward_s),
        opt(r.device_update_s),
        opt(r.device_other_s),
        r.rss_bytes.to_string(),
        r.gpu_bytes.to_string(),
        opt(r.loss_scale),
        r.skipped.to_string(),
    ]
}

/// One epoch record as CSV fields, in [`EPOCH_COLUMNS`] order.
pub fn epoch_fields(r: &EpochRecord) -> Vec<String> {
    vec![
        r.backend.clone(),
        r.epoch.to_string(),
        f(r.map50),
        f(r.map50_95),
        f(r.precision),
        f(r.recall),
        f(r.f1),
        opt(r.top1),
        opt(r.top5),
    ]
}
