//! Line charts (loss, loss delta, mAP, memory) from one generic spec.

use super::{DrawResult, color, draw_empty, err};
use crate::records::{EpochRecord, IterationRecord, backend_names};
use crate::run_data::RunData;
use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;

pub struct Series {
    pub label: String,
    pub color: RGBColor,
    pub points: Vec<(f64, f64)>,
    pub dashed: bool,
    pub markers: bool,
}

/// A horizontal limit line, over the whole x axis or up to `x_end` (a gate that covers the first
/// iterations only is drawn only there).
pub struct Limit {
    pub label: String,
    pub y: f64,
    pub color: RGBColor,
    pub x_end: Option<f64>,
}

pub struct LineSpec {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    pub limits: Vec<Limit>,
    /// Shade 0..y as the allowed band (up to x_end when set).
    pub shade_below: Option<(f64, Option<f64>)>,
    /// Force the y axis to start at 0 (linear only).
    pub y_from_zero: bool,
    pub y_max: Option<f64>,
    /// A fixed x axis (curves over 0..1), instead of the data's extent.
    pub x_range: Option<(f64, f64)>,
    pub log_y: bool,
    /// x values are counts (iterations, epochs): integer ticks only.
    pub x_integer: bool,
    /// Free space above the data, as a fraction of the y range (room for the legend).
    pub headroom: f64,
    pub legend: SeriesLabelPosition,
    pub empty_reason: &'static str,
}

impl LineSpec {
    pub(crate) fn new(title: &str, x_label: &str, y_label: &str, empty_reason: &'static str) -> Self {
        LineSpec {
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            series: Vec::new(),
            limits: Vec::new(),
            shade_below: None,
            y_from_zero: true,
            y_max: None,
            x_range: None,
            log_y: false,
            x_integer: true,
            headroom: 0.12,
            legend: SeriesLabelPosition::UpperRight,
            empty_reason,
        }
    }
}

impl LineSpec {
    /// Number of x ticks: one per integer step for short integer axes.
    fn x_ticks(&self, x0: f64, x1: f64) -> usize {
        if self.x_integer { ((x1 - x0).round() as usize + 1).clamp(2, 12) } else { 10 }
    }
}

/// Tick text: plain decimals in a readable range, scientific outside it.
pub(crate) fn fmt_tick(v: f64) -> String {
    let a = v.abs();
    if a != 0.0 && !(1e-3..1e5).contains(&a) {
        return format!("{v:.1e}");
    }
    let s = format!("{v:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.into() }
}

fn bounds(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values.fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })
}

/// The chart body, identical for linear and log y axes (their coordinate types differ).
macro_rules! body {
    ($chart:ident, $spec:ident, $x0:expr, $x1:expr, $ylo:expr) => {{
        $chart
            .configure_mesh()
            .x_desc($spec.x_label.as_str())
            .y_desc($spec.y_label.as_str())
            .axis_desc_style(("sans-serif", 16))
            .label_style(("sans-serif", 13))
            .light_line_style(RGBColor(238, 238, 238))
            .bold_line_style(RGBColor(215, 215, 215))
            .x_labels($spec.x_ticks($x0, $x1))
            .x_label_formatter(&|v| if $spec.x_integer && v.fract() != 0.0 { String::new() } else { fmt_tick(*v) })
            .y_label_formatter(&|v| fmt_tick(*v))
            .draw()
            .map_err(err)?;
        if let Some((b, end)) = $spec.shade_below {
            let band = RGBColor(0, 158, 115).mix(0.12);
            let xe = end.map_or($x1, |e| e.clamp($x0, $x1));
            $chart
                .draw_series(std::iter::once(Rectangle::new([($x0, $ylo), (xe, b)], band.filled())))
                .map_err(err)?
                .label("allowed band")
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 18, y + 5)], band.filled()));
        }
        for l in &$spec.limits {
            let c = l.color;
            $chart
                .draw_series(DashedLineSeries::new(
                    vec![($x0, l.y), (l.x_end.map_or($x1, |e| e.clamp($x0, $x1)), l.y)],
                    8,
                    5,
                    c.stroke_width(2),
                ))
                .map_err(err)?
                .label(l.label.as_str())
                .legend(move |(x, y)| DashedPathElement::new(vec![(x, y), (x + 18, y)], 8, 5, c.stroke_width(2)));
        }
        for s in &$spec.series {
            let c = s.color;
            let pts: Vec<(f64, f64)> = s.points.iter().copied().filter(|p| p.1.is_finite()).collect();
            let anno = if s.dashed {
                $chart
                    .draw_series(DashedLineSeries::new(pts.clone(), 6, 4, c.stroke_width(2)))
                    .map_err(err)?
            } else {
                $chart.draw_series(LineSeries::new(pts.clone(), c.stroke_width(2))).map_err(err)?
            };
            if s.dashed {
                anno.label(s.label.as_str()).legend(move |(x, y)| {
                    DashedPathElement::new(vec![(x, y), (x + 18, y)], 5, 3, c.stroke_width(2))
                });
            } else {
                anno.label(s.label.as_str())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
            }
            if s.markers {
                $chart
                    .draw_series(pts.iter().map(|&p| Circle::new(p, 4, c.filled())))
                    .map_err(err)?;
            }
        }
        $chart
            .configure_series_labels()
            .position($spec.legend.clone())
            .background_style(WHITE.mix(0.88))
            .border_style(BLACK.mix(0.35))
            .label_font(("sans-serif", 14))
            .draw()
            .map_err(err)?;
    }};
}

