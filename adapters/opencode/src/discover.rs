//! Finding a running opencode's server from its process, in `/proc`.
//!
//! opencode writes its server's address nowhere: the TUI listens only when started with
//! `--port` (or `server.port` in its config; port 0 tries 4096, then any free port), and
//! `opencode serve` prints the address on its stdout. What the kernel knows is enough, though:
//! a listening socket is a `socket:[inode]` among the process's open files
//! (`/proc/<pid>/fd`), and `/proc/<pid>/net/tcp{,6}` lists the listening sockets of the
//! process's network namespace with their inode and local port. So the adapter learns of an
//! opencode process from proc-discovery (through the registry, no scan of its own) and reads
//! its port here. Everything is pure over a `/proc` root so tests use a fake tree.

use std::path::Path;

/// `/proc/<pid>/net/tcp` state of a listening socket.
const TCP_LISTEN: &str = "0A";

/// opencode subcommands that run a server with no TUI of their own: several clients may hold
/// sessions in one such process, so its sessions are not bound to it (see the adapter).
const HEADLESS: [&str; 3] = ["serve", "web", "acp"];

/// What the adapter needs to know about one opencode process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerProcess {
    /// `opencode serve` / `web` / `acp` rather than the TUI.
    pub headless: bool,
    /// The tmux pane it runs in (`TMUX_PANE` in its environment).
    pub tmux_pane: Option<String>,
}

/// Reads what [`ServerProcess`] holds for `pid`, `None` when the process is gone.
pub fn server_process(proc_root: &Path, pid: u32) -> Option<ServerProcess> {
    let dir = proc_root.join(pid.to_string());
    let cmdline = std::fs::read(dir.join("cmdline")).ok()?;
    let headless = cmdline
        .split(|b| *b == 0)
        .skip(1)
        .find(|a| !a.starts_with(b"-"))
        .is_some_and(|a| HEADLESS.iter().any(|h| h.as_bytes() == a));
    let tmux_pane = std::fs::read(dir.join("environ"))
        .ok()
        .and_then(|env| atm_core::process::environ_var(&env, "TMUX_PANE"))
        .filter(|v| v.starts_with('%') && v.len() <= 16);
    Some(ServerProcess {
        headless,
        tmux_pane,
    })
}

/// True when `pid` shares this daemon's network namespace: a port it listens on is then
/// reachable on our loopback. (Unreadable: assumed shared.)
pub fn same_netns(proc_root: &Path, pid: u32) -> bool {
    let ours = std::fs::read_link(proc_root.join("self/ns/net"));
    let theirs = std::fs::read_link(proc_root.join(pid.to_string()).join("ns/net"));
    match (ours, theirs) {
        (Ok(a), Ok(b)) => a == b,
        _ => true,
    }
}

/// When process `p` started, in milliseconds since the epoch (`btime` in `/proc/stat` plus
/// its start time in clock ticks).
pub fn started_ms(proc_root: &Path, p: atm_core::model::ProcessIdentity) -> Option<u64> {
    let boot = atm_core::process::boot_time_ms(proc_root)?;
    let ticks = procfs::ticks_per_second().max(1);
    Some(boot.saturating_add(p.start_time.saturating_mul(1000) / ticks))
}

/// Where a listening socket of the process can be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listen {
    V4(u16),
    V6(u16),
}

impl Listen {
    /// `http://127.0.0.1:PORT` or `http://[::1]:PORT`.
    pub fn url(self) -> String {
        match self {
            Listen::V4(p) => format!("http://127.0.0.1:{p}"),
            Listen::V6(p) => format!("http://[::1]:{p}"),
        }
    }
}

