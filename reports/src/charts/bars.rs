//! Throughput bars: images/s per backend, and mean time per iteration stacked by phase.

use super::lines::fmt_tick;
use super::{DrawResult, color, draw_empty, err};
use crate::records::{BackendSummary, PhaseTimes};
use plotters::coord::Shift;
use plotters::coord::ranged1d::SegmentedCoord;
use plotters::coord::types::{RangedCoordf64, RangedCoordu32};
use plotters::prelude::*;

type BarChart<'a, DB> = ChartContext<'a, DB, Cartesian2d<SegmentedCoord<RangedCoordu32>, RangedCoordf64>>;

/// One bar per backend: the caption, axes and labels shared by both throughput panels.
fn bar_axes<'a, DB: DrawingBackend>(
    area: &'a DrawingArea<DB, Shift>,
    caption: &str,
    y_desc: &str,
    y_max: f64,
    n: u32,
    label: &dyn Fn(&SegmentValue<u32>) -> String,
) -> Result<BarChart<'a, DB>, String> {
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 20))
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((0..n - 1).into_segmented(), 0.0..y_max.max(1e-9))
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(WHITE)
        .x_desc("backend")
        .y_desc(y_desc)
        .axis_desc_style(("sans-serif", 16))
        .label_style(("sans-serif", 13))
        .x_labels(n as usize)
        .x_label_formatter(label)
        .y_label_formatter(&|v| fmt_tick(*v))
        .draw()
        .map_err(err)?;
    Ok(chart)
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
    let n = backends.len() as u32;
    let label = |v: &SegmentValue<u32>| match v {
        SegmentValue::CenterOf(i) => names.get(*i as usize).cloned().unwrap_or_default(),
        _ => String::new(),
    };

    // Left: images per second.
    let ips_max = backends.iter().map(|b| b.images_per_s).filter(|v| v.is_finite()).fold(0.0, f64::max);
    let mut chart = bar_axes(&left, "Images per second", "images/s", ips_max * 1.15, n, &label)?;
    chart
        .draw_series(backends.iter().enumerate().map(|(i, b)| {
            let i = i as u32;
            let mut r = Rectangle::new(
                [(SegmentValue::Exact(i), 0.0), (SegmentValue::Exact(i + 1), b.images_per_s)],
                color(i as usize).filled(),
            );
            r.set_margin(0, 0, 18, 18);
            r
        }))
        .map_err(err)?;

    // Right: mean ms per iteration, stacked by phase.
    let total_ms = |b: &BackendSummary| b.phase.values().iter().sum::<f64>() * 1e3;
    let ms_max = backends.iter().map(total_ms).filter(|v| v.is_finite()).fold(0.0, f64::max);
    let mut chart = bar_axes(&right, "Time per iteration by phase", "ms / iteration", ms_max * 1.35, n, &label)?;
    for (p, phase) in PhaseTimes::NAMES.iter().enumerate() {
        let c = color(p + 2);
        chart
            .draw_series(backends.iter().enumerate().map(|(i, b)| {
                let v = b.phase.values();
                let below: f64 = v[..p].iter().sum::<f64>() * 1e3;
                let i = i as u32;
                let mut r = Rectangle::new(
                    [(SegmentValue::Exact(i), below), (SegmentValue::Exact(i + 1), below + v[p] * 1e3)],
                    c.filled(),
                );
                r.set_margin(0, 0, 18, 18);
                r
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
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(err)?;
    Ok(())
}
