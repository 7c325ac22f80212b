//! One view of several machines, end to end: real `atmd`s with different host ids, the `nats`
//! sink on each host and the `nats` adapter on the hub, real `nats-server`s on loopback (one,
//! or a three-node JetStream cluster), the real `atm-hook` holding a permission on a host and
//! the real `atmctl` answering it at the hub.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

use std::process::Output;

use atm_core::testing::nats::{NatsServer, wait_for_meta_leader};
use atm_tests::waiting_hook::{decision_of, permission};
use atm_tests::{Daemon, WaitingHook, find, hook};
use serde_json::{Value, json};

fn servers(list: &[&NatsServer]) -> String {
    let urls: Vec<String> = list.iter().map(|s| format!("\"{}\"", s.url())).collect();
    format!("[{}]", urls.join(", "))
}

/// A host: Claude's hooks, the query socket, and the `nats` sink.
fn host_daemon(name: &str, servers: &str, replicas: usize) -> Daemon {
    Daemon::start_with_hooks(&format!(
        "[daemon]\nhost = \"{name}\"\nlog = \"debug\"\nsnapshot_debounce = \"20ms\"\n\n\
         [[adapter]]\ntype = \"claude-hooks\"\n\n[[sink]]\ntype = \"socket\"\n\n\
         [[sink]]\ntype = \"nats\"\nservers = {servers}\nheartbeat = \"300ms\"\n\
         replicas = {replicas}\nrequest_timeout = \"2s\"\n"
    ))
}

/// The hub: the query socket and the `nats` adapter.
fn hub_daemon(servers: &str, replicas: usize) -> Daemon {
    Daemon::start(&format!(
        "[daemon]\nhost = \"hub\"\nlog = \"debug\"\n\n[[sink]]\ntype = \"socket\"\n\n\
         [[adapter]]\ntype = \"nats\"\nservers = {servers}\nstale_after = \"2s\"\n\
         remove_after = \"60s\"\ndecide_timeout = \"2s\"\nreplicas = {replicas}\n\
         request_timeout = \"2s\"\n"
    ))
}

fn atmctl(d: &Daemon, args: &[&str]) -> Output {
    d.command("atmctl").args(args).output().unwrap()
}

fn start(sid: &str) -> Value {
    hook(
        json!({"hook_event_name": "SessionStart", "session_id": sid, "source": "startup",
        "cwd": "/tmp/prj"}),
    )
}

fn end(sid: &str) -> Value {
    hook(json!({"hook_event_name": "SessionEnd", "session_id": sid, "reason": "exit"}))
}

/// The hub's sessions of `host`, by id.
fn of_host<'a>(sessions: &'a [Value], host: &str) -> Vec<&'a str> {
    let mut ids: Vec<&str> = sessions
        .iter()
        .filter(|s| s["host"] == host && s["remote"] == true)
        .filter_map(|s| s["id"].as_str())
        .collect();
    ids.sort();
    ids
}

