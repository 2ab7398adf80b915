//! `runner check EXPERIMENT.toml`: validate an experiment (schema, files, cfg, overrides)
//! without training.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

#[derive(Args)]
pub struct CheckArgs {
    /// The experiment TOML file
    pub experiment: PathBuf,
}

pub fn run(a: &CheckArgs) -> Result<ExitCode> {
    let exp = crate::experiment::load(&a.experiment)?;
    let cfg = super::run::model_cfg(&exp)?;
    println!(
        "{}: ok — {} ({} layers, {}×{}, batch {}/{}), backends {}",
        a.experiment.display(),
        exp.experiment.name,
        cfg.layers.len(),
        cfg.net.width,
        cfg.net.height,
        cfg.net.batch,
        cfg.net.subdivisions,
        exp.backends.list.iter().map(|b| b.to_string()).collect::<Vec<_>>().join(", ")
    );
    Ok(ExitCode::SUCCESS)
}
