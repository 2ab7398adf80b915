//! A run folder: writing every output of a run, and reading it back for `runner report RUN_DIR`.
//!
//! ```text
//! RUN_DIR/experiment.toml   summary.json   gate.json   junit.xml   gate.md   report.html
//! RUN_DIR/tables/{iterations,epochs,memory,summary,deltas,kernels,classes,curves,confusion}.{parquet,csv}
//! RUN_DIR/charts/<chart>.{png,svg}     (charts::NAMES)
//! RUN_DIR/images/val_<i>_<backend>.png (validation images: labels beside predictions)
//! ```

use crate::deltas::compute_deltas;
use crate::gate::GateReport;
use crate::kernels::{read_kernels, write_kernels};
use crate::records::{EpochRecord, IterationRecord, RunSummary};
use crate::validation::{read_validation, write_validation};
use crate::run_data::RunData;
use crate::{ReportError, SCHEMA_VERSION, charts, html, tables};
use polars::prelude::DataFrame;
use std::path::{Path, PathBuf};

/// Folder of the validation images (`val_<i>_<backend>.png`), embedded in the report.
pub const IMAGES_DIR: &str = "images";

/// Output format names accepted in an experiment's `[report] formats`.
pub const FORMAT_NAMES: &[&str] = &["parquet", "csv", "png", "svg", "html", "json", "junit", "markdown"];

/// Which files to write. summary.json is always written (it is what `read_run` needs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutputFormats {
    pub parquet: bool,
    pub csv: bool,
    pub png: bool,
    pub svg: bool,
    pub html: bool,
    /// gate.json
    pub json: bool,
    /// junit.xml
    pub junit: bool,
    /// gate.md
    pub markdown: bool,
}

impl OutputFormats {
    pub fn all() -> Self {
        OutputFormats { parquet: true, csv: true, png: true, svg: true, html: true, json: true, junit: true, markdown: true }
    }

    pub fn none() -> Self {
        OutputFormats { parquet: false, csv: false, png: false, svg: false, html: false, json: false, junit: false, markdown: false }
    }

    /// From `FORMAT_NAMES` entries; an unknown name is returned as the error.
    pub fn from_names<S: AsRef<str>>(names: &[S]) -> Result<Self, String> {
        let mut f = Self::none();
        for n in names {
            match n.as_ref() {
                "parquet" => f.parquet = true,
                "csv" => f.csv = true,
                "png" => f.png = true,
                "svg" => f.svg = true,
                "html" => f.html = true,
                "json" => f.json = true,
                "junit" => f.junit = true,
                "markdown" => f.markdown = true,
                other => return Err(other.to_string()),
            }
        }
        Ok(f)
    }
}

impl Default for OutputFormats {
    fn default() -> Self {
        Self::all()
    }
}

/// The files a write produced.
#[derive(Clone, Debug, Default)]
pub struct RunFiles {
    pub files: Vec<PathBuf>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ReportError + '_ {
    move |e| ReportError::Io { path: path.display().to_string(), error: e }
}

fn write_text(path: PathBuf, text: &str, files: &mut RunFiles) -> Result<(), ReportError> {
    std::fs::write(&path, text).map_err(io(&path))?;
    files.files.push(path);
    Ok(())
}

fn to_json<T: serde::Serialize>(value: &T, path: &Path) -> Result<String, ReportError> {
    serde_json::to_string_pretty(value)
        .map_err(|e| ReportError::Json { path: path.display().to_string(), message: e.to_string() })
}

/// Writes tables, summary.json, experiment.toml, then everything [`render_run`] writes.
pub fn write_run(dir: &Path, run: &RunData, formats: OutputFormats) -> Result<RunFiles, ReportError> {
    let mut files = write_tables(dir, run, formats)?;
    files.files.extend(render_run(dir, run, formats)?.files);
    Ok(files)
}

/// Writes summary.json alone (a run writes it when training starts, with status `running`, so a
/// killed run's folder can still be read back).
pub fn write_summary(dir: &Path, summary: &RunSummary) -> Result<PathBuf, ReportError> {
    let p = dir.join("summary.json");
    let text = to_json(summary, &p)?;
    // Through a temporary file and a rename: a kill during the write leaves the previous one.
    let tmp = dir.join("summary.json.partial");
    std::fs::write(&tmp, text).map_err(io(&tmp))?;
    std::fs::rename(&tmp, &p).map_err(io(&p))?;
    Ok(p)
}

