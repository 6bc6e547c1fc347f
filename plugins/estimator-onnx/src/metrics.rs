//! Evaluation. Detection: one-to-one matching (highest score first, IoU >= 0.5, each
//! ground-truth box matched at most once), precision and recall per class at the
//! estimator's score threshold, AP per class (all-point interpolation) and mAP@0.5.
//! Classification: accuracy and per-class precision, recall and F1.

use crate::decode::{Candidate, iou};

/// The IoU a prediction needs to match a ground-truth box.
pub const MATCH_IOU: f32 = 0.5;

/// Detection metrics, per class unless scalar.
#[derive(Clone, Debug, PartialEq)]
pub struct DetectionReport {
    pub precision: Vec<f64>,
    pub recall: Vec<f64>,
    pub f1: Vec<f64>,
    pub ap: Vec<f64>,
    /// Mean AP over the classes that have ground truth.
    pub map: f64,
    /// Ground-truth boxes per class.
    pub support: Vec<u64>,
}

/// Ground-truth boxes: corners and class.
pub type Truth = Vec<([f32; 4], u32)>;

/// `images` pairs each image's predictions with its ground truth, both in the same
/// pixels.
pub fn detection(images: &[(Vec<Candidate>, Truth)], classes: usize) -> DetectionReport {
    let mut support = vec![0u64; classes];
    for (_, truth) in images {
        for &(_, class) in truth {
            if let Some(s) = support.get_mut(class as usize) {
                *s += 1;
            }
        }
    }
    // Every prediction of the class across all images, best first, marked TP or FP.
    let mut outcomes: Vec<Vec<(f32, bool)>> = vec![Vec::new(); classes];
    for (predictions, truth) in images {
        let mut sorted: Vec<&Candidate> = predictions
            .iter()
            .filter(|p| (p.class as usize) < classes)
            .collect();
        sorted.sort_by(|a, b| b.score.total_cmp(&a.score));
        let mut matched = vec![false; truth.len()];
        for p in sorted {
            let best = truth
                .iter()
                .enumerate()
                .filter(|(i, (_, class))| *class == p.class && !matched[*i])
                .map(|(i, (corners, _))| (i, iou(&p.corners, corners)))
                .filter(|(_, overlap)| *overlap >= MATCH_IOU)
                .max_by(|a, b| a.1.total_cmp(&b.1));
            if let Some((i, _)) = best {
                matched[i] = true;
            }
            outcomes[p.class as usize].push((p.score, best.is_some()));
        }
    }
    let mut report = DetectionReport {
        precision: Vec::with_capacity(classes),
        recall: Vec::with_capacity(classes),
        f1: Vec::with_capacity(classes),
        ap: Vec::with_capacity(classes),
        map: 0.0,
        support: support.clone(),
    };
    for (class, mut outcome) in outcomes.into_iter().enumerate() {
        outcome.sort_by(|a, b| b.0.total_cmp(&a.0));
        let tp = outcome.iter().filter(|(_, hit)| *hit).count() as f64;
        let total = support[class] as f64;
        let precision = if outcome.is_empty() {
            0.0
        } else {
            tp / outcome.len() as f64
        };
        let recall = if total == 0.0 { 0.0 } else { tp / total };
        report.precision.push(precision);
        report.recall.push(recall);
        report.f1.push(f1(precision, recall));
        report.ap.push(average_precision(&outcome, total));
    }
    let with_truth: Vec<f64> = (0..classes)
        .filter(|&c| support[c] > 0)
        .map(|c| report.ap[c])
        .collect();
    report.map = if with_truth.is_empty() {
        0.0
    } else {
        with_truth.iter().sum::<f64>() / with_truth.len() as f64
    };
    report
}

fn f1(precision: f64, recall: f64) -> f64 {
    if precision + recall == 0.0 {
        0.0
    } else {
        2.0 * precision * recall / (precision + recall)
    }
}

/// Area under the precision-recall curve, precision made monotone from the right
/// (VOC 2010+ and COCO's all-point interpolation).
fn average_precision(sorted: &[(f32, bool)], positives: f64) -> f64 {
    if positives == 0.0 {
        return 0.0;
    }
    let mut points = Vec::with_capacity(sorted.len());
    let mut tp = 0.0;
    for (i, (_, hit)) in sorted.iter().enumerate() {
        if *hit {
            tp += 1.0;
        }
        points.push((tp / positives, tp / (i + 1) as f64));
    }
    let mut ap = 0.0;
    let mut envelope = 0.0f64;
    let mut previous_recall = points.last().map_or(0.0, |p| p.0);
    for &(recall, precision) in points.iter().rev() {
        ap += (previous_recall - recall) * envelope;
        envelope = envelope.max(precision);
        previous_recall = recall;
    }
    ap + previous_recall * envelope
}

