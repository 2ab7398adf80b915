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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Model(a) => cmd::model::run(&a),
        Command::Devices => cmd::devices::run(),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
