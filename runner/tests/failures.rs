//! Issue 11, "nothing lost, nothing silent": each numbered failure, reproduced through the
//! `runner` binary (signals through a child process) on small inputs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use engine::data::synth::SynthSpec;

/// A fresh folder outside any git repository (the experiment's repository state is recorded).
fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("runner-failures-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create test dir");
    d
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 test path")
}

/// An experiment: yolov4-tiny at 64 px, batch 2, CPU, synthetic data unless `data` says otherwise;
/// `extra_train` lines go into [train], `rest` after [backends].
fn experiment(d: &Path, file: &str, max_batches: u64, extra_train: &str, data: &str, rest: &str) -> PathBuf {
    let data = if data.is_empty() {
        "synthetic = { images = 8, val_images = 2, classes = 2, min_size = 8, max_size = 32, max_objects = 2 }"
    } else {
        data
    };
    let text = format!(
        "[experiment]\nname = \"x\"\nseed = 5\n\n[model]\ncfg = \"yolov4-tiny\"\nclasses = 2\nwidth = 64\nheight = 64\n\n\
         [data]\n{data}\n\n[train]\nbatch = 2\nmax_batches = {max_batches}\nlearning_rate = 0.001\nburn_in = 0\n{extra_train}\n\n\
         [backends]\nlist = [\"cpu\"]\n{rest}\n\n[report]\nout_dir = \"runs\"\nformats = [\"csv\", \"json\", \"html\", \"markdown\", \"junit\", \"svg\"]\n"
    );
    let p = d.join(file);
    std::fs::write(&p, text).expect("write experiment");
    p
}

