//! `runner check EXPERIMENT.toml`: validate an experiment without training. It runs every check
//! `runner run` runs before training (see `preflight`), and decodes every image of a Darknet
//! dataset in full (training would stop on a damaged one).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use super::preflight::{self, Data};

#[derive(Args)]
pub struct CheckArgs {
    /// The experiment TOML file
    pub experiment: PathBuf,
}

pub fn run(a: &CheckArgs) -> Result<ExitCode> {
    let exp = crate::experiment::load(&a.experiment)?;
    let plan = preflight::check(&exp)?;
    let images = match &plan.data {
        Data::Darknet { train, valid } => {
            train.check_images(true)?;
            valid.check_images(true)?;
            format!("{} + {} images decoded", train.len(), valid.len())
        }
        Data::Synthetic(s) => format!("{} + {} synthetic images", s.train_images, s.val_images),
    };
    let cfg = &plan.cfg;
    println!(
        "{}: ok — {} ({} layers, {}×{}, batch {}/{}), {images}, backends {}",
        a.experiment.display(),
        exp.experiment.name,
        cfg.layers.len(),
        cfg.net.width,
        cfg.net.height,
        cfg.net.batch,
        cfg.net.subdivisions,
        exp.backends.list.iter().map(|b| b.to_string()).collect::<Vec<_>>().join(", ")
    );
    for line in &plan.memory {
        println!("  memory: {line}");
    }
    Ok(ExitCode::SUCCESS)
}
