//! Issue 17, "reports users can trust": each figure that was wrong or misleading, checked on the
//! records and on the files a run folder gets (throughput, phase times, memory windows, charts
//! of single-backend and one-epoch runs, the per-iteration limit, uninformative gates, compare).

use reports::demo::synthetic_run;
use reports::{GateResult, IterationRecord, MemorySample, OutputFormats, RunData, compare, read_run, write_run};
use std::path::{Path, PathBuf};

fn out_dir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("trusted-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn written(name: &str, run: &RunData) -> PathBuf {
    let dir = out_dir(name);
    write_run(&dir, run, OutputFormats::all()).unwrap_or_else(|e| panic!("write_run: {e}"));
    dir
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn it(backend: &str, iteration: u64, images: u64, step_s: f64) -> IterationRecord {
    IterationRecord {
        backend: backend.into(),
        iteration,
        images,
        step_s,
        data_wait_s: 0.0,
        images_per_s: images as f64 / step_s,
        loss: 1.0,
        ..Default::default()
    }
}

/// Item 1: 4 images per iteration at 0.1 s, 1 s and 0.1 s (after a first, warm-up iteration):
/// 12 images in 1.2 s is 10 images/s; the mean of the rates (40, 4, 40) would say 28.
#[test]
fn throughput_is_total_images_over_total_time() {
    let its = vec![it("cpu", 1, 4, 5.0), it("cpu", 2, 4, 0.1), it("cpu", 3, 4, 1.0), it("cpu", 4, 4, 0.1)];
    let run = RunData::new(its, vec![], vec![], Default::default(), vec![], String::new());
    let b = run.summary.backend("cpu").expect("cpu summary");
    assert!((b.images_per_s - 10.0).abs() < 1e-9, "images/s {}", b.images_per_s);
    assert_eq!(b.images, 16);
    assert!((b.train_time_s - 6.2).abs() < 1e-9);
    // The data wait belongs to the iteration's time too.
    let mut its = run.iterations.clone();
    for r in &mut its {
        r.data_wait_s = 0.1;
    }
    let run = RunData::new(its, vec![], vec![], Default::default(), vec![], String::new());
    assert!((run.summary.backends[0].images_per_s - 12.0 / 1.5).abs() < 1e-9);
}

/// Item 3: the phase breakdown adds up to the iteration's wall time, uses the GPU's device time
/// where it was timed (not the host's encode time with the rest in "sync"), and host time on the CPU.
#[test]
fn phase_times_are_device_time_on_a_timed_gpu_and_add_up() {
    let run = synthetic_run(12);
    for b in &run.summary.backends {
        let its: Vec<&IterationRecord> = run.iterations.iter().filter(|r| r.backend == b.backend).collect();
        let wall = its.iter().map(|r| r.wall_s()).sum::<f64>() / its.len() as f64;
        let parts: f64 = b.phase.values().iter().sum();
        assert!((parts - wall).abs() < 1e-12, "{}: phases {parts} vs wall {wall}", b.backend);
    }
    let gpu = run.summary.backend("gpu").unwrap();
    assert_eq!(gpu.phase.source, "device");
    let device_fwd = run.iterations.iter().filter(|r| r.backend == "gpu").map(|r| r.device_forward_s.unwrap()).sum::<f64>() / 12.0;
    assert!((gpu.phase.forward_s - device_fwd).abs() < 1e-12 && gpu.phase.forward_s > 10.0 * 1e-4, "{} vs {device_fwd}", gpu.phase.forward_s);
    assert_eq!(run.summary.backend("cpu").unwrap().phase.source, "host");
    // Device times survive the tables: empty for the CPU, numbers for the GPU.
    let dir = written("phases", &run);
    let csv = read(&dir.join("tables/iterations.csv"));
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let col = header.iter().position(|h| *h == "device_forward_s").expect("device_forward_s column");
    for line in csv.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        assert_eq!(f[col].is_empty(), f[0] == "cpu", "{line}");
    }
    assert_eq!(read_run(&dir).unwrap().iterations, run.iterations);
}

/// Item 4: each backend's peak is the peak of its own window (sequential mode), not the
/// process-wide value repeated for every backend; the run's peak includes samples outside windows.
#[test]
fn peak_rss_per_backend_window() {
    let mut run = synthetic_run(6);
    let sample = |t: f64, rss: u64, backend: &str| MemorySample { t_s: t, rss_bytes: rss, backend: backend.into(), ..Default::default() };
    run.memory = vec![sample(0.0, 3_000_000_000, ""), sample(1.0, 2_000_000_000, "cpu"), sample(2.0, 900_000_000, "gpu")];
    run.refresh();
    assert_eq!(run.summary.backend("cpu").unwrap().peak_rss_bytes, 2_000_000_000);
    assert_eq!(run.summary.backend("gpu").unwrap().peak_rss_bytes, 900_000_000);
    assert_eq!(run.summary.peak_rss_bytes, 3_000_000_000);
}

