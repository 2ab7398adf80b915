//! Charts of the last validation, one panel per backend: precision–recall curves, F1 over the
//! confidence threshold (per class and the mean over classes), and the confusion matrix.

use super::lines::{self, LineSpec, Series};
use super::{DrawResult, color, draw_empty, err};
use crate::run_data::RunData;
use crate::validation::{ALL_CLASSES, BACKGROUND, ConfusionCell, CurvePoint};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// Backends in order of first appearance in `names`.
fn backends<'a>(names: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for n in names {
        if !out.iter().any(|o| o == n) {
            out.push(n.to_string());
        }
    }
    out
}

/// One panel per backend, side by side.
fn panels<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, n: usize) -> Vec<DrawingArea<DB, Shift>> {
    root.split_evenly((1, n.max(1)))
}

/// The curves of one backend as a line chart: `x`/`y` pick the axes from a point.
fn curve_spec(rows: &[&CurvePoint], backend: &str, title: &str, x: (&str, fn(&CurvePoint) -> f64), y: (&str, fn(&CurvePoint) -> f64)) -> LineSpec {
    let mut spec = LineSpec::new(&format!("{title} — {backend}"), x.0, y.0, "no validation recorded");
    // Where the curves are not: low precision at low recall; low F1 at high confidence.
    spec.legend = if x.0 == "recall" { SeriesLabelPosition::LowerLeft } else { SeriesLabelPosition::UpperRight };
    spec.x_integer = false;
    spec.x_range = Some((0.0, 1.0));
    spec.y_max = Some(1.0);
    spec.headroom = 0.3;
    let mut classes: Vec<(i64, String)> = Vec::new();
    for r in rows {
        if !classes.iter().any(|c| c.0 == r.class) {
            classes.push((r.class, r.name.clone()));
        }
    }
    // Classes first, the mean over classes last and thicker-looking (dashed, black).
    classes.sort_by_key(|c| if c.0 == ALL_CLASSES { i64::MAX } else { c.0 });
    for (k, (class, name)) in classes.iter().enumerate() {
        // In confidence order: a precision–recall curve is a path over the threshold.
        let mut mine: Vec<&&CurvePoint> = rows.iter().filter(|r| r.class == *class).collect();
        mine.sort_by(|a, b| a.confidence.total_cmp(&b.confidence));
        let points: Vec<(f64, f64)> = mine.iter().map(|r| (x.1(r), y.1(r))).collect();
        let all = *class == ALL_CLASSES;
        spec.series.push(Series {
            label: if all { "all classes".into() } else { name.clone() },
            color: if all { RGBColor(30, 30, 30) } else { color(k) },
            points,
            dashed: all,
            markers: false,
        });
    }
    spec
}

fn draw_curves<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    run: &RunData,
    title: &str,
    x: (&str, fn(&CurvePoint) -> f64),
    y: (&str, fn(&CurvePoint) -> f64),
) -> DrawResult {
    let curves = &run.validation.curves;
    let names = backends(curves.iter().map(|c| c.backend.as_str()));
    if names.is_empty() {
        return draw_empty(root, title, "no validation recorded");
    }
    root.fill(&WHITE).map_err(err)?;
    for (panel, b) in panels(root, names.len()).iter().zip(&names) {
        let rows: Vec<&CurvePoint> = curves.iter().filter(|c| &c.backend == b).collect();
        lines::draw(panel, &curve_spec(&rows, b, title, x, y))?;
    }
    Ok(())
}

pub fn draw_pr<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, run: &RunData) -> DrawResult {
    draw_curves(root, run, "Precision–recall (IoU 0.5)", ("recall", |p| p.recall), ("precision", |p| p.precision))
}

pub fn draw_f1<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, run: &RunData) -> DrawResult {
    draw_curves(root, run, "F1 over confidence", ("confidence threshold", |p| p.confidence), ("F1", |p| p.f1))
}

