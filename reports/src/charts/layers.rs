//! GPU time per layer: one stacked bar per layer (forward, incl. the [yolo] loss, below;
//! backward above), ms per training step, from the kernels table of the first GPU backend timed.

use super::lines::fmt_tick;
use super::{DrawResult, color, draw_empty, err};
use crate::kernels::{KernelRecord, layer_times};
use plotters::coord::Shift;
use plotters::prelude::*;

pub fn draw_layer_time<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, kernels: &[KernelRecord]) -> DrawResult {
    let Some(backend) = kernels.first().map(|k| k.backend.clone()) else {
        return draw_empty(root, "GPU time per layer", "no GPU timestamps recorded");
    };
    let layers = layer_times(kernels, &backend);
    if layers.is_empty() {
        return draw_empty(root, "GPU time per layer", "no per-layer GPU time recorded");
    }
    root.fill(&WHITE).map_err(err)?;
    let last = layers.iter().map(|l| l.0).max().unwrap_or(0).max(0) as u32;
    let ms_max = layers.iter().map(|l| (l.2 + l.3) * 1e3).fold(0.0, f64::max);
    let caption = format!("GPU time per layer ({backend}, ms per step)");
    let mut chart = ChartBuilder::on(root)
        .caption(caption, ("sans-serif", 20))
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((0..last).into_segmented(), 0.0..(ms_max * 1.15).max(1e-9))
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(WHITE)
        .x_desc("layer")
        .y_desc("ms / step")
        .axis_desc_style(("sans-serif", 16))
        .label_style(("sans-serif", 13))
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => i.to_string(),
            _ => String::new(),
        })
        .y_label_formatter(&|v| fmt_tick(*v))
        .draw()
        .map_err(err)?;
    for (part, name) in [(0usize, "forward"), (1, "backward")] {
        let c = color(part);
        chart
            .draw_series(layers.iter().map(|(layer, _, fwd, bwd)| {
                let i = *layer as u32;
                let (lo, hi) = if part == 0 { (0.0, fwd * 1e3) } else { (fwd * 1e3, (fwd + bwd) * 1e3) };
                let mut r = Rectangle::new([(SegmentValue::Exact(i), lo), (SegmentValue::Exact(i + 1), hi)], c.filled());
                r.set_margin(0, 0, 2, 2);
                r
            }))
            .map_err(err)?
            .label(name)
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