/// The sizes plotters wrote into an SVG (`width`, `height`, `r` attributes and rect corners).
fn negative_sizes(svg: &str) -> Vec<String> {
    let mut bad = Vec::new();
    for attr in ["width=\"-", "height=\"-", " r=\"-"] {
        if let Some(i) = svg.find(attr) {
            bad.push(svg[i.saturating_sub(60)..(i + 40).min(svg.len())].to_string());
        }
    }
    bad
}

/// Item 5: a single-backend run draws every chart with no negative size (the throughput bars
/// had negative widths), and its bars have a width.
#[test]
fn single_backend_charts_have_no_negative_sizes() {
    let mut run = synthetic_run(8);
    run.iterations.retain(|r| r.backend == "cpu");
    run.epochs.retain(|r| r.backend == "cpu");
    run.memory.retain(|r| r.backend == "cpu");
    run.kernels.clear();
    run.validation.classes.retain(|r| r.backend == "cpu");
    run.validation.curves.retain(|r| r.backend == "cpu");
    run.validation.confusion.retain(|r| r.backend == "cpu");
    run.refresh();
    let dir = written("single-charts", &run);
    for name in reports::charts::NAMES {
        let svg = read(&dir.join(format!("charts/{name}.svg")));
        assert!(negative_sizes(&svg).is_empty(), "{name}.svg: {:?}", negative_sizes(&svg));
    }
    // The images/s bar: a filled rectangle in the first backend colour, wider than a hairline.
    let svg = read(&dir.join("charts/throughput.svg"));
    let bar = svg.lines().find(|l| l.contains("<rect") && l.contains("fill=\"#0072B2\"")).expect("images/s bar");
    let width: f64 = bar.split("width=\"").nth(1).and_then(|w| w.split('"').next()).and_then(|w| w.parse().ok()).expect("bar width");
    assert!(width > 20.0, "{bar}");
}

