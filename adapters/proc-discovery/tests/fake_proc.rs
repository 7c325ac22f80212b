//! The scanner against a fake `proc_root` built in a temp dir: which processes are agents, what
//! is read about them, and how it copes with odd, unreadable and vanishing entries.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers fail the test by panicking

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use adapter_proc_discovery::matcher::default_matchers;
use adapter_proc_discovery::scan::{ScanSettings, Scanner};
use atm_core::AgentState;

fn me() -> u32 {
    atm_core::paths::uid()
}

struct FakeProc<'a> {
    pid: u32,
    ppid: u32,
    uid: u32,
    start: u64,
    utime: u64,
    rss_pages: u64,
    cmdline: &'a [u8],
    exe: Option<&'a str>,
    environ: &'a [u8],
    cwd: Option<&'a Path>,
}

impl Default for FakeProc<'_> {
    fn default() -> Self {
        Self {
            pid: 0,
            ppid: 1,
            uid: me(),
            start: 1000,
            utime: 0,
            rss_pages: 10,
            cmdline: b"",
            exe: None,
            environ: b"",
            cwd: None,
        }
    }
}

fn stat_line(pid: u32, comm: &str, ppid: u32, utime: u64, start: u64, rss: u64) -> String {
    // Fields 3..=52 of proc(5); the ones we use are set, the rest are zero.
    let mut f = vec!["0".to_owned(); 50];
    f[0] = "S".into();
    f[1] = ppid.to_string();
    f[11] = utime.to_string();
    f[19] = start.to_string();
    f[21] = rss.to_string();
    format!("{pid} ({comm}) {}\n", f.join(" "))
}

fn write_proc(root: &Path, p: &FakeProc) -> PathBuf {
    let dir = root.join(p.pid.to_string());
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("stat"),
        stat_line(p.pid, "x) (y", p.ppid, p.utime, p.start, p.rss_pages),
    )
    .unwrap();
    std::fs::write(
        dir.join("status"),
        format!("Name:\tx\nUid:\t{0}\t{0}\t{0}\t{0}\n", p.uid),
    )
    .unwrap();
    std::fs::write(dir.join("cmdline"), p.cmdline).unwrap();
    std::fs::write(dir.join("environ"), p.environ).unwrap();
    if let Some(exe) = p.exe {
        std::os::unix::fs::symlink(exe, dir.join("exe")).unwrap();
    }
    if let Some(cwd) = p.cwd {
        std::os::unix::fs::symlink(cwd, dir.join("cwd")).unwrap();
    }
    // The kernel gives /proc/<pid> the process's owner; so does the fake tree, where it can
    // (changing a file's owner needs root: without it, "foreign" processes look like ours).
    if p.uid != me() && std::os::unix::fs::chown(&dir, Some(p.uid), None).is_err() {
        eprintln!(
            "cannot chown {}: not root; foreign-process check skipped",
            dir.display()
        );
    }
    dir
}

struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    claude_dir: PathBuf,
    work: PathBuf,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("proc");
    let claude_dir = tmp.path().join("home/.claude");
    let work = tmp.path().join("work");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir_all(claude_dir.join("sessions")).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    // Boot at the epoch + 1,000,000 s; now is 1,000 s after boot (clock ticks: 100/s assumed
    // nowhere: the scanner reads the real tick rate, and these values only need to be old).
    std::fs::write(root.join("stat"), "cpu 0 0 0 0\nbtime 1000000\n").unwrap();
    std::fs::write(root.join("uptime"), "100000.00 0.00\n").unwrap();
    Fixture {
        root,
        claude_dir,
        work,
        _tmp: tmp,
    }
}

fn scanner(f: &Fixture) -> Scanner {
    Scanner::new(ScanSettings {
        proc_root: f.root.clone(),
        claude_config_dir: f.claude_dir.clone(),
        matchers: default_matchers(),
        uid: me(),
        adapter_name: "proc-discovery".into(),
    })
}

/// A fixture holding the standard population (see [`populate`]).
fn populated() -> Fixture {
    let f = fixture();
    populate(&f);
    f
}

