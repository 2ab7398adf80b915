//! Property tests: the cfg, label and `.data` parsers take any text without panicking, and what
//! they accept satisfies their contracts. Inputs are generated from Darknet's vocabulary (so many
//! get deep into the parsers) mixed with arbitrary text, plus random edits of the shipped cfgs.
//!
//! `FUZZ_CASES` sets the cases per parser (default 2000 for CI; the long run used 100000).

use std::path::Path;

use engine::cfg::{BUILTIN_NAMES, builtin, parse_str};
use engine::data::darknet::{DataFile, LabelPolicy, parse_labels};
use engine::network::{BuildOptions, MemoryPlan};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

fn cases() -> u32 {
    std::env::var("FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000)
}

fn runner() -> TestRunner {
    TestRunner::new(Config { cases: cases(), failure_persistence: None, ..Config::default() })
}

/// Darknet-looking values: numbers of every size and sign, lists, words, junk.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        (-3i64..2000).prop_map(|v| v.to_string()),
        any::<i64>().prop_map(|v| v.to_string()),
        (-10.0f64..10.0).prop_map(|v| format!("{v}")),
        Just("99999999999999999999999".to_string()),
        Just("nan".to_string()),
        Just("inf".to_string()),
        Just("-0".to_string()),
        Just("1e40".to_string()),
        prop::collection::vec(-5i32..40, 0..8).prop_map(|v| v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(",")),
        prop::sample::select(vec!["leaky", "mish", "linear", "logistic", "swish", "relu", "ciou", "giou", "greedynms", "steps", "sgdr", "poly"])
            .prop_map(str::to_string),
        "[ -~]{0,12}",
        "\\PC{0,8}",
    ]
}

const SECTIONS: &[&str] = &[
    "net", "network", "convolutional", "conv", "route", "maxpool", "max", "upsample", "shortcut", "yolo", "region",
    "reorg", "avgpool", "dropout", "scale_channels", "connected", "crnn", "sam", "unknown",
];
const KEYS: &[&str] = &[
    "batch", "subdivisions", "width", "height", "channels", "filters", "size", "stride", "pad", "padding", "groups",
    "group_id", "activation", "batch_normalize", "layers", "from", "mask", "anchors", "classes", "num", "jitter",
    "random", "resize", "scale_x_y", "iou_loss", "nms_kind", "max_batches", "policy", "steps", "scales",
    "learning_rate", "burn_in", "momentum", "decay", "dilation", "probability", "max", "counters_per_class", "xyz",
];

/// One cfg line: a section header, a `key=value`, a comment, a blank or junk.
fn line() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(SECTIONS).prop_map(|s| format!("[{s}]")),
        (prop::sample::select(KEYS), value()).prop_map(|(k, v)| format!("{k}={v}")),
        (prop::sample::select(KEYS), value()).prop_map(|(k, v)| format!(" {k} = {v} # comment")),
        Just(String::new()),
        Just("# comment".to_string()),
        "[ -~]{0,20}",
    ]
}

/// A generated cfg, or a shipped one with lines deleted, repeated or replaced.
fn cfg_text() -> impl Strategy<Value = String> {
    let generated = prop::collection::vec(line(), 0..60).prop_map(|lines| {
        let mut t = String::from("[net]\nbatch=2\nwidth=64\nheight=64\nchannels=3\n");
        t += &lines.join("\n");
        t
    });
    let edited = (prop::sample::select(BUILTIN_NAMES.to_vec()), prop::collection::vec((any::<prop::sample::Index>(), 0u8..3, line()), 1..8))
        .prop_map(|(name, edits)| {
            let mut lines: Vec<String> = builtin(name).unwrap_or_default().lines().map(str::to_string).collect();
            for (at, op, new) in edits {
                if lines.is_empty() {
                    break;
                }
                let i = at.index(lines.len());
                match op {
                    0 => {
                        lines.remove(i);
                    }
                    1 => {
                        let l = lines[i].clone();
                        lines.insert(i, l);
                    }
                    _ => lines[i] = new,
                }
            }
            lines.join("\n")
        });
    prop_oneof![generated, edited, "\\PC{0,200}"]
}

