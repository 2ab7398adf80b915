//! `runner detect CFG WEIGHTS IMAGES...`: Darknet's `detector test`. Runs a trained model on
//! images, folders or image lists; writes `<stem>.png` with boxes and labels per image and one
//! `detections.json`, and prints Darknet's `name: 87%` lines.

mod inputs;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use engine::Backend;
use engine::data::darknet::{DataFile, read_names};
use engine::data::image::RgbImage;
use engine::eval::Detection;
use engine::gpu::GpuBackend;
use engine::network::{BuildOptions, Network};
use reports::annotate::{Annotation, annotate};
use serde::Serialize;

use crate::experiment::BackendSpec;
use inputs::{Geometry, collect_images, output_paths};

#[derive(Args)]
pub struct DetectArgs {
    /// Darknet .cfg (or a built-in name)
    pub cfg: String,
    /// Darknet .weights (must cover every layer of the cfg)
    pub weights: PathBuf,
    /// Images, folders of images (.jpg/.jpeg/.png/.bmp) or .txt lists of image paths
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Class names: a .names file
    #[arg(long, conflicts_with = "data")]
    pub names: Option<PathBuf>,
    /// Class names from a Darknet .data file's `names`
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Confidence threshold, in [0, 1) (Darknet's -thresh)
    #[arg(long, default_value_t = 0.25, value_parser = super::map::confidence_threshold)]
    pub thresh: f32,
    /// NMS threshold; the kind (IoU, greedy or DIoU) is the cfg's last [yolo] nms_kind
    #[arg(long, default_value_t = 0.45)]
    pub nms: f32,
    /// Keep the aspect ratio (grey padding) like Darknet's -letter_box; on when the cfg's [net] has letter_box=1
    #[arg(long)]
    pub letterbox: bool,
    /// Output folder for <stem>.png and detections.json
    #[arg(long, default_value = "detections")]
    pub out: PathBuf,
    /// Overwrite files that already exist in the output folder
    #[arg(long)]
    pub force: bool,
    /// Backend: cpu, gpu, gpu:<index> or gpu:<adapter name> (never falls back to the CPU)
    #[arg(long, default_value = "cpu")]
    pub backend: BackendSpec,
}

/// One (detection, class) above the threshold, in pixels of the original image.
#[derive(Clone, Debug, Serialize)]
pub struct Found {
    pub class_id: usize,
    pub name: String,
    pub confidence: f32,
    pub left: f32,
    pub top: f32,
    pub right: f32,
    pub bottom: f32,
}

/// One image's entry of detections.json.
#[derive(Clone, Debug, Serialize)]
pub struct ImageResult {
    pub image: String,
    pub output: String,
    pub width: usize,
    pub height: usize,
    pub detections: Vec<Found>,
}

/// detections.json.
#[derive(Serialize)]
struct Report<'a> {
    cfg: &'a str,
    weights: String,
    backend: String,
    thresh: f32,
    nms: f32,
    letterbox: bool,
    images: Vec<ImageResult>,
}

/// Class names from --names / --data, or "0".."C-1" when neither is given.
fn class_names(a: &DetectArgs, classes: usize) -> Result<Vec<String>> {
    let (names, from) = match (&a.names, &a.data) {
        (Some(p), _) => (read_names(p)?, p.clone()),
        (None, Some(d)) => {
            let data = DataFile::load(d)?;
            (data.class_names()?, data.names.clone().unwrap_or_else(|| d.clone()))
        }
        (None, None) => return Ok((0..classes).map(|c| c.to_string()).collect()),
    };
    if names.len() != classes {
        bail!("{}: {} class names but the cfg's [yolo] layers have classes={classes}", from.display(), names.len());
    }
    Ok(names)
}

/// Detections of one image: the (detection, class) pairs above `thresh`, sorted left to right as
/// Darknet prints them, mapped to original-image pixels.
fn found(dets: &[Detection], geo: &Geometry, names: &[String], thresh: f32) -> Vec<Found> {
    let mut out = Vec::new();
    for d in dets {
        let [left, top, right, bottom] = geo.to_pixels(&d.bbox);
        // A diverged model can decode NaN boxes; they have no place to be drawn or listed.
        if ![left, top, right, bottom].iter().all(|v| v.is_finite()) {
            continue;
        }
        for (class_id, &p) in d.prob.iter().enumerate() {
            if p > thresh {
                let name = names.get(class_id).cloned().unwrap_or_else(|| class_id.to_string());
                out.push(Found { class_id, name, confidence: p, left, top, right, bottom });
            }
        }
    }
    out.sort_by(|a, b| a.left.total_cmp(&b.left));
    out
}

/// The box to draw per detection: its most confident class (as Darknet colours a box).
fn annotations(found: &[Found]) -> Vec<Annotation> {
    let mut best: Vec<&Found> = Vec::new();
    for f in found {
        let same = |g: &&mut &Found| (g.left, g.top, g.right, g.bottom) == (f.left, f.top, f.right, f.bottom);
        match best.iter_mut().find(same) {
            Some(b) if b.confidence < f.confidence => *b = f,
            Some(_) => {}
            None => best.push(f),
        }
    }
    best.iter()
        .map(|f| Annotation { class: f.class_id, confidence: f.confidence, left: f.left, top: f.top, right: f.right, bottom: f.bottom })
        .collect()
}

