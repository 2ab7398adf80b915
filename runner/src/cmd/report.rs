//! `runner report RUN_DIR` rebuilds charts and the HTML report from a run's tables;
//! `runner compare RUN_A RUN_B` flags regressions between two runs.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use reports::{OutputFormats, RunStatus};

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
    /// Relative change treated as noise, a fraction in [0, 1] (0.05 = 5 %; absolute for mAP)
    #[arg(long, default_value_t = 0.05, value_parser = noise_margin)]
    pub noise: f64,
}

fn noise_margin(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("`{s}` is not a number"))?;
    reports::compare::check_noise_margin(v)?;
    Ok(v)
}

/// Rebuilds charts, gate files and report.html from what is on disk, also for a run that was
/// killed (its appended tables) and with the earlier parts of a resumed run.
pub fn report(a: &ReportArgs) -> Result<ExitCode> {
    let (mut run, warnings) = reports::read_run_with_history(&a.run_dir)?;
    for w in warnings {
        eprintln!("warning: {w}");
    }
    if run.summary.status == RunStatus::Running {
        // Nothing evaluated this run's gates: it never reached its end. Say so where the verdict goes.
        let last = run.iterations.iter().map(|r| r.iteration).max().unwrap_or(0);
        run.gates.push(reports::GateResult::new(
            "run completed",
            0.0,
            1.0,
            false,
            format!("the run did not finish (killed, or still running); last recorded iteration {last}"),
        ));
        eprintln!("{}: the run did not finish (killed, or still running); rebuilding from its tables up to iteration {last}", a.run_dir.display());
    }
    let files = reports::render_run(&a.run_dir, &run, OutputFormats::all())?;
    println!("rebuilt {} files in {}", files.files.len(), a.run_dir.display());
    Ok(ExitCode::SUCCESS)
}

pub fn compare(a: &CompareArgs) -> Result<ExitCode> {
    let c = reports::compare_dirs(&a.run_a, &a.run_b, a.noise)?;
    print!("{}", c.markdown());
    Ok(if c.has_regression() { ExitCode::from(1) } else { ExitCode::SUCCESS })
}
