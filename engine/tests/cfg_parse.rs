//! The cfg parser against Darknet's own cfgs and hand-written broken ones.

use std::path::{Path, PathBuf};

use engine::cfg::{self, CfgError, Chw, LayerKind, ModelCfg};
use engine::shapes::{Activation, IouLoss};

const MODELS: [&str; 4] = ["yolov4-tiny", "yolov4-tiny-3l", "yolov3-tiny", "yolov7-tiny"];

/// Darknet's cfgs live in `shared/reference/cfg` beside the repository (`/work/shared` next to
/// `/work/main`, i.e. `CARGO_MANIFEST_DIR/../../shared`); worktrees sit one level deeper, so the
/// nearest ancestor that has it is used.
fn reference(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|a| a.join("shared/reference/cfg"))
        .find(|d| d.join("yolov4-tiny.cfg").is_file())
        .expect("shared/reference/cfg not found above CARGO_MANIFEST_DIR");
    dir.join(format!("{name}.cfg"))
}

fn bad(name: &str) -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/bad-cfgs")).join(name)
}

fn parse_ref(name: &str) -> ModelCfg {
    let (m, warnings) = cfg::parse_file(&reference(name)).unwrap_or_else(|e| panic!("{e}"));
    assert!(warnings.is_empty(), "{name}: {warnings:?}");
    m
}

/// Independent of the parser: the index of every `[yolo]` among the sections after `[net]`.
fn yolo_indices_from_text(text: &str) -> (usize, Vec<usize>) {
    let headers: Vec<&str> = text.lines().map(str::trim).filter(|l| l.starts_with('[')).skip(1).collect();
    let heads = headers.iter().enumerate().filter(|(_, h)| **h == "[yolo]").map(|(i, _)| i).collect();
    (headers.len(), heads)
}

fn chw(c: usize, h: usize, w: usize) -> Chw {
    Chw { c, h, w }
}

fn head_shapes(m: &ModelCfg) -> Vec<(usize, Chw)> {
    let shapes = m.shapes().unwrap();
    m.yolo_layers().into_iter().map(|i| (i, shapes[i].output)).collect()
}

#[test]
fn yolov4_tiny_matches_darknet() {
    let m = parse_ref("yolov4-tiny");
    assert_eq!(m.layers.len(), 38);
    assert_eq!(head_shapes(&m), vec![(30, chw(255, 13, 13)), (37, chw(255, 26, 26))]);
    // Relative route indices resolve against the route's own index: layer 31 `layers=-4` → 27.
    assert_eq!(m.layers[31].kind, LayerKind::Route(cfg::RouteCfg { layers: vec![27], groups: 1, group_id: 0 }));
    assert_eq!(m.layers[34].kind, LayerKind::Route(cfg::RouteCfg { layers: vec![33, 23], groups: 1, group_id: 0 }));
    assert_eq!(m.layers[3].kind, LayerKind::Route(cfg::RouteCfg { layers: vec![2], groups: 2, group_id: 1 }));
    let s = m.shapes().unwrap();
    assert_eq!(s[0].output, chw(32, 208, 208));
    assert_eq!(s[3].output, chw(32, 104, 104)); // second half of layer 2's 64 channels
    assert_eq!(s[9].output, chw(128, 52, 52)); // maxpool 2/2 halves
    assert_eq!(s[33].output, chw(128, 26, 26)); // upsample ×2 of 13×13
    assert_eq!(s[34].output, chw(128 + 256, 26, 26));
    // [net] values from the file, the rest Darknet defaults.
    let n = &m.net;
    assert_eq!((n.batch, n.subdivisions, n.width, n.height, n.channels), (64, 1, 416, 416, 3));
    assert_eq!(n.learning_rate, 0.00261);
    assert_eq!(n.decay, 0.0005);
    assert_eq!(n.burn_in, 1000);
    assert_eq!(n.max_batches, 2000200);
    assert_eq!(n.policy, cfg::Policy::Steps { steps: vec![1600000, 1800000], scales: vec![0.1, 0.1] });
    assert_eq!((n.saturation, n.exposure, n.hue), (1.5, 1.5, 0.1));
    assert!(n.flip && !n.mosaic && !n.adam);
    let LayerKind::Yolo(y) = &m.layers[37].kind else { panic!() };
    assert_eq!(y.mask, vec![1, 2, 3]);
    assert_eq!(y.anchors.len(), 6);
    assert_eq!(y.anchors[5], (344.0, 319.0));
    assert_eq!((y.classes, y.jitter, y.scale_x_y, y.iou_normalizer), (80, 0.3, 1.05, 0.07));
    assert_eq!((y.iou_loss, y.ignore_thresh, y.resize, y.nms_kind), (IouLoss::Ciou, 0.7, 1.5, cfg::NmsKind::Greedy));
    assert_eq!((y.obj_normalizer, y.iou_thresh, y.iou_thresh_kind, y.max_boxes), (1.0, 1.0, IouLoss::Iou, 200));
    assert_eq!(y.max_delta, f32::MAX);
    let LayerKind::Convolutional(c) = &m.layers[29].kind else { panic!() };
    assert_eq!((c.filters, c.size, c.padding, c.batch_normalize, c.activation), (255, 1, 0, false, Activation::Linear));
    let LayerKind::Convolutional(c) = &m.layers[0].kind else { panic!() };
    assert_eq!((c.filters, c.size, c.stride, c.padding, c.batch_normalize, c.activation), (32, 3, 2, 1, true, Activation::Leaky));
}

