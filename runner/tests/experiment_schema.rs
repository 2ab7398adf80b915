//! Experiment files: the examples load, and each malformed file gives its intended one-line error.

// runner is a binary crate: the module is compiled into this test directly.
#[path = "../src/experiment.rs"]
mod experiment;

use experiment::{BackendSpec, DataSource, GpuSelector, ModelSource, RunMode};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

fn bad(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/bad-experiments").join(name);
    match experiment::load(&path) {
        Ok(_) => panic!("{name} loaded but should fail"),
        Err(e) => e.to_string(),
    }
}

/// Every expected fragment must be in the message, and the message must be one line.
fn expect(name: &str, fragments: &[&str]) {
    let msg = bad(name);
    assert!(!msg.contains('\n'), "{name}: error spans several lines: {msg:?}");
    assert!(msg.contains(name), "{name}: error does not name the file: {msg}");
    for f in fragments {
        assert!(msg.contains(f), "{name}: expected {f:?} in: {msg}");
    }
}

#[test]
fn unknown_key() {
    expect("unknown-key.toml", &["unknown-key.toml:16:1:", "`train.bacth`", "unknown field `bacth`"]);
}

#[test]
fn wrong_type() {
    expect("wrong-type.toml", &["wrong-type.toml:15:9:", "`train.batch`", "invalid type"]);
}

#[test]
fn missing_cfg_file() {
    expect("missing-cfg.toml", &["missing-cfg.toml:7:1:", "`model.cfg`", "cfg file not found", "models/nope.cfg"]);
}

#[test]
fn batch_not_divisible() {
    expect("batch-not-divisible.toml", &[":15:1:", "`train.batch`", "batch 6 is not divisible by subdivisions 4"]);
}

#[test]
fn classes_do_not_match_names() {
    expect("classes-mismatch.toml", &[":9:1:", "`model.classes`", "is 5 but", "obj.names has 3 names"]);
}

#[test]
fn unknown_backend() {
    expect("unknown-backend.toml", &[":19:16:", "`backends.list[1]`", "unknown backend `tpu`"]);
}

#[test]
fn threshold_above_one() {
    expect("threshold-too-large.toml", &[":22:", "`thresholds.loss_rel_delta_iter`", "[0, 1], got 1.5"]);
}

#[test]
fn threshold_nan() {
    expect("threshold-nan.toml", &[":22:", "`thresholds.loss_rel_delta_iter`", "got NaN"]);
}

#[test]
fn threshold_negative() {
    expect("threshold-negative.toml", &[":22:", "`thresholds.loss_rel_delta_iter`", "got -0.01"]);
}

#[test]
fn missing_weights_file() {
    expect("missing-weights.toml", &[":9:1:", "`model.weights`", "weights file not found", "init.weights"]);
}

#[test]
fn two_datasets() {
    expect("two-datasets.toml", &[":11:", "`data`", "only one of `synthetic` and `darknet`"]);
}

#[test]
fn syntax_error() {
    expect("syntax-error.toml", &["syntax-error.toml:17:15:", "`train.subdivisions`"]);
}

#[test]
fn missing_experiment_file() {
    let e = experiment::load("no/such/experiment.toml").map(|_| ()).unwrap_err().to_string();
    assert!(e.starts_with("no/such/experiment.toml: cannot read experiment file"), "{e}");
}

