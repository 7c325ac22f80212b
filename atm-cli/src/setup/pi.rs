//! `atmctl setup pi`: atm's pi extension in pi's extensions directory
//! (`$PI_CODING_AGENT_DIR/extensions/atm.ts`, else `~/.pi/agent/extensions/atm.ts`), where pi
//! finds and loads it at its next start (pi loads TypeScript as is; there is no build step).
//!
//! pi has no hook programs and no settings entry to merge: the extension is one file of atm's
//! own (`adapters/pi/extension/atm.ts`, embedded here), so install writes exactly that file and
//! uninstall removes exactly that file (and the `extensions` directory when that leaves it
//! empty). A file of that name atm did not write (it lacks [`MARKER`]) is never overwritten or
//! removed. An older atm's extension is replaced by this one. `--dry-run` prints the change as a
//! diff and writes nothing, like the other agents' setups.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::file::{self, TextFile};
use super::hooks::{Edit, finish, say};
use super::{SetupError, hooks};

/// The extension, as this atmctl installs it.
pub const EXTENSION: &str = include_str!("../../../adapters/pi/extension/atm.ts");

/// The first line of every version of atm's extension: what makes the file ours.
pub const MARKER: &str = "// atm's pi extension:";

/// The file name in pi's extensions directory.
pub const FILE_NAME: &str = "atm.ts";

/// The options of `atmctl setup pi`.
#[derive(Debug, Clone, clap::Args)]
pub struct PiArgs {
    /// Print the change as a unified diff; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Remove the extension.
    #[arg(long)]
    pub uninstall: bool,
    /// pi's agent directory [default: $PI_CODING_AGENT_DIR, else ~/.pi/agent].
    #[arg(long, value_name = "DIR")]
    pub config_dir: Option<PathBuf>,
}

