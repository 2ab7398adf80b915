//! The self-contained HTML report: verdict, charts (inline SVG), tables, configuration, devices.
//! No scripts, no external resources, so it opens offline and can be attached to a CI run.

use crate::charts::Chart;
use crate::gate::{GateReport, fmt_num};
use crate::run_data::RunData;
use crate::tables;
use crate::validation::ClassRecord;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use polars::prelude::{AnyValue, DataFrame};
use std::fmt::Write;

/// Rows of the iterations table shown in the report (the full table is in tables/).
pub const ITERATION_HEAD_ROWS: usize = 20;

pub(crate) const CSS: &str = r#"
body{font-family:"DejaVu Sans",Helvetica,Arial,sans-serif;margin:0 auto;max-width:1100px;padding:16px 24px;color:#222;background:#fff}
h1{font-size:1.5em;margin:.2em 0}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd;padding-bottom:4px}
.verdict{font-size:2em;font-weight:bold;padding:10px 18px;border-radius:6px;display:inline-block;margin:8px 0}
.PASS{background:#e3f5ec;color:#0b6b3a;border:2px solid #0b6b3a}.FAIL{background:#fde8e8;color:#a11;border:2px solid #a11}
.NONE{background:#f4f4f4;color:#555;border:2px solid #999}
table{border-collapse:collapse;margin:8px 0;font-size:.85em}th,td{border:1px solid #ddd;padding:3px 8px;text-align:right}
th{background:#f4f4f4}td.l,th.l{text-align:left}td.PASS,td.FAIL,td.WEAK{font-weight:bold;text-align:center;border-radius:0}td.WEAK{background:#fff6dd;color:#7a5b00}
.scroll{overflow-x:auto}figure{margin:12px 0}figure svg{max-width:100%;height:auto;border:1px solid #eee}figure img{max-width:100%;image-rendering:pixelated;border:1px solid #eee}
figcaption{font-size:.9em;color:#555}pre{background:#f7f7f7;padding:10px;overflow-x:auto;font-size:.85em}
.meta{color:#555;font-size:.9em}
"#;

/// One line per backend that trained with loss scaling (mixed precision): the scale at the
/// start and the end, and the steps skipped.
pub fn loss_scale_lines(iterations: &[crate::records::IterationRecord]) -> Vec<String> {
    let mut backends: Vec<&str> = Vec::new();
    for r in iterations {
        if r.loss_scale.is_some() && !backends.contains(&r.backend.as_str()) {
            backends.push(&r.backend);
        }
    }
    backends
        .into_iter()
        .map(|b| {
            let rows: Vec<_> = iterations.iter().filter(|r| r.backend == b && r.loss_scale.is_some()).collect();
            let skipped = rows.iter().filter(|r| r.skipped).count();
            let scale = |r: &crate::records::IterationRecord| r.loss_scale.map_or(String::new(), fmt_num);
            format!(
                "mixed precision ({b}): loss scale {} at the first step, {} at the last; {skipped} of {} steps skipped (their gradients overflowed: the update was undone and the scale halved)",
                rows.first().map_or(String::new(), |r| scale(r)),
                rows.last().map_or(String::new(), |r| scale(r)),
                rows.len()
            )
        })
        .collect()
}

pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

/// Renders the report. `charts` are the SVGs from [`crate::charts::render_all`]; `images` the
/// validation images (name, PNG bytes), embedded as data: URIs.
pub fn render(run: &RunData, charts: &[Chart], images: &[(String, Vec<u8>)]) -> String {
    let s = &run.summary;
    let gate = GateReport::new(run.gates.clone());
    let verdict = gate.verdict.label();
    let verdict_class = match gate.verdict {
        crate::gate::Verdict::Pass => "PASS",
        crate::gate::Verdict::Fail => "FAIL",
        crate::gate::Verdict::NoGates => "NONE",
    };
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{verdict} — {}</title><style>{CSS}</style></head><body>\n",
        escape(&s.experiment_name)
    );
    let _ = writeln!(h, "<h1>{}</h1>", escape(&s.experiment_name));
    let _ = writeln!(
        h,
        "<p class=\"meta\">commit <code>{}</code> · experiment hash <code>{}</code> · seed {} · started {} · wall time {} s</p>",
        escape(&s.git_commit),
        escape(&s.experiment_hash),
        s.seed,
        escape(&s.started_at),
        fmt_num(s.wall_time_s)
    );

    // Verdict first: what a reader needs before anything else.
    let _ = writeln!(
        h,
        "<div class=\"verdict {verdict_class}\">{verdict}</div> <span class=\"meta\">{}</span>",
        escape(&gate.counts())
    );
    h.push_str("<table><tr><th class=\"l\">gate</th><th>result</th><th>measured</th><th>limit</th><th class=\"l\">detail</th></tr>\n");
    for g in &gate.gates {
        let (class, r) = match (g.pass, g.informative) {
            (true, true) => ("PASS", "PASS"),
            (true, false) => ("WEAK", "PASS (not informative)"),
            (false, _) => ("FAIL", "FAIL"),
        };
        let _ = writeln!(
            h,
            "<tr><td class=\"l\">{}</td><td class=\"{class}\">{r}</td><td>{}</td><td>{}</td><td class=\"l\">{}</td></tr>",
            escape(&g.name),
            fmt_num(g.measured),
            fmt_num(g.limit),
            escape(&g.detail)
        );
    }
    if gate.gates.is_empty() {
        h.push_str("<tr><td class=\"l\" colspan=\"5\">no gates defined: the experiment has no [thresholds]</td></tr>\n");
    }
    h.push_str("</table>\n");
    for line in loss_scale_lines(&run.iterations) {
        let _ = writeln!(h, "<p class=\"meta\">{}</p>", escape(&line));
    }
    h.push_str("<h2>Charts</h2>\n");
    for c in charts {
        // An inline <svg> must not carry an XML declaration.
        let svg = c.svg.trim_start();
        let svg = if svg.starts_with("<?xml") { svg.find("?>").map_or(svg, |i| &svg[i + 2..]) } else { svg };
        let _ = writeln!(
            h,
            "<figure id=\"chart-{}\">{}<figcaption>{}</figcaption></figure>",
            c.name,
            svg,
            escape(&c.title)
        );
    }

    if !images.is_empty() {
        h.push_str("<h2>Validation images</h2>\n<p class=\"meta\">Last validation: labelled objects (left) beside the detections above 0.25 (right).</p>\n");
        for (name, png) in images {
            let _ = writeln!(
                h,
                "<figure id=\"image-{0}\"><img alt=\"{0}\" src=\"data:image/png;base64,{1}\"><figcaption>{0}</figcaption></figure>",
                escape(name),
                BASE64.encode(png)
            );
        }
    }
    if !run.validation.classes.is_empty() {
        h.push_str("<h2>Per-class results (last validation of each backend)</h2>\n");
        let mut last: Vec<ClassRecord> = Vec::new();
        for b in crate::records::backend_names(&run.iterations) {
            let rows: Vec<&ClassRecord> = run.validation.classes.iter().filter(|c| c.backend == b).collect();
            let e = rows.iter().map(|c| c.epoch).max();
            last.extend(rows.into_iter().filter(|c| Some(c.epoch) == e).cloned());
        }
        push_frame(&mut h, crate::validation::classes_frame(&last), &[0, 3]);
    }
    h.push_str("<h2>Summary</h2>\n<table><tr><th class=\"l\">key</th><th>value</th><th class=\"l\">unit</th></tr>\n");
    for (k, v, unit) in s.to_rows() {
        let _ = writeln!(
            h,
            "<tr><td class=\"l\">{}</td><td>{}</td><td class=\"l\">{unit}</td></tr>",
            escape(&k),
            escape(&readable(&v, unit))
        );
    }
    h.push_str("</table>\n");
    h.push_str("<h2>Epochs</h2>\n");
    push_frame(&mut h, tables::epochs_frame(&run.epochs), &[0]);
    let _ = writeln!(
        h,
        "<h2>Iterations (first {ITERATION_HEAD_ROWS} of {})</h2>",
        run.iterations.len()
    );
    push_frame(
        &mut h,
        tables::iterations_frame(&run.iterations).map(|df| df.head(Some(ITERATION_HEAD_ROWS))),
        &[0],
    );

    h.push_str("<h2>Configuration</h2>\n");
    let _ = writeln!(h, "<pre>{}</pre>", escape(&run.experiment_toml));
    h.push_str("<h2>Devices</h2>\n<table><tr><th class=\"l\">backend</th><th class=\"l\">device</th><th class=\"l\">details</th></tr>\n");
    for d in &s.devices {
        let details: Vec<String> =
            d.details.iter().map(|(k, v)| format!("{}: {}", escape(k), escape(v))).collect();
        let _ = writeln!(
            h,
            "<tr><td class=\"l\">{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td></tr>",
            escape(&d.backend),
            escape(&d.name),
            details.join("<br>")
        );
    }
    h.push_str("</table>\n<table><tr><th class=\"l\">component</th><th class=\"l\">version</th></tr>\n");
    for (k, v) in &s.versions {
        let _ = writeln!(h, "<tr><td class=\"l\">{}</td><td class=\"l\">{}</td></tr>", escape(k), escape(v));
    }
    let _ = writeln!(
        h,
        "</table>\n<p class=\"meta\">report schema version {}</p>\n</body></html>",
        crate::SCHEMA_VERSION
    );
    h
}

/// Summary values for people: 4 significant digits, bytes also in MiB (the tables keep full precision).
fn readable(value: &str, unit: &str) -> String {
    if unit == "bytes"
        && let Ok(b) = value.parse::<u64>()
    {
        return format!("{value} ({} MiB)", fmt_num(b as f64 / (1024.0 * 1024.0)));
    }
    match value.parse::<f64>() {
        Ok(v) if value.contains('.') || value.contains('e') => fmt_num(v),
        _ => value.to_string(),
    }
}

/// A DataFrame as an HTML table; `left` lists text columns (left-aligned).
pub(crate) fn push_frame(h: &mut String, df: Result<DataFrame, crate::ReportError>, left: &[usize]) {
    let df = match df {
        Ok(df) => df,
        Err(e) => {
            let _ = writeln!(h, "<p>table unavailable: {}</p>", escape(&e.to_string()));
            return;
        }
    };
    if df.height() == 0 {
        h.push_str("<p class=\"meta\">no rows</p>\n");
        return;
    }
    h.push_str("<div class=\"scroll\"><table><tr>");
    for (i, name) in df.get_column_names().iter().enumerate() {
        let cls = if left.contains(&i) { " class=\"l\"" } else { "" };
        let _ = write!(h, "<th{cls}>{}</th>", escape(name.as_str()));
    }
    h.push_str("</tr>\n");
    for row in 0..df.height() {
        h.push_str("<tr>");
        for (i, col) in df.columns().iter().enumerate() {
            let cls = if left.contains(&i) { " class=\"l\"" } else { "" };
            let text = match col.get(row) {
                Ok(AnyValue::Float64(v)) => fmt_num(v),
                Ok(AnyValue::String(v)) => v.to_string(),
                Ok(AnyValue::Null) => String::new(),
                Ok(v) => v.to_string(),
                Err(_) => String::new(),
            };
            let _ = write!(h, "<td{cls}>{}</td>", escape(&text));
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</table></div>\n");
}
