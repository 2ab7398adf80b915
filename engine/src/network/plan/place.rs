//! Placing tensors in arenas: tensors whose live intervals never overlap may share memory.
//!
//! Greedy by size (the largest tensor first, each at the best-fitting gap among the tensors it
//! conflicts with), as TensorFlow Lite's and MNN's arena planners do: within a few percent of the
//! largest sum of live bytes over the schedule on the networks here.

use super::Tensor;

/// Floats every placed tensor's offset is a multiple of (256 bytes: storage-binding alignment
/// on every GPU, and a cache line on every CPU).
pub(crate) const ALIGN: usize = 64;

fn align(x: usize) -> usize {
    x.div_ceil(ALIGN) * ALIGN
}

/// Whether two tensors may not share memory.
fn conflict(a: &Tensor, b: &Tensor, reuse: bool) -> bool {
    if !reuse || a.persistent || b.persistent {
        return true;
    }
    // Both interval lists are sorted and disjoint: one merge walk.
    let (mut i, mut j) = (0, 0);
    while i < a.intervals.len() && j < b.intervals.len() {
        let (x, y) = (a.intervals[i], b.intervals[j]);
        if x.0 <= y.1 && y.0 <= x.1 {
            return true;
        }
        if x.1 < y.1 { i += 1 } else { j += 1 }
    }
    false
}

/// Gives every tensor an arena and an offset (floats), arenas holding at most `cap` floats
/// unless one tensor alone is larger; returns the arenas' lengths. `reuse = false` gives every
/// tensor memory of its own (the layout without a plan, for comparisons).
pub(crate) fn place(tensors: &mut [Tensor], reuse: bool, cap: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..tensors.len()).collect();
    let first = |t: &Tensor| t.intervals.first().map_or(usize::MAX, |i| i.0);
    order.sort_by(|&a, &b| {
        let (x, y) = (&tensors[a], &tensors[b]);
        y.len.cmp(&x.len).then(first(x).cmp(&first(y))).then(a.cmp(&b))
    });
    let mut arenas: Vec<usize> = Vec::new();
    let mut members: Vec<Vec<usize>> = Vec::new();
    for &k in &order {
        let len = tensors[k].len;
        let mut spot = None;
        for (a, m) in members.iter().enumerate() {
            let mut taken: Vec<(usize, usize)> = m
                .iter()
                .filter(|&&o| conflict(&tensors[k], &tensors[o], reuse))
                .map(|&o| (tensors[o].offset, tensors[o].offset + tensors[o].len))
                .collect();
            taken.sort_unstable();
            // Best fit among the gaps between conflicting tensors, else after the last one.
            let (mut best, mut end) = (None::<(usize, usize)>, 0);
            for &(s, e) in &taken {
                let at = align(end);
                if s >= at && s - at >= len && best.is_none_or(|(_, g)| s - at < g) {
                    best = Some((at, s - at));
                }
                end = end.max(e);
            }
            let at = best.map(|(at, _)| at).unwrap_or(align(end));
            if at + len <= cap.max(len) {
                spot = Some((a, at));
                break;
            }
        }
        let (a, at) = spot.unwrap_or_else(|| {
            arenas.push(0);
            members.push(Vec::new());
            (arenas.len() - 1, 0)
        });
        tensors[k].arena = a;
        tensors[k].offset = at;
        arenas[a] = arenas[a].max(at + len);
        members[a].push(k);
    }
    arenas
}
