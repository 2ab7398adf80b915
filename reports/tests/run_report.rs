//! A synthetic run written to a folder: every file exists, tables round-trip, charts and HTML
//! carry what a reader needs, gate outputs are well-formed, and compare catches regressions.

use reports::demo::synthetic_run;
use reports::tables::{DELTA_COLUMNS, EPOCH_COLUMNS, ITERATION_COLUMNS, MEMORY_COLUMNS, SUMMARY_COLUMNS};
use reports::{OutputFormats, RunData, compare, read_run, write_run};
use std::path::{Path, PathBuf};

fn out_dir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn written(name: &str, run: &RunData, formats: OutputFormats) -> PathBuf {
    let dir = out_dir(name);
    write_run(&dir, run, formats).unwrap_or_else(|e| panic!("write_run: {e}"));
    dir
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn all_files_exist_and_are_not_empty() {
    let run = synthetic_run(30);
    let dir = out_dir("all_files");
    let files = write_run(&dir, &run, OutputFormats::all()).expect("write_run");
    let mut expected: Vec<String> = ["summary.json", "experiment.toml", "gate.json", "junit.xml", "gate.md", "report.html"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for t in ["iterations", "epochs", "memory", "summary", "deltas", "kernels", "classes", "curves", "confusion"] {
        expected.push(format!("tables/{t}.parquet"));
        expected.push(format!("tables/{t}.csv"));
    }
    for c in reports::charts::NAMES {
        expected.push(format!("charts/{c}.png"));
        expected.push(format!("charts/{c}.svg"));
    }
    for f in &expected {
        let p = dir.join(f);
        let len = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
        assert!(len > 0, "{f} missing or empty");
        assert!(files.files.contains(&p), "{f} not listed in RunFiles");
    }
    let png = std::fs::read(dir.join("charts/loss.png")).expect("png");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
}

#[test]
fn parquet_round_trips_exactly() {
    let run = synthetic_run(25);
    let dir = written("parquet_rt", &run, OutputFormats::all());
    let back = read_run(&dir).expect("read_run");
    assert_eq!(back.iterations, run.iterations);
    assert_eq!(back.epochs, run.epochs);
    assert_eq!(back.memory, run.memory);
    assert_eq!(back.summary, run.summary);
    assert_eq!(back.kernels, run.kernels);
    assert_eq!(back.validation, run.validation);
    assert_eq!(back.gates, run.gates);
    assert_eq!(back.deltas, run.deltas);
    assert_eq!(back.experiment_toml, run.experiment_toml);
}

#[test]
fn csv_has_the_schema_columns_and_reads_back_without_parquet() {
    let run = synthetic_run(12);
    let mut formats = OutputFormats::all();
    formats.parquet = false;
    let dir = written("csv_only", &run, formats);
    for (t, cols) in [
        ("iterations", ITERATION_COLUMNS),
        ("epochs", EPOCH_COLUMNS),
        ("memory", MEMORY_COLUMNS),
        ("summary", SUMMARY_COLUMNS),
        ("deltas", DELTA_COLUMNS),
    ] {
        let text = read(&dir.join(format!("tables/{t}.csv")));
        assert_eq!(text.lines().next(), Some(cols.join(",").as_str()), "{t}.csv header");
    }
    assert!(!dir.join("tables/iterations.parquet").exists());
    let back = read_run(&dir).expect("read_run from CSV");
    assert_eq!(back.iterations.len(), run.iterations.len());
    for (a, b) in back.iterations.iter().zip(&run.iterations) {
        assert_eq!((&a.backend, a.iteration, a.epoch, a.rss_bytes), (&b.backend, b.iteration, b.epoch, b.rss_bytes));
        assert!((a.loss - b.loss).abs() <= 1e-12 * b.loss.abs(), "{} vs {}", a.loss, b.loss);
        assert_eq!((a.loss_scale, a.skipped), (b.loss_scale, b.skipped), "loss scaling columns");
    }
    assert!(run.iterations.iter().any(|r| r.skipped), "the synthetic run has skipped steps");
    let html = read(&dir.join("report.html"));
    assert!(html.contains("mixed precision (gpu): loss scale 65536 at the first step, 16384 at the last; 2 of"), "loss-scale line");
}

#[test]
fn svg_charts_carry_legends_and_axis_units() {
    let run = synthetic_run(30);
    let dir = written("svg", &run, OutputFormats::all());
    let svg = |n: &str| read(&dir.join(format!("charts/{n}.svg")));
    // plotters writes each text on its own line inside <text>.
    let text = |s: &str| format!("\n{s}\n</text>");
    let loss = svg("loss");
    assert!(loss.contains(&text("cpu")) && loss.contains(&text("gpu")), "loss legend");
    assert!(loss.contains("iteration"));
    let delta = svg("loss_delta");
    assert!(delta.contains("limit per iteration"), "threshold legend");
    assert!(delta.contains("gpu vs cpu, per iteration"));
    assert!(svg("throughput").contains("forward") && svg("throughput").contains("images/s"));
    let mem = svg("memory");
    assert!(mem.contains("RSS") && mem.contains("MiB"));
    assert!(svg("map").contains("mAP@0.5"));
}

#[test]
fn html_is_self_contained_with_verdict_first() {
    let run = synthetic_run(30);
    let dir = written("html", &run, OutputFormats::all());
    let html = read(&dir.join("report.html"));
    let verdict = html.find("class=\"verdict FAIL\"").expect("FAIL verdict (one gate fails)");
    let first_svg = html.find("<svg").expect("inline svg");
    assert!(verdict < first_svg, "verdict must come before the charts");
    assert!(html.contains(">PASS<") && html.contains(">FAIL<"));
    assert_eq!(html.matches("<svg").count(), reports::charts::NAMES.len());
    assert!(!html.contains("<?xml"), "inline SVG must not carry an XML declaration");
    for forbidden in ["<script", "<link", "src=\"http", "@import", "url(http"] {
        assert!(!html.contains(forbidden), "HTML reaches out: {forbidden}");
    }
    assert!(html.contains("Demo GPU") && html.contains("name = &quot;synthetic-demo&quot;"));

    let mut passing = run.clone();
    passing.gates.retain(|g| g.pass);
    let dir = written("html_pass", &passing, OutputFormats::all());
    assert!(read(&dir.join("report.html")).contains("class=\"verdict PASS\""));
}

#[test]
fn gate_outputs_are_well_formed() {
    let run = synthetic_run(10);
    let dir = written("gates", &run, OutputFormats::all());
    let junit = read(&dir.join("junit.xml"));
    assert!(junit.starts_with("<?xml"));
    assert_eq!(junit.matches("<testcase ").count(), 3);
    assert_eq!(junit.matches("<failure ").count(), 1);
    assert_eq!(junit.matches("</testcase>").count(), 3);
    assert!(junit.contains("tests=\"3\" failures=\"1\""));
    let gate: serde_json::Value = serde_json::from_str(&read(&dir.join("gate.json"))).expect("gate.json");
    assert_eq!(gate["pass"], serde_json::Value::Bool(false));
    assert_eq!(gate["gates"].as_array().map(Vec::len), Some(3));
    let md = read(&dir.join("gate.md"));
    assert!(md.starts_with("# FAIL"));
    assert!(md.contains("| min_gpu_speedup | **FAIL** | 5.1 | 8 |"));
}

#[test]
fn deltas_follow_the_records() {
    let run = synthetic_run(20);
    assert_eq!(run.deltas.len(), 20);
    for d in &run.deltas {
        assert_eq!((d.backend.as_str(), d.reference.as_str()), ("gpu", "cpu"));
        // The demo GPU loss is within 2e-4 relative of the CPU loss.
        assert!(d.rel_delta <= 2e-4 + 1e-12 && d.rel_delta_window_mean <= 2e-4 + 1e-12);
    }
}

#[test]
fn compare_flags_injected_regressions_only() {
    let a = synthetic_run(30);
    let same = compare(&a, &a.clone(), 0.05);
    assert!(!same.has_regression(), "{}", same.markdown());

    let mut b = a.clone();
    for r in b.iterations.iter_mut().filter(|r| r.backend == "gpu") {
        r.step_s = 2.0 * r.step_s + r.data_wait_s; // GPU twice as slow
    }
    for r in b.iterations.iter_mut().filter(|r| r.backend == "cpu") {
        r.loss *= 1.03; // within the 5% margin
    }
    b.refresh();
    let c = compare(&a, &b, 0.05);
    let regs: Vec<(String, &str)> = c.regressions().iter().map(|r| (r.backend.clone(), r.metric)).collect();
    assert_eq!(regs, vec![("gpu".to_string(), "images_per_s")]);
    let md = c.markdown();
    assert!(md.starts_with("# Comparison: 1 regression(s)"));
    assert!(md.contains("| gpu | images_per_s (images/s) |") && md.contains("**REGRESSION**"));

    let mut nan = a.clone();
    for r in nan.iterations.iter_mut().filter(|r| r.backend == "gpu") {
        r.loss = f64::NAN;
    }
    nan.refresh();
    assert!(compare(&a, &nan, 0.05).regressions().iter().any(|r| r.metric == "final_loss"));
}

#[test]
fn compare_dirs_reads_two_run_folders() {
    let a = synthetic_run(15);
    let mut b = a.clone();
    for e in b.epochs.iter_mut() {
        e.map50 -= 0.1;
    }
    b.refresh();
    let (da, db) = (written("cmp_a", &a, OutputFormats::all()), written("cmp_b", &b, OutputFormats::all()));
    let c = reports::compare_dirs(&da, &db, 0.02).expect("compare_dirs");
    assert!(c.regressions().iter().any(|r| r.metric == "final_map50" && r.backend == "cpu"));
}

#[test]
fn empty_run_still_renders() {
    let run = RunData::new(vec![], vec![], vec![], Default::default(), vec![], String::new());
    let dir = written("empty", &run, OutputFormats::all());
    let html = read(&dir.join("report.html"));
    // No gates is no verdict (issue 11 item 4), not a failure.
    assert!(html.contains("verdict NONE\">NO GATES") && html.contains("no gates defined"));
    assert!(read(&dir.join("charts/loss.svg")).contains("no iterations recorded"));
    assert!(read_run(&dir).expect("read empty").iterations.is_empty());
}

#[test]
fn schema_doc_describes_every_column() {
    let doc = read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("SCHEMA.md"));
    assert!(doc.contains(&format!("Schema version: {}", reports::SCHEMA_VERSION)));
    use reports::validation::{CLASS_COLUMNS, CONFUSION_COLUMNS, CURVE_COLUMNS};
    for cols in [ITERATION_COLUMNS, EPOCH_COLUMNS, MEMORY_COLUMNS, SUMMARY_COLUMNS, DELTA_COLUMNS, CLASS_COLUMNS, CURVE_COLUMNS, CONFUSION_COLUMNS] {
        for c in cols {
            assert!(doc.contains(&format!("| `{c}` |")), "SCHEMA.md lacks column {c}");
        }
    }
}

#[test]
fn single_backend_run_renders() {
    let mut run = synthetic_run(8);
    run.iterations.retain(|r| r.backend == "cpu");
    run.epochs.retain(|r| r.backend == "cpu");
    run.refresh();
    assert!(run.deltas.is_empty());
    let dir = written("single", &run, OutputFormats::all());
    assert!(read(&dir.join("charts/throughput.svg")).contains("\ncpu\n</text>"));
    assert!(read(&dir.join("charts/loss_delta.svg")).contains("needs two backends"));
}
