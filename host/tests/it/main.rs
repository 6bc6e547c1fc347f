//! The host's integration tests, as one test binary.
//!
//! Each file under `tests/` used to be a test binary of its own, and each of them linked
//! the whole host (wasmtime, ONNX Runtime, tract, kube, ...): seventeen slow links per
//! change and gigabytes of target directory. Here every former binary is a module, and
//! `support` holds what they share. `cargo test -p sedna --test it` runs them all;
//! `cargo test -p sedna --test it -- run::` runs one module. Without the `cluster` or the
//! `server` feature their tests are left out.

mod support;

mod cache;
mod camera;
mod cli;
#[cfg(feature = "cluster")]
mod cluster;
mod deploy;
mod estimator;
mod examples;
mod hem;
mod infer;
mod label;
mod layers;
#[cfg(feature = "server")]
mod oci;
mod properties;
#[cfg(feature = "server")]
mod routes;
mod run;
mod sandbox;
#[cfg(feature = "server")]
mod serve;
mod spec;
mod storage;
mod swap;
mod trigger;
mod video;
mod worker;
