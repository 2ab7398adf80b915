//! Issue 17: a run folder as complete as Ultralytics' and Darknet's, with figures to trust —
//! through the `runner` binary on the half-width yolov4-tiny at 64 px (fast on the CPU and on
//! lavapipe).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("runner-run-folder-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create test dir");
    d
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// An experiment on the half-width cfg: `backends` as TOML, `train` lines added to [train].
fn experiment(d: &Path, backends: &str, train: &str, thresholds: &str) -> PathBuf {
    let cfg = repo().join("experiments/cfg/yolov4-tiny-half.cfg");
    let text = format!(
        "[experiment]\nname = \"folder\"\nseed = 4\n\n[model]\ncfg = \"{}\"\nclasses = 2\nwidth = 64\nheight = 64\n\n\
         [data]\nsynthetic = {{ images = 8, val_images = 4, classes = 2, min_size = 12, max_size = 40, max_objects = 2 }}\n\n\
         [train]\nbatch = 2\nlearning_rate = 0.001\nburn_in = 0\n{train}\n\n[backends]\nlist = {backends}\n\n[thresholds]\n{thresholds}\n\n\
         [report]\nout_dir = \"runs\"\n",
        cfg.display()
    );
    let p = d.join("exp.toml");
    std::fs::write(&p, text).expect("write experiment");
    p
}

fn runner(cwd: &Path, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_runner")).current_dir(cwd).args(args).output().expect("runner starts");
    assert!(out.status.code().is_some(), "runner was killed by a signal");
    out
}

