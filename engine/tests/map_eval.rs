//! mAP and NMS against hand-computed values (darknet-spec §e).

use engine::cfg::NmsKind;
use engine::eval::map::{MapAccumulator, average_precision};
use engine::eval::{
    Bbox, Detection, GroundTruth, apply_nms, box_diou_nms, box_iou, diounms_sort, do_nms_sort,
    format_darknet,
};

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-6
}

fn gt(class: usize, x: f32, y: f32, w: f32, h: f32) -> GroundTruth {
    GroundTruth {
        class,
        bbox: Bbox::new(x, y, w, h),
    }
}

fn det(x: f32, y: f32, w: f32, h: f32, prob: &[f32]) -> Detection {
    let objectness = prob.iter().copied().fold(0.0, f32::max);
    Detection {
        bbox: Bbox::new(x, y, w, h),
        objectness,
        prob: prob.to_vec(),
    }
}

/// One class, three objects A, B, C; ranked detections:
///   .9 on A → TP (P 1,   R 1/3)
///   .8 on nothing → FP (P 1/2, R 1/3)
///   .7 on B → TP (P 2/3, R 2/3)
///   .6 on A again → FP, A already taken (P 1/2, R 2/3)
/// C is never found.
fn one_class_case() -> MapAccumulator {
    let truths = [
        gt(0, 0.2, 0.2, 0.2, 0.2),
        gt(0, 0.5, 0.5, 0.2, 0.2),
        gt(0, 0.8, 0.8, 0.2, 0.2),
    ];
    // Deliberately not in score order: the ranking must sort.
    let dets = [
        det(0.5, 0.5, 0.2, 0.2, &[0.7]),
        det(0.2, 0.2, 0.2, 0.2, &[0.6]),
        det(0.2, 0.2, 0.2, 0.2, &[0.9]),
        det(0.5, 0.1, 0.1, 0.1, &[0.8]),
    ];
    let mut acc = MapAccumulator::new(1);
    acc.add_image(&dets, &truths).unwrap();
    acc
}

#[test]
fn area_under_envelope_vs_11_and_101_points() {
    let acc = one_class_case();
    // Area: envelope is 1 up to recall 1/3, then 2/3 up to 2/3 → 1/3·1 + 1/3·2/3 = 5/9.
    let r = acc.summary(0, 0.5, 0.25);
    assert!(close(r.map, 5.0 / 9.0), "{}", r.map);
    assert!(close(r.classes[0].ap, 5.0 / 9.0));
    // 11 points r = 0, .1, …, 1: four with r ≤ 1/3 → 1, three in (1/3, 2/3] → 2/3, four → 0.
    // (4 + 3·2/3)/11 = 6/11, different from the area.
    let r11 = acc.summary(11, 0.5, 0.25);
    assert!(close(r11.map, 6.0 / 11.0), "{}", r11.map);
    // 101 points: k = 0..=33 → 1 (34 points), k = 34..=66 → 2/3 (33 points), rest 0 → 56/101.
    let r101 = acc.summary(101, 0.5, 0.25);
    assert!(close(r101.map, 56.0 / 101.0), "{}", r101.map);
}

#[test]
fn confidence_threshold_statistics() {
    let acc = one_class_case();
    // thresh .25: all four count: TP 2 (the .9 and .7), FP 2, FN 1.
    let r = acc.summary(0, 0.5, 0.25);
    assert_eq!((r.tp, r.fp, r.fn_), (2, 2, 1));
    assert!(close(r.precision, 0.5) && close(r.recall, 2.0 / 3.0));
    // F1 = 2·(1/2)(2/3)/(1/2 + 2/3) = 4/7.
    assert!(close(r.f1, 4.0 / 7.0));
    // Darknet's average IoU: sum of TP IoUs (1 + 1) over TP + FP (4).
    assert!(close(r.avg_iou, 0.5));
    // thresh .65 keeps .9, .8, .7: TP 2, FP 1. thresh .75 keeps .9, .8: TP 1, FP 1.
    let r = acc.summary(0, 0.5, 0.65);
    assert_eq!((r.tp, r.fp, r.fn_), (2, 1, 1));
    let r = acc.summary(0, 0.5, 0.75);
    assert_eq!((r.tp, r.fp, r.fn_), (1, 1, 2));
    // Strictly greater: thresh .7 drops the .7 detection.
    let r = acc.summary(0, 0.5, 0.7);
    assert_eq!((r.tp, r.fp), (1, 1));
    // AP does not depend on the confidence threshold.
    assert!(close(r.map, 5.0 / 9.0));
}

