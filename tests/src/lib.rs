//! Harness for end-to-end tests: starts the real `atmd` binary with a temporary config, runtime
//! dir and state dir, and speaks protocol v1 to it over its real sockets.
//!
//! The binaries are found beside the test executable (`target/<profile>/`), which `cargo test
//! --workspace` builds; `ATM_BIN_DIR` overrides that.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test support code

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub mod agents;
pub mod waiting_hook;
pub mod webdriver;

pub use waiting_hook::WaitingHook;

/// A child process standing in for an agent, so PIDs and start times are real.
pub use atm_core::testing::ingest::FakeAgent;

/// Where a daemon's web board listens and the token to log in with.
pub struct WebBoard {
    /// `http://127.0.0.1:<port>/`.
    pub url: String,
    pub addr: std::net::SocketAddr,
    pub token: String,
}

/// The address of a board URL as the `http` sink writes it (`http://127.0.0.1:<port>/`).
pub fn board_addr(url: &str) -> std::net::SocketAddr {
    url.trim()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .unwrap()
}

/// The runtime the benchmarks drive their clients from (two workers), the same in each.
pub fn bench_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Directory holding atmd, atm-hook and atmctl.
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("ATM_BIN_DIR") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test> -> target/<profile>
    exe.parent().and_then(Path::parent).unwrap().to_owned()
}

pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} not found; build the binaries first: cargo build --workspace --bins",
        p.display()
    );
    p
}

/// A test config: the Claude adapters and the socket sink; discovery optional.
pub fn basic_config(extra: &str) -> String {
    format!(
        "[daemon]\nlog = \"debug\"\nsnapshot_debounce = \"20ms\"\ncleanup_interval = \"1s\"\n\n\
         [[adapter]]\ntype = \"claude-hooks\"\n\n[[adapter]]\ntype = \"claude-statusline\"\n\n\
         [[sink]]\ntype = \"socket\"\n\n{extra}"
    )
}

/// [`basic_config`] with `daemon` (`key = value` lines) added to its `[daemon]` table.
pub fn config_with_daemon(daemon: &str) -> String {
    basic_config("").replacen("[daemon]\n", &format!("[daemon]\n{daemon}"), 1)
}

/// A running `atmd` in its own temporary directories. Killed on drop.
pub struct Daemon {
    pub child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
    /// A command atmd runs under (`nsenter --net=...`), empty for none; see
    /// [`crate::agents::AgentLab::netns_prefix`].
    pub wrapper: Vec<String>,
}

