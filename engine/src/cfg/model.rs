//! The parsed form of a Darknet `.cfg`: what every section means, with Darknet's defaults
//! already applied and route/shortcut indices resolved to absolute layer indices.

use crate::shapes::{Activation, CostKind, IouLoss};

/// Where something came from in a cfg file (1-based line).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Origin {
    pub file: String,
    pub line: usize,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// Learning-rate policy of `[net]` (darknet-spec §c).
#[derive(Clone, Debug, PartialEq)]
pub enum Policy {
    Constant,
    Step { step: u64, scale: f32 },
    Steps { steps: Vec<u64>, scales: Vec<f32> },
    Exp { gamma: f32 },
    Poly,
    Sig { gamma: f32, step: u64 },
    Random,
    Sgdr { cycle: u64, mult: u32 },
}

/// `[net]` / `[network]`.
#[derive(Clone, Debug, PartialEq)]
pub struct NetConfig {
    pub batch: usize,
    pub subdivisions: usize,
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    pub momentum: f32,
    pub decay: f32,
    pub learning_rate: f32,
    pub learning_rate_min: f32,
    pub burn_in: u64,
    pub power: f32,
    pub max_batches: u64,
    pub policy: Policy,
    pub adam: bool,
    pub b1: f32,
    pub b2: f32,
    pub eps: f32,
    // augmentation (darknet-spec §d)
    pub angle: f32,
    pub saturation: f32,
    pub exposure: f32,
    pub hue: f32,
    pub flip: bool,
    pub mosaic: bool,
    /// Clip mosaic boxes to their own tile (Darknet `mosaic_bound`).
    pub mosaic_bound: bool,
    pub letter_box: bool,
    pub mixup: bool,
    /// 0 off; 1 blur the background outside the boxes; N > 1 Gaussian kernel of size ~N.
    pub blur: u32,
    /// Standard deviation of the additive pixel noise in 8-bit units (0 off).
    pub gaussian_noise: u32,
    pub origin: Origin,
}

impl NetConfig {
    /// Images per forward/backward pass (Darknet's `net->batch`): `batch / subdivisions`. The
    /// one place this split is computed; the parser and `set_batch` keep `batch` divisible.
    pub fn mini_batch(&self) -> usize {
        self.batch / self.subdivisions.max(1)
    }
}

/// `[convolutional]`.
#[derive(Clone, Debug, PartialEq)]
pub struct ConvCfg {
    pub filters: usize,
    pub size: usize,
    pub stride: usize,
    /// Padding in pixels on each side (`pad=1` → size/2, else `padding=`).
    pub padding: usize,
    pub groups: usize,
    pub batch_normalize: bool,
    pub activation: Activation,
}

/// `[route]`: absolute indices of the input layers, and the channel group taken from each.
#[derive(Clone, Debug, PartialEq)]
pub struct RouteCfg {
    pub layers: Vec<usize>,
    pub groups: usize,
    pub group_id: usize,
}

/// `[maxpool]` (Darknet defaults: size = stride, padding = size − 1).
#[derive(Clone, Debug, PartialEq)]
pub struct MaxpoolCfg {
    pub size: usize,
    pub stride: usize,
    pub padding: usize,
}

/// `[yolo]` with Darknet's parse_yolo_section defaults (not yolov4-tiny's).
#[derive(Clone, Debug, PartialEq)]
pub struct YoloCfg {
    pub classes: usize,
    pub mask: Vec<usize>,
    /// All anchors (w, h) in pixels; `num` = anchors.len().
    pub anchors: Vec<(f32, f32)>,
    pub jitter: f32,
    pub resize: f32,
    pub scale_x_y: f32,
    pub cls_normalizer: f32,
    pub iou_normalizer: f32,
    pub obj_normalizer: f32,
    pub iou_loss: IouLoss,
    pub iou_thresh_kind: IouLoss,
    pub ignore_thresh: f32,
    pub truth_thresh: f32,
    pub iou_thresh: f32,
    pub random: f32,
    pub label_smooth_eps: f32,
    pub focal_loss: bool,
    pub max_delta: f32,
    pub new_coords: bool,
    pub objectness_smooth: bool,
    pub max_boxes: usize,
    pub nms_kind: NmsKind,
    pub beta_nms: f32,
    pub counters_per_class: Vec<f32>,
}

