//! Mean average precision exactly as `darknet detector map` computes it (darknet-spec §e).
//!
//! Feed images one by one with [`MapAccumulator::add_image`] (detections after NMS), then ask for
//! a [`MapReport`] at any IoU threshold / recall-point scheme / confidence threshold.
//!
//! Candidates: every (detection, class) with prob > 0. Each is matched to the ground truth of the
//! same class and image with the largest IoU > iou_thresh (strict; the first such GT wins a tie).
//! All candidates are sorted by prob descending; walking them, a candidate is a TP if its GT was
//! not taken yet, else an FP. Darknet sorts with qsort (unstable); we sort stably, so equal scores
//! keep the order images, detections and classes were added in.
//!
//! Statistics at the confidence threshold (TP, FP, FN, P, R, F1, average IoU) count the candidates
//! with prob > conf_thresh in the same walk. Darknet decides those per image in its post-NMS array
//! order instead; for one class that is the same order, for several classes Darknet's result depends
//! on an unstable sort and is not reproducible, so we use the sorted walk. "average IoU" is Darknet's:
//! the sum of the TPs' IoUs divided by TP + FP. Where Darknet divides 0 by 0 (precision with no
//! detections) we report 0.

use super::{Detection, GroundTruth, box_iou};

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(
        "image {image}: ground truth {index} has class {class}, but the model has {classes} classes"
    )]
    TruthClass {
        image: usize,
        index: usize,
        class: usize,
        classes: usize,
    },
    #[error("image {image}: detection {index} has {found} class probabilities, expected {classes}")]
    ProbLen {
        image: usize,
        index: usize,
        found: usize,
        classes: usize,
    },
}

struct Candidate {
    prob: f32,
    class: u32,
    /// Range in `MapAccumulator::overlaps`: the same-class GTs of its image it overlaps.
    start: u32,
    end: u32,
}

/// Collects candidates and ground truth over a validation set.
pub struct MapAccumulator {
    classes: usize,
    images: usize,
    candidates: Vec<Candidate>,
    /// (global truth index, IoU > 0), in truth order within each image.
    overlaps: Vec<(u32, f32)>,
    truths_per_class: Vec<usize>,
    truths: usize,
}

/// One point of a class's precision/recall curve (one per candidate of that class, by rank).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PrPoint {
    pub prob: f32,
    pub tp: usize,
    pub fp: usize,
    pub precision: f64,
    pub recall: f64,
}

/// Per-class results.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassRow {
    pub class: usize,
    /// Ground-truth objects of this class.
    pub truths: usize,
    /// Candidates (detections with prob > 0) of this class.
    pub detections: usize,
    /// Average precision in [0, 1].
    pub ap: f64,
    // At the confidence threshold:
    pub tp: usize,
    pub fp: usize,
    pub fn_: usize,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub avg_iou: f64,
}

/// What `darknet detector map` prints, for one IoU threshold and recall-point scheme.
#[derive(Clone, Debug, PartialEq)]
pub struct MapReport {
    /// 0 = area under the precision envelope; N = N recall points (11 VOC2007, 101 COCO).
    pub points: usize,
    pub iou_thresh: f32,
    pub conf_thresh: f32,
    pub images: usize,
    pub truths: usize,
    pub detections: usize,
    pub classes: Vec<ClassRow>,
    /// Mean AP over all classes (classes without ground truth count 0).
    pub map: f64,
    pub tp: usize,
    pub fp: usize,
    pub fn_: usize,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub avg_iou: f64,
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}

fn f1(p: f64, r: f64) -> f64 {
    ratio(2.0 * p * r, p + r)
}

impl MapAccumulator {
    pub fn new(classes: usize) -> Self {
        MapAccumulator {
            classes,
            images: 0,
            candidates: Vec::new(),
            overlaps: Vec::new(),
            truths_per_class: vec![0; classes],
            truths: 0,
        }
    }

    pub fn classes(&self) -> usize {
        self.classes
    }
    pub fn images(&self) -> usize {
        self.images
    }

