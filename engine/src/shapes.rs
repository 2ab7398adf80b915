//! Plain shape/parameter records passed to [`crate::backend::Backend`] ops.
//! They carry no data, only the numbers a kernel needs, so a GPU backend can copy them into a
//! uniform block as they are.

/// Darknet activation kinds (darknet-spec §b).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Activation {
    Linear,
    Logistic,
    Relu,
    Leaky,
    Tanh,
    Mish,
    Swish,
    HardMish,
}

impl Activation {
    pub const ALL: [Activation; 8] = [
        Activation::Linear,
        Activation::Logistic,
        Activation::Relu,
        Activation::Leaky,
        Activation::Tanh,
        Activation::Mish,
        Activation::Swish,
        Activation::HardMish,
    ];

    /// Parse Darknet's spelling.
    pub fn from_darknet(s: &str) -> Option<Activation> {
        Some(match s {
            "linear" => Activation::Linear,
            "logistic" => Activation::Logistic,
            "relu" => Activation::Relu,
            "leaky" => Activation::Leaky,
            "tanh" => Activation::Tanh,
            "mish" => Activation::Mish,
            "swish" => Activation::Swish,
            "hard_mish" => Activation::HardMish,
            _ => return None,
        })
    }

    pub fn darknet_name(self) -> &'static str {
        match self {
            Activation::Linear => "linear",
            Activation::Logistic => "logistic",
            Activation::Relu => "relu",
            Activation::Leaky => "leaky",
            Activation::Tanh => "tanh",
            Activation::Mish => "mish",
            Activation::Swish => "swish",
            Activation::HardMish => "hard_mish",
        }
    }

    /// Stable numeric code (used by WGSL kernels).
    pub fn code(self) -> u32 {
        self as u32
    }
}

/// A `[batch][channels][spatial]` tensor as per-channel ops see it (batch norm, bias, pooling
/// over the whole map).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelShape {
    pub batch: usize,
    pub channels: usize,
    /// Values per channel and image (height × width).
    pub spatial: usize,
}

impl ChannelShape {
    pub fn new(batch: usize, channels: usize, spatial: usize) -> ChannelShape {
        ChannelShape { batch, channels, spatial }
    }
    pub fn len(&self) -> usize {
        self.batch * self.channels * self.spatial
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A 2-D convolution over a batch. `pad` is the padding in pixels on each side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvShape {
    pub batch: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub filters: usize,
    pub size: usize,
    pub stride: usize,
    pub pad: usize,
    pub groups: usize,
    pub out_h: usize,
    pub out_w: usize,
}

impl ConvShape {
    /// Builds a shape with Darknet's output size `(w + 2p − size)/stride + 1`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(batch: usize, c: usize, h: usize, w: usize, filters: usize, size: usize, stride: usize, pad: usize, groups: usize) -> ConvShape {
        let out_h = (h + 2 * pad - size) / stride + 1;
        let out_w = (w + 2 * pad - size) / stride + 1;
        ConvShape { batch, c, h, w, filters, size, stride, pad, groups, out_h, out_w }
    }
    pub fn input_len(&self) -> usize {
        self.batch * self.c * self.h * self.w
    }
    pub fn output_len(&self) -> usize {
        self.batch * self.filters * self.out_h * self.out_w
    }
    pub fn weight_len(&self) -> usize {
        self.filters * (self.c / self.groups) * self.size * self.size
    }
}

/// Max pooling, Darknet style: `out = (w + padding − size)/stride + 1`, window origin
/// `−padding/2`, out-of-range values are −∞.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolShape {
    pub batch: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub size: usize,
    pub stride: usize,
    pub padding: usize,
    pub out_h: usize,
    pub out_w: usize,
}

impl PoolShape {
    #[allow(clippy::too_many_arguments)]
    pub fn new(batch: usize, c: usize, h: usize, w: usize, size: usize, stride: usize, padding: usize) -> PoolShape {
        let out_h = (h + padding - size) / stride + 1;
        let out_w = (w + padding - size) / stride + 1;
        PoolShape { batch, c, h, w, size, stride, padding, out_h, out_w }
    }
    pub fn input_len(&self) -> usize {
        self.batch * self.c * self.h * self.w
    }
    pub fn output_len(&self) -> usize {
        self.batch * self.c * self.out_h * self.out_w
    }
}

/// Nearest-neighbour upsample by `stride`, output multiplied by `scale`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct UpsampleShape {
    pub batch: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub stride: usize,
    pub scale: f32,
}

