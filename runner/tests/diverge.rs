//! `runner diverge`: CPU against the GPU (lavapipe in CI) in lockstep on the half-width
//! yolov4-tiny at 64 px, and its one-line errors. The localisation itself (a planted fault named
//! exactly, identical runs never diverging) is tested without a GPU in
//! `engine/tests/lockstep_divergence.rs`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("runner-diverge-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create test dir");
    d
}

fn experiment(d: &Path, backends: &str) -> PathBuf {
    let cfg = Path::new(env!("CARGO_MANIFEST_DIR")).join("../experiments/cfg/yolov4-tiny-half.cfg");
    let text = format!(
        "[experiment]\nname = \"div\"\nseed = 4\n\n[model]\ncfg = \"{}\"\nclasses = 2\nwidth = 64\nheight = 64\n\n\
         [data]\nsynthetic = {{ images = 8, val_images = 2, classes = 2, min_size = 12, max_size = 40, max_objects = 2 }}\n\n\
         [train]\nbatch = 2\nlearning_rate = 0.001\nburn_in = 0\n\n[backends]\nlist = {backends}\n\n[report]\nout_dir = \"runs\"\n",
        cfg.display()
    );
    let p = d.join("exp.toml");
    std::fs::write(&p, text).expect("write experiment");
    p
}

fn runner(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_runner")).current_dir(cwd).args(args).output().expect("runner starts")
}

fn text(o: &[u8]) -> String {
    String::from_utf8_lossy(o).to_string()
}

#[test]
fn cpu_against_gpu_writes_the_table_chart_and_report() {
    if engine::gpu::list_adapters().is_empty() {
        assert!(std::env::var("REQUIRE_GPU").map_or(true, |v| v != "1"), "REQUIRE_GPU=1 but no adapter");
        return;
    }
    let d = dir("gpu");
    let exp = experiment(&d, "[\"cpu\", \"gpu\"]");
    let out = runner(&d, &["diverge", exp.to_str().unwrap(), "--iterations", "2"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    println!("{stdout}");
    // 0: no divergence; 1: a tensor diverged (the synthetic images' flat maxpool windows can
    // legitimately flip an argmax): either way the localiser ran to its verdict.
    assert!(matches!(out.status.code(), Some(0 | 1)), "{stdout}\n{stderr}");
    assert!(stdout.contains("iteration 1: loss cpu "), "{stdout}");
    assert!(stdout.contains("per-layer table, iteration"), "{stdout}");
    assert!(stdout.contains("argmax flips") && stdout.contains("ignore flips"), "{stdout}");
    let diverged = out.status.code() == Some(1);
    assert_eq!(stdout.contains("first divergence: iteration"), diverged, "{stdout}");
    // A run that stays within the tolerance still names where the backends were furthest apart.
    assert_eq!(stdout.contains("largest difference: iteration"), !diverged, "{stdout}");
    let run = d.join("runs/div-diverge-001");
    let csv = std::fs::read_to_string(run.join("tables/divergence.csv")).expect("divergence.csv");
    assert!(csv.starts_with("iteration,layer,layer_type,phase,tensor,rel_diff,max_abs_diff,n_outside,n\n"), "{csv}");
    for phase in [",forward,output,", ",backward,delta,", ",backward,weights grad,", ",update,weights,", ",known,argmax flips,", ",known,ignore flips,"] {
        assert!(csv.contains(phase), "no {phase} row: {csv}");
    }
    for f in ["tables/divergence.parquet", "charts/divergence.png", "charts/divergence.svg", "report.html"] {
        assert!(run.join(f).exists(), "{f} missing");
    }
    let html = std::fs::read_to_string(run.join("report.html")).unwrap();
    assert!(html.contains("Divergence by layer") && html.contains("<svg"), "report lacks the section or chart");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn one_backend_or_a_bad_tolerance_is_a_one_line_error() {
    let d = dir("errors");
    let exp = experiment(&d, "[\"cpu\"]");
    let out = runner(&d, &["diverge", exp.to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("exp.toml") && stderr.contains("[backends] list"), "{stderr}");
    let out = runner(&d, &["diverge", exp.to_str().unwrap(), "--tolerance=-1"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--tolerance"), "{stderr}");
    // Refused before anything was made: no folder.
    assert!(!d.join("runs").exists());
    let _ = std::fs::remove_dir_all(&d);
}
