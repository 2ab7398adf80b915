//! `runner detect` end to end: yolov4-tiny at 64 px (2 classes, seeded random weights) on
//! synthetic images; PNGs at the original size, a parseable detections.json, refusal to
//! overwrite, one-line errors naming the file.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use engine::cfg::{builtin, parse_str};
use engine::cpu::CpuBackend;
use engine::data::image::RgbImage;
use engine::network::{BuildOptions, Network};

/// A fresh folder for one test under cargo's per-target temp dir.
fn dir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("detect-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create test dir");
    d
}

/// yolov4-tiny for 2 classes at 64×64 as cfg text (Darknet's file with its numbers changed).
fn tiny_cfg_text() -> String {
    let text = builtin("yolov4-tiny").expect("built-in yolov4-tiny");
    text.replace("width=416", "width=64")
        .replace("height=416", "height=64")
        .replace("classes=80", "classes=2")
        .replace("filters=255", "filters=21")
}

/// Writes cfg, names and seeded random weights (BN variance 1, so activations stay sane).
fn model(d: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let cfg_path = d.join("tiny.cfg");
    let text = tiny_cfg_text();
    std::fs::write(&cfg_path, &text).expect("write cfg");
    let (mut cfg, _) = parse_str(&text, "tiny.cfg").expect("parse cfg");
    cfg.set_batch(1, 1).expect("batch");
    let net = Network::build(CpuBackend::new(), cfg, &BuildOptions { seed: 11, ..Default::default() }).expect("build");
    let mut params = net.conv_params();
    for p in params.iter_mut().flatten() {
        if let Some(v) = p.rolling_variance.as_mut() {
            v.fill(1.0);
        }
    }
    net.set_conv_params(&params);
    let weights = d.join("tiny.weights");
    net.save_weights(&weights, 0).expect("save weights");
    let names = d.join("obj.names");
    std::fs::write(&names, "dog\nbicycle\n").expect("write names");
    (cfg_path, weights, names)
}

/// Two images of different sizes and aspect ratios (neither is the network size).
fn images(d: &Path) -> Vec<(PathBuf, usize, usize)> {
    let folder = d.join("imgs");
    std::fs::create_dir_all(&folder).expect("imgs dir");
    let mut out = Vec::new();
    for (name, w, h) in [("wide", 96usize, 50usize), ("tall", 37, 70)] {
        let mut img = RgbImage::new(w, h);
        for (i, px) in img.data.chunks_exact_mut(3).enumerate() {
            let (x, y) = (i % w, i / w);
            px.copy_from_slice(&[(x * 255 / w) as u8, (y * 255 / h) as u8, if (x / 8 + y / 8) % 2 == 0 { 40 } else { 200 }]);
        }
        let p = folder.join(format!("{name}.png"));
        img.save_png(&p).expect("save image");
        out.push((p, w, h));
    }
    out
}

fn runner(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_runner")).args(args).output().expect("run runner")
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 test path")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).trim().to_string()
}

