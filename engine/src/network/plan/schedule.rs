//! The programs a network runs, step by step, and what every step reads and writes.
//!
//! This file is where "keep for backward" is decided, per op: a tensor stays alive exactly as
//! long as some later step lists it as read. What each op's backward reads (and so keeps):
//!
//! | op | backward reads |
//! |---|---|
//! | convolution | its input (weights gradient), its gradient; with batch norm x_norm (and the batch variance, a per-channel vector kept outside the plan); its output when the activation is not linear (leaky/relu/logistic/tanh take the derivative from the output); the pre-activation for mish/swish/hard-mish |
//! | batch norm's input (the convolution's raw output) | nothing: the backward works from x_norm, so the raw output lives only inside the layer's forward |
//! | route, upsample, avgpool, reorg, dropout | only their gradient (dropout recomputes its mask from the seed) |
//! | maxpool | its input (the argmax is recomputed from it) and its gradient |
//! | shortcut | its gradient; its output (or pre-activation) when the activation is not linear |
//! | scale_channels | both inputs and its gradient |
//! | [yolo] | its gradient, which it wrote in the forward; its output is read by nothing in training |
//! | softmax, [cost] | their gradient, which they wrote in the forward (a [cost] after a softmax adds its own into the softmax's) |
//!
//! Gradients accumulate (`+=`): each is zeroed right before the first step that uses it (see
//! `lifetimes`), instead of all of them at the start of the backward.

use super::{LayerDesc, Op, Step, TensorId, TensorKind, Use};

/// The tensor of `kind` of layer `layer`.
fn t(layer: usize, kind: TensorKind) -> TensorId {
    TensorId { layer, kind }
}

/// What the forward of layer `i` reads and writes (`train`: batch statistics, x_norm and the
/// [yolo] gradient; otherwise inference). Recomputing a layer runs the same ops.
pub(crate) fn forward_uses(d: &[LayerDesc], i: usize, train: bool) -> Vec<(TensorId, Use)> {
    use TensorKind::*;
    let mut u = Vec::new();
    // Layer i's input is layer i − 1's output (the network input, not planned, for layer 0).
    let input = |u: &mut Vec<(TensorId, Use)>| {
        if i > 0 {
            u.push((t(i - 1, Output), Use::Read));
        }
    };
    let l = &d[i];
    match &l.op {
        Op::Conv => {
            input(&mut u);
            if l.bn {
                // Written and read inside this step only.
                u.push((t(i, ConvOut), Use::Write));
                if train {
                    u.push((t(i, XNorm), Use::Write));
                }
            }
        }
        Op::Route(srcs) => u.extend(srcs.iter().map(|&s| (t(s, Output), Use::Read))),
        Op::Shortcut(from) => {
            input(&mut u);
            u.extend(from.iter().map(|&f| (t(f, Output), Use::Read)));
        }
        Op::ScaleChannels(from) => {
            input(&mut u);
            u.push((t(*from, Output), Use::Read));
        }
        Op::Yolo | Op::Softmax => {
            input(&mut u);
            // The head writes its gradient with its output (inference: [yolo] into a throwaway,
            // softmax not at all).
            u.push((t(i, Delta), Use::Write));
        }
        // Without truth a [cost] does nothing: in inference it touches no tensor.
        Op::Cost if !train => return u,
        Op::Cost => {
            input(&mut u);
            u.push((t(i, Delta), Use::Write));
        }
        Op::Maxpool | Op::Avgpool | Op::Upsample | Op::Reorg | Op::Dropout => input(&mut u),
    }
    if l.pre_act {
        u.push((t(i, PreAct), Use::Write));
    }
    u.push((t(i, Output), Use::Write));
    u
}

/// What the backward of layer `i` reads and writes.
pub(crate) fn backward_uses(d: &[LayerDesc], i: usize) -> Vec<(TensorId, Use)> {
    use TensorKind::*;
    let mut u = Vec::new();
    let l = &d[i];
    let into_input = |u: &mut Vec<(TensorId, Use)>| {
        if i > 0 {
            u.push((t(i - 1, Delta), Use::Update));
        }
    };
    // The derivative of a non-linear activation reads the output (and the pre-activation
    // where one is kept).
    let activation = |u: &mut Vec<(TensorId, Use)>| {
        if !l.linear {
            u.push((t(i, Output), Use::Read));
        }
        if l.pre_act {
            u.push((t(i, PreAct), Use::Read));
        }
    };
    match &l.op {
        Op::Conv => {
            u.push((t(i, Delta), Use::Update));
            activation(&mut u);
            if l.bn {
                u.push((t(i, XNorm), Use::Read));
            }
            if i > 0 {
                // The weights gradient reads the input.
                u.push((t(i - 1, Output), Use::Read));
            }
            into_input(&mut u);
        }
        Op::Route(srcs) => {
            u.push((t(i, Delta), Use::Read));
            u.extend(srcs.iter().map(|&s| (t(s, Delta), Use::Update)));
        }
        Op::Maxpool => {
            if i > 0 {
                u.push((t(i - 1, Output), Use::Read));
            }
            u.push((t(i, Delta), Use::Read));
            into_input(&mut u);
        }
        Op::Shortcut(from) => {
            u.push((t(i, Delta), Use::Update));
            activation(&mut u);
            into_input(&mut u);
            u.extend(from.iter().map(|&f| (t(f, Delta), Use::Update)));
        }
        Op::ScaleChannels(from) => {
            u.push((t(*from, Output), Use::Read));
            if i > 0 {
                u.push((t(i - 1, Output), Use::Read));
            }
            u.push((t(i, Delta), Use::Read));
            u.push((t(*from, Delta), Use::Update));
            if i > 0 {
                into_input(&mut u);
            } else {
                // The scales are the network input: their gradient goes to a throwaway.
                u.push((t(i, DScale), Use::Write));
            }
        }
        Op::Yolo | Op::Softmax | Op::Cost | Op::Avgpool | Op::Upsample | Op::Reorg | Op::Dropout => {
            u.push((t(i, Delta), Use::Read));
            into_input(&mut u);
        }
    }
    u
}