#[test]
fn tiny_parity_example_loads() {
    let exp = experiment::load(root().join("experiments/tiny-parity-scratch.toml")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(exp.model.source, ModelSource::Builtin("yolov4-tiny".into()));
    assert_eq!(exp.backends.list, vec![BackendSpec::Cpu, BackendSpec::Gpu(GpuSelector::First)]);
    assert_eq!(exp.backends.mode, RunMode::Sequential);
    assert_eq!((exp.train.batch, exp.train.subdivisions), (Some(4), Some(1)));
    match &exp.data.source {
        // The synthetic seed defaults to the experiment seed.
        DataSource::Synthetic(s) => assert_eq!((s.classes, s.seed), (3, Some(42))),
        other => panic!("expected synthetic data, got {other:?}"),
    }
    assert!(exp.report.out_dir.ends_with("experiments/../runs"));
    assert_eq!(exp.report.formats.len(), 8);
}

/// The main job's fine-tuning run starts from the shipped weights, which cover its whole cfg,
/// and uses the pre-training's data (same seed and shape parameters: its held-out images).
#[test]
fn fine_tuning_example_starts_from_the_shipped_weights() {
    let exp = experiment::load(root().join("experiments/tiny-parity.toml")).unwrap_or_else(|e| panic!("{e}"));
    let pre = experiment::load(root().join("experiments/shapes-half-cpu.toml")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(exp.model.source, pre.model.source);
    let (DataSource::Synthetic(a), DataSource::Synthetic(b)) = (&exp.data.source, &pre.data.source) else { panic!("synthetic data") };
    assert_eq!((a.seed, a.classes, a.min_size, a.max_size, a.max_objects), (b.seed, b.classes, b.min_size, b.max_size, b.max_objects));
    assert!(a.val_images <= b.val_images && a.images <= b.images);
    let weights = exp.model.weights.clone().expect("[model] weights");
    assert!(std::fs::metadata(&weights).unwrap().len() <= 8 << 20, "shipped weights must stay small");
    let ModelSource::File(cfg_path) = &exp.model.source else { panic!("a cfg file") };
    let (mut cfg, _) = engine::cfg::parse_file(cfg_path).unwrap();
    cfg.set_classes(3).unwrap();
    cfg.set_size(64, 64).unwrap();
    let net = engine::network::Network::build(engine::cpu::CpuBackend::new(), cfg, &Default::default()).unwrap();
    let file = engine::weights::read_weights(&weights, &net.conv_dims(), engine::weights::Extent::All).unwrap_or_else(|e| panic!("{e}"));
    assert!(engine::weights::nonfinite(&file.layers).is_none());
}

#[test]
fn full_size_example_loads() {
    let exp = experiment::load(root().join("experiments/yolov4-tiny-416.toml")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((exp.model.width, exp.model.height), (Some(416), Some(416)));
    assert_eq!(exp.train.batch, Some(64));
    assert_eq!(exp.thresholds.window, 50);
}

#[test]
fn darknet_dataset_example_reads_data_and_names() {
    let exp = experiment::load(root().join("experiments/darknet-dataset.toml")).unwrap_or_else(|e| panic!("{e}"));
    let DataSource::Darknet(d) = &exp.data.source else { panic!("expected darknet data") };
    assert_eq!(d.classes, 3);
    assert_eq!(d.names, vec!["red_rect", "green_ellipse", "blue_rect"]);
    assert!(d.train_list.ends_with("darknet-mini/train.txt"));
    assert_eq!(exp.backends.list, vec![BackendSpec::Gpu(GpuSelector::First)]);
}

/// The fixture example points at ../../shared (beside the repository checkout).
#[test]
fn darknet_fixture_example_loads_where_shared_exists() {
    let path = root().join("experiments/darknet-fixture.toml");
    if !root().join("../shared/reference/fixtures/darknet-yolov4-tiny-96/obj.data").exists() {
        // Still check it parses; only the file checks need shared/.
        let err = experiment::load(&path).map(|_| ()).unwrap_err().to_string();
        assert!(err.contains("not found"), "{err}");
        return;
    }
    let exp = experiment::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert!(!exp.data.shuffle);
    assert!(!exp.train.augment.enabled);
    assert_eq!(exp.train.max_batches, Some(3));
    assert!(matches!(exp.model.source, ModelSource::File(_)));
    assert!(exp.model.weights.as_ref().is_some_and(|w| w.is_file()));
}

#[test]
fn backend_spellings() {
    let parse = |s: &str| BackendSpec::try_from(s.to_string());
    assert_eq!(parse("gpu:1"), Ok(BackendSpec::Gpu(GpuSelector::Index(1))));
    assert_eq!(parse("gpu:Apple M2"), Ok(BackendSpec::Gpu(GpuSelector::Name("Apple M2".into()))));
    assert!(parse("gpu:").is_err());
    assert!(parse("CPU").is_err());
    assert_eq!(parse("gpu:1").map(|b| b.to_string()), Ok("gpu:1".to_string()));
}

#[test]
fn policy_parameters_must_fit_the_policy() {
    let text = "[experiment]\nname = \"x\"\n[model]\ncfg = \"yolov4-tiny\"\n\
                [data]\nsynthetic = { images = 8, val_images = 0, classes = 1, min_size = 4, max_size = 8, max_objects = 1 }\n\
                [train]\npolicy = \"poly\"\nsteps = [10, 20]\n[backends]\nlist = [\"cpu\"]\n";
    let e = experiment::parse(Path::new("inline.toml"), text).map(|_| ()).unwrap_err().to_string();
    assert!(e.contains("inline.toml:9:1: `train.steps`: does not apply to policy `poly`"), "{e}");
}

#[test]
fn parity_gates_need_two_backends() {
    let text = "[experiment]\nname = \"x\"\n[model]\ncfg = \"yolov4-tiny\"\n\
                [data]\nsynthetic = { images = 8, val_images = 0, classes = 1, min_size = 4, max_size = 8, max_objects = 1 }\n\
                [backends]\nlist = [\"cpu\"]\n[thresholds]\nmap_abs_delta = 0.1\n";
    let e = experiment::parse(Path::new("inline.toml"), text).map(|_| ()).unwrap_err().to_string();
    assert!(e.contains("inline.toml:10:1: `thresholds.map_abs_delta`"), "{e}");
}

/// README's "Experiment file reference" lists every key the schema accepts: the keys are taken
/// from the schema itself (serde's "expected one of" for an unknown key in each section).
#[test]
fn readme_documents_every_experiment_key() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let start = readme.find("## Experiment file reference").expect("README section");
    let reference = &readme[start..start + readme[start..].find("\n## ").unwrap_or(readme.len() - start)];
    let synth = "synthetic = { images = 8, val_images = 2, classes = 2, min_size = 8, max_size = 32, max_objects = 2 }";
    let base = |extra: &str, synthetic: &str| {
        format!("[experiment]\nname = \"x\"\n[model]\ncfg = \"yolov4-tiny\"\n[data]\n{synthetic}\n[backends]\nlist = [\"cpu\"]\n{extra}\n")
    };
    let cases: Vec<(&str, String)> = vec![
        ("experiment", base("", synth).replacen("name = \"x\"", "name = \"x\"\nzzz = 1", 1)),
        ("model", base("", synth).replacen("cfg = \"yolov4-tiny\"", "cfg = \"yolov4-tiny\"\nzzz = 1", 1)),
        ("data", base("", &format!("{synth}\nzzz = 1"))),
        ("data.synthetic", base("", &synth.replace(" }", ", zzz = 1 }"))),
        ("train", base("[train]\nzzz = 1", synth)),
        ("train.augment", base("[train.augment]\nzzz = 1", synth)),
        ("backends", base("", synth).replacen("list = [\"cpu\"]", "list = [\"cpu\"]\nzzz = 1", 1)),
        ("thresholds", base("[thresholds]\nzzz = 1", synth)),
        ("report", base("[report]\nzzz = 1", synth)),
    ];
    let dir = std::env::temp_dir().join(format!("runner-readme-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut checked = 0;
    for (section, text) in cases {
        let path = dir.join(format!("{section}.toml"));
        std::fs::write(&path, text).unwrap();
        let e = experiment::load(&path).map(|_| ()).unwrap_err().to_string();
        // serde says "expected one of `a`, `b`, `c`" or, for two, "expected `a` or `b`".
        let list = e.split("expected ").nth(1).unwrap_or_else(|| panic!("{section}: {e}"));
        let list = list.trim_start_matches("one of ").replace(" or ", ", ");
        for key in list.split(", ").map(|k| k.trim_matches('`')) {
            if format!("{section}.{key}") == "train.augment" {
                continue; // a section of its own, checked below
            }
            // The synthetic set's fields are documented in the `data.synthetic` row.
            let doc = if section == "data.synthetic" {
                reference.lines().any(|l| l.starts_with("| `data.synthetic`") && l.contains(key))
            } else {
                reference.contains(&format!("`{section}.{key}`"))
            };
            assert!(doc, "README's experiment reference lacks `{section}.{key}`");
            checked += 1;
        }
    }
    assert!(checked > 50, "only {checked} keys seen");
    let _ = std::fs::remove_dir_all(&dir);
}

/// ARCHITECTURE.md's code map names every module of the three crates: a file `x.rs` by its name,
/// a folder module (`x/mod.rs`) as `x/`. A new module without its line fails here.
#[test]
fn architecture_code_map_names_every_module() {
    let map = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let mut missing = Vec::new();
    let mut seen = 0;
    let mut stack: Vec<std::path::PathBuf> = ["engine/src", "runner/src", "reports/src"].iter().map(|d| root().join(d)).collect();
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let Some(stem) = path.file_stem().and_then(|s| s.to_str()).filter(|_| path.extension().is_some_and(|e| e == "rs")) else {
                continue;
            };
            let key = match stem {
                "lib" | "main" => continue,
                "mod" => format!("{}/", dir.file_name().unwrap().to_string_lossy()),
                other => other.to_string(),
            };
            seen += 1;
            if !map.contains(&key) {
                missing.push(path.strip_prefix(root()).unwrap_or(&path).display().to_string());
            }
        }
    }
    assert!(seen > 50, "only {seen} modules found");
    assert!(missing.is_empty(), "ARCHITECTURE.md's code map does not name: {}", missing.join(", "));
}

/// README's "The `runner` command" block is what `runner --help` prints (every subcommand, in
/// order, with its one-line help).
#[test]
fn readme_shows_runner_help_as_printed() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_runner")).arg("--help").output().expect("runner starts");
    let help = String::from_utf8_lossy(&out.stdout).to_string();
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let start = readme.find("$ runner --help\n").expect("README help block") + "$ runner --help\n".len();
    let end = start + readme[start..].find("```").expect("end of the help block");
    assert_eq!(readme[start..end].trim_end(), help.trim_end(), "README's help block differs from `runner --help`");
}
