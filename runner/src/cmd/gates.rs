//! The experiment's `[thresholds]` evaluated on a run's records: one PASS/FAIL line each.

use reports::{GateResult, RunData};

use crate::experiment::Experiment;

fn gate(name: &str, measured: f64, limit: f64, pass: bool, detail: String) -> GateResult {
    GateResult::new(name, measured, limit, pass, detail)
}

/// Below this mAP@0.5 on every backend a detector finds next to nothing, so equal mAPs prove
/// nothing about parity ("mAP 0 vs 0").
pub const MAP_INFORMATIVE_FLOOR: f64 = 0.05;

pub fn evaluate(exp: &Experiment, run: &RunData) -> Vec<GateResult> {
    let t = &exp.thresholds;
    let mut out = Vec::new();
    // A run that did not finish fails here whatever its numbers say.
    let at = run.summary.stopped_at_iteration.map(|i| format!(" at iteration {i}")).unwrap_or_default();
    if let Some(e) = run.summary.extra.get("error") {
        out.push(gate("run completed", 0.0, 1.0, false, format!("stopped{at}: {e}")));
    } else if run.summary.status == reports::RunStatus::Interrupted {
        let by = run.summary.extra.get("interrupted").cloned().unwrap_or_default();
        out.push(gate("run completed", 0.0, 1.0, false, format!("interrupted{at} ({by})")));
    }
    let backends = reports::records::backend_names(&run.iterations);
    if let Some(limit) = t.loss_rel_delta_iter {
        let first = t.loss_rel_delta_iter_first.unwrap_or(u64::MAX);
        let worst = run.deltas.iter().filter(|d| d.iteration <= first).max_by(|a, b| a.rel_delta.total_cmp(&b.rel_delta));
        let (m, detail) = match worst {
            Some(d) => (d.rel_delta, format!("worst at iteration {} ({} {:.6} vs {} {:.6})", d.iteration, d.backend, d.loss, d.reference, d.reference_loss)),
            None => (f64::NAN, "no iteration ran on two backends".into()),
        };
        let name = match t.loss_rel_delta_iter_first {
            Some(n) => format!("loss relative delta per iteration (iterations 1–{n})"),
            None => "loss relative delta per iteration".into(),
        };
        out.push(gate(&name, m, limit, m <= limit, detail));
    }
    if let Some(limit) = t.loss_rel_delta_window {
        let worst = run.deltas.iter().max_by(|a, b| a.rel_delta_window_mean.total_cmp(&b.rel_delta_window_mean));
        let (m, detail) = match worst {
            Some(d) => (d.rel_delta_window_mean, format!("worst window ends at iteration {} ({} vs {}, window {})", d.iteration, d.backend, d.reference, t.window)),
            None => (f64::NAN, "no iteration ran on two backends".into()),
        };
        out.push(gate("loss relative delta, running mean", m, limit, m <= limit, detail));
    }
    if let (Some(limit), Some(reference)) = (t.map_abs_delta, backends.first()) {
        let last = |b: &str| run.epochs.iter().filter(|e| e.backend == b).next_back().map(|e| e.map50);
        let mut worst = (0.0f64, String::from("one backend only"));
        let mut best_map = f64::NEG_INFINITY;
        let mut compared = false;
        for b in backends.iter().skip(1) {
            if let (Some(r), Some(v)) = (last(reference), last(b)) {
                compared = true;
                best_map = best_map.max(r).max(v);
                let d = (v - r).abs();
                if d >= worst.0 || d.is_nan() {
                    worst = (d, format!("final mAP@0.5: {b} {v:.4} vs {reference} {r:.4}"));
                }
            }
        }
        let g = gate("mAP@0.5 absolute delta", worst.0, limit, worst.0 <= limit, worst.1);
        out.push(if !compared {
            g.not_informative("no two backends with an evaluated epoch")
        } else if best_map < MAP_INFORMATIVE_FLOOR {
            g.not_informative(&format!("every backend's mAP@0.5 is below {MAP_INFORMATIVE_FLOOR}: a detector that finds nothing cannot show a difference"))
        } else {
            g
        });
    }
    if let (Some(limit), Some(reference)) = (t.top1_abs_delta, backends.first()) {
        let last = |b: &str| run.epochs.iter().filter(|e| e.backend == b).filter_map(|e| e.top1).next_back();
        let mut worst = (0.0f64, String::from("one backend only"));
        let mut compared = false;
        for b in backends.iter().skip(1) {
            if let (Some(r), Some(v)) = (last(reference), last(b)) {
                compared = true;
                let d = (v - r).abs();
                if d >= worst.0 || d.is_nan() {
                    worst = (d, format!("final top-1 accuracy: {b} {v:.4} vs {reference} {r:.4}"));
                }
            }
        }
        let g = gate("top-1 accuracy absolute delta", worst.0, limit, worst.0 <= limit, worst.1);
        out.push(if compared { g } else { g.not_informative("no two backends with an evaluated classifier epoch") });
    }
    if let Some(limit) = t.min_top1 {
        let mut worst = (f64::INFINITY, String::from("no epoch was evaluated"));
        for b in &backends {
            let (v, detail) = match run.epochs.iter().filter(|e| &e.backend == b).filter_map(|e| e.top1.map(|t| (e.epoch, t))).next_back() {
                Some((epoch, t)) => (t, format!("{b}: top-1 {t:.4} after epoch {epoch}")),
                None => (f64::NAN, format!("{b}: no classifier epoch was evaluated")),
            };
            if v.is_nan() || v < worst.0 {
                worst = (v, detail);
            }
        }
        let m = if worst.0.is_infinite() { f64::NAN } else { worst.0 };
        out.push(gate("final top-1 accuracy on the validation split", m, limit, m >= limit, worst.1));
    }
    if let Some(limit) = t.rss_growth_bytes {
        // Growth of the process RSS within each epoch, after the warm-up iterations.
        let mut worst = (0u64, String::from("not enough iterations after warm-up"));
        let mut measured = false;
        let first = backends.first().cloned().unwrap_or_default();
        for EpochRss { epoch: e, start, max, iterations } in epoch_rss(run, &first, t.warmup_iterations) {
            measured |= iterations > 1;
            let g = max.saturating_sub(start);
            if g >= worst.0 {
                worst = (g, format!("epoch {e}: RSS {start} → max {max} bytes"));
            }
        }
        let g = gate("RSS growth within an epoch after warm-up", worst.0 as f64, limit as f64, worst.0 <= limit, worst.1);
        out.push(if measured { g } else { g.not_informative("fewer than two iterations of one epoch after the warm-up") });
    }
    if let Some(limit) = t.memory_growth_rel {
        out.push(memory_growth(run, &backends, t.warmup_iterations, limit));
    }
    if let Some(limit) = t.max_rss_bytes {
        let m = run.summary.peak_rss_bytes;
        let at = run.memory.iter().max_by_key(|s| s.rss_bytes).filter(|s| s.rss_bytes == m);
        let detail = match at {
            Some(s) if s.backend.is_empty() => format!("peak of the process at {:.1} s, outside every backend's window", s.t_s),
            Some(s) => format!("peak of the process at {:.1} s, while {} was built, training or evaluated", s.t_s, s.backend),
            None => "peak of the process after an iteration".into(),
        };
        out.push(gate("peak RSS of the run", m as f64, limit as f64, m <= limit, detail));
    }
    if let Some(limit) = t.max_swap_bytes {
        let m = run.summary.peak_swap_bytes;
        let how = match run.summary.swap_source.as_str() {
            "process" => "the process's own swap",
            _ => "growth of the system's used swap since the run started",
        };
        out.push(gate("peak swap used", m as f64, limit as f64, m <= limit, format!("{how}, sampled every 200 ms")));
    }
    if let Some(limit) = t.min_gpu_speedup {
        let cpu = run.summary.backend("cpu").map(|b| b.images_per_s);
        let gpu = run.summary.backends.iter().find(|b| b.backend.starts_with("gpu")).map(|b| (b.backend.clone(), b.images_per_s));
        let (m, detail) = match (cpu, gpu) {
            (Some(c), Some((g, v))) if c > 0.0 => (v / c, format!("{g} {v:.2} img/s vs cpu {c:.2} img/s")),
            _ => (f64::NAN, "needs a cpu and a gpu backend".into()),
        };
        out.push(gate("GPU/CPU speed-up", m, limit, m >= limit, detail));
    }
    if let Some(limit) = t.min_map50 {
        // The worst backend's final-epoch mAP@0.5; a backend without an epoch record fails.
        let mut worst = (f64::INFINITY, String::from("no epoch was evaluated"));
        for b in &backends {
            let (v, detail) = match run.epochs.iter().filter(|e| &e.backend == b).next_back() {
                Some(e) => (e.map50, format!("{b}: mAP@0.5 {:.4} after epoch {}", e.map50, e.epoch)),
                None => (f64::NAN, format!("{b}: no epoch was evaluated")),
            };
            if v.is_nan() || v < worst.0 {
                worst = (v, detail);
            }
        }
        let m = if worst.0.is_infinite() { f64::NAN } else { worst.0 };
        out.push(gate("final mAP@0.5 on the validation split", m, limit, m >= limit, worst.1));
    }
    out
}

