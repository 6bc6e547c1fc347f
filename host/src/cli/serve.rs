//! `sedna run --listen`: the job's HTTP API ([`crate::server`]).

use std::path::PathBuf;

use clap::Args;

use super::Context;
use crate::learn::LocalJob;
use crate::plugin::Runtime;
use crate::server::{ConnectionLimits, DEFAULT_LISTEN, DEFAULT_MAX_UPLOAD, Service, Token};

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
}

impl ServeArgs {
    /// Starts the API over `job` when `--listen` was given.
    pub fn start(
        &self,
        context: &Context,
        runtime: &Runtime,
        job: &LocalJob,
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
        let service = Service::new(runtime.clone(), context.store()?, token, vec![job.handle()])
            .max_upload(self.max_upload)
            .connection_limits(ConnectionLimits {
                max_connections: self.max_connections.max(1),
                header_timeout: std::time::Duration::from_millis(self.header_timeout_ms.max(1)),
                ..ConnectionLimits::default()
            });
        let bound = service.start(addr)?;
        println!("serving the API on http://{bound}");
        Ok(())
    }
}
