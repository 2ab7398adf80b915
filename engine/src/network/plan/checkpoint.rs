//! Gradient checkpointing: which layers' outputs the forward keeps, and "auto", which picks them
//! to fit a memory budget.
//!
//! Boundaries cut the network into segments (a segment ends at a boundary, the last one at the
//! last layer). The forward runs as usual, but a tensor of a segment that nothing outside it
//! reads dies as soon as the forward is past it; right before the backward of a segment, the
//! segment's forward runs again (batch norm writing its running statistics to a throwaway, so
//! they are updated once per pass) and brings back what its backward reads. Every op is
//! deterministic, so the recomputed tensors are the forward's bit for bit and checkpointed
//! training equals plain training exactly.

use super::{ActivationPlan, LayerDesc, PlanOptions};

/// `[train] checkpointing`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Checkpointing {
    /// Keep everything the backward reads.
    #[default]
    None,
    /// Pick boundaries: the least recomputation that fits the memory budget, or without a
    /// budget the smallest plan.
    Auto,
    /// These layers are the segment boundaries.
    Layers(Vec<usize>),
}

impl std::fmt::Display for Checkpointing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Checkpointing::None => f.write_str("none"),
            Checkpointing::Auto => f.write_str("auto"),
            Checkpointing::Layers(l) => f.write_str(&l.iter().map(usize::to_string).collect::<Vec<_>>().join(",")),
        }
    }
}

impl std::str::FromStr for Checkpointing {
    type Err = String;

    /// `none`, `auto`, or layer indices separated by commas (`3,7,12`).
    fn from_str(s: &str) -> Result<Checkpointing, String> {
        match s.trim() {
            "none" => Ok(Checkpointing::None),
            "auto" => Ok(Checkpointing::Auto),
            list => list
                .split(',')
                .map(|x| x.trim().parse::<usize>())
                .collect::<Result<Vec<_>, _>>()
                .map(Checkpointing::Layers)
                .map_err(|_| format!("`{s}`: expected \"none\", \"auto\" or layer indices such as 3,7,12")),
        }
    }
}

/// Boundaries for `s` segments of about equal kept memory (what the layers keep without
/// checkpointing). With `smallest_cut` each boundary moves to the layer with the smallest output
/// within two layers of the even split (a boundary's output is kept for the whole forward).
fn balanced(d: &[LayerDesc], s: usize, smallest_cut: bool) -> Vec<usize> {
    let n = d.len();
    let weight = |l: &LayerDesc| l.len * (1 + usize::from(l.bn) + usize::from(l.pre_act));
    let total: usize = d.iter().map(weight).sum();
    let mut out = Vec::new();
    let mut acc = 0usize;
    for (j, l) in d.iter().enumerate() {
        acc += weight(l);
        let next = out.len() + 1;
        if next < s && acc.saturating_mul(s) >= total.saturating_mul(next) && j + 1 < n {
            let b = if smallest_cut {
                let lo = j.saturating_sub(2).max(out.last().map_or(0, |&p: &usize| p + 1));
                (lo..=(j + 2).min(n - 2)).min_by_key(|&k| (d[k].len, k)).unwrap_or(j)
            } else {
                j
            };
            if out.last().is_none_or(|&p| b > p) {
                out.push(b);
            }
        }
    }
    out
}

/// The plan `checkpointing` asks for, given the bytes outside the activation arenas
/// (`other_bytes`) and an optional budget for the whole. Err: the smallest total bytes any
/// candidate plan reaches (the smallest feasible budget), when none fits the budget.
pub(crate) fn resolve_checkpointing(
    d: &[LayerDesc], checkpointing: &Checkpointing, budget: Option<u64>, other_bytes: u64, base: PlanOptions,
) -> Result<ActivationPlan, u64> {
    let total = |p: &ActivationPlan| other_bytes + 4 * p.arena_floats() as u64;
    let with = |boundaries: Vec<usize>| ActivationPlan::new(d, PlanOptions { boundaries, ..base.clone() });
    let fits = |p: &ActivationPlan| budget.is_none_or(|b| total(p) <= b);
    match checkpointing {
        Checkpointing::None | Checkpointing::Layers(_) => {
            let boundaries = match checkpointing {
                Checkpointing::Layers(l) => l.clone(),
                _ => Vec::new(),
            };
            let plan = with(boundaries);
            if fits(&plan) {
                return Ok(plan);
            }
            // Name what auto could reach, so the message says what would fit.
            let smallest = candidates(d).into_iter().map(|b| total(&with(b))).min().unwrap_or(u64::MAX);
            Err(smallest.min(total(&plan)))
        }
        Checkpointing::Auto => {
            let plans: Vec<ActivationPlan> = candidates(d).into_iter().map(with).collect();
            let smallest = plans.iter().map(total).min().unwrap_or(u64::MAX);
            let best = match budget {
                Some(_) => plans
                    .into_iter()
                    .filter(|p| fits(p))
                    .min_by(|a, b| a.recompute_flops.total_cmp(&b.recompute_flops).then(total(a).cmp(&total(b)))),
                None => plans.into_iter().min_by(|a, b| total(a).cmp(&total(b)).then(a.recompute_flops.total_cmp(&b.recompute_flops))),
            };
            best.ok_or(smallest)
        }
    }
}

/// Boundary sets "auto" chooses among: none, and 2 … n segments balanced two ways.
fn candidates(d: &[LayerDesc]) -> Vec<Vec<usize>> {
    let mut out = vec![Vec::new()];
    for s in 2..=d.len() {
        for smallest_cut in [false, true] {
            let b = balanced(d, s, smallest_cut);
            if !b.is_empty() && !out.contains(&b) {
                out.push(b);
            }
        }
    }
    out
}
