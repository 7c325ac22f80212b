//! The generic ingest adapter end to end, once for every hook-style agent: a real socket, the
//! real registry, a real child process as the agent, and the example translator (the shape a
//! new agent's crate has). What is checked here is everything that is not translation: framing
//! and bad lines, oversized lines, counting, process identity, replies, config and the plugin
//! contract.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests report failures by panicking

mod example_translator;

use std::sync::Arc;

use atm_core::ingest::{IngestMessage, IngestStats};
use atm_core::ingest_adapter::{IngestAdapter, IngestAdapterConfig, Translation, Translator};
use atm_core::protocol::WireError;
use atm_core::registry::RegistryConfig;
use atm_core::testing::ingest::{FakeAgent, IngestClient, RunningAdapter, socket_table};
use atm_core::{AgentState, InputAdapter};
use example_translator::ExampleHooks;
use serde_json::{Value, json};

type ExampleAdapter = IngestAdapter<ExampleHooks>;

/// A second agent speaking the same hook JSON on plain `hook_event` (as Claude Code and Codex
/// do), to check that adapters sharing a socket keep their sessions apart.
#[derive(Debug, Default)]
struct PlainHooks;

impl Translator for PlainHooks {
    const ROUTES: &'static [&'static str] = &["hook_event"];
    const HARNESS: &'static str = "plain";
    const AGENT: &'static str = "Plain Agent";

    fn translate(&self, msg: &IngestMessage) -> Result<Translation, WireError> {
        example_translator::translate(atm_core::fields::data_object(&msg.raw.body, "hook JSON")?)
    }
}

const ID: &str = "5b0c6a1e-example";

async fn start_with(config: RegistryConfig) -> (RunningAdapter, Arc<IngestStats>) {
    let mut stats = None;
    let run = RunningAdapter::start(config, |cfg| {
        let a = ExampleAdapter::from_config(cfg).unwrap();
        stats = Some(a.stats());
        a
    })
    .await;
    (run, stats.unwrap())
}

async fn start() -> (RunningAdapter, Arc<IngestStats>) {
    start_with(RegistryConfig::default()).await
}

/// The example adapter running, its counters, a process standing in for the agent, and a
/// client connected.
async fn start_agent() -> (RunningAdapter, Arc<IngestStats>, FakeAgent, IngestClient) {
    let (run, stats) = start().await;
    let client = run.client().await;
    (run, stats, FakeAgent::spawn(), client)
}

fn hook(name: &str, pid: Option<u32>) -> Value {
    let mut data = json!({"session_id": ID, "hook_event_name": name, "cwd": "/w"});
    if let Some(pid) = pid {
        data["pid"] = json!(pid);
        data["tmux_pane"] = json!("%7");
    }
    data
}

async fn send(c: &mut IngestClient, data: Value) {
    c.send("hook_event", data, json!({"agent": "example"}))
        .await;
}