    /// Add one image: its detections (after NMS) and its labelled objects.
    pub fn add_image(
        &mut self,
        dets: &[Detection],
        truths: &[GroundTruth],
    ) -> Result<(), EvalError> {
        let image = self.images;
        for (index, t) in truths.iter().enumerate() {
            if t.class >= self.classes {
                return Err(EvalError::TruthClass {
                    image,
                    index,
                    class: t.class,
                    classes: self.classes,
                });
            }
        }
        for (index, d) in dets.iter().enumerate() {
            if d.prob.len() != self.classes {
                let found = d.prob.len();
                return Err(EvalError::ProbLen {
                    image,
                    index,
                    found,
                    classes: self.classes,
                });
            }
        }
        let base = self.truths;
        for d in dets {
            for (class, &prob) in d.prob.iter().enumerate() {
                if prob <= 0.0 {
                    continue;
                }
                let start = self.overlaps.len() as u32;
                for (j, t) in truths.iter().enumerate() {
                    if t.class != class {
                        continue;
                    }
                    let iou = box_iou(&d.bbox, &t.bbox);
                    if iou > 0.0 {
                        self.overlaps.push(((base + j) as u32, iou));
                    }
                }
                let end = self.overlaps.len() as u32;
                self.candidates.push(Candidate {
                    prob,
                    class: class as u32,
                    start,
                    end,
                });
            }
        }
        for t in truths {
            self.truths_per_class[t.class] += 1;
        }
        self.truths += truths.len();
        self.images += 1;
        Ok(())
    }

    /// Best GT (first largest IoU > thresh) of a candidate.
    fn best_truth(&self, c: &Candidate, iou_thresh: f32) -> Option<(u32, f32)> {
        let mut best: Option<(u32, f32)> = None;
        for &(t, iou) in &self.overlaps[c.start as usize..c.end as usize] {
            if iou > iou_thresh && best.is_none_or(|(_, b)| iou > b) {
                best = Some((t, iou));
            }
        }
        best
    }

    /// The ranked walk: for each candidate in prob-descending order, (candidate, Some(iou) if TP).
    fn walk(&self, iou_thresh: f32) -> Vec<(usize, Option<f32>)> {
        let mut order: Vec<usize> = (0..self.candidates.len()).collect();
        order.sort_by(|&a, &b| self.candidates[b].prob.total_cmp(&self.candidates[a].prob));
        let mut taken = vec![false; self.truths];
        order
            .into_iter()
            .map(|i| {
                let tp = match self.best_truth(&self.candidates[i], iou_thresh) {
                    Some((t, iou)) if !taken[t as usize] => {
                        taken[t as usize] = true;
                        Some(iou)
                    }
                    _ => None,
                };
                (i, tp)
            })
            .collect()
    }

    /// Precision/recall after each candidate of every class, in rank order.
    pub fn pr_curves(&self, iou_thresh: f32) -> Vec<Vec<PrPoint>> {
        self.curves(&self.walk(iou_thresh))
    }

    fn curves(&self, walk: &[(usize, Option<f32>)]) -> Vec<Vec<PrPoint>> {
        let mut curves = vec![Vec::new(); self.classes];
        let mut counts = vec![(0usize, 0usize); self.classes];
        for &(i, hit) in walk {
            let c = &self.candidates[i];
            let k = c.class as usize;
            let n = &mut counts[k];
            if hit.is_some() {
                n.0 += 1
            } else {
                n.1 += 1
            }
            let (tp, fp) = *n;
            curves[k].push(PrPoint {
                prob: c.prob,
                tp,
                fp,
                precision: ratio(tp as f64, (tp + fp) as f64),
                recall: ratio(tp as f64, self.truths_per_class[k] as f64),
            });
        }
        curves
    }

