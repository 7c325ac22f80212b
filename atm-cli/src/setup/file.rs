//! Reading, diffing and rewriting a settings file without ever leaving it damaged.
//!
//! Agent-neutral: the agent modules decide *what* changes; this module decides *how* a file is
//! replaced. [`load_text`] reads any text file (Codex's TOML goes through it); [`load`] adds the
//! JSON parse. Reads are strict (UTF-8 and JSON errors carry a position and abort), writes keep the
//! file's indentation, trailing newline and mode, go through a temp file in the same directory
//! and a rename (so a crash leaves the old or the new file, never half of one), and refuse to
//! overwrite a file that changed since it was read. A symlinked settings file (dotfile managers)
//! is edited at its target, so the link survives.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use super::SetupError;

/// Mode of a settings file we create: it may hold API keys in `env`.
const NEW_FILE_MODE: u32 = 0o600;

/// How the file was written, so that a rewrite looks like the original.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Style {
    pub indent: String,
    pub trailing_newline: bool,
}

impl Default for Style {
    fn default() -> Self {
        Self {
            indent: "  ".to_owned(),
            trailing_newline: true,
        }
    }
}

/// A settings file as read, before any parsing.
#[derive(Debug, Clone)]
pub struct TextFile {
    /// The file to edit: the given path, or its target when it is a symlink.
    pub path: PathBuf,
    /// The bytes read; `None` when the file does not exist yet. Always valid UTF-8.
    pub original: Option<Vec<u8>>,
    /// Permission bits to keep.
    pub mode: Option<u32>,
}

impl TextFile {
    /// The original text (empty for a missing file).
    pub fn text(&self) -> &str {
        self.original
            .as_deref()
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or("")
    }
}

/// A JSON settings file as read.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub file: TextFile,
    /// The parsed settings (`{}` for a missing or blank file).
    pub value: Value,
    pub style: Style,
}

/// Reads `path` as UTF-8 text. A missing file is `original: None`.
pub fn load_text(path: &Path) -> Result<TextFile, SetupError> {
    let path = resolve_symlink(path);
    let original = read_optional(&path)?;
    let mode = std::fs::metadata(&path)
        .ok()
        .map(|m| m.permissions().mode() & 0o7777);
    if let Some(bytes) = original.as_deref()
        && let Err(e) = std::str::from_utf8(bytes)
    {
        let offset = e.valid_up_to();
        return Err(SetupError::NotUtf8 {
            path,
            line: bytes.iter().take(offset).filter(|&&b| b == b'\n').count() + 1,
            offset,
        });
    }
    Ok(TextFile {
        path,
        original,
        mode,
    })
}

/// Reads and parses `path` as JSON. A missing or blank file is an empty object.
pub fn load(path: &Path) -> Result<Loaded, SetupError> {
    let file = load_text(path)?;
    let text = file.text();
    let value = if text.trim().is_empty() {
        Value::Object(serde_json::Map::new())
    } else {
        serde_json::from_str(text).map_err(|e| SetupError::Malformed {
            path: file.path.clone(),
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })?
    };
    let style = detect_style(text);
    Ok(Loaded { file, value, style })
}

