//! The real Claude Code (the version pinned in `tests/agents/versions`) in a real tmux pane,
//! hooked up by the real `atmctl setup claude`, against `atm-fake-model`: what atm says must be
//! what the screen shows.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use atm_tests::agents::{
    AgentLab, OwnSession, agent_binary, lab_daemon, project_dir, sessions_under,
};
use atm_tests::{Daemon, stdout_of};
use serde_json::{Value, json};

/// A key shaped like Anthropic's; the fake model accepts anything.
const API_KEY: &str =
    "sk-ant-api03-atm-real-agent-suite-0000000000000000000000000000000000000000000000";

struct Claude {
    daemon: Daemon,
    lab: AgentLab,
    project: PathBuf,
}

/// Claude Code's config dir as a user who finished onboarding and trusts `project` has it, with
/// `settings` as their own settings.json, then atm's hooks installed by `atmctl setup claude`.
fn configure(daemon: &Daemon, config_dir: &Path, project: &Path, settings: Value) {
    std::fs::create_dir_all(config_dir).unwrap();
    let onboarding = json!({
        "hasCompletedOnboarding": true,
        "theme": "dark",
        "customApiKeyResponses": {"approved": [&API_KEY[API_KEY.len() - 20..]], "rejected": []},
        "projects": {project.display().to_string(): {
            "hasTrustDialogAccepted": true, "hasCompletedProjectOnboarding": true, "allowedTools": []}},
    });
    std::fs::write(config_dir.join(".claude.json"), onboarding.to_string()).unwrap();
    std::fs::write(config_dir.join("settings.json"), settings.to_string()).unwrap();
    stdout_of(
        daemon
            .command("atmctl")
            .args(["setup", "claude"])
            .env("CLAUDE_CONFIG_DIR", config_dir),
    );
    let installed: Value =
        serde_json::from_str(&std::fs::read_to_string(config_dir.join("settings.json")).unwrap())
            .unwrap();
    assert_eq!(
        installed["permissions"], settings["permissions"],
        "setup kept the user's settings"
    );
}

/// Starts atmd, configures Claude Code with the user's `settings`, and runs it in a pane.
fn start_claude(settings: Value) -> Option<Claude> {
    start_claude_beside(settings, lab_daemon(None))
}

/// [`start_claude`] with this `daemon`.
fn start_claude_beside(settings: Value, daemon: Daemon) -> Option<Claude> {
    let claude = agent_binary("claude")?;
    let project = project_dir(&daemon, "project");
    let config_dir = daemon.dir.path().join("claude");
    configure(&daemon, &config_dir, &project, settings);
    let command = format!(
        "env ANTHROPIC_BASE_URL=\"$ATM_FAKE_MODEL_URL\" {}",
        atm_tests::agents::shell_quote(&claude.display().to_string())
    );
    let env = [
        ("CLAUDE_CONFIG_DIR", config_dir.display().to_string()),
        ("ANTHROPIC_API_KEY", API_KEY.to_owned()),
        ("DISABLE_AUTOUPDATER", "1".to_owned()),
        ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1".to_owned()),
        ("DISABLE_TELEMETRY", "1".to_owned()),
    ];
    let lab = AgentLab::start(&daemon, &project, &command, &env);
    lab.wait_screen("Claude Code's prompt", |s| {
        s.contains("Claude Code v") && s.contains('❯')
    });
    Some(Claude {
        daemon,
        lab,
        project,
    })
}

impl OwnSession for Claude {
    fn daemon(&self) -> &Daemon {
        &self.daemon
    }

    /// This test's one Claude session: proc-discovery also finds the Claude Codes of the tests
    /// running beside this one.
    fn own<'a>(&self, all: &'a [Value]) -> Option<&'a Value> {
        sessions_under(all, "claude", self.daemon.dir.path())
            .into_iter()
            .next()
    }
}

fn manual_mode() -> Value {
    // Claude Code 2.1.332 defaults to "auto" mode, whose safety check runs on Anthropic's
    // servers (not reachable through a gateway such as the fake model); "default" (shown as
    // "manual mode") asks before every command. `disableAutoMode` also stops Claude from
    // offering, at a random moment after start, to make auto mode the default: that dialog
    // would swallow the test's keystrokes.
    json!({"permissions": {"defaultMode": "default", "disableAutoMode": "disable"}})
}