    /// Everything `darknet detector map -points {points} -iou_thresh {iou_thresh} -thresh {conf_thresh}` prints.
    pub fn summary(&self, points: usize, iou_thresh: f32, conf_thresh: f32) -> MapReport {
        let k = self.classes;
        let (mut tp, mut fp, mut iou_sum) = (vec![0usize; k], vec![0usize; k], vec![0f64; k]);
        let walk = self.walk(iou_thresh);
        let curves = self.curves(&walk);
        for &(i, hit) in &walk {
            let c = &self.candidates[i];
            let cl = c.class as usize;
            if c.prob > conf_thresh {
                match hit {
                    Some(iou) => {
                        tp[cl] += 1;
                        iou_sum[cl] += iou as f64;
                    }
                    None => fp[cl] += 1,
                }
            }
        }
        let classes: Vec<ClassRow> = (0..k)
            .map(|cl| {
                let truths = self.truths_per_class[cl];
                let precision = ratio(tp[cl] as f64, (tp[cl] + fp[cl]) as f64);
                let recall = ratio(tp[cl] as f64, truths as f64);
                ClassRow {
                    class: cl,
                    truths,
                    detections: curves[cl].len(),
                    ap: average_precision(&curves[cl], points),
                    tp: tp[cl],
                    fp: fp[cl],
                    fn_: truths - tp[cl],
                    precision,
                    recall,
                    f1: f1(precision, recall),
                    avg_iou: ratio(iou_sum[cl], (tp[cl] + fp[cl]) as f64),
                }
            })
            .collect();
        let (ttp, tfp): (usize, usize) = (tp.iter().sum(), fp.iter().sum());
        let precision = ratio(ttp as f64, (ttp + tfp) as f64);
        let recall = ratio(ttp as f64, self.truths as f64);
        MapReport {
            points,
            iou_thresh,
            conf_thresh,
            images: self.images,
            truths: self.truths,
            detections: self.candidates.len(),
            map: ratio(classes.iter().map(|r| r.ap).sum(), k as f64),
            classes,
            tp: ttp,
            fp: tfp,
            fn_: self.truths - ttp,
            precision,
            recall,
            f1: f1(precision, recall),
            avg_iou: ratio(iou_sum.iter().sum(), (ttp + tfp) as f64),
        }
    }

    /// COCO-style mAP@[.5:.95]: mean of mAP over IoU thresholds 0.50, 0.55, …, 0.95.
    pub fn map_coco(&self, points: usize) -> f64 {
        let thresholds = (0..10).map(|i| (50 + 5 * i) as f32 / 100.0);
        thresholds
            .map(|t| self.summary(points, t, 0.25).map)
            .sum::<f64>()
            / 10.0
    }
}

/// AP of one class from its rank-ordered PR points.
/// points == 0: area under the monotone (right-to-left running max) precision envelope over every
/// recall step (VOC2010+). points == N: mean over r_k = k/(N−1) of the largest precision at
/// recall ≥ r_k (11 = VOC2007, 101 = COCO; N = 1 uses r_0 = 0).
pub fn average_precision(curve: &[PrPoint], points: usize) -> f64 {
    let Some(last) = curve.last() else { return 0.0 };
    if points == 0 {
        let (mut ap, mut last_recall, mut envelope) = (0.0, last.recall, last.precision);
        for p in curve.iter().rev().skip(1) {
            ap += (last_recall - p.recall) * envelope;
            last_recall = p.recall;
            envelope = envelope.max(p.precision);
        }
        // The first step, from recall 0 to the first point's recall.
        ap + last_recall * envelope
    } else {
        let sum: f64 = (0..points)
            .map(|k| {
                let r = if points > 1 {
                    k as f64 / (points - 1) as f64
                } else {
                    0.0
                };
                curve
                    .iter()
                    .filter(|p| p.recall >= r)
                    .map(|p| p.precision)
                    .fold(0.0, f64::max)
            })
            .sum();
        sum / points as f64
    }
}

/// The report in `darknet detector map`'s words (AlexeyAB/hank-ai layout, trailing spaces trimmed).
pub fn format_darknet<S: AsRef<str>>(r: &MapReport, names: &[S]) -> String {
    let mut s = String::new();
    for row in &r.classes {
        let name = names.get(row.class).map_or("?", |n| n.as_ref());
        s += &format!(
            "class_id = {}, name = {}, ap = {:.2}%   \t (TP = {}, FP = {})\n",
            row.class,
            name,
            row.ap * 100.0,
            row.tp,
            row.fp
        );
    }
    let t = r.conf_thresh;
    s += &format!(
        "\n for conf_thresh = {t:.2}, precision = {:.2}, recall = {:.2}, F1-score = {:.2}\n",
        r.precision, r.recall, r.f1
    );
    s += &format!(
        " for conf_thresh = {t:.2}, TP = {}, FP = {}, FN = {}, average IoU = {:.2} %\n",
        r.tp,
        r.fp,
        r.fn_,
        r.avg_iou * 100.0
    );
    let how = match r.points {
        0 => "used Area-Under-Curve for each unique Recall".to_string(),
        n => format!("used {n} Recall-points"),
    };
    s += &format!("\n IoU threshold = {:.0} %, {how}\n", r.iou_thresh * 100.0);
    s += &format!(
        " mean average precision (mAP@{:.2}) = {:.6}, or {:.2} %\n",
        r.iou_thresh,
        r.map,
        r.map * 100.0
    );
    s
}
