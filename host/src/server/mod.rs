//! The host as a service (`sedna run --listen`): an HTTP API, under `/v1`, to upload
//! plugins into the store, bind them to a running job's slots and read the jobs' status;
//! `GET /metrics` for Prometheus and `GET /healthz`.
//!
//! Reads are open; every call that changes something needs the host's bearer token.
//! Errors are JSON `{error, detail}` with a status that says what went wrong: 400 a bad
//! name or request, 401 no or a wrong token, 404 no such plugin, job or slot, 409 a slot
//! the job does not have, 413 a body over the limit, 422 a component that is not one,
//! implements the wrong world, or fails to start.

mod auth;
pub mod metrics;
mod routes;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;

pub use auth::Token;
pub use routes::{Bound, HttpError, Uploaded};

use crate::learn::JobHandle;
use crate::plugin::{PluginStore, Runtime};

/// Where `sedna run --listen` serves when given no address: this machine only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9301";
/// The largest component an upload may carry, by default.
pub const DEFAULT_MAX_UPLOAD: usize = 64 << 20;

/// What the API serves: the plugin store, the runtime that checks and precompiles
/// uploads, and the jobs running in this process.
pub struct Service {
    runtime: Runtime,
    store: PluginStore,
    token: Token,
    jobs: Vec<JobHandle>,
    max_upload: usize,
    /// Held by a bind and by a removal, so that a plugin cannot be removed while a bind
    /// of it is on its way into a slot.
    binding: std::sync::Mutex<()>,
}

impl Service {
    pub fn new(runtime: Runtime, store: PluginStore, token: Token, jobs: Vec<JobHandle>) -> Self {
        Service {
            runtime,
            store,
            token,
            jobs,
            max_upload: DEFAULT_MAX_UPLOAD,
            binding: Default::default(),
        }
    }

    /// Sets the largest component an upload may carry.
    pub fn max_upload(mut self, bytes: usize) -> Self {
        self.max_upload = bytes;
        self
    }

    /// Binds `addr` (port 0 picks a free port) and serves on threads of its own until the
    /// process ends. Returns the address bound.
    pub fn start(self, addr: SocketAddr) -> anyhow::Result<SocketAddr> {
        let listener = std::net::TcpListener::bind(addr)
            .with_context(|| format!("cannot listen on {addr} (--listen)"))?;
        listener.set_nonblocking(true)?;
        let bound = listener.local_addr()?;
        let threads = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("sedna-http")
            .enable_io()
            .enable_time()
            .build()?;
        let app = routes::router(Arc::new(self));
        std::thread::Builder::new()
            .name("sedna-http".into())
            .spawn(move || {
                threads.block_on(async move {
                    let served = match tokio::net::TcpListener::from_std(listener) {
                        Ok(listener) => axum::serve(listener, app).await,
                        Err(e) => Err(e),
                    };
                    if let Err(e) = served {
                        tracing::error!("the HTTP service on {bound} stopped: {e}");
                    }
                })
            })?;
        Ok(bound)
    }
}
