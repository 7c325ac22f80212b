//! The pi adapter end to end: a real Unix socket, a real registry, a real child process as the
//! pi PID, and the message sequences pi extensions send over one persistent connection: the older
//! `pi-atm` extension's (`session.jsonl`) and atm's own inside the real pi (`real-0.73.1/`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests report failures by panicking

use std::path::Path;
use std::sync::Arc;

use adapter_pi as _; // links the plugin registration for the contract test
use adapter_pi::PiEvents;
use atm_core::ingest::IngestStats;
use atm_core::registry::RegistryConfig;
use atm_core::testing::fixtures::Fixtures;
use atm_core::testing::ingest::{
    FakeAgent, IngestClient, RunningAdapter, check_replay_step, replay_session, socket_table,
};
use serde_json::{Value, json};

/// The pi adapter running on its own socket against a real registry, and its counters.
async fn start() -> (RunningAdapter, Arc<IngestStats>) {
    RunningAdapter::start_translator::<PiEvents>(RegistryConfig::default()).await
}

/// The extension's side: one persistent connection, `connect` first.
async fn connect_extension(path: &Path) -> IngestClient {
    let mut c = IngestClient::connect(path).await;
    c.send_line(
        br#"{"protocol_version":{"major":1,"minor":0},"type":"connect","client_id":"pi-atm-4242"}"#,
    )
    .await;
    let hello = c.next_reply().await.expect("connected");
    assert_eq!(hello["type"], "connected", "{hello}");
    c
}

fn fixture_lines() -> Vec<Value> {
    Fixtures::of(env!("CARGO_MANIFEST_DIR")).load_lines("session.jsonl")
}

fn expectations() -> Vec<Value> {
    serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/session.expect.json"
        ))
        .unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn contract() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("contract.sock");
    atm_core::testing::check_adapter_contract("pi", socket_table(&socket), dir.path()).await;
}

#[tokio::test]
async fn a_pi_session_over_one_persistent_connection() {
    let (run, stats) = start().await;
    let pi = FakeAgent::spawn();
    let mut client = connect_extension(&run.socket).await;
    let steps = fixture_lines();
    let expects = expectations();
    assert_eq!(steps.len(), expects.len());
    for (i, (mut msg, expect)) in steps.into_iter().zip(expects).enumerate() {
        msg["data"]["pid"] = json!(pi.pid());
        let step = format!("step {i} ({})", msg["data"]["event"]);
        client.send_line(&serde_json::to_vec(&msg).unwrap()).await;
        let replies = client.sync().await;
        assert!(replies.is_empty(), "{step}: {replies:?}");
        let sessions = run.sessions().await;
        let expect = expect.as_object().unwrap();
        let Some(s) = replay_session(&sessions, expect, &step) else {
            continue;
        };
        assert_eq!(s.harness.as_str(), "pi", "{step}");
        assert_eq!(s.process.map(|p| p.pid), Some(pi.pid()), "{step}");
        assert_eq!(s.tmux_pane.as_deref(), Some("%12"), "{step}");
        let mut expect = expect.clone();
        if expect.get("id") == Some(&json!("pending")) {
            expect.remove("id");
            assert!(
                s.id.is_pending(),
                "{step}: id {} is not pending",
                s.id.as_str()
            );
        }
        if let Err(e) = check_replay_step(&sessions, &expect) {
            panic!("{step}: {e}");
        }
        if i == 10 {
            // The context event's usage: cost summed over requests, context = last request.
            assert!((s.usage.cost_usd - 0.0407544).abs() < 1e-9, "{:?}", s.usage);
            assert_eq!(s.usage.context_tokens, 10750);
        }
    }
    assert_eq!(IngestStats::get(&stats.bad_messages), 0);
    assert!(IngestStats::get(&stats.applied) >= 12);
    run.stop().await;
}

