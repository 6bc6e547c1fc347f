//! What the API's calls answer, as the host writes them and the CLI reads them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::plugin::StoredPlugin;

/// A failed call's body: `{error, detail}`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    /// A short stable code, e.g. `wrong_world`.
    pub error: String,
    /// What went wrong and what to do, for people.
    pub detail: String,
}

/// What an upload stored, and how long its checks and precompilation took.
#[derive(Debug, Serialize, Deserialize)]
pub struct Uploaded {
    pub plugin: StoredPlugin,
    pub compile_ms: f64,
}

/// What a bind swapped in, and how long loading, checking and swapping took.
#[derive(Debug, Serialize, Deserialize)]
pub struct Bound {
    pub job: String,
    pub slot: String,
    pub plugin: String,
    pub sha256: String,
    pub took_ms: f64,
}

/// What a rollback returned a slot to: the plugin it holds now (`None`: a trigger slot
/// with no plugin).
#[derive(Debug, Serialize, Deserialize)]
pub struct RolledBack {
    pub job: String,
    pub slot: String,
    pub plugin: Option<String>,
}

/// The body of `PUT /v1/jobs/{job}/slots/{slot}`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindRequest {
    /// A stored plugin (`name@version`, or a name stored in one version) or a built-in.
    pub plugin: String,
    /// The plugin's `init` parameters; by default, for the worker's slots, the serving
    /// plugin's.
    pub params: Option<BTreeMap<String, String>>,
}
