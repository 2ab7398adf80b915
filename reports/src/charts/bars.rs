//! Bars per category (backends): images/s per backend, and mean time per iteration stacked by
//! phase. Categories sit on a plain numeric axis (bar i spans i+0.15..i+0.85) with their names
//! drawn under the axis, so one category draws as well as many (plotters' segmented axis maps
//! a one-value range to nothing).

use super::lines::fmt_tick;
use super::{DrawResult, color, draw_empty, err};
use crate::records::{BackendSummary, PhaseTimes};
use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

pub(crate) type BarChart<'a, DB> = ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// Axes with one slot per name: caption, y axis, and the names centred under their slots.
pub(crate) fn category_axes<'a, DB: DrawingBackend>(
    area: &'a DrawingArea<DB, Shift>,
    caption: &str,
    x_desc: &str,
    y_desc: &str,
    y_max: f64,
    names: &[String],
) -> Result<BarChart<'a, DB>, String> {
    let n = names.len().max(1) as f64;
    let y_max = if y_max.is_finite() && y_max > 0.0 { y_max } else { 1.0 };
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 20))
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..n, 0.0..y_max)
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(WHITE)
        .x_labels(0)
        .x_desc(x_desc)
        .y_desc(y_desc)
        .axis_desc_style(("sans-serif", 16))
        .label_style(("sans-serif", 13))
        .y_label_formatter(&|v| fmt_tick(*v))
        .draw()
        .map_err(err)?;
    let base = area.get_base_pixel();
    let style = ("sans-serif", 13).into_font().into_text_style(area).pos(Pos::new(HPos::Center, VPos::Top));
    for (i, name) in names.iter().enumerate() {
        let (x, y) = chart.backend_coord(&(i as f64 + 0.5, 0.0));
        area.draw(&Text::new(name.clone(), (x - base.0, y - base.1 + 6), style.clone())).map_err(err)?;
    }
    Ok(chart)
}

/// The bar of slot `i` from `lo` to `hi`.
pub(crate) fn bar(i: usize, lo: f64, hi: f64, c: RGBColor) -> Rectangle<(f64, f64)> {
    Rectangle::new([(i as f64 + 0.15, lo), (i as f64 + 0.85, hi)], c.filled())
}

pub fn draw_throughput<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    backends: &[BackendSummary],
) -> DrawResult {
    if backends.is_empty() {
        return draw_empty(root, "Throughput", "no iterations recorded");
    }
    root.fill(&WHITE).map_err(err)?;
    let (w, _) = root.dim_in_pixel();
    let (left, right) = root.split_horizontally(w * 2 / 5);
    let names: Vec<String> = backends.iter().map(|b| b.backend.clone()).collect();

    // Left: images per second (total images ÷ total time).
    let ips_max = backends.iter().map(|b| b.images_per_s).filter(|v| v.is_finite()).fold(0.0, f64::max);
    let mut chart = category_axes(&left, "Images per second", "backend", "images/s", ips_max * 1.15, &names)?;
    chart
        .draw_series(backends.iter().enumerate().map(|(i, b)| bar(i, 0.0, b.images_per_s.max(0.0), color(i))))
        .map_err(err)?;

    // Right: mean ms per iteration, stacked by phase; device time where the GPU was timed.
    let total_ms = |b: &BackendSummary| b.phase.values().iter().sum::<f64>() * 1e3;
    let ms_max = backends.iter().map(total_ms).filter(|v| v.is_finite()).fold(0.0, f64::max);
    let labels: Vec<String> = backends.iter().map(|b| format!("{} ({} time)", b.backend, b.phase.source)).collect();
    let mut chart = category_axes(&right, "Time per iteration by phase", "backend (phases timed on)", "ms / iteration", ms_max * 1.45, &labels)?;
    for (p, phase) in PhaseTimes::NAMES.iter().enumerate() {
        let c = color(p + 1);
        chart
            .draw_series(backends.iter().enumerate().map(|(i, b)| {
                let v = b.phase.values();
                let below: f64 = v[..p].iter().sum::<f64>() * 1e3;
                bar(i, below, below + v[p].max(0.0) * 1e3, c)
            }))
            .map_err(err)?
            .label(*phase)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], c.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.88))
        .border_style(BLACK.mix(0.35))
        .label_font(("sans-serif", 13))
        .draw()
        .map_err(err)?;
    Ok(())
}