#[tokio::test]
async fn without_session_id_or_pid_the_peer_process_is_the_session() {
    let (run, _) = start().await;
    let mut client = connect_extension(&run.socket).await;
    // No session id, no pid: the connection's peer (this test process) is taken as pi.
    client
        .send_line(br#"{"type":"pi_event","data":{"event":"agent_start","payload":{}}}"#)
        .await;
    assert!(client.sync().await.is_empty());
    let sessions = run.sessions().await;
    assert_eq!(sessions.len(), 1);
    let me = std::process::id();
    assert_eq!(sessions[0].id.as_str(), format!("pending-{me}"));
    assert_eq!(sessions[0].process.map(|p| p.pid), Some(me));
    assert_eq!(sessions[0].state.as_str(), "working");
    run.stop().await;
}

#[tokio::test]
async fn bad_envelopes_get_errors_and_the_connection_keeps_working() {
    let (run, stats) = start().await;
    let mut client = connect_extension(&run.socket).await;
    let bad: Vec<(&[u8], &str)> = vec![
        (br#"{"type":"pi_event"}"#, "invalid_message"),
        (br#"{"type":"pi_event","data":[1,2]}"#, "invalid_message"),
        (
            br#"{"type":"pi_event","data":{"payload":{}}}"#,
            "invalid_message",
        ),
        (
            br#"{"type":"pi_event","data":{"event":"agent_start","payload":7,"session_id":"s"}}"#,
            "invalid_message",
        ),
    ];
    for (line, code) in &bad {
        client.send_line(line).await;
        let replies = client.sync().await;
        assert_eq!(
            replies.len(),
            1,
            "{:?}: {replies:?}",
            String::from_utf8_lossy(line)
        );
        assert_eq!(replies[0]["type"], "error");
        assert_eq!(
            replies[0]["code"],
            *code,
            "{:?}",
            String::from_utf8_lossy(line)
        );
    }
    assert!(run.sessions().await.is_empty());
    // The same connection still carries good events.
    client
        .send_line(br#"{"type":"pi_event","data":{"event":"agent_end","session_id":"s-ok","pid":4000000}}"#)
        .await;
    assert!(client.sync().await.is_empty());
    let sessions = run.sessions().await;
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].state.as_str(), "idle");
    assert_eq!(IngestStats::get(&stats.bad_messages), 4);

    run.stop().await;
}

/// A recording of atm's extension inside the real pi 0.73.1 (`tests/tests/real_pi.rs` with
/// `ATM_PI_RECORD`), with its `connect` line left out and every `pid` set to `pid`.
fn real_recording(name: &str, pid: u32) -> Vec<Value> {
    Fixtures::of(env!("CARGO_MANIFEST_DIR"))
        .load_lines(&format!("real-0.73.1/{name}.jsonl"))
        .into_iter()
        .filter(|m| m["type"] == "pi_event")
        .map(|mut m| {
            m["data"]["pid"] = json!(pid);
            m
        })
        .collect()
}

/// Replays a real recording over one connection; returns, per line, its event and the session's
/// state after it (`gone` once removed).
async fn replay_real(name: &str) -> Vec<(String, String)> {
    let (run, stats) = start().await;
    let pi = FakeAgent::spawn();
    let mut client = connect_extension(&run.socket).await;
    let mut seen = Vec::new();
    for msg in real_recording(name, pi.pid()) {
        client.send_line(&serde_json::to_vec(&msg).unwrap()).await;
        client.sync_ok().await;
        let sessions = run.sessions().await;
        assert!(sessions.len() <= 1, "{sessions:?}");
        let state = sessions.first().map_or("gone".to_owned(), |s| {
            assert_eq!(s.id.as_str(), msg["data"]["session_id"], "pi's own id");
            assert_eq!(
                s.cwd.as_deref(),
                msg["data"]["cwd"].as_str(),
                "cwd from the first message"
            );
            assert_eq!(
                s.model_id.as_deref(),
                Some("fake-sonnet"),
                "model from the start"
            );
            s.state.as_str().to_owned()
        });
        seen.push((msg["data"]["event"].as_str().unwrap().to_owned(), state));
    }
    assert_eq!(IngestStats::get(&stats.bad_messages), 0);
    run.stop().await;
    seen
}

/// pi starting: the session, its first usage, idle at the prompt.
const STARTUP: &[(&str, &str)] = &[
    ("session_start", "starting"),
    ("atm_usage", "starting"),
    ("atm_idle", "idle"),
];

/// A turn whose tool call waits on a dialog (a confirm or a select) until it is answered.
const TOOL_BEHIND_A_DIALOG: &[(&str, &str)] = &[
    ("before_agent_start", "working"),
    ("tool_execution_start", "working"),
    ("atm_needs_input_open", "needs_permission"),
    ("atm_needs_input_resolved", "working"),
];

/// The tool call ends, the model answers (two usage reports) and the turn ends.
const TOOL_END_AND_TURN_END: &[(&str, &str)] = &[
    ("tool_execution_end", "working"),
    ("atm_usage", "working"),
    ("atm_usage", "working"),
    ("agent_end", "idle"),
];

/// The steps, in order, as (event, state after it).
fn steps(parts: &[&[(&str, &str)]]) -> Vec<(String, String)> {
    parts
        .iter()
        .flat_map(|part| part.iter())
        .map(|(e, st)| ((*e).to_owned(), (*st).to_owned()))
        .collect()
}

#[tokio::test]
async fn real_pi_tool_confirm_approved_and_quit() {
    let seen = replay_real("approved").await;
    let expected = steps(&[
        STARTUP,
        // `RUN sleep 3 && touch ran`
        &[
            ("before_agent_start", "working"),
            ("tool_execution_start", "working"),
        ],
        TOOL_END_AND_TURN_END,
        // `RUN rm -f victim`, the confirm dialog approved
        TOOL_BEHIND_A_DIALOG,
        TOOL_END_AND_TURN_END,
        // /quit
        &[("session_shutdown", "gone")],
    ]);
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn real_pi_confirm_and_select_declined_and_esc() {
    let seen = replay_real("declined").await;
    let expected = steps(&[
        STARTUP,
        // `RUN rm -f kept`, the confirm dialog declined (Esc)
        TOOL_BEHIND_A_DIALOG,
        TOOL_END_AND_TURN_END,
        // `RUN rm -rf dir`, pi's permission-gate.ts select answered "No"
        TOOL_BEHIND_A_DIALOG,
        TOOL_END_AND_TURN_END,
        // `be SLOW`, Esc
        &[
            ("before_agent_start", "working"),
            ("atm_usage", "working"),
            ("agent_end", "idle"),
        ],
    ]);
    assert_eq!(seen, expected);
}

#[test]
fn real_dialogs_name_the_gated_tool_and_its_command() {
    use atm_core::AgentEvent;
    let dialogs: Vec<_> = real_recording("declined", 1)
        .into_iter()
        .filter(|m| m["data"]["event"] == "atm_needs_input_open")
        .map(|m| adapter_pi::translate(&m["data"]).unwrap().event)
        .collect();
    assert_eq!(dialogs.len(), 2);
    for (d, command) in dialogs.iter().zip(["rm -f ", "rm -rf "]) {
        let Some(AgentEvent::PermissionRequested { tool, detail, .. }) = d else {
            panic!("{d:?}")
        };
        assert_eq!(tool, "bash");
        assert!(
            detail.as_deref().is_some_and(|x| x.starts_with(command)),
            "{detail:?}"
        );
    }
    // The last usage of the run is what pi's footer showed: every request, the aborted one too.
    let usage = real_recording("declined", 1)
        .into_iter()
        .rfind(|m| m["data"]["event"] == "atm_usage")
        .unwrap();
    let Some(AgentEvent::UsageUpdated(u)) = adapter_pi::translate(&usage["data"]).unwrap().event
    else {
        panic!()
    };
    let cost = u.cost_usd.unwrap();
    assert!(cost > 0.0 && format!("{cost:.3}") != "0.000", "{u:?}");
}
