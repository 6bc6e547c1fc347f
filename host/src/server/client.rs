//! A client of the API, for the command line's `--host` and `sedna plugin push`: the
//! calls' JSON, or the host's error as it wrote it.

use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::server::ErrorBody;

/// How long a call may take; an upload of a large component on a slow link needs a while.
const TIMEOUT: Duration = Duration::from_secs(300);

/// A host's API.
pub struct Client {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl Client {
    /// The API at `url` (`http://` is assumed when no scheme is given), calling with
    /// `token` when it has one.
    pub fn connect(url: &str, token: Option<String>) -> anyhow::Result<Self> {
        let base = match url.split_once("://") {
            None => format!("http://{url}"),
            Some(("http", _)) => url.to_string(),
            Some(_) => bail!(
                "--host {url}: only http:// is spoken here; put a TLS-terminating proxy in front of the host and reach it on its local address"
            ),
        };
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(TIMEOUT))
            .build()
            .into();
        Ok(Client {
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
