//! `sedna run --listen`: the job's HTTP API ([`crate::server`]).

use std::path::PathBuf;

use clap::Args;

use super::Context;
use crate::learn::JobHandle;
use crate::plugin::Runtime;
use crate::server::tls::ServerTls;
use crate::server::{
    ConnectionLimits, DEFAULT_LISTEN, DEFAULT_MAX_COMPILES, DEFAULT_MAX_TOKEN_FAILURES,
    DEFAULT_MAX_UPLOAD, Service, Token,
};

#[derive(Args)]
pub struct ServeArgs {
    /// Serve the HTTP API (plugin upload and binding, status, /metrics) on ADDR; without
    /// ADDR on 127.0.0.1:9301, this machine only.
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = DEFAULT_LISTEN)]
    listen: Option<std::net::SocketAddr>,
    /// The API's token, for calls that change the host; by default one made at the first
    /// start and kept in the data directory (mode 0600).
    #[arg(long, value_name = "FILE", requires = "listen")]
    token_file: Option<PathBuf>,
    /// The largest component the API accepts, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_UPLOAD, requires = "listen")]
    max_upload: usize,
    /// Connections the API serves at once (others wait; a reserve of descriptors is kept
    /// for the job whatever this says).
    #[arg(long, value_name = "N", default_value_t = ConnectionLimits::default().max_connections, requires = "listen")]
    max_connections: usize,
    /// Milliseconds a client has to send a request's headers, and a kept-alive connection
    /// may idle.
    #[arg(long, value_name = "MS", default_value_t = ConnectionLimits::default().header_timeout.as_millis() as u64, requires = "listen")]
    header_timeout_ms: u64,
    /// Uploads checked and compiled at once; more are refused (503, retry) so that
    /// uploads cannot take every core from the job.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_COMPILES, requires = "listen")]
    max_compiles: usize,
    /// Calls with a wrong or no token a client address may make a minute; past that its
    /// calls that need the token are refused (429) until the minute is over.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_TOKEN_FAILURES, requires = "listen")]
    max_token_failures: u32,
    /// Serve HTTPS with this certificate (PEM, the chain from the host's own), with
    /// --tls-key.
    #[arg(long, value_name = "FILE", requires_all = ["listen", "tls_key"], conflicts_with = "tls_self_signed")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve HTTPS with a self-signed certificate made at the first start and kept in
    /// the data directory (tls/); its SHA-256 fingerprint is printed then, for clients'
    /// --pin.
    #[arg(long, requires = "listen")]
    tls_self_signed: bool,
}

impl ServeArgs {
    /// Starts the API over `jobs` when `--listen` was given.
    pub fn start(
        &self,
        context: &Context,
        runtime: &Runtime,
        jobs: Vec<JobHandle>,
    ) -> anyhow::Result<()> {
        let Some(addr) = self.listen else {
            return Ok(());
        };
        let token = match &self.token_file {
            Some(file) => Token::read(file)?,
            None => {
                let file = context.home.join("token");
                let (token, made) = Token::read_or_create(&file)?;
                if made {
                    println!(
                        "API token (printed once; kept in {}, mode 0600): {}",
                        file.display(),
                        token.as_str()
                    );
                }
                token
            }
        };
        let tls = self.tls(context, addr)?;
        let service = Service::new(runtime.clone(), context.store()?, token, jobs)
            .max_upload(self.max_upload)
            .max_token_failures(self.max_token_failures)
            .max_compiles(self.max_compiles)
            .connection_limits(ConnectionLimits {
                max_connections: self.max_connections.max(1),
                header_timeout: std::time::Duration::from_millis(self.header_timeout_ms.max(1)),
                ..ConnectionLimits::default()
            });
        let scheme = if tls.is_some() { "https" } else { "http" };
        if tls.is_none() && !addr.ip().is_loopback() {
            eprintln!(
                "WARNING: serving the API on {addr} in plain HTTP: anyone on the network can read the token and the plugins it carries. Serve HTTPS with --tls-cert and --tls-key, or --tls-self-signed."
            );
        }
        let bound = service.start(addr, tls.map(|t| t.config))?;
        println!("serving the API on {scheme}://{bound}");
        Ok(())
    }

    /// The certificate to serve, if any; a self-signed one made now is announced with its
    /// fingerprint.
    fn tls(
        &self,
        context: &Context,
        addr: std::net::SocketAddr,
    ) -> anyhow::Result<Option<ServerTls>> {
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            return ServerTls::load(cert, key).map(Some);
        }
        if !self.tls_self_signed {
            return Ok(None);
        }
        let mut names = vec![hostname()];
        if !addr.ip().is_unspecified() {
            names.push(addr.ip().to_string());
        }
        let dir = context.home.join("tls");
        let (tls, made) = ServerTls::self_signed(&dir, &names)?;
        if made {
            println!(
                "TLS certificate (printed once; kept in {}): SHA-256 fingerprint {}",
                dir.display(),
                tls.fingerprint
            );
        }
        tracing::info!(
            "serving with the certificate of fingerprint {}",
            tls.fingerprint
        );
        Ok(Some(tls))
    }
}

/// This machine's name, for its self-signed certificate (empty when it has none).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .unwrap_or_default()
}
