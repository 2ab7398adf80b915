//! Issue 16: `experiments/classifier-parity.toml` through the `runner` binary, reduced for CI
//! (lavapipe trains the tiny classifier at ~10 images/s): the whole experiment on the CPU alone
//! must lift top-1 accuracy well above chance (1/6), and a short CPU + GPU run must hold the
//! loss-parity and top-1 gates and record the accuracy columns and chart.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// The shipped experiment with `edits` (from, to) applied, written into a fresh folder.
fn variant(name: &str, edits: &[(&str, &str)]) -> (PathBuf, PathBuf) {
    let d = std::env::temp_dir().join(format!("runner-classifier-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("test dir");
    let mut text = std::fs::read_to_string(repo().join("experiments/classifier-parity.toml")).expect("experiment");
    for (from, to) in edits {
        assert!(text.contains(from), "experiment has no `{from}`");
        text = text.replace(from, to);
    }
    let p = d.join("exp.toml");
    std::fs::write(&p, text).expect("write experiment");
    (d, p)
}

fn run(d: &Path, exp: &Path) -> (i32, String, PathBuf) {
    let out = Command::new(env!("CARGO_BIN_EXE_runner")).current_dir(d).args(["run", exp.to_str().unwrap()]).output().expect("runner");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let run_dir = d.join("runs").join("classifier-parity-001");
    (out.status.code().unwrap_or(-1), text, run_dir)
}

#[test]
fn cpu_classifier_learns_well_above_chance() {
    let (d, exp) = variant("cpu", &[("list = [\"cpu\", \"gpu\"]", "list = [\"cpu\"]"), ("top1_abs_delta = 0.2\n", ""),
        ("loss_rel_delta_iter = 0.01\n", ""), ("out_dir = \"../runs\"", "out_dir = \"runs\"")]);
    let (code, text, run_dir) = run(&d, &exp);
    assert_eq!(code, 0, "{text}");
    let epochs = std::fs::read_to_string(run_dir.join("tables/epochs.csv")).expect("epochs table");
    let header: Vec<&str> = epochs.lines().next().unwrap_or_default().split(',').collect();
    let top1 = header.iter().position(|h| *h == "top1").expect("top1 column");
    let last: f64 = epochs.lines().last().and_then(|l| l.split(',').nth(top1)).and_then(|v| v.parse().ok()).expect("top1 value");
    assert!(last >= 0.5, "final top-1 {last} (chance 1/6)\n{text}");
    assert!(run_dir.join("charts/accuracy.svg").is_file());
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn cpu_and_gpu_classifiers_train_alike() {
    if engine::gpu::list_adapters().is_empty() {
        assert!(std::env::var("REQUIRE_GPU").is_err() || std::env::var("REQUIRE_GPU").is_ok_and(|v| v != "1"), "REQUIRE_GPU=1 but no adapter");
        eprintln!("no GPU adapter: skipped");
        return;
    }
    // 2 epochs of 48 images at batch 16 = 6 iterations per backend.
    // Short enough that the two trainings have not drifted apart: the top-1 delta is held tight.
    let (d, exp) = variant("parity", &[("images = 384, val_images = 96", "images = 48, val_images = 32"), ("epochs = 20", "epochs = 2"),
        ("min_top1 = 0.5\n", ""), ("top1_abs_delta = 0.2", "top1_abs_delta = 0.05\nloss_rel_delta_window = 0.01"),
        ("out_dir = \"../runs\"", "out_dir = \"runs\"")]);
    let (code, text, run_dir) = run(&d, &exp);
    assert_eq!(code, 0, "{text}");
    let gate = std::fs::read_to_string(run_dir.join("gate.json")).expect("gate.json");
    for g in ["loss relative delta per iteration", "top-1 accuracy absolute delta"] {
        assert!(gate.contains(g), "{g} missing from {gate}");
    }
    let epochs = std::fs::read_to_string(run_dir.join("tables/epochs.csv")).expect("epochs table");
    assert_eq!(epochs.lines().count(), 1 + 2 * 2, "{epochs}");
    let _ = std::fs::remove_dir_all(&d);
}