#[test]
fn pr_curve_points() {
    let acc = one_class_case();
    let c = &acc.pr_curves(0.5)[0];
    let got: Vec<(usize, usize)> = c.iter().map(|p| (p.tp, p.fp)).collect();
    assert_eq!(got, vec![(1, 0), (1, 1), (2, 1), (2, 2)]);
    assert_eq!(
        c.iter().map(|p| p.prob).collect::<Vec<_>>(),
        vec![0.9, 0.8, 0.7, 0.6]
    );
    assert!(close(c[2].precision, 2.0 / 3.0) && close(c[2].recall, 2.0 / 3.0));
    assert!(close(average_precision(c, 0), 5.0 / 9.0));
    assert_eq!(average_precision(&[], 0), 0.0);
}

#[test]
fn ties_keep_insertion_order() {
    // One object; two detections with equal score .5: one on it, one elsewhere.
    let truths = [gt(0, 0.5, 0.5, 0.2, 0.2)];
    let hit = det(0.5, 0.5, 0.2, 0.2, &[0.5]);
    let miss = det(0.1, 0.1, 0.1, 0.1, &[0.5]);
    // Hit first: (P 1, R 1), (P 1/2, R 1) → AP 1.
    let mut a = MapAccumulator::new(1);
    a.add_image(&[hit.clone(), miss.clone()], &truths).unwrap();
    assert!(close(a.summary(0, 0.5, 0.25).map, 1.0));
    // Miss first: (P 0, R 0), (P 1/2, R 1) → AP = 1·1/2. (Darknet's qsort leaves this order
    // undefined; we keep the order detections were added.)
    let mut b = MapAccumulator::new(1);
    b.add_image(&[miss, hit], &truths).unwrap();
    assert!(close(b.summary(0, 0.5, 0.25).map, 0.5));
}

/// Three classes: class 0 has one object, found exactly (.9); class 1 has one object and no
/// detection; class 2 has no object but a detection (.8) sitting exactly on the class-0 object.
fn three_class_case() -> MapAccumulator {
    let truths = [gt(0, 0.3, 0.3, 0.2, 0.2), gt(1, 0.7, 0.7, 0.2, 0.2)];
    let dets = [
        det(0.3, 0.3, 0.2, 0.2, &[0.9, 0.0, 0.0]),
        det(0.3, 0.3, 0.2, 0.2, &[0.0, 0.0, 0.8]),
    ];
    let mut acc = MapAccumulator::new(3);
    acc.add_image(&dets, &truths).unwrap();
    acc
}

#[test]
fn classes_without_truth_or_detections_count_zero() {
    let r = three_class_case().summary(0, 0.5, 0.25);
    let aps: Vec<f64> = r.classes.iter().map(|c| c.ap).collect();
    assert_eq!(aps, vec![1.0, 0.0, 0.0]);
    // Mean over all three classes, not just the ones with objects.
    assert!(close(r.map, 1.0 / 3.0));
    assert_eq!((r.tp, r.fp, r.fn_), (1, 1, 1));
    assert!(close(r.precision, 0.5) && close(r.recall, 0.5) && close(r.f1, 0.5));
    let c1 = &r.classes[1];
    assert_eq!(
        (c1.truths, c1.detections, c1.tp, c1.fp, c1.fn_),
        (1, 0, 0, 0, 1)
    );
    let c2 = &r.classes[2];
    assert_eq!(
        (c2.truths, c2.detections, c2.tp, c2.fp, c2.fn_),
        (0, 1, 0, 1, 0)
    );
    assert_eq!((c2.precision, c2.recall, c2.f1), (0.0, 0.0, 0.0));
    assert_eq!(r.detections, 2);
    assert_eq!(r.truths, 2);
}

