//! Where things live: the runtime dir (sockets, lock), the state dir (snapshot) and the config dir.
//!
//! Defaults follow `architecture.md`: runtime `$XDG_RUNTIME_DIR/atm/`, else `/tmp/atm-$UID/`,
//! created `0700` and refused when another user owns it or others can write to it (a shared
//! `/tmp` must not let another user plant our sockets).

use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Name of the query socket in the runtime dir (`ATM_SOCKET` overrides the full path).
pub const QUERY_SOCKET: &str = "atm.sock";
/// Name of the ingest socket in the runtime dir (`ATM_HOOKS_SOCKET` overrides the full path).
pub const HOOKS_SOCKET: &str = "hooks.sock";
pub const LOCK_FILE: &str = "atmd.lock";
pub const SNAPSHOT_FILE: &str = "sessions.json";
/// The web board's token (the `http` sink), `0600` in the state dir; `atmctl web` reads it.
pub const WEB_TOKEN_FILE: &str = "web-token";
/// Where the `http` sink says it listens (`http://127.0.0.1:7378/`), in the runtime dir, for
/// `atmctl web`. Not a secret.
pub const WEB_ADDRESS_FILE: &str = "web.url";

#[derive(Debug, thiserror::Error)]
pub enum PathError {
    #[error("cannot create {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} is owned by uid {owner}, not by you (uid {me}); remove it or set XDG_RUNTIME_DIR to a directory you own"
    )]
    WrongOwner { path: PathBuf, owner: u32, me: u32 },
    #[error(
        "{path} is writable by other users (mode {mode:o}); run `chmod 700 {path}` or remove it"
    )]
    Insecure { path: PathBuf, mode: u32 },
    #[error(
        "{path} is a symbolic link; atmd does not follow links for its runtime dir (another user could re-point it): remove it, or set XDG_RUNTIME_DIR to a directory you own"
    )]
    Symlink { path: PathBuf },
    #[error("cannot find a home directory: set HOME or the XDG_* variables")]
    NoHome,
}

fn env_path(var: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
}

pub fn uid() -> u32 {
    rustix::process::getuid().as_raw()
}

/// `$XDG_RUNTIME_DIR/atm`, else `/tmp/atm-$UID`. Not created.
pub fn default_runtime_dir() -> PathBuf {
    match env_path("XDG_RUNTIME_DIR") {
        Some(d) => d.join("atm"),
        None => PathBuf::from(format!("/tmp/atm-{}", uid())),
    }
}

pub fn home_dir() -> Option<PathBuf> {
    env_path("HOME")
}

/// `$XDG_STATE_HOME/atm`, else `~/.local/state/atm`.
pub fn default_state_dir() -> Result<PathBuf, PathError> {
    match env_path("XDG_STATE_HOME") {
        Some(d) => Ok(d.join("atm")),
        None => Ok(home_dir()
            .ok_or(PathError::NoHome)?
            .join(".local/state/atm")),
    }
}

/// `$XDG_CONFIG_HOME/atm`, else `~/.config/atm`.
pub fn default_config_dir() -> Option<PathBuf> {
    env_path("XDG_CONFIG_HOME")
        .map(|d| d.join("atm"))
        .or_else(|| home_dir().map(|h| h.join(".config/atm")))
}

/// The query socket clients use: `$ATM_SOCKET`, else `<runtime dir>/atm.sock`.
pub fn query_socket() -> PathBuf {
    env_path("ATM_SOCKET").unwrap_or_else(|| default_runtime_dir().join(QUERY_SOCKET))
}

/// The ingest socket hooks use: `$ATM_HOOKS_SOCKET`, else `<runtime dir>/hooks.sock`.
pub fn hooks_socket() -> PathBuf {
    env_path("ATM_HOOKS_SOCKET").unwrap_or_else(|| default_runtime_dir().join(HOOKS_SOCKET))
}