fn text(o: &[u8]) -> String {
    String::from_utf8_lossy(o).to_string()
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// (header, rows) of a CSV table.
fn csv(p: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let t = read(p);
    let mut lines = t.lines();
    let header = lines.next().unwrap_or_default().split(',').map(str::to_string).collect();
    (header, lines.map(|l| l.split(',').map(str::to_string).collect()).collect())
}

fn col(header: &[String], name: &str) -> usize {
    header.iter().position(|h| h == name).unwrap_or_else(|| panic!("no column {name} in {header:?}"))
}

/// What Ultralytics and Darknet users look for: resolved settings, best/last/final weights,
/// per-class AP per epoch, curves and a confusion matrix, validation images, progress lines
/// with lr, running average, images/s and ETA, and a line while evaluating.
#[test]
fn cpu_run_folder_is_complete() {
    let d = dir("cpu");
    let exp = experiment(&d, "[\"cpu\"]", "epochs = 2", "min_map50 = 0.0");
    let out = runner(&d, &["run", exp.to_str().unwrap()]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let run = d.join("runs/folder-001");
    // Progress without a terminal: Darknet's figures per iteration, and evaluation announced.
    let first = stdout.lines().find(|l| l.contains("iter 1/8")).unwrap_or_else(|| panic!("{stdout}"));
    for part in ["epoch 0", "loss ", "avg ", "lr 0.001000", "img/s", "ETA "] {
        assert!(first.contains(part), "{part:?} missing in {first:?}");
    }
    assert!(stdout.contains("cpu: evaluating epoch 1 on the validation split (4 images)"), "{stdout}");
    // resolved.toml: every default filled in, and itself a valid experiment.
    let resolved = read(&run.join("resolved.toml"));
    for key in ["momentum = 0.9", "decay = 0.0005", "policy = \"steps\"", "hue = ", "warmup_iterations = 5", "mode = \"sequential\"", "formats = ["] {
        assert!(resolved.contains(key), "resolved.toml lacks {key}: {resolved}");
    }
    let check = runner(&run, &["check", "resolved.toml"]);
    assert_eq!(check.status.code(), Some(0), "resolved.toml is not a valid experiment: {}", text(&check.stderr));
    // Darknet's weights files.
    for f in ["folder_best.weights", "folder_last.weights", "folder_final.weights", "folder_8.weights"] {
        assert!(run.join("checkpoints/cpu").join(f).is_file(), "missing {f}");
    }
    // Per-class AP of every epoch; curves and the whole confusion matrix of the last validation.
    let (h, rows) = csv(&run.join("tables/classes.csv"));
    assert_eq!(rows.len(), 2 * 2, "2 classes × 2 epochs");
    let names: Vec<&str> = rows.iter().map(|r| r[col(&h, "name")].as_str()).collect();
    assert!(names.contains(&"rectangle") && names.contains(&"ellipse"), "{names:?}");
    let (_, curves) = csv(&run.join("tables/curves.csv"));
    assert_eq!(curves.len(), 3 * 101, "2 classes and their mean at 101 thresholds");
    let (_, cells) = csv(&run.join("tables/confusion.csv"));
    assert_eq!(cells.len(), 3 * 3);
    for c in ["loss_components", "pr_curve", "f1_curve", "confusion_matrix"] {
        assert!(run.join(format!("charts/{c}.png")).is_file() && run.join(format!("charts/{c}.svg")).is_file(), "chart {c}");
    }
    for i in 0..4 {
        assert!(run.join(format!("images/val_{i}_cpu.png")).is_file(), "validation image {i}");
    }
    let html = read(&run.join("report.html"));
    assert!(html.contains("data:image/png;base64,") && html.contains("Per-class results"));
    // Throughput is total images over total time (after the first iteration).
    let (h, its) = csv(&run.join("tables/iterations.csv"));
    let (images, wall): (f64, f64) = its[1..].iter().fold((0.0, 0.0), |(n, t), r| {
        let f = |c: &str| r[col(&h, c)].parse::<f64>().unwrap();
        (n + f("images"), t + f("step_s") + f("data_wait_s"))
    });
    let summary: serde_json::Value = serde_json::from_str(&read(&run.join("summary.json"))).unwrap();
    let ips = summary["backends"][0]["images_per_s"].as_f64().unwrap();
    assert!((ips - images / wall).abs() <= 1e-6 * ips, "summary {ips} vs {}", images / wall);
    let _ = std::fs::remove_dir_all(&d);
}

/// Item 3: a GPU backend's iterations carry the device time of each phase (timestamps), beside
/// the host's encode and wait; the CPU's carry none. The loader's load time is recorded apart
/// from the wait for it.
#[test]
fn gpu_iterations_carry_device_time_per_phase() {
    if engine::gpu::list_adapters().is_empty() {
        assert!(std::env::var("REQUIRE_GPU").map_or(true, |v| v != "1"), "REQUIRE_GPU=1 but no adapter");
        return;
    }
    let d = dir("gpu");
    let exp = experiment(&d, "[\"cpu\", \"gpu\"]", "max_batches = 2", "loss_rel_delta_iter = 0.01");
    let out = runner(&d, &["run", exp.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let run = d.join("runs/folder-001");
    let summary: serde_json::Value = serde_json::from_str(&read(&run.join("summary.json"))).unwrap();
    let timed = summary["devices"][1]["details"]["timestamps"].as_str() == Some("on");
    let (h, rows) = csv(&run.join("tables/iterations.csv"));
    let device = ["device_forward_s", "device_loss_s", "device_backward_s", "device_update_s", "device_other_s"];
    for r in &rows {
        let v = |c: &str| r[col(&h, c)].clone();
        assert!(v("data_load_s").parse::<f64>().unwrap() > 0.0, "{r:?}");
        if v("backend") == "cpu" || !timed {
            assert!(device.iter().all(|c| v(c).is_empty()), "untimed rows have no device time: {r:?}");
            continue;
        }
        let parts: Vec<f64> = device.iter().map(|c| v(c).parse().unwrap_or_else(|_| panic!("{c} of {r:?}"))).collect();
        let step: f64 = v("step_s").parse().unwrap();
        assert!(parts[0] > 0.0 && parts[2] > 0.0 && parts[1] > 0.0, "forward, loss and backward ran on the device: {r:?}");
        assert!(parts.iter().sum::<f64>() <= step, "device time {} within the step {step}", parts.iter().sum::<f64>());
    }
    let gpu = &summary["backends"][1];
    assert_eq!(gpu["phase"]["source"].as_str(), Some(if timed { "device" } else { "host" }));
    let _ = std::fs::remove_dir_all(&d);
}

/// Item 6: an OS error is said once, not twice ("No such file or directory (os error 2): No
/// such file or directory (os error 2)").
#[test]
fn os_errors_are_said_once() {
    let d = dir("oserr");
    let missing = d.join("nowhere");
    let cmp = runner(&d, &["compare", missing.to_str().unwrap(), missing.to_str().unwrap()]);
    let map = runner(&d, &["map", "x.data", "yolov4-tiny", missing.to_str().unwrap()]);
    let report = runner(&d, &["report", missing.to_str().unwrap()]);
    for (what, o) in [("compare", cmp), ("map", map), ("report", report)] {
        let e = text(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{what}: {e}");
        assert_eq!(e.matches("os error 2").count(), 1, "{what}: {e}");
    }
    let _ = std::fs::remove_dir_all(&d);
}
