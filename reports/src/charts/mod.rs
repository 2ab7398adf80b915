//! Charts of a run, each drawn twice from one function: SVG (kept in memory for the HTML report,
//! optionally written) and PNG. Text uses the vendored DejaVu Sans through ab_glyph, so no system
//! font library is needed.

mod bars;
mod divergence;
mod layers;
mod lines;
mod validation;

use crate::ReportError;
use crate::run_data::RunData;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;
use std::sync::Once;

pub use divergence::render_divergence;
pub use lines::{LineSpec, Series};

static FONT: &[u8] = include_bytes!("../../fonts/DejaVuSans.ttf");
static REGISTER: Once = Once::new();

/// Registers the vendored font under every family name plotters may ask for.
pub fn register_fonts() {
    REGISTER.call_once(|| {
        for family in ["sans-serif", "serif", "monospace"] {
            for style in [FontStyle::Normal, FontStyle::Bold] {
                // The bytes are a valid TTF checked in with the crate; a failure here is a build defect.
                if plotters::style::register_font(family, style, FONT).is_err() {
                    panic!("vendored font reports/fonts/DejaVuSans.ttf is not a valid TTF");
                }
            }
        }
    });
}

/// Chart size in pixels (PNG) / user units (SVG).
pub const SIZE: (u32, u32) = (960, 480);

/// One rendered chart.
#[derive(Clone, Debug)]
pub struct Chart {
    /// File stem: one of [`NAMES`].
    pub name: &'static str,
    pub title: String,
    /// The SVG document (inlined into the HTML report).
    pub svg: String,
}

pub(crate) type DrawResult = Result<(), String>;

pub(crate) fn err<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

/// Colour of the i-th series: a colour-blind-friendly palette (Okabe–Ito).
pub(crate) fn color(i: usize) -> RGBColor {
    const P: [RGBColor; 8] = [
        RGBColor(0, 114, 178),
        RGBColor(213, 94, 0),
        RGBColor(0, 158, 115),
        RGBColor(204, 121, 167),
        RGBColor(230, 159, 0),
        RGBColor(86, 180, 233),
        RGBColor(120, 120, 120),
        RGBColor(240, 228, 66),
    ];
    P[i % P.len()]
}

/// Draws "no data" in an otherwise empty chart, so every chart file exists for every run.
pub(crate) fn draw_empty<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    why: &str,
) -> DrawResult {
    root.fill(&WHITE).map_err(err)?;
    let (w, h) = root.dim_in_pixel();
    root.draw(&Text::new(title.to_string(), (20, 20), ("sans-serif", 22).into_font()))
        .map_err(err)?;
    root.draw(&Text::new(
        why.to_string(),
        (w as i32 / 2 - 120, h as i32 / 2),
        ("sans-serif", 18).into_font().color(&RGBColor(120, 120, 120)),
    ))
    .map_err(err)?;
    Ok(())
}

/// Renders with both backends. `$draw` is a generic fn(&DrawingArea<DB, Shift>, &RunData) -> DrawResult.
macro_rules! render {
    ($name:expr, $title:expr, $run:expr, $dir:expr, $png:expr, $svg_file:expr, $draw:ident) => {{
        let name: &'static str = $name;
        let cerr = |message: String| ReportError::Chart { name: name.to_string(), message };
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
            $draw(&root, $run).map_err(cerr)?;
            root.present().map_err(|e| cerr(e.to_string()))?;
        }
        if let Some(dir) = $dir {
            let dir: &Path = dir;
            if $png {
                let path = dir.join(format!("{name}.png"));
                let root = BitMapBackend::new(&path, SIZE).into_drawing_area();
                $draw(&root, $run).map_err(cerr)?;
                root.present().map_err(|e| cerr(e.to_string()))?;
            }
            if $svg_file {
                let path = dir.join(format!("{name}.svg"));
                std::fs::write(&path, &svg)
                    .map_err(|e| ReportError::Io { path: path.display().to_string(), error: e })?;
            }
        }
        Chart { name, title: $title.to_string(), svg }
    }};
}

/// Every chart's file stem, in the order of the report.
pub const NAMES: [&str; 11] = [
    "loss", "loss_components", "loss_delta", "map", "accuracy", "pr_curve", "f1_curve", "confusion_matrix", "throughput", "memory", "layer_time",
];

/// Renders every chart. With `dir`, also writes `<name>.png` (if `png`) and `<name>.svg` (if `svg`).
pub fn render_all(
    run: &RunData,
    dir: Option<&Path>,
    png: bool,
    svg: bool,
) -> Result<Vec<Chart>, ReportError> {
    register_fonts();
    if let Some(d) = dir {
        std::fs::create_dir_all(d)
            .map_err(|e| ReportError::Io { path: d.display().to_string(), error: e })?;
    }
    Ok(vec![
        render!("loss", "Training loss", run, dir, png, svg, draw_loss),
        render!("loss_components", "Loss components (box + objectness + class = loss)", run, dir, png, svg, draw_components),
        render!("loss_delta", "Relative loss delta vs reference", run, dir, png, svg, draw_delta),
        render!("map", "mAP per epoch", run, dir, png, svg, draw_map),
        render!("accuracy", "Top-1 and top-k accuracy per epoch (classifiers)", run, dir, png, svg, draw_accuracy),
        render!("pr_curve", "Precision–recall curves of the last validation", run, dir, png, svg, draw_pr),
        render!("f1_curve", "F1 over the confidence threshold, last validation", run, dir, png, svg, draw_f1),
        render!("confusion_matrix", "Confusion matrix of the last validation (IoU 0.5, confidence 0.25)", run, dir, png, svg, draw_confusion),
        render!("throughput", "Throughput and time per phase", run, dir, png, svg, draw_throughput),
        render!("memory", "Memory over time", run, dir, png, svg, draw_memory),
        render!("layer_time", "GPU time per layer (forward and backward)", run, dir, png, svg, draw_layer_time),
    ])
}

fn draw_loss<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, run: &RunData) -> DrawResult {
    lines::draw(root, &lines::loss_spec(run))
}

fn draw_components<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, run: &RunData) -> DrawResult {
    lines::draw(root, &lines::components_spec(run))
}

fn draw_pr<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, run: &RunData) -> DrawResult {
    validation::draw_pr(root, run)
}

fn draw_f1<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, run: &RunData) -> DrawResult {
    validation::draw_f1(root, run)
}

fn draw_confusion<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, run: &RunData) -> DrawResult {
    validation::draw_confusion(root, run)
}

fn draw_delta<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, run: &RunData) -> DrawResult {
    lines::draw(root, &lines::delta_spec(run))
}

fn draw_map<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, run: &RunData) -> DrawResult {
    lines::draw(root, &lines::map_spec(run))
}

fn draw_accuracy<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, run: &RunData) -> DrawResult {
    lines::draw(root, &lines::accuracy_spec(run))
}

fn draw_memory<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, run: &RunData) -> DrawResult {
    lines::draw(root, &lines::memory_spec(run))
}

fn draw_layer_time<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, run: &RunData) -> DrawResult {
    layers::draw_layer_time(root, &run.kernels)
}

fn draw_throughput<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, run: &RunData) -> DrawResult {
    bars::draw_throughput(root, &run.summary.backends)
}
