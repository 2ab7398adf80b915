//! `runner report RUN_DIR` rebuilds charts and the HTML report from a run's tables;
//! `runner compare RUN_A RUN_B` flags regressions between two runs.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use reports::OutputFormats;

#[derive(Args)]
pub struct ReportArgs {
    /// A run folder written by `runner run`
    pub run_dir: PathBuf,
}

#[derive(Args)]
pub struct CompareArgs {
    /// The baseline run folder
    pub run_a: PathBuf,
    /// The run to compare against the baseline
    pub run_b: PathBuf,
    /// Relative change treated as noise (0.05 = 5 %)
    #[arg(long, default_value_t = 0.05)]
    pub noise: f64,
}

pub fn report(a: &ReportArgs) -> Result<ExitCode> {
    let run = reports::read_run(&a.run_dir)?;
    let files = reports::render_run(&a.run_dir, &run, OutputFormats::all())?;
    println!("rebuilt {} files in {}", files.files.len(), a.run_dir.display());
    Ok(ExitCode::SUCCESS)
}

pub fn compare(a: &CompareArgs) -> Result<ExitCode> {
    let c = reports::compare_dirs(&a.run_a, &a.run_b, a.noise)?;
    print!("{}", c.markdown());
    Ok(if c.has_regression() { ExitCode::from(1) } else { ExitCode::SUCCESS })
}