fn resolve_symlink(path: &Path) -> PathBuf {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => {
            std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned())
        }
        _ => path.to_owned(),
    }
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, SetupError> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(SetupError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

/// The indentation of the first indented line, and whether the text ends with a newline.
fn detect_style(text: &str) -> Style {
    let indent = text
        .lines()
        .skip(1)
        .map(|l| &l[..l.len() - l.trim_start_matches([' ', '\t']).len()])
        .find(|ws| !ws.is_empty())
        .unwrap_or("  ")
        .to_owned();
    Style {
        indent,
        trailing_newline: text.is_empty() || text.ends_with('\n'),
    }
}

/// `value` as pretty JSON in `style`.
pub fn render(value: &Value, style: &Style) -> String {
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(style.indent.as_bytes());
    let mut ser = serde_json::Serializer::with_formatter(&mut out, formatter);
    // Serializing a `Value` into memory cannot fail (keys are strings); if it somehow did, the
    // plain pretty form is still a faithful rendering.
    let mut text = match value.serialize(&mut ser) {
        Ok(()) => String::from_utf8(out).unwrap_or_default(),
        Err(_) => serde_json::to_string_pretty(value).unwrap_or_default(),
    };
    if style.trailing_newline {
        text.push('\n');
    }
    text
}

/// A unified diff from `old` to `new`, labelled with `path`.
pub fn unified_diff(path: &Path, old: &str, new: &str) -> String {
    let label = path.display().to_string();
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(&label, &label)
        .to_string()
}

/// Replaces the file with `new_text` after a timestamped backup of the original (when there was
/// one). Returns the backup's path.
pub fn save(loaded: &TextFile, new_text: &str, stamp: &str) -> Result<Option<PathBuf>, SetupError> {
    let path = &loaded.path;
    if read_optional(path)? != loaded.original {
        return Err(SetupError::ChangedMeanwhile { path: path.clone() });
    }
    let mode = loaded.mode.unwrap_or(NEW_FILE_MODE);
    let backup = match &loaded.original {
        Some(bytes) => Some(write_backup(path, bytes, mode, stamp)?),
        None => None,
    };
    replace(loaded, new_text, mode)?;
    Ok(backup)
}

/// Replaces the file with `new_text` (mode `mode`) through a temp file in its directory and a
/// rename, unless it changed since it was read. No backup: [`save`] makes one first.
pub fn replace(loaded: &TextFile, new_text: &str, mode: u32) -> Result<(), SetupError> {
    let path = &loaded.path;
    let write_err = |source| SetupError::Write {
        path: path.clone(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(write_err)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".atm-setup-")
        .suffix(".tmp")
        .tempfile_in(&dir)
        .map_err(write_err)?;
    tmp.write_all(new_text.as_bytes()).map_err(write_err)?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(write_err)?;
    tmp.as_file().sync_all().map_err(write_err)?;
    if read_optional(path)? != loaded.original {
        return Err(SetupError::ChangedMeanwhile { path: path.clone() });
    }
    tmp.persist(path).map_err(|e| write_err(e.error))?;
    // Make the rename itself durable; a failure here leaves a correct file, so it is not fatal.
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// `<file>.atm-backup-<stamp>`, or `-2`, `-3`, ... when that exists (two runs in one second).
fn write_backup(path: &Path, bytes: &[u8], mode: u32, stamp: &str) -> Result<PathBuf, SetupError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "settings.json".to_owned());
    let mut last_err = None;
    for n in 1..100 {
        let suffix = if n == 1 {
            String::new()
        } else {
            format!("-{n}")
        };
        let backup = path.with_file_name(format!("{name}.atm-backup-{stamp}{suffix}"));
        let opened = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&backup);
        match opened {
            Ok(mut f) => {
                return f
                    .write_all(bytes)
                    .and_then(|()| f.sync_all())
                    .map(|()| backup.clone())
                    .map_err(|source| SetupError::Backup {
                        path: path.to_owned(),
                        backup,
                        source,
                    });
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last_err = Some(e),
            Err(source) => {
                return Err(SetupError::Backup {
                    path: path.to_owned(),
                    backup,
                    source,
                });
            }
        }
    }
    Err(SetupError::Backup {
        path: path.to_owned(),
        backup: path.with_file_name(format!("{name}.atm-backup-{stamp}-*")),
        source: last_err.unwrap_or_else(|| std::io::Error::other("too many backups")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_indentation_and_newline() {
        assert_eq!(detect_style("{\n    \"a\": 1\n}\n").indent, "    ");
        assert_eq!(detect_style("{\n\t\"a\": 1\n}").indent, "\t");
        assert!(!detect_style("{\n\t\"a\": 1\n}").trailing_newline);
        assert_eq!(detect_style("{}").indent, "  ");
    }

    #[test]
    fn render_round_trips_style() {
        let text = "{\n    \"b\": [\n        1\n    ],\n    \"a\": {}\n}\n";
        let v: Value = serde_json::from_str(text).unwrap();
        assert_eq!(render(&v, &detect_style(text)), text);
    }

    #[test]
    fn backups_never_overwrite_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("settings.json");
        let a = write_backup(&path, b"one", 0o640, "20260101T000000").unwrap();
        let b = write_backup(&path, b"two", 0o640, "20260101T000000").unwrap();
        assert_ne!(a, b);
        assert_eq!(std::fs::read(&a).unwrap(), b"one");
        assert_eq!(std::fs::read(&b).unwrap(), b"two");
        assert!(
            b.to_string_lossy()
                .ends_with(".atm-backup-20260101T000000-2")
        );
    }

    #[test]
    fn save_keeps_mode_edits_symlink_target_and_refuses_concurrent_change() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.json");
        std::fs::write(&real, "{}\n").unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o640)).unwrap();
        let link = dir.path().join("settings.json");
        std::os::unix::fs::symlink(&real, &link).unwrap();

        let loaded = load(&link).unwrap().file;
        assert_eq!(loaded.path, real.canonicalize().unwrap());
        let backup = save(&loaded, "{\"a\": 1}\n", "STAMP").unwrap().unwrap();
        assert_eq!(std::fs::read_to_string(&backup).unwrap(), "{}\n");
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(std::fs::read_to_string(&link).unwrap(), "{\"a\": 1}\n");
        let mode = std::fs::metadata(&real).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);

        let stale = load_text(&link).unwrap();
        std::fs::write(&real, "{\"someone\": \"else\"}\n").unwrap();
        assert!(matches!(
            save(&stale, "{}\n", "STAMP2"),
            Err(SetupError::ChangedMeanwhile { .. })
        ));
        assert_eq!(
            std::fs::read_to_string(&real).unwrap(),
            "{\"someone\": \"else\"}\n"
        );
    }
}
