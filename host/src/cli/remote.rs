//! The command line's side of a host's HTTP API (`sedna run --listen`): `sedna plugin
//! push`, and `sedna plugin list|rm` and `sedna status` with `--host`. Without the `server`
//! feature there is no client: `--host` says so, and nothing else changes.

use std::path::{Path, PathBuf};

use clap::Args;

#[derive(Args, Clone, Default)]
pub struct HostArgs {
    /// A running host's API (`sedna run --listen`), e.g. http://edge-1:9301.
    #[arg(long, env = "SEDNA_HOST", value_name = "URL")]
    pub host: Option<String>,
    /// The host's token, for calls that change it; else `SEDNA_TOKEN`, else the token
    /// file in the data directory (a host on this machine wrote it there).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

/// The token to call with: `--token-file`, else `SEDNA_TOKEN`, else `<home>/token`.
#[cfg(feature = "server")]
fn token(token_file: Option<&Path>, home: &Path) -> anyhow::Result<Option<String>> {
    use anyhow::Context as _;
    Ok(match token_file {
        Some(file) => Some(
            std::fs::read_to_string(file)
                .with_context(|| format!("cannot read the token file {}", file.display()))?
                .trim()
                .to_string(),
        ),
        None => std::env::var("SEDNA_TOKEN").ok().or_else(|| {
            std::fs::read_to_string(home.join("token"))
                .ok()
                .map(|t| t.trim().to_string())
        }),
    })
}

/// The host at `url`.
#[cfg(feature = "server")]
pub fn connect(url: &str, token_file: Option<&Path>, home: &Path) -> anyhow::Result<Remote> {
    Remote::connect(url, token(token_file, home)?)
}

#[cfg(feature = "server")]
pub use crate::server::client::Client as Remote;

/// No client in a build without the `server` feature: the type has no values.
#[cfg(not(feature = "server"))]
pub enum Remote {}

/// Without the `server` feature: an error that says so.
#[cfg(not(feature = "server"))]
pub fn connect(url: &str, _: Option<&Path>, _: &Path) -> anyhow::Result<Remote> {
    anyhow::bail!(
        "--host {url}: this sedna was built without the `server` feature, so it cannot reach a host; use a build with default features"
    )
}

#[cfg(not(feature = "server"))]
impl Remote {
    pub fn get<T: serde::de::DeserializeOwned>(&self, _: &str) -> anyhow::Result<T> {
        match *self {}
    }

    pub fn put_bytes<T: serde::de::DeserializeOwned>(
        &self,
        _: &str,
        _: &[u8],
    ) -> anyhow::Result<T> {
        match *self {}
    }

    pub fn put_json<T: serde::de::DeserializeOwned>(
        &self,
        _: &str,
        _: &impl serde::Serialize,
    ) -> anyhow::Result<T> {
        match *self {}
    }

    pub fn delete(&self, _: &str) -> anyhow::Result<()> {
        match *self {}
    }
}