/// Why the extension file cannot be installed or removed.
#[derive(Debug, thiserror::Error)]
pub enum PiSetupError {
    #[error(
        "{path} exists and is not atm's extension (its first line is not `{MARKER} ...`); \
         move it away and run again (nothing was changed)"
    )]
    NotOurs { path: PathBuf },
    #[error("cannot remove {path}: {source}")]
    Remove {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// pi's agent directory: `--config-dir`, `$PI_CODING_AGENT_DIR`, `~/.pi/agent`.
pub fn agent_dir(args: &PiArgs) -> Result<PathBuf, SetupError> {
    hooks::config_dir(
        args.config_dir.as_deref(),
        "PI_CODING_AGENT_DIR",
        ".pi/agent",
    )
}

/// Where the extension goes in `agent_dir`.
pub fn extension_path(agent_dir: &Path) -> PathBuf {
    agent_dir.join("extensions").join(FILE_NAME)
}

/// True when `text` is a version of atm's extension.
pub fn is_ours(text: &str) -> bool {
    text.starts_with(MARKER)
}

pub fn run(args: &PiArgs) -> anyhow::Result<ExitCode> {
    let path = extension_path(&agent_dir(args)?);
    let current = file::load_text(&path)?;
    let shown = current.path.display().to_string();
    if current.original.is_some() && !is_ours(current.text()) {
        return Err(PiSetupError::NotOurs { path: current.path }.into());
    }
    if args.uninstall {
        return uninstall(&current, args.dry_run, &shown);
    }
    let edits: Vec<Edit> = (current.text() != EXTENSION)
        .then(|| Edit {
            file: current.clone(),
            new_text: EXTENSION.to_owned(),
        })
        .into_iter()
        .collect();
    let done = format!(
        "installed atm's pi extension as {shown}\n\
         pi sessions started before now need a restart to load it (or /reload in pi).\n"
    );
    if edits.is_empty() {
        say(&format!(
            "atm's pi extension is already installed as {shown}; nothing to change\n"
        ))?;
        return Ok(ExitCode::SUCCESS);
    }
    if args.dry_run {
        return finish(&edits, true, "", done);
    }
    // Our own older version is replaced without a backup: a copy would only be clutter in the
    // directory pi loads extensions from.
    // Mode 0644 for a new file: pi only reads it, and it holds no secret.
    file::replace(&current, EXTENSION, current.mode.unwrap_or(0o644))?;
    say(&done)?;
    Ok(ExitCode::SUCCESS)
}

fn uninstall(current: &TextFile, dry_run: bool, shown: &str) -> anyhow::Result<ExitCode> {
    if current.original.is_none() {
        say(&format!(
            "atm's pi extension is not installed ({shown} does not exist); nothing to change\n"
        ))?;
        return Ok(ExitCode::SUCCESS);
    }
    if dry_run {
        let mut out = file::unified_diff(&current.path, current.text(), "");
        out.push_str(&format!("(dry run: {shown} not removed)\n"));
        say(&out)?;
        return Ok(ExitCode::SUCCESS);
    }
    std::fs::remove_file(&current.path).map_err(|source| PiSetupError::Remove {
        path: current.path.clone(),
        source,
    })?;
    // The directory goes too when nothing else is in it (it holds no one else's files then).
    if let Some(dir) = current.path.parent() {
        let _ = std::fs::remove_dir(dir);
    }
    say(&format!("removed atm's pi extension {shown}\n"))?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(dir: &Path) -> PiArgs {
        PiArgs {
            dry_run: false,
            uninstall: false,
            config_dir: Some(dir.to_owned()),
        }
    }

    #[test]
    fn the_embedded_extension_is_marked_and_names_its_socket_variable() {
        assert!(is_ours(EXTENSION));
        assert!(EXTENSION.contains("ATM_PI_SOCKET"));
        assert!(EXTENSION.contains("getSessionId()"));
        assert!(!EXTENSION.contains("process.env.ATM_SOCKET"));
    }

    #[test]
    fn install_uninstall_round_trip_leaves_nothing() {
        let home = tempfile::tempdir().unwrap();
        let agent = home.path().join("agent");
        std::fs::create_dir_all(&agent).unwrap();
        std::fs::write(agent.join("settings.json"), "{}").unwrap();
        let a = args(&agent);
        let path = extension_path(&agent);

        let dry = PiArgs {
            dry_run: true,
            ..a.clone()
        };
        run(&dry).unwrap();
        assert!(!path.exists(), "a dry run writes nothing");

        run(&a).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), EXTENSION);
        run(&a).unwrap();
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [FILE_NAME], "no temp file or backup left behind");

        // An older version of ours is replaced.
        std::fs::write(&path, format!("{MARKER} an older one\n")).unwrap();
        run(&a).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), EXTENSION);

        let un = PiArgs {
            uninstall: true,
            ..a.clone()
        };
        run(&PiArgs {
            dry_run: true,
            ..un.clone()
        })
        .unwrap();
        assert!(path.exists(), "a dry run removes nothing");
        run(&un).unwrap();
        assert!(!path.exists());
        assert!(!agent.join("extensions").exists());
        assert!(agent.join("settings.json").exists(), "the rest stays");
        run(&un).unwrap();
    }

    #[test]
    fn someone_elses_file_is_never_touched() {
        let home = tempfile::tempdir().unwrap();
        let a = args(home.path());
        let path = extension_path(home.path());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "export default function () {}\n").unwrap();
        std::fs::write(path.with_file_name("mine.ts"), "x").unwrap();
        let e = run(&a).unwrap_err().to_string();
        assert!(e.contains("not atm's extension"), "{e}");
        let un = PiArgs {
            uninstall: true,
            ..a.clone()
        };
        assert!(run(&un).is_err());
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "export default function () {}\n"
        );

        // Uninstall keeps a directory that holds the user's own extensions.
        std::fs::remove_file(&path).unwrap();
        run(&a).unwrap();
        run(&un).unwrap();
        assert!(path.with_file_name("mine.ts").exists());
    }
}
