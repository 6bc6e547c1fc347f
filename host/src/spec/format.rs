//! Formats of Sedna's data indexes.

use serde::{Deserialize, Serialize};

/// A data index's format: `txt` (`image label...` per line) or `csv`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Txt,
    Csv,
}