/// Writes the tables, summary.json and experiment.toml (what [`read_run`] reads back).
pub fn write_tables(dir: &Path, run: &RunData, formats: OutputFormats) -> Result<RunFiles, ReportError> {
    let mut files = RunFiles::default();
    let tdir = dir.join("tables");
    std::fs::create_dir_all(&tdir).map_err(io(&tdir))?;
    let frames: [(&str, DataFrame); 5] = [
        ("iterations", tables::iterations_frame(&run.iterations)?),
        ("epochs", tables::epochs_frame(&run.epochs)?),
        ("memory", tables::memory_frame(&run.memory)?),
        ("summary", tables::summary_frame(&run.summary)?),
        ("deltas", tables::deltas_frame(&run.deltas)?),
    ];
    for (stem, mut df) in frames {
        if formats.parquet {
            let p = tdir.join(format!("{stem}.parquet"));
            tables::write_parquet(&mut df, &p)?;
            files.files.push(p);
        }
        if formats.csv {
            let p = tdir.join(format!("{stem}.csv"));
            tables::write_csv(&mut df, &p)?;
            files.files.push(p);
        }
    }
    if !run.kernels.is_empty() {
        files.files.extend(write_kernels(&tdir, &run.kernels, formats.parquet, formats.csv)?);
    }
    files.files.extend(write_validation(&tdir, &run.validation, formats.parquet, formats.csv)?);
    files.files.push(write_summary(dir, &run.summary)?);
    write_text(dir.join("experiment.toml"), &run.experiment_toml, &mut files)?;
    Ok(files)
}

/// Writes charts, gate outputs and report.html (no tables): what `runner report` regenerates.
pub fn render_run(dir: &Path, run: &RunData, formats: OutputFormats) -> Result<RunFiles, ReportError> {
    let mut files = RunFiles::default();
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let cdir = dir.join("charts");
    let write_charts = formats.png || formats.svg;
    let charts = charts::render_all(run, write_charts.then_some(cdir.as_path()), formats.png, formats.svg)?;
    if write_charts {
        for c in &charts {
            for (on, ext) in [(formats.png, "png"), (formats.svg, "svg")] {
                if on {
                    files.files.push(cdir.join(format!("{}.{ext}", c.name)));
                }
            }
        }
    }
    let gate = run.gate_report();
    if formats.json {
        let p = dir.join("gate.json");
        write_text(p.clone(), &to_json(&gate, &p)?, &mut files)?;
    }
    if formats.junit {
        write_text(dir.join("junit.xml"), &gate.junit_xml(&run.summary.experiment_name), &mut files)?;
    }
    if formats.markdown {
        write_text(dir.join("gate.md"), &gate.markdown(&run.summary), &mut files)?;
    }
    if formats.html {
        let images = validation_images(dir)?;
        write_text(dir.join("report.html"), &html::render(run, &charts, &images), &mut files)?;
    }
    Ok(files)
}

