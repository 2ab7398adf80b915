//! Read access to one layer's tensors on any backend, for diagnostics (`runner diverge`,
//! `crate::diverge`). Every read is a [`Backend::download`]: slow, and never part of a training
//! step.

use super::Network;
use super::layer::LayerOp;
use crate::backend::Backend;

/// When in an iteration a tensor holds what it is compared for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TensorPhase {
    /// A layer's output after the forward pass (of the last micro-batch).
    Forward,
    /// Gradients after the backward pass, before the update: w.r.t. the layer's output (of the
    /// last micro-batch) and w.r.t. its parameters (summed over the iteration's micro-batches).
    Backward,
    /// Parameters and BN running statistics after the optimiser update.
    Update,
}

impl TensorPhase {
    pub const ALL: [TensorPhase; 3] = [TensorPhase::Forward, TensorPhase::Backward, TensorPhase::Update];

    pub fn name(self) -> &'static str {
        match self {
            TensorPhase::Forward => "forward",
            TensorPhase::Backward => "backward",
            TensorPhase::Update => "update",
        }
    }
}

/// One tensor of a layer, downloaded.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerTensor {
    /// "output", "delta" (gradient w.r.t. the output), "weights", "weights grad", …
    pub name: &'static str,
    pub phase: TensorPhase,
    pub data: Vec<f32>,
}

impl<B: Backend> Network<B> {
    /// The tensors of layer `i` that `phase` is about, downloaded, in a fixed order.
    ///
    /// With SGD a parameter's "grad" buffer doubles as the momentum (Darknet's `*_updates`): read
    /// before the update (phase `Backward`) it is the step's summed gradient plus the carried
    /// momentum, i.e. exactly what the update consumes.
    ///
    /// Outputs and gradients hold the step's values only in a network built with
    /// `memory_reuse: false`: the memory plan otherwise lets later tensors take their place.
    ///
    /// Panics if `i` is not a layer index.
    pub fn layer_tensors(&self, i: usize, phase: TensorPhase) -> Vec<LayerTensor> {
        let b = &self.backend;
        let l = &self.layers[i];
        let t = |name: &'static str, buf: &B::Buf| LayerTensor { name, phase, data: b.download(buf) };
        let mut out = Vec::new();
        match phase {
            TensorPhase::Forward => out.push(t("output", &l.output)),
            TensorPhase::Backward => {
                out.push(t("delta", &l.delta));
                if let LayerOp::Conv(c) = &l.op {
                    out.push(t("weights grad", &c.weights.grad));
                    out.push(t("biases grad", &c.biases.grad));
                    if let Some(bn) = &c.bn {
                        out.push(t("scales grad", &bn.scales.grad));
                    }
                }
            }
            TensorPhase::Update => {
                if let LayerOp::Conv(c) = &l.op {
                    out.push(t("weights", &c.weights.value));
                    out.push(t("biases", &c.biases.value));
                    if let Some(bn) = &c.bn {
                        out.push(t("scales", &bn.scales.value));
                        out.push(t("rolling_mean", &bn.rolling_mean));
                        out.push(t("rolling_variance", &bn.rolling_variance));
                    }
                }
            }
        }
        out
    }
}

/// A deliberate perturbation of one layer on one backend, so a test can check that
/// `crate::diverge` names exactly that layer and phase. Never set outside tests.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Fault {
    pub layer: usize,
    /// `Forward`: added to the layer's output right after its forward op; `Backward`: added to
    /// its weights' gradient before the update. `Update` is not a fault site.
    pub phase: TensorPhase,
    /// Element of the tensor that gets `epsilon` added.
    pub index: usize,
    pub epsilon: f32,
}

impl<B: Backend> Network<B> {
    /// Applies `self.fault` if it targets layer `layer` in `phase` (a readback and an upload:
    /// test-only, so the cost does not matter).
    #[doc(hidden)]
    pub fn inject_fault(&self, layer: usize, phase: TensorPhase) {
        let Some(f) = self.fault.filter(|f| f.layer == layer && f.phase == phase) else { return };
        let buf = match (phase, &self.layers[layer].op) {
            (TensorPhase::Forward, _) => &self.layers[layer].output,
            (TensorPhase::Backward, LayerOp::Conv(c)) => &c.weights.grad,
            _ => return,
        };
        let mut v = self.backend.download(buf);
        if let Some(x) = v.get_mut(f.index) {
            *x += f.epsilon;
        }
        self.backend.upload(buf, &v);
    }
}
