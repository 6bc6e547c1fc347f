//! The host as a service (`sedna run --listen`): an HTTP API, under `/v1`, to upload
//! plugins into the store, bind them to a running job's slots and read the jobs' status;
//! `GET /metrics` for Prometheus and `GET /healthz`.
//!
//! Reads are open; every call that changes something needs the host's bearer token.
//! Errors are JSON `{error, detail}` with a status that says what went wrong: 400 a bad
//! name or request, 401 no or a wrong token, 404 no such plugin, job or slot, 409 a slot
//! the job does not have, 413 a body over the limit, 422 a component that is not one,
//! implements the wrong world, or fails to start.
//!
//! Without the `server` feature only [`wire`] is built: what the calls answer.

#[cfg(feature = "server")]
mod auth;
#[cfg(feature = "server")]
pub mod client;
#[cfg(feature = "server")]
mod error;
#[cfg(feature = "server")]
pub mod metrics;
#[cfg(feature = "server")]
mod routes;
#[cfg(feature = "server")]
mod service;
pub mod wire;

#[cfg(feature = "server")]
pub use auth::Token;
#[cfg(feature = "server")]
pub use error::HttpError;
#[cfg(feature = "server")]
pub use routes::router;
#[cfg(feature = "server")]
pub use service::{DEFAULT_MAX_UPLOAD, Service};
pub use wire::{BindRequest, Bound, ErrorBody, Uploaded};

/// Where `sedna run --listen` serves when given no address, and where `sedna plugin push`
/// looks without `--host`: this machine only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9301";

#[cfg(feature = "server")]
impl Service {
    /// Binds `addr` (port 0 picks a free port) and serves on threads of its own until the
    /// process ends. Returns the address bound.
    pub fn start(self, addr: std::net::SocketAddr) -> anyhow::Result<std::net::SocketAddr> {
        use anyhow::Context as _;
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
        let app = router(std::sync::Arc::new(self));
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
