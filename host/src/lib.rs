//! Sedna for Rust: incremental learning on edge devices.
//!
//! A native host that runs KubeEdge Sedna's incremental-learning loop and loads its
//! algorithms (estimators, hard-example miners, trigger conditions) as sandboxed
//! WebAssembly components defined by the WIT contract in `wit/`.

pub mod api;
pub mod cli;
pub mod cluster;
pub mod files;
pub mod infer;
pub mod learn;
pub mod metrics;
pub mod plugin;
pub mod server;
