//! The layer graph, written once and generic over [`Backend`].
//!
//! Building a network allocates every buffer it will ever use (parameters, gradients, optimiser
//! state, activations, deltas) from the shapes of the cfg: nothing is allocated inside a step.
//! Activations and deltas share arenas by the activation memory plan ([`plan`]). A training pass
//! records forward, loss, backward and update on the backend without reading anything back; the
//! caller downloads the small statistics buffer once.

pub mod build;
pub mod classify;
mod fits;
pub mod layer;
mod params;
pub mod predict;
pub mod pass;
pub mod plan;
pub mod tensors;

use crate::backend::Backend;
use crate::cfg::{CfgError, LayerShape, ModelCfg};
use crate::yolo_stats::STATS_LEN;
pub use layer::{Layer, LayerOp, Param};
pub use pass::Update;
pub use tensors::{LayerTensor, TensorPhase};
pub use build::{BuildOptions, MemoryPlan, Precision, STATE_ARENA_FLOATS};
pub use fits::BufferLimits;
pub use plan::{ActivationPlan, Checkpointing};

/// Errors building or running a network.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error(transparent)]
    Cfg(#[from] CfgError),
    #[error("batch {batch} is not divisible by subdivisions {subdivisions}")]
    Subdivisions { batch: usize, subdivisions: usize },
    #[error("input has {got} floats, the network expects {expected} ({what})")]
    InputSize { got: usize, expected: usize, what: &'static str },
    #[error("parameter mismatch for layer {layer}: {what}")]
    Params { layer: usize, what: String },
    /// A buffer larger than the backend holds, or a tensor (or one image of it) larger than it
    /// binds at once (a GPU adapter's limits; see `MemoryPlan::check_fits`).
    #[error(
        "{backend}: {what} needs {} (batch {batch}, subdivisions {subdivisions}) but the device {} {}; {advice}",
        fits::size_text(*bytes), if *binding { "binds at most" } else { "holds at most" }, fits::size_text(*limit)
    )]
    TooLarge {
        backend: String,
        /// The buffer or tensor, and how it is bound.
        what: String,
        bytes: u64,
        /// Over the binding limit (else the buffer limit).
        binding: bool,
        limit: u64,
        batch: usize,
        subdivisions: usize,
        advice: String,
    },
    #[error("checkpointing names layer {layer}, but the network has {layers} layers (0..{layers})")]
    Checkpoint { layer: usize, layers: usize },
    #[error("the network needs more than the memory budget of {} at {mb} images per pass; the smallest plan (with checkpointing = \"auto\") needs {}: raise memory_budget to at least that, or lower the batch per pass (raise subdivisions)", plan::bytes_text(*budget), plan::bytes_text(*smallest))]
    MemoryBudget { budget: u64, smallest: u64, mb: usize },
}

/// What a [`Network`] computes with: training (batch statistics, dropout) or inference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Train,
    Infer,
}