/// The loopback (or any-address) TCP sockets `pid` listens on, IPv4 first, lowest inode
/// (the first opened) first.
pub fn listening(proc_root: &Path, pid: u32) -> Vec<Listen> {
    let dir = proc_root.join(pid.to_string());
    let Ok(fds) = std::fs::read_dir(dir.join("fd")) else {
        return Vec::new();
    };
    let mut inodes: Vec<u64> = fds
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|l| {
            l.to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect();
    if inodes.is_empty() {
        return Vec::new();
    }
    inodes.sort_unstable();
    let mut found = Vec::new();
    for (file, v6) in [("net/tcp", false), ("net/tcp6", true)] {
        let text = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
        let mut here: Vec<(u64, Listen)> = text
            .lines()
            .skip(1)
            .filter_map(|l| listen_line(l, v6))
            .filter(|(inode, _)| inodes.binary_search(inode).is_ok())
            .collect();
        here.sort_unstable_by_key(|(inode, _)| *inode);
        found.extend(here.into_iter().map(|(_, l)| l));
    }
    found
}

/// One row of `/proc/net/tcp{,6}`: its inode and port when it is a listening socket on
/// loopback or on every address.
fn listen_line(line: &str, v6: bool) -> Option<(u64, Listen)> {
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.len() < 10 || f[3] != TCP_LISTEN {
        return None;
    }
    let (addr, port) = f[1].split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok().filter(|p| *p > 0)?;
    let reachable = if v6 {
        // `::` or `::1` (kernel words in host order: the last word of ::1 is 01000000).
        addr == "00000000000000000000000000000000" || addr == "00000000000000000000000001000000"
    } else {
        // 0.0.0.0, or 127.x.x.x (little-endian: the last byte is 7F).
        addr == "00000000" || addr.ends_with("7F")
    };
    let inode = f[9].parse().ok()?;
    reachable.then_some((
        inode,
        if v6 {
            Listen::V6(port)
        } else {
            Listen::V4(port)
        },
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const HEADER: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n";

    fn fake(
        pid: u32,
        cmdline: &[&str],
        env: &[&str],
        sockets: &[u64],
        tcp: &str,
    ) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join(pid.to_string());
        std::fs::create_dir_all(dir.join("fd")).unwrap();
        std::fs::create_dir_all(dir.join("net")).unwrap();
        std::fs::write(dir.join("cmdline"), cmdline.join("\0")).unwrap();
        std::fs::write(dir.join("environ"), env.join("\0")).unwrap();
        for (i, inode) in sockets.iter().enumerate() {
            std::os::unix::fs::symlink(
                format!("socket:[{inode}]"),
                dir.join("fd").join(i.to_string()),
            )
            .unwrap();
        }
        std::os::unix::fs::symlink("/dev/null", dir.join("fd/99")).unwrap();
        std::fs::write(dir.join("net/tcp"), format!("{HEADER}{tcp}")).unwrap();
        root
    }

    #[test]
    fn the_port_a_process_listens_on() {
        let tcp = "   0: 0100007F:1000 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 555 1 0 100 0 0 10 0\n\
                   1: 0100007F:95A5 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 777 1 0 100 0 0 10 0\n\
                   2: 0100007F:1001 0100007F:D000 01 00000000:00000000 00:00000000 00000000     0        0 556 1 0 100 0 0 10 0\n\
                   3: 0A00000F:1002 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 557 1 0 100 0 0 10 0\n";
        let root = fake(
            42,
            &["opencode", "--port", "0"],
            &["TMUX_PANE=%3", "A=b"],
            &[556, 555, 557],
            tcp,
        );
        // 777 is another process's; 556 is a connection; 557 listens on a non-loopback address.
        assert_eq!(listening(root.path(), 42), vec![Listen::V4(4096)]);
        assert_eq!(Listen::V4(4096).url(), "http://127.0.0.1:4096");
        let p = server_process(root.path(), 42).unwrap();
        assert_eq!(
            p,
            ServerProcess {
                headless: false,
                tmux_pane: Some("%3".into())
            }
        );
        assert!(listening(root.path(), 43).is_empty());
        assert!(server_process(root.path(), 43).is_none());
    }

    #[test]
    fn headless_servers_are_told_apart() {
        let root = fake(
            7,
            &["/x/opencode", "--print-logs", "serve", "--port", "4096"],
            &[],
            &[],
            "",
        );
        assert!(server_process(root.path(), 7).unwrap().headless);
        let root = fake(7, &["/x/opencode", "/home/u/serve"], &[], &[], "");
        assert!(!server_process(root.path(), 7).unwrap().headless);
    }

    #[test]
    fn ipv6_loopback_rows() {
        let row = "   0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 9 1 0 100 0 0 10 0";
        assert_eq!(listen_line(row, true), Some((9, Listen::V6(8080))));
        assert_eq!(Listen::V6(8080).url(), "http://[::1]:8080");
    }
}