fn runner_in(cwd: &Path, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_runner")).current_dir(cwd).args(args).output().expect("runner starts");
    assert!(out.status.code().is_some(), "runner was killed by a signal: {}", String::from_utf8_lossy(&out.stderr));
    out
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Data lines of a CSV table (header excluded; a line cut by a kill excluded).
fn rows(p: &Path) -> usize {
    std::fs::read_to_string(p).map(|t| t.matches('\n').count().saturating_sub(1)).unwrap_or(0)
}

/// Starts `runner run` in the background (output to files: a full pipe would stall it).
fn spawn_run(d: &Path, exp: &Path) -> Child {
    let out = std::fs::File::create(d.join("stdout.txt")).unwrap();
    let err = std::fs::File::create(d.join("stderr.txt")).unwrap();
    Command::new(env!("CARGO_BIN_EXE_runner"))
        .current_dir(d)
        .args(["run", s(exp)])
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn()
        .expect("runner starts")
}

/// Waits until the run folder's appended iteration table has at least `n` rows.
fn wait_for_rows(child: &mut Child, table: &Path, n: usize) {
    let t0 = Instant::now();
    while rows(table) < n {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("runner ended early ({status}) before {n} iterations were recorded");
        }
        assert!(t0.elapsed() < Duration::from_secs(300), "no {n} iterations in 300 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill").args([sig, &child.id().to_string()]).status().expect("kill runs").success();
    assert!(ok, "kill {sig} failed");
}

fn wait(child: &mut Child) -> i32 {
    let t0 = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status.code().unwrap_or(-1);
        }
        if t0.elapsed() > Duration::from_secs(300) {
            let _ = child.kill();
            panic!("runner did not stop within 300 s of the signal");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn json(p: &Path) -> serde_json::Value {
    serde_json::from_str(&read(p)).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Item 1 (+ 4, 5): SIGINT stops at an iteration boundary with a checkpoint, tables, report and
/// exit 130; resuming links the earlier run; a run without thresholds has no verdict, and the
/// build's commit is recorded even when the runner runs outside its repository.
#[test]
fn sigint_keeps_everything_and_resume_links_it() {
    let d = dir("sigint");
    let exp = experiment(&d, "exp.toml", 100_000, "checkpoint_every = 100000", "", "");
    let mut child = spawn_run(&d, &exp);
    let run1 = d.join("runs/x-001");
    wait_for_rows(&mut child, &run1.join("tables/iterations.csv"), 10);
    signal(&child, "-INT");
    assert_eq!(wait(&mut child), 130, "{}", read(&d.join("stderr.txt")));
    let err = read(&d.join("stderr.txt"));
    let n: u64 = err
        .split("interrupted at iteration ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no `interrupted at iteration N` in: {err}"));
    let summary = json(&run1.join("summary.json"));
    assert_eq!(summary["status"], "interrupted");
    assert_eq!(summary["stopped_at_iteration"], n);
    assert_eq!(rows(&run1.join("tables/iterations.csv")) as u64, n, "one row per iteration trained");
    for f in [format!("x_{n}.weights"), format!("x_{n}.state")] {
        assert!(run1.join("checkpoints/cpu").join(&f).is_file(), "missing checkpoint {f}");
    }
    assert!(run1.join("report.html").is_file() && run1.join("charts/loss.svg").is_file());
    let gate = json(&run1.join("gate.json"));
    assert_eq!(gate["verdict"], "fail", "an interrupted run is not a pass: {gate}");
    // Item 5: the commit the binary was built from, not that of the current directory.
    if let Some(head) = Command::new("git")
        .args(["-C", env!("CARGO_MANIFEST_DIR"), "rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
    {
        assert_eq!(summary["git_commit"], String::from_utf8_lossy(&head.stdout).trim());
    }
    assert_eq!(summary["experiment_commit"], "", "the experiment is in no repository");

    // Resume to n + 2: a new folder linking the first; no [thresholds] = no verdict, exit 0.
    let longer = experiment(&d, "longer.toml", n + 2, "checkpoint_every = 100000", "", "");
    let resumed = runner_in(&d, &["run", s(&longer), "--resume", s(&run1)]);
    assert_eq!(resumed.status.code(), Some(0), "{}", stderr(&resumed));
    let run2 = d.join("runs/x-002");
    let summary2 = json(&run2.join("summary.json"));
    assert_eq!(summary2["resumed_from"]["run_dir"], "../x-001");
    assert_eq!(summary2["resumed_from"]["iteration"], n);
    assert_eq!(rows(&run2.join("tables/iterations.csv")), 2, "its own table holds its own iterations");
    let gate2 = json(&run2.join("gate.json"));
    assert_eq!((gate2["verdict"].as_str(), gate2["pass"].is_null()), (Some("no gates defined"), true));
    assert!(read(&run2.join("gate.md")).starts_with("# NO GATES"));
    assert!(read(&run2.join("junit.xml")).contains("<skipped"));
    let _ = std::fs::remove_dir_all(&d);
}

/// Starts a long run in a fresh folder and waits until 10 iterations are on disk.
fn started(name: &str) -> (PathBuf, Child, PathBuf) {
    let d = dir(name);
    let exp = experiment(&d, "exp.toml", 100_000, "", "", "");
    let mut child = spawn_run(&d, &exp);
    let run = d.join("runs/x-001");
    wait_for_rows(&mut child, &run.join("tables/iterations.csv"), 10);
    (d, child, run)
}

/// Item 1: SIGTERM does the same with exit 143.
#[test]
fn sigterm_exits_143_with_records() {
    let (d, mut child, run) = started("sigterm");
    signal(&child, "-TERM");
    assert_eq!(wait(&mut child), 143, "{}", read(&d.join("stderr.txt")));
    assert_eq!(json(&run.join("summary.json"))["status"], "interrupted");
    assert!(run.join("report.html").is_file());
    let _ = std::fs::remove_dir_all(&d);
}

/// Item 1: a run killed outright keeps its records, and `runner report` rebuilds its report.
#[test]
fn killed_run_can_still_be_reported() {
    let (d, mut child, run) = started("kill9");
    signal(&child, "-KILL");
    wait(&mut child);
    assert_eq!(json(&run.join("summary.json"))["status"], "running", "a killed run cannot say more");
    let rep = runner_in(&d, &["report", s(&run)]);
    assert_eq!(rep.status.code(), Some(0), "{}", stderr(&rep));
    assert!(stderr(&rep).contains("did not finish"), "{}", stderr(&rep));
    let html = read(&run.join("report.html"));
    assert!(html.contains("did not finish") && html.contains("verdict FAIL"), "the report says the run did not finish");
    let _ = std::fs::remove_dir_all(&d);
}

/// Item 2: a learning rate of 1000 diverges; the run stops at the first bad iteration with
/// exit 2, says where, and leaves no checkpoint of the diverged network.
#[test]
fn diverging_run_stops_and_writes_no_bad_checkpoint() {
    let d = dir("diverge");
    let exp = experiment(&d, "exp.toml", 60, "checkpoint_every = 1", "", "").to_path_buf();
    let text = read(&exp).replace("learning_rate = 0.001", "learning_rate = 1000.0");
    std::fs::write(&exp, text).unwrap();
    let out = runner_in(&d, &["run", s(&exp)]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("non-finite") || err.contains("the loss became"), "{err}");
    let summary = json(&d.join("runs/x-001/summary.json"));
    assert_eq!(summary["status"], "failed");
    let stopped = summary["stopped_at_iteration"].as_u64().expect("stopped_at_iteration");
    // Every checkpoint left is of an iteration before the bad one, and finite.
    for e in std::fs::read_dir(d.join("runs/x-001/checkpoints/cpu")).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if let Some(it) = name.strip_prefix("x_").and_then(|n| n.strip_suffix(".weights")).and_then(|n| n.parse::<u64>().ok()) {
            assert!(it < stopped, "checkpoint {name} of the diverged iteration {stopped}");
            let bytes = std::fs::read(e.path()).unwrap();
            assert!(bytes[20..].chunks_exact(4).all(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]).is_finite()), "{name} holds NaN/Inf");
        }
    }
    let _ = std::fs::remove_dir_all(&d);
}

/// Item 3: `compare` calls a run that failed a regression, and validates `--noise`.
#[test]
fn compare_flags_a_failed_run_and_checks_noise() {
    let d = dir("compare");
    let good = experiment(&d, "good.toml", 2, "", "", "");
    assert_eq!(runner_in(&d, &["run", s(&good)]).status.code(), Some(0));
    let bad = experiment(&d, "bad.toml", 60, "", "", "");
    std::fs::write(&bad, read(&bad).replace("learning_rate = 0.001", "learning_rate = 1000.0")).unwrap();
    assert_eq!(runner_in(&d, &["run", s(&bad)]).status.code(), Some(2));
    let (a, b) = (d.join("runs/x-001"), d.join("runs/x-002"));
    let c = runner_in(&d, &["compare", s(&a), s(&b)]);
    let text = String::from_utf8_lossy(&c.stdout).to_string();
    assert_eq!(c.status.code(), Some(1), "{text}");
    assert!(text.contains("run B failed"), "{text}");
    for noise in ["--noise=NaN", "--noise=-0.1", "--noise=2"] {
        let c = runner_in(&d, &["compare", s(&a), s(&a), noise]);
        assert_eq!(c.status.code(), Some(2), "--noise {noise} accepted");
        assert!(stderr(&c).contains("expected a fraction in [0, 1]") || stderr(&c).contains("not a number"), "{}", stderr(&c));
    }
    let _ = std::fs::remove_dir_all(&d);
}

/// A Darknet dataset of 8 synthetic images (written with the engine's generator).
fn dataset(d: &Path) -> PathBuf {
    let spec = SynthSpec { classes: 2, train_images: 6, val_images: 2, width: 64, height: 64, seed: 7, ..Default::default() };
    spec.write(&d.join("data")).expect("synthetic set");
    d.join("data/obj.data")
}

/// Item 6 (+ 9: no empty run folder): `check` sees what `run` would stop on, and `run` refuses
/// the same before it makes a run folder.
#[test]
fn check_sees_bad_datasets_before_run() {
    let d = dir("dataset");
    let data = dataset(&d);
    let exp = experiment(&d, "exp.toml", 2, "", &format!("darknet = \"{}\"", s(&data)), "");
    let ok = runner_in(&d, &["check", s(&exp)]);
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("memory: cpu: about"), "check prints the memory estimate");
    let images = d.join("data/images");
    let cases: [(&str, Box<dyn Fn()>, &str); 4] = [
        ("class id out of range", Box::new(|| std::fs::write(images.join("train_00001.txt"), "7 0.5 0.5 0.2 0.2\n").unwrap()), "train_00001.txt:1: class 7 out of range"),
        ("4-field label", Box::new(|| std::fs::write(images.join("train_00002.txt"), "0 0.5 0.5 0.2\n").unwrap()), "train_00002.txt:1: expected 5 fields"),
        ("corrupt PNG", Box::new(|| std::fs::write(images.join("train_00003.png"), b"\x89PNG\r\n\x1a\nnot really").unwrap()), "train_00003.png"),
        ("missing image", Box::new(|| std::fs::remove_file(images.join("train_00004.png")).unwrap()), "train.txt:5: image `images/train_00004.png` not found"),
    ];
    for (what, break_it, expected) in cases {
        let fresh = d.join(format!("case-{}", what.replace(' ', "-")));
        let _ = std::fs::remove_dir_all(d.join("data"));
        dataset(&d);
        break_it();
        for cmd in ["check", "run"] {
            let args: Vec<&str> = if cmd == "run" { vec![cmd, s(&exp), "--out", s(&fresh)] } else { vec![cmd, s(&exp)] };
            let out = runner_in(&d, &args);
            assert_eq!(out.status.code(), Some(2), "{cmd} passed a dataset with a {what}");
            assert!(stderr(&out).contains(expected), "{cmd} / {what}: {}", stderr(&out));
        }
        assert!(!fresh.exists() || std::fs::read_dir(&fresh).unwrap().next().is_none(), "{what}: run left a run folder");
    }
    let _ = std::fs::remove_dir_all(&d);
}