/// NMS variant of a [yolo] head (used by evaluation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NmsKind {
    /// Darknet's default: IoU-based `do_nms_sort`.
    Default,
    /// `greedynms`: DIoU with exponent 0.6.
    Greedy,
    /// `diounms`: DIoU with exponent `beta_nms`.
    Diou,
}

/// One section after `[net]`.
#[derive(Clone, Debug, PartialEq)]
pub enum LayerKind {
    Convolutional(ConvCfg),
    Route(RouteCfg),
    Maxpool(MaxpoolCfg),
    /// Global average pooling.
    Avgpool,
    Upsample { stride: usize, scale: f32 },
    /// `from` holds absolute indices; the layer adds its input (the previous layer) and these.
    Shortcut { from: Vec<usize>, activation: Activation },
    Reorg { stride: usize },
    /// Darknet's scale_channels: the previous layer holds one value per channel (C×1×1); each
    /// channel of layer `from` (C×H×W) is multiplied by it. Output shape = layer `from`'s.
    ScaleChannels { from: usize },
    Dropout { probability: f32 },
    Yolo(YoloCfg),
    /// Softmax over each of `groups` equal groups of the input's values, at `temperature`; in
    /// training also Darknet's cross-entropy loss against the image's class vector.
    Softmax { groups: usize, temperature: f32 },
    /// A loss on the previous layer's output against the class vector; its backward adds
    /// `scale` × its gradient to the previous layer's.
    Cost { kind: CostKind, scale: f32 },
}

impl LayerKind {
    /// Darknet's name of the section.
    pub fn name(&self) -> &'static str {
        match self {
            LayerKind::Convolutional(_) => "conv",
            LayerKind::Route(_) => "route",
            LayerKind::Maxpool(_) => "max",
            LayerKind::Avgpool => "avg",
            LayerKind::Upsample { .. } => "upsample",
            LayerKind::Shortcut { .. } => "shortcut",
            LayerKind::Reorg { .. } => "reorg",
            LayerKind::ScaleChannels { .. } => "scale_channels",
            LayerKind::Dropout { .. } => "dropout",
            LayerKind::Yolo(_) => "yolo",
            LayerKind::Softmax { .. } => "softmax",
            LayerKind::Cost { .. } => "cost",
        }
    }
}

impl LayerKind {
    /// A loss layer of a classifier (its truth is the image's class vector, not boxes).
    pub fn is_classifier_loss(&self) -> bool {
        matches!(self, LayerKind::Softmax { .. } | LayerKind::Cost { .. })
    }
}

/// A layer as written in the cfg.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerCfg {
    pub kind: LayerKind,
    /// The line of the `[section]` header.
    pub origin: Origin,
}

/// (channels, height, width) of one image's tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chw {
    pub c: usize,
    pub h: usize,
    pub w: usize,
}

impl Chw {
    pub fn len(&self) -> usize {
        self.c * self.h * self.w
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Input and output shape of a layer (per image), from shape inference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerShape {
    pub input: Chw,
    pub output: Chw,
}

/// A whole parsed cfg.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelCfg {
    /// The file it was read from (or the built-in name).
    pub source: String,
    pub net: NetConfig,
    pub layers: Vec<LayerCfg>,
}

impl ModelCfg {
    /// A classifier: its loss layers are [softmax]/[cost] (and it has no [yolo]).
    pub fn is_classifier(&self) -> bool {
        self.layers.iter().any(|l| l.kind.is_classifier_loss()) && !self.layers.iter().any(|l| matches!(l.kind, LayerKind::Yolo(_)))
    }
}
