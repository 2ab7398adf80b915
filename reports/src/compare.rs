//! Comparing two runs (e.g. main vs a branch): flags regressions beyond a noise margin.

use crate::ReportError;
use crate::gate::fmt_num;
use crate::records::{BackendSummary, RunStatus};
use crate::run_data::RunData;
use crate::run_dir::read_run;
use std::fmt::Write;
use std::path::Path;

/// One metric of one backend in run A and run B.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricChange {
    pub backend: String,
    pub metric: &'static str,
    pub unit: &'static str,
    pub a: f64,
    pub b: f64,
    /// (b − a)/|a| when `relative`, else b − a.
    pub change: f64,
    pub relative: bool,
    pub higher_is_better: bool,
    /// Worse by more than the noise margin (or became NaN).
    pub regression: bool,
    /// Better by more than the noise margin.
    pub improvement: bool,
    /// False when A and B ran on different devices and the metric depends on the device
    /// (throughput): shown, never a regression.
    pub comparable: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Comparison {
    pub a_name: String,
    pub b_name: String,
    /// Relative margin for relative metrics, absolute (mAP points, 0..1) for mAP.
    pub noise_margin: f64,
    pub changes: Vec<MetricChange>,
    /// Backends present in only one of the runs.
    pub unmatched_backends: Vec<String>,
    /// Why run B cannot stand in for run A whatever its numbers: it failed, was interrupted or
    /// killed, or ran fewer iterations. Each is a regression.
    pub run_regressions: Vec<String>,
    /// What makes the comparison weaker without being a regression: runs of different experiment
    /// files, backends on different devices.
    pub warnings: Vec<String>,
}

impl Comparison {
    pub fn regressions(&self) -> Vec<&MetricChange> {
        self.changes.iter().filter(|c| c.regression).collect()
    }

    pub fn has_regression(&self) -> bool {
        !self.run_regressions.is_empty() || self.changes.iter().any(|c| c.regression)
    }

    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let n = self.regressions().len() + self.run_regressions.len();
        let verdict = if n == 0 { "no regression".to_string() } else { format!("{n} regression(s)") };
        let _ = writeln!(s, "# Comparison: {verdict}\n");
        for r in &self.run_regressions {
            let _ = writeln!(s, "- **REGRESSION**: {r}");
        }
        for w in &self.warnings {
            let _ = writeln!(s, "- **warning**: {w}");
        }
        if !self.run_regressions.is_empty() || !self.warnings.is_empty() {
            s.push('\n');
        }
        let _ = writeln!(
            s,
            "A = `{}`, B = `{}`, noise margin {} (relative; absolute for mAP).\n",
            self.a_name,
            self.b_name,
            fmt_num(self.noise_margin)
        );
        s.push_str("| backend | metric | A | B | change | verdict |\n|---|---|---:|---:|---:|---|\n");
        for c in &self.changes {
            let change = if c.relative {
                format!("{:+.2}%", c.change * 100.0)
            } else {
                format!("{:+.4}", c.change)
            };
            let verdict = if !c.comparable {
                "not comparable (other device)"
            } else if c.regression {
                "**REGRESSION**"
            } else if c.improvement {
                "improved"
            } else {
                "within noise"
            };
            let unit = if c.unit.is_empty() { String::new() } else { format!(" ({})", c.unit) };
            let _ = writeln!(
                s,
                "| {} | {}{unit} | {} | {} | {change} | {verdict} |",
                c.backend,
                c.metric,
                fmt_num(c.a),
                fmt_num(c.b)
            );
        }
        if !self.unmatched_backends.is_empty() {
            let _ = writeln!(s, "\nBackends in only one run: {}", self.unmatched_backends.join(", "));
        }
        s
    }
}

type Getter = fn(&BackendSummary) -> Option<f64>;

/// Metrics that measure the device rather than the code: not compared across devices.
const DEVICE_BOUND: &[&str] = &["images_per_s"];

/// (metric, unit, higher is better, relative, getter)
const METRICS: &[(&str, &str, bool, bool, Getter)] = &[
    ("final_loss", "loss", false, true, |b| Some(b.final_loss)),
    ("final_map50", "0–1", true, false, |b| b.final_map50),
    ("final_map50_95", "0–1", true, false, |b| b.final_map50_95),
    ("images_per_s", "images/s", true, true, |b| Some(b.images_per_s)),
    ("peak_rss", "bytes", false, true, |b| Some(b.peak_rss_bytes as f64)),
    ("peak_gpu", "bytes", false, true, |b| (b.peak_gpu_bytes > 0).then_some(b.peak_gpu_bytes as f64)),
];

fn change_of(a: f64, b: f64, relative: bool) -> f64 {
    if !relative {
        return b - a;
    }
    if a == 0.0 {
        if b == 0.0 { 0.0 } else { f64::INFINITY.copysign(b) }
    } else {
        (b - a) / a.abs()
    }
}

