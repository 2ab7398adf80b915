//! Property test: the experiment parser takes any TOML (and any text) without panicking, every
//! error is one line naming the file, and what it accepts satisfies the ranges it promises.
//!
//! `FUZZ_CASES` sets the number of cases (default 2000 for CI; the long run used 100000).

// runner is a binary crate: the module is compiled into this test directly.
#[path = "../src/experiment.rs"]
mod experiment;

use std::path::Path;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

fn cases() -> u32 {
    std::env::var("FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000)
}

/// TOML values of every type, and numbers at and past the edges of every range.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|v| v.to_string()),
        (0u64..100).prop_map(|v| v.to_string()),
        Just("18446744073709551615".to_string()),
        Just("2305843009213693952".to_string()),
        (-2.0f64..3.0).prop_map(|v| format!("{v:?}")),
        Just("nan".to_string()),
        Just("-inf".to_string()),
        any::<bool>().prop_map(|v| v.to_string()),
        "[a-z:0-9 ]{0,10}".prop_map(|s| format!("\"{s}\"")),
        Just("\"gpu:0\"".to_string()),
        Just("[\"cpu\", \"gpu\"]".to_string()),
        Just("[1, 2, 3]".to_string()),
        Just("[]".to_string()),
        Just("{ images = 8, val_images = 2, classes = 2, min_size = 8, max_size = 32, max_objects = 2 }".to_string()),
    ]
}

/// Keys of every section (and a few that do not exist).
const KEYS: &[&str] = &[
    "name", "seed", "description", "cfg", "classes", "width", "height", "weights", "synthetic", "darknet", "letterbox",
    "shuffle", "batch", "subdivisions", "epochs", "max_batches", "optimizer", "learning_rate", "momentum", "decay",
    "policy", "steps", "scales", "step", "scale", "gamma", "power", "sgdr_cycle", "sgdr_mult", "learning_rate_min",
    "burn_in", "b1", "b2", "eps", "checkpoint_every", "jitter", "hue", "mosaic", "blur", "gaussian_noise", "list",
    "mode", "loss_rel_delta_iter", "window", "min_map50", "out_dir", "formats", "bogus",
];

const SECTIONS: &[&str] =
    &["experiment", "model", "data", "train", "train.augment", "backends", "thresholds", "report", "nonsense"];

const BASE: &str = "[experiment]\nname = \"fuzz\"\n[model]\ncfg = \"yolov4-tiny\"\nclasses = 2\nwidth = 64\nheight = 64\n\
[data]\nsynthetic = { images = 8, val_images = 2, classes = 2, min_size = 8, max_size = 32, max_objects = 2 }\n\
[train]\nbatch = 2\nmax_batches = 4\n[backends]\nlist = [\"cpu\"]\n";

/// A valid experiment with lines removed, values replaced and sections/keys added, or junk.
fn experiment_text() -> impl Strategy<Value = String> {
    let edit = prop_oneof![
        (prop::sample::select(SECTIONS)).prop_map(|s| format!("[{s}]")),
        (prop::sample::select(KEYS), value()).prop_map(|(k, v)| format!("{k} = {v}")),
        "[ -~]{0,24}",
    ];
    let edited = prop::collection::vec((any::<prop::sample::Index>(), 0u8..3, edit), 0..10).prop_map(|edits| {
        let mut lines: Vec<String> = BASE.lines().map(str::to_string).collect();
        for (at, op, new) in edits {
            let i = at.index(lines.len().max(1)).min(lines.len());
            match op {
                0 if i < lines.len() => {
                    lines.remove(i);
                }
                1 => lines.insert(i, new),
                _ if i < lines.len() => {
                    // Keep the key, replace the value.
                    let key = lines[i].split('=').next().unwrap_or("").trim().to_string();
                    lines[i] = if key.is_empty() { new } else { format!("{key} = {}", new.split('=').nth(1).unwrap_or("0")) };
                }
                _ => {}
            }
        }
        lines.join("\n")
    });
    prop_oneof![4 => edited, 1 => "\\PC{0,120}"]
}

#[test]
fn experiment_parser_never_panics() {
    let mut runner = TestRunner::new(Config { cases: cases(), failure_persistence: None, ..Config::default() });
    runner
        .run(&experiment_text(), |text| {
            match experiment::parse(Path::new("fuzz.toml"), &text) {
                Ok(exp) => {
                    // Accepted means in range: the run arithmetic cannot overflow or wrap.
                    if let Some(e) = exp.train.epochs {
                        prop_assert!((1..=1_000_000).contains(&e));
                    }
                    if let Some(n) = exp.train.max_batches {
                        prop_assert!((1..=i32::MAX as u64).contains(&n));
                    }
                    prop_assert!(!exp.backends.list.is_empty());
                }
                Err(e) => {
                    let msg = e.to_string();
                    prop_assert!(msg.starts_with("fuzz.toml"), "{msg}");
                    prop_assert!(!msg.contains('\n'), "{msg:?}");
                }
            }
            Ok(())
        })
        .unwrap();
}