/// Layers recomputed before the backward of the segment `segment` (ascending): every layer of
/// the segment whose output, x_norm or pre-activation a backward step of the segment, or
/// another recomputed layer, reads. [yolo] heads are never recomputed: their gradient is kept
/// from the forward, and their output is needed by nothing in training.
fn recomputed(d: &[LayerDesc], segment: std::ops::RangeInclusive<usize>) -> Vec<usize> {
    let (s, e) = (*segment.start(), *segment.end());
    let reads = |uses: Vec<(TensorId, Use)>, j: usize| {
        uses.iter().any(|(id, u)| {
            id.layer == j && *u != Use::Write && matches!(id.kind, TensorKind::Output | TensorKind::XNorm | TensorKind::PreAct)
        })
    };
    let mut needed = vec![false; e + 1];
    for j in (s..=e).rev() {
        if d[j].op.is_loss() {
            continue;
        }
        needed[j] = (s..=e).any(|i| reads(backward_uses(d, i), j))
            || (j + 1..=e).any(|m| needed[m] && reads(forward_uses(d, m, true), j));
    }
    (s..=e).filter(|&j| needed[j]).collect()
}

/// Checkpoint boundaries as segment ends: sorted, unique, within the network, and ending with
/// the last layer. Empty means no checkpointing.
pub(crate) fn segment_ends(n: usize, boundaries: &[usize]) -> Vec<usize> {
    if boundaries.is_empty() || n == 0 {
        return Vec::new();
    }
    let mut ends: Vec<usize> = boundaries.iter().copied().filter(|&b| b < n).collect();
    ends.push(n - 1);
    ends.sort_unstable();
    ends.dedup();
    ends
}

/// Every step of the training program (forward, end of forward, backward with the recompute
/// steps of `boundaries`' segments), then of the inference program.
pub(crate) fn steps(d: &[LayerDesc], boundaries: &[usize]) -> Vec<Step> {
    let n = d.len();
    let mut steps: Vec<Step> = (0..n).map(Step::Forward).collect();
    steps.push(Step::ForwardEnd);
    let ends = segment_ends(n, boundaries);
    for i in (0..n).rev() {
        if let Ok(k) = ends.binary_search(&i) {
            let start = if k == 0 { 0 } else { ends[k - 1] + 1 };
            steps.extend(recomputed(d, start..=i).into_iter().map(Step::Recompute));
        }
        steps.push(Step::Backward(i));
    }
    steps.extend((0..n).map(Step::Infer));
    steps.push(Step::InferEnd);
    steps
}

/// What `step` reads and writes.
pub(crate) fn uses(d: &[LayerDesc], step: Step) -> Vec<(TensorId, Use)> {
    let n = d.len();
    match step {
        Step::Forward(i) | Step::Recompute(i) => forward_uses(d, i, true),
        Step::Infer(i) => forward_uses(d, i, false),
        Step::Backward(i) => backward_uses(d, i),
        // The network's output is read after a training forward (gradient checks, custom
        // losses), the heads' outputs after an inference forward (decoding).
        Step::ForwardEnd => (n > 0).then(|| (t(n - 1, TensorKind::Output), Use::Read)).into_iter().collect(),
        Step::InferEnd => {
            let mut u: Vec<(TensorId, Use)> =
                (0..n).filter(|&i| matches!(d[i].op, Op::Yolo)).map(|i| (t(i, TensorKind::Output), Use::Read)).collect();
            // A classifier's prediction: the last layer that is not a [cost].
            if let Some(last) = (0..n).rev().find(|&i| !matches!(d[i].op, Op::Cost))
                && !matches!(d[last].op, Op::Yolo)
            {
                u.push((t(last, TensorKind::Output), Use::Read));
            }
            u
        }
    }
}
