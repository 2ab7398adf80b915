//! `runner map DATA CFG WEIGHTS`: mAP of a model on a Darknet `.data` valid list, printed the way
//! `darknet detector map` prints it, so the two tools' outputs compare line by line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Result, bail};
use clap::Args;
use engine::data::darknet::{DataFile, LabelPolicy};
use engine::data::loader::{BatchPlan, LoaderConfig};
use engine::eval::map::{MapAccumulator, format_darknet};
use engine::gpu::GpuBackend;
use engine::network::{BuildOptions, Network};
use engine::Backend;

use crate::experiment::BackendSpec;

#[derive(Args)]
pub struct MapArgs {
    /// Darknet .data file (its `valid` list is evaluated; `train` when it has none)
    pub data: PathBuf,
    /// Darknet .cfg (or a built-in name)
    pub cfg: String,
    /// Darknet .weights
    pub weights: PathBuf,
    /// Recall points for AP: 0 = area under the curve (Darknet's default), 11 (VOC2007), 101 (COCO)
    #[arg(long, default_value_t = 0, value_parser = recall_points)]
    pub points: usize,
    /// IoU threshold for a true positive, in (0, 1] (Darknet's -iou_thresh)
    #[arg(long, default_value_t = 0.5, value_parser = iou_threshold)]
    pub iou_thresh: f32,
    /// Confidence threshold for precision/recall/F1/TP/FP, in [0, 1) (Darknet's -thresh)
    #[arg(long, default_value_t = 0.25, value_parser = confidence_threshold)]
    pub thresh: f32,
    /// Backend: cpu, gpu, gpu:<index> or gpu:<adapter name>
    #[arg(long, default_value = "cpu")]
    pub backend: BackendSpec,
}

fn number(s: &str) -> Result<f32, String> {
    s.parse::<f32>().map_err(|_| format!("`{s}` is not a number"))
}

fn recall_points(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(p @ (0 | 11 | 101)) => Ok(p),
        _ => Err(format!("{s}: expected 0 (area under the curve), 11 (VOC2007) or 101 (COCO)")),
    }
}

fn iou_threshold(s: &str) -> Result<f32, String> {
    let v = number(s)?;
    if v > 0.0 && v <= 1.0 { Ok(v) } else { Err(format!("{s}: expected an IoU in (0, 1]")) }
}

/// Also `detect --thresh`: a confidence in [0, 1).
pub fn confidence_threshold(s: &str) -> Result<f32, String> {
    let v = number(s)?;
    if (0.0..1.0).contains(&v) { Ok(v) } else { Err(format!("{s}: expected a confidence in [0, 1)")) }
}

fn evaluate<B: Backend>(backend: B, a: &MapArgs) -> Result<String> {
    let (mut cfg, warnings) = engine::cfg::load(&a.cfg)?;
    for w in warnings {
        eprintln!("{w}");
    }
    let data = DataFile::load(&a.data)?;
    let names = data.class_names()?;
    cfg.set_batch(1, 1)?;
    let classes = names.len();
    match super::preflight::head_classes(&cfg) {
        Some(c) if c == classes => {}
        heads => bail!(
            "{}: classes = {classes} but {}'s [yolo] layers have classes={}; the .data and the cfg must describe the same classes",
            a.data.display(),
            a.cfg,
            heads.map_or("(none or several)".into(), |c| c.to_string())
        ),
    }
    let net = Network::build(backend, cfg, &BuildOptions::default())?;
    super::load_inference_weights(&net, &a.weights)?;
    let set = if data.valid.is_some() { data.valid_set(LabelPolicy::Strict)? } else { data.train_set(LabelPolicy::Strict)? };
    let plan = BatchPlan::new(Arc::new(set), LoaderConfig::validation(1, net.cfg.net.width, net.cfg.net.height))?;
    let mut acc = MapAccumulator::new(classes);
    let mut cache = None;
    for i in 0..plan.num_batches() {
        net.evaluate_batch(&plan.make_batch(i, &mut cache)?, &mut acc)?;
    }
    let report = acc.summary(a.points, a.iou_thresh, a.thresh);
    Ok(format!("{}\nmAP@[.5:.95] (COCO-style) = {:.6}\n", format_darknet(&report, &names), acc.map_coco(a.points)))
}

pub fn run(a: &MapArgs) -> Result<ExitCode> {
    let text = match &a.backend {
        BackendSpec::Cpu => evaluate(super::cpu_backend(None)?, a)?,
        BackendSpec::Gpu(sel) => evaluate(GpuBackend::new(&sel.adapter_selector())?, a)?,
    };
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}
