//! HTTP/1.1 requests the host and the command line make: to a host's API
//! ([`crate::server::client`]) and to OCI registries ([`crate::plugin::oci`]). hyper over
//! TCP, or over TLS verified as [`Trust`] says; a connection of its own per request.

mod trust;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::anyhow;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::header::HOST;
use hyper::{HeaderMap, Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;

pub use trust::{Trust, fingerprint, provider, read_certificates};

/// The longest answer read by default (a component is at most 64 MiB).
const MAX_ANSWER: usize = 64 << 20;

/// How long a request may take; an upload of a large component on a slow link needs a
/// while.
const TIMEOUT: Duration = Duration::from_secs(300);

/// Sends requests, trusting servers as it was told.
pub struct Http {
    trust: Trust,
    /// Made at the first `https` request (the system's roots are read then).
    tls: Mutex<Option<Arc<rustls::ClientConfig>>>,
    runtime: tokio::runtime::Runtime,
}

/// An answer, read whole.
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl Http {
    pub fn new(trust: Trust) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()?;
        Ok(Http {
            trust,
            tls: Mutex::new(None),
            runtime,
        })
    }

    /// Sends `method url` with `headers` (and `Host`) and `body`; the answer, whatever
    /// its status. Fails when the server cannot be reached, the TLS handshake fails (with
    /// what to do about it) or no answer comes within 300 s.
    pub fn send(
        &self,
        method: Method,
        url: &url::Url,
        headers: HeaderMap,
        body: Bytes,
    ) -> anyhow::Result<Response> {
        self.send_limited(method, url, headers, body, MAX_ANSWER)
    }

    /// [`Http::send`], reading at most `limit` bytes of the answer: a longer one fails
    /// rather than fill memory.
    pub fn send_limited(
        &self,
        method: Method,
        url: &url::Url,
        headers: HeaderMap,
        body: Bytes,
        limit: usize,
    ) -> anyhow::Result<Response> {
        let host = url
            .host_str()
            .ok_or_else(|| anyhow!("{url}: no host in it"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = url
            .port_or_known_default()
            .ok_or_else(|| anyhow!("{url}: no port"))?;
        let tls = match url.scheme() {
            "https" => {
                let name = ServerName::try_from(host.clone())
                    .map_err(|_| anyhow!("{url}: {host} is not a name TLS can verify"))?;
                Some((tokio_rustls::TlsConnector::from(self.tls_config()?), name))
            }
            "http" => None,
            other => anyhow::bail!("{url}: {other}:// is not spoken here"),
        };
        let target = match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_string(),
        };
        let mut request = Request::builder()
            .method(method)
            .uri(target)
            .header(HOST, authority(&host, port))
            .body(Full::new(body))?;
        request.headers_mut().extend(headers);
        self.runtime.block_on(async {
            let exchange = async {
                let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
                match tls {
                    Some((connector, name)) => {
                        let stream = connector.connect(name, tcp).await.map_err(explain_tls)?;
                        send(stream, request, limit).await
                    }
                    None => send(tcp, request, limit).await,
                }
            };
            tokio::time::timeout(TIMEOUT, exchange)
                .await
                .map_err(|_| anyhow!("no answer within {} s", TIMEOUT.as_secs()))?
        })
    }

    fn tls_config(&self) -> anyhow::Result<Arc<rustls::ClientConfig>> {
        let mut tls = self.tls.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(config) = &*tls {
            return Ok(config.clone());
        }
        let config = self.trust.client_config()?;
        *tls = Some(config.clone());
        Ok(config)
    }
}

/// `host:port`, with an IPv6 address in brackets.
pub fn authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

async fn send<Io>(io: Io, request: Request<Full<Bytes>>, limit: usize) -> anyhow::Result<Response>
where
    Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(connection);
    let response = sender.send_request(request).await?;
    let (parts, body) = response.into_parts();
    let body = http_body_util::Limited::new(body, limit)
        .collect()
        .await
        .map_err(
            |e| match e.downcast_ref::<http_body_util::LengthLimitError>() {
                Some(_) => anyhow!("the answer is over {limit} bytes: refused"),
                None => anyhow!("the answer was cut short: {e}"),
            },
        )?
        .to_bytes();
    Ok(Response {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

/// A failed handshake, with what to do about it.
fn explain_tls(error: std::io::Error) -> anyhow::Error {
    use rustls::CertificateError as Cert;
    let hint = match error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::InvalidCertificate(Cert::UnknownIssuer | Cert::BadSignature)) => {
            "the server's certificate is not signed by a root this machine trusts: pass --pin with the fingerprint the host printed, or --ca with its certificate or CA"
        }
        Some(rustls::Error::InvalidCertificate(Cert::NotValidForName)) => {
            "the server's certificate is not made for this name: reach it by a name in the certificate, or pass --pin with its fingerprint"
        }
        Some(rustls::Error::InvalidCertificate(Cert::Expired)) => {
            "the server's certificate has expired: renew it"
        }
        _ => return anyhow!("TLS: {error}"),
    };
    anyhow!("TLS: {error}: {hint}")
}
