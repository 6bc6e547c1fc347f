//! HTTPS for the API. The host's side: a certificate and key the user gives (PEM files,
//! `--tls-cert` and `--tls-key`), or one made once and kept in the data directory
//! (`--tls-self-signed`), whose SHA-256 fingerprint is printed when it is made. The
//! client's side, [`Trust`]: the system's roots, a CA file (`--ca`), or the fingerprint of
//! the host's own certificate (`--pin`), which needs no name to match, since edge hosts
//! are reached by address.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, anyhow, bail};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

use crate::files::write_atomically;

/// ring's cryptography, named rather than left to a process default that two providers
/// in the dependency tree would make ambiguous.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The host's certificate, ready to serve.
pub struct ServerTls {
    pub config: Arc<rustls::ServerConfig>,
    /// The SHA-256 fingerprint of the certificate (see [`fingerprint`]).
    pub fingerprint: String,
}

impl ServerTls {
    /// The certificate chain in `cert` and the private key in `key` (PEM).
    pub fn load(cert: &Path, key: &Path) -> anyhow::Result<Self> {
        let chain =
            read_certificates(cert).with_context(|| format!("--tls-cert {}", cert.display()))?;
        let private = PrivateKeyDer::from_pem_file(key).map_err(|e| {
            anyhow!(
                "--tls-key {}: {e}: expected a PEM private key (PKCS#8, PKCS#1 or SEC1)",
                key.display()
            )
        })?;
        let fingerprint = fingerprint(&chain[0]);
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, private)
            .with_context(|| {
                format!(
                    "--tls-cert {} and --tls-key {} do not go together: the key must be the certificate's",
                    cert.display(),
                    key.display()
                )
            })?;
        Ok(ServerTls {
            config: Arc::new(config),
            fingerprint,
        })
    }

    /// The self-signed certificate kept in `dir` (`cert.pem`, `key.pem`, mode 0600), made
    /// there first when there is none, for `names` (DNS names or addresses) beside
    /// `localhost`. Says whether it made it, so that the caller prints its fingerprint.
    pub fn self_signed(dir: &Path, names: &[String]) -> anyhow::Result<(Self, bool)> {
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        if cert.exists() && key.exists() {
            return Ok((ServerTls::load(&cert, &key)?, false));
        }
        let mut all = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
        all.extend(names.iter().filter(|n| !n.is_empty()).cloned());
        all.dedup();
        let made = rcgen::generate_simple_self_signed(all)
            .map_err(|e| anyhow!("cannot make a self-signed certificate: {e}"))?;
        write_atomically(&key, made.signing_key.serialize_pem().as_bytes())?;
        write_atomically(&cert, made.cert.pem().as_bytes())?;
        Ok((ServerTls::load(&cert, &key)?, true))
    }
}

fn read_certificates(file: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_self_signed_certificate_is_made_once_and_its_key_kept_private() {
        let dir = tempfile::tempdir().unwrap();
        let tls = dir.path().join("tls");
        let (first, made) = ServerTls::self_signed(&tls, &["edge-1".into()]).unwrap();
        assert!(made);
        let (again, made) = ServerTls::self_signed(&tls, &[]).unwrap();
        assert!(!made);
        assert_eq!(first.fingerprint, again.fingerprint);
        assert_eq!(first.fingerprint.len(), 32 * 3 - 1);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(tls.join("key.pem"))
                .unwrap()
                .permissions();
            assert_eq!(mode.mode() & 0o777, 0o600);
        }
        assert_eq!(
            Trust::pin(&first.fingerprint).unwrap(),
            Trust::pin(&format!(
                "sha256:{}",
                first.fingerprint.replace(':', "").to_lowercase()
            ))
            .unwrap()
        );
    }

    #[test]
    fn bad_files_and_pins_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert, "not a certificate").unwrap();
        std::fs::write(&key, "not a key").unwrap();
        let err = format!("{:#}", ServerTls::load(&cert, &key).err().unwrap());
        assert!(
            err.contains("--tls-cert") && err.contains("BEGIN CERTIFICATE"),
            "{err}"
        );
        let (one, other) = (dir.path().join("one"), dir.path().join("other"));
        ServerTls::self_signed(&one, &[]).unwrap();
        ServerTls::self_signed(&other, &[]).unwrap();
        let err = format!(
            "{:#}",
            ServerTls::load(&one.join("cert.pem"), &other.join("key.pem"))
                .err()
                .unwrap()
        );
        assert!(err.contains("do not go together"), "{err}");
        for bad in ["", "AB:CD", "zz".repeat(32).as_str()] {
            let err = Trust::pin(bad).unwrap_err().to_string();
            assert!(err.contains("64 hex digits"), "{err}");
        }
        let err = format!(
            "{:#}",
            Trust::Ca(dir.path().join("missing.pem"))
                .client_config()
                .err()
                .unwrap()
        );
        assert!(err.contains("--ca") && err.contains("missing.pem"), "{err}");
    }
}
