//! A client of the API, for the command line's `--host` and `sedna plugin push`: the
//! calls' JSON, or the host's error as it wrote it. HTTP/1.1 (hyper) over TCP, or over
//! TLS verified as [`Trust`] says. Plain HTTP goes only to this machine unless the user
//! accepts sending the token in clear (`--insecure`).

use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, EXPECT, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::ErrorBody;
use super::tls::Trust;

/// How long a call may take; an upload of a large component on a slow link needs a while.
const TIMEOUT: Duration = Duration::from_secs(300);

/// How the client may reach a host: how it trusts one over HTTPS, and whether plain HTTP
/// to another machine is accepted.
#[derive(Clone, Debug, Default)]
pub struct Security {
    pub trust: Trust,
    pub insecure: bool,
}

/// A host's API.
pub struct Client {
    /// `scheme://host:port`, for messages.
    base: String,
    host: String,
    port: u16,
    token: Option<String>,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    runtime: tokio::runtime::Runtime,
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
        let parsed = parse(url)?;
        let host = parsed
            .host_str()
            .ok_or_else(|| anyhow!("--host {url}: no host in it"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let tls = match parsed.scheme() {
            "https" => {
                let config = security.trust.client_config()?;
                let name = ServerName::try_from(host.clone())
                    .map_err(|_| anyhow!("--host {url}: {host} is not a name TLS can verify"))?;
                Some((tokio_rustls::TlsConnector::from(config), name))
            }
            "http" if is_loopback(url) || security.insecure => None,
            "http" => bail!(
                "--host {url}: plain http:// to another machine would send the token and the plugins in clear; use https:// (the host serves it with --tls-cert and --tls-key, or --tls-self-signed), or pass --insecure to send them anyway"
            ),
            other => bail!("--host {url}: {other}:// is not spoken here; use https:// or http://"),
        };
        let port = parsed
            .port_or_known_default()
            .ok_or_else(|| anyhow!("--host {url}: no port"))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()?;
        Ok(Client {
            base: format!("{}://{}", parsed.scheme(), authority(&host, port)),
            host,
            port,
            token,
            tls,
            runtime,
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

    /// One call on a connection of its own: the answer's JSON, or the host's error.
    fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<(&'static str, Bytes)>,
    ) -> anyhow::Result<T> {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, authority(&self.host, self.port));
        if let Some(token) = &self.token {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        let body = match body {
            Some((content_type, bytes)) => {
                request = request.header(CONTENT_TYPE, content_type);
                // So that a host refusing it (too large, no token) answers before the
                // body is read.
                if content_type == "application/wasm" {
                    request = request.header(EXPECT, "100-continue");
                }
                bytes
            }
            None => Bytes::new(),
        };
        let request = request.body(Full::new(body))?;
        let (status, text) = self
            .runtime
            .block_on(async {
                tokio::time::timeout(TIMEOUT, self.exchange(request))
                    .await
                    .map_err(|_| anyhow!("no answer within {} s", TIMEOUT.as_secs()))?
            })
            .with_context(|| format!("cannot reach the host at {}", self.base))?;
        if status.is_success() {
            let text = if text.is_empty() { "null" } else { &text };
            return serde_json::from_str(text).with_context(|| {
                format!("{}{path}: the answer is not what was expected", self.base)
            });
        }
        match serde_json::from_str::<ErrorBody>(&text) {
            Ok(e) => bail!("{} ({status}, {})", e.detail, e.error),
            Err(_) => bail!("{}{path}: {status}: {}", self.base, text.trim()),
        }
    }

    async fn exchange(
        &self,
        request: Request<Full<Bytes>>,
    ) -> anyhow::Result<(StatusCode, String)> {
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port)).await?;
        match &self.tls {
            Some((connector, name)) => {
                let stream = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(explain_tls)?;
                send(stream, request).await
            }
            None => send(tcp, request).await,
        }
    }
}

/// `host:port`, with an IPv6 address in brackets.
fn authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

async fn send<Io>(io: Io, request: Request<Full<Bytes>>) -> anyhow::Result<(StatusCode, String)>
where
    Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(connection);
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// A failed handshake, with what to do about it.
fn explain_tls(error: std::io::Error) -> anyhow::Error {
    use rustls::CertificateError as Cert;
    let hint = match error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::InvalidCertificate(Cert::UnknownIssuer | Cert::BadSignature)) => {
            "the host's certificate is not signed by a root this machine trusts: pass --pin with the fingerprint the host printed, or --ca with its certificate or CA"
        }
        Some(rustls::Error::InvalidCertificate(Cert::NotValidForName)) => {
            "the host's certificate is not made for this name: reach it by a name in the certificate, or pass --pin with its fingerprint"
        }
        Some(rustls::Error::InvalidCertificate(Cert::Expired)) => {
            "the host's certificate has expired: renew it"
        }
        _ => return anyhow!("TLS: {error}"),
    };
    anyhow!("TLS: {error}: {hint}")
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