/// The standard population: three agents, and everything that must not be one.
fn populate(f: &Fixture) {
    let work = f.work.as_path();
    write_proc(
        &f.root,
        &FakeProc {
            pid: 100,
            cmdline: b"claude\0--resume\0",
            exe: Some("/home/u/.local/share/claude/versions/2.0.14"),
            environ: b"HOME=/home/u\0TMUX_PANE=%7\0",
            cwd: Some(work),
            ..Default::default()
        },
    );
    write_proc(
        &f.root,
        &FakeProc {
            pid: 101,
            cmdline:
                b"node\0--no-warnings\0/usr/lib/node_modules/@anthropic-ai/claude-code/cli.js\0",
            exe: Some("/usr/bin/node"),
            cwd: Some(work),
            ..Default::default()
        },
    );
    write_proc(
        &f.root,
        &FakeProc {
            pid: 102,
            cmdline: b"/usr/local/bin/codex\0exec\0",
            exe: Some("/usr/local/lib/codex/codex"),
            cwd: Some(work),
            ..Default::default()
        },
    );
    // Not agents: an editor and a pager on a file named claude, a node build mentioning it,
    // another user's claude, a kernel thread, odd bytes.
    write_proc(
        &f.root,
        &FakeProc {
            pid: 103,
            cmdline: b"vim\0claude\0",
            exe: Some("/usr/bin/vim.basic"),
            ..Default::default()
        },
    );
    write_proc(
        &f.root,
        &FakeProc {
            pid: 104,
            cmdline: b"cat\0/tmp/claude\0",
            exe: Some("/usr/bin/cat"),
            ..Default::default()
        },
    );
    write_proc(
        &f.root,
        &FakeProc {
            pid: 105,
            cmdline: b"node\0build.js\0claude\0",
            exe: Some("/usr/bin/node"),
            ..Default::default()
        },
    );
    write_proc(
        &f.root,
        &FakeProc {
            pid: 106,
            uid: me() + 1,
            cmdline: b"claude\0",
            exe: Some("/usr/bin/claude"),
            ..Default::default()
        },
    );
    write_proc(
        &f.root,
        &FakeProc {
            pid: 107,
            cmdline: b"",
            ..Default::default()
        },
    );
    write_proc(
        &f.root,
        &FakeProc {
            pid: 108,
            cmdline: b"\xff\xfe\0claude\0\xc3",
            environ: b"\xff=\xff\0TMUX_PANE\0",
            exe: Some("/usr/bin/\u{fffd}"),
            ..Default::default()
        },
    );
    // Unreadable: a cmdline that cannot be read (a directory: fails even for root), a stat
    // that is not a stat, a status without Uid.
    let d = write_proc(
        &f.root,
        &FakeProc {
            pid: 109,
            ..Default::default()
        },
    );
    std::fs::remove_file(d.join("cmdline")).unwrap();
    std::fs::create_dir(d.join("cmdline")).unwrap();
    let d = write_proc(
        &f.root,
        &FakeProc {
            pid: 110,
            ..Default::default()
        },
    );
    std::fs::write(d.join("stat"), b"110 (trunc").unwrap();
    // Not processes at all.
    std::fs::create_dir_all(f.root.join("self")).unwrap();
    std::fs::create_dir_all(f.root.join("99999999999")).unwrap();
    std::fs::write(f.root.join("1234"), b"a file, not a dir").unwrap();
}

fn found_map(
    out: &adapter_proc_discovery::scan::ScanOutcome,
) -> BTreeMap<u32, &atm_core::Discovered> {
    out.found.iter().map(|d| (d.process.pid, d)).collect()
}