impl UpsampleShape {
    pub fn input_len(&self) -> usize {
        self.batch * self.c * self.h * self.w
    }
    pub fn output_len(&self) -> usize {
        self.input_len() * self.stride * self.stride
    }
}

/// Darknet's reorg (space-to-depth as `reorg_cpu(..., forward=0)` computes it):
/// input `[batch][c][h][w]`, output `[batch][c*stride²][h/stride][w/stride]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReorgShape {
    pub batch: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub stride: usize,
}

impl ReorgShape {
    pub fn len(&self) -> usize {
        self.batch * self.c * self.h * self.w
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `for b in 0..batch { dst[b*dst_stride + dst_offset ..][..len] (= or +=) src[b*src_stride + src_offset ..][..len] }`
/// Route forward copies a channel slice of each image; route backward accumulates it back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SliceCopy {
    pub batch: usize,
    pub len: usize,
    pub src_stride: usize,
    pub src_offset: usize,
    pub dst_stride: usize,
    pub dst_offset: usize,
    pub accumulate: bool,
}

/// How a batch-normalisation training forward sums its batch mean and variance.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BnStats {
    /// As accurately as the device allows (f64 on the CPU; f32 partial sums and a fixed tree on
    /// the GPU): every backend trains so.
    #[default]
    Accurate,
    /// Darknet's CPU build (`mean_cpu`, `variance_cpu`): one f32 running sum per channel, element
    /// by element in (image, position) order, each squared deviation added in double and rounded
    /// back to f32, then multiplied by the f32 reciprocal of N (resp. N − 1). Its rounding error
    /// grows with N: at 2·160·160 it moves yolov3-tiny's outputs by ~3e-5. Only for reproducing
    /// numbers of Darknet's CPU build (see `DarknetCpuQuirks`).
    DarknetCpu,
}

/// Which batch-normalisation backward a kernel computes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BnBackward {
    /// The exact derivative of the training forward (darknet-spec §0; every backend trains so).
    #[default]
    Exact,
    /// Darknet's CPU formula (`normalize_delta_cpu`): eps outside the root in the direct term,
    /// `Σ(dy·x_norm)/N` instead of `/(N−1)` in the variance term. Only for reproducing numbers of
    /// Darknet's CPU build (see `DarknetCpuQuirks`); it is not the derivative of the forward.
    DarknetCpu,
}

/// IoU-family box loss of a [yolo] head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IouLoss {
    Mse,
    Iou,
    Giou,
    Diou,
    Ciou,
}

impl IouLoss {
    pub fn from_darknet(s: &str) -> Option<IouLoss> {
        Some(match s {
            "mse" => IouLoss::Mse,
            "iou" => IouLoss::Iou,
            "giou" => IouLoss::Giou,
            "diou" => IouLoss::Diou,
            "ciou" => IouLoss::Ciou,
            _ => return None,
        })
    }
    pub fn darknet_name(self) -> &'static str {
        match self {
            IouLoss::Mse => "mse",
            IouLoss::Iou => "iou",
            IouLoss::Giou => "giou",
            IouLoss::Diou => "diou",
            IouLoss::Ciou => "ciou",
        }
    }
}

/// Everything a [yolo] head needs to compute its output, deltas and loss (darknet-spec §a).
#[derive(Clone, Debug, PartialEq)]
pub struct YoloParams {
    pub batch: usize,
    /// Grid width/height of this head.
    pub w: usize,
    pub h: usize,
    pub classes: usize,
    /// All anchors of the network as (w, h) pixel pairs (`num` of them).
    pub anchors: Vec<(f32, f32)>,
    /// Indices into `anchors` used by this head (len = Darknet's l.n).
    pub mask: Vec<usize>,
    pub net_w: usize,
    pub net_h: usize,
    /// Truth slots per image in the truth buffer.
    pub max_boxes: usize,
    pub scale_x_y: f32,
    pub ignore_thresh: f32,
    pub truth_thresh: f32,
    pub iou_thresh: f32,
    /// IoU kind used to compare anchors with `iou_thresh` (Iou, Giou, Diou or Ciou).
    pub iou_thresh_kind: IouLoss,
    pub iou_normalizer: f32,
    pub obj_normalizer: f32,
    pub cls_normalizer: f32,
    pub iou_loss: IouLoss,
    pub label_smooth_eps: f32,
    pub focal_loss: bool,
    pub max_delta: f32,
    pub new_coords: bool,
    pub objectness_smooth: bool,
}

