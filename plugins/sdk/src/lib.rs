//! Bindings and helpers for Sedna plugins written in Rust.
//!
//! A hard-example miner implements [`hem::Guest`] and exports itself with
//! [`hem::export_hem!`]; a trigger condition implements [`trigger::Guest`] and uses
//! [`trigger::export_trigger!`]; an estimator implements [`estimator::Guest`] and uses
//! [`estimator::export_estimator!`]. [`Params`] reads Sedna's key/value parameters with errors that
//! name the key, the value and the accepted range.

/// The `hard-example-miner` world.
pub mod hem {
    wit_bindgen::generate!({
        world: "hard-example-miner",
        path: "../../wit",
        pub_export_macro: true,
        export_macro_name: "export_hem",
        default_bindings_module: "sedna_plugin_sdk::hem",
    });

    pub use exports::sedna::plugin::mining::Guest;
    pub use sedna::plugin::log::{Level, log};
    pub use sedna::plugin::types::{Detections, Param, Prediction};
}

/// The `trigger-condition` world.
pub mod trigger {
    wit_bindgen::generate!({
        world: "trigger-condition",
        path: "../../wit",
        pub_export_macro: true,
        export_macro_name: "export_trigger",
        default_bindings_module: "sedna_plugin_sdk::trigger",
        with: {
            "sedna:plugin/types@0.3.0": crate::hem::sedna::plugin::types,
            "sedna:plugin/log@0.3.0": crate::hem::sedna::plugin::log,
        },
    });

    pub use crate::hem::sedna::plugin::types::Metric;
    pub use crate::hem::{Level, Param, log};
    pub use exports::sedna::plugin::condition::Guest;
}

/// The `estimator` world: the host's `inference` interface (models, sessions, frames,
/// tensors and datasets held by handle) and the `estimation` exports.
pub mod estimator {
    wit_bindgen::generate!({
        world: "estimator",
        path: "../../wit",
        pub_export_macro: true,
        export_macro_name: "export_estimator",
        default_bindings_module: "sedna_plugin_sdk::estimator",
        with: {
            "sedna:plugin/types@0.3.0": crate::hem::sedna::plugin::types,
            "sedna:plugin/log@0.3.0": crate::hem::sedna::plugin::log,
        },
    });

    pub use crate::hem::sedna::plugin::types::{Metric, Prediction};
    pub use crate::hem::{Detections, Level, Param, log};
    pub use exports::sedna::plugin::estimation::Guest;
    pub use sedna::plugin::inference;
    pub use sedna::plugin::training;
}

use std::fmt::Display;
use std::str::FromStr;

use hem::{Detections, Param};

/// Values in one of Sedna's rows `[x1, y1, x2, y2, score, label]`, as `detections` lays
/// them out (the host mirrors these helpers on its own bindings).
pub const ROW: usize = 6;

impl Detections {
    pub fn new() -> Self {
        Detections { rows: Vec::new() }
    }

    /// Appends one box: corners `[x1, y1, x2, y2]`, score and class index.
    pub fn push(&mut self, corners: [f32; 4], score: f32, label: u32) {
        self.rows.extend_from_slice(&corners);
        self.rows.extend([score, label as f32]);
    }

    pub fn len(&self) -> usize {
        self.rows.len() / ROW
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Each box's score, in order.
    pub fn scores(&self) -> impl ExactSizeIterator<Item = f32> + '_ {
        self.rows.chunks_exact(ROW).map(|r| r[4])
    }

    /// The boxes as Sedna's rows `([x1, y1, x2, y2], score, label)`. A trailing partial
    /// row is left out; a label that is not a whole number is cut to one (a negative one
    /// to 0).
    pub fn rows(&self) -> impl ExactSizeIterator<Item = ([f32; 4], f32, u32)> + '_ {
        self.rows
            .chunks_exact(ROW)
            .map(|r| ([r[0], r[1], r[2], r[3]], r[4], r[5] as u32))
    }
}

impl Default for Detections {
    fn default() -> Self {
        Detections::new()
    }
}

/// A plugin's parameters, as Sedna passes them: strings by key. The last value of a
/// repeated key wins.
pub struct Params<'a>(&'a [Param]);

impl<'a> Params<'a> {
    pub fn new(params: &'a [Param]) -> Self {
        Params(params)
    }

    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.0
            .iter()
            .rev()
            .find(|p| p.key == key)
            .map(|p| p.value.trim())
    }

    /// A number in `[min, max]`; `default` when the key is missing.
    pub fn number(&self, key: &str, default: f64, min: f64, max: f64) -> Result<f64, String> {
        self.parsed(key, default, min, max, "a number")
    }

    /// A number in [0, 1] (a threshold, a ratio); `default` when the key is missing.
    pub fn unit(&self, key: &str, default: f64) -> Result<f64, String> {
        self.number(key, default, 0.0, 1.0)
    }

    /// A whole number in `[min, max]`; `default` when the key is missing.
    pub fn integer(&self, key: &str, default: u64, min: u64, max: u64) -> Result<u64, String> {
        self.parsed(key, default, min, max, "a whole number")
    }

    fn parsed<T>(&self, key: &str, default: T, min: T, max: T, what: &str) -> Result<T, String>
    where
        T: FromStr + PartialOrd + Display,
    {
        let Some(value) = self.get(key) else {
            return Ok(default);
        };
        match value.parse::<T>() {
            Ok(v) if min <= v && v <= max => Ok(v),
            _ => Err(format!(
                "parameter `{key}` is {value:?}: expected {what} in [{min}, {max}]"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Vec<Param> {
        pairs
            .iter()
            .map(|(k, v)| Param {
                key: k.to_string(),
                value: v.to_string(),
            })
            .collect()
    }

    #[test]
    fn detections_are_sedna_rows_end_to_end() {
        let mut found = Detections::new();
        found.push([1.0, 2.0, 3.0, 4.0], 0.5, 7);
        found.push([5.0, 6.0, 7.0, 8.0], 0.25, 0);
        assert_eq!(found.rows[..6], [1.0, 2.0, 3.0, 4.0, 0.5, 7.0]);
        assert_eq!(found.len(), 2);
        assert_eq!(found.scores().collect::<Vec<_>>(), [0.5, 0.25]);
        assert_eq!(found.rows().nth(1), Some(([5.0, 6.0, 7.0, 8.0], 0.25, 0)));
        found.rows.push(9.0);
        assert_eq!(found.len(), 2, "a partial row is not a box");
    }

    #[test]
    fn numbers_are_parsed_and_range_checked() {
        let p = params(&[
            ("a", " 0.25 "),
            ("b", "1.5"),
            ("c", "x"),
            ("n", "7"),
            ("a", "0.75"),
        ]);
        let p = Params::new(&p);
        assert_eq!(p.unit("a", 0.5), Ok(0.75));
        assert_eq!(p.unit("missing", 0.5), Ok(0.5));
        let err = p.unit("b", 0.5).unwrap_err();
        assert!(
            err.contains("`b`") && err.contains("1.5") && err.contains("[0, 1]"),
            "{err}"
        );
        assert!(p.unit("c", 0.5).is_err());
        assert_eq!(p.integer("n", 1, 1, 10), Ok(7));
        assert!(p.integer("n", 1, 1, 5).is_err());
        assert!(p.integer("a", 1, 0, 5).is_err());
    }
}
