//! `atm-hook --agent codex|gemini`: the real binary under fake agent processes, `--notify`
//! argument mode, big fields stripped, silence on stdout and stderr; and the adapters' replay
//! fixtures sent through the real binary into the real codex and gemini adapters and registry.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers fail by panicking

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use adapter_codex::CodexAdapter;
use adapter_gemini::GeminiAdapter;
use atm_core::ingest_adapter::IngestAdapterConfig;
use atm_core::testing::TestHarness;
use atm_core::{InputAdapter, Session};
use common::Collector;
use serde_json::{Value, json};

const HOOK: &str = env!("CARGO_BIN_EXE_atm-hook");
const WAIT: Duration = Duration::from_secs(5);

const CODEX_PRE_TOOL_USE: &str = r#"{"session_id":"0199a213-81c0-7800-8aa1-bbab2a035a53","turn_id":"1","hook_event_name":"PreToolUse","cwd":"/w","model":"gpt-5-codex","tool_name":"Bash","tool_input":{"command":"cargo test"}}"#;
const NOTIFY: &str = r#"{"type":"agent-turn-complete","thread-id":"0199a213-81c0-7800-8aa1-bbab2a035a53","turn-id":"12","cwd":"/w","input-messages":["Rename foo"],"last-assistant-message":"Done."}"#;

/// The next line and its length as it arrived.
fn next_with_len(daemon: &Collector) -> (Value, usize) {
    let line = daemon.next_line();
    (serde_json::from_slice(&line).unwrap(), line.len())
}

/// Runs `atm-hook --agent <agent>` silently (see [`run_silent`]) with `event` on its stdin.
fn hook_silent(daemon: &Collector, agent: &str, event: &Value) {
    run_silent(
        Path::new(HOOK),
        &["--agent", agent],
        event.to_string().as_bytes(),
        &daemon.path,
    );
}

