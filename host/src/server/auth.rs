//! The bearer token every mutating call needs: generated at first start into a file only
//! its owner can read, or supplied with `--token-file`; compared in constant time.

use std::io::Write as _;
use std::path::Path;

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
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read the token file {}", file.display()))?;
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn a_short_or_empty_token_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        for text in ["", "short", "has a space in it somewhere"] {
            std::fs::write(&file, text).unwrap();
            let err = Token::read(&file).unwrap_err().to_string();
            assert!(err.contains("at least 16"), "{err}");
        }
    }
}
