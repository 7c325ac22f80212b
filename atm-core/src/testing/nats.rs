//! Real `nats-server` processes for tests: one server or a JetStream cluster on free loopback
//! ports, each with its own store dir under the test's temp dir, killed by PID on drop (and
//! restartable on the same port and store, for outage tests).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A free TCP port on loopback (bound and released; the race with other tests is accepted).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free loopback port: {e}"))
}

/// True when `nats-server` is on the PATH (`.ci/run` installs it).
pub fn available() -> bool {
    Command::new("nats-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// One `nats-server` with JetStream.
pub struct NatsServer {
    pub name: String,
    pub port: u16,
    conf: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl NatsServer {
    /// A single server; `extra` is appended to its config (accounts, authorization).
    pub fn start(dir: &Path, extra: &str) -> Self {
        let port = free_port();
        Self::spawn(dir, "n1", port, "", extra)
    }

    /// A JetStream cluster of `n` servers on loopback, routed to each other.
    pub fn cluster(dir: &Path, n: usize) -> Vec<Self> {
        let routes: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let route_list: Vec<String> = routes
            .iter()
            .map(|p| format!("\"nats-route://127.0.0.1:{p}\""))
            .collect();
        (0..n)
            .map(|i| {
                let cluster = format!(
                    "cluster {{\n  name: atmtest\n  listen: 127.0.0.1:{}\n  routes: [{}]\n}}\n",
                    routes[i],
                    route_list.join(", ")
                );
                Self::spawn(dir, &format!("n{}", i + 1), free_port(), &cluster, "")
            })
            .collect()
    }

    fn spawn(dir: &Path, name: &str, port: u16, cluster: &str, extra: &str) -> Self {
        let store = dir.join(format!("store-{name}"));
        let conf = dir.join(format!("{name}.conf"));
        let log = dir.join(format!("{name}.log"));
        let text = format!(
            "server_name: {name}\nlisten: 127.0.0.1:{port}\njetstream {{\n  store_dir: \"{}\"\n}}\n{cluster}{extra}\n",
            store.display()
        );
        std::fs::write(&conf, text).unwrap_or_else(|e| panic!("cannot write {conf:?}: {e}"));
        let mut s = Self {
            name: name.to_owned(),
            port,
            conf,
            log,
            child: None,
        };
        s.restart();
        s
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Starts the server (again, on the same port and store) and waits until it listens.
    pub fn restart(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self.log);
        let child = Command::new("nats-server")
            .arg("-c")
            .arg(&self.conf)
            .arg("-l")
            .arg(&self.log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run nats-server (is it installed?): {e}"));
        self.child = Some(child);
        let port = self.port;
        super::wait::wait_until_blocking(&format!("nats-server {} listens", self.name), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
                && self.log().contains("Server is ready")
        });
    }

    /// Kills the server (SIGKILL, by PID) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits until a JetStream cluster elected its meta leader (a bucket can be created then).
pub fn wait_for_meta_leader(servers: &[NatsServer]) {
    super::wait::wait_until_blocking_within(
        Duration::from_secs(30),
        "the JetStream cluster elects a meta leader",
        || {
            servers
                .iter()
                .any(|s| s.log().contains("JetStream cluster new metadata leader"))
        },
    );
}
