//! Git facts for a working directory (project root, worktree path, branch) without running `git`.
//!
//! Why a small reader and not a crate: the facts need three tiny files (`.git` or its `gitdir:`
//! pointer, `commondir`, `HEAD`), while the Git crates that can answer this (`gix-discover`,
//! `git2`) bring dozens of crates or a C library into the daemon. Spawning `git` per session per
//! interval would cost far more than the whole scan. The reader follows Git's layout:
//! - walk up from the cwd to the first directory with a `.git` entry: that directory is the
//!   worktree;
//! - `.git` is the git dir, or a file `gitdir: <path>` (linked worktrees and submodules) naming
//!   it, relative to the file's directory when not absolute;
//! - a linked worktree's git dir has `commondir` naming the main repository's git dir; the
//!   project root is the directory holding that `.git` (else the worktree itself);
//! - `HEAD` is `ref: refs/heads/<branch>`, another ref, or a bare commit (detached HEAD, shown
//!   as `(detached <short sha>)` so it replaces a branch shown before).
//!
//! Results are cached per cwd. Each refresh costs one `stat` of `HEAD` (its mtime, size and
//! inode: Git replaces `HEAD` by rename, so a checkout always changes the inode), and `HEAD` is
//! re-read only when that changes. A cwd that is not in a repository is looked at again every
//! [`NOT_A_REPO_RECHECK`] refreshes, so a later `git init` is noticed.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use atm_core::model::GitFacts;

use crate::procread::read_capped;

/// `.git` files, `commondir` and `HEAD` are a line each; anything longer is not Git's.
const SMALL_FILE_CAP: u64 = 4096;
/// How many refreshes a "not a repository" answer is trusted for.
pub const NOT_A_REPO_RECHECK: u32 = 15;
/// Most directories walked up from a cwd (deeper trees are not a repository we can see).
const MAX_DEPTH: usize = 64;

/// Where a worktree's Git data is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoLocation {
    pub worktree: PathBuf,
    pub git_dir: PathBuf,
    pub project_root: PathBuf,
}

/// Removes `.` and `..` without touching the file system (paths from `gitdir:` are textual).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

fn read_line(path: &Path) -> Option<String> {
    let bytes = read_capped(path, SMALL_FILE_CAP).ok()?;
    let text = std::str::from_utf8(&bytes).ok()?;
    let line = text.lines().next()?.trim();
    (!line.is_empty()).then(|| line.to_owned())
}

/// The git dir that `dir/.git` stands for, if it is one.
fn git_dir_at(dir: &Path) -> Option<PathBuf> {
    let dotgit = dir.join(".git");
    let meta = std::fs::metadata(&dotgit).ok()?;
    let git_dir = if meta.is_dir() {
        dotgit
    } else if meta.is_file() {
        let line = read_line(&dotgit)?;
        let target = line.strip_prefix("gitdir:")?.trim();
        if target.is_empty() {
            return None;
        }
        normalize(&dir.join(target))
    } else {
        return None;
    };
    git_dir.join("HEAD").is_file().then_some(git_dir)
}

/// Finds the repository `cwd` is in, from any subdirectory.
pub fn locate(cwd: &Path) -> Option<RepoLocation> {
    for dir in cwd.ancestors().take(MAX_DEPTH) {
        let Some(git_dir) = git_dir_at(dir) else {
            continue;
        };
        let common = read_line(&git_dir.join("commondir"))
            .map(|c| normalize(&git_dir.join(c)))
            .unwrap_or_else(|| git_dir.clone());
        let project_root = match (common.file_name(), common.parent()) {
            (Some(name), Some(parent)) if name == ".git" => parent.to_path_buf(),
            _ => dir.to_path_buf(),
        };
        return Some(RepoLocation {
            worktree: dir.to_path_buf(),
            git_dir,
            project_root,
        });
    }
    None
}