#[cfg(test)]
mod tests {
    use reports::{EpochRecord, IterationRecord, RunData, RunSummary};

    fn experiment(thresholds: &str) -> crate::experiment::Experiment {
        experiment_with(thresholds, "[\"cpu\"]")
    }

    fn run(maps: &[f64]) -> RunData {
        let iterations = vec![IterationRecord { backend: "cpu".into(), iteration: 1, ..Default::default() }];
        let epochs = maps.iter().enumerate().map(|(e, &m)| EpochRecord { backend: "cpu".into(), epoch: e as u64, map50: m, ..Default::default() }).collect();
        RunData::new(iterations, epochs, Vec::new(), RunSummary::default(), Vec::new(), String::new())
    }

    fn two_backends(cpu_map: f64, gpu_map: f64) -> RunData {
        let iterations = ["cpu", "gpu"].iter().map(|b| IterationRecord { backend: (*b).into(), iteration: 1, ..Default::default() }).collect();
        let epochs = [("cpu", cpu_map), ("gpu", gpu_map)].iter().map(|(b, m)| EpochRecord { backend: (*b).into(), map50: *m, ..Default::default() }).collect();
        RunData::new(iterations, epochs, Vec::new(), RunSummary::default(), Vec::new(), String::new())
    }

    fn experiment_with(thresholds: &str, backends: &str) -> crate::experiment::Experiment {
        // Parsed from text: nothing is written (the path only names the experiment in errors).
        let text = format!(
            "[experiment]\nname = \"g\"\n[model]\ncfg = \"yolov4-tiny\"\n[data]\nsynthetic = {{ images = 8, val_images = 2, classes = 2, min_size = 8, max_size = 32, max_objects = 2 }}\n[backends]\nlist = {backends}\n[thresholds]\n{thresholds}\n"
        );
        crate::experiment::parse(std::path::Path::new("gates-test.toml"), &text).unwrap()
    }

