//! A trigger condition Sedna cannot express: "the share of hard examples over the last
//! `window` frames exceeds `ratio`". A camera that starts seeing something new shows it
//! as a burst of hard examples long before 500 labelled samples pile up.
//!
//! Reads the metric `hard_examples`: one value per recent frame, oldest first, 1 for a
//! hard example and 0 otherwise (the host keeps it). Parameters: `window` (default 100,
//! 1 to 100000 frames) and `ratio` (default 0.3, in [0, 1]).

use std::cell::Cell;

use sedna_plugin_sdk::Params;
use sedna_plugin_sdk::trigger::{Guest, Metric, Param};

/// The metric this condition reads.
pub const METRIC: &str = "hard_examples";

thread_local! {
    static CONFIG: Cell<(usize, f64)> = const { Cell::new((100, 0.3)) };
}

/// `Ok(true)` when more than `ratio` of the last `window` frames were hard.
pub fn evaluate(stats: &[Metric], window: usize, ratio: f64) -> Result<bool, String> {
    let Some(metric) = stats.iter().find(|m| m.name == METRIC) else {
        return Err(format!("the metric `{METRIC}` is missing"));
    };
    let seen = metric.values.len();
    if seen < window {
        return Err(format!(
            "{seen} of the {window} frames needed have been seen"
        ));
    }
    let recent = &metric.values[seen - window..];
    let hard = recent.iter().filter(|&&v| v >= 0.5).count();
    Ok(hard as f64 / window as f64 > ratio)
}

/// The component's exports.
pub struct HardExampleRatio;

impl Guest for HardExampleRatio {
    fn init(params: Vec<Param>) -> Result<(), String> {
        let params = Params::new(&params);
        let window = params.integer("window", 100, 1, 100_000)? as usize;
        CONFIG.set((window, params.unit("ratio", 0.3)?));
        Ok(())
    }

    fn evaluate(stats: Vec<Metric>) -> Result<bool, String> {
        let (window, ratio) = CONFIG.get();
        evaluate(&stats, window, ratio)
    }
}

// Only a component exports: a native build (for unit tests and clippy) links no exports.
#[cfg(target_family = "wasm")]
sedna_plugin_sdk::trigger::export_trigger!(HardExampleRatio);

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(values: &[f64]) -> Vec<Metric> {
        vec![Metric {
            name: METRIC.into(),
            values: values.to_vec(),
        }]
    }

    #[test]
    fn holds_when_the_recent_share_exceeds_the_ratio() {
        // The old frames are easy; the last 4 of 5 are hard.
        let values = [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0];
        assert_eq!(evaluate(&stats(&values), 5, 0.5), Ok(true));
        assert_eq!(evaluate(&stats(&values), 9, 0.5), Ok(false));
        // Exactly the ratio is not more than it.
        assert_eq!(evaluate(&stats(&[1.0, 0.0]), 2, 0.5), Ok(false));
    }

    #[test]
    fn too_few_frames_or_no_metric_say_why() {
        let err = evaluate(&stats(&[1.0]), 5, 0.5).unwrap_err();
        assert!(err.contains("1 of the 5"), "{err}");
        assert!(evaluate(&[], 5, 0.5).unwrap_err().contains("hard_examples"));
    }
}
