//! Where a training step's device time goes: every recorded op carries a [`Scope`] (layer, layer
//! type, phase) and its kernel name; a backend that can time its work (the GPU, through timestamp
//! queries) returns one [`DispatchTime`] per kernel launch, and [`KernelTable`] sums them per
//! layer × phase × kernel with the FLOPs and bytes each launch was counted to do.
//!
//! FLOPs count multiply-adds as 2; bytes count each input read once and each output written once
//! (the least traffic the kernel can have), so achieved GB/s is a lower bound on real traffic.

use std::collections::HashMap;

/// Part of a training step an op belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Phase {
    Forward,
    /// The [yolo] heads (loss and its gradient).
    Loss,
    Backward,
    /// Optimiser update and gradient reset.
    Update,
    /// Forward ops run again for a checkpointed segment's backward.
    Recompute,
    /// Anything outside a training pass (uploads, reductions for diagnostics, inference).
    Other,
}

impl Phase {
    pub const ALL: [Phase; 6] = [Phase::Forward, Phase::Loss, Phase::Backward, Phase::Update, Phase::Recompute, Phase::Other];

    pub fn name(self) -> &'static str {
        match self {
            Phase::Forward => "forward",
            Phase::Loss => "loss",
            Phase::Backward => "backward",
            Phase::Update => "update",
            Phase::Recompute => "recompute",
            Phase::Other => "other",
        }
    }
}

/// What the ops recorded next belong to. Set by the network before each layer's ops.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Scope {
    /// Layer index in the cfg (None: not one layer's work).
    pub layer: Option<usize>,
    /// Darknet's layer type ("conv", "route", "yolo", …), or what the work is ("network").
    pub layer_type: &'static str,
    pub phase: Phase,
}

impl Scope {
    pub const NONE: Scope = Scope { layer: None, layer_type: "network", phase: Phase::Other };

    pub fn layer(layer: usize, layer_type: &'static str, phase: Phase) -> Scope {
        Scope { layer: Some(layer), layer_type, phase }
    }
    pub fn network(phase: Phase) -> Scope {
        Scope { layer: None, layer_type: "network", phase }
    }
}

/// Counted work of one kernel launch.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Work {
    pub flops: f64,
    pub bytes: f64,
}

impl Work {
    /// Elementwise work over `n` floats: `reads` inputs and `writes` outputs per element.
    pub fn elementwise(n: usize, reads: usize, writes: usize, flops_per: usize) -> Work {
        Work { flops: (n * flops_per) as f64, bytes: (n * (reads + writes) * 4) as f64 }
    }
}

/// Device time of one kernel launch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DispatchTime {
    pub scope: Scope,
    pub kernel: &'static str,
    pub seconds: f64,
    pub work: Work,
}

/// One row of the kernels table: the launches of one kernel for one layer and phase.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelRow {
    pub layer: Option<usize>,
    pub layer_type: String,
    pub phase: Phase,
    pub kernel: String,
    pub dispatches: u64,
    pub gpu_s: f64,
    pub flops: f64,
    pub bytes: f64,
}

impl KernelRow {
    /// Achieved GFLOP/s (0 for kernels counted as doing no arithmetic).
    pub fn gflops(&self) -> f64 {
        if self.gpu_s > 0.0 { self.flops / self.gpu_s / 1e9 } else { 0.0 }
    }
    /// Achieved GB/s of the counted (least) traffic.
    pub fn gbytes_per_s(&self) -> f64 {
        if self.gpu_s > 0.0 { self.bytes / self.gpu_s / 1e9 } else { 0.0 }
    }
}

type RowKey = (Option<usize>, &'static str, Phase, &'static str);

/// Per layer × phase × kernel sums over any number of steps.
#[derive(Clone, Debug, Default)]
pub struct KernelTable {
    rows: HashMap<RowKey, KernelRow>,
    /// Steps added (to report per-step figures).
    pub steps: u64,
}

