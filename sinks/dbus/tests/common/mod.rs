//! Shared pieces of the D-Bus sink's integration tests: a sink on a private bus fed by a real
//! registry, a zbus client, `busctl`/`gdbus` runners, and a signal recorder.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

pub use atm_core::testing::wait_until;
use atm_core::testing::{PrivateBus, TestHarness, wait_until_blocking};
use atm_core::{
    AgentEvent, EventSource, Harness, ProcessIdentity, RegistryConfig, SessionId, UsageUpdate,
};
use futures_util::StreamExt;
use tempfile::TempDir;
use tokio::task::JoinHandle;
use zbus::connection::Builder;
use zbus::{Connection, MessageStream, OwnedObjectPath, OwnedVariant};

use sink_dbus::{DbusConfig, DbusSink};

pub const SERVICE: &str = "io.github.atm.Monitor";
pub const MANAGER: &str = "/io/github/atm/Monitor1";
/// `busctl`'s words for the manager's ListSessions.
pub const LIST_SESSIONS: [&str; 5] = [
    "call",
    SERVICE,
    MANAGER,
    "io.github.atm.Monitor1",
    "ListSessions",
];

#[zbus::proxy(
    interface = "io.github.atm.Monitor1",
    default_service = "io.github.atm.Monitor",
    default_path = "/io/github/atm/Monitor1"
)]
pub trait Monitor {
    fn list_sessions(&self) -> zbus::Result<HashMap<String, HashMap<String, OwnedVariant>>>;
    fn get_session(
        &self,
        id: &str,
    ) -> zbus::Result<(OwnedObjectPath, HashMap<String, OwnedVariant>)>;
    fn rescan(&self) -> zbus::Result<(u32, u32)>;
    fn list_requests(&self) -> zbus::Result<HashMap<String, HashMap<String, OwnedVariant>>>;
    fn approve(&self, id: &str, always: bool) -> zbus::Result<String>;
    fn approve_rule(&self, id: &str, rule: u32) -> zbus::Result<String>;
    fn deny(&self, id: &str, message: &str, interrupt: bool) -> zbus::Result<String>;
    fn answer(&self, id: &str, answers: &[&str]) -> zbus::Result<String>;
    #[zbus(property)]
    fn session_count(&self) -> zbus::Result<u32>;
    #[zbus(property)]
    fn attention_count(&self) -> zbus::Result<u32>;
}

/// A config pointing at `address` with fast retries.
pub fn config(address: &str) -> DbusConfig {
    DbusConfig {
        address: Some(address.to_owned()),
        retry_initial: Duration::from_millis(50),
        retry_max: Duration::from_millis(400),
        ..DbusConfig::default()
    }
}

/// Runs the sink on `harness` until its cancel token fires.
pub fn start_sink(
    harness: &TestHarness,
    config: DbusConfig,
) -> JoinHandle<Result<(), atm_core::PluginError>> {
    start_sink_with_stats(harness, config).0
}

/// [`start_sink`], also handing back the sink's counters.
pub fn start_sink_with_stats(
    harness: &TestHarness,
    config: DbusConfig,
) -> (
    JoinHandle<Result<(), atm_core::PluginError>>,
    atm_core::SinkStats,
) {
    let ctx = harness.sink_context("dbus");
    let sink = DbusSink::new(config);
    let stats = sink.stats();
    let sink: Box<dyn atm_core::OutputSink> = Box::new(sink);
    (tokio::spawn(async move { sink.run(ctx).await }), stats)
}

/// The sink on a real registry, talking to the bus at an address the test chose (which may be
/// absent, go away or come back).
pub struct SinkUnderTest {
    pub harness: TestHarness,
    pub task: JoinHandle<Result<(), atm_core::PluginError>>,
    pub stats: atm_core::SinkStats,
}

/// A fresh temp dir, and a bus address on socket `name` inside it, where no bus is yet.
pub fn address_in_new_dir(name: &str) -> (TempDir, PathBuf, String) {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join(name);
    let address = format!("unix:path={}", socket.display());
    (dir, socket, address)
}

impl SinkUnderTest {
    pub async fn start(dir: &Path, address: &str) -> Self {
        Self::start_with(TestHarness::new(dir).await, config(address))
    }

