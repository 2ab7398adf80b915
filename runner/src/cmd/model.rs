//! `runner model`: the layer table of a cfg, like Darknet prints when it loads a network.

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

#[derive(Args)]
pub struct ModelArgs {
    /// A .cfg path or a built-in name (yolov4-tiny, yolov4-tiny-3l, yolov3-tiny, yolov7-tiny)
    pub cfg: String,
    /// Override the number of classes (rewrites the filters before each [yolo])
    #[arg(long)]
    pub classes: Option<usize>,
    /// Override the network width
    #[arg(long)]
    pub width: Option<usize>,
    /// Override the network height
    #[arg(long)]
    pub height: Option<usize>,
}

pub fn run(a: &ModelArgs) -> Result<ExitCode> {
    let (mut cfg, warnings) = engine::cfg::load(&a.cfg)?;
    for w in &warnings {
        eprintln!("{w}");
    }
    if let Some(c) = a.classes {
        cfg.set_classes(c)?;
    }
    if a.width.is_some() || a.height.is_some() {
        let w = a.width.unwrap_or(cfg.net.width);
        let h = a.height.unwrap_or(cfg.net.height);
        cfg.set_size(w, h)?;
    }
    let s = cfg.summary()?;
    println!("{}", s.trim_end());
    Ok(ExitCode::SUCCESS)
}
