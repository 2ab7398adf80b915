//! `runner diverge EXPERIMENT.toml`: the experiment's two backends from one weight set, fed the
//! same batches in lockstep; after every iteration each layer's forward output, gradients and
//! updated parameters are compared (`engine::diverge`), and the first iteration where a tensor
//! parts by more than the tolerance stops the run, naming the first layer, phase and tensor in
//! execution order, with the whole per-layer table.
//!
//! The folder `<out_dir>/<name>-diverge-NNN` (never an existing one) gets
//! `tables/divergence.{parquet,csv}`, `charts/divergence.{png,svg}` and `report.html`. The CSV is
//! rewritten after every iteration, and everything is written on an error or SIGINT/SIGTERM too.
//!
//! Exit code: 0 no divergence, 1 a tensor diverged, 2 an error, 130/143 interrupted.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Args;
use engine::data::loader::{Loader, LoaderConfig};
use engine::diverge::{Comparison, DEFAULT_TOLERANCE, TensorDiff, lockstep};
use reports::OutputFormats;
use reports::divergence::{DivergenceRecord, DivergenceSummary, KNOWN_PHASE, render_page, write_divergence};

use super::preflight::{self, Data};
use super::run::lane::{self, Slot};
use super::run::signals::Signals;
use crate::experiment::{self, overrides};

