//! A labelled sample of a data index: what datasets hold and estimators train on.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// One labelled sample.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// 1-based line number in the index.
    pub line: u64,
    pub image: PathBuf,
    pub label: Label,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Label {
    /// Boxes `[x1, y1, x2, y2]` with a class index each.
    Boxes(Vec<([f32; 4], u32)>),
    /// A class, by name or index as the index writes it.
    Class(String),
}