fn check_fails(d: &Path, file: &str, max_batches: u64, extra_train: &str, rest: &str, model: Option<(&str, &str)>, expected: &[&str]) {
    let exp = experiment(d, file, max_batches, extra_train, "", rest);
    if let Some((from, to)) = model {
        std::fs::write(&exp, read(&exp).replace(from, to)).unwrap();
    }
    let out = runner_in(d, &["check", s(&exp)]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{file}: check passed");
    for e in expected {
        assert!(err.contains(e), "{file}: expected {e:?} in {err}");
    }
    assert_eq!(err.trim().lines().count(), 1, "{file}: one line: {err}");
}

/// Items 6 and 7: synthetic limits, memory and ranges are refused by `check`; and the shipped
/// full-size experiment passes it.
#[test]
fn check_refuses_what_run_cannot_do() {
    let d = dir("check");
    check_fails(&d, "classes.toml", 2, "", "", Some(("classes = 2, min_size", "classes = 10, min_size")), &["data.synthetic.classes", "must be 1..=6"]);
    check_fails(&d, "huge.toml", 2, "", "", Some(("width = 64\nheight = 64", "width = 100000\nheight = 100000")), &["host memory", "GiB"]);
    check_fails(&d, "epochs.toml", 2, "", "", Some(("max_batches = 2", "epochs = 2305843009213693952")), &["train.epochs", "must be 1..=1000000"]);
    check_fails(&d, "epochs-max.toml", 2, "", "", Some(("max_batches = 2", "epochs = 18446744073709551615")), &["epochs-max.toml", "train.epochs", "must be 1..=1000000"]);
    // run refuses the huge model too, without a run folder and without aborting.
    let huge = d.join("huge.toml");
    let out = runner_in(&d, &["run", s(&huge)]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(!d.join("runs/x-001").exists(), "a refused run left a folder");
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../experiments/yolov4-tiny-416.toml");
    let out = runner_in(&d, &["check", s(&shipped)]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let _ = std::fs::remove_dir_all(&d);
}

/// yolov4-tiny for 2 classes at 64 px as cfg text, with `edit` applied.
fn cfg_text(edit: impl Fn(String) -> String) -> String {
    let text = engine::cfg::builtin("yolov4-tiny").expect("built-in").to_string();
    edit(text.replace("width=416", "width=64").replace("height=416", "height=64").replace("classes=80", "classes=2").replace("filters=255", "filters=21"))
}

/// Item 8: a cfg without a loss layer, and `random=1`, are refused.
#[test]
fn cfg_without_loss_or_with_random_is_refused() {
    let d = dir("cfg");
    let cut = cfg_text(|t| t[..t.find("[yolo]").unwrap()].to_string());
    std::fs::write(d.join("cut.cfg"), cut).unwrap();
    check_fails(&d, "cut.toml", 2, "", "", Some(("cfg = \"yolov4-tiny\"", "cfg = \"cut.cfg\"")), &["cut.cfg", "no loss layer"]);
    let random = cfg_text(|t| t.replace("random=0", "random=1"));
    assert!(random.contains("random=1"));
    std::fs::write(d.join("random.cfg"), random).unwrap();
    check_fails(&d, "random.toml", 2, "", "", Some(("cfg = \"yolov4-tiny\"", "cfg = \"random.cfg\"")), &["random.cfg:", "random=1", "multi-scale"]);
    let gray = cfg_text(|t| t.replace("channels=3", "channels=1"));
    std::fs::write(d.join("gray.cfg"), gray).unwrap();
    check_fails(&d, "gray.toml", 2, "", "", Some(("cfg = \"yolov4-tiny\"", "cfg = \"gray.cfg\"")), &["channels=1", "3 channels"]);
    let _ = std::fs::remove_dir_all(&d);
}

/// Item 9: messages name what is wrong, and say it in one bounded line.
#[test]
fn messages_name_the_problem() {
    let d = dir("messages");
    // A 1 MB section name is not printed whole.
    let long = format!("[net]\nwidth=64\nheight=64\n[{}]\n", "a".repeat(1 << 20));
    std::fs::write(d.join("long.cfg"), long).unwrap();
    let out = runner_in(&d, &["model", s(&d.join("long.cfg"))]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).len() < 1000 && stderr(&out).contains("more bytes"), "{} bytes", stderr(&out).len());

    // map: classes of the .data against the cfg's, weights version, partial weights, arguments.
    let data = dataset(&d);
    std::fs::write(d.join("tiny.cfg"), cfg_text(|t| t.replace("classes=2", "classes=3").replace("filters=21", "filters=24"))).unwrap();
    let (cfg, _) = engine::cfg::parse_file(&d.join("tiny.cfg")).unwrap();
    let mut one = cfg.clone();
    one.set_batch(1, 1).unwrap();
    let net = engine::network::Network::build(engine::cpu::CpuBackend::new(), one, &Default::default()).unwrap();
    let weights = d.join("tiny.weights");
    net.save_weights(&weights, 0).unwrap();
    let map = |args: &[&str]| runner_in(&d, &[&["map", s(&data), s(&d.join("tiny.cfg")), s(&weights)], args].concat());
    let out = map(&[]);
    assert!(stderr(&out).contains("obj.data") && stderr(&out).contains("classes = 2") && stderr(&out).contains("classes=3"), "{}", stderr(&out));
    std::fs::write(d.join("tiny.cfg"), cfg_text(|t| t)).unwrap();
    let (cfg2, _) = engine::cfg::parse_file(&d.join("tiny.cfg")).unwrap();
    let mut one = cfg2;
    one.set_batch(1, 1).unwrap();
    let net = engine::network::Network::build(engine::cpu::CpuBackend::new(), one, &Default::default()).unwrap();
    net.save_weights(&weights, 0).unwrap();
    let mut bytes = std::fs::read(&weights).unwrap();
    let good = bytes.clone();
    bytes[..4].copy_from_slice(&99i32.to_le_bytes());
    std::fs::write(&weights, &bytes).unwrap();
    assert!(stderr(&map(&[])).contains("version 99.2.5"), "{}", stderr(&map(&[])));
    // Only the first layers' worth of floats: map refuses it, as detect does.
    std::fs::write(&weights, &good[..good.len() / 3]).unwrap();
    let out = map(&[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("tiny.weights"), "{}", stderr(&out));
    std::fs::write(&weights, &good).unwrap();
    // Non-finite weights: a warning, not silence.
    let mut nan = good.clone();
    nan[20..24].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(&weights, &nan).unwrap();
    assert!(stderr(&map(&[])).contains("non-finite"), "{}", stderr(&map(&[])));
    for (flag, v) in [("--points", "7"), ("--iou-thresh", "NaN"), ("--thresh", "-1")] {
        let out = map(&[flag, v]);
        assert_eq!(out.status.code(), Some(2), "{flag} {v} accepted");
        assert!(stderr(&out).contains("expected"), "{}", stderr(&out));
    }
    let _ = std::fs::remove_dir_all(&d);
}

/// Items 6 and 9: GPU names are checked against the adapters: one that does not exist, and two
/// names of one adapter.
#[test]
fn gpu_backends_are_checked() {
    let adapters = engine::gpu::list_adapters();
    if adapters.is_empty() {
        assert!(std::env::var("REQUIRE_GPU").is_ok_and(|v| v != "1") || std::env::var("REQUIRE_GPU").is_err(), "REQUIRE_GPU=1 but no adapter");
        return;
    }
    let d = dir("gpus");
    check_fails(&d, "g99.toml", 2, "", "", Some(("list = [\"cpu\"]", "list = [\"cpu\", \"gpu:99\"]")), &["gpu:99", "out of range"]);
    // Adapter 0 by index and by its name: one adapter under two names.
    let twice = format!("list = [\"gpu:0\", \"gpu:{}\"]", adapters[0].name);
    check_fails(&d, "twice.toml", 2, "", "", Some(("list = [\"cpu\"]", &twice)), &["same adapter"]);
    // Item 10: a network whose largest buffer exceeds what the adapter can hold is refused by
    // `check` with the figures (the side is chosen from the adapter's own limit); tensors only
    // over one storage binding train, split over images (engine/tests/gpu_chunked.rs).
    let a = &adapters[0];
    let limit = a.max_buffer_floats() as u64;
    let side = ((((limit / 8) as f64).sqrt() as u64) / 32 + 1) * 32;
    let exp = experiment(&d, "big.toml", 2, "", "", "");
    let text = read(&exp).replace("width = 64\nheight = 64", &format!("width = {side}\nheight = {side}"));
    std::fs::write(&exp, text.replace("list = [\"cpu\"]", "list = [\"gpu:0\"]")).unwrap();
    let out = runner_in(&d, &["check", s(&exp)]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{side}x{side} passed check: {err}");
    assert!(err.contains("big.toml") && err.contains("holds at most") && err.contains("MiB"), "{err}");
    let _ = std::fs::remove_dir_all(&d);
}
