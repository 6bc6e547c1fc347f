//! How the host and the command line trust a server they reach over HTTPS: the system's
//! roots, a CA file (`--ca`), or the fingerprint of the server's own certificate
//! (`--pin`), which needs no name to match, since edge hosts are reached by address.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, anyhow, bail};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

/// ring's cryptography, named rather than left to a process default that two providers
/// in the dependency tree would make ambiguous.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificates of a PEM file, at least one.
pub fn read_certificates(file: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let chain = CertificateDer::pem_file_iter(file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow!("{e}"))?;
    if chain.is_empty() {
        bail!("no certificate in it: expected a PEM file with a BEGIN CERTIFICATE block");
    }
    Ok(chain)
}

/// `AB:CD:...`: the SHA-256 of a certificate's DER, as `openssl x509 -noout -fingerprint
/// -sha256` prints it.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = Sha256::digest(der);
    let bytes: Vec<String> = digest.iter().map(|b| format!("{b:02X}")).collect();
    bytes.join(":")
}

/// How the command line trusts a host it reaches over HTTPS.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Trust {
    /// The system's roots: a host with a certificate from a public or company CA.
    #[default]
    System,
    /// The CA certificates in a PEM file (or the host's own certificate).
    Ca(PathBuf),
    /// The SHA-256 fingerprint of the host's certificate, whatever its names and issuer.
    Pin([u8; 32]),
}

impl Trust {
    /// A fingerprint as the host prints it: 64 hex digits, with or without colons, in
    /// either case, with or without a `sha256:` prefix.
    pub fn pin(text: &str) -> anyhow::Result<Self> {
        let trimmed = text.trim();
        let digits: String = trimmed
            .strip_prefix("sha256:")
            .or_else(|| trimmed.strip_prefix("SHA256:"))
            .unwrap_or(trimmed)
            .chars()
            .filter(|c| *c != ':')
            .collect();
        let bytes = hex::decode(&digits)
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| {
                anyhow!(
                    "--pin {text:?}: expected the SHA-256 fingerprint the host printed (64 hex digits, e.g. AB:CD:...)"
                )
            })?;
        Ok(Trust::Pin(bytes))
    }

    /// A client configuration that verifies a host this way.
    pub fn client_config(&self) -> anyhow::Result<Arc<rustls::ClientConfig>> {
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?;
        let config = match self {
            Trust::Pin(pin) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Pinned {
                    pin: *pin,
                    provider: provider(),
                }))
                .with_no_client_auth(),
            Trust::Ca(file) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in
                    read_certificates(file).with_context(|| format!("--ca {}", file.display()))?
                {
                    roots.add(cert).with_context(|| {
                        format!("--ca {}: a certificate in it is not usable", file.display())
                    })?;
                }
                builder.with_root_certificates(roots).with_no_client_auth()
            }
            Trust::System => {
                let mut roots = rustls::RootCertStore::empty();
                let found = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(found.certs);
                if roots.is_empty() {
                    bail!(
                        "no trusted roots on this system: give the host's CA with --ca FILE, or its fingerprint with --pin"
                    );
                }
                builder.with_root_certificates(roots).with_no_client_auth()
            }
        };
        Ok(Arc::new(config))
    }
}

/// Accepts exactly the certificate whose fingerprint is pinned, and checks that the host
/// holds its key (the handshake's signature).
#[derive(Debug)]
struct Pinned {
    pin: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if Sha256::digest(end_entity.as_ref()).as_slice() == self.pin {
            return Ok(ServerCertVerified::assertion());
        }
        Err(rustls::Error::General(format!(
            "the host's certificate has the fingerprint {}, not the pinned {}: check --pin against what the host printed",
            fingerprint(end_entity),
            self.pin
                .iter()
                .map(|b| format!("{b:02X}"))
                .collect::<Vec<_>>()
                .join(":")
        )))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
