//! Sedna for Rust: incremental learning on edge devices.
//!
//! A native host that runs KubeEdge Sedna's incremental-learning loop and loads its
//! algorithms (estimators, hard-example miners, trigger conditions) as sandboxed
//! WebAssembly components defined by the WIT contract in `wit/`.
//!
//! # Layers
//!
//! Each folder owns one concern and imports only the layers below it (top to bottom, the
//! way data flows: source -> frame -> estimator -> HEM -> hard examples -> labels ->
//! dataset -> trigger -> train -> eval -> deploy):
//!
//! | layer        | owns                                                                 | imports |
//! |--------------|----------------------------------------------------------------------|---------|
//! | [`cli`]      | clap types and dispatch                                              | all below |
//! | [`server`]   | the HTTP API: `router()`, typed errors, auth, `/metrics`, its client (feature `server`) | learn and below |
//! | [`cluster`]  | Kubernetes: the Pod env contract, controller, agent, worker bodies (feature `cluster`) | learn and below |
//! | [`learn`]    | the job: setup, stages, output layout, run loop, state, dataset, split, triggers, status, labels | pipeline and below |
//! | [`pipeline`] | frame sources, the inference worker, hard-example store, results log | plugin and below |
//! | [`plugin`]   | the component runtime: engine, cache, store, sandbox, slots, worlds, host interfaces, OCI registries | train, media, net, spec |
//! | [`train`]    | the training engine: a model's graph with trainable weights, forward, backward, losses, optimizers, export | media |
//! | [`media`]    | ONNX backends, models, sessions, tensors, images, video, samples     | files |
//! | [`storage`]  | object storage: `s3://`, `http(s)://` and local locations, credentials, the download cache | files |
//! | [`net`]      | HTTP/1.1 requests over TCP or TLS, and how servers are trusted (feature `server`) | files |
//! | [`spec`]     | Sedna's resources and value types (conditions, timers, stages)       | nothing |
//!
//! [`files`], [`metrics`] and [`threads`] sit beside [`spec`] at the bottom, for every
//! layer: atomic writes, counters and histograms, background threads. [`cluster`] and [`server`] do not import each other.
//! No file imports a layer above its own, and no two files import each other, even through
//! others: `tests/it/layers.rs` checks both on the source.

pub mod cli;
#[cfg(feature = "cluster")]
pub mod cluster;
pub mod files;
pub mod learn;
pub mod media;
pub mod metrics;
#[cfg(feature = "server")]
pub mod net;
pub mod pipeline;
pub mod plugin;
pub mod server;
pub mod spec;
pub mod storage;
pub mod threads;
pub mod train;
