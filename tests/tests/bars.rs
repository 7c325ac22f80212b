//! Where people look, end to end: `atmctl status --follow` against the real atmd (a change shows
//! as a new line, a restart shows as "not running" and then the state again), and `atmctl focus`
//! moving real tmux clients attached to a real `tmux -L` server.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use atm_core::testing::{StdoutLines, TmuxDesk, TmuxServer, wait_until_blocking};
use atm_tests::{Daemon, FakeAgent, basic_config, hook};
use serde_json::{Value, json};

/// A running `atmctl status --follow` and the lines it printed so far. Killed on drop.
struct Follower {
    lines: StdoutLines,
    seen: Vec<String>,
}

impl Follower {
    fn start(d: &Daemon, format: &str) -> Follower {
        let lines = StdoutLines::spawn(
            d.command("atmctl")
                .args(["status", "--follow", "--format", format]),
        );
        Follower {
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a line that satisfies `pred` (10 s), returning it parsed.
    fn wait_line(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let Some(line) = self.lines.next_before(deadline) else {
                panic!("no line for {what}; lines so far: {:#?}", self.seen);
            };
            let v: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("not JSON as Waybar reads it ({e}): {line}"));
            self.seen.push(line);
            if pred(&v) {
                return v;
            }
        }
    }
}

#[test]
fn status_follow_prints_each_change_and_survives_an_atmd_restart() {
    let agent = FakeAgent::spawn();
    let pid = agent.pid();
    let mut d = Daemon::start_with_hooks(&basic_config(""));
    let mut bar = Follower::start(&d, "waybar");
    bar.wait_line("the empty start", |v| v["class"] == "none");

    d.send_hooks(&[hook(
        json!({"hook_event_name": "SessionStart", "session_id": "bar-1", "source": "startup", "cwd": "/tmp/app", "pid": pid}),
    )]);
    bar.wait_line("the new session", |v| {
        v["text"].as_str().is_some_and(|t| t.contains("1 idle"))
    });
    d.send_hooks(&[hook(
        json!({"hook_event_name": "PermissionRequest", "session_id": "bar-1", "tool_name": "Bash",
               "tool_input": {"command": "cargo publish"}, "pid": pid}),
    )]);
    let waiting = bar.wait_line("the permission request", |v| {
        v["class"] == "needs_permission"
    });
    assert_eq!(waiting["text"], "1 needs you · $0.00");
    assert!(
        waiting["tooltip"]
            .as_str()
            .is_some_and(|t| t.contains("bar-1") && t.contains("app")),
        "{waiting}"
    );

    d.kill9();
    bar.wait_line("atmd gone", |v| v["class"] == "not_running");
    d.spawn();
    d.wait_for_socket(&d.hooks_socket());
    bar.wait_line("atmd back", |v| v["class"] != "not_running");
    d.send_hooks(&[
        hook(json!({"hook_event_name": "SessionStart", "session_id": "bar-2", "source": "startup", "cwd": "/tmp/two", "pid": pid})),
        hook(json!({"hook_event_name": "UserPromptSubmit", "session_id": "bar-2", "prompt": "go", "pid": pid})),
    ]);
    bar.wait_line("a change after the restart", |v| {
        v["text"].as_str().is_some_and(|t| t.contains("1 working"))
    });
    // Only changes are printed: never the same line twice in a row.
    for pair in bar.seen.windows(2) {
        assert_ne!(pair[0], pair[1], "a repeated line in {:#?}", bar.seen);
    }
}

/// A [`TmuxDesk`] with two clients on session `0` (from the outer sessions `0` and `second`),
/// and what a test needs to read and move them.
struct Desk(TmuxDesk);

impl std::ops::Deref for Desk {
    type Target = TmuxDesk;
    fn deref(&self) -> &TmuxDesk {
        &self.0
    }
}

impl Desk {
    fn start(hint: &str) -> Desk {
        Desk(TmuxDesk::start(hint, &["second"]))
    }

    /// `name session pane` per attached client.
    fn clients(&self) -> Vec<String> {
        let out = self.inner.run(&[
            "list-clients",
            "-F",
            "#{client_name} #{session_name} #{pane_id} #{client_activity}",
        ]);
        out.lines().map(str::to_owned).collect()
    }