    /// The sink on a private bus of its own, with the temp dir and the bus it needs kept.
    pub async fn on_private_bus() -> (TempDir, PrivateBus, Self) {
        let dir = tempfile::tempdir().unwrap();
        let bus = PrivateBus::start();
        let sink = Self::start(dir.path(), &bus.address).await;
        (dir, bus, sink)
    }

    pub fn start_with(harness: TestHarness, config: DbusConfig) -> Self {
        let (task, stats) = start_sink_with_stats(&harness, config);
        Self {
            harness,
            task,
            stats,
        }
    }

    pub async fn apply(&self, source: &EventSource, event: AgentEvent) {
        apply(&self.harness, source, event).await;
    }

    pub async fn usage(&self, source: &EventSource, update: UsageUpdate) {
        self.harness.usage(source, update).await;
    }

    /// Waits until the sink has applied every change the registry made so far and has failed
    /// at least `failures` connection attempts in all: the witness that it kept working (and
    /// retrying) without a bus. The sink must still be running.
    pub async fn wait_caught_up_without_bus(&self, failures: u64) {
        let stats = &self.stats;
        self.harness.wait_caught_up_failing(stats, failures).await;
        assert!(!self.task.is_finished(), "the sink gave up without a bus");
    }

    /// Cancels the sink and checks that it stops, cleanly, within 2 s.
    pub async fn stop(self) {
        self.harness.cancel.cancel();
        tokio::time::timeout(Duration::from_secs(2), self.task)
            .await
            .expect("the sink did not stop within 2 s")
            .unwrap()
            .unwrap();
    }
}

/// The sink on a fresh private bus, with a client connection on which the service is up.
pub struct OnPrivateBus {
    pub bus: PrivateBus,
    pub sink: SinkUnderTest,
    pub conn: Connection,
    _dir: TempDir,
}

impl OnPrivateBus {
    pub async fn start() -> Self {
        let registry = RegistryConfig {
            cleanup_interval: Duration::ZERO,
            ..RegistryConfig::default()
        };
        Self::start_with(registry, |_| {}).await
    }

