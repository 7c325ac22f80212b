//! The jsonl example against a real registry: lines through a real Unix socket and a real FIFO
//! change session state; bad lines get an error and the socket keeps serving; the contract test.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use atm_core::testing::{TestHarness, check_adapter_contract};
use atm_core::{AgentState, InputAdapter, PluginError, Session};
use atm_example_jsonl::{JsonlAdapter, JsonlConfig};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(5);

fn table(s: &str) -> atm_core::toml::Value {
    atm_core::toml::Value::Table(atm_core::toml::from_str(s).unwrap())
}

struct Running {
    harness: TestHarness,
    task: JoinHandle<Result<(), PluginError>>,
    _dir: tempfile::TempDir,
}

impl Running {
    async fn start(config: impl FnOnce(&Path) -> JsonlConfig) -> (Self, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let harness = TestHarness::new(dir.path()).await;
        let config = config(dir.path());
        let path = PathBuf::from(config.socket.clone().or(config.fifo.clone()).unwrap());
        // Returns once the adapter says it is serving (`ctx.mark_ready()`): no polling for the
        // socket to appear.
        let task = harness
            .start_adapter("jsonl", Box::new(JsonlAdapter(config)))
            .await;
        (
            Self {
                harness,
                task,
                _dir: dir,
            },
            path,
        )
    }

    /// Waits until session `id` satisfies `pred`.
    /// Waits until session `id` is in `state`, and gives it.
    async fn wait_for_state(&self, id: &str, state: AgentState) -> Arc<Session> {
        self.wait_for(id, |s| s.is_some_and(|s| s.state == state))
            .await
            .unwrap()
    }

    async fn wait_for(
        &self,
        id: &str,
        pred: impl Fn(Option<&Session>) -> bool,
    ) -> Option<Arc<Session>> {
        let what = format!("session {id} to match");
        atm_core::testing::wait_for(&what, || async {
            let s = self.harness.registry.get_session(id).await.ok();
            pred(s.as_deref()).then_some(s)
        })
        .await
    }

    async fn stop(self) {
        self.harness.cancel.cancel();
        let result = tokio::time::timeout(WAIT, self.task)
            .await
            .unwrap()
            .unwrap();
        assert!(result.is_ok(), "{result:?}");
    }
}

/// Connects to the adapter's socket (it is listening: `Running::start` waited for that).
async fn connect(
    path: &Path,
) -> (
    BufReader<tokio::net::unix::OwnedReadHalf>,
    tokio::net::unix::OwnedWriteHalf,
) {
    let s = UnixStream::connect(path)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", path.display()));
    let (r, w) = s.into_split();
    (BufReader::new(r), w)
}

async fn read_error(r: &mut BufReader<tokio::net::unix::OwnedReadHalf>) -> (String, String) {
    let mut line = String::new();
    tokio::time::timeout(WAIT, r.read_line(&mut line))
        .await
        .unwrap()
        .unwrap();
    let v: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    assert_eq!(v["type"], "error", "{line}");
    (
        v["code"].as_str().unwrap().to_owned(),
        v["message"].as_str().unwrap().to_owned(),
    )
}

fn socket_config(dir: &Path) -> JsonlConfig {
    JsonlConfig {
        socket: Some(dir.join("jsonl.sock").display().to_string()),
        fifo: None,
    }
}

#[tokio::test]
async fn contract_holds() {
    use atm_example_jsonl as _;
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("contract.sock");
    check_adapter_contract(
        "jsonl",
        table(&format!("socket = {:?}", sock.display().to_string())),
        dir.path(),
    )
    .await;
    assert!(!sock.exists(), "the socket file is removed on stop");
}

