//! A client of the API, for the command line's `--host` and `sedna plugin push`: the
//! calls' JSON, or the host's error as it wrote it, over [`crate::net`]. Plain HTTP goes
//! only to this machine unless the user accepts sending the token in clear
//! (`--insecure`).

use anyhow::{Context as _, bail};
use bytes::Bytes;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, EXPECT, HeaderValue};
use hyper::{HeaderMap, Method};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::ErrorBody;
use crate::net::{Http, Trust};

/// How the client may reach a host: how it trusts one over HTTPS, and whether plain HTTP
/// to another machine is accepted.
#[derive(Clone, Debug, Default)]
pub struct Security {
    pub trust: Trust,
    pub insecure: bool,
}

/// A host's API.
pub struct Client {
    base: url::Url,
    token: Option<String>,
    http: Http,
}

/// Whether `url` (as `--host` takes it) names this machine: `localhost` or a loopback
/// address. Names are not resolved: any other is another machine.
pub fn is_loopback(url: &str) -> bool {
    parse(url).is_ok_and(|u| match u.host() {
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    })
}

/// `url` with `http://` when it has no scheme.
fn parse(url: &str) -> anyhow::Result<url::Url> {
    let full = if url.contains("://") {
        url.to_string()
    } else {
        format!("http://{url}")
    };
    url::Url::parse(&full).with_context(|| format!("--host {url}: not a URL"))
}

impl Client {
    /// The API at `url` (`http://` is assumed when no scheme is given), calling with
    /// `token` when it has one.
    pub fn connect(url: &str, token: Option<String>, security: &Security) -> anyhow::Result<Self> {
        let base = parse(url)?;
        match base.scheme() {
            "https" => {}
            "http" if is_loopback(url) || security.insecure => {}
            "http" => bail!(
                "--host {url}: plain http:// to another machine would send the token and the plugins in clear; use https:// (the host serves it with --tls-cert and --tls-key, or --tls-self-signed), or pass --insecure to send them anyway"
            ),
            other => bail!("--host {url}: {other}:// is not spoken here; use https:// or http://"),
        }
        Ok(Client {
            base,
            token,
            http: Http::new(security.trust.clone())?,
        })
    }

    pub fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.call(Method::GET, path, None)
    }

    /// Uploads `body` (a component) with `PUT`.
    pub fn put_bytes<T: DeserializeOwned>(&self, path: &str, body: &[u8]) -> anyhow::Result<T> {
        let body = Bytes::copy_from_slice(body);
        self.call(Method::PUT, path, Some(("application/wasm", body)))
    }

    pub fn put_json<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> anyhow::Result<T> {
        let body = Bytes::from(serde_json::to_vec(body)?);
        self.call(Method::PUT, path, Some(("application/json", body)))
    }

    /// `POST` with no body (an action on the resource at `path`).
    pub fn post<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.call(Method::POST, path, None)
    }

    pub fn delete(&self, path: &str) -> anyhow::Result<()> {
        self.call::<serde::de::IgnoredAny>(Method::DELETE, path, None)
            .map(drop)
    }

    /// One call: the answer's JSON, or the host's error.
    fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<(&'static str, Bytes)>,
    ) -> anyhow::Result<T> {
        let base = self.base.as_str().trim_end_matches('/');
        let url = url::Url::parse(&format!("{base}{path}"))
            .with_context(|| format!("{base}{path}: not a URL"))?;
        let mut headers = HeaderMap::new();
        if let Some(token) = &self.token {
            headers.insert(
                AUTHORIZATION,
                HeaderValue::from_str(&format!("Bearer {token}"))?,
            );
        }
        let body = match body {
            Some((content_type, bytes)) => {
                headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
                // So that a host refusing it (too large, no token) answers before the
                // body is read.
                if content_type == "application/wasm" {
                    headers.insert(EXPECT, HeaderValue::from_static("100-continue"));
                }
                bytes
            }
            None => Bytes::new(),
        };
        let response = self
            .http
            .send(method, &url, headers, body)
            .with_context(|| format!("cannot reach the host at {base}"))?;
        let (status, text) = (response.status, response.text());
        if status.is_success() {
            let text = if text.is_empty() { "null" } else { &text };
            return serde_json::from_str(text)
                .with_context(|| format!("{base}{path}: the answer is not what was expected"));
        }
        match serde_json::from_str::<ErrorBody>(&text) {
            Ok(e) => bail!("{} ({status}, {})", e.detail, e.error),
            Err(_) => bail!("{base}{path}: {status}: {}", text.trim()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_goes_to_this_machine_only_unless_accepted() {
        for local in ["127.0.0.1:9301", "http://localhost:1", "http://[::1]:9301"] {
            assert!(is_loopback(local), "{local}");
            Client::connect(local, Some("t".into()), &Security::default()).unwrap();
        }
        let err = Client::connect("http://10.1.2.3:9301", None, &Security::default())
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("in clear") && err.contains("https://") && err.contains("--insecure"),
            "{err}"
        );
        assert!(!is_loopback("edge-1:9301") && !is_loopback("127.example.com"));
        let insecure = Security {
            insecure: true,
            ..Security::default()
        };
        Client::connect("edge-1:9301", None, &insecure).unwrap();
        let err = Client::connect("ftp://edge-1", None, &insecure)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("ftp:// is not spoken here"), "{err}");
    }
}