#[test]
fn start_permission_approve_turn_end_and_exit_match_the_screen() {
    let Some(c) = start_claude(manual_mode()) else {
        return;
    };
    let first = c.wait_session("the session, with its pane and project", |s| {
        s["tmux_pane"] == c.lab.pane() && s["working_directory"] == c.project.display().to_string()
    });
    assert_eq!(first["pid"], c.lab.pid(), "{first:#}");
    // Waiting at its prompt is idle, not `starting`: Claude's session file says so, with the
    // time of that status, which is what lets it correct what no hook reports (see
    // `atm_core::state::hint`).
    c.wait_state("idle");
    let file = c
        .daemon
        .dir
        .path()
        .join(format!("claude/sessions/{}.json", c.lab.pid()));
    let file: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    eprintln!("Claude's session file at its prompt: {file}");
    assert_eq!(file["status"], "idle", "{file:#}");
    assert!(file["statusUpdatedAt"].is_u64(), "{file:#}");
    assert_eq!(file["pid"], c.lab.pid(), "{file:#}");

    let target = ask_to_touch(&c, "approved");
    let waiting = c.wait_state("needs_permission");
    assert_eq!(waiting["attention"]["tool"], "Bash", "{waiting:#}");
    assert!(
        waiting["attention"]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("touch")),
        "the command is shown: {waiting:#}"
    );
    assert!(
        waiting["attention"]["suggestions"][0]["label"].is_string(),
        "Claude's \"always allow\" rules are kept: {waiting:#}"
    );
    assert_eq!(
        waiting["first_prompt"]
            .as_str()
            .map(|p| p.starts_with("please RUN touch")),
        Some(true)
    );

    c.lab.press_until(&["1"], "the dialog closing", |s| {
        !s.contains("Do you want to proceed?")
    });
    c.lab.wait_screen("the model's answer after the tool", |s| {
        s.contains("FAKE-DONE")
    });
    assert!(target.exists(), "the approved command ran");
    let idle = c.wait_state("idle");
    assert!(idle["attention"].is_null(), "{idle:#}");

    c.lab.type_line("hello");
    c.lab
        .wait_screen("the model's reply", |s| s.contains("FAKE-REPLY"));
    c.wait_state("idle");

    c.lab.type_line("/exit");
    atm_core::testing::wait_until_blocking("Claude Code to exit", || c.lab.exited());
    let ps = || {
        String::from_utf8_lossy(
            &std::process::Command::new("ps")
                .args(["-eo", "pid,ppid,args"])
                .output()
                .unwrap()
                .stdout,
        )
        .into_owned()
    };
    let left = c
        .daemon
        .wait_sessions("the session to be gone (or not)", |_| true);
    if c.own(&left).is_some() {
        eprintln!("processes at exit:\n{}", ps());
    }
    c.daemon
        .wait_sessions("the session to be gone", |all| c.own(all).is_none());
}

#[test]
fn a_declined_permission_leaves_needs_permission_within_2s() {
    let Some(c) = start_claude(manual_mode()) else {
        return;
    };
    c.lab.type_line(&format!(
        "please RUN touch {}",
        c.project.join("declined").display()
    ));
    c.lab.wait_screen("the permission dialog", |s| {
        s.contains("Do you want to proceed?")
    });
    c.wait_state("needs_permission");
    c.lab.press_until(&["Escape"], "the interruption", |s| {
        s.contains("Interrupted")
    });
    c.wait_session("a state other than needs_permission", |s| {
        s["state"] != "needs_permission"
    });
}

#[test]
fn an_interrupted_turn_leaves_working_within_2s() {
    let Some(c) = start_claude(manual_mode()) else {
        return;
    };
    c.lab.type_line("be SLOW please");
    c.lab
        .wait_screen("Claude working", |s| s.contains("esc to interrupt"));
    c.wait_state("working");
    c.lab.press_until(&["Escape"], "Claude stopping", |s| {
        !s.contains("esc to interrupt")
    });
    c.wait_state("idle");
}

/// Polls atm, the fake model and the screen until the model is asked for `request` (Claude's
/// next step; the screen may then lag behind for a while). Until then, while the screen shows
/// `shown`, atm must say `state`. Returns how often that was checked.
fn hold_while_shown(c: &Claude, shown: &str, request: &str, state: &str) -> usize {
    let mut seen = 0;
    atm_core::testing::wait_until_blocking(&format!("the model asked for {request:?}"), || {
        let asked = c.lab.model_log().contains(request);
        let all = c
            .daemon
            .wait_sessions("the session", |all| c.own(all).is_some());
        let s = c.own(&all).cloned().unwrap();
        let screen = c.lab.screen();
        if screen.contains(shown) && !asked {
            assert_eq!(
                s["state"],
                state,
                "while the screen shows {shown:?}: {s:#}\n{screen}\n{}",
                c.lab.model_log()
            );
            seen += 1;
        }
        asked
    });
    seen
}

