//! The host side of each WIT interface the plugins import, one file an interface (as
//! wasmtime-wasi does): `log` (and `types`), `inference`.

mod inference;
mod log;