    /// Types into the client attached from the outer session `outer_session` until it is the
    /// most recently active one (tmux counts activity in whole seconds).
    fn make_most_recent(&self, outer_session: &str) {
        let tty = self
            .outer
            .run(&["display-message", "-p", "-t", outer_session, "#{pane_tty}"])
            .trim()
            .to_owned();
        wait_until_blocking("the client to be the most recently active", || {
            self.outer.run(&["send-keys", "-t", outer_session, "x"]);
            let clients = self.clients();
            let activity = |c: &String| {
                c.rsplit(' ')
                    .next()
                    .and_then(|a| a.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            let ours = clients
                .iter()
                .find(|c| c.split(' ').next() == Some(tty.as_str()))
                .map(activity);
            let others = clients
                .iter()
                .filter(|c| c.split(' ').next() != Some(tty.as_str()))
                .map(activity)
                .max();
            matches!((ours, others), (Some(a), Some(b)) if a > b)
        });
    }

    /// The session and pane of the client whose tty is the outer session's pane.
    fn client_of(&self, outer_session: &str) -> String {
        let tty = self
            .outer
            .run(&["display-message", "-p", "-t", outer_session, "#{pane_tty}"])
            .trim()
            .to_owned();
        let found = self
            .clients()
            .into_iter()
            .find(|c| c.split(' ').next() == Some(tty.as_str()));
        let line = found.unwrap_or_else(|| panic!("no client on {tty}: {:?}", self.clients()));
        line.split(' ')
            .skip(1)
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn focus(d: &Daemon, tmux: &TmuxServer, args: &[&str]) -> std::process::Output {
    d.command("atmctl")
        .arg("focus")
        .args(args)
        .args(["-L", &tmux.name])
        .env_remove("TMUX")
        .output()
        .unwrap()
}

#[test]
fn focus_takes_the_most_recent_client_to_the_agent_across_tmux_sessions() {
    // One process per agent: the registry keys a session by its process.
    let agents = [FakeAgent::spawn(), FakeAgent::spawn(), FakeAgent::spawn()];
    let [calm, first, nopane] = [0, 1, 2].map(|i| agents[i].pid());
    let desk = Desk::start("focus");
    let target = desk.pane("work:1.0");
    let later = desk.pane("work:0.0");
    let d = Daemon::start_with_hooks(&basic_config(""));

    // Nothing waits yet.
    d.send_hooks(&[hook(
        json!({"hook_event_name": "SessionStart", "session_id": "calm", "source": "startup", "cwd": "/tmp", "pid": calm, "tmux_pane": later}),
    )]);
    d.wait_sessions("the calm session", |s| !s.is_empty());
    let o = focus(&d, &desk.inner, &["--next-waiting"]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no agent waits for you"),
        "{o:?}"
    );

    d.send_hooks(&[
        hook(json!({"hook_event_name": "PermissionRequest", "session_id": "first", "tool_name": "Bash",
                    "tool_input": {"command": "make"}, "pid": first, "tmux_pane": target})),
        hook(json!({"hook_event_name": "SessionStart", "session_id": "nopane", "source": "startup", "cwd": "/tmp", "pid": nopane})),
    ]);
    d.wait_sessions("the waiting session", |s| {
        s.iter()
            .any(|x| x["id"] == "first" && x["state"] == "needs_permission")
    });

    desk.make_most_recent("=second:");
    let before = desk.client_of("=0:");
    let o = focus(&d, &desk.inner, &["--next-waiting"]);
    assert!(o.status.success(), "{o:?}");
    assert!(o.stdout.is_empty(), "focus is silent on success: {o:?}");
    assert_eq!(desk.client_of("=second:"), format!("work {target}"));
    assert_eq!(
        desk.client_of("=0:"),
        before,
        "the other client stays where it was"
    );

    // By id, to a pane in another window; the first client is now the most recent one.
    desk.make_most_recent("=0:");
    let o = focus(&d, &desk.inner, &["calm"]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(desk.client_of("=0:"), format!("work {later}"));

    // Clear errors: no pane, no tmux server, unknown session.
    let o = focus(&d, &desk.inner, &["nopane"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("has no tmux pane"),
        "{o:?}"
    );
    let absent = format!("atm-test-absent-{}", std::process::id());
    let o = d
        .command("atmctl")
        .args(["focus", "first", "-L", &absent])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("tmux is not running"),
        "{o:?}"
    );
    let o = focus(&d, &desk.inner, &["zzz"]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no session matches"),
        "{o:?}"
    );
}