pub fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, spec: &LineSpec) -> DrawResult {
    let ok = |p: &&(f64, f64)| p.0.is_finite() && p.1.is_finite() && (!spec.log_y || p.1 > 0.0);
    let pts: Vec<(f64, f64)> =
        spec.series.iter().flat_map(|s| s.points.iter().filter(ok).copied()).collect();
    let (Some((mut x0, mut x1)), Some((ylo, yhi))) =
        (bounds(pts.iter().map(|p| p.0)), bounds(pts.iter().map(|p| p.1)))
    else {
        return draw_empty(root, &spec.title, spec.empty_reason);
    };
    if let Some((a, b)) = spec.x_range {
        (x0, x1) = (a, b);
    }
    if x1 <= x0 {
        // One x value (a one-epoch run): half a step either side, so the point sits in the middle
        // under its own tick rather than on an axis from −1 to 1.
        let half = if spec.x_integer { 0.5 } else { 1.0 };
        x0 -= half;
        x1 += half;
    }
    let lim_hi = spec.limits.iter().map(|l| l.y).chain(spec.shade_below.map(|b| b.0)).fold(yhi, f64::max);
    root.fill(&WHITE).map_err(err)?;
    let mut builder = ChartBuilder::on(root);
    builder
        .caption(spec.title.as_str(), ("sans-serif", 22))
        .margin(14)
        .x_label_area_size(50)
        .y_label_area_size(84);
    if spec.log_y {
        let (y0, y1) = (ylo * 0.8, lim_hi * (1.5 + 10.0 * spec.headroom));
        let mut chart = builder.build_cartesian_2d(x0..x1, (y0..y1).log_scale()).map_err(err)?;
        body!(chart, spec, x0, x1, y0);
    } else {
        let y0 = if spec.y_from_zero { ylo.min(0.0) } else { ylo - (lim_hi - ylo) * 0.05 };
        let mut y1 = lim_hi + (lim_hi - y0).abs() * spec.headroom;
        if let Some(m) = spec.y_max {
            y1 = y1.min(m);
        }
        if y1 <= y0 {
            y1 = y0 + 1.0;
        }
        let mut chart = builder.build_cartesian_2d(x0..x1, y0..y1).map_err(err)?;
        body!(chart, spec, x0, x1, y0);
    }
    Ok(())
}

pub fn loss_spec(run: &RunData) -> LineSpec {
    let mut spec =
        LineSpec::new("Training loss per iteration", "iteration", "loss", "no iterations recorded");
    for (i, b) in backend_names(&run.iterations).iter().enumerate() {
        let points = run
            .iterations
            .iter()
            .filter(|r| &r.backend == b)
            .map(|r| (r.iteration as f64, r.loss))
            .collect();
        // Later backends dashed: parity curves lie on top of each other.
        spec.series.push(Series { label: b.clone(), color: color(i), points, dashed: i > 0, markers: false });
    }
    log_axis_if_wide(&mut spec);
    spec
}

/// Early YOLO losses are orders of magnitude above late ones: a log axis keeps both readable.
fn log_axis_if_wide(spec: &mut LineSpec) {
    let pos = bounds(spec.series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).filter(|v| *v > 0.0));
    if let Some((lo, hi)) = pos {
        spec.log_y = hi / lo > 50.0;
        if spec.log_y {
            spec.y_label = format!("{} (log scale)", spec.y_label);
        }
    }
}

/// Box, objectness and class loss per backend (they add up to the loss).
pub fn components_spec(run: &RunData) -> LineSpec {
    let mut spec = LineSpec::new("Loss components per iteration", "iteration", "loss", "no iterations recorded");
    let parts: [(&str, fn(&IterationRecord) -> f64); 3] =
        [("box", |r| r.box_loss), ("objectness", |r| r.obj_loss), ("class", |r| r.class_loss)];
    for (i, b) in backend_names(&run.iterations).iter().enumerate() {
        for (k, (part, get)) in parts.iter().enumerate() {
            let points = run.iterations.iter().filter(|r| &r.backend == b).map(|r| (r.iteration as f64, get(r))).collect();
            spec.series.push(Series { label: format!("{b} {part}"), color: color(k), points, dashed: i > 0, markers: false });
        }
    }
    log_axis_if_wide(&mut spec);
    spec
}