#[test]
fn a_background_subagent_keeps_the_session_working_until_claude_goes_on() {
    let Some(c) = start_claude(manual_mode()) else {
        return;
    };
    c.wait_state("idle");
    // Claude Code 2.1.332 runs subagents in the background by default; this one takes 5 s.
    c.lab.type_line("please AGENT take a NAP");
    c.lab.wait_screen("Claude waiting for its subagent", |s| {
        s.contains("Waiting for 1 background agent")
    });
    let waiting = c.wait_session("working in the background", |s| {
        s["activity_detail"] == "Background: agent Scripted subagent"
    });
    assert_eq!(waiting["state"], "working", "{waiting:#}");
    // The fake model's requests: 0 the prompt, 1 after the Agent call, 2 the subagent's (it
    // naps 5 s), 3 Claude going on by itself once the subagent is done.
    let seen = hold_while_shown(
        &c,
        "Waiting for 1 background agent",
        "request 3:",
        "working",
    );
    assert!(seen > 0);
    // When the subagent is done Claude goes on by itself (a `<task-notification>` prompt),
    // and only that turn's end is idle.
    let idle = c.wait_state("idle");
    assert!(idle["activity_detail"].is_null(), "{idle:#}");
    assert_eq!(idle["first_prompt"], "please AGENT take a NAP", "{idle:#}");
}

#[test]
fn a_background_shell_ends_the_turn_and_is_shown_until_it_exits() {
    let mut settings = manual_mode();
    settings["permissions"]["allow"] = json!(["Bash(sleep:*)"]);
    let Some(c) = start_claude(settings) else {
        return;
    };
    c.wait_state("idle");
    c.lab.type_line("please BG sleep 4");
    c.lab.wait_screen("the turn done, the shell running", |s| {
        s.contains("1 shell still running")
    });
    let idle = c.wait_session("idle with its background shell", |s| {
        s["activity_detail"] == "Background: shell sleep 4"
    });
    assert_eq!(idle["state"], "idle", "{idle:#}");
    // The shell exits; Claude reads its output by itself and ends that turn too.
    c.wait_session("idle, the shell gone", |s| {
        s["state"] == "idle" && s["activity_detail"].is_null()
    });
    assert_eq!(c.wait_state("idle")["first_prompt"], "please BG sleep 4");
}

#[test]
fn clear_starts_a_fresh_session_in_the_same_pane() {
    let Some(c) = start_claude(manual_mode()) else {
        return;
    };
    c.wait_state("idle");
    c.lab.type_line("hello");
    c.lab
        .wait_screen("the model's reply", |s| s.contains("FAKE-REPLY"));
    let before = c.wait_session("the answer's cost and context", |s| {
        s["state"] == "idle" && s["cost_usd"].as_f64() > Some(0.0) && s["context_tokens"] != 0
    });
    assert_eq!(before["first_prompt"], "hello", "{before:#}");
    c.lab.type_line("/clear");
    // A new conversation: Claude's new id, nothing of the old one, and idle at the prompt.
    let after = c.wait_session("the cleared session", |s| {
        s["id"] != before["id"] && s["state"] == "idle"
    });
    assert_eq!(after["pid"], before["pid"], "the same process: {after:#}");
    assert_eq!(after["tmux_pane"], c.lab.pane(), "{after:#}");
    assert!(after["first_prompt"].is_null(), "{after:#}");
    assert_eq!(after["cost_usd"], 0.0, "{after:#}");
    assert_eq!(after["context_tokens"], 0, "{after:#}");
    assert!(after["turn_id"].is_null(), "{after:#}");
    let all = c.daemon.wait_sessions("one session", |_| true);
    assert_eq!(
        sessions_under(&all, "claude", c.daemon.dir.path()).len(),
        1,
        "{all:#?}"
    );
}

/// Asks Claude to `touch` the project's file `name` and waits for its permission dialog;
/// returns the file's path.
fn ask_to_touch(c: &Claude, name: &str) -> PathBuf {
    let target = c.project.join(name);
    c.lab
        .type_line(&format!("please RUN touch {}", target.display()));
    c.lab.wait_screen("the permission dialog", |s| {
        s.contains("Do you want to proceed?")
    });
    target
}

/// `atmctl ARGS` against this test's daemon; its output, which must be a success.
fn atmctl(c: &Claude, args: &[&str]) -> String {
    stdout_of(c.daemon.command("atmctl").args(args))
}

