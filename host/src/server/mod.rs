//! The host as a service (`sedna run --listen`): an HTTP API (HTTPS with [`tls`]), under
//! `/v1`, to upload plugins into the store, bind them to a running job's slots and read the
//! jobs' status; `GET /metrics` for Prometheus and `GET /healthz`.
//!
//! Reads are open; every call that changes something needs the host's bearer token.
//! Errors are JSON `{error, detail}` with a status that says what went wrong: 400 a bad
//! name or request, 401 no or a wrong token, 429 too many of those, 404 no such plugin,
//! job or slot, 409 a slot the job does not have, 413 a body over the limit, 422 a
//! component that is not one, implements the wrong world, or fails to start.
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
#[cfg(feature = "server")]
pub mod tls;
pub mod wire;

#[cfg(feature = "server")]
pub use auth::Token;
#[cfg(feature = "server")]
pub use error::HttpError;
#[cfg(feature = "server")]
pub use routes::router;
#[cfg(feature = "server")]
pub use service::{
    ConnectionLimits, DEFAULT_MAX_COMPILES, DEFAULT_MAX_TOKEN_FAILURES, DEFAULT_MAX_UPLOAD,
    RESERVED_DESCRIPTORS, Service,
};
pub use wire::{BindRequest, Bound, ErrorBody, RolledBack, Uploaded};

/// Where `sedna run --listen` serves when given no address, and where `sedna plugin push`
/// looks without `--host`: this machine only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9301";

#[cfg(feature = "server")]
impl Service {
    /// Binds `addr` (port 0 picks a free port) and serves, over TLS when given `tls`, on
    /// threads of its own until the process ends, within the service's
    /// [`ConnectionLimits`]. Returns the address bound.
    pub fn start(
        self,
        addr: std::net::SocketAddr,
        tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    ) -> anyhow::Result<std::net::SocketAddr> {
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
        let mut limits = self.limits;
        limits.max_connections = limits.max_connections_within(descriptor_limit());
        if limits.max_connections < self.limits.max_connections {
            tracing::warn!(
                "serving at most {} connections, not {}: the descriptor limit keeps {RESERVED_DESCRIPTORS} for the job (raise it with ulimit -n)",
                limits.max_connections,
                self.limits.max_connections
            );
        }
        let app = router(std::sync::Arc::new(self));
        let tls = tls.map(tokio_rustls::TlsAcceptor::from);
        std::thread::Builder::new()
            .name("sedna-http".into())
            .spawn(move || {
                threads.block_on(async move {
                    match tokio::net::TcpListener::from_std(listener) {
                        Ok(listener) => serve(listener, app, limits, tls).await,
                        Err(e) => tracing::error!("the HTTP service on {bound} stopped: {e}"),
                    }
                })
            })?;
        Ok(bound)
    }
}

/// The process's limit on open descriptors (its soft limit).
#[cfg(feature = "server")]
fn descriptor_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 1024;
    }
    limit.rlim_cur
}

/// Accepts connections while fewer than `limits.max_connections` are open, and serves
/// each with HTTP/1.1 (over TLS when given `tls`) within the header timeout and the
/// lifetime.
#[cfg(feature = "server")]
async fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    limits: ConnectionLimits,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let open = std::sync::Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    loop {
        let Ok(permit) = open.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors, most likely: wait rather than spin.
                tracing::warn!("the HTTP service cannot accept a connection: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let (app, tls) = (app.clone(), tls.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let connection = async move {
                let Some(tls) = tls else {
                    return serve_connection(stream, peer, app, limits).await;
                };
                // A handshake is held to the header timeout: one begun and left holds
                // nothing for long.
                match tokio::time::timeout(limits.header_timeout, tls.accept(stream)).await {
                    Ok(Ok(stream)) => serve_connection(stream, peer, app, limits).await,
                    Ok(Err(e)) => tracing::info!("a TLS handshake from {peer} failed: {e}"),
                    Err(_) => tracing::info!("a TLS handshake from {peer} timed out"),
                }
            };
            // Past its lifetime the connection is dropped, whatever it was doing.
            let _ = tokio::time::timeout(limits.lifetime, connection).await;
        });
    }
}

/// Serves one connection from `peer` (whose address the routes see as `ConnectInfo`).
#[cfg(feature = "server")]
async fn serve_connection<Io>(
    io: Io,
    peer: std::net::SocketAddr,
    app: axum::Router,
    limits: ConnectionLimits,
) where
    Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tower::ServiceExt as _;
    let service = hyper::service::service_fn(move |mut request: hyper::Request<_>| {
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo(peer));
        app.clone().oneshot(request.map(axum::body::Body::new))
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .serve_connection(TokioIo::new(io), service)
        .await;
}
