//! IBT hard-example mining, Sedna's `IBT` algorithm.
//!
//! A frame is hard when the share of its boxes whose score is at most `threshold_box` is at
//! least `1 - threshold_img`. A frame with no boxes is not hard; neither is one with a score
//! outside [0, 1] (Sedna's rule; the plugin logs it once).

use std::cell::Cell;

use sedna_plugin_sdk::Params;
use sedna_plugin_sdk::hem::{Guest, Level, Param, Prediction, log};

/// The two thresholds, each in [0, 1]. Kept in f64, as Sedna's Python floats are, so
/// that decisions on the boundary (1 box of 10 with `threshold_img` 0.9) agree.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Thresholds {
    pub img: f64,
    pub boxes: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            img: 0.5,
            boxes: 0.5,
        }
    }
}

impl Thresholds {
    /// Reads `threshold_img` and `threshold_box`; a missing key keeps its default.
    pub fn from_params(params: &[Param]) -> Result<Self, String> {
        let params = Params::new(params);
        let default = Thresholds::default();
        Ok(Thresholds {
            img: params.unit("threshold_img", default.img)?,
            boxes: params.unit("threshold_box", default.boxes)?,
        })
    }

    /// The decision for one frame's box scores, or `None` when a score is outside [0, 1].
    pub fn is_hard(&self, scores: impl ExactSizeIterator<Item = f32>) -> Option<bool> {
        let boxes = scores.len();
        if boxes == 0 {
            return Some(false);
        }
        let mut uncertain = 0usize;
        for score in scores {
            if !(0.0..=1.0).contains(&score) {
                return None;
            }
            // At the scores' own precision: a score written as 0.3 equals a threshold
            // written as 0.3, which f64 would put on either side of the f32 score.
            if score <= self.boxes as f32 {
                uncertain += 1;
            }
        }
        Some(uncertain as f64 / boxes as f64 >= 1.0 - self.img)
    }
}

thread_local! {
    static CONFIG: Cell<Thresholds> = Cell::new(Thresholds::default());
    static WARNED_SCORE: Cell<bool> = const { Cell::new(false) };
}

/// The component's exports.
pub struct Ibt;

impl Guest for Ibt {
    fn init(params: Vec<Param>) -> Result<(), String> {
        CONFIG.set(Thresholds::from_params(&params)?);
        Ok(())
    }

    fn is_hard_example(prediction: Prediction) -> bool {
        let scores = match &prediction {
            Prediction::Detections(detections) => detections.scores(),
            Prediction::ClassScores(_) => return false,
        };
        CONFIG.get().is_hard(scores).unwrap_or_else(|| {
            if !WARNED_SCORE.replace(true) {
                log(
                    Level::Warn,
                    "a box score is outside [0, 1]: such frames are not hard examples",
                );
            }
            false
        })
    }

    fn is_hard_example_batch(predictions: Vec<Prediction>) -> Vec<bool> {
        predictions.into_iter().map(Self::is_hard_example).collect()
    }
}

// Only a component exports: a native build (for unit tests and clippy) links no exports.
#[cfg(target_family = "wasm")]
sedna_plugin_sdk::hem::export_hem!(Ibt);

#[cfg(test)]
mod tests {
    use super::*;

    fn param(key: &str, value: &str) -> Param {
        Param {
            key: key.into(),
            value: value.into(),
        }
    }

    fn scores(scores: &[f32]) -> impl ExactSizeIterator<Item = f32> + '_ {
        scores.iter().copied()
    }

    #[test]
    fn decisions_follow_the_share_of_uncertain_boxes() {
        let t = Thresholds {
            img: 0.9,
            boxes: 0.9,
        };
        // 1 of 2 boxes uncertain: 0.5 >= 0.1.
        assert_eq!(t.is_hard(scores(&[0.95, 0.5])), Some(true));
        assert_eq!(t.is_hard(scores(&[0.95, 0.99])), Some(false));
        // A score equal to threshold_box counts as uncertain, whichever way f32 rounds it.
        assert_eq!(t.is_hard(scores(&[0.9])), Some(true));
        for written in [0.1, 0.3, 0.7] {
            let t = Thresholds {
                img: 0.9,
                boxes: written,
            };
            assert_eq!(
                t.is_hard(scores(&[written as f32])),
                Some(true),
                "{written}"
            );
        }
        assert_eq!(t.is_hard(scores(&[])), Some(false));
        assert_eq!(t.is_hard(scores(&[0.5, 1.5])), None);
        // 1 uncertain box of 10 is a share of 0.1 >= 1 - 0.9, as in Python's floats.
        let mut ten = vec![0.95; 9];
        ten.push(0.5);
        assert_eq!(t.is_hard(scores(&ten)), Some(true));
    }

    #[test]
    fn parameters_are_checked() {
        let t = Thresholds::from_params(&[param("threshold_img", "0.25"), param("other", "x")]);
        assert_eq!(
            t,
            Ok(Thresholds {
                img: 0.25,
                boxes: 0.5
            })
        );
        let err = Thresholds::from_params(&[param("threshold_box", "1.5")]).unwrap_err();
        assert!(
            err.contains("threshold_box") && err.contains("1.5"),
            "{err}"
        );
        assert!(Thresholds::from_params(&[param("threshold_img", "high")]).is_err());
    }
}