#[test]
fn yolov3_tiny_matches_darknet() {
    let m = parse_ref("yolov3-tiny");
    assert_eq!(m.layers.len(), 24);
    assert_eq!(head_shapes(&m), vec![(16, chw(255, 13, 13)), (23, chw(255, 26, 26))]);
    // The size-2 stride-1 maxpool keeps 13×13 (padding defaults to size−1 = 1).
    let s = m.shapes().unwrap();
    assert_eq!(s[11].input, chw(512, 13, 13));
    assert_eq!(s[11].output, chw(512, 13, 13));
}

/// Layer counts and heads derived from the cfg text: three heads at strides 8/16/32 with
/// 3 masks × (80+5) = 255 channels each, in the order the file lists them.
#[test]
fn three_head_models_have_expected_heads() {
    for (name, strides) in [("yolov4-tiny-3l", [32, 16, 8]), ("yolov7-tiny", [8, 16, 32])] {
        let text = std::fs::read_to_string(reference(name)).unwrap();
        let (count, heads) = yolo_indices_from_text(&text);
        let m = parse_ref(name);
        assert_eq!(m.layers.len(), count, "{name}");
        let (w, h) = (m.net.width, m.net.height);
        let want: Vec<(usize, Chw)> = heads.iter().zip(strides).map(|(&i, s)| (i, chw(255, h / s, w / s))).collect();
        assert_eq!(head_shapes(&m), want, "{name}");
    }
    assert_eq!(parse_ref("yolov4-tiny-3l").layers.len(), 45);
    assert_eq!(parse_ref("yolov7-tiny").layers.len(), 99);
    let m = parse_ref("yolov7-tiny");
    let LayerKind::Yolo(y) = &m.layers[m.yolo_layers()[0]].kind else { panic!() };
    assert!(y.new_coords && y.objectness_smooth);
    assert_eq!((y.max_delta, y.iou_thresh, y.nms_kind), (2.0, 0.2, cfg::NmsKind::Diou));
}

#[test]
fn builtins_equal_reference_files() {
    for name in MODELS {
        let reference_text = std::fs::read_to_string(reference(name)).unwrap();
        assert_eq!(cfg::builtin(name), Some(reference_text.as_str()), "{name}");
        let (from_builtin, _) = cfg::load(name).unwrap();
        assert_eq!(from_builtin.source, format!("builtin:{name}.cfg"));
        let from_file = parse_ref(name);
        assert_eq!(from_builtin.net.policy, from_file.net.policy);
        let kinds = |m: &ModelCfg| m.layers.iter().map(|l| (l.kind.clone(), l.origin.line)).collect::<Vec<_>>();
        assert_eq!(kinds(&from_builtin), kinds(&from_file));
    }
    assert!(cfg::builtin("yolov9").is_none());
    let e = cfg::load("no-such-model").unwrap_err();
    assert!(matches!(e, CfgError::UnknownModel { .. }), "{e}");
    let (m, _) = cfg::load(reference("yolov3-tiny").to_str().unwrap()).unwrap();
    assert_eq!(m.layers.len(), 24);
}

