//! The command line's side of a host's HTTP API (`sedna run --listen`): `sedna plugin
//! push`, and `sedna plugin list|rm` and `sedna status` with `--host`.

//!
//! Without the `server` feature there is no client: `--host` says so, and nothing else
//! changes.

#[cfg(not(feature = "server"))]
use std::path::Path;
use std::path::PathBuf;

use clap::Args;
#[cfg(not(feature = "server"))]
use serde::{Serialize, de::DeserializeOwned};

#[cfg(feature = "server")]
pub use client::Remote;

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

#[cfg(feature = "server")]
mod client {
    use std::path::Path;
    use std::time::Duration;

    use anyhow::{Context as _, bail};
    use serde::Serialize;
    use serde::de::DeserializeOwned;

    use crate::server::ErrorBody;

    /// How long a call may take; an upload of a large component on a slow link needs a while.
    const TIMEOUT: Duration = Duration::from_secs(300);

    /// A host's API.
    pub struct Remote {
        base: String,
        token: Option<String>,
        agent: ureq::Agent,
    }

    impl Remote {
        /// The API at `url` (`http://` is assumed when no scheme is given).
        pub fn connect(url: &str, token_file: Option<&Path>, home: &Path) -> anyhow::Result<Self> {
            let base = match url.split_once("://") {
                None => format!("http://{url}"),
                Some(("http", _)) => url.to_string(),
                Some(_) => bail!(
                    "--host {url}: only http:// is spoken here; put a TLS-terminating proxy in front of the host and reach it on its local address"
                ),
            };
            let token = match token_file {
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
            };
            let agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(TIMEOUT))
                .build()
                .into();
            Ok(Remote {
                base: base.trim_end_matches('/').to_string(),
                token,
                agent,
            })
        }

        pub fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
            let response = self.agent.get(self.url(path)).call();
            self.answer(path, response)
        }

        /// Uploads `body` (a component) with `PUT`.
        pub fn put_bytes<T: DeserializeOwned>(&self, path: &str, body: &[u8]) -> anyhow::Result<T> {
            let response = self
                .authorised(self.agent.put(self.url(path)))
                .content_type("application/wasm")
                // So that a host refusing it (too large, no token) answers before the body goes.
                .header("Expect", "100-continue")
                .send(body);
            self.answer(path, response)
        }

        pub fn put_json<T: DeserializeOwned>(
            &self,
            path: &str,
            body: &impl Serialize,
        ) -> anyhow::Result<T> {
            let response = self
                .authorised(self.agent.put(self.url(path)))
                .send_json(body);
            self.answer(path, response)
        }

        pub fn delete(&self, path: &str) -> anyhow::Result<()> {
            let response = self.authorised(self.agent.delete(self.url(path))).call();
            self.answer::<serde::de::IgnoredAny>(path, response)
                .map(drop)
        }

        fn url(&self, path: &str) -> String {
            format!("{}{path}", self.base)
        }

        fn authorised<B>(&self, request: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
            match &self.token {
                Some(token) => request.header("Authorization", format!("Bearer {token}")),
                None => request,
            }
        }

        /// The response's JSON, or the host's error as it wrote it.
        fn answer<T: DeserializeOwned>(
            &self,
            path: &str,
            response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
        ) -> anyhow::Result<T> {
            let mut response =
                response.with_context(|| format!("cannot reach the host at {}", self.base))?;
            let status = response.status();
            let body = response
                .body_mut()
                .read_to_string()
                .with_context(|| format!("{}{path}: cannot read the answer", self.base))?;
            if status.is_success() {
                let body = if body.is_empty() { "null" } else { &body };
                return serde_json::from_str(body).with_context(|| {
                    format!("{}{path}: the answer is not what was expected", self.base)
                });
            }
            match serde_json::from_str::<ErrorBody>(&body) {
                Ok(e) => bail!("{} ({status}, {})", e.detail, e.error),
                Err(_) => bail!("{}{path}: {status}: {}", self.base, body.trim()),
            }
        }
    }
}

/// No client in a build without the `server` feature: the type has no values.
#[cfg(not(feature = "server"))]
pub enum Remote {}

#[cfg(not(feature = "server"))]
impl Remote {
    pub fn connect(url: &str, _: Option<&Path>, _: &Path) -> anyhow::Result<Self> {
        anyhow::bail!(
            "--host {url}: this sedna was built without the `server` feature, so it cannot reach a host; use a build with default features"
        )
    }

    pub fn get<T: DeserializeOwned>(&self, _: &str) -> anyhow::Result<T> {
        match *self {}
    }

    pub fn put_bytes<T: DeserializeOwned>(&self, _: &str, _: &[u8]) -> anyhow::Result<T> {
        match *self {}
    }

    pub fn put_json<T: DeserializeOwned>(&self, _: &str, _: &impl Serialize) -> anyhow::Result<T> {
        match *self {}
    }

    pub fn delete(&self, _: &str) -> anyhow::Result<()> {
        match *self {}
    }
}