/// Classification metrics, per class unless scalar.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassificationReport {
    pub accuracy: f64,
    pub precision: Vec<f64>,
    pub recall: Vec<f64>,
    pub f1: Vec<f64>,
    pub support: Vec<u64>,
}

/// `pairs` are (predicted, actual) class indices.
pub fn classification(pairs: &[(usize, usize)], classes: usize) -> ClassificationReport {
    let mut confusion = vec![vec![0u64; classes]; classes];
    for &(predicted, actual) in pairs {
        if predicted < classes && actual < classes {
            confusion[actual][predicted] += 1;
        }
    }
    let correct: u64 = (0..classes).map(|c| confusion[c][c]).sum();
    let mut report = ClassificationReport {
        accuracy: if pairs.is_empty() {
            0.0
        } else {
            correct as f64 / pairs.len() as f64
        },
        precision: Vec::new(),
        recall: Vec::new(),
        f1: Vec::new(),
        support: Vec::new(),
    };
    for (c, row) in confusion.iter().enumerate() {
        let predicted: u64 = confusion.iter().map(|r| r[c]).sum();
        let actual: u64 = row.iter().sum();
        let hit = row[c] as f64;
        let precision = if predicted == 0 {
            0.0
        } else {
            hit / predicted as f64
        };
        let recall = if actual == 0 {
            0.0
        } else {
            hit / actual as f64
        };
        report.precision.push(precision);
        report.recall.push(recall);
        report.f1.push(f1(precision, recall));
        report.support.push(actual);
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(corners: [f32; 4], score: f32, class: u32) -> Candidate {
        Candidate {
            corners,
            score,
            class,
        }
    }

    const A: [f32; 4] = [0.0, 0.0, 10.0, 10.0];
    const B: [f32; 4] = [20.0, 20.0, 30.0, 30.0];

    #[test]
    fn duplicate_predictions_on_one_box_count_once() {
        // Three predictions on one ground-truth box: one TP, two FPs (Sedna counts three).
        let images = vec![(
            vec![
                p(A, 0.9, 0),
                p([0.5, 0.0, 10.5, 10.0], 0.8, 0),
                p(A, 0.7, 0),
            ],
            vec![(A, 0)],
        )];
        let r = detection(&images, 1);
        assert_eq!(r.recall, vec![1.0]);
        assert!((r.precision[0] - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(
            r.ap,
            vec![1.0],
            "the first prediction already reaches full recall"
        );
        assert_eq!(r.map, 1.0);
    }

    #[test]
    fn hand_computed_precision_recall_and_ap() {
        // Class 0: two truths over two images; predictions .9 (hit), .8 (miss), .6 (hit).
        // Class 1: one truth, never predicted. Class 2: no truth, one false positive.
        let images = vec![
            (
                vec![p(A, 0.9, 0), p(B, 0.8, 0), p(B, 0.5, 2)],
                vec![(A, 0), (B, 1)],
            ),
            (vec![p(B, 0.6, 0)], vec![(B, 0)]),
        ];
        let r = detection(&images, 3);
        assert_eq!(r.support, vec![2, 1, 0]);
        assert_eq!(r.recall, vec![1.0, 0.0, 0.0]);
        assert!((r.precision[0] - 2.0 / 3.0).abs() < 1e-12);
        // PR points: (0.5, 1), (0.5, 0.5), (1, 2/3) -> AP = 0.5 * 1 + 0.5 * 2/3.
        assert!((r.ap[0] - (0.5 + 1.0 / 3.0)).abs() < 1e-12, "{:?}", r.ap);
        assert_eq!(r.ap[1], 0.0);
        // mAP over the classes with truth (0 and 1), not class 2.
        assert!((r.map - (0.5 + 1.0 / 3.0) / 2.0).abs() < 1e-12);
        assert!((r.f1[0] - 0.8).abs() < 1e-12);
    }

    #[test]
    fn a_prediction_of_another_class_or_too_little_overlap_is_false() {
        let images = vec![(
            vec![p(A, 0.9, 1), p([6.0, 0.0, 16.0, 10.0], 0.8, 0)],
            vec![(A, 0)],
        )];
        let r = detection(&images, 2);
        assert_eq!(
            (r.recall[0], r.precision[0], r.precision[1]),
            (0.0, 0.0, 0.0)
        );
    }

    #[test]
    fn classification_accuracy_and_per_class_scores() {
        let pairs = [(0, 0), (0, 0), (1, 0), (1, 1), (2, 1)];
        let r = classification(&pairs, 3);
        assert!((r.accuracy - 0.6).abs() < 1e-12);
        assert_eq!(r.precision, vec![1.0, 0.5, 0.0]);
        assert_eq!(r.recall, vec![2.0 / 3.0, 0.5, 0.0]);
        assert_eq!(r.support, vec![3, 2, 0]);
    }
}
