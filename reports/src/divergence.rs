//! The divergence table of `runner diverge` (`tables/divergence.{parquet,csv}`, reports/SCHEMA.md)
//! and its report page: where two backends trained in lockstep part, layer by layer.

use crate::html::{CSS, escape, push_frame};
use crate::{ReportError, tables};
use polars::prelude::*;
use serde::{Deserialize, Serialize};
use std::fmt::Write;
use std::path::{Path, PathBuf};

pub const DIVERGENCE_COLUMNS: &[&str] =
    &["iteration", "layer", "layer_type", "phase", "tensor", "rel_diff", "max_abs_diff", "n_outside", "n"];

/// The phase of the rows that count a known source of divergence instead of comparing a tensor.
pub const KNOWN_PHASE: &str = "known";

/// One tensor of one layer compared between the reference backend and the other one after one
/// iteration, or (phase `known`) one known source of divergence counted.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DivergenceRecord {
    pub iteration: u64,
    pub layer: u64,
    pub layer_type: String,
    /// "forward", "backward", "update" or "known".
    pub phase: String,
    /// "output", "delta", "weights grad", …; for `known` rows "argmax flips" or "ignore flips".
    pub tensor: String,
    /// ‖a − b‖ / max(‖a‖, 1e-12); for `known` rows count / n.
    pub rel_diff: f64,
    /// max |a − b| (0 for `known` rows).
    pub max_abs_diff: f64,
    /// Elements outside the tolerance; for `known` rows the windows or predictions that flipped.
    pub n_outside: u64,
    /// Elements compared; for `known` rows windows or predictions.
    pub n: u64,
}

pub fn divergence_frame(rows: &[DivergenceRecord]) -> Result<DataFrame, ReportError> {
    let s = |g: fn(&DivergenceRecord) -> &str| rows.iter().map(g).collect::<Vec<&str>>();
    let u = |g: fn(&DivergenceRecord) -> u64| rows.iter().map(g).collect::<Vec<u64>>();
    let f = |g: fn(&DivergenceRecord) -> f64| rows.iter().map(g).collect::<Vec<f64>>();
    Ok(DataFrame::new(
        rows.len(),
        vec![
            Column::new("iteration".into(), u(|r| r.iteration)),
            Column::new("layer".into(), u(|r| r.layer)),
            Column::new("layer_type".into(), s(|r| &r.layer_type)),
            Column::new("phase".into(), s(|r| &r.phase)),
            Column::new("tensor".into(), s(|r| &r.tensor)),
            Column::new("rel_diff".into(), f(|r| r.rel_diff)),
            Column::new("max_abs_diff".into(), f(|r| r.max_abs_diff)),
            Column::new("n_outside".into(), u(|r| r.n_outside)),
            Column::new("n".into(), u(|r| r.n)),
        ],
    )?)
}

/// Writes `dir/divergence.parquet` and/or `dir/divergence.csv`; returns the files written.
pub fn write_divergence(dir: &Path, rows: &[DivergenceRecord], parquet: bool, csv: bool) -> Result<Vec<PathBuf>, ReportError> {
    std::fs::create_dir_all(dir).map_err(|e| ReportError::Io { path: dir.display().to_string(), error: e })?;
    let mut df = divergence_frame(rows)?;
    let mut files = Vec::new();
    if parquet {
        let path = dir.join("divergence.parquet");
        tables::write_parquet(&mut df, &path)?;
        files.push(path);
    }
    if csv {
        let path = dir.join("divergence.csv");
        tables::write_csv(&mut df, &path)?;
        files.push(path);
    }
    Ok(files)
}

/// What the report says above the table.
#[derive(Clone, Debug, Default)]
pub struct DivergenceSummary {
    /// "cpu vs gpu", with devices.
    pub title: String,
    pub tolerance: f64,
    pub iterations_compared: u64,
    /// The first tensor past the tolerance, as one line; `None` when none was.
    pub first: Option<String>,
    /// When nothing diverged: the largest difference seen (iteration, layer, phase, tensor), as
    /// one line, so that a passing run still says where the backends were furthest apart.
    pub largest: Option<String>,
    /// Known sources that could not be computed, and why.
    pub missing: Vec<String>,
}

