//! The built-in hard-example miners, driven through their components: table-driven
//! vectors, Sedna's edge cases, bad parameters, and IBT against a plain reference.

use crate::support::*;
use sedna::plugin::{Cause, Detections, Hem, Plugin, Prediction, Sandbox};

fn load(name: &str, pairs: &[(&str, &str)]) -> Result<Plugin<Hem>, sedna::plugin::PluginError> {
    Plugin::load(runtime(), &builtin(name), params(pairs), Sandbox::default())
}

fn decide(plugin: &Plugin<Hem>, prediction: Prediction) -> bool {
    plugin.is_hard_example(&prediction).unwrap()
}

fn classes(probabilities: &[f32]) -> Prediction {
    Prediction::ClassScores(probabilities.to_vec())
}

#[test]
fn ibt_reproduces_the_shared_vectors() {
    assert_ibt_vectors(runtime(), &builtin("IBT"));
}

/// IBT as Sedna's Python states it, written plainly.
fn ibt_reference(scores: &[f32], threshold_img: f64, threshold_box: f64) -> bool {
    if scores.is_empty() || scores.iter().any(|s| !(0.0..=1.0).contains(s)) {
        return false;
    }
    let uncertain = scores
        .iter()
        // At the scores' precision: a score and a threshold written alike are equal.
        .filter(|&&s| s <= threshold_box as f32)
        .count();
    uncertain as f64 / scores.len() as f64 >= 1.0 - threshold_img
}