#[test]
fn darknet_text() {
    let r = three_class_case().summary(0, 0.5, 0.25);
    let text = format_darknet(&r, &["red", "green", "blue"]);
    let expected = "\
class_id = 0, name = red, ap = 100.00%   \t (TP = 1, FP = 0)
class_id = 1, name = green, ap = 0.00%   \t (TP = 0, FP = 0)
class_id = 2, name = blue, ap = 0.00%   \t (TP = 0, FP = 1)

 for conf_thresh = 0.25, precision = 0.50, recall = 0.50, F1-score = 0.50
 for conf_thresh = 0.25, TP = 1, FP = 1, FN = 1, average IoU = 50.00 %

 IoU threshold = 50 %, used Area-Under-Curve for each unique Recall
 mean average precision (mAP@0.50) = 0.333333, or 33.33 %
";
    assert_eq!(text, expected);
    let r = three_class_case().summary(11, 0.75, 0.25);
    let text = format_darknet(&r, &["red", "green", "blue"]);
    assert!(
        text.contains(" IoU threshold = 75 %, used 11 Recall-points\n"),
        "{text}"
    );
    assert!(text.contains("(mAP@0.75) = 0.333333, or 33.33 %"), "{text}");
}

#[test]
fn iou_threshold_is_strict_and_best_truth_wins() {
    // Object 0.5×0.5, detection 0.5×0.25 on the same centre: IoU = 0.125/0.25 = 0.5 exactly.
    let truths = [gt(0, 0.5, 0.5, 0.5, 0.5)];
    let d = det(0.5, 0.5, 0.5, 0.25, &[0.9]);
    assert_eq!(box_iou(&d.bbox, &truths[0].bbox), 0.5);
    let mut acc = MapAccumulator::new(1);
    acc.add_image(&[d], &truths).unwrap();
    assert_eq!(acc.summary(0, 0.5, 0.25).map, 0.0); // 0.5 is not > 0.5
    assert_eq!(acc.summary(0, 0.45, 0.25).map, 1.0);

    // Two overlapping objects, iou_thresh .3; the .9 detection qualifies for both but overlaps
    // object 1 more, so it takes object 1, and the .8 detection on object 0 is a TP too: AP 1.
    let truths = [gt(0, 0.30, 0.5, 0.2, 0.2), gt(0, 0.40, 0.5, 0.2, 0.2)];
    let dets = [
        det(0.38, 0.5, 0.2, 0.2, &[0.9]),
        det(0.30, 0.5, 0.2, 0.2, &[0.8]),
    ];
    // IoU(d0, t0) = .024/.056 ≈ .43, IoU(d0, t1) = .036/.044 ≈ .82; IoU(d1, t1) = 1/3 < IoU(d1, t0) = 1.
    let mut acc = MapAccumulator::new(1);
    acc.add_image(&dets, &truths).unwrap();
    let r = acc.summary(0, 0.3, 0.25);
    assert_eq!((r.tp, r.fp), (2, 0));
    assert!(close(r.map, 1.0));
}

#[test]
fn truths_are_per_image_and_classes_must_match() {
    // The same box in two images: each detection takes its own image's object.
    let mut acc = MapAccumulator::new(2);
    for _ in 0..2 {
        acc.add_image(
            &[det(0.5, 0.5, 0.2, 0.2, &[0.9, 0.0])],
            &[gt(0, 0.5, 0.5, 0.2, 0.2)],
        )
        .unwrap();
    }
    // A class-1 detection on a class-0 object is an FP of class 1.
    acc.add_image(
        &[det(0.5, 0.5, 0.2, 0.2, &[0.0, 0.7])],
        &[gt(0, 0.5, 0.5, 0.2, 0.2)],
    )
    .unwrap();
    let r = acc.summary(0, 0.5, 0.25);
    assert_eq!(r.images, 3);
    // Class 0: two TPs of three objects → envelope 1 up to recall 2/3 → AP 2/3. Class 1: AP 0.
    assert!(close(r.classes[0].ap, 2.0 / 3.0));
    assert_eq!((r.classes[1].tp, r.classes[1].fp), (0, 1));
    assert!(close(r.map, 1.0 / 3.0));

    let err = acc
        .add_image(&[], &[gt(2, 0.5, 0.5, 0.1, 0.1)])
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "image 3: ground truth 0 has class 2, but the model has 2 classes"
    );
    let err = acc
        .add_image(&[det(0.5, 0.5, 0.1, 0.1, &[0.5])], &[])
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("has 1 class probabilities, expected 2"),
        "{err}"
    );
}

