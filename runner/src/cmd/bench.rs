//! `runner bench [MODEL]`: training throughput of one backend on random data, with the device
//! time per layer × phase × kernel (GPU timestamp queries; the CPU's host time per op). Prints images/s, the top kernels,
//! peak device bytes and the process's peak RSS (where the OS reports it); writes `bench.json` and `tables/kernels.{parquet,csv}` into a new run
//! folder (`runs/bench-NNN` unless `--out` names one).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use engine::Backend;
use engine::bench::BenchResult;
use engine::gpu::GpuBackend;
use engine::profile::{KernelTable, Phase};
use reports::kernels::{KernelRecord, write_kernels};
use serde_json::json;

use crate::experiment::BackendSpec;

#[derive(Args)]
pub struct BenchArgs {
    /// A .cfg path or a built-in name (yolov4-tiny, yolov4-tiny-3l, yolov3-tiny, yolov7-tiny)
    #[arg(default_value = "yolov4-tiny")]
    pub model: String,
    /// Network width and height
    #[arg(long, default_value_t = 416)]
    pub size: usize,
    /// Images per step
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Passes per step (Darknet's subdivisions; batch must divide by it)
    #[arg(long, default_value_t = 1)]
    pub subdivisions: usize,
    /// Steps measured (after the warm-up)
    #[arg(long, default_value_t = 10)]
    pub iterations: usize,
    /// Steps run first and not measured (pipeline compilation, first-use allocation)
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// cpu, gpu, gpu:<index> or gpu:<adapter name>
    #[arg(long, default_value = "gpu")]
    pub backend: BackendSpec,
    /// Override the number of classes (default: the cfg's)
    #[arg(long)]
    pub classes: Option<usize>,
    /// Turn off per-kernel timing (GPU timestamp queries, the CPU's host time per op): measures
    /// what timing costs; no kernels table
    #[arg(long)]
    pub no_timestamps: bool,
    /// Gradient checkpointing: none, auto, or boundary layers such as 3,7,12
    #[arg(long, default_value = "none")]
    pub checkpointing: engine::network::Checkpointing,
    /// Memory budget (e.g. 4GiB): the network's plan must fit it (with --checkpointing auto,
    /// the plan with the least recomputation that fits)
    #[arg(long, value_parser = engine::network::plan::parse_bytes)]
    pub memory_budget: Option<u64>,
    /// Arithmetic: fp32, or mixed (f16 activations and gradients, fp32 accumulation, dynamic
    /// loss scaling)
    #[arg(long, default_value = "fp32")]
    pub precision: engine::network::Precision,
    /// Seed of the weights and the random data
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Folder to write into (default: a new runs/bench-NNN)
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// The kernels table rows of one backend (per-step means).
pub fn kernel_records(backend: &str, k: &KernelTable) -> Vec<KernelRecord> {
    let steps = k.steps.max(1) as f64;
    k.rows()
        .into_iter()
        .map(|r| KernelRecord {
            backend: backend.to_string(),
            layer: r.layer.map_or(-1, |l| l as i64),
            layer_type: r.layer_type.clone(),
            phase: r.phase.name().to_string(),
            kernel: r.kernel.clone(),
            dispatches: r.dispatches as f64 / steps,
            gpu_s: r.gpu_s / steps,
            gflops: r.gflops(),
            gbytes_per_s: r.gbytes_per_s(),
        })
        .collect()
}

pub fn run(a: &BenchArgs) -> Result<ExitCode> {
    anyhow::ensure!(a.iterations > 0, "--iterations must be at least 1");
    anyhow::ensure!(a.size > 0 && a.size % 32 == 0, "--size {}: must be a positive multiple of 32", a.size);
    anyhow::ensure!(a.batch > 0, "--batch must be at least 1");
    let (mut cfg, warnings) = engine::cfg::load(&a.model)?;
    for w in &warnings {
        eprintln!("{w}");
    }
    if let Some(c) = a.classes {
        cfg.set_classes(c)?;
    }
    cfg.set_size(a.size, a.size)?;
    cfg.set_batch(a.batch, a.subdivisions)?;
    let opts = engine::network::BuildOptions {
        seed: a.seed,
        checkpointing: a.checkpointing.clone(),
        memory_budget: a.memory_budget,
        precision: a.precision,
        loss_scaling: a.precision.needs_loss_scaling(),
        ..Default::default()
    };
    let plan = engine::network::MemoryPlan::of(&cfg, &opts)?;
    let timed;
    let adapter;
    let gemm_path;
    let r = match &a.backend {
        BackendSpec::Cpu => {
            let cpu = super::cpu_backend(None)?;
            adapter = format!("cpu ({} threads)", cpu.threads());
            gemm_path = cpu.gemm_path(a.precision.gemm_operands());
            cpu.set_timing(!a.no_timestamps);
            timed = cpu.timing();
            engine::bench::run(cpu, cfg, a.iterations, a.warmup, &opts)?
        }
        BackendSpec::Gpu(sel) => {
            let gpu = GpuBackend::new(&sel.adapter_selector())?;
            adapter = gpu.adapter_info().to_string();
            gemm_path = gpu.gemm_path(a.precision.gemm_operands());
            if !gpu.timestamps_supported() {
                eprintln!("note: {} has no timestamp queries: recording host time only (no kernels table)", gpu.adapter_info().name);
            }
            gpu.set_timing(!a.no_timestamps);
            timed = gpu.timing();
            gpu.warm_up();
            engine::bench::run(gpu, cfg, a.iterations, a.warmup, &opts)?
        }
    };
    let dir = match &a.out {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            d.clone()
        }
        None => super::new_run_dir(Path::new("runs"), "bench")?,
    };
    print_result(a, &r, timed);
    let recompute = plan.recompute_fraction();
    println!(
        "planned device bytes {} (activations {} shared by lifetime, {} without sharing){}",
        plan.build_bytes(),
        4 * plan.activations as u64,
        4 * plan.unshared as u64,
        if plan.boundaries > 0 { format!("; checkpointing: {} segments, recomputes {:.0}% of the forward FLOPs", plan.boundaries + 1, 100.0 * recompute) } else { String::new() }
    );
    println!("precision {}: GEMMs run on {gemm_path}", a.precision);
    let records = kernel_records(&a.backend.to_string(), &r.kernels);
    if timed {
        write_kernels(&dir.join("tables"), &records, true, true)?;
    }
    let per_step = |p: Phase| r.kernels.by_phase().iter().find(|(q, _)| *q == p).map_or(0.0, |(_, s)| s / r.kernels.steps.max(1) as f64);
    let summary = json!({
        "model": a.model,
        "size": a.size,
        "batch": a.batch,
        "subdivisions": a.subdivisions,
        "iterations": a.iterations,
        "warmup": a.warmup,
        "seed": a.seed,
        "backend": a.backend.to_string(),
        "device": r.backend,
        "adapter": adapter,
        "timestamps": timed,
        "images_per_s": r.images_per_s,
        "step_s": r.step_s,
        "first_step_s": r.first_step_s,
        "build_s": r.build_s,
        "host_s_per_step": json!({
            "upload": r.host.upload_s,
            "record_forward": r.host.forward_s,
            "record_backward": r.host.backward_s,
            "record_update": r.host.update_s,
            "wait": r.host.wait_s,
        }),
        "device_s_per_step": if timed { json!({
            "total": r.kernels.total_s() / r.kernels.steps.max(1) as f64,
            "forward": per_step(Phase::Forward),
            "loss": per_step(Phase::Loss),
            "backward": per_step(Phase::Backward),
            "update": per_step(Phase::Update),
            "recompute": per_step(Phase::Recompute),
            "other": per_step(Phase::Other),
        }) } else { serde_json::Value::Null },
        "planned_bytes": plan.build_bytes(),
        "planned_activation_bytes": 4 * plan.activations as u64,
        "unshared_activation_bytes": 4 * plan.unshared as u64,
        "checkpointing": a.checkpointing.to_string(),
        "precision": a.precision.to_string(),
        "gemm_path": gemm_path,
        "checkpoint_segments": plan.boundaries + 1,
        "recompute_fraction_of_forward_flops": recompute,
        "peak_rss_bytes": super::memory::peak_rss_bytes(),
        "device_bytes": r.bytes,
        "peak_device_bytes": r.peak_bytes,
        "last_loss": r.last_loss,
        "commit": super::BUILD_COMMIT,
        "versions": super::versions(),
    });
    let path = dir.join("bench.json");
    std::fs::write(&path, serde_json::to_string_pretty(&summary)? + "\n").with_context(|| format!("writing {}", path.display()))?;
    println!("wrote {}", dir.display());
    Ok(ExitCode::SUCCESS)
}

fn print_result(a: &BenchArgs, r: &BenchResult, timed: bool) {
    println!(
        "{} {}x{} batch {} on {}: {:.1} images/s ({} steps, {:.1} ms per step; first step {:.2} s)",
        a.model,
        a.size,
        a.size,
        a.batch,
        r.backend,
        r.images_per_s,
        r.steps,
        r.step_s * 1e3,
        r.first_step_s
    );
    if timed {
        let steps = r.kernels.steps.max(1) as f64;
        let phases: Vec<String> =
            r.kernels.by_phase().iter().filter(|(_, s)| *s > 0.0).map(|(p, s)| format!("{} {:.2}", p.name(), s / steps * 1e3)).collect();
        // The CPU "device" is the host: its table is host time per op, measured around each op.
        let what = if matches!(a.backend, BackendSpec::Cpu) { "host time in ops" } else { "device time" };
        println!("{what} {:.2} ms per step ({})", r.kernels.total_s() / steps * 1e3, phases.join(", "));
        print!("{}", r.kernels.top_kernels_text(15));
    }
    let h = &r.host;
    let parts = h.upload_s + h.forward_s + h.backward_s + h.update_s + h.staged_s + h.wait_s;
    println!(
        "host ms per step: upload {:.2}, forward {:.2} / backward {:.2} / update {:.2} (a GPU records them), next step's upload {:.2}, wait {:.2}, after the wait {:.2}",
        h.upload_s * 1e3,
        h.forward_s * 1e3,
        h.backward_s * 1e3,
        h.update_s * 1e3,
        h.staged_s * 1e3,
        h.wait_s * 1e3,
        (r.step_s - parts).max(0.0) * 1e3
    );
    println!("device bytes {} (peak {})", r.bytes, r.peak_bytes);
    // The process's high-water mark, to set beside the PyTorch peer's (ci/bench/cpu.sh).
    if let Some(peak) = super::memory::peak_rss_bytes() {
        println!("peak RSS of the process {peak} bytes");
    }
}

