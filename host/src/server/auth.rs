//! The bearer token every mutating call needs: generated at first start into a file only
//! its owner can read, or supplied with `--token-file`; compared in constant time. A
//! client whose checks keep failing is refused for a while ([`FailedChecks`]).

use std::collections::HashMap;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Shortest token accepted from a file a user supplies.
const MIN_LEN: usize = 16;

pub struct Token(String);

/// Never prints the token itself.
impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

impl Token {
    /// Reads the token in `file`.
    pub fn read(file: &Path) -> anyhow::Result<Self> {
        let text = crate::files::read_private(file, "token file")?;
        let token = text.trim();
        if token.len() < MIN_LEN || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            bail!(
                "the token file {} must hold one token of at least {MIN_LEN} characters, without spaces",
                file.display()
            );
        }
        Ok(Token(token.to_string()))
    }

    /// Reads the token in `file`, or makes a random one there (mode 0600) when there is
    /// none. Says whether it made one, so that the caller prints it once.
    pub fn read_or_create(file: &Path) -> anyhow::Result<(Self, bool)> {
        if file.exists() {
            return Ok((Token::read(file)?, false));
        }
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)
            .map_err(|e| anyhow::anyhow!("cannot draw a random token: {e}"))?;
        let token = hex::encode(bytes);
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut out = options
            .open(file)
            .with_context(|| format!("cannot create the token file {}", file.display()))?;
        writeln!(out, "{token}")?;
        out.sync_all()?;
        Ok((Token(token), true))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `presented` is the token, in time that does not depend on where they differ
    /// (both are hashed first, so not on their lengths either).
    pub fn matches(&self, presented: &str) -> bool {
        let ours = Sha256::digest(self.0.as_bytes());
        let theirs = Sha256::digest(presented.as_bytes());
        ours.ct_eq(&theirs).into()
    }
}

/// Failed token checks per client address within a window: past the limit, the client's
/// calls that need the token are refused, unchecked, until its window ends, so that a
/// token cannot be guessed at the speed of the network.
pub struct FailedChecks {
    limit: u32,
    window: Duration,
    clients: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

/// Clients remembered at most; older windows are forgotten first when there are more.
const MAX_CLIENTS: usize = 10_000;

impl FailedChecks {
    /// At most `limit` failed checks a minute per client.
    pub fn per_minute(limit: u32) -> Self {
        FailedChecks {
            limit: limit.max(1),
            window: Duration::from_secs(60),
            clients: Mutex::default(),
        }
    }

    /// `Err(time to wait)` while `client` is over the limit. A call that did not come
    /// over the network (no address) counts as one client.
    pub fn admit(&self, client: Option<IpAddr>) -> Result<(), Duration> {
        let client = client.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        match clients.get(&client) {
            Some(&(start, failed)) if failed >= self.limit => {
                let left = self.window.saturating_sub(start.elapsed());
                if left.is_zero() { Ok(()) } else { Err(left) }
            }
            _ => Ok(()),
        }
    }

    /// Counts a failed check of `client`; returns its failures in the current window.
    pub fn record(&self, client: Option<IpAddr>) -> u32 {
        let client = client.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if clients.len() >= MAX_CLIENTS {
            clients.retain(|_, (start, _)| now.duration_since(*start) < self.window);
        }
        let entry = clients.entry(client).or_insert((now, 0));
        if now.duration_since(entry.0) >= self.window {
            *entry = (now, 0);
        }
        entry.1 += 1;
        entry.1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_over_the_limit_waits_and_others_do_not() {
        let checks = FailedChecks::per_minute(3);
        let (a, b) = (
            Some("10.0.0.1".parse().unwrap()),
            Some("10.0.0.2".parse().unwrap()),
        );
        for n in 1..=3 {
            assert!(checks.admit(a).is_ok());
            assert_eq!(checks.record(a), n);
        }
        let wait = checks.admit(a).unwrap_err();
        assert!(wait > Duration::from_secs(55) && wait <= Duration::from_secs(60));
        assert!(checks.admit(b).is_ok(), "another client is not held");
        let short = FailedChecks {
            window: Duration::from_millis(20),
            ..FailedChecks::per_minute(1)
        };
        short.record(a);
        assert!(short.admit(a).is_err());
        std::thread::sleep(Duration::from_millis(30));
        assert!(short.admit(a).is_ok(), "the window ends");
        assert_eq!(short.record(a), 1, "and a new one starts");
    }

    #[test]
    fn a_token_is_made_once_readable_by_its_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        let (token, made) = Token::read_or_create(&file).unwrap();
        assert!(made);
        assert_eq!(token.as_str().len(), 64);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let (again, made) = Token::read_or_create(&file).unwrap();
        assert!(!made);
        assert!(again.matches(token.as_str()));
        assert!(!again.matches(&token.as_str()[1..]));
        assert!(!again.matches(""));
    }

    #[test]
    fn a_short_empty_or_shared_token_file_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        let private = std::fs::Permissions::from_mode(0o600);
        for text in ["", "short", "has a space in it somewhere"] {
            std::fs::write(&file, text).unwrap();
            std::fs::set_permissions(&file, private.clone()).unwrap();
            let err = Token::read(&file).unwrap_err().to_string();
            assert!(err.contains("at least 16"), "{err}");
        }
        std::fs::write(&file, "a-long-enough-token-0123").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = Token::read(&file).unwrap_err().to_string();
        assert!(
            err.contains("mode 644") && err.contains("chmod 600"),
            "{err}"
        );
        std::fs::set_permissions(&file, private).unwrap();
        assert!(Token::read(&file).is_ok());
    }
}