/// A run's own problems, as sentences; `name` says which run ("B").
fn run_problems(run: &RunData, name: &str) -> Vec<String> {
    let s = &run.summary;
    let at = s.stopped_at_iteration.map(|i| format!(" at iteration {i}")).unwrap_or_default();
    let mut out = Vec::new();
    match s.status {
        RunStatus::Failed => {
            let why = s.extra.get("error").map(|e| format!(": {e}")).unwrap_or_default();
            out.push(format!("run {name} failed{at}{why}"));
        }
        RunStatus::Interrupted => out.push(format!("run {name} was interrupted{at}")),
        RunStatus::Running => out.push(format!("run {name} did not finish (killed, or still running)")),
        RunStatus::Completed => {
            // Runs written before statuses existed record an error only in `extra`.
            if let Some(e) = s.extra.get("error") {
                out.push(format!("run {name} stopped with an error: {e}"));
            }
        }
    }
    out
}

/// Compares every metric of every backend present in both runs. Run B is also a regression when
/// it failed, was interrupted or killed, or a backend ran fewer iterations than in run A.
/// The device a backend ran on, as the run recorded it ("" when unknown).
fn device_of(run: &RunData, backend: &str) -> String {
    run.summary.devices.iter().find(|d| d.backend == backend).map(|d| d.name.clone()).unwrap_or_default()
}

pub fn compare(run_a: &RunData, run_b: &RunData, noise_margin: f64) -> Comparison {
    let mut run_regressions = run_problems(run_b, "B");
    let mut warnings = Vec::new();
    let (ha, hb) = (&run_a.summary.experiment_hash, &run_b.summary.experiment_hash);
    if ha != hb {
        warnings.push(format!(
            "the runs are of different experiment files (hash {ha} `{}` vs {hb} `{}`): settings differ, so differences need not be regressions",
            run_a.summary.experiment_name, run_b.summary.experiment_name
        ));
    }
    for ba in &run_a.summary.backends {
        if let Some(bb) = run_b.summary.backend(&ba.backend)
            && bb.iterations < ba.iterations
        {
            run_regressions.push(format!(
                "backend {} ran {} iterations in B but {} in A",
                ba.backend, bb.iterations, ba.iterations
            ));
        }
    }
    let mut changes = Vec::new();
    let mut unmatched = Vec::new();
    for ba in &run_a.summary.backends {
        let Some(bb) = run_b.summary.backend(&ba.backend) else {
            unmatched.push(ba.backend.clone());
            continue;
        };
        let (da, db) = (device_of(run_a, &ba.backend), device_of(run_b, &ba.backend));
        let same_device = da == db;
        if !same_device {
            warnings.push(format!(
                "backend {} ran on `{da}` in A and `{db}` in B: its throughput is not compared",
                ba.backend
            ));
        }
        for &(metric, unit, higher_is_better, relative, get) in METRICS {
            let (Some(a), Some(b)) = (get(ba), get(bb)) else { continue };
            let change = change_of(a, b, relative);
            let worse = if higher_is_better { -change } else { change };
            let comparable = same_device || !DEVICE_BOUND.contains(&metric);
            // A metric that turns NaN (diverged loss) is always a regression.
            let regression = comparable && ((b.is_nan() && !a.is_nan()) || worse > noise_margin);
            let improvement = (a.is_nan() && !b.is_nan()) || worse < -noise_margin;
            changes.push(MetricChange {
                backend: ba.backend.clone(),
                metric,
                unit,
                a,
                b,
                change,
                relative,
                higher_is_better,
                regression,
                improvement: comparable && improvement,
                comparable,
            });
        }
    }
    for bb in &run_b.summary.backends {
        if run_a.summary.backend(&bb.backend).is_none() {
            unmatched.push(bb.backend.clone());
        }
    }
    Comparison {
        a_name: run_a.summary.experiment_name.clone(),
        b_name: run_b.summary.experiment_name.clone(),
        noise_margin,
        changes,
        unmatched_backends: unmatched,
        run_regressions,
        warnings,
    }
}

/// Checks a noise margin: a finite fraction in [0, 1] (NaN would make every change "within
/// noise", a negative margin would turn gains into regressions).
pub fn check_noise_margin(noise_margin: f64) -> Result<(), String> {
    if noise_margin.is_finite() && (0.0..=1.0).contains(&noise_margin) {
        Ok(())
    } else {
        Err(format!("noise margin {noise_margin}: expected a fraction in [0, 1] (0.05 = 5 %)"))
    }
}

/// [`compare`] on two run folders; the names in the output are the folder paths.
pub fn compare_dirs(a: &Path, b: &Path, noise_margin: f64) -> Result<Comparison, ReportError> {
    check_noise_margin(noise_margin).map_err(ReportError::Argument)?;
    let (ra, rb) = (read_run(a)?, read_run(b)?);
    let mut c = compare(&ra, &rb, noise_margin);
    c.a_name = a.display().to_string();
    c.b_name = b.display().to_string();
    Ok(c)
}
