//! `runner run` writes checkpoints, and `runner run --resume RUN_DIR` continues the run: its
//! iterations equal those of one uninterrupted run, bit for bit (CPU backend). Writing them
//! changes no step, also where a GPU lane has the next batch's upload recorded (lavapipe).

use std::path::{Path, PathBuf};
use std::process::Command;

fn experiment(dir: &Path, name: &str, max_batches: u64) -> PathBuf {
    experiment_with(dir, name, max_batches, 2, "\"cpu\"")
}

fn experiment_with(dir: &Path, name: &str, max_batches: u64, checkpoint_every: u64, backends: &str) -> PathBuf {
    let text = format!(
        r#"[experiment]
name = "resume"
seed = 5

[model]
cfg = "yolov4-tiny"
classes = 2
width = 64
height = 64

[data]
synthetic = {{ images = 8, val_images = 2, classes = 2, min_size = 8, max_size = 32, max_objects = 2 }}

[train]
batch = 2
max_batches = {max_batches}
learning_rate = 0.001
burn_in = 0
checkpoint_every = {checkpoint_every}

[backends]
list = [{backends}]

[report]
out_dir = "runs"
formats = ["csv", "json"]
"#
    );
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn runner(args: &[&str]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_runner")).args(args).output().expect("runner starts");
    assert!(out.status.code().is_some(), "runner was killed");
    out
}

/// (iteration, loss bits as printed) rows of a run's iteration table.
fn losses(run: &Path) -> Vec<(String, String)> {
    losses_of(run, "cpu")
}

/// (iteration, loss bits as printed) rows of one backend in a run's iteration table.
fn losses_of(run: &Path, backend: &str) -> Vec<(String, String)> {
    let csv = std::fs::read_to_string(run.join("tables/iterations.csv")).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (b, it, loss) = (col("backend"), col("iteration"), col("loss"));
    lines.filter(|l| l.split(',').nth(b) == Some(backend)).map(|l| {
        let f: Vec<&str> = l.split(',').collect();
        (f[it].to_string(), f[loss].to_string())
    }).collect()
}

/// Each step uploads the next batch while the device runs it (Trainer::step_staging). On the GPU
/// lane (lavapipe): a run of 6 iterations with a checkpoint after every second one (the one after
/// iteration 2 read from the device with iteration 3's upload already recorded) equals, bit for
/// bit from iteration 4 on, a run of 3 resumed to 6, whose iteration 4 uploads its own batch; so
/// each step trains on its own batch, and checkpoints change nothing. 8 images at batch 2: an
/// epoch's evaluation in between.
#[test]
fn staged_gpu_steps_equal_a_resumed_run() {
    let dir = std::env::temp_dir().join(format!("runner-staged-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let long = experiment_with(&dir, "long.toml", 6, 2, "\"gpu\"");
    let short = experiment_with(&dir, "short.toml", 3, 1000, "\"gpu\"");
    for exp in [&long, &short] {
        let out = runner(&["run", exp.to_str().unwrap()]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let (straight, first) = (dir.join("runs/resume-001"), dir.join("runs/resume-002"));
    assert!(straight.join("checkpoints/gpu/resume_2.weights").is_file(), "no checkpoint after iteration 2");
    let out = runner(&["run", long.to_str().unwrap(), "--resume", first.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let resumed = dir.join("runs/resume-003");
    let all = losses_of(&straight, "gpu");
    assert_eq!(all.len(), 6, "{all:?}");
    let tail = losses_of(&resumed, "gpu");
    assert_eq!(tail.iter().map(|(i, _)| i.as_str()).collect::<Vec<_>>(), ["4", "5", "6"]);
    assert_eq!(tail, all[3..].to_vec(), "the staged run's iterations differ from the resumed run's");
    let w = |r: &Path| std::fs::read(r.join("checkpoints/gpu/resume_final.weights")).unwrap();
    assert!(w(&straight) == w(&resumed), "final weights differ");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn resumed_run_continues_exactly() {
    let dir = std::env::temp_dir().join(format!("runner-resume-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let short = experiment(&dir, "short.toml", 4);
    let long = experiment(&dir, "long.toml", 6);

    // Straight 6 iterations, and 4 iterations then resumed to 6.
    let straight = runner(&["run", long.to_str().unwrap()]);
    assert!(straight.status.success(), "{}", String::from_utf8_lossy(&straight.stderr));
    let first = runner(&["run", short.to_str().unwrap()]);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let (run1, run2) = (dir.join("runs/resume-001"), dir.join("runs/resume-002"));
    let ckpt = run2.join("checkpoints/cpu");
    for f in ["resume_2.weights", "resume_2.state", "resume_4.weights", "resume_4.state", "resume_final.weights"] {
        assert!(ckpt.join(f).is_file(), "missing {f}");
    }

    let resumed = runner(&["run", long.to_str().unwrap(), "--resume", run2.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&resumed.stderr);
    assert!(resumed.status.success(), "{stderr}");
    // The experiment text changed (max_batches 4 → 6): resuming warns but goes on.
    assert!(stderr.contains("another version of the experiment file"), "{stderr}");
    let run3 = dir.join("runs/resume-003");
    let tail = losses(&run3);
    assert_eq!(tail.iter().map(|(i, _)| i.as_str()).collect::<Vec<_>>(), ["5", "6"]);
    assert_eq!(tail, losses(&run1)[4..].to_vec(), "resumed iterations differ from the straight run");
    let summary = std::fs::read_to_string(run3.join("summary.json")).unwrap();
    assert!(summary.contains("resume-002 @ iteration 4"), "{summary}");

    // Nothing left to train, and a folder without checkpoints: one-line errors, exit code 2.
    let done = runner(&["run", short.to_str().unwrap(), "--resume", run2.to_str().unwrap()]);
    assert_eq!(done.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&done.stderr).contains("nothing to train"));
    let none = runner(&["run", short.to_str().unwrap(), "--resume", dir.to_str().unwrap()]);
    assert_eq!(none.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&none.stderr).contains("no checkpoints of backend cpu"));
    let _ = std::fs::remove_dir_all(&dir);
}
