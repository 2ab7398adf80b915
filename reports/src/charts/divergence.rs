//! Relative difference per layer between two backends in lockstep (`runner diverge`): forward
//! outputs, backward gradients and updated parameters (the largest tensor of each layer and
//! phase), on a log axis with the tolerance.

use super::lines::{self, Limit, LineSpec, Series};
use super::{Chart, DrawResult, SIZE, color, register_fonts};
use crate::ReportError;
use crate::divergence::{DivergenceRecord, KNOWN_PHASE};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;

/// Where an exact 0 is drawn: a log axis has no 0.
pub const ZERO_FLOOR: f64 = 1e-12;

fn spec(rows: &[DivergenceRecord], iteration: u64, tolerance: f64) -> LineSpec {
    let mut spec = LineSpec::new(
        &format!("Relative difference per layer, iteration {iteration}"),
        "layer",
        "‖a − b‖ / ‖a‖ (0 drawn at 1e-12)",
        "nothing compared",
    );
    spec.log_y = true;
    spec.y_from_zero = false;
    for (k, phase) in ["forward", "backward", "update"].into_iter().enumerate() {
        let mut points: Vec<(f64, f64)> = Vec::new();
        for r in rows.iter().filter(|r| r.iteration == iteration && r.phase == phase && r.phase != KNOWN_PHASE) {
            let y = if r.rel_diff.is_nan() { f64::INFINITY } else { r.rel_diff.max(ZERO_FLOOR) };
            match points.iter_mut().find(|p| p.0 == r.layer as f64) {
                Some(p) => p.1 = p.1.max(y),
                None => points.push((r.layer as f64, y)),
            }
        }
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        spec.series.push(Series { label: phase.into(), color: color(k), points, dashed: k == 2, markers: true });
    }
    spec.limits.push(Limit { label: format!("tolerance {tolerance:e}"), y: tolerance, color: RGBColor(161, 17, 17), x_end: None });
    spec
}

fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, s: &LineSpec) -> DrawResult {
    lines::draw(root, s)
}

/// Renders `divergence.png` / `.svg` into `dir` (when given) for `iteration`'s rows.
pub fn render_divergence(rows: &[DivergenceRecord], iteration: u64, tolerance: f64, dir: Option<&Path>, png: bool, svg_file: bool) -> Result<Chart, ReportError> {
    register_fonts();
    let name = "divergence";
    let cerr = |message: String| ReportError::Chart { name: name.to_string(), message };
    let s = spec(rows, iteration, tolerance);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        draw(&root, &s).map_err(cerr)?;
        root.present().map_err(|e| cerr(e.to_string()))?;
    }
    if let Some(dir) = dir {
        std::fs::create_dir_all(dir).map_err(|e| ReportError::Io { path: dir.display().to_string(), error: e })?;
        if png {
            let path = dir.join(format!("{name}.png"));
            let root = BitMapBackend::new(&path, SIZE).into_drawing_area();
            draw(&root, &s).map_err(cerr)?;
            root.present().map_err(|e| cerr(e.to_string()))?;
        }
        if svg_file {
            let path = dir.join(format!("{name}.svg"));
            std::fs::write(&path, &svg).map_err(|e| ReportError::Io { path: path.display().to_string(), error: e })?;
        }
    }
    Ok(Chart { name, title: "Relative difference per layer: forward, backward, update (log scale)".into(), svg })
}