/// Row/column order of a confusion matrix: the classes as they first appear, background last.
fn labels(cells: &[&ConfusionCell]) -> Vec<String> {
    let mut out = backends(cells.iter().flat_map(|c| [c.truth.as_str(), c.predicted.as_str()]).filter(|n| *n != BACKGROUND));
    out.push(BACKGROUND.to_string());
    out
}

pub fn draw_confusion<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, run: &RunData) -> DrawResult {
    let cells = &run.validation.confusion;
    let names = backends(cells.iter().map(|c| c.backend.as_str()));
    if names.is_empty() {
        return draw_empty(root, "Confusion matrix", "no validation recorded");
    }
    root.fill(&WHITE).map_err(err)?;
    for (panel, b) in panels(root, names.len()).iter().zip(&names) {
        let mine: Vec<&ConfusionCell> = cells.iter().filter(|c| &c.backend == b).collect();
        matrix(panel, b, &mine)?;
    }
    Ok(())
}

/// One confusion matrix in pixels: rows the labelled class, columns the detected class, each
/// cell shaded by its share of its row and labelled with its count.
fn matrix<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, backend: &str, cells: &[&ConfusionCell]) -> DrawResult {
    let names = labels(cells);
    let k = names.len() as i32;
    let (w, h) = area.dim_in_pixel();
    let (top, bottom) = (50, 70);
    let side = ((w as i32 - 126).min(h as i32 - top - bottom) / k).max(8);
    // Centred in its panel, with room for the row names on the left.
    let left = ((w as i32 - side * k) / 2).max(110);
    let count = |t: &str, p: &str| cells.iter().filter(|c| c.truth == t && c.predicted == p).map(|c| c.count).sum::<u64>();
    let text = |_: &str, size: i32| ("sans-serif", size).into_font().into_text_style(area).pos(Pos::new(HPos::Center, VPos::Center));
    area.draw(&Text::new(format!("Confusion matrix — {backend}"), (left + side * k / 2, 18), text("", 18))).map_err(err)?;
    for (r, t) in names.iter().enumerate() {
        let row_total: u64 = names.iter().map(|p| count(t, p)).sum();
        for (c, p) in names.iter().enumerate() {
            let n = count(t, p);
            let share = if row_total > 0 { n as f64 / row_total as f64 } else { 0.0 };
            let shade = (255.0 * (1.0 - 0.85 * share)) as u8;
            let (x0, y0) = (left + c as i32 * side, top + r as i32 * side);
            area.draw(&Rectangle::new([(x0, y0), (x0 + side, y0 + side)], RGBColor(shade, shade, 255).filled())).map_err(err)?;
            area.draw(&Rectangle::new([(x0, y0), (x0 + side, y0 + side)], RGBColor(200, 200, 200))).map_err(err)?;
            let ink = if share > 0.55 { WHITE } else { BLACK };
            area.draw(&Text::new(n.to_string(), (x0 + side / 2, y0 + side / 2), text("", 14).color(&ink))).map_err(err)?;
        }
        let style = ("sans-serif", 13).into_font().into_text_style(area).pos(Pos::new(HPos::Right, VPos::Center));
        area.draw(&Text::new(t.clone(), (left - 6, top + r as i32 * side + side / 2), style)).map_err(err)?;
    }
    for (c, p) in names.iter().enumerate() {
        area.draw(&Text::new(p.clone(), (left + c as i32 * side + side / 2, top + k * side + 12), text("", 13))).map_err(err)?;
    }
    area.draw(&Text::new("detected".to_string(), (left + side * k / 2, top + k * side + 36), text("", 15))).map_err(err)?;
    let style = ("sans-serif", 15).into_font().into_text_style(area).pos(Pos::new(HPos::Left, VPos::Center));
    area.draw(&Text::new("labelled ↓".to_string(), (4, top - 14), style)).map_err(err)?;
    Ok(())
}