/// Runs `program args` with `stdin`, the socket and no TMUX_PANE; asserts exit 0 and silence on
/// both stdout and stderr (Gemini shows a hook's stderr to the user).
fn run_silent(program: &Path, args: &[&str], stdin: &[u8], socket: &Path) -> Output {
    let out = atm_core::testing::run_with_stdin(
        Command::new(program)
            .args(args)
            .env("ATM_HOOKS_SOCKET", socket)
            .env("TMUX_PANE", "%5"),
        stdin,
    );
    assert!(out.status.success(), "{args:?}: {:?}", out.status);
    assert!(out.stdout.is_empty(), "{args:?}: stdout {:?}", out.stdout);
    assert!(
        out.stderr.is_empty(),
        "{args:?}: stderr {:?}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs the hook as `agent_name -c "sh -c 'atm-hook ARGS; true'; true" EXTRA...`, where
/// `agent_name` is `/bin/sh` under another name: the hook's parent is a transient `sh -c`, its
/// grandparent the fake agent. Returns the fake agent's pid.
fn under_fake_agent(
    collector: &Collector,
    agent_name: &str,
    hook_args: &str,
    extra: &[&str],
    stdin: &[u8],
) -> u32 {
    let agent = collector.dir.path().join(agent_name);
    if !agent.exists() {
        std::os::unix::fs::symlink("/bin/sh", &agent).unwrap();
    }
    let script = format!("sh -c '{HOOK} {hook_args}; true'; true");
    let child = common::spawn_with_input(
        Command::new(&agent)
            .arg("-c")
            .arg(&script)
            .args(extra)
            .env("ATM_HOOKS_SOCKET", &collector.path)
            .stderr(Stdio::piped()),
        stdin,
    );
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success() && out.stdout.is_empty() && out.stderr.is_empty());
    pid
}

#[test]
fn codex_pid_is_the_codex_binary_behind_a_shell() {
    let daemon = Collector::start();
    let pid = under_fake_agent(
        &daemon,
        "codex-x86_64-unknown-linux-musl",
        "--agent codex",
        &[],
        CODEX_PRE_TOOL_USE.as_bytes(),
    );
    let msg = daemon.next();
    assert_eq!(msg["agent"], "codex");
    assert_eq!(msg["data"]["pid"], pid);
    assert_eq!(msg["data"]["tool_name"], "Bash");
}

#[test]
fn gemini_pid_is_node_running_gemini_behind_a_shell() {
    let daemon = Collector::start();
    let event = br#"{"session_id":"g1","hook_event_name":"BeforeAgent","prompt":"hi"}"#;
    // `node -c SCRIPT /usr/lib/node_modules/@google/gemini-cli/dist/index.js`.
    let pid = under_fake_agent(
        &daemon,
        "node",
        "--agent gemini",
        &["/usr/lib/node_modules/@google/gemini-cli/dist/index.js"],
        event,
    );
    let msg = daemon.next();
    assert_eq!(msg["agent"], "gemini");
    assert_eq!(msg["data"]["pid"], pid);
    // Without a recognisable agent, the transient shell is still skipped: its parent is taken.
    let pid = under_fake_agent(&daemon, "some-agent", "--agent pi", &[], event);
    assert_eq!(daemon.next()["data"]["pid"], pid);
}

#[test]
fn notify_takes_the_last_argument_and_never_reads_stdin() {
    let daemon = Collector::start();
    // Stdin held open and never written: the hook must not wait for it.
    let (reader, _writer) = std::io::pipe().unwrap();
    let start = std::time::Instant::now();
    let out = Command::new(HOOK)
        .args(["--agent", "codex", "--notify", NOTIFY])
        .env("ATM_HOOKS_SOCKET", &daemon.path)
        .env("TMUX_PANE", "%5")
        .stdin(reader)
        .output()
        .unwrap();
    assert!(
        start.elapsed() < Duration::from_millis(900),
        "waited on stdin"
    );
    assert!(out.status.success() && out.stdout.is_empty() && out.stderr.is_empty());
    let msg = daemon.next();
    assert_eq!(msg["type"], "hook_event");
    assert_eq!(msg["agent"], "codex");
    assert_eq!(msg["protocol_version"], json!({"major": 1, "minor": 1}));
    let data = &msg["data"];
    assert_eq!(data["type"], "agent-turn-complete");
    assert_eq!(data["thread-id"], "0199a213-81c0-7800-8aa1-bbab2a035a53");
    assert_eq!(data["tmux_pane"], "%5");
    assert_eq!(data["pid"], std::process::id());
    // The transcript fields no adapter reads are gone, but for the start of the first input
    // message (how the codex adapter tells Codex's title-generation thread).
    let first = data["input-messages"][0].as_str().unwrap_or_default();
    assert!(first.chars().count() <= 120, "{data}");
    assert!(
        data["input-messages"]
            .as_array()
            .is_some_and(|m| m.len() == 1),
        "{data}"
    );
    assert!(data.get("last-assistant-message").is_none());

    // A missing, garbage or non-object argument sends nothing, silently.
    for args in [
        &["--agent", "codex", "--notify"][..],
        &["--agent", "codex", "--notify", "not json"],
        &["--agent", "codex", "--notify", "[1]"],
        &["--notify", "{\"type\": \"x\""],
    ] {
        run_silent(
            Path::new(HOOK),
            args,
            b"{\"session_id\":\"s\"}",
            &daemon.path,
        );
    }
    daemon.assert_nothing();
}

#[test]
fn oversized_fields_are_stripped_and_the_event_still_sent() {
    let daemon = Collector::start();
    let blob = "x".repeat(3 * 1024 * 1024);
    let event = json!({
        "session_id": "g1",
        "hook_event_name": "AfterTool",
        "tool_name": "read_file",
        "tool_input": {"file_path": "/w/big.log"},
        "tool_response": {"llmContent": blob, "returnDisplay": "big", "error": "too big"},
    });
    hook_silent(&daemon, "gemini", &event);
    let (msg, len) = next_with_len(&daemon);
    assert!(len < 4096, "{len} bytes");
    assert_eq!(msg["data"]["tool_response"], json!({"error": "too big"}));
    assert_eq!(msg["data"]["tool_input"]["file_path"], "/w/big.log");

    // Several big fields at once (AfterModel-like), for Codex: all dropped, event kept.
    let event = json!({
        "session_id": "c1", "hook_event_name": "PostToolUse", "tool_name": "Bash",
        "tool_response": "y".repeat(2 * 1024 * 1024),
        "llm_request": {"m": "z".repeat(1024 * 1024)},
        "llm_response": "w".repeat(1024 * 1024),
        "prompt_response": "v".repeat(1024 * 1024),
    });
    hook_silent(&daemon, "codex", &event);
    let (msg, len) = next_with_len(&daemon);
    assert!(len < 4096, "{len} bytes");
    assert_eq!(msg["data"]["hook_event_name"], "PostToolUse");

    // What stripping cannot shrink is still dropped whole (never truncated), silently.
    let event = json!({"session_id": "c1", "hook_event_name": "PreToolUse",
        "tool_input": {"content": "q".repeat(2 * 1024 * 1024)}});
    hook_silent(&daemon, "codex", &event);
    // Over the read cap (8 MiB): drained and dropped.
    let huge = format!(
        r#"{{"session_id":"c1","hook_event_name":"PostToolUse","tool_response":"{}"}}"#,
        "h".repeat(9 * 1024 * 1024)
    );
    run_silent(
        Path::new(HOOK),
        &["--agent", "codex"],
        huge.as_bytes(),
        &daemon.path,
    );
    daemon.assert_nothing();
}

#[test]
fn gemini_is_silent_on_both_streams_whatever_happens() {
    let dir = tempfile::tempdir().unwrap();
    let none = dir.path().join("none.sock");
    for input in [
        &b""[..],
        b"garbage {{",
        b"{\"session_id\":\"\xff\"}",
        br#"{"session_id":"g1","hook_event_name":"AfterAgent"}"#,
    ] {
        run_silent(Path::new(HOOK), &["--agent", "gemini"], input, &none);
        run_silent(
            Path::new(HOOK),
            &["--agent=gemini", "--bogus"],
            input,
            &none,
        );
    }
}

// ---- end to end: fixtures -> atm-hook -> ingest socket -> adapter -> registry ----

fn fixture_dir(adapter: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../adapters/{adapter}/tests/fixtures"))
}

fn check(s: &Session, key: &str, want: &Value) -> bool {
    let opt = |v: Option<&str>| v.map(Value::from).unwrap_or(Value::Null);
    match key {
        "id" => s.id.as_str() == want,
        "harness" => s.harness.as_str() == want,
        "state" => s.state.as_str() == want,
        "activity" => opt(s.activity.as_deref()) == *want,
        "first_prompt" => opt(s.first_prompt.as_deref()) == *want,
        "model_id" => opt(s.model_id.as_deref()) == *want,
        "attention" => {
            let got = s.attention.as_ref().map_or(
                Value::Null,
                |a| json!({"reason": a.reason, "tool": a.tool, "detail": a.detail}),
            );
            got == *want
        }
        other => panic!("unknown expectation {other}"),
    }
}

/// Replays `adapter`'s replay.json through the real atm-hook (hook fixtures on stdin, `notify.*`
/// ones as the `--notify` argument) and checks the registry after each step.
async fn replay(adapter: &str, harness: &TestHarness, socket: &Path) {
    let dir = fixture_dir(adapter);
    let replay: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("replay.json")).unwrap()).unwrap();
    for step in replay["steps"].as_array().unwrap() {
        let name = step["fixture"].as_str().unwrap().to_owned();
        let payload = std::fs::read_to_string(dir.join(&name)).unwrap();
        let socket = socket.to_owned();
        let agent = adapter.to_owned();
        let notify = name.starts_with("notify.");
        tokio::task::spawn_blocking(move || {
            let compact = serde_json::from_str::<Value>(&payload).unwrap().to_string();
            if notify {
                run_silent(
                    Path::new(HOOK),
                    &["--agent", &agent, "--notify", &compact],
                    b"",
                    &socket,
                );
            } else {
                run_silent(
                    Path::new(HOOK),
                    &["--agent", &agent],
                    compact.as_bytes(),
                    &socket,
                );
            }
        })
        .await
        .unwrap();
        let expect = step["expect"].as_object().unwrap();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let all = harness.registry.snapshot().await.unwrap().sessions;
            let count_ok = expect
                .get("sessions")
                .is_none_or(|n| n.as_u64() == Some(all.len() as u64));
            let fields_ok = all.len() == 1
                && expect
                    .iter()
                    .filter(|(k, _)| *k != "sessions")
                    .all(|(k, v)| check(&all[0], k, v));
            let only_count = expect.len() == 1 && expect.contains_key("sessions");
            if count_ok && (fields_ok || only_count) {
                if let Some(s) = all.first() {
                    // atm-hook found no agent above the test, so the test process is the agent.
                    assert_eq!(s.process.map(|p| p.pid), Some(std::process::id()), "{name}");
                }
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{adapter} {name}: expected {expect:?}, sessions {all:#?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Runs the adapter `make` gives on a fresh registry, and replays its fixtures through atm-hook.
async fn replay_through<A: InputAdapter + 'static>(name: &str, make: fn(IngestAdapterConfig) -> A) {
    let dir = tempfile::tempdir().unwrap();
    let harness = TestHarness::new(dir.path()).await;
    let socket = dir.path().join("hooks.sock");
    let adapter = make(IngestAdapterConfig {
        socket: Some(socket.display().to_string()),
    });
    let task = harness.start_adapter(name, Box::new(adapter)).await;
    replay(name, &harness, &socket).await;
    harness.cancel.cancel();
    let stopped = tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
    assert!(stopped.is_ok(), "{stopped:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_fixtures_through_atm_hook_into_the_codex_adapter() {
    replay_through("codex", CodexAdapter::new).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_fixtures_through_atm_hook_into_the_gemini_adapter() {
    replay_through("gemini", GeminiAdapter::new).await;
}
