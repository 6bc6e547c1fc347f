//! The command line's side of a host's HTTP API (`sedna run --listen`): `sedna plugin
//! push`, and `sedna plugin list|rm` and `sedna status` with `--host`. Without the `server`
//! feature there is no client: `--host` says so, and nothing else changes.

use std::path::{Path, PathBuf};

use clap::Args;

#[derive(Args, Clone, Default)]
pub struct HostArgs {
    /// A running host's API (`sedna run --listen`), e.g. https://edge-1:9301.
    #[arg(long, env = "SEDNA_HOST", value_name = "URL")]
    pub host: Option<String>,
    /// The host's token, for calls that change it; else `SEDNA_TOKEN`, else (for a host
    /// on this machine only) the token file in the data directory.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Trust an https:// host whose certificate has this SHA-256 fingerprint (the one
    /// `--tls-self-signed` printed), whatever its name and issuer.
    #[arg(long, env = "SEDNA_PIN", value_name = "SHA256", conflicts_with = "ca")]
    pub pin: Option<String>,
    /// Trust an https:// host whose certificate this CA (or this certificate) signed,
    /// instead of the system's roots.
    #[arg(long, env = "SEDNA_CA", value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Call a host on another machine over plain http://, token and all.
    #[arg(long)]
    pub insecure: bool,
}

/// The token to call `url` with: `--token-file`, else `SEDNA_TOKEN`, else `<home>/token`
/// when `url` is this machine (that token is this machine's host's, not another's).
#[cfg(feature = "server")]
fn token(url: &str, token_file: Option<&Path>, home: &Path) -> anyhow::Result<Option<String>> {
    if let Some(file) = token_file {
        let text = crate::files::read_private(file, "token file")?;
        return Ok(Some(text.trim().to_string()));
    }
    if let Ok(token) = std::env::var("SEDNA_TOKEN") {
        return Ok(Some(token));
    }
    if !crate::server::client::is_loopback(url) {
        return Ok(None);
    }
    let file = home.join("token");
    if !file.exists() {
        return Ok(None);
    }
    Ok(Some(
        crate::files::read_private(&file, "token file")?
            .trim()
            .to_string(),
    ))
}

/// The host at `url`, reached as `args` say.
#[cfg(feature = "server")]
pub fn connect(url: &str, args: &HostArgs, home: &Path) -> anyhow::Result<Remote> {
    use crate::net::Trust;
    use crate::server::client::Security;
    let trust = match (&args.pin, &args.ca) {
        (Some(pin), _) => Trust::pin(pin)?,
        (None, Some(ca)) => Trust::Ca(ca.clone()),
        (None, None) => Trust::System,
    };
    let security = Security {
        trust,
        insecure: args.insecure,
    };
    Remote::connect(
        url,
        token(url, args.token_file.as_deref(), home)?,
        &security,
    )
}

#[cfg(feature = "server")]
pub use crate::server::client::Client as Remote;

/// No client in a build without the `server` feature: the type has no values.
#[cfg(not(feature = "server"))]
pub enum Remote {}

/// Without the `server` feature: an error that says so.
#[cfg(not(feature = "server"))]
pub fn connect(url: &str, _: &HostArgs, _: &Path) -> anyhow::Result<Remote> {
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

    pub fn post<T: serde::de::DeserializeOwned>(&self, _: &str) -> anyhow::Result<T> {
        match *self {}
    }

    pub fn delete(&self, _: &str) -> anyhow::Result<()> {
        match *self {}
    }
}

#[cfg(all(test, feature = "server"))]
mod tests {
    use super::*;

    #[test]
    fn this_machines_token_goes_to_this_machine_only() {
        let home = tempfile::tempdir().unwrap();
        let local_file = home.path().join("token");
        std::fs::write(&local_file, "local-token-0123456789\n").unwrap();
        let private = std::os::unix::fs::PermissionsExt::from_mode(0o600);
        std::fs::set_permissions(&local_file, private).unwrap();
        if std::env::var_os("SEDNA_TOKEN").is_some() {
            return; // the environment's token wins everywhere: nothing to tell apart
        }
        let local = token("127.0.0.1:9301", None, home.path()).unwrap();
        assert_eq!(local.as_deref(), Some("local-token-0123456789"));
        assert_eq!(
            token("https://edge-1:9301", None, home.path()).unwrap(),
            None
        );
        let file = home.path().join("edge-token");
        std::fs::write(&file, "edge-token-0123456789").unwrap();
        let private = std::os::unix::fs::PermissionsExt::from_mode(0o600);
        std::fs::set_permissions(&file, private).unwrap();
        let given = token("https://edge-1:9301", Some(&file), home.path()).unwrap();
        assert_eq!(given.as_deref(), Some("edge-token-0123456789"));
    }
}
