//! Git facts from real repositories made with the `git` CLI: subdirectories, a linked worktree,
//! a detached HEAD, and a branch switch noticed through the HEAD stamp.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers fail the test by panicking

mod common;

use std::path::Path;

use adapter_proc_discovery::git::{GitCache, locate};
use common::git;

fn s(p: &Path) -> Option<String> {
    Some(p.to_str().unwrap().to_owned())
}

#[test]
fn repo_subdir_worktree_and_detached_head() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().canonicalize().unwrap();
    let repo = base.join("repo");
    std::fs::create_dir_all(repo.join("a/b")).unwrap();
    git(&repo, &["init", "-q"]);
    git(&repo, &["commit", "-q", "--allow-empty", "-m", "one"]);
    git(&repo, &["worktree", "add", "-q", "-b", "feature", "../wt"]);
    let wt = base.join("wt");
    std::fs::create_dir_all(wt.join("deep/er")).unwrap();

    let mut cache = GitCache::new();
    let f = cache.facts(&repo.join("a/b")).unwrap();
    assert_eq!(f.project_root, s(&repo));
    assert_eq!(f.worktree_path, s(&repo));
    assert_eq!(f.branch.as_deref(), Some("main"));

    let f = cache.facts(&wt.join("deep/er")).unwrap();
    assert_eq!(
        f.project_root,
        s(&repo),
        "a worktree belongs to its main repository"
    );
    assert_eq!(f.worktree_path, s(&wt));
    assert_eq!(f.branch.as_deref(), Some("feature"));

    // A branch switch in the main worktree and a detached HEAD in the linked one.
    git(&repo, &["checkout", "-q", "-b", "other"]);
    git(&wt, &["checkout", "-q", "--detach"]);
    assert_eq!(
        cache.facts(&repo.join("a/b")).unwrap().branch.as_deref(),
        Some("other")
    );
    let detached = cache.facts(&wt.join("deep/er")).unwrap().branch.unwrap();
    assert!(detached.starts_with("(detached "), "{detached}");
    assert_eq!(detached.len(), "(detached 1234567)".len());

    // Outside any repository.
    let plain = base.join("plain");
    std::fs::create_dir_all(&plain).unwrap();
    assert_eq!(cache.facts(&plain), None);
    assert_eq!(locate(&plain), None);
    assert_eq!(cache.len(), 3);
    cache.retain(&[repo.join("a/b")].into_iter().collect());
    assert_eq!(cache.len(), 1);
}

#[test]
fn a_repository_created_later_is_noticed_after_the_recheck_period() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().canonicalize().unwrap();
    let mut cache = GitCache::new();
    assert_eq!(cache.facts(&dir), None);
    git(&dir, &["init", "-q"]);
    let mut seen = None;
    for _ in 0..=adapter_proc_discovery::git::NOT_A_REPO_RECHECK {
        seen = cache.facts(&dir);
        if seen.is_some() {
            break;
        }
    }
    assert_eq!(seen.unwrap().branch.as_deref(), Some("main"));
}