#[test]
fn bflops_match_darknet() {
    let m = parse_ref("yolov4-tiny");
    // Layer 0 by the formula: 2 · 32 filters · 3·3·3 · 208·208.
    let s = m.shapes().unwrap();
    let l0 = cfg::layer_bflops(&m.layers[0].kind, &s[0]);
    assert!((l0 - 2.0 * 32.0 * 27.0 * 208.0 * 208.0 / 1e9).abs() < 1e-12);
    // Darknet prints "Total BFLOPS 6.910" for yolov4-tiny at 416×416 with 80 classes,
    // and 5.571 for yolov3-tiny.
    let summary = m.summary().unwrap();
    let total = summary.lines().last().unwrap();
    assert_eq!(total.split_whitespace().last(), Some("6.910"), "{total}");
    assert_eq!(format!("{:.3}", m.bflops().unwrap()), "6.910");
    assert_eq!(format!("{:.3}", parse_ref("yolov3-tiny").bflops().unwrap()), "5.571");
    assert_eq!(summary.lines().filter(|l| l.contains(" conv ")).count(), 21);
    for name in MODELS {
        let m = parse_ref(name);
        println!("{name} {}x{}: {:.3} BFLOPs", m.net.width, m.net.height, m.bflops().unwrap());
    }
    println!("{summary}");
}

#[test]
fn overrides() {
    let mut m = parse_ref("yolov4-tiny");
    m.set_classes(3).unwrap();
    assert_eq!(head_shapes(&m), vec![(30, chw(24, 13, 13)), (37, chw(24, 26, 26))]);
    for i in [29, 36] {
        let LayerKind::Convolutional(c) = &m.layers[i].kind else { panic!() };
        assert_eq!(c.filters, (3 + 5) * 3);
    }
    m.set_size(320, 224).unwrap();
    assert_eq!(head_shapes(&m), vec![(30, chw(24, 7, 10)), (37, chw(24, 14, 20))]);
    // 100 is not a multiple of 32: 100→50→25→13→7→4, upsampled to 8 ≠ 7 at the route; the model is kept.
    let before = m.clone();
    let e = m.set_size(100, 100).unwrap_err();
    assert!(e.to_string().contains("layer 34 [route]"), "{e}");
    assert_eq!(m, before);
    assert!(m.set_batch(64, 3).is_err());
    assert!(m.set_classes(0).is_err());
    m.set_batch(16, 4).unwrap();
    assert_eq!((m.net.batch, m.net.subdivisions), (16, 4));
}

#[test]
fn darknet_defaults() {
    let text = "[net]\nwidth=32\nheight=32\n[convolutional]\n[maxpool]\nstride=2\n[upsample]\n[convolutional]\nfilters=25\n[yolo]\nanchors=10,14\n";
    let (m, w) = cfg::parse_str(text, "defaults.cfg").unwrap();
    assert!(w.is_empty(), "{w:?}");
    let n = &m.net;
    assert_eq!((n.batch, n.subdivisions, n.channels, n.max_batches, n.burn_in), (1, 1, 3, 0, 0));
    assert_eq!((n.learning_rate, n.momentum, n.decay, n.power, n.learning_rate_min), (0.001, 0.9, 0.0001, 4.0, 1e-5));
    assert_eq!((n.adam, n.b1, n.b2, n.eps), (false, 0.9, 0.999, 1e-6));
    assert_eq!((n.saturation, n.exposure, n.hue, n.angle), (1.0, 1.0, 0.0, 0.0));
    assert_eq!((n.flip, n.mosaic, n.letter_box, n.mixup, n.blur, n.gaussian_noise), (true, false, false, false, 0, 0));
    assert!(!n.mosaic_bound);
    assert_eq!(n.policy, cfg::Policy::Constant);
    let LayerKind::Convolutional(c) = &m.layers[0].kind else { panic!() };
    assert_eq!((c.filters, c.size, c.stride, c.padding, c.groups, c.batch_normalize), (1, 1, 1, 0, 1, false));
    assert_eq!(c.activation, Activation::Logistic);
    assert_eq!(m.layers[1].kind, LayerKind::Maxpool(cfg::MaxpoolCfg { size: 2, stride: 2, padding: 1 }));
    assert_eq!(m.layers[2].kind, LayerKind::Upsample { stride: 2, scale: 1.0 });
    let LayerKind::Yolo(y) = &m.layers[4].kind else { panic!() };
    assert_eq!((y.classes, y.mask.clone(), y.jitter, y.scale_x_y), (20, vec![0], 0.2, 1.0));
    assert_eq!((y.iou_normalizer, y.obj_normalizer, y.cls_normalizer, y.iou_loss), (0.75, 1.0, 1.0, IouLoss::Mse));
    assert_eq!((y.ignore_thresh, y.truth_thresh, y.iou_thresh, y.random, y.resize), (0.5, 1.0, 1.0, 0.0, 1.0));
    assert_eq!((y.label_smooth_eps, y.focal_loss, y.max_delta, y.new_coords, y.objectness_smooth), (0.0, false, f32::MAX, false, false));
    assert_eq!((y.max_boxes, y.nms_kind, y.beta_nms), (200, cfg::NmsKind::Default, 0.6));
}

