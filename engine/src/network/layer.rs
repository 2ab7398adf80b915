//! Per-layer device state: the buffers a layer owns, allocated once when the network is built.

use crate::backend::Backend;
use crate::cfg::Chw;
use crate::shapes::{Activation, ConvShape, CostKind, PoolShape, ReorgShape, SoftmaxShape, UpsampleShape, YoloParams};

/// A trainable tensor with its accumulated gradient and optimiser state.
pub struct Param<B: Backend> {
    pub value: B::Buf,
    /// Summed gradient of the current iteration; for SGD it doubles as the momentum buffer
    /// (Darknet keeps `weight_updates` the same way).
    pub grad: B::Buf,
    /// Adam first/second moments (allocated only when Adam is used).
    pub adam: Option<(B::Buf, B::Buf)>,
    /// Weight decay applies (weights only; not biases or BN scales — darknet-spec §c).
    pub decay: bool,
    pub len: usize,
}

/// Batch-normalisation state of a convolutional layer.
pub struct BatchNorm<B: Backend> {
    pub scales: Param<B>,
    pub rolling_mean: B::Buf,
    pub rolling_variance: B::Buf,
    pub mean: B::Buf,
    pub variance: B::Buf,
    pub x_norm: B::Buf,
    /// The convolution's raw output (batch norm's input); needed only inside the forward.
    pub conv_out: B::Buf,
}

pub struct Conv<B: Backend> {
    pub shape: ConvShape,
    pub activation: Activation,
    pub weights: Param<B>,
    /// Conv bias, or BN beta when batch-normalised (Darknet stores both as `biases`).
    pub biases: Param<B>,
    pub bn: Option<BatchNorm<B>>,
    /// Pre-activation values, kept only for activations whose derivative needs them
    /// (mish, swish, hard-mish); otherwise the activation runs in place on `output`.
    pub pre_act: Option<B::Buf>,
    /// Mixed precision: the weights rounded to f16, what the GEMMs read (refreshed from
    /// `weights` before each step's first forward).
    pub weights_half: Option<B::Buf>,
}

impl<B: Backend> Conv<B> {
    /// The weights the GEMMs read: the f16 copy under mixed precision, else the weights.
    pub fn gemm_weights(&self) -> &B::Buf {
        self.weights_half.as_ref().unwrap_or(&self.weights.value)
    }
}

pub enum LayerOp<B: Backend> {
    Conv(Conv<B>),
    Route { inputs: Vec<usize>, groups: usize, group_id: usize },
    Maxpool(PoolShape),
    Avgpool,
    Upsample(UpsampleShape),
    Shortcut { from: Vec<usize>, activation: Activation, pre_act: Option<B::Buf> },
    Reorg(ReorgShape),
    ScaleChannels { from: usize },
    Dropout { probability: f32 },
    Yolo { params: YoloParams, head: usize },
    /// `head`: this loss layer's statistics record (see `Network::heads`).
    Softmax { shape: SoftmaxShape, head: usize },
    Cost { kind: CostKind, scale: f32, head: usize },
}

impl<B: Backend> LayerOp<B> {
    /// A loss layer: writes its gradient in the forward ([yolo], [softmax], [cost]).
    pub fn is_loss(&self) -> bool {
        matches!(self, LayerOp::Yolo { .. } | LayerOp::Softmax { .. } | LayerOp::Cost { .. })
    }
}

pub struct Layer<B: Backend> {
    pub op: LayerOp<B>,
    pub input: Chw,
    pub output_shape: Chw,
    /// `[batch][c][h][w]` output of the layer.
    pub output: B::Buf,
    /// Gradient of the loss w.r.t. `output` (accumulated by every consumer). For [yolo] it holds
    /// the head's own gradient w.r.t. its input, computed in the forward pass.
    pub delta: B::Buf,
}

impl<B: Backend> Layer<B> {
    pub fn kind_name(&self) -> &'static str {
        match &self.op {
            LayerOp::Conv(_) => "conv",
            LayerOp::Route { .. } => "route",
            LayerOp::Maxpool(_) => "max",
            LayerOp::Avgpool => "avg",
            LayerOp::Upsample(_) => "upsample",
            LayerOp::Shortcut { .. } => "shortcut",
            LayerOp::Reorg(_) => "reorg",
            LayerOp::ScaleChannels { .. } => "scale_channels",
            LayerOp::Dropout { .. } => "dropout",
            LayerOp::Yolo { .. } => "yolo",
            LayerOp::Softmax { .. } => "softmax",
            LayerOp::Cost { .. } => "cost",
        }
    }
}

/// Activations whose backward needs the pre-activation input.
pub fn needs_pre_activation(a: Activation) -> bool {
    matches!(a, Activation::Mish | Activation::Swish | Activation::HardMish)
}
