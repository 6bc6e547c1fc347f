//! Never a hard example: every frame stays on the edge (Sedna's `EdgeOnly`). It takes no parameters.

use sedna_plugin_sdk::hem::{Guest, Param, Prediction};

/// The component's exports.
pub struct EdgeOnly;

impl Guest for EdgeOnly {
    fn init(_params: Vec<Param>) -> Result<(), String> {
        Ok(())
    }

    fn is_hard_example(_prediction: Prediction) -> bool {
        false
    }

    fn is_hard_example_batch(predictions: Vec<Prediction>) -> Vec<bool> {
        vec![false; predictions.len()]
    }
}

// Only a component exports: a native build (for unit tests and clippy) links no exports.
#[cfg(target_family = "wasm")]
sedna_plugin_sdk::hem::export_hem!(EdgeOnly);