/// x coordinates of the dashes plotters drew in `stroke` at the height of the first one (the
/// limit line itself; its legend sample sits elsewhere).
fn xs_of_stroke(svg: &str, stroke: &str) -> Vec<f64> {
    let points: Vec<(f64, f64)> = svg
        .lines()
        .filter(|l| l.contains("<polyline") && l.contains(&format!("stroke=\"{stroke}\"")))
        .filter_map(|l| l.split("points=\"").nth(1).and_then(|p| p.split('"').next()).map(str::to_string))
        .flat_map(|pts| {
            pts.split_whitespace()
                .filter_map(|p| {
                    let mut xy = p.split(',').map(|v| v.parse::<f64>().ok());
                    Some((xy.next()??, xy.next()??))
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let Some(&(_, y)) = points.first() else { return Vec::new() };
    points.into_iter().filter(|p| p.1 == y).map(|p| p.0).collect()
}

/// Item 5: the per-iteration limit is drawn over the iterations its gate covers, not all of them.
#[test]
fn per_iteration_limit_is_drawn_over_its_iterations_only() {
    let mut run = synthetic_run(40);
    run.summary.parity.loss_rel_delta_iter_first = Some(10);
    let dir = written("limit-first", &run);
    let svg = read(&dir.join("charts/loss_delta.svg"));
    let limit = xs_of_stroke(&svg, "#C81E1E");
    let window = xs_of_stroke(&svg, "#E68C00");
    assert!(!limit.is_empty() && !window.is_empty(), "both limit lines drawn");
    let (limit_end, plot_end) = (limit.iter().cloned().fold(f64::MIN, f64::max), window.iter().cloned().fold(f64::MIN, f64::max));
    let plot_start = window.iter().cloned().fold(f64::MAX, f64::min);
    // Iteration 10 of 1..40 is about a quarter of the way.
    let at = (limit_end - plot_start) / (plot_end - plot_start);
    assert!((0.2..0.3).contains(&at), "per-iteration limit ends at {at:.2} of the axis (expected ≈ 9/39)");
    assert!(svg.contains("iterations 1–10"), "legend names the covered iterations");
}

/// Item 5: a one-epoch run's mAP chart is centred on its epoch, not spread over −1…1.
#[test]
fn one_epoch_map_chart_stays_at_its_epoch() {
    let mut run = synthetic_run(6);
    run.epochs.retain(|e| e.epoch == 0);
    run.refresh();
    let svg = read(&written("one-epoch", &run).join("charts/map.svg"));
    assert!(svg.contains("\n0\n</text>"), "tick at epoch 0");
    assert!(!svg.contains("\n-1\n</text>") && !svg.contains("\n-0.5\n</text>"), "no tick before epoch 0");
}

/// Item 6: a gate that proves nothing says so in gate.json, gate.md, junit.xml and the report.
#[test]
fn uninformative_gates_are_marked_everywhere() {
    let mut run = synthetic_run(6);
    run.gates = vec![
        GateResult::new("loss relative delta per iteration", 1e-4, 0.01, true, "worst at iteration 3".into()),
        GateResult::new("mAP@0.5 absolute delta", 0.0, 0.02, true, "final mAP@0.5: gpu 0.0000 vs cpu 0.0000".into())
            .not_informative("every backend's mAP@0.5 is below 0.05"),
    ];
    let dir = written("weak-gates", &run);
    let json: serde_json::Value = serde_json::from_str(&read(&dir.join("gate.json"))).unwrap();
    assert_eq!(json["gates"][1]["informative"], serde_json::Value::Bool(false));
    assert_eq!(json["gates"][0]["informative"], serde_json::Value::Bool(true));
    let md = read(&dir.join("gate.md"));
    assert!(md.contains("| PASS (not informative) |") && md.contains("2 of 2 gates passed (1 not informative)"), "{md}");
    let junit = read(&dir.join("junit.xml"));
    assert!(junit.contains("skipped=\"1\"") && junit.contains("<skipped message=\"not informative\"/>"), "{junit}");
    let html = read(&dir.join("report.html"));
    assert!(html.contains(">PASS (not informative)<") && html.contains("1 not informative"));
    // Read back, the mark stays.
    assert!(!read_run(&dir).unwrap().gates[1].informative);
}

/// Item 6: comparing runs of different experiment files, or throughput on different devices,
/// is said, and throughput across devices is never a regression.
#[test]
fn compare_says_when_runs_are_not_comparable() {
    let a = synthetic_run(20);
    let mut b = a.clone();
    b.summary.experiment_hash = "ffff0000".into();
    for r in b.iterations.iter_mut().filter(|r| r.backend == "gpu") {
        r.step_s *= 3.0;
    }
    b.summary.devices[1].name = "Apple M2 (Metal)".into();
    b.refresh();
    let c = compare(&a, &b, 0.05);
    let md = c.markdown();
    assert!(md.contains("different experiment files (hash 0123abcd"), "{md}");
    assert!(md.contains("backend gpu ran on `Demo GPU` in A and `Apple M2 (Metal)` in B"), "{md}");
    assert!(!c.has_regression(), "{md}");
    assert!(md.contains("not comparable (other device)"));
    // Same device: the same slow-down is a regression.
    b.summary.devices[1].name = "Demo GPU".into();
    assert!(compare(&a, &b, 0.05).regressions().iter().any(|r| r.metric == "images_per_s"));
}

/// A run folder of schema 2 (old column names, no device times) still reads back.
#[test]
fn schema_2_tables_read_back() {
    let run = synthetic_run(4);
    let dir = written("schema2", &run);
    std::fs::remove_file(dir.join("tables/iterations.parquet")).unwrap();
    let old = "backend,iteration,epoch,loss,box_loss,obj_loss,class_loss,avg_iou,recall50,recall75,count,lr,images_per_s,t_data_s,t_forward_s,t_backward_s,t_update_s,t_sync_s,rss_bytes,gpu_bytes\n\
               cpu,1,0,5.0,2.0,2.0,1.0,0.1,0.0,0.0,3.0,0.001,40.0,0.001,0.04,0.05,0.01,0.0,1000,0\n";
    std::fs::write(dir.join("tables/iterations.csv"), old).unwrap();
    // A schema-2 summary: other phase names, images/s as a mean of rates.
    let mut summary: serde_json::Value = serde_json::from_str(&read(&dir.join("summary.json"))).unwrap();
    summary["schema_version"] = 2.into();
    for b in summary["backends"].as_array_mut().unwrap() {
        b["phase"] = serde_json::json!({ "data_s": 0.001, "forward_s": 0.04, "backward_s": 0.05, "update_s": 0.01, "sync_s": 0.0 });
        b["images_per_s"] = 99.0.into();
    }
    std::fs::write(dir.join("summary.json"), summary.to_string()).unwrap();
    let back = read_run(&dir).expect("schema-2 folder");
    let r = &back.iterations[0];
    assert_eq!((r.data_wait_s, r.host_forward_s, r.host_wait_s, r.device_forward_s, r.images), (0.001, 0.04, 0.0, None, 4));
    // Per-backend figures are derived again, as this version derives them.
    let cpu = back.summary.backend("cpu").unwrap();
    assert!((cpu.images_per_s - 4.0 / 0.101).abs() < 1e-9 && cpu.phase.source == "host", "{cpu:?}");
}