impl KernelTable {
    /// Adds one step's launches.
    pub fn add_step(&mut self, times: &[DispatchTime]) {
        self.steps += 1;
        for t in times {
            let key = (t.scope.layer, t.scope.layer_type, t.scope.phase, t.kernel);
            let row = self.rows.entry(key).or_insert_with(|| KernelRow {
                layer: t.scope.layer,
                layer_type: t.scope.layer_type.to_string(),
                phase: t.scope.phase,
                kernel: t.kernel.to_string(),
                dispatches: 0,
                gpu_s: 0.0,
                flops: 0.0,
                bytes: 0.0,
            });
            row.dispatches += 1;
            row.gpu_s += t.seconds;
            row.flops += t.work.flops;
            row.bytes += t.work.bytes;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Rows in network order: layer (network-wide rows last), phase, kernel.
    pub fn rows(&self) -> Vec<KernelRow> {
        let mut rows: Vec<KernelRow> = self.rows.values().cloned().collect();
        rows.sort_by(|a, b| {
            let la = a.layer.unwrap_or(usize::MAX);
            let lb = b.layer.unwrap_or(usize::MAX);
            (la, a.phase, &a.kernel).cmp(&(lb, b.phase, &b.kernel))
        });
        rows
    }

    /// Device seconds summed over every row.
    pub fn total_s(&self) -> f64 {
        self.rows.values().map(|r| r.gpu_s).sum()
    }

    /// Per kernel name over all layers and phases, most time first.
    pub fn by_kernel(&self) -> Vec<KernelRow> {
        let mut m: HashMap<&str, KernelRow> = HashMap::new();
        for r in self.rows.values() {
            let e = m.entry(r.kernel.as_str()).or_insert_with(|| KernelRow {
                layer: None,
                layer_type: String::new(),
                phase: r.phase,
                kernel: r.kernel.clone(),
                dispatches: 0,
                gpu_s: 0.0,
                flops: 0.0,
                bytes: 0.0,
            });
            e.dispatches += r.dispatches;
            e.gpu_s += r.gpu_s;
            e.flops += r.flops;
            e.bytes += r.bytes;
        }
        let mut v: Vec<KernelRow> = m.into_values().collect();
        v.sort_by(|a, b| b.gpu_s.total_cmp(&a.gpu_s).then(a.kernel.cmp(&b.kernel)));
        v
    }

    /// Device seconds per phase.
    pub fn by_phase(&self) -> Vec<(Phase, f64)> {
        Phase::ALL
            .iter()
            .map(|&p| (p, self.rows.values().filter(|r| r.phase == p).map(|r| r.gpu_s).sum()))
            .collect()
    }

    /// Human-readable table of the `n` kernels with the most device time (per step).
    pub fn top_kernels_text(&self, n: usize) -> String {
        let total = self.total_s().max(f64::MIN_POSITIVE);
        let steps = self.steps.max(1) as f64;
        let mut s = format!(
            "{:<40} {:>9} {:>11} {:>7} {:>10} {:>9}\n",
            "kernel", "launches", "ms/step", "share", "GFLOP/s", "GB/s"
        );
        for r in self.by_kernel().iter().take(n) {
            s += &format!(
                "{:<40} {:>9} {:>11.3} {:>6.1}% {:>10.1} {:>9.1}\n",
                r.kernel,
                (r.dispatches as f64 / steps).round(),
                r.gpu_s / steps * 1e3,
                100.0 * r.gpu_s / total,
                r.gflops(),
                r.gbytes_per_s()
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(layer: Option<usize>, phase: Phase, kernel: &'static str, s: f64, flops: f64) -> DispatchTime {
        DispatchTime { scope: Scope { layer, layer_type: "conv", phase }, kernel, seconds: s, work: Work { flops, bytes: 8.0 } }
    }

    #[test]
    fn rows_sum_per_layer_phase_kernel() {
        let mut k = KernelTable::default();
        k.add_step(&[
            t(Some(1), Phase::Forward, "gemm", 1.0, 4e9),
            t(Some(1), Phase::Forward, "gemm", 1.0, 4e9),
            t(Some(0), Phase::Backward, "gemm", 0.5, 1e9),
            t(None, Phase::Update, "sgd", 0.25, 0.0),
        ]);
        let rows = k.rows();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].layer, Some(0));
        assert_eq!(rows[1].dispatches, 2);
        assert!((rows[1].gflops() - 4.0).abs() < 1e-12);
        assert_eq!(rows[2].layer, None);
        let by = k.by_kernel();
        assert_eq!(by[0].kernel, "gemm");
        assert_eq!(by[0].dispatches, 3);
        assert!((k.total_s() - 2.75).abs() < 1e-12);
        let phases = k.by_phase();
        assert!((phases[0].1 - 2.0).abs() < 1e-12 && (phases[2].1 - 0.5).abs() < 1e-12);
    }
}
