//! `runner`: trains Darknet-style detectors on the CPU and on GPUs (wgpu) side by side, records
//! everything and gates on parity thresholds. See README.md for every subcommand.

mod cmd;
mod experiment;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "runner", version, about = "Train Darknet-style detectors on CPU and GPU (wgpu) side by side and gate on parity")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print a network's layer table and total BFLOPs (a cfg path or a built-in name)
    Model(cmd::model::ModelArgs),
    /// List the GPU adapters wgpu can see
    Devices,
    /// Validate an experiment file without running it
    Check(cmd::check::CheckArgs),
    /// Train every backend of an experiment side by side, write the report folder, gate
    Run(cmd::run::RunArgs),
    /// Rebuild charts and the HTML report of a run folder from its tables
    Report(cmd::report::ReportArgs),
    /// Compare two run folders and flag regressions (exit 1 on a regression)
    Compare(cmd::report::CompareArgs),
    /// mAP of a model on a Darknet .data valid list, printed like `darknet detector map`
    Map(cmd::map::MapArgs),
    /// Run a model on images: annotated PNGs and detections.json, like `darknet detector test`
    Detect(cmd::detect::DetectArgs),
    /// Training throughput on random data, with GPU time per layer and kernel
    Bench(cmd::bench::BenchArgs),
    /// Train two backends in lockstep and name the first layer where they part
    Diverge(cmd::diverge::DivergeArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Model(a) => cmd::model::run(&a),
        Command::Devices => cmd::devices::run(),
        Command::Check(a) => cmd::check::run(&a),
        Command::Run(a) => cmd::run::run(&a),
        Command::Report(a) => cmd::report::report(&a),
        Command::Compare(a) => cmd::report::compare(&a),
        Command::Map(a) => cmd::map::run(&a),
        Command::Detect(a) => cmd::detect::run(&a),
        Command::Bench(a) => cmd::bench::run(&a),
        Command::Diverge(a) => cmd::diverge::run(&a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
