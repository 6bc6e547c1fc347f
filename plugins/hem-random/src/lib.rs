//! Sedna's `Random` hard-example mining: each frame is hard with probability
//! `random_ratio` (default 0.3, in [0, 1]). With `seed` (a whole number) every instance
//! draws the same sequence, for reproducible tests; without it, the seed comes from
//! WASI's random source.

use std::cell::Cell;
use std::hash::{BuildHasher, RandomState};

use sedna_plugin_sdk::Params;
use sedna_plugin_sdk::hem::{Guest, Param, Prediction};

thread_local! {
    static RATIO: Cell<f64> = const { Cell::new(0.3) };
    static STATE: Cell<u64> = const { Cell::new(0) };
}

/// SplitMix64: small, fast and good enough to pick frames.
pub fn next_uniform(state: &mut u64) -> f64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// The component's exports.
pub struct Random;

impl Guest for Random {
    fn init(params: Vec<Param>) -> Result<(), String> {
        let params = Params::new(&params);
        RATIO.set(params.unit("random_ratio", 0.3)?);
        let seed = match params.get("seed") {
            Some(_) => params.integer("seed", 0, 0, u64::MAX)?,
            None => RandomState::new().hash_one(0u8),
        };
        STATE.set(seed);
        Ok(())
    }

    fn is_hard_example(_prediction: Prediction) -> bool {
        let mut state = STATE.get();
        let hard = next_uniform(&mut state) < RATIO.get();
        STATE.set(state);
        hard
    }

    fn is_hard_example_batch(predictions: Vec<Prediction>) -> Vec<bool> {
        predictions.into_iter().map(Self::is_hard_example).collect()
    }
}

// Only a component exports: a native build (for unit tests and clippy) links no exports.
#[cfg(target_family = "wasm")]
sedna_plugin_sdk::hem::export_hem!(Random);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_are_uniform_in_the_unit_interval() {
        let mut state = 7;
        let draws: Vec<f64> = (0..10_000).map(|_| next_uniform(&mut state)).collect();
        assert!(draws.iter().all(|d| (0.0..1.0).contains(d)));
        let below = draws.iter().filter(|&&d| d < 0.3).count();
        assert!((2700..3300).contains(&below), "{below}");
    }
}
