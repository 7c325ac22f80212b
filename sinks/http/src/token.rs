//! The token every endpoint but `/healthz` asks for: 128 random bits as 32 hex digits,
//! generated at the first start, kept `0600` in the state dir and reused afterwards, so a
//! browser that logged in once stays logged in across daemon restarts.
//!
//! Why a token at all: other users of the machine can connect to loopback ports, so "it only
//! listens on 127.0.0.1" keeps the network out but not them. The file is created with
//! `O_EXCL`/`O_NOFOLLOW` and mode `0600`; a file that others can read is refused rather than
//! trusted (someone else may know it), with the fix in the error.

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Random bytes in a token (128 bits).
const TOKEN_BYTES: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read or create the web token {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the web token {path} can be read by other users (mode {mode:o}); remove it (a new one is made at the next start) or run `chmod 600 {path}` if no one else saw it"
    )]
    Readable { path: PathBuf, mode: u32 },
    #[error(
        "the web token {path} does not hold a token (32 to 128 hex digits); remove it and a new one is made"
    )]
    Malformed { path: PathBuf },
    #[error("no randomness for a web token: {0}")]
    Random(getrandom::Error),
}

/// The token, compared in constant time. Its `Debug` never shows it.
#[derive(Clone)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

impl Token {
    /// A fresh random token.
    pub fn generate() -> Result<Self, TokenError> {
        let mut bytes = [0u8; TOKEN_BYTES];
        getrandom::fill(&mut bytes).map_err(TokenError::Random)?;
        Ok(Self(bytes.iter().map(|b| format!("{b:02x}")).collect()))
    }

    /// Parses a token as kept in its file (surrounding whitespace ignored).
    pub fn parse(text: &str) -> Option<Self> {
        let t = text.trim();
        let ok = (32..=128).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_hexdigit());
        ok.then(|| Self(t.to_ascii_lowercase()))
    }

    /// Whether `given` is this token; the time taken does not depend on where they differ.
    pub fn matches(&self, given: &[u8]) -> bool {
        let mine = self.0.as_bytes();
        if given.len() != mine.len() {
            return false;
        }
        let diff = mine
            .iter()
            .zip(given)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b.to_ascii_lowercase()));
        diff == 0
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Reads the token at `path`, or makes one there (`0600`) when there is none.
    pub fn load_or_create(path: &Path) -> Result<Self, TokenError> {
        let io = |source| TokenError::Io {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut opts = std::fs::OpenOptions::new();
        opts.read(true);
        atm_core::paths::no_follow(&mut opts);
        match opts.open(path) {
            Ok(mut file) => {
                let mode = file.metadata().map_err(io)?.mode() & 0o777;
                if mode & 0o077 != 0 {
                    return Err(TokenError::Readable {
                        path: path.to_owned(),
                        mode,
                    });
                }
                let mut bytes = Vec::new();
                // A token is 128 hex digits at most; a larger file is not ours.
                Read::by_ref(&mut file)
                    .take(512)
                    .read_to_end(&mut bytes)
                    .map_err(io)?;
                let text = std::str::from_utf8(&bytes).unwrap_or_default();
                Self::parse(text).ok_or_else(|| TokenError::Malformed {
                    path: path.to_owned(),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let token = Self::generate()?;
                let mut create = std::fs::OpenOptions::new();
                create.write(true).create_new(true).mode(0o600);
                atm_core::paths::no_follow(&mut create);
                let mut file = create.open(path).map_err(io)?;
                file.write_all(format!("{}\n", token.0).as_bytes())
                    .map_err(io)?;
                file.sync_all().map_err(io)?;
                Ok(token)
            }
            Err(e) => Err(io(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn made_once_private_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/web-token");
        let first = Token::load_or_create(&path).unwrap();
        assert_eq!(first.as_str().len(), 32);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = Token::load_or_create(&path).unwrap();
        assert_eq!(first.as_str(), again.as_str());
        assert!(first.matches(again.as_str().as_bytes()));
        assert!(first.matches(again.as_str().to_uppercase().as_bytes()));
        assert!(!first.matches(b"0000"));
        assert!(!format!("{first:?}").contains(first.as_str()));
    }

    #[test]
    fn a_readable_malformed_or_linked_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web-token");
        std::fs::write(&path, "0123456789abcdef0123456789abcdef\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Token::load_or_create(&path).unwrap_err().to_string();
        assert!(e.contains("other users") && e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(Token::load_or_create(&path).is_ok());
        std::fs::write(&path, b"not a token \xff").unwrap();
        let e = Token::load_or_create(&path).unwrap_err().to_string();
        assert!(e.contains("does not hold a token"), "{e}");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(Token::load_or_create(&link).is_err());
        std::fs::write(&path, "a".repeat(10_000)).unwrap();
        assert!(Token::load_or_create(&path).is_err());
    }
}