#[test]
fn other_sections_and_policies() {
    let text = "[network]\nwidth=8\nheight=8\nchannels=4\npolicy=sgdr\nmax_batches=500\n\
        [convolutional]\nfilters=8\nsize=3\npad=1\ngroups=2\nactivation=mish\n\
        [avgpool]\n[convolutional]\nfilters=8\nactivation=logistic\n\
        [scale_channels]\nfrom=-3\n[shortcut]\nfrom=0\nactivation=leaky\n[reorg]\nstride=2\n[dropout]\n";
    let (m, w) = cfg::parse_str(text, "misc.cfg").unwrap();
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(m.net.policy, cfg::Policy::Sgdr { cycle: 500, mult: 2 });
    let s = m.shapes().unwrap();
    let outs: Vec<Chw> = s.iter().map(|s| s.output).collect();
    assert_eq!(outs, vec![chw(8, 8, 8), chw(8, 1, 1), chw(8, 1, 1), chw(8, 8, 8), chw(8, 8, 8), chw(32, 4, 4), chw(32, 4, 4)]);
    assert_eq!(m.layers[3].kind, LayerKind::ScaleChannels { from: 0 });
    assert_eq!(m.layers[6].kind, LayerKind::Dropout { probability: 0.5 });
    let summary = m.summary().unwrap();
    assert!(summary.contains("conv      8/2"), "{summary}");
}

/// Parses a bad cfg; returns the error after checking it names `file:line`.
fn expect_error(name: &str, line: usize) -> String {
    let path = bad(name);
    let e = cfg::parse_file(&path).err().unwrap_or_else(|| panic!("{name} parsed"));
    let msg = e.to_string();
    assert_eq!(e.origin().map(|o| o.line), Some(line), "{msg}");
    assert!(msg.starts_with(&format!("{}:{line}: ", path.display())), "{msg}");
    assert!(!msg.contains('\n'), "{msg}");
    msg
}

#[test]
fn bad_cfgs_name_the_line() {
    let m = expect_error("missing-equals.cfg", 7);
    assert!(m.contains("size 3"), "{m}");
    assert!(expect_error("unknown-section.cfg", 9).contains("unknown section [frobnicate]"));
    assert!(expect_error("unsupported-lstm.cfg", 9).contains("[lstm]"));
    assert!(expect_error("unsupported-connected.cfg", 9).contains("[connected]"));
    let m = expect_error("future-route.cfg", 11);
    assert!(m.contains("layers=-1,3") && m.contains("layer 3"), "{m}");
    let m = expect_error("wrong-yolo-filters.cfg", 17);
    assert!(m.contains("filters=24") && m.contains("(3+5)*2 = 16") && m.contains("wrong-yolo-filters.cfg:12"), "{m}");
    let m = expect_error("non-numeric.cfg", 7);
    assert!(m.contains("filters=sixteen"), "{m}");
    let m = expect_error("mask-out-of-range.cfg", 10);
    assert!(m.contains("mask") && m.contains('3'), "{m}");
    assert!(expect_error("route-size-mismatch.cfg", 14).contains("differ in size"));
    assert!(expect_error("shortcut-mismatch.cfg", 15).contains("shape mismatch"));
    assert!(expect_error("yolo-after-route.cfg", 12).contains("[convolutional]"));
}

#[test]
fn unknown_keys_are_warnings() {
    let (m, w) = cfg::parse_file(&bad("unknown-key.cfg")).unwrap();
    assert_eq!(m.layers.len(), 1);
    let lines: Vec<usize> = w.iter().map(|w| w.origin.line).collect();
    assert_eq!(lines, vec![4, 10], "{w:?}");
    assert!(w[0].message.contains("max_chart_loss") && w[0].message.contains("no effect"));
    assert!(w[1].message.contains("unknown key `colour`"));
    assert!(w[1].to_string().contains("unknown-key.cfg:10: warning:"));
}

#[test]
fn crlf_file_parses() {
    let raw = std::fs::read(bad("crlf.cfg")).unwrap();
    assert!(raw.windows(2).any(|w| w == b"\r\n"), "fixture lost its CRLF line ends");
    let (m, w) = cfg::parse_file(&bad("crlf.cfg")).unwrap();
    assert!(w.is_empty(), "{w:?}");
    assert_eq!((m.net.width, m.net.height), (64, 64));
    assert_eq!(m.layers[1].origin.line, 12);
    let LayerKind::Convolutional(c) = &m.layers[0].kind else { panic!() };
    assert_eq!(c.activation, Activation::Leaky);
    assert_eq!(m.shapes().unwrap()[1].output, chw(16, 32, 32));
}

