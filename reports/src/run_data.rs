//! [`RunData`]: everything a report is made of, and what is derived from the records. Its own
//! module so that the charts and the HTML page (which draw it) and the run folder (which writes
//! and reads it) do not import each other.

use crate::SCHEMA_VERSION;
use crate::deltas::{DeltaRecord, compute_deltas};
use crate::gate::GateReport;
use crate::kernels::KernelRecord;
use crate::records::{EpochRecord, GateResult, IterationRecord, MemorySample, RunSummary};
use crate::validation::Validation;

/// Everything a report is made of.
#[derive(Clone, Debug, Default)]
pub struct RunData {
    pub iterations: Vec<IterationRecord>,
    pub epochs: Vec<EpochRecord>,
    pub memory: Vec<MemorySample>,
    /// Derived from `iterations` by [`RunData::new`] / [`RunData::refresh`].
    pub deltas: Vec<DeltaRecord>,
    pub summary: RunSummary,
    pub gates: Vec<GateResult>,
    /// The experiment file's text, shown verbatim in the report.
    pub experiment_toml: String,
    /// GPU time per layer × phase × kernel (empty when no backend was timed).
    pub kernels: Vec<KernelRecord>,
    /// Per-class results, curves and confusion matrices of the validations.
    pub validation: Validation,
}

impl RunData {
    /// Builds the run and derives deltas, per-backend summaries and peaks from the records.
    pub fn new(
        iterations: Vec<IterationRecord>,
        epochs: Vec<EpochRecord>,
        memory: Vec<MemorySample>,
        summary: RunSummary,
        gates: Vec<GateResult>,
        experiment_toml: String,
    ) -> Self {
        let mut run = RunData {
            iterations,
            epochs,
            memory,
            deltas: Vec::new(),
            summary,
            gates,
            experiment_toml,
            kernels: Vec::new(),
            validation: Validation::default(),
        };
        run.refresh();
        run
    }

    /// Recomputes what is derived from the records (call after changing them).
    pub fn refresh(&mut self) {
        self.summary.schema_version = SCHEMA_VERSION;
        self.deltas = compute_deltas(&self.iterations, self.summary.parity.window);
        self.summary.fill_from_records(&self.iterations, &self.epochs, &self.memory);
    }

    pub fn gate_report(&self) -> GateReport {
        GateReport::new(self.gates.clone())
    }
}
