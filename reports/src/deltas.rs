//! Loss deltas between a reference backend (CPU) and every other backend, joined on iteration.

use crate::records::{IterationRecord, backend_names};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

/// Guards the relative delta against a zero reference loss.
pub const REL_DELTA_EPS: f64 = 1e-12;

/// One iteration present in both the reference and the compared backend.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeltaRecord {
    /// The compared backend ("gpu", ...).
    pub backend: String,
    /// The reference backend ("cpu" when present).
    pub reference: String,
    pub iteration: u64,
    pub reference_loss: f64,
    pub loss: f64,
    /// |loss − reference_loss|.
    pub abs_delta: f64,
    /// abs_delta / max(|reference_loss|, 1e-12).
    pub rel_delta: f64,
    /// Mean of rel_delta over the trailing `window` joined iterations (fewer at the start).
    pub rel_delta_window_mean: f64,
}

/// The reference backend: "cpu" when it ran, otherwise the first backend seen.
pub fn reference_backend(iterations: &[IterationRecord]) -> Option<String> {
    let names = backend_names(iterations);
    names.iter().find(|n| n.as_str() == "cpu").or(names.first()).cloned()
}

/// Inner join of every non-reference backend with the reference on `iteration`.
/// A NaN loss on either side gives NaN deltas (so a parity gate fails on it rather than skipping it).
pub fn compute_deltas(iterations: &[IterationRecord], window: usize) -> Vec<DeltaRecord> {
    let Some(reference) = reference_backend(iterations) else {
        return Vec::new();
    };
    let window = window.max(1);
    let ref_loss: BTreeMap<u64, f64> = iterations
        .iter()
        .filter(|r| r.backend == reference)
        .map(|r| (r.iteration, r.loss))
        .collect();
    let mut out = Vec::new();
    for backend in backend_names(iterations).into_iter().filter(|b| *b != reference) {
        let mut joined: Vec<(u64, f64, f64)> = iterations
            .iter()
            .filter(|r| r.backend == backend)
            .filter_map(|r| ref_loss.get(&r.iteration).map(|&a| (r.iteration, a, r.loss)))
            .collect();
        joined.sort_by_key(|j| j.0);
        let mut trail: VecDeque<f64> = VecDeque::with_capacity(window);
        for (iteration, a, b) in joined {
            let abs_delta = (b - a).abs();
            let rel_delta = abs_delta / a.abs().max(REL_DELTA_EPS);
            if trail.len() == window {
                trail.pop_front();
            }
            trail.push_back(rel_delta);
            let rel_delta_window_mean = trail.iter().sum::<f64>() / trail.len() as f64;
            out.push(DeltaRecord {
                backend: backend.clone(),
                reference: reference.clone(),
                iteration,
                reference_loss: a,
                loss: b,
                abs_delta,
                rel_delta,
                rel_delta_window_mean,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(backend: &str, iteration: u64, loss: f64) -> IterationRecord {
        IterationRecord { backend: backend.into(), iteration, loss, ..Default::default() }
    }

    #[test]
    fn joins_on_iteration_and_averages_window() {
        let its = vec![
            rec("gpu", 1, 11.0),
            rec("cpu", 1, 10.0),
            rec("cpu", 2, 10.0),
            rec("cpu", 3, 10.0),
            rec("gpu", 3, 13.0),
            rec("gpu", 4, 1.0), // no cpu partner: dropped
        ];
        let d = compute_deltas(&its, 2);
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].reference, "cpu");
        assert_eq!(d[0].iteration, 1);
        assert!((d[0].rel_delta - 0.1).abs() < 1e-12);
        assert_eq!(d[1].iteration, 3);
        assert!((d[1].abs_delta - 3.0).abs() < 1e-12);
        assert!((d[1].rel_delta_window_mean - 0.2).abs() < 1e-12);
    }

    #[test]
    fn nan_loss_propagates() {
        let its = vec![rec("cpu", 1, 1.0), rec("gpu", 1, f64::NAN)];
        assert!(compute_deltas(&its, 5)[0].rel_delta.is_nan());
    }
}