#[test]
fn a_host_s_sessions_show_at_the_hub_and_an_answer_there_reaches_its_agent() {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start(dir.path(), "");
    let list = servers(&[&server]);
    let hub = hub_daemon(&list, 1);
    let devbox = host_daemon("devbox", &list, 1);
    let hook = WaitingHook::start(&devbox, permission("s1", "cargo publish", json!({})));
    let sessions = hub.wait_sessions("devbox's waiting session at the hub", |s| {
        find(s, "s1").is_some_and(|v| v["state"] == "needs_permission")
    });
    let s1 = find(&sessions, "s1").unwrap();
    assert_eq!(
        (&s1["host"], &s1["remote"]),
        (&json!("devbox"), &json!(true))
    );
    assert!(s1.get("tmux_pane").is_none_or(Value::is_null), "{s1:#}");
    // Prompt text stays on its host by default.
    assert!(!s1.to_string().contains("cargo publish"), "{s1:#}");
    let request = s1["attention"]["request"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(s1["attention"]["request"]["answerable"], true);

    // atmctl at the hub shows the host, and filters by it.
    let table = String::from_utf8(atmctl(&hub, &["list"]).stdout).unwrap();
    assert!(table.starts_with("HOST"), "{table}");
    assert!(table.lines().any(|l| l.starts_with("devbox")), "{table}");
    let only = String::from_utf8(atmctl(&hub, &["list", "--host", "elsewhere"]).stdout).unwrap();
    assert_eq!(only, "no sessions\n");

    // Answered at the hub, applied on devbox: its hook prints the decision for Claude.
    let out = atmctl(&hub, &["approve", &request]);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        hub.log()
    );
    assert_eq!(decision_of(hook), json!({"behavior": "allow"}));
    let on_devbox = devbox.wait_sessions("the answer in devbox's log", |s| {
        find(s, "s1").is_some_and(|v| v["request_log"][0]["surface"]["name"] == "atmctl@hub")
    });
    assert_eq!(find(&on_devbox, "s1").unwrap()["state"], "working");
    hub.wait_sessions("the hub follows devbox", |s| {
        find(s, "s1").is_some_and(|v| v["state"] == "working")
    });

    // A second answer: the owning host says it was answered.
    let again = atmctl(&hub, &["approve", &request]);
    assert_eq!(again.status.code(), Some(1));

    // devbox gone with a request open: the hub says it cannot reach it, then shows it stale.
    let _waiting = WaitingHook::start(&devbox, permission("s2", "rm -rf target", json!({})));
    let sessions = hub.wait_sessions("s2 waits at the hub", |s| {
        find(s, "s2").is_some_and(|v| v["state"] == "needs_permission")
    });
    let request2 = find(&sessions, "s2").unwrap()["attention"]["request"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut devbox = devbox;
    devbox.kill9();
    let out = atmctl(&hub, &["approve", &request2]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("devbox")
            && err.contains("cannot be reached")
            && err.contains("no atm daemon answers"),
        "{err}"
    );
    hub.wait_sessions("devbox's sessions shown stale", |s| {
        find(s, "s2").is_some_and(|v| v["stale"] == true)
    });
    let table = String::from_utf8(atmctl(&hub, &["list"]).stdout).unwrap();
    assert!(table.contains("devbox (stale)"), "{table}");
}

#[test]
fn a_server_restart_loses_nothing_and_the_hub_converges() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = NatsServer::start(dir.path(), "");
    let list = servers(&[&server]);
    let hub = hub_daemon(&list, 1);
    let devbox = host_daemon("devbox", &list, 1);
    devbox.send_hooks(&[start("old")]);
    hub.wait_sessions("old at the hub", |s| of_host(s, "devbox") == ["old"]);
    server.kill();
    // The host keeps working without NATS.
    devbox.send_hooks(&[start("new1"), start("new2"), end("old")]);
    devbox.wait_sessions("devbox has its new sessions", |s| {
        find(s, "new2").is_some() && find(s, "old").is_none()
    });
    server.restart();
    hub.wait_sessions("the hub converges after the restart", |s| {
        of_host(s, "devbox") == ["new1", "new2"]
    });
}

#[test]
fn a_three_node_cluster_keeps_converging_when_a_node_dies() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = NatsServer::cluster(dir.path(), 3);
    wait_for_meta_leader(&nodes);
    let refs: Vec<&NatsServer> = nodes.iter().collect();
    let list = servers(&refs);
    let hub = hub_daemon(&list, 3);
    let devbox = host_daemon("devbox", &list, 3);
    let runner = host_daemon("runner", &list, 3);
    devbox.send_hooks(&[start("d1")]);
    runner.send_hooks(&[start("r1")]);
    hub.wait_sessions("both hosts at the hub", |s| {
        of_host(s, "devbox") == ["d1"] && of_host(s, "runner") == ["r1"]
    });
    // Every client starts on the first server of its list: kill that one.
    nodes[0].kill();
    devbox.send_hooks(&[start("d2"), end("d1")]);
    runner.send_hooks(&[start("r2")]);
    // A new stream leader is elected and every client reconnects: seconds on a loaded machine.
    let within = std::time::Duration::from_secs(30);
    hub.wait_sessions_within(within, "the hub converges on two nodes", |s| {
        of_host(s, "devbox") == ["d2"] && of_host(s, "runner") == ["r1", "r2"]
    });
    assert!(nodes[1].is_running() && nodes[2].is_running());
}