    /// Issue 17 item 6: mAP 0 against mAP 0 holds but proves nothing; mAP 0.8 against 0.81 proves parity.
    #[test]
    fn map_delta_of_empty_detectors_is_not_informative() {
        let exp = experiment_with("map_abs_delta = 0.02", "[\"cpu\", \"gpu\"]");
        let g = |run: &RunData| super::evaluate(&exp, run).into_iter().find(|g| g.name.contains("mAP@0.5 absolute")).unwrap();
        let zero = g(&two_backends(0.0, 0.0));
        assert!(zero.pass && !zero.informative && zero.detail.contains("not informative"), "{zero:?}");
        let real = g(&two_backends(0.8, 0.81));
        assert!(real.pass && real.informative, "{real:?}");
        assert!(!g(&two_backends(0.8, 0.7)).pass);
    }

    /// Issue 17 item 4: the run's peak RSS is gated, wherever in the run it happened.
    /// Issue 14: a backend whose RSS or device bytes grow by more than the limit within an epoch
    /// after the warm-up fails; flat memory passes; the warm-up itself is not counted.
    #[test]
    fn memory_growth_is_gated_per_backend() {
        use reports::MemorySample;
        let exp = experiment_with("memory_growth_rel = 0.01\nwarmup_iterations = 2", "[\"cpu\", \"gpu\"]");
        let data = |gpu_rss: &[u64], dev: &[u64]| {
            let mut its: Vec<IterationRecord> =
                (1..=5).map(|i| IterationRecord { backend: "cpu".into(), iteration: i, rss_bytes: 1000, ..Default::default() }).collect();
            its.extend(gpu_rss.iter().enumerate().map(|(i, &r)| IterationRecord { backend: "gpu".into(), iteration: i as u64 + 1, rss_bytes: r, ..Default::default() }));
            let mem = dev.iter().map(|&d| MemorySample { backend: "gpu".into(), gpu_bytes: d, ..Default::default() }).collect();
            RunData::new(its, Vec::new(), mem, RunSummary::default(), Vec::new(), String::new())
        };
        let g = |run: &RunData| super::evaluate(&exp, run).into_iter().find(|g| g.name.starts_with("memory growth")).unwrap();
        // The warm-up's growth (1000 → 2000) is not counted; after it, flat.
        assert!(g(&data(&[1000, 2000, 2000, 2000, 2005], &[500, 500, 500])).pass);
        let rss = g(&data(&[1000, 2000, 2000, 2000, 2100], &[500, 500]));
        assert!(!rss.pass && rss.detail.contains("gpu epoch 0"), "{rss:?}");
        let dev = g(&data(&[1000, 2000, 2000, 2000, 2000], &[500, 500, 520]));
        assert!(!dev.pass && dev.detail.contains("device bytes"), "{dev:?}");
    }