pub fn delta_spec(run: &RunData) -> LineSpec {
    let lim = &run.summary.parity;
    let mut spec = LineSpec::new(
        "Relative loss delta |loss − ref| / |ref|",
        "iteration",
        "relative delta (ratio)",
        "needs two backends with common iterations",
    );
    let mut names: Vec<String> = Vec::new();
    for d in &run.deltas {
        if !names.contains(&d.backend) {
            names.push(d.backend.clone());
        }
    }
    for (i, b) in names.iter().enumerate() {
        let rows: Vec<_> = run.deltas.iter().filter(|d| &d.backend == b).collect();
        let reference = rows.first().map(|d| d.reference.clone()).unwrap_or_default();
        spec.series.push(Series {
            label: format!("{b} vs {reference}, per iteration"),
            color: color(2 * i),
            points: rows.iter().map(|d| (d.iteration as f64, d.rel_delta)).collect(),
            dashed: false,
            markers: false,
        });
        spec.series.push(Series {
            label: format!("{b} vs {reference}, mean of last {}", lim.window),
            color: color(2 * i + 3),
            points: rows.iter().map(|d| (d.iteration as f64, d.rel_delta_window_mean)).collect(),
            dashed: true,
            markers: false,
        });
    }
    // The per-iteration gate may cover only the first iterations: its line stops there.
    let first = lim.loss_rel_delta_iter_first.map(|n| n as f64);
    if let Some(v) = lim.loss_rel_delta_iter {
        let label = match first {
            Some(n) => format!("limit per iteration ({}, iterations 1–{n})", fmt_tick(v)),
            None => format!("limit per iteration ({})", fmt_tick(v)),
        };
        spec.limits.push(Limit { label, y: v, color: RGBColor(200, 30, 30), x_end: first });
    }
    if let Some(v) = lim.loss_rel_delta_window {
        spec.limits.push(Limit { label: format!("limit for window mean ({})", fmt_tick(v)), y: v, color: RGBColor(230, 140, 0), x_end: None });
    }
    spec.shade_below = match (lim.loss_rel_delta_iter, lim.loss_rel_delta_window) {
        (_, Some(w)) => Some((w, None)),
        (Some(i), None) => Some((i, first)),
        (None, None) => None,
    };
    spec
}

pub fn map_spec(run: &RunData) -> LineSpec {
    let mut spec = LineSpec::new("mAP per epoch", "epoch", "mAP (0–1)", "no epochs evaluated");
    let mut names: Vec<String> = Vec::new();
    for e in &run.epochs {
        if !names.contains(&e.backend) {
            names.push(e.backend.clone());
        }
    }
    for (i, b) in names.iter().enumerate() {
        let rows: Vec<_> = run.epochs.iter().filter(|e| &e.backend == b).collect();
        spec.series.push(Series {
            label: format!("{b} mAP@0.5"),
            color: color(i),
            points: rows.iter().map(|e| (e.epoch as f64, e.map50)).collect(),
            dashed: false,
            markers: true,
        });
        spec.series.push(Series {
            label: format!("{b} mAP@0.5:0.95"),
            color: color(i),
            points: rows.iter().map(|e| (e.epoch as f64, e.map50_95)).collect(),
            dashed: true,
            markers: true,
        });
    }
    spec.y_max = Some(1.0);
    spec.legend = SeriesLabelPosition::LowerRight;
    spec
}

/// A classifier's validation accuracy per epoch: top-1 solid, top-k dashed, one colour per backend.
pub fn accuracy_spec(run: &RunData) -> LineSpec {
    let mut spec = LineSpec::new("Accuracy per epoch", "epoch", "accuracy (0–1)", "no accuracy recorded (not a classifier)");
    let mut names: Vec<String> = Vec::new();
    for e in run.epochs.iter().filter(|e| e.top1.is_some()) {
        if !names.contains(&e.backend) {
            names.push(e.backend.clone());
        }
    }
    for (i, b) in names.iter().enumerate() {
        let rows: Vec<_> = run.epochs.iter().filter(|e| &e.backend == b).collect();
        for (label, get, dashed) in [("top-1", (|e: &EpochRecord| e.top1) as fn(&EpochRecord) -> Option<f64>, false), ("top-k", |e| e.top5, true)] {
            spec.series.push(Series {
                label: format!("{b} {label}"),
                color: color(i),
                points: rows.iter().filter_map(|e| get(e).map(|v| (e.epoch as f64, v))).collect(),
                dashed,
                markers: true,
            });
        }
    }
    spec.y_max = Some(1.0);
    spec.legend = SeriesLabelPosition::LowerRight;
    spec
}

pub fn memory_spec(run: &RunData) -> LineSpec {
    const MIB: f64 = 1024.0 * 1024.0;
    let mut spec =
        LineSpec::new("Memory over time", "time since start (s)", "memory (MiB)", "no memory samples");
    spec.x_integer = false;
    spec.headroom = 0.35;
    let m = &run.memory;
    let series: [(&str, fn(&crate::MemorySample) -> u64); 3] =
        [("RSS", |s| s.rss_bytes), ("swap", |s| s.swap_bytes), ("GPU", |s| s.gpu_bytes)];
    for (i, (label, get)) in series.iter().enumerate() {
        spec.series.push(Series {
            label: (*label).into(),
            color: color(i),
            points: m.iter().map(|s| (s.t_s, get(s) as f64 / MIB)).collect(),
            dashed: false,
            markers: false,
        });
    }
    spec
}
