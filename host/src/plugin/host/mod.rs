//! The host side of each WIT interface the plugins import, one file an interface (as
//! wasmtime-wasi does): `types`, `log`, `inference`, `training`.

mod inference;
mod log;
mod training;
mod types;
