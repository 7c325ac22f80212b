//! Pending requests over D-Bus, on a real private bus with a real registry: listed, approved,
//! denied and answered with a zbus client and with `busctl`, the verdict reaching the waiter
//! the registry hands it to (the channel Claude's waiting `atm-hook` reads), the refusals as
//! named errors, the `RequestAdded`/`RequestResolved` signals, and another uid refused.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails by panicking

mod common;

use std::collections::HashMap;
use std::time::Duration;

use atm_core::model::PermissionSuggestion;
use atm_core::request::{RequestEnd, RequestFate, RequestId, Verdict};
use atm_core::serde_json;
use atm_core::{AgentEvent, EventEnvelope, EventSource};
use common::*;
use sink_dbus as _;
use tokio::sync::oneshot;
use zbus::OwnedVariant;

/// A request that a waiter (what Claude's `atm-hook` is, through the ingest) can be answered on.
struct Waiting {
    id: String,
    rx: oneshot::Receiver<RequestEnd>,
}

async fn ask(t: &OnPrivateBus, source: &EventSource, event: AgentEvent) -> Waiting {
    let awaiting = t
        .harness()
        .registry
        .apply_awaiting(EventEnvelope::now(source.clone(), event))
        .await
        .unwrap();
    let (id, rx) = awaiting.wait.expect("the event opens a request");
    Waiting {
        id: id.to_string(),
        rx,
    }
}

impl Waiting {
    async fn verdict(self) -> Verdict {
        match tokio::time::timeout(Duration::from_secs(5), self.rx)
            .await
            .expect("no answer within 5 s")
            .unwrap()
        {
            RequestEnd::Decided(v) => v,
            other => panic!("not decided: {other:?}"),
        }
    }
}

fn permission_with_rule(tool: &str, detail: &str) -> AgentEvent {
    AgentEvent::PermissionRequested {
        tool: tool.into(),
        detail: Some(detail.into()),
        suggestions: vec![PermissionSuggestion {
            label: "allow Bash(make:*) for this session".into(),
            rule: serde_json::json!({"type": "addRules", "rules": [{"toolName": "Bash", "ruleContent": "make:*"}]}),
        }],
    }
}

async fn monitor(conn: &zbus::Connection) -> MonitorProxy<'static> {
    MonitorProxy::builder(conn)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
        .unwrap()
}

/// The D-Bus error name of a failed call.
fn error_name<T: std::fmt::Debug>(r: zbus::Result<T>) -> String {
    match r {
        Err(zbus::Error::MethodError(name, _, _)) => name.to_string(),
        other => panic!("not a D-Bus error: {other:?}"),
    }
}

fn get<T: TryFrom<OwnedVariant>>(d: &HashMap<String, OwnedVariant>, key: &str) -> T
where
    T::Error: std::fmt::Debug,
{
    T::try_from(d[key].try_clone().unwrap()).unwrap()
}

/// `ListRequests`, once it shows request `id` answerable.
async fn listed_answerable(m: &MonitorProxy<'_>, id: &str) -> HashMap<String, OwnedVariant> {
    wait_until(&format!("request {id} listed as answerable"), || async {
        m.list_requests()
            .await
            .unwrap()
            .get(id)
            .is_some_and(|r| get::<bool>(r, "Answerable"))
    })
    .await;
    m.list_requests().await.unwrap().remove(id).unwrap()
}