/// The HTML section: verdict line, chart (`chart_svg`, from `charts::render_divergence`: taken
/// as text so this module does not import the charts that import it), known sources, the table
/// of the last iteration.
pub fn html_section(summary: &DivergenceSummary, rows: &[DivergenceRecord], chart_svg: Option<&str>) -> String {
    let mut h = String::from("<h2>Divergence by layer</h2>\n");
    let _ = writeln!(
        h,
        "<p>{} — {} iteration(s) compared, tolerance {:e} (relative norm difference per tensor)</p>",
        escape(&summary.title),
        summary.iterations_compared,
        summary.tolerance
    );
    match &summary.first {
        Some(f) => {
            let _ = writeln!(h, "<p class=\"verdict FAIL\">first divergence: {}</p>", escape(f));
        }
        None => {
            h.push_str("<p class=\"verdict PASS\">no tensor past the tolerance</p>\n");
            if let Some(l) = &summary.largest {
                let _ = writeln!(h, "<p>largest difference: {}</p>", escape(l));
            }
        }
    }
    if let Some(svg) = chart_svg {
        let _ = writeln!(h, "<figure>{svg}<figcaption>Relative difference per layer: forward, backward, update (log scale)</figcaption></figure>");
    }
    let last = rows.iter().map(|r| r.iteration).max().unwrap_or(0);
    let at_last: Vec<DivergenceRecord> = rows.iter().filter(|r| r.iteration == last).cloned().collect();
    h.push_str("<h2>Known sources</h2>\n");
    let known: Vec<DivergenceRecord> = at_last.iter().filter(|r| r.phase == KNOWN_PHASE).cloned().collect();
    push_frame(&mut h, divergence_frame(&known), &[2, 3, 4]);
    for m in &summary.missing {
        let _ = writeln!(h, "<p class=\"meta\">not computed: {}</p>", escape(m));
    }
    let _ = writeln!(h, "<h2>Every tensor, iteration {last}</h2>");
    let tensors: Vec<DivergenceRecord> = at_last.into_iter().filter(|r| r.phase != KNOWN_PHASE).collect();
    push_frame(&mut h, divergence_frame(&tensors), &[2, 3, 4]);
    h
}

/// A self-contained page holding [`html_section`].
pub fn render_page(summary: &DivergenceSummary, rows: &[DivergenceRecord], chart_svg: Option<&str>) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>divergence — {}</title><style>{CSS}</style></head><body>\n<h1>Lockstep divergence</h1>\n{}\n<p class=\"meta\">report schema version {}</p>\n</body></html>\n",
        escape(&summary.title),
        html_section(summary, rows, chart_svg),
        crate::SCHEMA_VERSION
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(layer: u64, phase: &str, tensor: &str, rel_diff: f64) -> DivergenceRecord {
        DivergenceRecord { iteration: 1, layer, layer_type: "conv".into(), phase: phase.into(), tensor: tensor.into(), rel_diff, max_abs_diff: rel_diff, n_outside: 0, n: 10 }
    }

    #[test]
    fn table_chart_and_page_are_written_and_read_back() {
        let dir = std::env::temp_dir().join(format!("reports-divergence-{}", std::process::id()));
        let rows = vec![
            row(0, "forward", "output", 0.0),
            row(1, "forward", "output", 2e-7),
            row(1, "backward", "delta", 3e-2),
            row(0, "update", "weights", f64::NAN),
            row(1, KNOWN_PHASE, "argmax flips", 0.1),
        ];
        let files = write_divergence(&dir.join("tables"), &rows, true, true).unwrap();
        assert_eq!(files.len(), 2);
        let df = tables::read_table(&dir.join("tables"), "divergence").unwrap();
        let names: Vec<String> = df.get_column_names().iter().map(|n| n.to_string()).collect();
        assert_eq!(names, DIVERGENCE_COLUMNS);
        assert_eq!(df.height(), rows.len());
        let chart = crate::charts::render_divergence(&rows, 1, 1e-3, Some(&dir.join("charts")), true, true).unwrap();
        assert!(dir.join("charts/divergence.png").exists() && dir.join("charts/divergence.svg").exists());
        let summary = DivergenceSummary { title: "cpu vs gpu".into(), tolerance: 1e-3, iterations_compared: 1, first: Some("layer 1 (conv) backward: delta".into()), largest: None, missing: Vec::new() };
        let page = render_page(&summary, &rows, Some(&chart.svg));
        assert!(page.contains("first divergence: layer 1 (conv) backward: delta") && page.contains("argmax flips") && page.contains("<svg"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
