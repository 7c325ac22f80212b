//! Answering a waiting agent from outside its terminal, end to end: the real `atm-hook` sends
//! Claude's `PermissionRequest` and waits, the real `atmd` holds the request, the real
//! `atmctl` (or a raw protocol client) answers, and what atm-hook prints is what Claude reads.
//! The real Claude Code runs the same path in `real_claude_answers.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

use std::process::Output;
use std::time::{Duration, Instant};

use atm_core::testing::wait_until_blocking;
use atm_tests::waiting_hook::{decision_of, permission, stdout_json};
use atm_tests::{Daemon, WaitingHook, basic_config, find, hook, subscribe_stamped, wait_line};
use serde_json::{Value, json};

fn atmctl(d: &Daemon, args: &[&str]) -> Output {
    d.command("atmctl").args(args).output().unwrap()
}

/// `atmctl ARGS`, which must succeed.
fn atmctl_ok(d: &Daemon, args: &[&str]) {
    let out = atmctl(d, args);
    assert!(
        out.status.success(),
        "atmctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `atmctl pending --json`, once `pred` holds for it (10 s).
fn wait_pending(d: &Daemon, what: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let mut last = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let out = atmctl(d, &["pending", "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        last = serde_json::from_slice(&out.stdout).unwrap();
        if pred(&last) {
            return last;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("timed out waiting for {what}: {last:#?}\n{}", d.log());
}

fn answerable(d: &Daemon) -> Value {
    wait_pending(d, "an answerable request", |p| {
        p.len() == 1 && p[0]["answerable"] == true
    })
    .remove(0)
}

fn session(d: &Daemon, sid: &str) -> Value {
    find(&d.client().list(), sid).cloned().unwrap()
}

#[test]
fn approved_from_atmctl_the_hook_prints_allow_and_the_answer_is_audited() {
    let d = Daemon::start_with_hooks(&basic_config(""));
    let updates = subscribe_stamped(&d.query_socket());
    let hook = WaitingHook::start(&d, permission("a1", "cargo test", json!({})));
    let request = answerable(&d);
    assert_eq!(request["tool"], "Bash");
    assert_eq!(request["detail"], "cargo test");
    assert_eq!(request["session_id"], "a1");
    let id = request["id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 32, "{request}");

    let out = atmctl(&d, &["approve", &id[..8]]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (printed, took) = hook.finish();
    assert!(printed.status.success());
    assert_eq!(
        stdout_json(&printed),
        json!({"hookSpecificOutput": {"hookEventName": "PermissionRequest",
            "decision": {"behavior": "allow"}}})
    );
    assert!(took < Duration::from_secs(5), "{took:?}");

    // Working on the tool, the answer in the session's log, and subscribers told.
    let s = session(&d, "a1");
    assert_eq!(s["state"], "working", "{s:#}");
    assert_eq!(s["activity_detail"], "Bash", "{s:#}");
    wait_line(&updates, |v| {
        v["type"] == "request_resolved"
            && v["request_id"] == id.as_str()
            && v["fate"] == "answered"
            && v["decision"]["decision"] == "allow"
            && v["surface"]["name"] == "atmctl"
    });
    let snapshot = d.state_dir().join("sessions.json");
    wait_until_blocking("the answer in the snapshot", || {
        std::fs::read_to_string(&snapshot)
            .is_ok_and(|s| s.contains(&id) && s.contains("\"fate\":\"answered\""))
    });
    let text = std::fs::read_to_string(&snapshot).unwrap();
    let uid = rustix::process::getuid().as_raw();
    assert!(text.contains(&format!("\"uid\":{uid}")), "{text}");

    // A second answer is refused, saying it was answered.
    let again = atmctl(&d, &["approve", &id]);
    assert_eq!(again.status.code(), Some(1));
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("no pending request"), "{err}");
    let mut c = d.client();
    c.send(json!({"type": "decide", "request_id": id, "decision": "deny"}));
    let r = c.recv();
    assert_eq!(r["code"], "already_answered", "{r}");
}

#[test]
fn always_echoes_the_offered_rule_and_deny_carries_its_message() {
    let d = Daemon::start_with_hooks(&basic_config(""));
    let rule = json!({"type": "addRules", "rules": [{"toolName": "Bash", "ruleContent": "npm test:*"}],
        "behavior": "allow", "destination": "localSettings"});
    let hook = WaitingHook::start(
        &d,
        permission("a2", "npm test", json!({"permission_suggestions": [rule]})),
    );
    let id = answerable(&d)["id"].as_str().unwrap().to_owned();
    atmctl_ok(&d, &["approve", &id, "--always"]);
    assert_eq!(
        decision_of(hook),
        json!({"behavior": "allow", "updatedPermissions": [rule]})
    );

    let hook = WaitingHook::start(&d, permission("a2", "rm -rf /", json!({})));
    let id = answerable(&d)["id"].as_str().unwrap().to_owned();
    // No rule offered: "always" is refused, and the request still waits.
    let out = atmctl(&d, &["approve", &id, "--always"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no rule"));
    atmctl_ok(&d, &["deny", &id, "-m", "use cargo clean", "--interrupt"]);
    assert_eq!(
        decision_of(hook),
        json!({"behavior": "deny", "message": "use cargo clean", "interrupt": true})
    );
    assert_eq!(session(&d, "a2")["state"], "idle");
}

#[test]
fn answered_in_the_terminal_first_the_hook_exits_without_a_decision() {
    let d = Daemon::start_with_hooks(&basic_config(""));
    let mut hook = WaitingHook::start(&d, permission("t1", "ls", json!({})));
    let id = answerable(&d)["id"].as_str().unwrap().to_owned();
    assert!(hook.still_waiting());
    // The user answered in Claude's dialog: the tool ran.
    d.send_hooks(&[hook_line("PostToolUse", "t1")]);
    let (printed, took) = hook.finish();
    assert!(printed.status.success());
    assert!(printed.stdout.is_empty(), "{:?}", printed.stdout);
    assert!(took < Duration::from_secs(5), "{took:?}");
    wait_pending(&d, "no request", <[Value]>::is_empty);
    let s = session(&d, "t1");
    assert_eq!(s["state"], "working");
    let out = atmctl(&d, &["approve", &id]);
    assert_eq!(out.status.code(), Some(1));
}

fn hook_line(event: &str, sid: &str) -> Value {
    hook(json!({"hook_event_name": event, "session_id": sid, "tool_name": "Bash"}))
}

#[test]
fn a_hook_that_dies_leaves_the_request_shown_but_not_answerable() {
    let d = Daemon::start_with_hooks(&basic_config(""));
    let mut hook = WaitingHook::start(&d, permission("k1", "make", json!({})));
    let id = answerable(&d)["id"].as_str().unwrap().to_owned();
    hook.child.kill().unwrap();
    hook.child.wait().unwrap();
    let pending = wait_pending(&d, "the request not answerable", |p| {
        p.len() == 1 && p[0]["answerable"] == false
    });
    assert_eq!(pending[0]["id"], id.as_str());
    let out = atmctl(&d, &["approve", &id]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot be answered from outside"), "{err}");
    assert_eq!(session(&d, "k1")["state"], "needs_permission");
}

#[test]
fn a_daemon_that_dies_is_no_decision_and_a_restored_request_is_not_answerable() {
    let mut d = Daemon::start_with_hooks(&basic_config(""));
    let hook = WaitingHook::start(&d, permission("r1", "make", json!({})));
    answerable(&d);
    // Let the snapshot catch the waiting session before the daemon dies.
    let snapshot = d.state_dir().join("sessions.json");
    wait_until_blocking("the waiting request in the snapshot", || {
        std::fs::read_to_string(&snapshot).is_ok_and(|s| s.contains("\"answerable\":true"))
    });
    d.kill9();
    let (printed, took) = hook.finish();
    assert!(printed.status.success());
    assert!(printed.stdout.is_empty());
    assert!(took < Duration::from_secs(5), "{took:?}");
    d.spawn();
    let pending = wait_pending(&d, "the restored request", |p| p.len() == 1);
    assert_eq!(pending[0]["answerable"], false, "{pending:#?}");
}

#[test]
fn questions_are_answered_by_choice_number_or_text() {
    let d = Daemon::start_with_hooks(&basic_config(""));
    let input = json!({"questions": [
        {"question": "Which database?", "header": "DB", "multiSelect": false,
         "options": [{"label": "Postgres", "description": "server"}, {"label": "SQLite", "description": "file"}]},
        {"question": "Why?", "header": "Reason", "multiSelect": false, "options": []}
    ]});
    let payload = json!({"hook_event_name": "PermissionRequest", "session_id": "q1",
        "tool_name": "AskUserQuestion", "tool_input": input});
    let hook = WaitingHook::start(&d, payload);
    let request = answerable(&d);
    assert_eq!(request["reason"], "question");
    assert_eq!(request["questions"][0]["options"][1]["label"], "SQLite");
    let id = request["id"].as_str().unwrap().to_owned();
    // Allowing a question is not answering it.
    assert_eq!(atmctl(&d, &["approve", &id]).status.code(), Some(1));
    assert_eq!(atmctl(&d, &["answer", &id, "2"]).status.code(), Some(1));
    atmctl_ok(&d, &["answer", &id, "2", "it is one file"]);
    let (printed, _) = hook.finish();
    let decision = &stdout_json(&printed)["hookSpecificOutput"]["decision"];
    assert_eq!(decision["behavior"], "allow");
    assert_eq!(decision["updatedInput"]["questions"], input["questions"]);
    assert_eq!(
        decision["updatedInput"]["answers"],
        json!({"Which database?": "SQLite", "Why?": "it is one file"})
    );
}

#[test]
fn bad_decisions_get_clear_errors_and_change_nothing() {
    let d = Daemon::start_with_hooks(&basic_config(""));
    let mut hook = WaitingHook::start(&d, permission("b1", "ls", json!({})));
    let id = answerable(&d)["id"].as_str().unwrap().to_owned();
    let mut c = d.client();
    let cases = [
        (
            json!({"type": "decide", "decision": "allow"}),
            "invalid_message",
        ),
        (
            json!({"type": "decide", "request_id": "../../x", "decision": "allow"}),
            "invalid_message",
        ),
        (
            json!({"type": "decide", "request_id": id, "decision": "maybe"}),
            "invalid_message",
        ),
        (
            json!({"type": "decide", "request_id": id, "decision": "answer", "answers": ["x"]}),
            "invalid_message",
        ),
        (
            json!({"type": "decide", "request_id": id, "decision": "deny", "message": 5}),
            "invalid_message",
        ),
        (
            json!({"type": "decide", "request_id": "0".repeat(32), "decision": "allow"}),
            "not_found",
        ),
    ];
    for (msg, code) in cases {
        c.send(msg.clone());
        let r = c.recv();
        assert_eq!(r["type"], "error", "{msg} -> {r}");
        assert_eq!(r["code"], code, "{msg} -> {r}");
    }
    assert!(hook.still_waiting());
    assert_eq!(session(&d, "b1")["state"], "needs_permission");
    // The request can still be answered after all that.
    c.send(json!({"type": "decide", "request_id": id, "decision": "allow", "surface": "e2e <b>"}));
    let r = c.recv();
    assert_eq!(r["type"], "decided", "{r}");
    assert_eq!(r["session_id"], "b1");
    assert_eq!(decision_of(hook)["behavior"], "allow");
    let s = session(&d, "b1");
    assert!(s.get("attention").is_none(), "{s:#}");
}

#[test]
fn without_a_daemon_the_hook_prints_nothing_at_once() {
    let d = Daemon::start_with_hooks(&basic_config(""));
    let mut d = d;
    d.kill9();
    let start = Instant::now();
    let hook = WaitingHook::start(&d, permission("n1", "ls", json!({})));
    let (printed, _) = hook.finish();
    assert!(printed.status.success());
    assert!(printed.stdout.is_empty());
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn another_user_cannot_answer_or_see_requests() {
    use std::os::unix::process::CommandExt;
    let Some(other) = atm_core::testing::other_user("another_user_cannot_answer_or_see_requests")
    else {
        return;
    };
    let d = Daemon::start_with_hooks(&basic_config(""));
    let mut hook = WaitingHook::start(&d, permission("u1", "rm -rf ~", json!({})));
    let id = answerable(&d)["id"].as_str().unwrap().to_owned();
    for args in [
        vec!["pending", "--json"],
        vec!["approve", id.as_str()],
        vec!["deny", id.as_str()],
    ] {
        let out = d
            .command("atmctl")
            .args(&args)
            .arg("--socket")
            .arg(d.query_socket())
            .uid(other)
            .gid(other)
            .output()
            .unwrap();
        // atmctl ran (as the other user) and was refused: not an exec failure.
        assert!(
            matches!(out.status.code(), Some(1 | 2)),
            "{args:?} as another user: {out:?}"
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).starts_with("atmctl: "),
            "{out:?}"
        );
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains(&id),
            "{out:?}"
        );
    }
    assert!(hook.still_waiting());
    assert_eq!(answerable(&d)["id"], id.as_str());
    assert_eq!(session(&d, "u1")["state"], "needs_permission");
}