/// The branch `HEAD` names, or `(detached <sha>)`.
pub fn parse_head(head: &str) -> Option<String> {
    let head = head.trim();
    if let Some(r) = head.strip_prefix("ref:") {
        let r = r.trim();
        let name = r.strip_prefix("refs/heads/").unwrap_or(r);
        return (!name.is_empty()).then(|| name.to_owned());
    }
    let is_sha = head.len() >= 7 && head.chars().all(|c| c.is_ascii_hexdigit());
    is_sha.then(|| format!("(detached {})", &head[..7]))
}

fn head_stamp(git_dir: &Path) -> Option<(i64, i64, u64, u64)> {
    let m = std::fs::metadata(git_dir.join("HEAD")).ok()?;
    Some((m.mtime(), m.mtime_nsec(), m.ino(), m.size()))
}

fn text(p: &Path) -> Option<String> {
    p.to_str().map(str::to_owned)
}

struct Cached {
    location: Option<RepoLocation>,
    stamp: Option<(i64, i64, u64, u64)>,
    facts: GitFacts,
    /// Refreshes since a "not a repository" answer.
    negative_age: u32,
}

/// Git facts per cwd, refreshed cheaply (see the module docs).
#[derive(Default)]
pub struct GitCache {
    entries: HashMap<PathBuf, Cached>,
}

impl GitCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// The facts for `cwd` now. `None` when it is not in a repository.
    pub fn facts(&mut self, cwd: &Path) -> Option<GitFacts> {
        let entry = self
            .entries
            .entry(cwd.to_path_buf())
            .or_insert_with(|| Cached {
                location: None,
                stamp: None,
                facts: GitFacts::default(),
                negative_age: NOT_A_REPO_RECHECK,
            });
        if entry.location.is_none() {
            if entry.negative_age < NOT_A_REPO_RECHECK {
                entry.negative_age += 1;
                return None;
            }
            entry.negative_age = 0;
            entry.location = locate(cwd);
            entry.stamp = None;
        }
        let loc = entry.location.as_ref()?;
        let stamp = head_stamp(&loc.git_dir);
        if stamp.is_none() {
            // The repository went away (or HEAD is being replaced): look again next time.
            entry.location = None;
            entry.negative_age = NOT_A_REPO_RECHECK;
            return None;
        }
        if stamp != entry.stamp {
            entry.stamp = stamp;
            entry.facts = GitFacts {
                project_root: text(&loc.project_root),
                worktree_path: text(&loc.worktree),
                branch: read_line(&loc.git_dir.join("HEAD")).and_then(|h| parse_head(&h)),
            };
        }
        Some(entry.facts.clone())
    }

    /// Forgets every cwd not in `keep` (bounds the cache to the live sessions).
    pub fn retain(&mut self, keep: &std::collections::HashSet<PathBuf>) {
        self.entries.retain(|k, _| keep.contains(k));
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_forms() {
        let cases = [
            ("ref: refs/heads/main\n", Some("main")),
            ("ref: refs/heads/feat/x", Some("feat/x")),
            ("ref: refs/remotes/o/m", Some("refs/remotes/o/m")),
            (
                "0123456789abcdef0123456789abcdef01234567",
                Some("(detached 0123456)"),
            ),
            ("ref:", None),
            ("garbage!", None),
            ("", None),
        ];
        for (head, branch) in cases {
            assert_eq!(parse_head(head).as_deref(), branch, "{head:?}");
        }
    }

    #[test]
    fn malformed_dot_git_files_are_not_repositories() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        std::fs::write(d.join(".git"), b"gitdir:\n").unwrap();
        assert_eq!(locate(d), None);
        std::fs::write(d.join(".git"), b"\xff\xfe").unwrap();
        assert_eq!(locate(d), None);
        std::fs::write(d.join(".git"), b"gitdir: /no/such/dir").unwrap();
        assert_eq!(locate(d), None);
        std::fs::write(d.join(".git"), vec![b'g'; 100_000]).unwrap();
        assert_eq!(locate(d), None);
    }

    #[test]
    fn normalize_resolves_dots_textually() {
        assert_eq!(
            normalize(Path::new("/a/b/../c/./d")),
            PathBuf::from("/a/c/d")
        );
    }
}