#[test]
fn finds_agents_and_only_agents() {
    let f = populated();
    std::fs::write(
        f.claude_dir.join("sessions/100.json"),
        br#"{"pid":100,"sessionId":"sess-100","cwd":"/elsewhere","status":"waiting"}"#,
    )
    .unwrap();
    // A stale file: its pid is not 101's.
    std::fs::write(
        f.claude_dir.join("sessions/101.json"),
        br#"{"pid":55,"sessionId":"old"}"#,
    )
    .unwrap();
    let mut sc = scanner(&f);
    let out = sc.scan().unwrap();
    let found = found_map(&out);
    // Another user's claude (106) is only foreign when the fake tree could give it an owner.
    let expected: &[u32] = if me() == 0 {
        &[100, 101, 102]
    } else {
        &[100, 101, 102, 106]
    };
    assert_eq!(
        found.keys().copied().collect::<Vec<_>>(),
        expected,
        "{found:#?}"
    );
    let c = found[&100];
    assert_eq!(c.harness.as_str(), "claude");
    assert_eq!(c.session_id.as_ref().map(|s| s.as_str()), Some("sess-100"));
    assert_eq!(c.tmux_pane.as_deref(), Some("%7"));
    assert_eq!(c.cwd.as_deref(), f.work.to_str(), "/proc cwd wins");
    assert_eq!(c.state_hint, Some(AgentState::NeedsInput));
    assert_eq!(c.process.start_time, 1000);
    assert_eq!(c.adapter, "proc-discovery");
    assert_eq!(found[&101].harness.as_str(), "claude");
    assert_eq!(found[&101].session_id, None, "stale session file ignored");
    assert_eq!(found[&101].tmux_pane, None);
    assert_eq!(found[&102].harness.as_str(), "codex");
    assert_eq!(out.failed, 2, "cmdline dir, bad stat");
    assert_eq!(out.vanished, 0);
    assert_eq!(sc.cached_processes(), 11);
}

#[test]
fn process_vanishing_between_listing_and_reading_is_skipped() {
    let f = populated();
    let mut sc = scanner(&f);
    let listing = sc.list_pids().unwrap();
    std::fs::remove_dir_all(f.root.join("102")).unwrap();
    std::fs::remove_dir_all(f.root.join("103")).unwrap();
    let out = sc.scan_listed(&listing);
    let found = found_map(&out);
    assert_eq!(found.keys().copied().collect::<Vec<_>>(), vec![100, 101]);
    assert_eq!(out.vanished, 2);
    // An agent that vanishes after being cached, between listing and sampling.
    let listing = sc.list_pids().unwrap();
    std::fs::remove_dir_all(f.root.join("101")).unwrap();
    let out = sc.scan_listed(&listing);
    assert_eq!(
        found_map(&out).keys().copied().collect::<Vec<_>>(),
        vec![100]
    );
    // And the whole root going away is an error that names it, not a panic.
    std::fs::remove_dir_all(&f.root).unwrap();
    let err = sc.scan().unwrap_err().to_string();
    assert!(err.contains("proc_root"), "{err}");
}

#[test]
fn known_processes_are_not_read_again_but_reused_pids_are() {
    let f = populated();
    let mut sc = scanner(&f);
    sc.scan().unwrap();
    // Same directory (same inode): the cached verdict stands, files are not re-read.
    std::fs::write(f.root.join("103/cmdline"), b"claude\0").unwrap();
    let out = sc.scan().unwrap();
    assert!(!found_map(&out).contains_key(&103));
    // PID reused: a new directory (new inode) with a new start time is a new process. It is
    // built beside the old one, so the file system cannot hand it the old inode number.
    let staging = f.root.join("staging");
    write_proc(
        &staging,
        &FakeProc {
            pid: 103,
            start: 5000,
            cmdline: b"claude\0",
            ..Default::default()
        },
    );
    std::fs::remove_dir_all(f.root.join("103")).unwrap();
    std::fs::rename(staging.join("103"), f.root.join("103")).unwrap();
    std::fs::remove_dir(&staging).unwrap();
    let out = sc.scan().unwrap();
    let found = found_map(&out);
    assert_eq!(found[&103].process.start_time, 5000);
    // And a process that exits leaves the cache.
    std::fs::remove_dir_all(f.root.join("103")).unwrap();
    let out = sc.scan().unwrap();
    assert!(!found_map(&out).contains_key(&103));
    assert_eq!(sc.cached_processes(), 10);
}