#[tokio::test]
async fn lines_through_the_socket_change_the_registry() {
    let (run, sock) = Running::start(socket_config).await;
    let (_r, mut w) = connect(&sock).await;
    let me = std::process::id();
    let working = format!(
        r#"{{"session":"s1","state":"working","harness":"myagent","tool":"cargo","detail":"cargo test","pid":{me},"cwd":"/src/app"}}"#
    );
    w.write_all(format!("{working}\n").as_bytes())
        .await
        .unwrap();
    let s = run.wait_for_state("s1", AgentState::Working).await;
    assert_eq!(s.harness.as_str(), "myagent");
    assert_eq!(s.activity.as_deref(), Some("cargo"));
    assert_eq!(s.cwd.as_deref(), Some("/src/app"));
    assert_eq!(s.pid(), Some(me), "pid becomes a process identity");

    w.write_all(b"{\"session\":\"s1\",\"harness\":\"myagent\",\"state\":\"needs_permission\",\"tool\":\"Bash\",\"detail\":\"rm -rf target\"}\n").await.unwrap();
    let s = run.wait_for_state("s1", AgentState::NeedsPermission).await;
    let attention = s.attention.clone().unwrap();
    assert_eq!(
        (attention.tool.as_deref(), attention.detail.as_deref()),
        (Some("Bash"), Some("rm -rf target"))
    );

    // Blank lines and CRLF are fine; a second client is served at the same time.
    let (_r2, mut w2) = connect(&sock).await;
    w2.write_all(
        b"\n{\"session\":\"s2\",\"state\":\"needs_input\",\"detail\":\"Which branch?\"}\r\n",
    )
    .await
    .unwrap();
    let s2 = run.wait_for_state("s2", AgentState::NeedsInput).await;
    assert_eq!(s2.harness.as_str(), "jsonl", "default harness");

    w.write_all(b"{\"session\":\"s1\",\"harness\":\"myagent\",\"state\":\"idle\"}\n")
        .await
        .unwrap();
    run.wait_for_state("s1", AgentState::Idle).await;
    w.write_all(b"{\"session\":\"s1\",\"harness\":\"myagent\",\"state\":\"ended\"}\n")
        .await
        .unwrap();
    run.wait_for("s1", |s| s.is_none()).await;
    run.stop().await;
    assert!(!sock.exists());
}

#[tokio::test]
async fn bad_lines_get_an_error_and_the_socket_keeps_serving() {
    let (run, sock) = Running::start(socket_config).await;
    let (mut r, mut w) = connect(&sock).await;
    let cases: [(&[u8], &str, &str); 8] = [
        (b"not json", "parse_error", "not JSON"),
        (b"{\"session\":\"s1\",\"sta", "parse_error", "not JSON"),
        (
            b"{\"session\":\"s\xff1\",\"state\":\"idle\"}",
            "parse_error",
            "UTF-8",
        ),
        (b"[1,2,3]", "invalid_message", "state"),
        (b"{\"session\":\"s1\"}", "invalid_message", "state"),
        (
            b"{\"session\":\"s1\",\"state\":\"sleeping\"}",
            "invalid_message",
            "needs_permission",
        ),
        (b"{\"state\":\"idle\"}", "invalid_message", "session"),
        (
            b"{\"session\":5,\"state\":\"idle\"}",
            "invalid_message",
            "session",
        ),
    ];
    for (line, code, words) in cases {
        w.write_all(&[line, b"\n"].concat()).await.unwrap();
        let (got, message) = read_error(&mut r).await;
        assert_eq!(got, code, "{}", String::from_utf8_lossy(line));
        assert!(
            message.contains(words),
            "{message:?} should mention {words:?}"
        );
    }
    let long_id = format!(
        "{{\"session\":\"{}\",\"state\":\"idle\"}}\n",
        "x".repeat(257)
    );
    w.write_all(long_id.as_bytes()).await.unwrap();
    assert_eq!(read_error(&mut r).await.0, "invalid_message");

    // After all that, the same connection still applies a good line.
    w.write_all(b"{\"session\":\"ok\",\"state\":\"working\"}\n")
        .await
        .unwrap();
    run.wait_for_state("ok", AgentState::Working).await;

    // An oversized line (2 MiB, no newline yet) is refused and that connection closed...
    let huge = vec![b'x'; 2 * 1024 * 1024];
    let _ = w.write_all(&huge).await;
    assert_eq!(read_error(&mut r).await.0, "too_large");
    let mut rest = String::new();
    let eof = tokio::time::timeout(WAIT, r.read_line(&mut rest))
        .await
        .unwrap();
    assert!(
        matches!(eof, Ok(0) | Err(_)),
        "connection closed after an oversized line: {rest:?}"
    );
    // ...while the socket keeps serving new connections.
    let (_r2, mut w2) = connect(&sock).await;
    w2.write_all(b"{\"session\":\"ok\",\"state\":\"idle\"}\n")
        .await
        .unwrap();
    run.wait_for_state("ok", AgentState::Idle).await;
    run.stop().await;
}

