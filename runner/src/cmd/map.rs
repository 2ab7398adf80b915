//! `runner map DATA CFG WEIGHTS`: mAP of a model on a Darknet `.data` valid list, printed the way
//! `darknet detector map` prints it, so the two tools' outputs compare line by line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Result;
use clap::Args;
use engine::cpu::CpuBackend;
use engine::data::darknet::{DataFile, LabelPolicy};
use engine::data::loader::{BatchPlan, LoaderConfig};
use engine::eval::map::{MapAccumulator, format_darknet};
use engine::gpu::GpuBackend;
use engine::network::{BuildOptions, Network};
use engine::Backend;

use super::BackendChoice;

#[derive(Args)]
pub struct MapArgs {
    /// Darknet .data file (its `valid` list is evaluated; `train` when it has none)
    pub data: PathBuf,
    /// Darknet .cfg (or a built-in name)
    pub cfg: String,
    /// Darknet .weights
    pub weights: PathBuf,
    /// Recall points for AP: 0 = area under the curve (Darknet's default), 11 (VOC2007), 101 (COCO)
    #[arg(long, default_value_t = 0)]
    pub points: usize,
    /// IoU threshold for a true positive (Darknet's -iou_thresh)
    #[arg(long, default_value_t = 0.5)]
    pub iou_thresh: f32,
    /// Confidence threshold for precision/recall/F1/TP/FP (Darknet's -thresh)
    #[arg(long, default_value_t = 0.25)]
    pub thresh: f32,
    /// Backend: cpu, gpu, gpu:<index> or gpu:<adapter name>
    #[arg(long, default_value = "cpu")]
    pub backend: String,
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
    let net = Network::build(backend, cfg, &BuildOptions::default())?;
    net.load_weights(&a.weights)?;
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
    let text = match super::parse_backend(&a.backend)? {
        BackendChoice::Cpu => evaluate(CpuBackend::new(), a)?,
        BackendChoice::Gpu(sel) => evaluate(GpuBackend::new(&sel)?, a)?,
    };
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}