impl Daemon {
    pub fn runtime_dir(&self) -> PathBuf {
        self.dir.path().join("run/atm")
    }
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state/atm")
    }
    pub fn query_socket(&self) -> PathBuf {
        self.runtime_dir().join("atm.sock")
    }
    pub fn hooks_socket(&self) -> PathBuf {
        self.runtime_dir().join("hooks.sock")
    }

    /// Environment for atmd and the clients: everything points into the temp dir.
    pub fn env(&self) -> Vec<(String, String)> {
        let d = self.dir.path();
        vec![
            (
                "XDG_RUNTIME_DIR".into(),
                d.join("run").display().to_string(),
            ),
            (
                "XDG_STATE_HOME".into(),
                d.join("state").display().to_string(),
            ),
            (
                "XDG_CONFIG_HOME".into(),
                d.join("config").display().to_string(),
            ),
            ("HOME".into(), d.join("home").display().to_string()),
            (
                "ATM_SOCKET".into(),
                self.query_socket().display().to_string(),
            ),
            (
                "ATM_HOOKS_SOCKET".into(),
                self.hooks_socket().display().to_string(),
            ),
        ]
    }

    /// Writes `config` and starts atmd, waiting until its sockets answer.
    pub fn start(config: &str) -> Daemon {
        Daemon::start_wrapped(config, Vec::new())
    }

    /// [`Daemon::start`], with atmd run by `wrapper` (a command and its arguments, e.g.
    /// `env RUST_LOG=warn`).
    pub fn start_wrapped(config: &str, wrapper: Vec<String>) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("home")).unwrap();
        let config_path = dir.path().join("plugins.toml");
        std::fs::write(&config_path, config).unwrap();
        let log_path = dir.path().join("atmd.log");
        let mut d = Daemon {
            child: None,
            dir,
            config_path,
            log_path,
            wrapper,
        };
        d.spawn();
        d
    }

    /// [`Daemon::start`], then waits until the hook socket answers too.
    pub fn start_with_hooks(config: &str) -> Daemon {
        let d = Daemon::start(config);
        d.wait_for_socket(&d.hooks_socket());
        d
    }

    /// The `http` sink's board, once the sink says where it listens (`web.url`).
    pub fn web_board(&self) -> WebBoard {
        let file = self.runtime_dir().join(atm_core::paths::WEB_ADDRESS_FILE);
        atm_core::testing::wait_until_blocking("the board's address", || {
            std::fs::read_to_string(&file).is_ok_and(|u| u.ends_with('\n'))
        });
        let url = std::fs::read_to_string(&file).unwrap().trim().to_owned();
        let token = std::fs::read_to_string(self.state_dir().join("web-token")).unwrap();
        WebBoard {
            addr: board_addr(&url),
            url,
            token: token.trim().to_owned(),
        }
    }

    /// (Re)starts atmd on the same directories.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap();
        let mut cmd = match self.wrapper.split_first() {
            Some((w, rest)) => {
                let mut c = Command::new(w);
                c.args(rest).arg(bin("atmd"));
                c
            }
            None => Command::new(bin("atmd")),
        };
        cmd.arg("--config")
            .arg(&self.config_path)
            .env_remove("DBUS_SESSION_BUS_ADDRESS")
            .env_remove("ATM_CONFIG")
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in self.env() {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().unwrap());
        self.wait_for_socket(&self.query_socket());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn wait_for_socket(&self, path: &Path) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if UnixStream::connect(path).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "{} never answered; atmd log:\n{}",
            path.display(),
            self.log()
        );
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    pub fn signal(&self, sig: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.pid()).unwrap();
        rustix::process::kill_process(pid, sig).unwrap();
    }

    /// Waits for atmd to exit (up to `limit`); returns its exit code and how long it took.
    pub fn wait_exit(&mut self, limit: Duration) -> (Option<i32>, Duration) {
        let start = Instant::now();
        let child = self.child.as_mut().unwrap();
        while start.elapsed() < limit {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return (status.code(), start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("atmd did not exit within {limit:?}; log:\n{}", self.log());
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn client(&self) -> Client {
        Client::connect(&self.query_socket())
    }

    /// Sends raw ingest lines on one connection, then closes it.
    pub fn send_hooks(&self, lines: &[Value]) {
        let mut s = UnixStream::connect(self.hooks_socket()).unwrap();
        for l in lines {
            let mut b = serde_json::to_vec(l).unwrap();
            b.push(b'\n');
            s.write_all(&b).unwrap();
        }
    }

    /// Polls `list_sessions` until `pred` holds (10 s), returning the sessions.
    pub fn wait_sessions(&self, what: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        self.wait_sessions_within(Duration::from_secs(10), what, pred)
    }

    /// [`Daemon::wait_sessions`] with a deadline of `within`.
    pub fn wait_sessions_within(
        &self,
        within: Duration,
        what: &str,
        pred: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let mut c = self.client();
        let deadline = Instant::now() + within;
        let mut last = Vec::new();
        while Instant::now() < deadline {
            last = c.list();
            if pred(&last) {
                return last;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!(
            "timed out waiting for {what}; sessions: {}\natmd log:\n{}",
            serde_json::to_string_pretty(&last).unwrap(),
            self.log()
        );
    }

    /// Runs `atm-hook ARGS` as an agent in tmux pane `pane` runs it, `payload` on stdin, and
    /// asserts what every agent relies on: exit status 0. Returns what it printed on stdout.
    pub fn run_hook(&self, pane: &str, args: &[&str], payload: &[u8]) -> Vec<u8> {
        let out = atm_core::testing::run_with_stdin(
            self.command("atm-hook")
                .args(args)
                .env("TMUX_PANE", pane)
                // A `PermissionRequest` is sent like any event, not waited on for an answer
                // (tests/tests/decisions.rs tests the waiting).
                .env("ATM_HOOK_DECISION_WAIT_SECS", "0"),
            payload,
        );
        assert_eq!(
            out.status.code(),
            Some(0),
            "atm-hook {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// Runs a client binary with this daemon's environment.
    pub fn command(&self, name: &str) -> Command {
        let mut cmd = Command::new(bin(name));
        for (k, v) in self.env() {
            cmd.env(k, v);
        }
        cmd.env_remove("TMUX_PANE");
        cmd
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Runs `cmd` to its end and returns its stdout, which must be UTF-8; it must exit 0 (else the
/// test fails showing its stderr).
pub fn stdout_of(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?} did not run: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("stdout is UTF-8")
}

/// A `kB` field of `/proc/<pid>/status` (`VmRSS:`, `VmHWM:`); 0 when the process is gone.
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|x| x.parse().ok()))
        .unwrap_or(0)
}

/// A hook event line as atm-hook sends it.
pub fn hook(data: Value) -> Value {
    json!({"protocol_version": {"major": 1, "minor": 0}, "type": "hook_event", "data": data})
}

/// A status-line line as atm-hook sends it.
pub fn status(data: Value) -> Value {
    json!({"protocol_version": {"major": 1, "minor": 0}, "type": "status_update", "data": data})
}

/// A blocking protocol-v1 client.
pub struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Client {
    pub fn connect(path: &Path) -> Client {
        let s = UnixStream::connect(path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut c = Client {
            reader: BufReader::new(s.try_clone().unwrap()),
            writer: s,
        };
        c.send(json!({"type": "connect", "client_id": "e2e"}));
        let r = c.recv();
        assert_eq!(r["type"], "connected", "{r}");
        c
    }

    pub fn send(&mut self, mut msg: Value) {
        msg["protocol_version"] = json!({"major": 1, "minor": 0});
        let mut b = serde_json::to_vec(&msg).unwrap();
        b.push(b'\n');
        self.writer.write_all(&b).unwrap();
    }

    pub fn recv(&mut self) -> Value {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line).unwrap();
        assert!(n > 0, "connection closed");
        serde_json::from_str(&line).unwrap()
    }

    pub fn list(&mut self) -> Vec<Value> {
        self.send(json!({"type": "list_sessions"}));
        loop {
            let r = self.recv();
            if r["type"] == "session_list" {
                return r["sessions"].as_array().cloned().unwrap_or_default();
            }
        }
    }
}

pub fn find<'a>(sessions: &'a [Value], id: &str) -> Option<&'a Value> {
    sessions.iter().find(|s| s["id"] == id)
}

/// Lines a reader thread reads from `read`, each stamped when it was read (for latency
/// benchmarks: the stamp is taken before any parsing).
pub fn stamped_lines(
    read: impl std::io::Read + Send + 'static,
) -> std::sync::mpsc::Receiver<(Instant, String)> {
    let (tx, rx) = std::sync::mpsc::sync_channel(4096);
    std::thread::spawn(move || {
        for line in BufReader::new(read).lines().map_while(Result::ok) {
            if tx.send((Instant::now(), line)).is_err() {
                return;
            }
        }
    });
    rx
}

/// When the first JSON line for which `pred` holds was read; panics after 10 s without one.
pub fn wait_line(
    rx: &std::sync::mpsc::Receiver<(Instant, String)>,
    pred: impl Fn(&Value) -> bool,
) -> Instant {
    loop {
        let (at, line) = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("no line within 10 s");
        if serde_json::from_str::<Value>(&line).is_ok_and(|v| pred(&v)) {
            return at;
        }
    }
}

/// A protocol-v1 subscription to every session of `query`, as stamped lines.
pub fn subscribe_stamped(query: &Path) -> std::sync::mpsc::Receiver<(Instant, String)> {
    let mut sub = UnixStream::connect(query).expect("connect to the query socket");
    for mut msg in [
        json!({"type": "connect", "client_id": "bench"}),
        json!({"type": "subscribe"}),
    ] {
        msg["protocol_version"] = json!({"major": 1, "minor": 0});
        sub.write_all(format!("{msg}\n").as_bytes())
            .expect("write to the query socket");
    }
    stamped_lines(sub)
}