/// Elementwise ops of one input (`Backend::unary_forward`/`unary_backward`). The network does not
/// use them itself; they are building blocks for checks and new layers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Unary {
    /// y = exp(x); dx += g·y.
    Exp,
    /// y = ln(x); dx += g/x.
    Log,
    /// y = x^p; dx += g·p·x^(p−1).
    Pow(f32),
}

/// Elementwise ops of two inputs (`Backend::binary_forward`/`binary_backward`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binary {
    /// y = a + b; da += g, db += g.
    Add,
    /// y = a·b; da += g·b, db += g·a.
    Mul,
    /// y = a/b; da += g/b, db += −g·a/b².
    Div,
}

impl Unary {
    /// The kernel (and CPU op) names of the forward and backward.
    pub fn names(self) -> (&'static str, &'static str) {
        match self {
            Unary::Exp => ("exp_forward", "exp_backward"),
            Unary::Log => ("log_forward", "log_backward"),
            Unary::Pow(_) => ("pow_forward", "pow_backward"),
        }
    }
}

impl Binary {
    /// The kernel (and CPU op) names of the forward and backward.
    pub fn names(self) -> (&'static str, &'static str) {
        match self {
            Binary::Add => ("add_forward", "add_backward"),
            Binary::Mul => ("mul_forward", "mul_backward"),
            Binary::Div => ("div_forward", "div_backward"),
        }
    }
}

/// Darknet's defaults for every [yolo] key a cfg leaves unset, on an empty head (no anchors, a
/// 0×0 grid): fill in the sizes with struct-update syntax.
impl Default for YoloParams {
    fn default() -> Self {
        YoloParams {
            batch: 0,
            w: 0,
            h: 0,
            classes: 0,
            anchors: Vec::new(),
            mask: Vec::new(),
            net_w: 0,
            net_h: 0,
            max_boxes: 0,
            scale_x_y: 1.0,
            ignore_thresh: 0.5,
            truth_thresh: 1.0,
            iou_thresh: 1.0,
            iou_thresh_kind: IouLoss::Iou,
            iou_normalizer: 0.75,
            obj_normalizer: 1.0,
            cls_normalizer: 1.0,
            iou_loss: IouLoss::Mse,
            label_smooth_eps: 0.0,
            focal_loss: false,
            max_delta: f32::MAX,
            new_coords: false,
            objectness_smooth: false,
        }
    }
}

impl YoloParams {
    /// Number of floats of this head's input/output for the whole batch.
    pub fn len(&self) -> usize {
        self.batch * self.mask.len() * (5 + self.classes) * self.w * self.h
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Darknet's mask value in truth vectors: an element whose truth equals it gets no gradient and
/// no cost (`[cost] type=masked`; the softmax cross-entropy skips it too).
pub const SECRET_NUM: f32 = -1234.0;

/// Smallest probability the softmax cross-entropy takes the logarithm of, so an underflowed p
/// gives a large finite cost instead of Inf (where Darknet would print inf).
pub const SOFTMAX_MIN_PROB: f32 = 1e-30;

/// `[softmax]` over a batch: each image's `inputs` values are `groups` consecutive groups of
/// `inputs / groups` values, each normalised on its own at `temperature`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SoftmaxShape {
    pub batch: usize,
    pub inputs: usize,
    pub groups: usize,
    pub temperature: f32,
}

impl SoftmaxShape {
    /// Values per group.
    pub fn group_len(&self) -> usize {
        self.inputs / self.groups.max(1)
    }
    /// Groups over the whole batch (one softmax each).
    pub fn rows(&self) -> usize {
        self.batch * self.groups
    }
    pub fn len(&self) -> usize {
        self.batch * self.inputs
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `[cost] type=`: the per-element error of the input against the truth (d = t − x).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CostKind {
    /// error d², Darknet delta d.
    Sse,
    /// As `Sse`, but elements whose truth is [`SECRET_NUM`] count nothing.
    Masked,
    /// Smooth L1: d² and delta d where |d| < 1, else 2|d| − 1 and delta sign(d).
    Smooth,
}

impl CostKind {
    pub fn darknet_name(self) -> &'static str {
        match self {
            CostKind::Sse => "sse",
            CostKind::Masked => "masked",
            CostKind::Smooth => "smooth",
        }
    }
    /// Code shared with cost.wgsl (through the generated preamble).
    pub fn code(self) -> u32 {
        match self {
            CostKind::Sse => 0,
            CostKind::Masked => 1,
            CostKind::Smooth => 2,
        }
    }
}