/// A network instantiated on one backend for one mini-batch size.
pub struct Network<B: Backend> {
    pub backend: B,
    pub cfg: ModelCfg,
    pub shapes: Vec<LayerShape>,
    /// Images per forward/backward pass (Darknet's `net->batch` = batch / subdivisions).
    pub mini_batch: usize,
    pub layers: Vec<Layer<B>>,
    /// Network input `[mini_batch][c][h][w]`.
    pub input: B::Buf,
    /// Truth boxes `[mini_batch][max_boxes][5]`.
    pub truths: B::Buf,
    /// A classifier's truth: each image's class vector `[mini_batch][label_len]` (one-hot at the
    /// class of the image's first truth box), made from the boxes by [`Network::set_input`].
    pub labels: B::Buf,
    /// Floats per image of `labels` (the classifier loss layers' input; 0 for a detector).
    pub label_len: usize,
    pub max_boxes: usize,
    /// Per-pass statistics `[subdivisions][heads][STATS_LEN]`, then one non-finite flag per state
    /// arena (from `health_slot`), downloaded once per step.
    pub stats: B::Buf,
    pub subdivisions: usize,
    /// Indices of the [yolo] layers, in order.
    pub heads: Vec<usize>,
    /// When every activation tensor lives and where (the views in `layers` point into
    /// `activation_arenas` as it says).
    pub plan: ActivationPlan,
    pub(crate) activation_arenas: Vec<B::Buf>,
    /// A view per tensor of `plan`, in its order.
    pub(crate) activation_views: Vec<B::Buf>,
    /// Where recomputed batch norms write their running statistics (a throwaway: the forward
    /// already updated the real ones once).
    pub(crate) recompute_stats: B::Buf,
    /// Fill dead tensors with NaN ([`BuildOptions::poison_dead`]).
    pub(crate) poison_dead: bool,
    pub(crate) build_options: BuildOptions,
    /// The arenas holding every parameter, gradient/momentum, Adam moment and BN running
    /// statistic (the views in `layers` point into them): the state a checkpoint saves.
    pub state_arenas: Vec<B::Buf>,
    /// With loss scaling ([`BuildOptions::loss_scaling`]): a copy of each state arena taken at
    /// the start of a step, written back on the device when the step overflows. Empty otherwise.
    pub shadow_arenas: Vec<B::Buf>,
    /// With loss scaling: one float, nonzero when any per-arena non-finite flag of the step is.
    pub overflow_flag: Option<B::Buf>,
    /// Index in `stats` of the first of the per-arena non-finite flags (one per arena, after the
    /// per-pass head statistics).
    pub health_slot: usize,
    /// Seed for dropout masks (combined with iteration and layer index).
    pub seed: u64,
    /// Reproduce Darknet-CPU's training bugs. All off by default (this project's semantics,
    /// darknet-spec §0); only for fidelity tests against fixtures made with Darknet's CPU build.
    /// Set through [`Network::set_darknet_cpu`] (one quirk changes the memory plan).
    pub(crate) darknet_cpu: DarknetCpuQuirks,
    /// Test-only perturbation of one layer ([`tensors::Fault`]); `None` in every real run.
    #[doc(hidden)]
    pub fault: Option<tensors::Fault>,
}

/// Where Darknet's CPU build (AlexeyAB and hank-ai alike) departs from the gradient of the loss it
/// prints, and from accurate BN statistics. Found by comparing per-layer updates and outputs with
/// Darknet's on the fixtures (`engine/tests/darknet_fixture.rs`,
/// `engine/tests/darknet_fixture_yolov3_tiny.rs`); Darknet's GPU/cuDNN path has none of them
/// except `bn_backward` (its own normalize_delta kernel). This project never trains with them: they
/// exist so a test can show that they, and nothing else, separate our numbers from Darknet-CPU's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DarknetCpuQuirks {
    /// BN beta (a conv layer's biases under batch_normalize) is never updated: the CPU backward
    /// never computes its gradient (darknet-spec §0).
    pub frozen_bn_beta: bool,
    /// A conv layer's backward writes the gradient of its input instead of adding to it
    /// (`col2im_cpu_ext` zeroes its output first), so gradient that a later [route] already sent
    /// to that input layer is lost. In yolov4-tiny this drops the second head's gradient into
    /// the backbone (layer 27) and the route-fed gradients of layers 4, 12 and 20.
    pub conv_overwrites_input_grad: bool,
    /// Only layers with a `train` flag (convolutional, maxpool, shortcut) get their gradient
    /// buffer zeroed before a pass; route, upsample, … keep adding the previous iterations'.
    pub stale_layer_grads: bool,
    /// The BN backward formula of `normalize_delta_cpu` ([`crate::shapes::BnBackward::DarknetCpu`]).
    pub bn_backward: bool,
    /// BN's batch mean and variance summed in f32, one element at a time, as `mean_cpu` and
    /// `variance_cpu` do ([`crate::shapes::BnStats::DarknetCpu`]). Not a formula but rounding:
    /// over N = 2·160·160 values it moves yolov3-tiny's outputs by ~3e-5 and its MSE box loss by
    /// up to 4e-5 at iteration 1 (`engine/tests/darknet_fixture_yolov3_tiny.rs`).
    pub bn_f32_stats: bool,
}