    #[test]
    fn peak_rss_is_gated() {
        let exp = experiment_with("max_rss_bytes = 1000000000", "[\"cpu\"]");
        let mut run = run(&[0.5]);
        run.memory = vec![reports::MemorySample { t_s: 3.6, rss_bytes: 1_070_000_000, ..Default::default() }];
        run.refresh();
        let g = super::evaluate(&exp, &run).into_iter().find(|g| g.name == "peak RSS of the run").expect("peak RSS gate");
        assert!(!g.pass && g.measured == 1.07e9 && g.detail.contains("3.6 s"), "{g:?}");
    }

    /// Issue 17 item 1: the speed-up compares total images over total time of each backend.
    #[test]
    fn speedup_uses_total_images_over_total_time() {
        let exp = experiment_with("min_gpu_speedup = 1.5", "[\"cpu\", \"gpu\"]");
        let rec = |b: &str, i: u64, s: f64| IterationRecord { backend: b.into(), iteration: i, images: 4, step_s: s, images_per_s: 4.0 / s, ..Default::default() };
        // CPU: 1 s per iteration. GPU: one very fast and one slow iteration after the first:
        // 8 images in 1.01 s is 7.9 images/s (×1.98), the mean of rates (400 + 4)/2 would say ×50.
        let its = vec![rec("cpu", 1, 1.0), rec("cpu", 2, 1.0), rec("cpu", 3, 1.0), rec("gpu", 1, 9.0), rec("gpu", 2, 0.01), rec("gpu", 3, 1.0)];
        let run = RunData::new(its, Vec::new(), Vec::new(), RunSummary::default(), Vec::new(), String::new());
        let g = super::evaluate(&exp, &run).into_iter().find(|g| g.name == "GPU/CPU speed-up").unwrap();
        assert!((g.measured - 8.0 / 1.01 / 4.0).abs() < 1e-9, "{g:?}");
    }