fn line(data: &str) -> Vec<u8> {
    format!(r#"{{"type":"hook_event","agent":"example","data":{data}}}"#).into_bytes()
}

#[tokio::test]
async fn bad_lines_get_error_replies_and_the_connection_keeps_serving() {
    let (run, stats, agent, mut client) = start_agent().await;
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"not json at all".to_vec(), "parse_error"),
        // Truncated.
        (line(r#"{"session_id":"x","hook_event_name":"St"#), "parse_error"),
        // Not UTF-8.
        (
            b"{\"type\":\"hook_event\",\"agent\":\"example\",\"data\":{\"session_id\":\"\xff\xfe\",\"hook_event_name\":\"Stop\"}}"
                .to_vec(),
            "parse_error",
        ),
        (br#"[1,2,3]"#.to_vec(), "parse_error"),
        (br#"{"type":"hook_event","agent":"example"}"#.to_vec(), "invalid_message"),
        (line(r#""Stop""#), "invalid_message"),
        (line("null"), "invalid_message"),
        (line(r#"{"hook_event_name":"Stop"}"#), "invalid_message"),
        (line(r#"{"session_id":42,"hook_event_name":"Stop"}"#), "invalid_message"),
        (line(r#"{"session_id":"s","hook_event_name":{"n":1}}"#), "invalid_message"),
        (line(r#"{"session_id":"","hook_event_name":"Stop"}"#), "invalid_message"),
        (
            line(&format!(r#"{{"session_id":"{}","hook_event_name":"Stop"}}"#, "x".repeat(300))),
            "invalid_message",
        ),
        (
            br#"{"protocol_version":{"major":2,"minor":0},"type":"hook_event","agent":"example","data":{}}"#
                .to_vec(),
            "bad_version",
        ),
        (br#"{"type":"teleport","data":{}}"#.to_vec(), "unknown_type"),
        (br#"{"type":"hook_event","agent":"exampel","data":{}}"#.to_vec(), "unknown_type"),
    ];
    for (line, code) in &cases {
        client.send_line(line).await;
        let errors = client.sync_errors().await;
        assert_eq!(
            errors,
            vec![(*code).to_owned()],
            "{}",
            String::from_utf8_lossy(line)
        );
    }
    // Several bad lines in one write, then a good one: all answered, the good one applied.
    let mut burst = b"garbage\n".to_vec();
    burst.extend(line("[]"));
    burst.push(b'\n');
    burst.extend(line(&hook("SessionStart", Some(agent.pid())).to_string()));
    burst.push(b'\n');
    client.write_raw(&burst).await;
    assert_eq!(
        client.sync_errors().await,
        vec!["parse_error".to_owned(), "invalid_message".to_owned()]
    );
    let s = run.only_session().await;
    assert_eq!(s.pid(), Some(agent.pid()));
    assert_eq!(s.harness.as_str(), "example");
    // Adapter-level rejections are counted (the hub answers framing errors itself).
    assert_eq!(IngestStats::get(&stats.bad_messages), 9);
    assert_eq!(IngestStats::get(&stats.applied), 1);
    run.stop().await;
}

#[tokio::test]
async fn a_client_that_never_reads_holds_no_more_than_its_share_and_is_cut_off() {
    use tokio::io::AsyncWriteExt;
    let (run, _) = start().await;
    let agent = FakeAgent::spawn();
    // The hog: 100,000 bad lines whose error replies (about 11 MB, far more than any socket
    // buffer holds) it never reads, so its handler blocks writing them; then 30 lines of nearly
    // 1 MiB queued behind: 30 MiB of read-ahead
    // it would hold, against a 16 MiB budget for the whole socket. It keeps its connection
    // open and never reads.
    let hog = tokio::net::UnixStream::connect(&run.socket).await.unwrap();
    let (_hog_read, mut hog_write) = hog.into_split();
    let writer = tokio::spawn(async move {
        hog_write.write_all(&b"not json\n".repeat(100_000)).await?;
        let mut big = vec![b'x'; atm_core::protocol::MAX_LINE - 16];
        big.push(b'\n');
        for _ in 0..30 {
            hog_write.write_all(&big).await?;
        }
        // Everything was taken in: never close, never read.
        std::future::pending::<std::io::Result<()>>().await
    });
    // Meanwhile another agent is served: the hog cannot take the socket's whole budget.
    let mut bystander = run.client().await;
    send(&mut bystander, hook("SessionStart", Some(agent.pid()))).await;
    bystander.sync_ok().await;
    assert_eq!(run.only_session().await.pid(), Some(agent.pid()));
    // And the hog is cut off once its replies go unread for the write timeout: its blocked
    // write fails.
    let cut = tokio::time::timeout(atm_core::testing::ingest::WAIT * 2, writer).await;
    assert!(
        matches!(cut, Ok(Ok(Err(_)))),
        "the daemon must close a connection that does not read its replies: {cut:?}"
    );
    run.stop().await;
}

#[tokio::test]
async fn an_oversized_line_gets_too_large_and_others_keep_being_served() {
    let (run, _, agent, mut bystander) = start_agent().await;
    send(&mut bystander, hook("SessionStart", Some(agent.pid()))).await;
    bystander.sync_ok().await;

    let mut big = hook("Stop", None);
    big["session_id"] = json!("big");
    big["pad"] = json!("x".repeat(2 * 1024 * 1024));
    let mut oversized = run.client().await;
    // The daemon may close before the whole line is written: a broken pipe is expected.
    let huge = json!({"type": "hook_event", "agent": "example", "data": big});
    let _ = oversized
        .try_write_raw(format!("{huge}\n").as_bytes())
        .await;
    let reply = oversized
        .next_reply()
        .await
        .expect("an answer before closing");
    assert_eq!(reply["type"], "error");
    assert_eq!(reply["code"], "too_large");
    assert_eq!(
        oversized.next_reply().await,
        None,
        "the connection is closed"
    );

    // The other connections keep being served, and new ones are accepted.
    send(&mut bystander, hook("UserPromptSubmit", Some(agent.pid()))).await;
    bystander.sync_ok().await;
    assert_eq!(run.only_session().await.state, AgentState::Working);
    let mut fresh = run.client().await;
    send(&mut fresh, hook("Stop", Some(agent.pid()))).await;
    fresh.sync_ok().await;
    assert_eq!(run.only_session().await.state, AgentState::Idle);
    assert!(run.sessions().await.iter().all(|s| s.id.as_str() != "big"));
    run.stop().await;
}

#[tokio::test]
async fn unknown_and_ignored_events_are_counted_and_the_original_format_is_accepted() {
    let (run, stats, agent, mut client) = start_agent().await;
    let events = [
        "SessionStart",
        "UserPromptSubmit",
        "FutureEvent",
        "Heartbeat",
    ];
    client
        .write_original_hooks(
            events.map(|name| hook(name, None)),
            agent.pid(),
            &json!({"agent": "example"}),
        )
        .await;
    client.sync_ok().await;
    let s = run.only_session().await;
    assert_eq!(s.pid(), Some(agent.pid()));
    assert_eq!(
        s.state,
        AgentState::Working,
        "unknown events change no state"
    );
    assert_eq!(s.tmux_pane, None);
    assert_eq!(IngestStats::get(&stats.unknown_events), 1);
    assert_eq!(IngestStats::get(&stats.ignored), 1);
    assert_eq!(IngestStats::get(&stats.applied), 3);
    assert_eq!(IngestStats::get(&stats.bad_messages), 0);
    run.stop().await;
}

#[tokio::test]
async fn process_identity_is_real_and_a_gone_pid_is_not_kept() {
    let (run, _, agent, mut client) = start_agent().await;
    let gone = {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        child.wait().unwrap();
        child.id()
    };
    send(&mut client, hook("SessionStart", Some(gone))).await;
    client.sync_ok().await;
    let s = run.only_session().await;
    assert_eq!(s.process, None);
    assert_eq!(s.id.as_str(), ID);
    // The same session, later seen with its live process, adopts it: still one row.
    let expected = atm_core::process::identity(agent.pid()).unwrap();
    send(&mut client, hook("UserPromptSubmit", Some(agent.pid()))).await;
    client.sync_ok().await;
    let s = run.only_session().await;
    assert_eq!(s.process, Some(expected));
    assert_eq!(s.tmux_pane.as_deref(), Some("%7"));
    assert_eq!(s.cwd.as_deref(), Some("/w"));
    run.stop().await;
}

#[tokio::test]
async fn a_client_that_wants_a_reply_gets_the_session_back() {
    let (run, _, agent, mut client) = start_agent().await;
    let extra = json!({"agent": "example", "want_reply": true});
    client
        .send(
            "hook_event",
            hook("PermissionRequest", Some(agent.pid())),
            extra,
        )
        .await;
    let replies = client.sync().await;
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert_eq!(replies[0]["type"], "session_updated");
    assert_eq!(replies[0]["session"]["id"], ID);
    assert_eq!(replies[0]["session"]["state"], "needs_permission");
    // Without `want_reply`, nothing comes back.
    send(&mut client, hook("Stop", Some(agent.pid()))).await;
    client.sync_ok().await;
    run.stop().await;
}

#[tokio::test]
async fn a_full_registry_answers_registry_full() {
    let (run, stats) = start_with(RegistryConfig {
        max_sessions: 1,
        ..RegistryConfig::default()
    })
    .await;
    let mut client = run.client().await;
    send(&mut client, hook("SessionStart", None)).await;
    client.sync_ok().await;
    let mut second = hook("SessionStart", None);
    second["session_id"] = json!("second");
    send(&mut client, second).await;
    assert_eq!(client.sync_errors().await, vec!["registry_full".to_owned()]);
    assert_eq!(IngestStats::get(&stats.registry_errors), 1);
    // Events for the session that fits still apply.
    send(&mut client, hook("UserPromptSubmit", None)).await;
    client.sync_ok().await;
    assert_eq!(run.only_session().await.state, AgentState::Working);
    run.stop().await;
}

#[tokio::test]
async fn adapters_sharing_a_socket_keep_their_harnesses_apart() {
    let (mut run, _) = start().await;
    run.spawn_also(IngestAdapter::<PlainHooks>::from_config(&socket_table(&run.socket)).unwrap());
    let mut client = run.client().await;
    client.wait_for_route("hook_event").await;
    // The same hook JSON, once without `agent` and once from the example agent.
    let mut plain = hook("PermissionRequest", None);
    plain["session_id"] = json!("plain-1");
    client.send("hook_event", plain, json!({})).await;
    send(&mut client, hook("PermissionRequest", None)).await;
    client.sync_ok().await;
    let harness_of = |all: &[Arc<atm_core::Session>], id: &str| {
        all.iter()
            .find(|s| s.id.as_str() == id)
            .map(|s| (s.harness.as_str().to_owned(), s.state.as_str()))
    };
    let all = run.sessions().await;
    assert_eq!(all.len(), 2, "{all:#?}");
    assert_eq!(
        harness_of(&all, "plain-1"),
        Some(("plain".into(), "needs_permission"))
    );
    assert_eq!(
        harness_of(&all, ID),
        Some(("example".into(), "needs_permission"))
    );
    run.stop().await;
}

#[tokio::test]
async fn keeps_the_plugin_contract() {
    let dir = tempfile::tempdir().unwrap();
    let config = socket_table(&dir.path().join("contract.sock"));
    atm_core::testing::check_adapter_contract("example", config, dir.path()).await;
}

#[tokio::test]
async fn two_instances_on_one_socket_is_a_config_error() {
    let (run, _) = start().await;
    let adapter = ExampleAdapter::from_config(&socket_table(&run.socket)).unwrap();
    let err = Box::new(adapter)
        .run(run.harness.adapter_context("second"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("hook_event:example"), "{err}");
    run.stop().await;
}

#[test]
fn config_rejects_unknown_keys_and_defaults_the_socket() {
    let cfg = atm_core::toml::Value::Table(atm_core::toml::from_str("sockett = \"/x\"").unwrap());
    let err = ExampleAdapter::from_config(&cfg).unwrap_err();
    assert_eq!(err.key.as_deref(), Some("sockett"));
    assert_eq!(
        IngestAdapterConfig::default().socket_path(std::path::Path::new("/run/u/atm")),
        std::path::PathBuf::from("/run/u/atm/hooks.sock")
    );
}
