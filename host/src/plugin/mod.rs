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
//! - [`compile`]: compiling a component in a bounded, cancellable child process.
//! - [`json`]: predictions as JSON lines (`sedna plugin test`, hard-example records).
//!
//! Inside: `bindings.rs` holds only what `bindgen!` generates; `host/` the host side of
//! each imported interface, a file each; `state.rs` what an instance's store holds;
//! `world.rs` the [`World`] trait and `worlds.rs` each world's typed calls;
//! `resources.rs` what a guest holds by handle. Imports [`crate::media`] and
//! [`crate::spec`]; nothing above.

mod bindings;
mod cache;
pub mod compile;
mod detections;
mod engine;
mod error;
mod host;
pub mod inspect;
mod instance;
pub mod json;
#[cfg(feature = "server")]
pub mod oci;
mod resources;
mod sandbox;
pub mod screen;
mod slot;
mod state;
mod store;
mod values;
mod world;
mod worlds;

pub use bindings::types::{Detections, Metric, Param, Prediction};
pub use bindings::{inference, log, types};
pub use cache::{CacheOutcome, ComponentCache};
pub use detections::ROW;
pub use engine::{Runtime, RuntimeConfig, run_compile_child};
pub use error::{Cause, ErrorCounts, PluginError};
pub use instance::{Instance, Plugin};
pub use sandbox::{DirGrant, ProgressSink, Sandbox};
pub use slot::Slot;
pub use state::HostState;
pub use store::{BUILTINS, Builtin, PluginStore, Source, StoredPlugin, check_name};
pub use values::{MetricMap, deltas, metric_map, metrics_of, params, setting};
pub use world::{WORLDS, World};
pub use worlds::{Estimator, Hem, TriggerCondition};