#[test]
fn exec_into_an_agent_is_noticed() {
    let f = populated();
    let tps = procfs::ticks_per_second();
    let now_ticks = 100_000 * tps;
    // A young shell (started one second ago) that will exec claude.
    write_proc(
        &f.root,
        &FakeProc {
            pid: 300,
            start: now_ticks - tps,
            cmdline: b"bash\0",
            exe: Some("/usr/bin/bash"),
            ..Default::default()
        },
    );
    // An old launcher script that will exec claude, and writes its session file.
    write_proc(
        &f.root,
        &FakeProc {
            pid: 301,
            cmdline: b"sh\0/home/u/bin/start-agent\0",
            exe: Some("/usr/bin/dash"),
            ..Default::default()
        },
    );
    let mut sc = scanner(&f);
    let out = sc.scan().unwrap();
    assert!(!found_map(&out).contains_key(&300));
    std::fs::write(f.root.join("300/cmdline"), b"claude\0").unwrap();
    std::fs::write(f.root.join("301/cmdline"), b"claude\0").unwrap();
    let out = sc.scan().unwrap();
    assert!(found_map(&out).contains_key(&300), "young process re-read");
    assert!(
        !found_map(&out).contains_key(&301),
        "old process not re-read"
    );
    std::fs::write(
        f.claude_dir.join("sessions/301.json"),
        br#"{"pid":301,"sessionId":"s301"}"#,
    )
    .unwrap();
    let out = sc.scan().unwrap();
    let found = found_map(&out);
    assert_eq!(
        found[&301].session_id.as_ref().map(|s| s.as_str()),
        Some("s301"),
        "a new session file makes its PID be looked at again"
    );
}

#[test]
fn session_file_appearing_later_is_learnt() {
    let f = populated();
    let mut sc = scanner(&f);
    let out = sc.scan().unwrap();
    assert_eq!(found_map(&out)[&101].session_id, None);
    std::fs::write(
        f.claude_dir.join("sessions/101.json"),
        br#"{"pid":101,"sessionId":"late","status":"busy"}"#,
    )
    .unwrap();
    let out = sc.scan().unwrap();
    let d = found_map(&out)[&101];
    assert_eq!(d.session_id.as_ref().map(|s| s.as_str()), Some("late"));
    assert_eq!(d.state_hint, Some(AgentState::Working));
    // Garbage replacing it later gives no id (the registry keeps the one it learnt).
    std::fs::write(f.claude_dir.join("sessions/101.json"), b"\xff{{{").unwrap();
    let out = sc.scan().unwrap();
    assert_eq!(found_map(&out)[&101].session_id, None);
}

#[test]
fn cpu_and_memory_cover_descendants_but_not_other_agents() {
    let f = populated();
    // 100 (claude) -> 400 (bash) -> 401 (rg); 100 -> 402 (a nested claude, its own session).
    for (pid, ppid, cmd) in [
        (400, 100, &b"bash\0"[..]),
        (401, 400, b"rg\0x\0"),
        (402, 100, b"claude\0-p\0"),
    ] {
        write_proc(
            &f.root,
            &FakeProc {
                pid,
                ppid,
                cmdline: cmd,
                rss_pages: 100,
                ..Default::default()
            },
        );
    }
    let page = procfs::page_size();
    let mut sc = scanner(&f);
    let out = sc.scan().unwrap();
    let d = found_map(&out)[&100];
    assert_eq!(d.usage.rss_bytes, Some((10 + 100 + 100) * page));
    assert_eq!(d.usage.cpu_percent, None, "no baseline yet");
    assert_eq!(found_map(&out)[&402].usage.rss_bytes, Some(100 * page));
    for pid in [100, 401] {
        let path = f.root.join(format!("{pid}/stat"));
        let ppid = if pid == 100 { 1 } else { 400 };
        let rss = if pid == 100 { 10 } else { 100 };
        std::fs::write(&path, stat_line(pid, "x", ppid, 500, 1000, rss)).unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(20));
    let out = sc.scan().unwrap();
    let cpu = found_map(&out)[&100].usage.cpu_percent.unwrap();
    assert!(cpu > 0.0, "{cpu}");
    assert_eq!(found_map(&out)[&402].usage.cpu_percent, Some(0.0));
}