fn signal(member: &str, args: [&str; 4]) -> SignalBody {
    let args = args.map(str::to_owned);
    match member {
        "RequestAdded" => SignalBody::RequestAdded(args),
        _ => SignalBody::RequestResolved(args),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_is_listed_approved_and_signalled() {
    let t = OnPrivateBus::start().await;
    let src = source("req-a", 301);
    let mut rec = t.record_after_start(&src).await;
    let m = monitor(&t.conn).await;
    assert!(m.list_requests().await.unwrap().is_empty());

    let w = ask(&t, &src, permission_with_rule("Bash", "make all")).await;
    let added = rec.until(|s| s.member == "RequestAdded").await;
    assert_eq!(
        added.body,
        signal("RequestAdded", [&w.id, "req-a", "Bash", "make all"])
    );
    assert_eq!(added.path, MANAGER);

    let r = listed_answerable(&m, &w.id).await;
    assert_eq!(get::<String>(&r, "Id"), w.id);
    assert_eq!(get::<String>(&r, "SessionId"), "req-a");
    assert_eq!(get::<String>(&r, "Harness"), "claude");
    assert_eq!(get::<String>(&r, "Reason"), "permission");
    assert_eq!(get::<String>(&r, "Tool"), "Bash");
    assert_eq!(get::<String>(&r, "Detail"), "make all");
    assert!(get::<i64>(&r, "AskedAt") > 1_700_000_000);
    assert_eq!(
        get::<Vec<String>>(&r, "Rules"),
        ["allow Bash(make:*) for this session"]
    );
    let path = "/io/github/atm/Monitor1/sessions/claude__301_1301";
    assert_eq!(get::<zbus::OwnedObjectPath>(&r, "Session").as_str(), path);
    // The session object says which request it waits on.
    let objects = managed(&t.conn).await;
    assert_eq!(str_prop(&objects[path], "RequestId"), w.id);
    assert!(get::<bool>(&objects[path], "RequestAnswerable"));

    // Approved "always" with the offered rule: the waiter gets the rule to echo.
    assert_eq!(m.approve_rule(&w.id, 0).await.unwrap(), "req-a");
    let id = w.id.clone();
    match w.verdict().await {
        Verdict::Allow {
            updated_permissions,
            answers,
        } => {
            assert_eq!(updated_permissions[0]["rules"][0]["ruleContent"], "make:*");
            assert!(answers.is_empty());
        }
        v => panic!("{v:?}"),
    }
    let resolved = rec.until(|s| s.member == "RequestResolved").await;
    assert_eq!(
        resolved.body,
        signal("RequestResolved", [&id, "req-a", "answered", "dbus"])
    );
    assert!(m.list_requests().await.unwrap().is_empty());

    // Audited with the surface and the caller's uid; a second answer is refused.
    let s = t.harness().registry.get_session("req-a").await.unwrap();
    let record = s.request_log.last().unwrap();
    assert_eq!(record.id.as_str(), id);
    match &record.fate {
        RequestFate::Answered { surface, .. } => {
            assert_eq!(surface.name, "dbus");
            assert_eq!(surface.uid, Some(atm_core::paths::uid()));
        }
        f => panic!("{f:?}"),
    }
    assert_eq!(
        error_name(m.approve(&id, false).await),
        "io.github.atm.Monitor1.Error.AlreadyAnswered"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_carries_its_message_and_answer_its_answers() {
    let t = OnPrivateBus::start().await;
    let src = source("req-d", 302);
    t.start_session(&src, 1).await;
    let m = monitor(&t.conn).await;

    let w = ask(&t, &src, permission("Bash", "rm -rf /")).await;
    listed_answerable(&m, &w.id).await;
    // No rule offered: "always" is refused and the request still waits.
    assert_eq!(
        error_name(m.approve(&w.id, true).await),
        "io.github.atm.Monitor1.Error.Invalid"
    );
    assert_eq!(
        m.deny(&w.id, "use cargo clean", true).await.unwrap(),
        "req-d"
    );
    assert_eq!(
        w.verdict().await,
        Verdict::Deny {
            message: Some("use cargo clean".into()),
            interrupt: true
        }
    );

    let w = ask(
        &t,
        &src,
        atm_core::testing::database_question(Some("DB"), &["Postgres", "SQLite"]),
    )
    .await;
    let r = listed_answerable(&m, &w.id).await;
    let q: Vec<(String, String, Vec<String>, bool)> = get(&r, "Questions");
    assert_eq!(
        q,
        [(
            "DB".to_owned(),
            "Which database?".to_owned(),
            vec!["Postgres".to_owned(), "SQLite".to_owned()],
            false
        )]
    );
    assert_eq!(get::<String>(&r, "Reason"), "question");
    // Allowing a question is not answering it; one answer per question.
    assert_eq!(
        error_name(m.approve(&w.id, false).await),
        "io.github.atm.Monitor1.Error.Invalid"
    );
    assert_eq!(
        error_name(m.answer(&w.id, &["SQLite", "more"]).await),
        "io.github.atm.Monitor1.Error.Invalid"
    );
    assert_eq!(m.answer(&w.id, &["SQLite"]).await.unwrap(), "req-d");
    match w.verdict().await {
        Verdict::Allow { answers, .. } => assert_eq!(answers, ["SQLite"]),
        v => panic!("{v:?}"),
    }
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_have_clear_names_and_change_nothing() {
    let t = OnPrivateBus::start().await;
    let src = source("req-e", 303);
    let mut rec = t.record_after_start(&src).await;
    let m = monitor(&t.conn).await;
    let name = |n: &str| format!("io.github.atm.Monitor1.Error.{n}");

    assert_eq!(
        error_name(m.approve(&"0".repeat(32), false).await),
        name("NotFound")
    );
    assert_eq!(
        error_name(m.deny("../../etc/passwd", "", false).await),
        name("Invalid")
    );

    // Shown but nothing waits for an answer (an agent that decides in its own dialog).
    t.apply(&src, permission("Bash", "make")).await;
    let added = rec.until(|s| s.member == "RequestAdded").await;
    let SignalBody::RequestAdded([id, ..]) = added.body else {
        unreachable!()
    };
    let listed = m.list_requests().await.unwrap();
    assert!(!get::<bool>(&listed[&id], "Answerable"));
    assert_eq!(
        error_name(m.approve(&id, false).await),
        name("NotAnswerable")
    );

    // Answered in the terminal: the tool ran. Withdrawn, and then refused as ended.
    t.apply(&src, prompt()).await;
    let resolved = rec.until(|s| s.member == "RequestResolved").await;
    assert_eq!(
        resolved.body,
        signal(
            "RequestResolved",
            [&id, "req-e", "withdrawn", "answered in the terminal"]
        )
    );
    assert_eq!(error_name(m.approve(&id, false).await), name("Ended"));

    // A waiting request survives every refused call.
    let w = ask(&t, &src, permission("Bash", "ls")).await;
    listed_answerable(&m, &w.id).await;
    assert_eq!(error_name(m.approve_rule(&w.id, 3).await), name("Invalid"));
    assert_eq!(error_name(m.answer(&w.id, &["x"]).await), name("Invalid"));
    assert_eq!(m.approve(&w.id, false).await.unwrap(), "req-e");
    assert!(matches!(w.verdict().await, Verdict::Allow { .. }));
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_that_ends_withdraws_its_request() {
    let t = OnPrivateBus::start().await;
    let src = source("req-g", 304);
    let mut rec = t.record_after_start(&src).await;
    let w = ask(&t, &src, permission("Bash", "make")).await;
    rec.until(|s| s.member == "RequestAdded").await;
    t.apply(&src, ended()).await;
    let resolved = rec.until(|s| s.member == "RequestResolved").await;
    let SignalBody::RequestResolved([id, sid, fate, detail]) = resolved.body else {
        unreachable!()
    };
    assert_eq!(
        (id.as_str(), sid.as_str(), fate.as_str()),
        (w.id.as_str(), "req-g", "withdrawn")
    );
    assert!(detail.contains("ended"), "{detail}");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busctl_approves_as_the_readme_shows() {
    let t = OnPrivateBus::start().await;
    let src = source("req-b", 305);
    t.start_session(&src, 1).await;
    let w = ask(&t, &src, permission("Bash", "make")).await;
    listed_answerable(&monitor(&t.conn).await, &w.id).await;
    let listed = t
        .busctl(&[
            "--json=short",
            "call",
            SERVICE,
            MANAGER,
            "io.github.atm.Monitor1",
            "ListRequests",
        ])
        .await;
    let v: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(v["type"], "a{sa{sv}}");
    assert_eq!(v["data"][0][&w.id]["Tool"]["data"], "Bash", "{v}");
    let out = t
        .busctl(&[
            "call",
            SERVICE,
            MANAGER,
            "io.github.atm.Monitor1",
            "Approve",
            "sb",
            &w.id,
            "false",
        ])
        .await;
    assert_eq!(out.trim(), "s \"req-b\"");
    assert!(matches!(w.verdict().await, Verdict::Allow { .. }));
    t.stop().await;
}

/// A bus that lets every user connect (a session bus never does), so that another uid can
/// call the service: it must be refused.
struct OpenBus {
    child: std::process::Child,
    address: String,
    _dir: tempfile::TempDir,
}

impl OpenBus {
    fn start() -> Self {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let socket = dir.path().join("bus");
        let config = dir.path().join("bus.conf");
        std::fs::write(
            &config,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#,
                socket.display()
            ),
        )
        .unwrap();
        let child = std::process::Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--nopidfile"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("dbus-daemon must be installed");
        atm_core::testing::wait_until_blocking("the open bus to accept connections", || {
            std::os::unix::net::UnixStream::connect(&socket).is_ok()
        });
        Self {
            child,
            address: format!("unix:path={}", socket.display()),
            _dir: dir,
        }
    }
}

impl Drop for OpenBus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `busctl` as `uid`: its exit status and stderr.
async fn busctl_as(uid: u32, address: &str, args: &[&str]) -> (bool, String) {
    let mut all = vec![
        format!("--reuid={uid}"),
        format!("--regid={uid}"),
        "--clear-groups".to_owned(),
        "busctl".to_owned(),
        format!("--address={address}"),
    ];
    all.extend(args.iter().map(|a| (*a).to_owned()));
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new("setpriv")
            .args(&all)
            .output()
            .expect("setpriv (util-linux) must be installed");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_user_can_neither_list_nor_answer() {
    // Without root (no second user), the check itself is unit-tested in `answer`.
    let Some(other) = atm_core::testing::other_user("another_user_can_neither_list_nor_answer")
    else {
        return;
    };
    let bus = OpenBus::start();
    let dir = tempfile::tempdir().unwrap();
    let sink = SinkUnderTest::start(dir.path(), &bus.address).await;
    let conn = connected(&bus.address).await;
    let src = source("req-u", 306);
    sink.apply(&src, started()).await;
    let awaiting = sink
        .harness
        .registry
        .apply_awaiting(EventEnvelope::now(src.clone(), permission("Bash", "make")))
        .await
        .unwrap();
    let (id, mut rx) = awaiting.wait.unwrap();
    let m = monitor(&conn).await;
    listed_answerable(&m, id.as_str()).await;

    let call = |method: &'static str, sig: &'static str, args: Vec<String>| {
        let mut v: Vec<String> = ["call", SERVICE, MANAGER, "io.github.atm.Monitor1", method]
            .map(str::to_owned)
            .into();
        if !sig.is_empty() {
            v.push(sig.to_owned());
        }
        v.extend(args);
        v
    };
    // The other user reaches the bus and the service (ListSessions is public)...
    let (ok, err) = busctl_as(other, &bus.address, &LIST_SESSIONS).await;
    assert!(ok, "the second user cannot reach the bus at all: {err}");
    // ...but not the requests.
    for args in [
        call("ListRequests", "", vec![]),
        call("Approve", "sb", vec![id.to_string(), "false".into()]),
        call(
            "Deny",
            "ssb",
            vec![id.to_string(), "no".into(), "false".into()],
        ),
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, err) = busctl_as(other, &bus.address, &args).await;
        assert!(!ok, "{args:?} succeeded for another user");
        assert!(err.contains(&format!("uid {other} ")), "{args:?}: {err}");
    }
    // Nothing changed: the request still waits, and its own user can answer it.
    assert!(rx.try_recv().is_err());
    assert!(RequestId::parse(id.as_str()).is_some());
    assert_eq!(m.approve(id.as_str(), false).await.unwrap(), "req-u");
    let end = tokio::time::timeout(Duration::from_secs(5), rx)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(end, RequestEnd::Decided(Verdict::Allow { .. })));
    sink.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_that_coalesces_session_changes_loses_no_request_signal() {
    // A queue of 1: session changes coalesce while the bus task is behind; request signals
    // have their own queue and must all arrive. (The sink's warnings show when it fails.)
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let registry = atm_core::RegistryConfig {
        cleanup_interval: Duration::ZERO,
        ..Default::default()
    };
    let t = OnPrivateBus::start_with(registry, |cfg| cfg.queue_capacity = 1).await;
    let mut rec = Recorder::new(&t.conn).await;
    burst(t.harness(), "rburst", 1400, 30, |_| false).await;
    // 8 sessions asked 10 times each, and each request ended (the turn went on).
    let (mut added, mut resolved) = (HashMap::new(), HashMap::new());
    while added.len() < 80 || resolved.len() < 80 {
        let s = rec.next().await;
        match s.body {
            SignalBody::RequestAdded([id, ..]) => *added.entry(id).or_insert(0) += 1,
            SignalBody::RequestResolved([id, ..]) => *resolved.entry(id).or_insert(0) += 1,
            _ => {}
        }
    }
    assert!(added.values().all(|n| *n == 1), "{added:?}");
    assert!(resolved.values().all(|n| *n == 1), "{resolved:?}");
    let mut a: Vec<_> = added.into_keys().collect();
    let mut r: Vec<_> = resolved.into_keys().collect();
    a.sort();
    r.sort();
    assert_eq!(a, r);
    t.stop().await;
}