impl DarknetCpuQuirks {
    /// Every quirk: what Darknet's CPU build computes.
    pub const ALL: DarknetCpuQuirks = DarknetCpuQuirks {
        frozen_bn_beta: true,
        conv_overwrites_input_grad: true,
        stale_layer_grads: true,
        bn_backward: true,
        bn_f32_stats: true,
    };
}

impl<B: Backend> Network<B> {
    /// Number of floats of one head's stats record block for one pass.
    pub fn stats_len_per_pass(&self) -> usize {
        self.heads.len() * STATS_LEN
    }

    /// Every trainable parameter with its decay flag (weights first, then biases, then BN
    /// scales, per conv layer in order).
    pub fn params(&self) -> Vec<&Param<B>> {
        let mut out = Vec::new();
        for l in &self.layers {
            if let LayerOp::Conv(c) = &l.op {
                out.push(&c.weights);
                out.push(&c.biases);
                if let Some(bn) = &c.bn {
                    out.push(&bn.scales);
                }
            }
        }
        out
    }

    /// The Darknet-CPU quirks in effect.
    pub fn darknet_cpu(&self) -> DarknetCpuQuirks {
        self.darknet_cpu
    }

    /// Reproduce Darknet-CPU's training bugs (tests only). `stale_layer_grads` keeps gradients
    /// across passes, so it re-plans the activations (their values are lost: call before
    /// training).
    pub fn set_darknet_cpu(&mut self, quirks: DarknetCpuQuirks) -> Result<(), NetworkError> {
        if quirks.stale_layer_grads != self.plan.options.stale_deltas {
            self.replan(quirks.stale_layer_grads)?;
        }
        self.darknet_cpu = quirks;
        Ok(())
    }

    /// Bytes held on the backend (allocated, peak).
    pub fn memory_bytes(&self) -> (u64, u64) {
        self.backend.memory_bytes()
    }

    /// Floats of one image and of one image's truths (`max_boxes` boxes of 5).
    pub fn per_image(&self) -> (usize, usize) {
        let c = &self.cfg.net;
        (c.channels * c.height * c.width, self.max_boxes * 5)
    }

    /// Upload one mini-batch: images `[mini_batch][c][h][w]` and truths `[mini_batch][max_boxes][5]`.
    pub fn set_input(&self, images: &[f32], truths: &[f32]) -> Result<(), NetworkError> {
        let expected = self.backend.len(&self.input);
        if images.len() != expected {
            return Err(NetworkError::InputSize { got: images.len(), expected, what: "images" });
        }
        if self.mixed() {
            // Mixed precision's input is stored in f16 (a GPU moves half the bytes).
            self.backend.upload_f16(&self.input, images);
        } else {
            self.backend.upload(&self.input, images);
        }
        let expected = self.backend.len(&self.truths);
        if truths.len() != expected {
            return Err(NetworkError::InputSize { got: truths.len(), expected, what: "truths" });
        }
        self.backend.upload(&self.truths, truths);
        if self.label_len > 0 {
            self.backend.upload(&self.labels, &class_vectors(truths, self.max_boxes, self.label_len));
        }
        Ok(())
    }
}

/// One-hot class vectors (`label_len` floats per image) from truth boxes
/// (`[image][max_boxes][x, y, w, h, class]`): the class of each image's first box; an image
/// without a box, or whose class is out of range, gets all zeros (no class to learn).
pub fn class_vectors(truths: &[f32], max_boxes: usize, label_len: usize) -> Vec<f32> {
    let per = max_boxes * 5;
    let images = truths.len() / per.max(1);
    let mut out = vec![0.0; images * label_len];
    for (b, t) in truths.chunks_exact(per.max(1)).enumerate() {
        if per == 0 || t[0] == 0.0 {
            continue;
        }
        let class = t[4];
        if class >= 0.0 && (class as usize) < label_len {
            out[b * label_len + class as usize] = 1.0;
        }
    }
    out
}