/// Expands a leading `~/` and `$VAR`/`${VAR}` references in a configured path.
pub fn expand(path: &str) -> PathBuf {
    // `$XDG_RUNTIME_DIR/atm` means "the runtime dir", including its documented fallback.
    for prefix in ["$XDG_RUNTIME_DIR/atm", "${XDG_RUNTIME_DIR}/atm"] {
        if let Some(rest) = path.strip_prefix(prefix)
            && std::env::var_os("XDG_RUNTIME_DIR").is_none()
        {
            return PathBuf::from(format!("{}{rest}", default_runtime_dir().display()));
        }
    }
    let mut out = String::new();
    let rest = if let Some(r) = path.strip_prefix("~/") {
        out.push_str(&home_dir().unwrap_or_default().to_string_lossy());
        out.push('/');
        r
    } else {
        path
    };
    let mut chars = rest.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        let braced = chars.peek() == Some(&'{');
        if braced {
            chars.next();
        }
        let mut name = String::new();
        while let Some(&n) = chars.peek() {
            if n.is_ascii_alphanumeric() || n == '_' {
                name.push(n);
                chars.next();
            } else {
                break;
            }
        }
        if braced && chars.peek() == Some(&'}') {
            chars.next();
        }
        out.push_str(&std::env::var(&name).unwrap_or_default());
    }
    PathBuf::from(out)
}

/// Makes `options` refuse a symlink as the file's last component (`O_NOFOLLOW`: the open fails
/// with `ELOOP`). atmd opens its lock and state files this way, so a link planted in their place
/// can never make it read or truncate another file.
pub fn no_follow(options: &mut std::fs::OpenOptions) -> &mut std::fs::OpenOptions {
    // O_NOFOLLOW is a small positive flag; the cast cannot wrap.
    options.custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
}

/// Why a directory that must be ours alone is not.
pub(crate) enum NotPrivate {
    /// Someone else (this uid) owns it.
    Owner(u32),
    /// Its group or others may write to it (its permission bits).
    Writable(u32),
}

/// The one rule for a private directory, held by the daemon that makes one and by every client
/// that trusts the sockets in it: owned by `me` and writable by no one else. `Ok`: its
/// permission bits.
pub(crate) fn check_private(meta: &std::fs::Metadata, me: u32) -> Result<u32, NotPrivate> {
    if meta.uid() != me {
        return Err(NotPrivate::Owner(meta.uid()));
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o022 != 0 {
        return Err(NotPrivate::Writable(mode));
    }
    Ok(mode)
}

/// Creates `dir` (and parents) as `0700` if missing, then checks that it is a real directory
/// (never a symlink: a link in a shared `/tmp` can be re-pointed by whoever made it), that we own
/// it and that no one else can write to it. A directory of ours that others can only read or
/// enter is tightened to `0700`, since clients talk only to sockets in a `0700` directory
/// ([`crate::trust`]).
pub fn ensure_private_dir(dir: &Path) -> Result<(), PathError> {
    let create = |source| PathError::Create {
        path: dir.to_owned(),
        source,
    };
    let meta = match std::fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(create)?;
            std::fs::symlink_metadata(dir).map_err(create)?
        }
        Err(e) => return Err(create(e)),
    };
    if meta.file_type().is_symlink() {
        return Err(PathError::Symlink {
            path: dir.to_owned(),
        });
    }
    let me = uid();
    let mode = match check_private(&meta, me) {
        Ok(mode) => mode,
        Err(NotPrivate::Owner(owner)) => {
            return Err(PathError::WrongOwner {
                path: dir.to_owned(),
                owner,
                me,
            });
        }
        Err(NotPrivate::Writable(mode)) => {
            return Err(PathError::Insecure {
                path: dir.to_owned(),
                mode,
            });
        }
    };
    if mode != 0o700 {
        // `recursive` applies the mode only to the last component on some systems, and an
        // older atm may have left it readable: tighten what we own.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(create)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_private_dir_and_refuses_world_writable() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("a/b/atm");
        ensure_private_dir(&d).unwrap();
        let mode = std::fs::metadata(&d).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = ensure_private_dir(&d).unwrap_err();
        assert!(err.to_string().contains("chmod 700"), "{err}");
        // Readable by others but not writable: ours to tighten.
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        ensure_private_dir(&d).unwrap();
        let mode = std::fs::metadata(&d).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn a_symlinked_runtime_dir_is_refused_even_to_a_private_target() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("real");
        ensure_private_dir(&real).unwrap();
        let link = tmp.path().join("atm-link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let err = ensure_private_dir(&link).unwrap_err();
        assert!(matches!(err, PathError::Symlink { .. }), "{err}");
        assert!(err.to_string().contains("symbolic link"), "{err}");
    }

    #[test]
    fn expands_home_and_variables() {
        let home = home_dir().unwrap_or_default();
        assert_eq!(expand("~/x"), home.join("x"));
        let path = std::env::var("PATH").unwrap_or_default();
        assert_eq!(
            expand("/a/${PATH}/b"),
            PathBuf::from(format!("/a/{path}/b"))
        );
        assert_eq!(expand("/plain/path"), PathBuf::from("/plain/path"));
    }
}
