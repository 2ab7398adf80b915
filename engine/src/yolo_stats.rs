//! Layout of the small per-head statistics buffer written by `Backend::yolo_forward_backward`.
//! One `STATS_LEN`-float record per [yolo] head; the network downloads all heads' records in one
//! read per step.

/// Darknet's layer cost: iou part (iou_normalizer·Σ(1−IoU)/count, or Σ box delta² for mse) +
/// Σ delta² over objectness and class entries, summed over the batch (not divided).
pub const COST: usize = 0;
/// Σ delta² over objectness + class entries (Darknet's "class_loss" before ÷ batch).
pub const CLASS_LOSS: usize = 1;
/// Σ delta² over the 4 box entries (Darknet's printed "iou_loss" before ÷ batch).
pub const BOX_LOSS: usize = 2;
/// Σ IoU over matched truths (avg IoU = / COUNT).
pub const IOU_SUM: usize = 3;
/// Number of truth-anchor matches (Darknet's `count`).
pub const COUNT: usize = 4;
/// Matches with IoU > 0.5 and > 0.75 (recall numerators).
pub const RECALL50: usize = 5;
pub const RECALL75: usize = 6;
/// Σ (1 − IoU) (or 1 − GIoU for giou) over matches: Darknet's tot_iou_loss.
pub const IOU_LOSS_SUM: usize = 7;
/// Σ delta² over objectness entries only (component for records).
pub const OBJ_LOSS: usize = 8;
/// Σ delta² over class entries only.
pub const CLS_ONLY_LOSS: usize = 9;
/// Σ objectness over matched anchors (avg obj = / COUNT).
pub const OBJ_SUM: usize = 10;
/// Σ objectness over all anchors (avg anyobj = / (batch·n·w·h)).
pub const ANYOBJ_SUM: usize = 11;
/// Σ class probability of the truth class over matches.
pub const CLASS_PROB_SUM: usize = 12;
/// Number of truths in the batch (all heads see the same truths).
pub const TRUTHS: usize = 13;
pub const STATS_LEN: usize = 16;