    #[test]
    fn min_map50_gates_the_final_epoch() {
        let exp = experiment("min_map50 = 0.5");
        let g = |maps: &[f64]| super::evaluate(&exp, &run(maps)).into_iter().find(|g| g.name.contains("final mAP")).unwrap();
        let pass = g(&[0.2, 0.61]);
        assert!(pass.pass && pass.measured == 0.61, "{pass:?}");
        // An earlier good epoch does not count; the final one does.
        assert!(!g(&[0.7, 0.45]).pass);
        // No evaluated epoch fails rather than passing silently.
        let none = g(&[]);
        assert!(!none.pass && none.measured.is_nan(), "{none:?}");
    }
}

/// One epoch of one backend's iterations after the warm-up: the process RSS after its first
/// iteration and the largest after any, over `iterations` iterations.
struct EpochRss {
    epoch: u64,
    start: u64,
    max: u64,
    iterations: usize,
}

/// `backend`'s epochs (in order) with their RSS after the first `warmup` iterations.
fn epoch_rss(run: &RunData, backend: &str, warmup: u64) -> Vec<EpochRss> {
    let its: Vec<_> = run.iterations.iter().filter(|r| r.backend == backend && r.iteration > warmup).collect();
    let mut epochs: Vec<u64> = its.iter().map(|r| r.epoch).collect();
    epochs.dedup();
    epochs
        .into_iter()
        .filter_map(|e| {
            let rs: Vec<u64> = its.iter().filter(|r| r.epoch == e).map(|r| r.rss_bytes).collect();
            Some(EpochRss { epoch: e, start: *rs.first()?, max: *rs.iter().max()?, iterations: rs.len() })
        })
        .collect()
}

/// Growth within an epoch after the warm-up, relative to the epoch's start, of every backend's
/// process RSS (over its iterations) and device bytes (over the memory samples taken while it
/// trained): the worst of them. A step that allocates shows here.
fn memory_growth(run: &RunData, backends: &[String], warmup: u64, limit: f64) -> GateResult {
    let mut worst = (0.0f64, String::from("not enough iterations after warm-up"));
    let mut measured = false;
    let mut consider = |start: u64, max: u64, what: String| {
        if start == 0 {
            return;
        }
        measured = true;
        let g = max.saturating_sub(start) as f64 / start as f64;
        if g >= worst.0 {
            worst = (g, what);
        }
    };
    for b in backends {
        for EpochRss { epoch: e, start, max, iterations } in epoch_rss(run, b, warmup) {
            if iterations > 1 {
                consider(start, max, format!("{b} epoch {e}: RSS {start} → max {max} bytes"));
            }
        }
        // Device bytes: every sample taken while this backend was at work, from the first
        // non-zero figure (the built network) on. The samples carry time, not iterations, so the
        // warm-up is not left out here: a step that allocates shows all the same.
        let dev: Vec<u64> = run.memory.iter().filter(|s| &s.backend == b && s.gpu_bytes > 0).map(|s| s.gpu_bytes).collect();
        if let (Some(&start), Some(&max)) = (dev.first(), dev.iter().max())
            && dev.len() > 1
        {
            consider(start, max, format!("{b}: device bytes {start} → max {max}"));
        }
    }
    let g = gate("memory growth within an epoch after warm-up (relative)", worst.0, limit, worst.0 <= limit, worst.1);
    if measured { g } else { g.not_informative("fewer than two measurements of one epoch after the warm-up") }
}