/// The id of this test's pending request once atm-hook waits for its answer.
fn answerable_request(c: &Claude) -> String {
    let waiting = c.wait_session("an answerable request", |s| {
        s["attention"]["request"]["answerable"] == true
    });
    waiting["attention"]["request"]["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The ends of this test's session's requests, as its log keeps them.
fn request_fates(c: &Claude) -> Vec<Value> {
    let all = c.daemon.wait_sessions("the session", |_| true);
    c.own(&all)
        .and_then(|s| s.get("request_log"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

#[test]
fn a_permission_approved_from_atmctl_runs_the_tool_and_closes_the_dialog() {
    let Some(c) = start_claude(manual_mode()) else {
        return;
    };
    c.wait_state("idle");
    let target = ask_to_touch(&c, "approved-from-atmctl");
    let id = answerable_request(&c);
    let pending = atmctl(&c, &["pending"]);
    assert!(pending.contains(&id[..8]), "{pending}");
    atmctl(&c, &["approve", &id[..8]]);
    c.lab
        .wait_screen("the dialog closed and the tool run", |s| {
            !s.contains("Do you want to proceed?") && s.contains("FAKE-DONE")
        });
    assert!(target.exists(), "the command approved from atmctl ran");
    c.wait_state("idle");
    let fates = request_fates(&c);
    let answered = fates.iter().find(|r| r["id"] == id.as_str()).unwrap();
    assert_eq!(answered["fate"], "answered", "{fates:#?}");
    assert_eq!(answered["surface"]["name"], "atmctl", "{fates:#?}");
}

#[test]
fn a_permission_denied_from_atmctl_tells_the_model_why() {
    let Some(c) = start_claude(manual_mode()) else {
        return;
    };
    c.wait_state("idle");
    let target = ask_to_touch(&c, "denied-from-atmctl");
    let id = answerable_request(&c);
    atmctl(&c, &["deny", &id, "-m", "ATM-DENIED-use-another-file"]);
    c.lab.wait_screen("the dialog closed", |s| {
        !s.contains("Do you want to proceed?")
    });
    atm_core::testing::wait_until_blocking("the refusal to reach the model", || {
        c.lab.model_log().contains("ATM-DENIED-use-another-file")
    });
    assert!(!target.exists(), "a denied command does not run");
    c.wait_state("idle");
}

#[test]
fn answered_in_the_terminal_first_the_waiting_hook_steps_aside() {
    let Some(c) = start_claude(manual_mode()) else {
        return;
    };
    c.wait_state("idle");
    let target = ask_to_touch(&c, "approved-in-terminal");
    let id = answerable_request(&c);
    assert!(!waiting_hooks(c.lab.pid()).is_empty(), "the hook waits");
    c.lab.press_until(&["1"], "the dialog closing", |s| {
        !s.contains("Do you want to proceed?")
    });
    c.lab.wait_screen("the model's answer after the tool", |s| {
        s.contains("FAKE-DONE")
    });
    assert!(target.exists());
    c.wait_state("idle");
    // The request was withdrawn (nothing to answer through atm), and an answer now is refused.
    let fates = request_fates(&c);
    let ended = fates.iter().find(|r| r["id"] == id.as_str()).unwrap();
    assert_eq!(ended["fate"], "withdrawn", "{fates:#?}");
    let late = c
        .daemon
        .command("atmctl")
        .args(["approve", &id])
        .output()
        .unwrap();
    assert_eq!(late.status.code(), Some(1));
    // No atm-hook is left waiting.
    atm_core::testing::wait_until_blocking("no hook left waiting", || {
        waiting_hooks(c.lab.pid()).is_empty()
    });
}

/// The atm-hook processes running under the agent process `agent`.
fn waiting_hooks(agent: u32) -> Vec<String> {
    let ps = std::process::Command::new("pgrep")
        .args(["-f", &atm_tests::bin("atm-hook").display().to_string()])
        .output()
        .unwrap();
    String::from_utf8_lossy(&ps.stdout)
        .lines()
        .map(|p| p.trim().to_owned())
        .filter(|p| is_descendant(p, agent))
        .collect()
}

/// Whether process `pid` descends from `ancestor`.
fn is_descendant(pid: &str, ancestor: u32) -> bool {
    let mut pid: u32 = match pid.parse() {
        Ok(p) => p,
        Err(_) => return false,
    };
    for _ in 0..64 {
        if pid == ancestor {
            return true;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return false;
        };
        let Some(ppid) = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse().ok())
        else {
            return false;
        };
        if ppid <= 1 {
            return false;
        }
        pid = ppid;
    }
    false
}

#[test]
fn a_question_answered_from_atmctl_reaches_the_model() {
    let Some(c) = start_claude(manual_mode()) else {
        return;
    };
    c.wait_state("idle");
    c.lab
        .type_line("please ASK Which database should the app use?");
    c.lab.wait_screen("the question", |s| {
        s.contains("SQLite") && s.contains("Postgres")
    });
    let id = answerable_request(&c);
    let all = c.daemon.wait_sessions("the question", |_| true);
    let s = c.own(&all).unwrap();
    assert_eq!(s["state"], "needs_input", "{s:#}");
    assert_eq!(
        s["attention"]["questions"][0]["question"], "Which database should the app use?",
        "{s:#}"
    );
    atmctl(&c, &["answer", &id, "2"]);
    atm_core::testing::wait_until_blocking("the answer to reach the model", || {
        let log = c.lab.model_log();
        log.lines()
            .any(|l| l.contains("tool_result=true") && l.contains("SQLite"))
    });
    c.wait_state("idle");
}

#[test]
fn atmd_killed_while_claude_asks_leaves_the_dialog_working_and_nothing_denied() {
    let Some(mut c) = start_claude(manual_mode()) else {
        return;
    };
    c.wait_state("idle");
    let target = ask_to_touch(&c, "approved-after-atmd-died");
    answerable_request(&c);
    assert!(!waiting_hooks(c.lab.pid()).is_empty(), "the hook waits");
    c.daemon.kill9();
    // The waiting hook ends with no decision; the dialog stays, and answering it still works.
    atm_core::testing::wait_until_blocking("the waiting hook to exit", || {
        waiting_hooks(c.lab.pid()).is_empty()
    });
    let screen = c.lab.screen();
    assert!(screen.contains("Do you want to proceed?"), "{screen}");
    c.lab.press_until(&["1"], "the dialog closing", |s| {
        !s.contains("Do you want to proceed?")
    });
    c.lab.wait_screen("the model's answer after the tool", |s| {
        s.contains("FAKE-DONE")
    });
    assert!(target.exists(), "approved in the terminal after atmd died");
}

#[test]
fn a_permission_approved_over_dbus_runs_the_tool() {
    if agent_binary("claude").is_none() {
        return;
    }
    // A private session bus, and atmd's D-Bus sink on it beside the lab's plugins.
    let dir = tempfile::tempdir().unwrap();
    let address = format!("unix:path={}", dir.path().join("bus").display());
    let out = std::process::Command::new("dbus-daemon")
        .args(["--session", "--fork", "--print-pid=1", "--nopidfile"])
        .arg(format!("--address={address}"))
        .output()
        .expect("dbus-daemon is installed");
    assert!(out.status.success(), "{out:?}");
    let bus_pid: i32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let _bus = BusGuard(bus_pid);
    let daemon = atm_tests::Daemon::start(&atm_tests::basic_config(&format!(
        "[[adapter]]\ntype = \"proc-discovery\"\ninterval = \"500ms\"\n\n\
         [[sink]]\ntype = \"dbus\"\naddress = \"{address}\"\n"
    )));
    let Some(c) = start_claude_beside(manual_mode(), daemon) else {
        return;
    };
    c.wait_state("idle");
    let target = ask_to_touch(&c, "approved-over-dbus");
    let id = answerable_request(&c);
    let mut reply = None;
    atm_core::testing::wait_until_blocking("the D-Bus Approve", || {
        let out = std::process::Command::new("dbus-send")
            .arg(format!("--bus={address}"))
            .args([
                "--print-reply",
                "--dest=io.github.atm.Monitor",
                "/io/github/atm/Monitor1",
                "io.github.atm.Monitor1.Approve",
            ])
            .arg(format!("string:{id}"))
            .arg("boolean:false")
            .output()
            .unwrap();
        if !out.status.success() && reply.is_none() {
            eprintln!("dbus-send: {}", String::from_utf8_lossy(&out.stderr));
        }
        reply = Some(out.clone());
        out.status.success()
    });
    c.lab
        .wait_screen("the dialog closed and the tool run", |s| {
            !s.contains("Do you want to proceed?") && s.contains("FAKE-DONE")
        });
    assert!(
        target.exists(),
        "the command approved over D-Bus ran: {reply:?}"
    );
    let fates = request_fates(&c);
    let answered = fates.iter().find(|r| r["id"] == id.as_str()).unwrap();
    assert_eq!(answered["surface"]["name"], "dbus", "{fates:#?}");
}

/// Ends the test's own `dbus-daemon`, by its PID.
struct BusGuard(i32);

impl Drop for BusGuard {
    fn drop(&mut self) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.0) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }
}
