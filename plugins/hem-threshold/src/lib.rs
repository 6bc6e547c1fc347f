//! Sedna's `Threshold` hard-example mining: a frame is hard when the mean score of its
//! boxes is below `threshold` (default 0.5, in [0, 1]). A frame with no boxes, or a
//! classification, is not hard.

use std::cell::Cell;

use sedna_plugin_sdk::Params;
use sedna_plugin_sdk::hem::{Guest, Param, Prediction};

thread_local! {
    static THRESHOLD: Cell<f64> = const { Cell::new(0.5) };
}

/// The decision for one frame's box scores.
pub fn is_hard(scores: impl ExactSizeIterator<Item = f32>, threshold: f64) -> bool {
    let boxes = scores.len();
    if boxes == 0 {
        return false;
    }
    let mean = scores.map(f64::from).sum::<f64>() / boxes as f64;
    mean < threshold
}

/// The component's exports.
pub struct Threshold;

impl Guest for Threshold {
    fn init(params: Vec<Param>) -> Result<(), String> {
        THRESHOLD.set(Params::new(&params).unit("threshold", 0.5)?);
        Ok(())
    }

    fn is_hard_example(prediction: Prediction) -> bool {
        match prediction {
            Prediction::Detections(detections) => is_hard(detections.scores(), THRESHOLD.get()),
            Prediction::ClassScores(_) => false,
        }
    }

    fn is_hard_example_batch(predictions: Vec<Prediction>) -> Vec<bool> {
        predictions.into_iter().map(Self::is_hard_example).collect()
    }
}

// Only a component exports: a native build (for unit tests and clippy) links no exports.
#[cfg(target_family = "wasm")]
sedna_plugin_sdk::hem::export_hem!(Threshold);
