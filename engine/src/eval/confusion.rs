//! A detection confusion matrix, as Ultralytics draws it: each detection above a confidence
//! threshold takes its most probable class; detections and labelled objects are matched whatever
//! their classes, greedily by IoU (largest first, each used once, IoU > threshold). A matched pair
//! counts in (object class, detected class); an object left unmatched in (object class,
//! background), a detection left unmatched in (background, detected class).

use super::{Detection, GroundTruth, box_iou};

/// Counts over (labelled class or background) × (detected class or background).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfusionMatrix {
    classes: usize,
    /// Row-major (classes + 1)²; index `classes` is the background.
    counts: Vec<u64>,
}

impl ConfusionMatrix {
    pub fn new(classes: usize) -> Self {
        ConfusionMatrix { classes, counts: vec![0; (classes + 1) * (classes + 1)] }
    }

    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Count of objects of class `truth` detected as `predicted` (`None` = background).
    pub fn count(&self, truth: Option<usize>, predicted: Option<usize>) -> u64 {
        let k = self.classes;
        self.counts[truth.unwrap_or(k).min(k) * (k + 1) + predicted.unwrap_or(k).min(k)]
    }

    fn bump(&mut self, truth: usize, predicted: usize) {
        let k = self.classes;
        self.counts[truth.min(k) * (k + 1) + predicted.min(k)] += 1;
    }

    /// Adds one image: its detections (after NMS) and its labelled objects.
    pub fn add_image(&mut self, dets: &[Detection], truths: &[GroundTruth], conf_thresh: f32, iou_thresh: f32) {
        let k = self.classes;
        // (class, box) of every detection whose best class clears the threshold.
        let found: Vec<(usize, &super::Bbox)> = dets
            .iter()
            .filter_map(|d| {
                let (class, &p) = d.prob.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1))?;
                (p > conf_thresh).then_some((class, &d.bbox))
            })
            .collect();
        let mut pairs: Vec<(f32, usize, usize)> = Vec::new();
        for (t, gt) in truths.iter().enumerate() {
            for (f, (_, b)) in found.iter().enumerate() {
                let iou = box_iou(&gt.bbox, b);
                if iou > iou_thresh {
                    pairs.push((iou, t, f));
                }
            }
        }
        // Largest IoU first; ties keep object, then detection order.
        pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
        let (mut t_used, mut f_used) = (vec![false; truths.len()], vec![false; found.len()]);
        for (_, t, f) in pairs {
            if !t_used[t] && !f_used[f] {
                t_used[t] = true;
                f_used[f] = true;
                self.bump(truths[t].class, found[f].0);
            }
        }
        for (gt, _) in truths.iter().zip(&t_used).filter(|(_, used)| !**used) {
            self.bump(gt.class, k);
        }
        for ((class, _), _) in found.iter().zip(&f_used).filter(|(_, used)| !**used) {
            self.bump(k, *class);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::Bbox;

    fn det(class: usize, p: f32, x: f32) -> Detection {
        let mut prob = vec![0.0; 3];
        prob[class] = p;
        Detection { bbox: Bbox::new(x, 0.5, 0.2, 0.2), objectness: p, prob }
    }

    fn gt(class: usize, x: f32) -> GroundTruth {
        GroundTruth { class, bbox: Bbox::new(x, 0.5, 0.2, 0.2) }
    }

    #[test]
    fn matches_across_classes_and_counts_the_unmatched() {
        let mut m = ConfusionMatrix::new(3);
        // Object 0 found as class 0; object 1 (class 1) found as class 2; object 2 missed;
        // one detection on nothing; one detection below the threshold ignored.
        let dets = [det(0, 0.9, 0.1), det(2, 0.8, 0.4), det(1, 0.7, 0.9), det(1, 0.1, 0.7)];
        let truths = [gt(0, 0.1), gt(1, 0.41), gt(2, 0.7)];
        m.add_image(&dets, &truths, 0.25, 0.5);
        assert_eq!(m.count(Some(0), Some(0)), 1);
        assert_eq!(m.count(Some(1), Some(2)), 1);
        assert_eq!(m.count(Some(2), None), 1);
        assert_eq!(m.count(None, Some(1)), 1);
        let total: u64 = (0..4).flat_map(|t| (0..4).map(move |p| (t, p))).map(|(t, p)| m.count((t < 3).then_some(t), (p < 3).then_some(p))).sum();
        assert_eq!(total, 4);
    }
}