    /// With a registry config of the test's own and the sink config changed by `tweak`.
    pub async fn start_with(registry: RegistryConfig, tweak: impl FnOnce(&mut DbusConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let bus = PrivateBus::start();
        let harness = TestHarness::with_config(dir.path(), registry).await;
        let mut cfg = config(&bus.address);
        tweak(&mut cfg);
        let sink = SinkUnderTest::start_with(harness, cfg);
        let conn = connected(&bus.address).await;
        Self {
            bus,
            sink,
            conn,
            _dir: dir,
        }
    }

    /// A sink on a private bus of its own, and a recorder of every signal it sends.
    pub async fn recording() -> (Self, Recorder) {
        let t = Self::start().await;
        let rec = Recorder::new(&t.conn).await;
        (t, rec)
    }

    pub fn harness(&self) -> &TestHarness {
        &self.sink.harness
    }

    pub async fn apply(&self, source: &EventSource, event: AgentEvent) {
        self.sink.apply(source, event).await;
    }

    pub async fn usage(&self, source: &EventSource, update: UsageUpdate) {
        self.sink.usage(source, update).await;
    }

    /// Starts `source`'s session and waits until the bus shows `count` sessions.
    pub async fn start_session(&self, source: &EventSource, count: u32) {
        self.apply(source, started()).await;
        wait_for_sessions(&self.conn, count).await;
    }

    /// Starts `source`'s session as the only one, then records the signals that follow.
    pub async fn record_after_start(&self, source: &EventSource) -> Recorder {
        self.start_session(source, 1).await;
        Recorder::new(&self.conn).await
    }

    /// `busctl --address=<this bus> ARGS...`.
    pub async fn busctl(&self, args: &[&str]) -> String {
        let mut all = vec![format!("--address={}", self.bus.address)];
        all.extend(args.iter().map(|a| (*a).to_owned()));
        run_async("busctl", all).await
    }

    /// `gdbus call` on this bus: `method` of `path` on the service, with `args`.
    pub async fn gdbus_call(&self, path: &str, method: &str, args: &[&str]) -> String {
        let mut all: Vec<String> = [
            "call",
            "--address",
            &self.bus.address,
            "--dest",
            SERVICE,
            "--object-path",
            path,
            "--method",
            method,
        ]
        .map(str::to_owned)
        .into();
        all.extend(args.iter().map(|a| (*a).to_owned()));
        run_async("gdbus", all).await
    }

    pub async fn stop(self) {
        self.sink.stop().await;
    }
}

pub async fn client(address: &str) -> Connection {
    Builder::address(address).build().await.unwrap()
}

/// A client on `address`, once the service there is up (owns its name, no sessions yet).
pub async fn connected(address: &str) -> Connection {
    let conn = client(address).await;
    wait_for_sessions(&conn, 0).await;
    conn
}

/// A source for a Claude session with a process.
pub fn source(id: &str, pid: u32) -> EventSource {
    let mut s = EventSource::new(Harness::claude(), SessionId::new(id), "test");
    s.process = Some(ProcessIdentity {
        pid,
        start_time: 1000 + u64::from(pid),
    });
    s
}

pub async fn apply(harness: &TestHarness, source: &EventSource, event: AgentEvent) {
    harness.apply(source.clone(), event).await;
}

pub fn started() -> AgentEvent {
    AgentEvent::SessionStarted {
        source: atm_core::StartSource::Startup,
        model: Some("claude-opus".into()),
    }
}

pub fn prompt() -> AgentEvent {
    AgentEvent::PromptSubmitted {
        prompt: Some("hello".into()),
    }
}

pub fn permission(tool: &str, detail: &str) -> AgentEvent {
    AgentEvent::PermissionRequested {
        tool: tool.into(),
        detail: Some(detail.into()),
        suggestions: Vec::new(),
    }
}

pub fn ended() -> AgentEvent {
    AgentEvent::SessionEnded {
        reason: "exit".into(),
        continues: false,
    }
}

/// Eight agents (`<name>-<i>`, pids from `pid_base`) at once, each applying `rounds` events
/// (a prompt, a permission request, a finished turn, in turn) and then ending where `ends(i)`:
/// a burst for the sink to keep up with. Returns when every agent is done.
pub async fn burst(
    harness: &TestHarness,
    name: &str,
    pid_base: u32,
    rounds: u32,
    ends: impl Fn(u32) -> bool,
) {
    let mut tasks = Vec::new();
    for i in 0..8u32 {
        let registry = harness.registry.clone();
        let (s, end) = (source(&format!("{name}-{i}"), pid_base + i), ends(i));
        tasks.push(tokio::spawn(async move {
            let events = (0..rounds).map(|round| match round % 3 {
                0 => prompt(),
                1 => permission("Bash", &format!("step {round}")),
                _ => AgentEvent::TurnFinished,
            });
            for e in events.chain(end.then(ended)) {
                registry
                    .apply_event(atm_core::EventEnvelope::now(s.clone(), e))
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

/// Waits until the service owns its name and publishes `count` sessions.
pub async fn wait_for_sessions(conn: &Connection, count: u32) {
    let monitor = MonitorProxy::builder(conn)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
        .unwrap();
    wait_until(&format!("{count} sessions on the bus"), || {
        let monitor = monitor.clone();
        async move { monitor.session_count().await.ok() == Some(count) }
    })
    .await;
}

/// Objects on the bus: path -> that object's Session properties.
pub type Objects = HashMap<String, HashMap<String, OwnedVariant>>;

/// A proxy of type `P` for object `path` of the service.
pub async fn service_proxy<'a, P>(conn: &Connection, path: &'a str) -> P
where
    P: From<zbus::Proxy<'a>> + zbus::proxy::Defaults,
{
    zbus::proxy::Builder::<P>::new(conn)
        .destination(SERVICE)
        .path(path)
        .build()
        .await
        .unwrap()
}

/// The managed objects: path -> that object's Session properties.
pub async fn managed(conn: &Connection) -> Objects {
    let om: zbus::fdo::ObjectManagerProxy = service_proxy(conn, MANAGER).await;
    om.get_managed_objects()
        .await
        .unwrap()
        .into_iter()
        .filter_map(|(path, mut ifaces)| {
            let props = ifaces.remove("io.github.atm.Monitor1.Session")?;
            Some((path.to_string(), props))
        })
        .collect()
}

/// Records every signal below `/io/github/atm/Monitor1`, in arrival order.
pub struct Recorder {
    stream: MessageStream,
}

/// One received signal: its member name and a readable body.
#[derive(Debug, Clone, PartialEq)]
pub struct Signal {
    pub path: String,
    pub member: String,
    pub body: SignalBody,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SignalBody {
    StateChanged([String; 4]),
    AttentionNeeded([String; 3]),
    RequestAdded([String; 4]),
    RequestResolved([String; 4]),
    /// Interface and the names of the changed properties (sorted), with their values.
    PropertiesChanged(String, Vec<(String, OwnedVariant)>),
    InterfacesAdded(String, Vec<String>),
    InterfacesRemoved(String, Vec<String>),
    Other,
}

impl Recorder {
    pub async fn new(conn: &Connection) -> Self {
        let stream = MessageStream::for_match_rule(
            "type='signal',path_namespace='/io/github/atm/Monitor1'",
            conn,
            None,
        )
        .await
        .unwrap();
        Self { stream }
    }

    /// The next signal, within 5 s.
    pub async fn next(&mut self) -> Signal {
        let msg = tokio::time::timeout(Duration::from_secs(5), self.stream.next())
            .await
            .expect("no signal within 5 s")
            .expect("stream ended")
            .unwrap();
        let header = msg.header();
        let member = header.member().unwrap().to_string();
        let path = header.path().unwrap().to_string();
        let b = msg.body();
        let body = match member.as_str() {
            "StateChanged" => {
                let (a, b2, c, d): (String, String, String, String) = b.deserialize().unwrap();
                SignalBody::StateChanged([a, b2, c, d])
            }
            "AttentionNeeded" => {
                let (a, b2, c): (String, String, String) = b.deserialize().unwrap();
                SignalBody::AttentionNeeded([a, b2, c])
            }
            "RequestAdded" | "RequestResolved" => {
                let (a, b2, c, d): (String, String, String, String) = b.deserialize().unwrap();
                if member == "RequestAdded" {
                    SignalBody::RequestAdded([a, b2, c, d])
                } else {
                    SignalBody::RequestResolved([a, b2, c, d])
                }
            }
            "PropertiesChanged" => {
                let (iface, changed, _inv): (String, HashMap<String, OwnedVariant>, Vec<String>) =
                    b.deserialize().unwrap();
                let mut changed: Vec<_> = changed.into_iter().collect();
                changed.sort_by(|a, b| a.0.cmp(&b.0));
                SignalBody::PropertiesChanged(iface, changed)
            }
            "InterfacesAdded" => {
                let (p, ifaces): (
                    OwnedObjectPath,
                    HashMap<String, HashMap<String, OwnedVariant>>,
                ) = b.deserialize().unwrap();
                let mut names: Vec<_> = ifaces.into_keys().collect();
                names.sort();
                SignalBody::InterfacesAdded(p.to_string(), names)
            }
            "InterfacesRemoved" => {
                let (p, names): (OwnedObjectPath, Vec<String>) = b.deserialize().unwrap();
                SignalBody::InterfacesRemoved(p.to_string(), names)
            }
            _ => SignalBody::Other,
        };
        Signal { path, member, body }
    }

    /// Skips signals until one matches `pred`; returns it.
    pub async fn until(&mut self, mut pred: impl FnMut(&Signal) -> bool) -> Signal {
        loop {
            let s = self.next().await;
            if pred(&s) {
                return s;
            }
        }
    }
}

/// Runs a command line tool and returns its stdout; panics with its stderr on failure.
pub fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} must be installed: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `run`, off the async runtime.
pub async fn run_async(program: &'static str, args: Vec<String>) -> String {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(program, &args)
    })
    .await
    .unwrap()
}

pub fn str_prop(props: &HashMap<String, OwnedVariant>, name: &str) -> String {
    let v = props
        .get(name)
        .unwrap_or_else(|| panic!("no property {name}"));
    String::try_from(v.try_clone().unwrap()).unwrap()
}

/// A `dbus-daemon` on a fixed socket path that the test chooses (PrivateBus picks a random one),
/// so a bus can go away and come back at the same address. Killed on drop.
pub struct FixedBus {
    pub child: std::process::Child,
}

impl FixedBus {
    pub fn start(socket: &std::path::Path) -> Self {
        let _ = std::fs::remove_file(socket);
        let child = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--nopidfile"])
            .arg(format!("--address=unix:path={}", socket.display()))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("dbus-daemon must be installed");
        // Accepting, not only bound: the socket file exists a moment before it listens.
        wait_until_blocking(
            &format!("dbus-daemon to accept connections on {}", socket.display()),
            || std::os::unix::net::UnixStream::connect(socket).is_ok(),
        );
        Self { child }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for FixedBus {
    fn drop(&mut self) {
        self.kill();
    }
}
