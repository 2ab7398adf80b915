//! Run reports: tables (polars → Parquet + CSV), charts (plotters → PNG + SVG with an embedded
//! font), a self-contained HTML report, gate outputs (JSON, JUnit, Markdown) and run comparison.
//!
//! Layout of a run folder and every column: reports/SCHEMA.md (versioned by [`SCHEMA_VERSION`]).

pub mod annotate;
pub mod charts;
pub mod compare;
pub mod deltas;
pub mod demo;
pub mod divergence;
pub mod gate;
pub mod html;
pub mod kernels;
pub mod journal;
pub mod records;
pub mod run_data;
pub mod run_dir;
pub mod tables;
pub mod validation;

pub use compare::{Comparison, MetricChange, compare, compare_dirs};
pub use deltas::{DeltaRecord, compute_deltas};
pub use gate::GateReport;
pub use records::{
    BackendSummary, DeviceInfo, EpochRecord, GateResult, IterationRecord, MemorySample,
    ParityLimits, PhaseTimes, ResumedFrom, RunStatus, RunSummary,
};
pub use gate::Verdict;
pub use journal::Journal;
pub use run_dir::{
    IMAGES_DIR, OutputFormats, RunFiles, read_run, read_run_with_history, render_run, with_history, write_run,
    write_summary, write_tables,
};
pub use run_data::RunData;
pub use validation::{ClassRecord, ConfusionCell, CurvePoint, Validation};

/// Version of the run-folder schema (tables, summary.json, gate.json). Bump on any
/// incompatible change (renamed/removed column, changed unit) and note it in SCHEMA.md.
pub const SCHEMA_VERSION: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The OS error is part of the message and deliberately not a `source()`: printed with its
    /// chain (`{:#}`) it would otherwise say "No such file or directory" twice.
    #[error("{path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("{path}: {message}")]
    Table { path: String, message: String },
    #[error("table: {0}")]
    Polars(#[from] polars::prelude::PolarsError),
    #[error("schema: {0}")]
    Schema(String),
    #[error("chart {name}: {message}")]
    Chart { name: String, message: String },
    #[error("{path}: {message}")]
    Json { path: String, message: String },
    /// A bad argument (e.g. a noise margin), as one line.
    #[error("{0}")]
    Argument(String),
}
