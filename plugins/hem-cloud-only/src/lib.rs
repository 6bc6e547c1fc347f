//! Always a hard example: every frame goes for labelling (Sedna's `CloudOnly`). It takes no parameters.

use sedna_plugin_sdk::hem::{Guest, Param, Prediction};

/// The component's exports.
pub struct CloudOnly;

impl Guest for CloudOnly {
    fn init(_params: Vec<Param>) -> Result<(), String> {
        Ok(())
    }

    fn is_hard_example(_prediction: Prediction) -> bool {
        true
    }

    fn is_hard_example_batch(predictions: Vec<Prediction>) -> Vec<bool> {
        vec![true; predictions.len()]
    }
}

// Only a component exports: a native build (for unit tests and clippy) links no exports.
#[cfg(target_family = "wasm")]
sedna_plugin_sdk::hem::export_hem!(CloudOnly);