#[tokio::test]
async fn a_fifo_feeds_the_registry_across_writers() {
    let (run, fifo) = Running::start(|dir| {
        let fifo = dir.join("jsonl.fifo");
        let ok = std::process::Command::new("mkfifo")
            .arg("-m")
            .arg("600")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(ok.success());
        JsonlConfig {
            socket: None,
            fifo: Some(fifo.display().to_string()),
        }
    })
    .await;
    // Two writers one after the other, as shell scripts do (`echo ... > fifo`): the adapter keeps
    // reading after the first closes. A bad line in between is logged and skipped.
    for line in [
        "{\"session\":\"f1\",\"state\":\"working\",\"harness\":\"script\"}\n",
        "garbage\n",
        "{\"session\":\"f2\",\"state\":\"idle\"}\n",
        "{\"session\":\"f1\",\"harness\":\"script\",\"state\":\"needs_permission\"}\n",
    ] {
        let fifo = fifo.clone();
        tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
            f.write_all(line.as_bytes()).unwrap();
        })
        .await
        .unwrap();
    }
    let s = run.wait_for_state("f1", AgentState::NeedsPermission).await;
    assert_eq!(s.harness.as_str(), "script");
    assert_eq!(
        s.attention.as_ref().and_then(|a| a.tool.as_deref()),
        Some("unknown")
    );
    run.stop().await;
}

#[tokio::test]
async fn a_missing_fifo_is_an_error_that_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let harness = TestHarness::new(dir.path()).await;
    let fifo = dir.path().join("absent.fifo");
    let config = JsonlConfig {
        socket: None,
        fifo: Some(fifo.display().to_string()),
    };
    let result = tokio::time::timeout(
        WAIT,
        Box::new(JsonlAdapter(config)).run(harness.adapter_context("jsonl")),
    )
    .await
    .unwrap();
    let err = result.unwrap_err().to_string();
    assert!(err.contains("absent.fifo"), "{err}");
}

#[test]
fn config_is_checked_like_deny_unknown_fields() {
    assert_eq!(
        JsonlConfig::parse(&table("")).unwrap(),
        JsonlConfig::default()
    );
    let ok = JsonlConfig::parse(&table("socket = \"/tmp/x.sock\"")).unwrap();
    assert_eq!(ok.socket.as_deref(), Some("/tmp/x.sock"));
    let err = JsonlConfig::parse(&table("sockt = \"/tmp/x.sock\"")).unwrap_err();
    assert_eq!(err.key.as_deref(), Some("sockt"));
    let err = JsonlConfig::parse(&table("fifo = 3")).unwrap_err();
    assert_eq!(err.key.as_deref(), Some("fifo"));
}

#[test]
fn translate_maps_every_state_and_rejects_the_rest() {
    use atm_core::AgentEvent as E;
    let ev = |state: &str| {
        let line = format!("{{\"session\":\"t\",\"state\":\"{state}\"}}");
        atm_example_jsonl::translate(line.as_bytes(), "jsonl")
            .unwrap()
            .unwrap()
            .event
    };
    assert!(matches!(ev("starting"), E::SessionStarted { .. }));
    assert!(matches!(ev("working"), E::ToolStarted { .. }));
    assert!(matches!(
        ev("needs_permission"),
        E::PermissionRequested { .. }
    ));
    assert!(matches!(ev("needs_input"), E::InputRequested { .. }));
    assert_eq!(ev("idle"), E::TurnFinished);
    assert!(matches!(
        ev("ended"),
        E::SessionEnded {
            continues: false,
            ..
        }
    ));
    assert_eq!(
        atm_example_jsonl::translate(b"  \r\n", "jsonl").unwrap(),
        None
    );
    let huge = vec![b' '; atm_core::protocol::MAX_LINE + 1];
    let err = atm_example_jsonl::translate(&huge, "jsonl").unwrap_err();
    assert_eq!(err.code, atm_core::protocol::ErrorCode::TooLarge);
}
