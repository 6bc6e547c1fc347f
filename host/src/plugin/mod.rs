//! The component runtime: loading, caching, sandboxing and hot-swapping plugins.
//!
//! - [`Runtime`]: the process's one wasmtime engine (component model, pooling allocator,
//!   epoch interruption) with its precompiled-component cache.
//! - [`Plugin`]: one plugin loaded for one world, with its parameters and sandbox; calls
//!   run on a pool of instances, and a failed call never harms the next one.
//! - [`Slot`]: a hot-swappable plugin; `replace` loads and smoke-tests the new version
//!   before swapping it in atomically.
//! - [`PluginStore`]: the content-addressed store of uploaded plugins plus the built-ins.
//! - [`inspect`]: what a component file is and which world it implements.
//! - [`json`]: predictions as JSON lines (`sedna plugin test`, hard-example records).

mod cache;
mod engine;
mod error;
mod host;
mod inference;
pub mod inspect;
mod instance;
pub mod json;
mod sandbox;
mod slot;
mod store;
pub mod worlds;

pub use cache::{CacheOutcome, ComponentCache};
pub use engine::{Runtime, RuntimeConfig};
pub use error::{Cause, PluginError, error_counts};
pub use host::HostState;
pub use instance::{Instance, Plugin, World};
pub use sandbox::{DirGrant, Sandbox};
pub use slot::Slot;
pub use store::{BUILTINS, Builtin, PluginStore, Source, StoredPlugin, check_name};
pub use worlds::types::{Detections, Metric, Param, Prediction};
pub use worlds::{Estimator, Hem, TriggerCondition};