/// A least-privilege account per host, as the README shows it: devbox may write only its own
/// keys, list only its own keys, and take only its own answers; the hub may do everything.
/// Passwords come from files.
const PERMISSIONS: &str = r#"
accounts {
  FLEET {
    jetstream: enabled
    users: [
      { user: hub, password: "hub-secret" }
      { user: devbox, password: "devbox-secret", permissions: {
          publish: { allow: [
            "$KV.atm.devbox.>",
            "$JS.API.STREAM.INFO.KV_atm",
            "$JS.API.CONSUMER.CREATE.KV_atm.*.$KV.atm.devbox.>"
          ] }
          subscribe: { allow: ["atm.devbox.decide", "_INBOX_devbox.>"] }
          allow_responses: true
      } }
    ]
  }
}
"#;

#[test]
fn a_host_with_least_privilege_publishes_and_answers_but_touches_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start(dir.path(), PERMISSIONS);
    let list = servers(&[&server]);
    let secret = |name: &str, pw: &str| {
        let p = dir.path().join(format!("{name}.pw"));
        std::fs::write(&p, format!("{pw}\n")).unwrap();
        p.display().to_string()
    };
    let hub_pw = secret("hub", "hub-secret");
    let dev_pw = secret("devbox", "devbox-secret");
    let hub = Daemon::start(&format!(
        "[daemon]\nhost = \"hub\"\n\n[[sink]]\ntype = \"socket\"\n\n[[adapter]]\ntype = \"nats\"\n\
         servers = {list}\nuser = \"hub\"\npassword_file = \"{hub_pw}\"\n"
    ));
    let devbox = Daemon::start_with_hooks(&format!(
        "[daemon]\nhost = \"devbox\"\n\n[[adapter]]\ntype = \"claude-hooks\"\n\n\
         [[sink]]\ntype = \"socket\"\n\n[[sink]]\ntype = \"nats\"\nservers = {list}\n\
         user = \"devbox\"\npassword_file = \"{dev_pw}\"\ninbox_prefix = \"_INBOX_devbox\"\n\
         create_bucket = false\nheartbeat = \"300ms\"\n"
    ));
    let hook = WaitingHook::start(&devbox, permission("p1", "make", json!({})));
    let sessions = hub.wait_sessions("devbox's session at the hub", |s| {
        find(s, "p1").is_some_and(|v| v["attention"]["request"]["answerable"] == true)
    });
    let request = find(&sessions, "p1").unwrap()["attention"]["request"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = atmctl(&hub, &["approve", &request]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(decision_of(hook), json!({"behavior": "allow"}));
    // What the host did needed nothing more than its permissions allow.
    assert!(!server.log().contains("Violation"), "{}", server.log());

    // With devbox's credentials, another host's keys and subjects are refused.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = async_nats::ConnectOptions::with_user_and_password(
            "devbox".into(),
            "devbox-secret".into(),
        )
        .custom_inbox_prefix("_INBOX_devbox")
        .request_timeout(Some(std::time::Duration::from_secs(1)))
        .connect(server.url())
        .await
        .unwrap();
        let js = async_nats::jetstream::new(client.clone());
        let kv = js.get_key_value("atm").await.unwrap();
        let forged = kv.put("runner.s.i_claude__x", b"{}".to_vec().into()).await;
        assert!(forged.is_err(), "devbox wrote runner's key: {forged:?}");
        assert!(
            kv.put("devbox.s.i_claude__x", b"{}".to_vec().into())
                .await
                .is_ok()
        );
        let theirs = atm_core::fleet::host_keys(
            &kv,
            &client,
            &atm_core::HostId::parse("runner").unwrap(),
            std::time::Duration::from_secs(2),
        )
        .await;
        assert!(theirs.is_err(), "devbox listed runner's keys: {theirs:?}");
        let mut sub = client.subscribe("atm.runner.decide").await.unwrap();
        // The server refuses the subscription: nothing arrives, and the violation is logged.
        let got = tokio::time::timeout(std::time::Duration::from_millis(300), {
            use futures_util::StreamExt;
            sub.next()
        })
        .await;
        assert!(!matches!(got, Ok(Some(_))), "devbox got runner's answers");
    });
    atm_core::testing::wait_until_blocking("the server logged the refusals", || {
        let log = server.log();
        let refused = |what: &str, subject: &str| {
            log.lines()
                .any(|l| l.contains(what) && l.contains("User \"devbox\"") && l.contains(subject))
        };
        refused("Publish Violation", "Subject \"$KV.atm.runner.s.")
            && refused("Publish Violation", "$KV.atm.runner.>")
            && refused("Subscription Violation", "Subject \"atm.runner.decide\"")
    });
}
