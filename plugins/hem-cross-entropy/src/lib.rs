//! Sedna's `CrossEntropy` hard-example mining on class probabilities p_1..p_N:
//! `confidence = 1 + sum(p ln p) / ln N`, hard when it is below `threshold_cross_entropy`
//! (default 0.5, in [0, 1]).
//!
//! Unlike Sedna: `0 ln 0` counts as 0 (Sedna raises), and N = 1 is not hard (Sedna
//! divides by zero). A probability outside [0, 1], no classes, or a detection
//! prediction: not hard (Sedna's rule for invalid input).

use std::cell::Cell;

use sedna_plugin_sdk::Params;
use sedna_plugin_sdk::hem::{Guest, Param, Prediction};

thread_local! {
    static THRESHOLD: Cell<f64> = const { Cell::new(0.5) };
}

/// The decision for one frame's class probabilities.
pub fn is_hard(probabilities: &[f32], threshold: f64) -> bool {
    if probabilities.len() < 2 || probabilities.iter().any(|p| !(0.0..=1.0).contains(p)) {
        return false;
    }
    let sum: f64 = probabilities
        .iter()
        .map(|&p| f64::from(p))
        .filter(|&p| p > 0.0)
        .map(|p| p * p.ln())
        .sum();
    let confidence = 1.0 + sum / (probabilities.len() as f64).ln();
    confidence < threshold
}

/// The component's exports.
pub struct CrossEntropy;

impl Guest for CrossEntropy {
    fn init(params: Vec<Param>) -> Result<(), String> {
        THRESHOLD.set(Params::new(&params).unit("threshold_cross_entropy", 0.5)?);
        Ok(())
    }

    fn is_hard_example(prediction: Prediction) -> bool {
        match prediction {
            Prediction::ClassScores(probabilities) => is_hard(&probabilities, THRESHOLD.get()),
            Prediction::Detections(_) => false,
        }
    }

    fn is_hard_example_batch(predictions: Vec<Prediction>) -> Vec<bool> {
        predictions.into_iter().map(Self::is_hard_example).collect()
    }
}

// Only a component exports: a native build (for unit tests and clippy) links no exports.
#[cfg(target_family = "wasm")]
sedna_plugin_sdk::hem::export_hem!(CrossEntropy);