#[test]
fn coco_map_averages_ten_thresholds() {
    // Same centre, 0.5×0.5 object vs 0.5×0.36 detection: IoU = 0.18/0.25 = 0.72.
    // AP = 1 at .50 .55 .60 .65 .70 and 0 at .75 … .95 → mAP@[.5:.95] = 0.5.
    let mut acc = MapAccumulator::new(1);
    acc.add_image(
        &[det(0.5, 0.5, 0.5, 0.36, &[0.9])],
        &[gt(0, 0.5, 0.5, 0.5, 0.5)],
    )
    .unwrap();
    assert!(close(acc.map_coco(101), 0.5));
    assert!(close(acc.map_coco(0), 0.5));
}

#[test]
fn box_overlaps() {
    // Same size 0.4, centres 0.12 apart in x: IoU = 0.28/0.52.
    let a = Bbox::new(0.30, 0.5, 0.4, 0.4);
    let b = Bbox::new(0.42, 0.5, 0.4, 0.4);
    let iou = 0.28 / 0.52;
    assert!((box_iou(&a, &b) as f64 - iou).abs() < 1e-6);
    // Enclosing box 0.52 × 0.4 → c² = 0.4304; d² = 0.0144.
    let ratio: f64 = 0.0144 / 0.4304;
    assert!((box_diou_nms(&a, &b, 0.6) as f64 - (iou - ratio.powf(0.6))).abs() < 1e-6);
    assert!((box_diou_nms(&a, &b, 2.0) as f64 - (iou - ratio.powi(2))).abs() < 1e-6);
    // Disjoint and touching boxes have IoU 0; identical boxes 1.
    assert_eq!(box_iou(&a, &Bbox::new(0.9, 0.5, 0.2, 0.2)), 0.0);
    assert_eq!(box_iou(&a, &Bbox::new(0.6, 0.5, 0.2, 0.2)), 0.0);
    assert!((box_iou(&a, &a) - 1.0).abs() < 1e-6); // edges rounded in f32, as in Darknet
}

#[test]
fn nms_default_iou() {
    // Class 0: A .9; B .8 overlaps A (IoU .6 > .45) → zeroed; C .7 overlaps B (IoU .6) but not A
    // (IoU (0.4-0.2)/(0.4+0.2) = 1/3): B no longer suppresses anything, so C survives.
    // B's class-1 score (.5) is not touched: A has no class-1 score.
    let mut dets = vec![
        det(0.50, 0.5, 0.4, 0.4, &[0.7, 0.0]), // C
        det(0.30, 0.5, 0.4, 0.4, &[0.9, 0.0]), // A
        det(0.40, 0.5, 0.4, 0.4, &[0.8, 0.5]), // B
    ];
    do_nms_sort(&mut dets, 2, 0.45);
    let probs: Vec<Vec<f32>> = dets.iter().map(|d| d.prob.clone()).collect();
    assert_eq!(probs, vec![vec![0.7, 0.0], vec![0.9, 0.0], vec![0.0, 0.5]]);
}

#[test]
fn nms_diou_variants() {
    // A .9 and B .8, same size, centres 0.12 apart: IoU ≈ .5385 > .45 but
    // DIoU(β=.6) = .5385 − (.0144/.4304)^.6 ≈ .5385 − .1302 = .4082 < .45.
    let make = || {
        vec![
            det(0.30, 0.5, 0.4, 0.4, &[0.9]),
            det(0.42, 0.5, 0.4, 0.4, &[0.8]),
        ]
    };
    let mut d = make();
    apply_nms(&mut d, 1, NmsKind::Default, 0.45, 0.6);
    assert_eq!(d[1].prob[0], 0.0);
    let mut d = make();
    apply_nms(&mut d, 1, NmsKind::Greedy, 0.45, 123.0); // greedynms ignores beta_nms: uses .6
    assert_eq!(d[1].prob[0], 0.8);
    // diounms with β = 2: penalty (.0334)^2 ≈ .0011 → DIoU ≈ .537 > .45 → suppressed.
    let mut d = make();
    apply_nms(&mut d, 1, NmsKind::Diou, 0.45, 2.0);
    assert_eq!(d[1].prob[0], 0.0);
    let mut d = make();
    diounms_sort(&mut d, 1, 0.45, 0.6);
    assert_eq!(d[1].prob[0], 0.8);
    // Detections with objectness 0 take no part.
    let mut d = make();
    d[0].objectness = 0.0;
    do_nms_sort(&mut d, 1, 0.45);
    assert_eq!(d[1].prob[0], 0.8);
}