#[derive(Args)]
pub struct DivergeArgs {
    /// The experiment TOML file; its two backends are compared, the first is the reference
    pub experiment: PathBuf,
    /// Iterations to compare at most (default: the experiment's whole run)
    #[arg(long)]
    pub iterations: Option<u64>,
    /// Relative norm difference ‖a − b‖ / ‖a‖ past which a tensor diverges (the whole-network
    /// parity test's tolerance)
    #[arg(long, default_value_t = DEFAULT_TOLERANCE)]
    pub tolerance: f64,
    /// Write the folder under this directory instead of the experiment's [report] out_dir
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Why the lockstep stopped.
enum End {
    Completed,
    Diverged,
    Interrupted(super::run::signals::Stop),
    Failed(anyhow::Error),
}

pub fn run(a: &DivergeArgs) -> Result<ExitCode> {
    if !(a.tolerance.is_finite() && a.tolerance > 0.0) {
        bail!("--tolerance {}: must be a positive number", a.tolerance);
    }
    if a.iterations == Some(0) {
        bail!("--iterations 0: must be at least 1");
    }
    let exp = experiment::load(&a.experiment)?;
    if exp.backends.list.len() != 2 {
        bail!(
            "{}: [backends] list: diverge compares exactly two backends, the experiment lists {}",
            exp.file.display(),
            exp.backends.list.len()
        );
    }
    let formats = OutputFormats::from_names(&exp.report.formats).map_err(anyhow::Error::msg)?;
    let plan = preflight::check(&exp)?;
    let signals = Signals::install()?;
    let out_dir = a.out.clone().unwrap_or_else(|| exp.report.out_dir.clone());
    let dir = super::new_run_dir(&out_dir, &format!("{}-diverge", exp.experiment.name))?;
    println!("divergence folder: {}", dir.display());
    let cfg = &plan.cfg;
    let train_set = match plan.data {
        Data::Synthetic(spec) => spec.write(&dir.join("data"))?.train_set(engine::data::LabelPolicy::Strict)?,
        Data::Darknet { train, .. } => train,
    };
    let optimizer = overrides::optimizer(&exp, cfg);
    // Every tensor in memory of its own: with the memory plan's sharing, outputs and gradients
    // are overwritten within the step and could not be read after it (training is bit-identical
    // either way, engine/tests/memory_plan.rs).
    let build = engine::network::BuildOptions { memory_reuse: false, checkpointing: Default::default(), ..plan.build.clone() };
    let mut slots: Vec<Slot> = Vec::new();
    for spec in &exp.backends.list {
        slots.push(lane::build(spec, cfg, &build, optimizer, exp.backends.cpu_threads)?);
    }
    // One initial weight set, as `runner run` makes it: the first backend's, copied.
    if let Some(w) = &exp.model.weights {
        slots[0].lane.load_weights(w)?;
    }
    let params = slots[0].lane.conv_params();
    slots[1].lane.set_conv_params(&params);
    let mut lc = LoaderConfig::training(cfg.net.batch, cfg.net.width, cfg.net.height, exp.experiment.seed, overrides::augment(&exp, cfg), overrides::stop(&exp, cfg));
    lc.shuffle = exp.data.shuffle;
    let mut loader = Loader::new(Arc::new(train_set), lc)?;
    let iterations = a.iterations.unwrap_or(u64::MAX).min(loader.remaining());
    let title = format!("{} (reference, {}) vs {} ({})", slots[0].name, slots[0].device.name, slots[1].name, slots[1].device.name);
    println!("{title}: up to {iterations} iteration(s), tolerance {:e}", a.tolerance);

    let mut rows: Vec<DivergenceRecord> = Vec::new();
    let mut last: Option<(u64, Comparison)> = None;
    let mut largest: Option<(u64, TensorDiff)> = None;
    let mut end = End::Completed;
    for it in 1..=iterations {
        if let Some(sig) = signals.received() {
            end = End::Interrupted(sig);
            break;
        }
        let step = match next_step(&mut loader, &mut slots, a.tolerance) {
            Ok(s) => s,
            Err(e) => {
                end = End::Failed(e.context(format!("iteration {it}")));
                break;
            }
        };
        let c = step.comparison;
        rows.extend(records(it, &c));
        print_iteration(it, &slots, &step.steps, &c);
        if let Err(e) = write_divergence(&dir.join("tables"), &rows, false, true) {
            eprintln!("warning: {e}");
        }
        let failed: Vec<String> = step.steps.iter().zip(&slots).filter_map(|(s, slot)| s.as_ref().err().map(|e| format!("{}: {e}", slot.name))).collect();
        let diverged = c.first_divergence().is_some();
        if let Some(d) = c.diffs.iter().max_by(|x, y| x.rel_diff.total_cmp(&y.rel_diff)) {
            if largest.as_ref().is_none_or(|(_, l)| d.rel_diff > l.rel_diff) {
                largest = Some((it, d.clone()));
            }
        }
        last = Some((it, c));
        if !failed.is_empty() {
            end = End::Failed(anyhow::anyhow!("iteration {it}: {}", failed.join("; ")));
            break;
        }
        if diverged {
            end = End::Diverged;
            break;
        }
    }
    let first = last.as_ref().and_then(|(it, c)| c.first_divergence().map(|d| describe(*it, d)));
    if let Some((it, c)) = &last {
        print_table(*it, c);
    }
    match &first {
        Some(f) => println!("first divergence: {f}"),
        None => println!("no tensor past the tolerance in {} iteration(s)", last.as_ref().map_or(0, |l| l.0)),
    }
    // A passing run still says where the backends were furthest apart.
    let largest = if first.is_none() { largest.map(|(it, d)| describe(it, &d)) } else { None };
    if let Some(l) = &largest {
        println!("largest difference: {l}");
    }
    let summary = DivergenceSummary {
        title,
        tolerance: a.tolerance,
        iterations_compared: last.as_ref().map_or(0, |l| l.0),
        first,
        largest,
        missing: Vec::new(),
    };
    let written = write_outputs(&dir, &rows, &summary, formats);
    println!("report: {}", dir.join("report.html").display());
    match end {
        End::Failed(e) => Err(e.context(format!("partial results in {}", dir.display()))),
        _ if written.is_err() => written.map(|_| ExitCode::from(2)),
        End::Interrupted(sig) => {
            eprintln!("interrupted ({}); partial results in {}", sig.name(), dir.display());
            Ok(ExitCode::from(sig.exit_code()))
        }
        End::Diverged => Ok(ExitCode::from(1)),
        End::Completed => Ok(ExitCode::SUCCESS),
    }
}

fn next_step(loader: &mut Loader, slots: &mut [Slot], tolerance: f64) -> Result<engine::diverge::Lockstep> {
    let batch = loader.next_batch().context("the data loader ended early")??;
    let (a, b) = slots.split_at_mut(1);
    Ok(lockstep(a[0].lane.probe(), b[0].lane.probe(), &batch.images, &batch.truths, tolerance)?)
}

/// "iteration 3, layer 12 (conv) backward: weights grad — rel 2.1e-2 …".
fn describe(iteration: u64, d: &TensorDiff) -> String {
    format!(
        "iteration {iteration}, layer {} ({}) {}: {} — relative difference {:.3e}, max |a − b| {:.3e}, {} of {} elements outside",
        d.layer,
        d.layer_type,
        d.phase.name(),
        d.tensor,
        d.rel_diff,
        d.max_abs_diff,
        d.n_outside,
        d.n
    )
}

fn records(iteration: u64, c: &Comparison) -> Vec<DivergenceRecord> {
    let tensors = c.diffs.iter().map(|d| DivergenceRecord {
        iteration,
        layer: d.layer as u64,
        layer_type: d.layer_type.into(),
        phase: d.phase.name().into(),
        tensor: d.tensor.into(),
        rel_diff: d.rel_diff,
        max_abs_diff: d.max_abs_diff,
        n_outside: d.n_outside as u64,
        n: d.n as u64,
    });
    let known = c.known.iter().map(|k| DivergenceRecord {
        iteration,
        layer: k.layer as u64,
        layer_type: k.layer_type.into(),
        phase: KNOWN_PHASE.into(),
        tensor: k.what.into(),
        rel_diff: k.count as f64 / k.n.max(1) as f64,
        max_abs_diff: 0.0,
        n_outside: k.count as u64,
        n: k.n as u64,
    });
    tensors.chain(known).collect()
}

fn print_iteration(it: u64, slots: &[Slot], steps: &[Result<engine::train::StepRecord, engine::train::TrainError>; 2], c: &Comparison) {
    let losses: Vec<String> = steps.iter().zip(slots).map(|(s, slot)| match s {
        Ok(r) => format!("{} {:.6}", slot.name, r.loss),
        Err(_) => format!("{} failed", slot.name),
    }).collect();
    let worst = |p: engine::network::TensorPhase| c.diffs.iter().filter(|d| d.phase == p).map(|d| d.rel_diff).fold(0.0, f64::max);
    let flips = |w: &str| c.known.iter().filter(|k| k.what == w).map(|k| k.count).sum::<usize>();
    use engine::network::TensorPhase::*;
    println!(
        "iteration {it}: loss {}; worst relative difference forward {:.2e} backward {:.2e} update {:.2e}; maxpool argmax flips {}, yolo ignore flips {}",
        losses.join(", "),
        worst(Forward),
        worst(Backward),
        worst(Update),
        flips("argmax flips"),
        flips("ignore flips")
    );
}

/// The whole per-layer table of one iteration, in execution order, and the known sources.
fn print_table(it: u64, c: &Comparison) {
    println!("\nper-layer table, iteration {it} (execution order; * past the tolerance {:e}):", c.tolerance);
    println!("{:>5} {:<10} {:<8} {:<16} {:>10} {:>10} {:>18}", "layer", "type", "phase", "tensor", "rel_diff", "max_abs", "outside / n");
    for d in &c.diffs {
        let mark = if d.exceeds(c.tolerance) { "*" } else { "" };
        println!(
            "{:>5} {:<10} {:<8} {:<16} {:>10.3e} {:>10.3e} {:>18} {mark}",
            d.layer, d.layer_type, d.phase.name(), d.tensor, d.rel_diff, d.max_abs_diff, format!("{} / {}", d.n_outside, d.n)
        );
    }
    println!("known sources (counted on the host from each backend's own tensors):");
    for k in &c.known {
        println!("{:>5} {:<10} {}: {} of {}", k.layer, k.layer_type, k.what, k.count, k.n);
    }
}

fn write_outputs(dir: &Path, rows: &[DivergenceRecord], summary: &DivergenceSummary, formats: OutputFormats) -> Result<()> {
    write_divergence(&dir.join("tables"), rows, formats.parquet, true)?;
    let iteration = rows.iter().map(|r| r.iteration).max().unwrap_or(0);
    let chart = reports::charts::render_divergence(rows, iteration, summary.tolerance, Some(&dir.join("charts")), formats.png, formats.svg)?;
    let page = dir.join("report.html");
    std::fs::write(&page, render_page(summary, rows, Some(&chart.svg))).with_context(|| format!("writing {}", page.display()))?;
    Ok(())
}