#[test]
fn duplicate_keys_keep_the_first_like_darknet() {
    let (m, w) = cfg::parse_str("[net]\nwidth=32\nheight=32\nwidth=64\n[convolutional]\n", "dup.cfg").unwrap();
    assert_eq!(m.net.width, 32);
    assert_eq!(w.len(), 1);
    assert_eq!(w[0].origin.line, 4);
}

// ---- classifiers (issue 16) ---------------------------------------------------------------------

fn classifier_reference(name: &str) -> PathBuf {
    reference("yolov4-tiny").with_file_name("classifiers").join(format!("{name}.cfg"))
}

/// Darknet's ImageNet classifiers: conv/maxpool stacks ending in a 1000-filter 1×1 conv, global
/// [avgpool], [softmax] and [cost].
#[test]
fn darknet_classifiers_parse_and_end_in_softmax_and_cost() {
    for (name, convs) in [("tiny", 16), ("darknet", 8)] {
        let (m, _) = cfg::parse_file(&classifier_reference(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let n = m.layers.len();
        assert_eq!(m.layers.iter().filter(|l| matches!(l.kind, LayerKind::Convolutional(_))).count(), convs, "{name}");
        assert_eq!(m.layers[n - 3].kind, LayerKind::Avgpool, "{name}");
        assert_eq!(m.layers[n - 2].kind, LayerKind::Softmax { groups: 1, temperature: 1.0 }, "{name}");
        assert_eq!(m.layers[n - 1].kind, LayerKind::Cost { kind: engine::shapes::CostKind::Sse, scale: 1.0 }, "{name}");
        assert!(m.is_classifier());
        assert_eq!(m.classifier_classes(), Some(1000), "{name}");
        let s = m.shapes().unwrap();
        assert_eq!(s[n - 1].output, chw(1000, 1, 1), "{name}");
    }
}

/// cifar.cfg starts with [crop], which is refused with its file and line.
#[test]
fn cifar_classifier_refuses_crop_with_file_and_line() {
    let e = cfg::parse_file(&classifier_reference("cifar")).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, CfgError::UnsupportedSection { .. }), "{msg}");
    assert!(msg.contains("cifar.cfg:15") && msg.contains("crop"), "{msg}");
}

fn classifier_text(tail: &str) -> String {
    format!(
        "[net]\nbatch=2\nsubdivisions=1\nwidth=8\nheight=8\nchannels=3\n\n[convolutional]\nfilters=4\nsize=1\nstride=1\nactivation=linear\n\n[avgpool]\n\n{tail}"
    )
}

#[test]
fn softmax_and_cost_keys_and_errors() {
    let (m, _) = cfg::parse_str(&classifier_text("[softmax]\ngroups=2\ntemperature=0.5\n\n[cost]\ntype=smooth\nscale=2\n"), "c.cfg").unwrap();
    assert_eq!(m.layers[2].kind, LayerKind::Softmax { groups: 2, temperature: 0.5 });
    assert_eq!(m.layers[3].kind, LayerKind::Cost { kind: engine::shapes::CostKind::Smooth, scale: 2.0 });
    let (m, _) = cfg::parse_str(&classifier_text("[softmax]\n\n[cost]\ntype=masked\n"), "c.cfg").unwrap();
    assert_eq!(m.layers[3].kind, LayerKind::Cost { kind: engine::shapes::CostKind::Masked, scale: 1.0 });
    for (tail, want) in [
        ("[softmax]\ngroups=3\n", "c.cfg:16"), // the section: 4 inputs not divisible by 3
        ("[softmax]\ntemperature=0\n", "c.cfg:17"),             // the key's line
        ("[softmax]\ntree=data/9k.tree\n", "c.cfg:17"),
        ("[cost]\ntype=wgan\n", "c.cfg:17"),
    ] {
        let err = match cfg::parse_str(&classifier_text(tail), "c.cfg") {
            Err(e) => e.to_string(),
            Ok((m, _)) => m.shapes().err().map(|e| e.to_string()).unwrap_or_else(|| panic!("{tail:?} accepted")),
        };
        assert!(err.contains(want), "{tail:?}: {err}");
    }
}

#[test]
fn builtin_tiny_classifier_and_its_classes_override() {
    let (mut m, warnings) = cfg::load("tiny-classifier").unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert!(m.is_classifier());
    assert_eq!(m.classifier_classes(), Some(3));
    m.set_classes(5).unwrap();
    assert_eq!(m.classifier_classes(), Some(5));
}
