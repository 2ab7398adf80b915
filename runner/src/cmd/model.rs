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
    /// Override width and height together
    #[arg(long, conflicts_with_all = ["width", "height"])]
    pub size: Option<usize>,
    /// Print the memory plan instead of the layer table: bytes each layer keeps for the backward,
    /// the totals, what checkpointing would save; nothing is allocated
    #[arg(long)]
    pub memory: bool,
    /// Images per step for --memory (default: the cfg's batch)
    #[arg(long)]
    pub batch: Option<usize>,
    /// Passes per step for --memory (default: the cfg's subdivisions)
    #[arg(long)]
    pub subdivisions: Option<usize>,
    /// Gradient checkpointing for --memory: none, auto, or boundary layers such as 3,7,12
    #[arg(long, default_value = "none")]
    pub checkpointing: engine::network::Checkpointing,
    /// Memory budget for --memory (e.g. 4GiB): the plan must fit it
    #[arg(long, value_parser = engine::network::plan::parse_bytes)]
    pub memory_budget: Option<u64>,
    /// Plan Adam's moments too (--memory)
    #[arg(long)]
    pub adam: bool,
}

pub fn run(a: &ModelArgs) -> Result<ExitCode> {
    let (mut cfg, warnings) = engine::cfg::load(&a.cfg)?;
    for w in &warnings {
        eprintln!("{w}");
    }
    if let Some(c) = a.classes {
        cfg.set_classes(c)?;
    }
    if a.width.is_some() || a.height.is_some() || a.size.is_some() {
        let w = a.size.or(a.width).unwrap_or(cfg.net.width);
        let h = a.size.or(a.height).unwrap_or(cfg.net.height);
        cfg.set_size(w, h)?;
    }
    if a.memory {
        cfg.set_batch(a.batch.unwrap_or(cfg.net.batch), a.subdivisions.unwrap_or(cfg.net.subdivisions))?;
        print!("{}", memory_plan(&cfg, a)?);
        return Ok(ExitCode::SUCCESS);
    }
    let s = cfg.summary()?;
    println!("{}", s.trim_end());
    Ok(ExitCode::SUCCESS)
}

/// The `--memory` report: per layer what it keeps from the forward for the backward, then the
/// totals; the last line is `planned device bytes: N`.
fn memory_plan(cfg: &engine::cfg::ModelCfg, a: &ModelArgs) -> Result<String> {
    use engine::network::{plan::bytes_text, BuildOptions, Checkpointing, MemoryPlan};
    use std::fmt::Write;
    let opts = BuildOptions { adam: a.adam, checkpointing: a.checkpointing.clone(), memory_budget: a.memory_budget, ..Default::default() };
    let (plan, acts) = MemoryPlan::detailed(cfg, &opts)?;
    let shapes = cfg.shapes()?;
    let kept = acts.kept_floats();
    let mib = |floats: usize| 4.0 * floats as f64 / f64::from(1u32 << 20);
    let mut out = String::new();
    let net = &cfg.net;
    writeln!(out, "memory plan: {}x{}, batch {} in {} passes of {} images", net.width, net.height, net.batch, net.subdivisions, net.mini_batch())?;
    writeln!(out, "{:>5}  {:<16} {:>16}  {:>12}", "layer", "type", "output", "kept MiB")?;
    for (i, (l, sh)) in cfg.layers.iter().zip(&shapes).enumerate() {
        let o = sh.output;
        // The boundaries of the plan in use ("auto" picks its own).
        let boundary = acts.options.boundaries.contains(&i);
        writeln!(
            out,
            "{i:>5}  {:<16} {:>16}  {:>12.2}{}",
            l.kind.name(),
            format!("{}x{}x{}", o.w, o.h, o.c),
            mib(kept.get(i).copied().unwrap_or(0)),
            if boundary { "  (checkpoint)" } else { "" }
        )?;
    }
    let b = |floats: usize| bytes_text(4 * floats as u64);
    writeln!(out, "parameters, gradients, optimiser state: {}", b(plan.state))?;
    writeln!(out, "activations (shared by lifetime): {} (every tensor apart: {}; most alive at once: {})", b(plan.activations), b(plan.unshared), b(plan.peak_live))?;
    writeln!(out, "input, truths, statistics: {}", b(plan.fixed))?;
    if plan.boundaries > 0 {
        let overhead = plan.recompute_fraction();
        writeln!(out, "checkpointing: {} segments, recomputes {:.0}% of the forward FLOPs", plan.boundaries + 1, 100.0 * overhead)?;
    } else {
        let auto = MemoryPlan::of(cfg, &BuildOptions { checkpointing: Checkpointing::Auto, memory_budget: None, ..opts.clone() })?;
        if auto.build_bytes() < plan.build_bytes() {
            writeln!(
                out,
                "with checkpointing = \"auto\": {} ({} segments, recomputes {:.0}% of the forward FLOPs)",
                bytes_text(auto.build_bytes()),
                auto.boundaries + 1,
                100.0 * auto.recompute_fraction()
            )?;
        }
    }
    writeln!(
        out,
        "CPU convolution workspace (host only, not planned): {} per worker thread, {} shared",
        b(plan.workspace),
        b(plan.workspace_shared)
    )?;
    writeln!(out, "planned device bytes: {}", plan.build_bytes())?;
    Ok(out)
}