/// The validation images of a run folder (`images/*.png`, by name), for the report.
pub fn validation_images(dir: &Path) -> Result<Vec<(String, Vec<u8>)>, ReportError> {
    let idir = dir.join(IMAGES_DIR);
    if !idir.is_dir() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&idir).map_err(io(&idir))? {
        let path = entry.map_err(io(&idir))?.path();
        if path.extension().is_some_and(|e| e == "png") {
            let name = path.file_stem().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            out.push((name, std::fs::read(&path).map_err(io(&path))?));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Reads a run folder back (Parquet tables, or CSV where Parquet was not written).
pub fn read_run(dir: &Path) -> Result<RunData, ReportError> {
    let sp = dir.join("summary.json");
    let text = std::fs::read_to_string(&sp).map_err(io(&sp))?;
    let summary: RunSummary = serde_json::from_str(&text)
        .map_err(|e| ReportError::Json { path: sp.display().to_string(), message: e.to_string() })?;
    if summary.schema_version > SCHEMA_VERSION {
        return Err(ReportError::Schema(format!(
            "{}: schema version {} is newer than this tool's {SCHEMA_VERSION}",
            sp.display(),
            summary.schema_version
        )));
    }
    let tdir = dir.join("tables");
    let iterations = tables::iterations_from_frame(&tables::read_table(&tdir, "iterations")?)?;
    // A run that was killed has only the tables it appends as it goes (iterations, epochs).
    let optional = |stem: &str| tables::table_exists(&tdir, stem).then(|| tables::read_table(&tdir, stem)).transpose();
    let epochs = optional("epochs")?.map(|df| tables::epochs_from_frame(&df)).transpose()?.unwrap_or_default();
    let memory = optional("memory")?.map(|df| tables::memory_from_frame(&df)).transpose()?.unwrap_or_default();
    let gp = dir.join("gate.json");
    let gates = if gp.exists() {
        let text = std::fs::read_to_string(&gp).map_err(io(&gp))?;
        let report: GateReport = serde_json::from_str(&text)
            .map_err(|e| ReportError::Json { path: gp.display().to_string(), message: e.to_string() })?;
        report.gates
    } else {
        Vec::new()
    };
    let experiment_toml = std::fs::read_to_string(dir.join("experiment.toml")).unwrap_or_default();
    let mut summary = summary;
    if summary.schema_version < SCHEMA_VERSION {
        // Older summaries derived their per-backend figures differently (images/s as a mean
        // of rates): derive them again from the records, as this version does.
        summary.fill_from_records(&iterations, &epochs, &memory);
    }
    let deltas = compute_deltas(&iterations, summary.parity.window);
    let kernels = read_kernels(&tdir)?.unwrap_or_default();
    let validation = read_validation(&tdir)?;
    Ok(RunData { iterations, epochs, memory, deltas, summary, gates, experiment_toml, kernels, validation })
}

/// Earlier runs a resumed run may chain through (a guard against a folder naming itself).
const MAX_RESUME_CHAIN: usize = 1000;

/// [`read_run`], with the records of the runs it was resumed from put before its own, so charts
/// and the report show the whole training: of each earlier run, the iterations up to the
/// checkpoint this one continued from, and the epochs evaluated before this one's first epoch.
/// The folder's own tables are not changed. An earlier folder that cannot be read is a warning
/// in the returned list, not an error (it may have been moved or deleted).
pub fn read_run_with_history(dir: &Path) -> Result<(RunData, Vec<String>), ReportError> {
    Ok(with_history(read_run(dir)?, dir))
}

/// `run` (the records of the run folder `dir`) with the earlier parts of the run put before
/// them, as [`read_run_with_history`] describes.
pub fn with_history(mut run: RunData, dir: &Path) -> (RunData, Vec<String>) {
    let mut warnings = Vec::new();
    let mut from = run.summary.resumed_from.clone().map(|r| (dir.to_path_buf(), r));
    let mut depth = 0;
    while let Some((base, r)) = from.take() {
        depth += 1;
        if depth > MAX_RESUME_CHAIN {
            warnings.push(format!("{}: more than {MAX_RESUME_CHAIN} resumed runs in a chain; the earliest are left out", dir.display()));
            break;
        }
        let prev_dir = base.join(&r.run_dir);
        let prev = match read_run(&prev_dir) {
            Ok(p) => p,
            Err(e) => {
                warnings.push(format!("earlier part of the run not shown: {e}"));
                break;
            }
        };
        let first_epoch = run.iterations.iter().map(|i| i.epoch).min();
        let mut iterations: Vec<IterationRecord> = prev.iterations.into_iter().filter(|i| i.iteration <= r.iteration).collect();
        let mut epochs: Vec<EpochRecord> =
            prev.epochs.into_iter().filter(|e| first_epoch.is_none_or(|f| e.epoch < f)).collect();
        let mut classes: Vec<_> = prev.validation.classes.into_iter().filter(|e| first_epoch.is_none_or(|f| e.epoch < f)).collect();
        iterations.append(&mut run.iterations);
        epochs.append(&mut run.epochs);
        classes.append(&mut run.validation.classes);
        run.iterations = iterations;
        run.epochs = epochs;
        run.validation.classes = classes;
        // Curves and confusion are of the last validation: the earlier run's only if this one has none.
        if run.validation.curves.is_empty() && run.validation.confusion.is_empty() {
            run.validation.curves = prev.validation.curves;
            run.validation.confusion = prev.validation.confusion;
        }
        from = prev.summary.resumed_from.map(|r| (prev_dir, r));
    }
    run.refresh();
    (run, warnings)
}