/// Runs every image; returns the results and whether letterbox was on.
fn detect_all<B: Backend>(backend: B, a: &DetectArgs, images: &[(PathBuf, PathBuf)]) -> Result<(Vec<ImageResult>, bool)> {
    let (mut cfg, warnings) = engine::cfg::load(&a.cfg)?;
    for w in warnings {
        eprintln!("{w}");
    }
    cfg.set_batch(1, 1)?;
    let classes = cfg
        .layers
        .iter()
        .rev()
        .find_map(|l| if let engine::cfg::LayerKind::Yolo(y) = &l.kind { Some(y.classes) } else { None })
        .with_context(|| format!("{}: the cfg has no [yolo] layer to detect with", a.cfg))?;
    if cfg.net.channels != 3 {
        bail!("{}: channels={} but detect reads RGB images (channels=3)", a.cfg, cfg.net.channels);
    }
    let names = class_names(a, classes)?;
    let letterbox = a.letterbox || cfg.net.letter_box;
    let net = Network::build(backend, cfg, &BuildOptions::default())?;
    super::load_inference_weights(&net, &a.weights)?;
    let (nw, nh) = (net.cfg.net.width, net.cfg.net.height);
    let truths = vec![0.0; net.backend.len(&net.truths)];
    let mut planar = vec![0.0; 3 * nw * nh];
    // Only now that the model loaded: a failed start leaves no empty output folder behind.
    std::fs::create_dir_all(&a.out).with_context(|| format!("{}: cannot create the output folder", a.out.display()))?;
    let mut results = Vec::with_capacity(images.len());
    for (path, png) in images {
        let img = RgbImage::load(path)?;
        let geo = Geometry::new(img.width, img.height, nw, nh, letterbox);
        geo.fill_input(&img, &mut planar);
        let start = Instant::now();
        net.set_input(&planar, &truths).with_context(|| path.display().to_string())?;
        let dets = net.detect(a.thresh, a.nms).into_iter().next().unwrap_or_default();
        let ms = start.elapsed().as_secs_f64() * 1e3;
        let found = found(&dets, &geo, &names, a.thresh);
        // Written, not println!: a closed pipe (`| head`) is an error to report, not a panic.
        let mut lines = format!("{}: Predicted in {ms:.3} milli-seconds.\n", path.display());
        for f in &found {
            lines += &format!("{}: {:.0}%\n", f.name, f.confidence * 100.0);
        }
        std::io::stdout().lock().write_all(lines.as_bytes()).context("stdout")?;
        let drawn = annotate(img.width as u32, img.height as u32, &img.data, &annotations(&found), &names)
            .with_context(|| path.display().to_string())?;
        RgbImage { width: img.width, height: img.height, data: drawn.rgb }.save_png(png)?;
        results.push(ImageResult {
            image: path.display().to_string(),
            output: png.display().to_string(),
            width: img.width,
            height: img.height,
            detections: found,
        });
    }
    Ok((results, letterbox))
}

pub fn run(a: &DetectArgs) -> Result<ExitCode> {
    if !(0.0..=1.0).contains(&a.nms) {
        bail!("--nms {}: expected a value in [0, 1]", a.nms);
    }
    let images = collect_images(&a.inputs)?;
    let json = a.out.join("detections.json");
    let plan = output_paths(&images, &a.out)?;
    if !a.force {
        for p in plan.iter().map(|(_, png)| png).chain(std::iter::once(&json)) {
            if p.exists() {
                bail!("{}: already exists (pass --force to overwrite)", p.display());
            }
        }
    }
    let ((results, letterbox), backend) = match &a.backend {
        BackendSpec::Cpu => (detect_all(super::cpu_backend(None)?, a, &plan)?, "cpu".to_string()),
        BackendSpec::Gpu(sel) => {
            let gpu = GpuBackend::new(&sel.adapter_selector())?;
            let info = gpu.adapter_info();
            let name = format!("gpu ({}, {}, {})", info.name, info.backend, info.device_type);
            eprintln!("backend: {name}");
            if info.device_type == "cpu" {
                eprintln!("warning: {} is a software renderer (wgpu device type cpu), not a GPU", info.name);
            }
            (detect_all(gpu, a, &plan)?, name)
        }
    };
    let report = Report {
        cfg: &a.cfg,
        weights: a.weights.display().to_string(),
        backend,
        thresh: a.thresh,
        nms: a.nms,
        letterbox,
        images: results,
    };
    write_json(&json, &report)?;
    eprintln!("wrote {} image(s) and {}", report.images.len(), json.display());
    Ok(ExitCode::SUCCESS)
}

fn write_json(path: &Path, report: &Report) -> Result<()> {
    let text = serde_json::to_string_pretty(report).context("detections.json")?;
    std::fs::write(path, text + "\n").with_context(|| format!("{}: cannot write", path.display()))
}