#[test]
fn node_launcher_of_a_native_agent_is_not_a_second_session() {
    let f = fixture();
    write_proc(
        &f.root,
        &FakeProc {
            pid: 500,
            cmdline: b"node\0/usr/lib/node_modules/@openai/codex/bin/codex.js\0",
            exe: Some("/usr/bin/node"),
            ..Default::default()
        },
    );
    write_proc(
        &f.root,
        &FakeProc {
            pid: 501,
            ppid: 500,
            cmdline: b"/usr/lib/node_modules/@openai/codex/vendor/x86_64/codex/codex\0",
            exe: Some("/usr/lib/node_modules/@openai/codex/vendor/x86_64/codex/codex"),
            ..Default::default()
        },
    );
    let mut sc = scanner(&f);
    let out = sc.scan().unwrap();
    assert_eq!(
        found_map(&out).keys().copied().collect::<Vec<_>>(),
        vec![501]
    );
    assert_eq!(out.new_launchers, vec![500], "reported once");
    assert!(sc.scan().unwrap().new_launchers.is_empty());
    // The agent exits; its launcher lingers a moment: still not a session.
    std::fs::remove_dir_all(f.root.join("501")).unwrap();
    let out = sc.scan().unwrap();
    assert!(found_map(&out).is_empty(), "{:?}", found_map(&out).keys());
}

#[test]
fn a_young_fork_of_the_agent_that_execs_a_helper_is_no_session() {
    let f = fixture();
    let tps = procfs::ticks_per_second();
    // Started a second ago (the fixture's uptime is 100000 s).
    let young = 100_000 * tps - tps;
    let codex = |pid: u32, ppid: u32| FakeProc {
        pid,
        ppid,
        start: young,
        cmdline: b"/usr/lib/node_modules/@openai/codex/vendor/x86_64/codex/codex\0",
        exe: Some("/usr/lib/node_modules/@openai/codex/vendor/x86_64/codex/codex"),
        ..Default::default()
    };
    write_proc(&f.root, &codex(700, 1));
    // Codex forked itself; the child has not exec'd yet.
    write_proc(&f.root, &codex(701, 700));
    let mut sc = scanner(&f);
    let out = sc.scan().unwrap();
    assert!(found_map(&out).contains_key(&701));
    // It execs a helper (same process, same start time).
    std::fs::remove_file(f.root.join("701/exe")).unwrap();
    write_proc(
        &f.root,
        &FakeProc {
            pid: 701,
            ppid: 700,
            start: young,
            cmdline: b"/usr/bin/bwrap\0--ro-bind\0/\0/\0",
            exe: Some("/usr/bin/bwrap"),
            ..Default::default()
        },
    );
    let out = sc.scan().unwrap();
    assert_eq!(
        found_map(&out).keys().copied().collect::<Vec<_>>(),
        vec![700]
    );
    assert_eq!(out.new_launchers, vec![701]);
    assert!(sc.scan().unwrap().new_launchers.is_empty());
}

#[test]
fn claude_config_dir_from_the_process_environment_wins() {
    let f = fixture();
    let own = f.work.join("own-claude");
    std::fs::create_dir_all(own.join("sessions")).unwrap();
    std::fs::write(
        own.join("sessions/600.json"),
        br#"{"pid":600,"sessionId":"from-own-dir"}"#,
    )
    .unwrap();
    let env = format!("CLAUDE_CONFIG_DIR={}\0", own.display());
    write_proc(
        &f.root,
        &FakeProc {
            pid: 600,
            cmdline: b"claude\0",
            environ: env.as_bytes(),
            ..Default::default()
        },
    );
    let out = scanner(&f).scan().unwrap();
    assert_eq!(
        found_map(&out)[&600]
            .session_id
            .as_ref()
            .map(|s| s.as_str()),
        Some("from-own-dir")
    );
}