#[test]
fn ibt_agrees_with_the_reference_on_10000_random_frames() {
    let mut state = 0x5EED_u64;
    let mut next = move || {
        // xorshift64*: a fixed seed makes any failure reproducible.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    };
    let thresholds = [(0.5, 0.5), (0.9, 0.9), (0.1, 0.3), (0.0, 1.0), (1.0, 0.0)];
    let plugins: Vec<_> = thresholds
        .iter()
        .map(|(img, bx)| {
            load(
                "IBT",
                &[
                    ("threshold_img", &img.to_string()),
                    ("threshold_box", &bx.to_string()),
                ],
            )
            .unwrap()
        })
        .collect();
    for i in 0..10_000 {
        let which = i % thresholds.len();
        let n = (next() * 20.0) as usize;
        // Mostly valid scores, a few outside [0, 1], some exactly on a threshold.
        let scores: Vec<f32> = (0..n)
            .map(|_| match (next() * 20.0) as u32 {
                0 => 1.0 + next() as f32,
                1 => -(next() as f32),
                2 => thresholds[which].1 as f32,
                _ => next() as f32,
            })
            .collect();
        let (img, bx) = thresholds[which];
        assert_eq!(
            decide(&plugins[which], frame(&scores)),
            ibt_reference(&scores, img, bx),
            "scores {scores:?}, thresholds {img} {bx}"
        );
    }
}

#[test]
fn threshold_compares_the_mean_score() {
    let plugin = load("Threshold", &[("threshold", "0.6")]).unwrap();
    assert!(decide(&plugin, frame(&[0.5, 0.6])));
    assert!(!decide(&plugin, frame(&[0.5, 0.75])));
    let half = load("Threshold", &[("threshold", "0.5")]).unwrap();
    assert!(
        !decide(&half, frame(&[0.25, 0.75])),
        "a mean equal to the threshold is not below it"
    );
    assert!(!decide(&plugin, frame(&[])));
    assert!(!decide(&plugin, classes(&[0.5, 0.5])));
    assert!(
        decide(&load("Threshold", &[]).unwrap(), frame(&[0.4])),
        "default threshold 0.5"
    );
    for bad in ["1.2", "-1", "half"] {
        let err = load("Threshold", &[("threshold", bad)]).err().unwrap();
        assert!(
            matches!(&err.cause, Cause::Refused(m) if m.contains("threshold") && m.contains(bad)),
            "{err}"
        );
    }
}

#[test]
fn cross_entropy_handles_what_sedna_crashes_on() {
    let plugin = load("CrossEntropy", &[("threshold_cross_entropy", "0.5")]).unwrap();
    // Uniform over 4 classes: confidence 0, hard.
    assert!(decide(&plugin, classes(&[0.25; 4])));
    // Certain: confidence 1; with a zero probability (Sedna raises on log(0)).
    assert!(!decide(&plugin, classes(&[1.0, 0.0, 0.0])));
    // 0.9/0.1: confidence = 1 + (0.9 ln 0.9 + 0.1 ln 0.1) / ln 2 = 0.531.
    assert!(!decide(&plugin, classes(&[0.9, 0.1])));
    assert!(decide(
        &load("CrossEntropy", &[("threshold_cross_entropy", "0.54")]).unwrap(),
        classes(&[0.9, 0.1])
    ));
    // One class (Sedna divides by zero), none, out of range, boxes: not hard.
    assert!(!decide(&plugin, classes(&[1.0])));
    assert!(!decide(&plugin, classes(&[])));
    assert!(!decide(&plugin, classes(&[0.5, 1.5])));
    assert!(!decide(&plugin, frame(&[0.1])));
    let err = load("CrossEntropy", &[("threshold_cross_entropy", "2")])
        .err()
        .unwrap();
    assert!(
        matches!(&err.cause, Cause::Refused(m) if m.contains("threshold_cross_entropy")),
        "{err}"
    );
}

#[test]
fn random_picks_its_ratio_and_is_seedable() {
    let frames: Vec<Prediction> = (0..2000).map(|_| frame(&[0.5])).collect();
    let run = |pairs: &[(&str, &str)]| {
        load("Random", pairs)
            .unwrap()
            .is_hard_example_batch(&frames)
            .unwrap()
    };
    let a = run(&[("random_ratio", "0.3"), ("seed", "42")]);
    assert_eq!(
        a,
        run(&[("random_ratio", "0.3"), ("seed", "42")]),
        "same seed, same picks"
    );
    assert_ne!(a, run(&[("random_ratio", "0.3"), ("seed", "43")]));
    let share = a.iter().filter(|&&h| h).count() as f64 / a.len() as f64;
    assert!((0.25..0.35).contains(&share), "share {share}");
    assert!(run(&[("random_ratio", "0")]).iter().all(|&h| !h));
    assert!(run(&[("random_ratio", "1")]).iter().all(|&h| h));
    let default = run(&[]);
    let share = default.iter().filter(|&&h| h).count() as f64 / default.len() as f64;
    assert!(
        (0.25..0.35).contains(&share),
        "default ratio 0.3, got {share}"
    );
    for (key, bad) in [("random_ratio", "3"), ("seed", "-1"), ("seed", "x")] {
        let err = load("Random", &[(key, bad)]).err().unwrap();
        assert!(
            matches!(&err.cause, Cause::Refused(m) if m.contains(key)),
            "{err}"
        );
    }
}

#[test]
fn edge_only_and_cloud_only_are_constant() {
    let edge = load("EdgeOnly", &[("anything", "ignored")]).unwrap();
    let cloud = load("CloudOnly", &[]).unwrap();
    for prediction in [frame(&[]), frame(&[0.1, 0.9]), classes(&[0.5, 0.5])] {
        assert!(!decide(&edge, prediction.clone()));
        assert!(decide(&cloud, prediction));
    }
    let batch = vec![frame(&[0.5]); 3];
    assert_eq!(edge.is_hard_example_batch(&batch).unwrap(), vec![false; 3]);
    assert_eq!(cloud.is_hard_example_batch(&batch).unwrap(), vec![true; 3]);
}

#[test]
fn detections_carry_every_field_across_the_boundary() {
    // A box exactly on threshold_box with a large label index survives the trip.
    let ibt = load("IBT", &[("threshold_box", "0.25"), ("threshold_img", "0")]).unwrap();
    let exact = Prediction::Detections(Detections::from_rows([(
        [-1.0, 1e6, 0.0, 2e6],
        0.25,
        u32::MAX,
    )]));
    assert!(decide(&ibt, exact));
}