#[test]
fn cfg_parser_never_panics() {
    runner()
        .run(&cfg_text(), |text| {
            match parse_str(&text, "fuzz.cfg") {
                Ok((cfg, warnings)) => {
                    // What the parser accepts is usable: layer table and memory plan follow.
                    let _ = cfg.summary();
                    let _ = MemoryPlan::of(&cfg, &BuildOptions::default());
                    for w in warnings {
                        prop_assert!(w.to_string().starts_with("fuzz.cfg:"), "{w}");
                    }
                }
                Err(e) => {
                    let msg = e.to_string();
                    prop_assert!(msg.starts_with("fuzz.cfg"), "{msg}");
                    prop_assert!(msg.chars().count() < 1000, "message not cut: {} chars", msg.chars().count());
                }
            }
            Ok(())
        })
        .unwrap();
}

/// A label line: 0..7 fields, each a plausible or hostile token.
fn label_text() -> impl Strategy<Value = String> {
    let field = prop_oneof![
        (0u32..12).prop_map(|v| v.to_string()),
        (0.0f32..=1.0).prop_map(|v| format!("{v}")),
        (-2.0f32..3.0).prop_map(|v| format!("{v}")),
        Just("NaN".to_string()),
        Just("-inf".to_string()),
        Just("1e999".to_string()),
        Just("-1".to_string()),
        Just("18446744073709551616".to_string()),
        "[ -~]{0,6}",
    ];
    let line = prop::collection::vec(field, 0..7).prop_map(|f| f.join(" "));
    prop_oneof![prop::collection::vec(line, 0..12).prop_map(|l| l.join("\n")), "\\PC{0,80}"]
}

#[test]
fn label_parser_never_panics() {
    runner()
        .run(&(label_text(), 1usize..20, any::<bool>()), |(text, classes, skip)| {
            let policy = if skip { LabelPolicy::SkipWithWarning } else { LabelPolicy::Strict };
            let mut warnings = Vec::new();
            match parse_labels(&text, Path::new("fuzz.txt"), classes, policy, &mut warnings) {
                Ok(labels) => {
                    for l in labels {
                        prop_assert!((l.class as usize) < classes);
                        for v in [l.x, l.y, l.w, l.h] {
                            prop_assert!((0.0..=1.0).contains(&v), "{v}");
                        }
                    }
                }
                Err(e) => prop_assert!(e.to_string().starts_with("fuzz.txt:"), "{e}"),
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn data_file_parser_never_panics() {
    let key = prop::sample::select(vec!["classes", "train", "valid", "names", "backup", "eval", "x", ""]);
    let line = prop_oneof![(key, value()).prop_map(|(k, v)| format!("{k} = {v}")), "[ -~]{0,20}"];
    let text = prop::collection::vec(line, 0..10).prop_map(|l| l.join("\n"));
    runner()
        .run(&text, |text| {
            if let Err(e) = DataFile::parse(&text, Path::new("fuzz.data")) {
                prop_assert!(e.to_string().contains("fuzz.data"), "{e}");
            }
            Ok(())
        })
        .unwrap();
}

/// Inputs the long run found panicking (integer overflow in shape inference and the memory
/// plan, a huge allocation for `num`): each is now a one-line error.
#[test]
fn inputs_found_by_fuzzing_are_errors() {
    let net = "[net]\nbatch=2\nwidth=64\nheight=64\nchannels=3\n";
    let cases = [
        "[net]\nbatch=13324259252576\nwidth=64\nheight=64\n".to_string(),
        format!("{net}[convolutional]\nfilters=9223372036854775807\nsize=3\n"),
        format!("{net}[convolutional]\nfilters=16\nsize=3\npad=4611686018427387904\nstride=4611686018427387904\n"),
        format!("{net}[upsample]\nstride=4611686018427387904\n"),
        format!("{net}[convolutional]\nfilters=18\nsize=1\n[yolo]\nnum=4611686018427387904\nanchors=1,1\n"),
        "[net]\nwidth=4611686018427387904\nheight=4611686018427387904\n".to_string(),
    ];
    for text in cases {
        match parse_str(&text, "found.cfg") {
            Ok(_) => panic!("accepted: {text}"),
            Err(e) => assert!(e.to_string().starts_with("found.cfg"), "{e}"),
        }
    }
}
