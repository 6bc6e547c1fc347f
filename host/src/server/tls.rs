//! HTTPS for the API: a certificate and key the user gives (PEM files, `--tls-cert` and
//! `--tls-key`), or one made once and kept in the data directory (`--tls-self-signed`),
//! whose SHA-256 fingerprint is printed when it is made. How clients trust it is
//! [`crate::net::Trust`].

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context as _, anyhow};
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject as _;

use crate::files::write_atomically;
use crate::net::{fingerprint, provider, read_certificates};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::Trust;

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