#[test]
fn detect_writes_pngs_at_original_size_and_json() {
    let d = dir("basic");
    let (cfg, weights, names) = model(&d);
    let imgs = images(&d);
    let out = d.join("out");
    // A low threshold so random weights still give boxes to draw.
    let folder = d.join("imgs");
    let args = ["detect", s(&cfg), s(&weights), s(&folder), "--names", s(&names), "--out", s(&out), "--thresh", "0.05"];
    let o = runner(&args);
    assert!(o.status.success(), "runner failed: {}", stderr(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(stdout.matches("Predicted in").count(), 2, "{stdout}");

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("detections.json")).expect("read json")).expect("json parses");
    let entries = json["images"].as_array().expect("images array");
    assert_eq!(entries.len(), 2);
    let mut total = 0;
    for (path, w, h) in &imgs {
        let stem = path.file_stem().and_then(|s| s.to_str()).expect("stem");
        let png = out.join(format!("{stem}.png"));
        let drawn = RgbImage::load(&png).expect("output PNG decodes");
        assert_eq!((drawn.width, drawn.height), (*w, *h), "{}", png.display());
        let e = entries.iter().find(|e| e["image"].as_str().is_some_and(|i| i.ends_with(&format!("{stem}.png")))).expect("entry");
        assert_eq!((e["width"].as_u64(), e["height"].as_u64()), (Some(*w as u64), Some(*h as u64)));
        let dets = e["detections"].as_array().expect("detections array");
        for det in dets {
            let class = det["class_id"].as_u64().expect("class_id") as usize;
            assert!(class < 2);
            assert_eq!(det["name"].as_str(), Some(["dog", "bicycle"][class]));
            let conf = det["confidence"].as_f64().expect("confidence");
            assert!(conf > 0.05 && conf <= 1.0, "{conf}");
            let b: Vec<f64> = ["left", "top", "right", "bottom"].iter().map(|k| det[*k].as_f64().expect("box")).collect();
            assert!(0.0 <= b[0] && b[0] <= b[2] && b[2] <= *w as f64, "{b:?}");
            assert!(0.0 <= b[1] && b[1] <= b[3] && b[3] <= *h as f64, "{b:?}");
            assert!(stdout.contains(&format!("{}: {:.0}%", det["name"].as_str().unwrap_or(""), conf * 100.0)));
        }
        if !dets.is_empty() {
            let src = RgbImage::load(path).expect("source");
            assert_ne!(src.data, drawn.data, "{stem}: detections but nothing drawn");
        }
        total += dets.len();
    }
    assert!(total > 0, "random weights at thresh 0.05 gave no detection to draw");

    // Letterbox too: same sizes back, boxes still inside the image.
    let mut lb = args.to_vec();
    lb.extend(["--letterbox", "--force"]);
    let o = runner(&lb);
    assert!(o.status.success(), "letterbox run failed: {}", stderr(&o));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("detections.json")).expect("read json")).expect("json parses");
    assert_eq!(json["letterbox"].as_bool(), Some(true));
}

#[test]
fn second_run_refuses_to_overwrite_without_force() {
    let d = dir("overwrite");
    let (cfg, weights, names) = model(&d);
    let imgs = images(&d);
    let out = d.join("out");
    let list = d.join("list.txt");
    std::fs::write(&list, format!("imgs/{}\n", imgs[0].0.file_name().and_then(|n| n.to_str()).expect("name"))).expect("list");
    let args = ["detect", s(&cfg), s(&weights), s(&list), "--names", s(&names), "--out", s(&out)];
    let o = runner(&args);
    assert!(o.status.success(), "first run failed: {}", stderr(&o));
    let png = out.join("wide.png");
    let before = std::fs::read(&png).expect("first output");
    let o = runner(&args);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(!e.contains('\n'), "one line: {e}");
    assert!(e.contains("wide.png") && e.contains("--force"), "{e}");
    assert_eq!(std::fs::read(&png).expect("still there"), before);
    let mut forced = args.to_vec();
    forced.push("--force");
    assert!(runner(&forced).status.success());
}

#[test]
fn errors_are_one_line_naming_the_file() {
    let d = dir("errors");
    let (cfg, weights, names) = model(&d);
    let imgs = images(&d);
    let img = s(&imgs[0].0);
    let out = d.join("out");
    let check = |args: &[&str], fragment: &str| {
        let o = runner(args);
        assert_eq!(o.status.code(), Some(2), "{args:?} should fail");
        let e = stderr(&o);
        assert!(!e.contains('\n') && e.contains(fragment), "expected one line naming {fragment}: {e}");
    };
    let missing = d.join("missing.weights");
    check(&["detect", s(&cfg), s(&missing), img, "--names", s(&names), "--out", s(&out)], "missing.weights");

    let short = d.join("short.weights");
    let bytes = std::fs::read(&weights).expect("weights");
    std::fs::write(&short, &bytes[..bytes.len() / 2]).expect("short weights");
    check(&["detect", s(&cfg), s(&short), img, "--names", s(&names), "--out", s(&out)], "short.weights");

    let bad = d.join("broken.jpg");
    std::fs::write(&bad, b"not a jpeg").expect("bad image");
    check(&["detect", s(&cfg), s(&weights), s(&bad), "--names", s(&names), "--out", s(&out), "--force"], "broken.jpg");

    let three = d.join("three.names");
    std::fs::write(&three, "a\nb\nc\n").expect("names");
    check(&["detect", s(&cfg), s(&weights), img, "--names", s(&three), "--out", s(&out), "--force"], "three.names");

    check(&["detect", s(&cfg), s(&weights), s(&d.join("nope.jpg")), "--out", s(&out)], "nope.jpg");
}
