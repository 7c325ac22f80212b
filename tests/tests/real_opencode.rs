//! The real opencode (the version pinned in `tests/agents/versions`) in a real tmux pane, its
//! TUI started with `--port 0` (so it serves its event stream on loopback), against
//! `atm-fake-model`'s Chat Completions API (a custom provider through
//! `@ai-sdk/openai-compatible`): what atm says must be what the screen shows.
//!
//! atm finds the server by itself: proc-discovery sees the opencode process, the opencode
//! adapter reads its listening port from `/proc` and follows it. opencode listens in the lab's
//! network namespace, so atmd runs there too (`nsenter`), as it would beside opencode on a
//! machine without one.
//!
//! opencode is started only once the test says so (the pane waits for a file), so that a test
//! can start atmd before or after it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use atm_tests::agents::{AgentLab, agent_binary, shell_quote};
use atm_tests::{Daemon, basic_config};
use serde_json::{Value, json};

/// Where the model URL goes in opencode.json; the pane's command fills it in.
const URL_SLOT: &str = "@ATM_FAKE_MODEL_URL@";

/// opencode is heavy (a 180 MB runtime, several threads): one at a time on a 2-core machine.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

struct Opencode {
    lab: AgentLab,
    daemon: Daemon,
    project: PathBuf,
    _one_at_a_time: std::sync::MutexGuard<'static, ()>,
}

/// The user's config: the fake model as a custom OpenAI-compatible provider, priced (so there
/// is a cost to show), bash behind a permission prompt, nothing fetched from the network.
fn config(path: &Path) {
    let config = json!({
        "$schema": "https://opencode.ai/config.json",
        "provider": {"fake": {
            "npm": "@ai-sdk/openai-compatible", "name": "Fake",
            "options": {"baseURL": format!("{URL_SLOT}/v1"), "apiKey": "atm-fake-key"},
            "models": {"fake-chat": {"name": "Fake Chat", "cost": {"input": 3, "output": 15}}}}},
        "model": "fake/fake-chat",
        "small_model": "fake/fake-chat",
        "permission": {"bash": "ask"},
        "autoupdate": false,
        "share": "disabled"
    });
    std::fs::write(path, config.to_string()).unwrap();
}

/// Starts atmd (the opencode adapter as embedded by default, proc-discovery) and a pane that
/// runs opencode once [`Opencode::go`] is called; atmd is moved into the lab's network
/// namespace.
fn setup() -> Option<Opencode> {
    setup_running("--port 0")
}

/// [`setup`], the pane running `opencode <args>`.
fn setup_running(args: &str) -> Option<Opencode> {
    let bin = agent_binary("opencode")?;
    let guard = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut daemon = Daemon::start(&basic_config(
        "[[adapter]]\ntype = \"opencode\"\n\n[[adapter]]\ntype = \"proc-discovery\"\ninterval = \"500ms\"\n",
    ));
    let project = daemon.dir.path().join("project");
    std::fs::create_dir_all(&project).unwrap();
    let config_path = daemon.dir.path().join("opencode.json");
    config(&config_path);
    let go = daemon.dir.path().join("go");
    let command = format!(
        "/bin/sh -c {}",
        shell_quote(&format!(
            "while [ ! -e {go} ]; do sleep 0.05; done; \
             sed -i \"s#{URL_SLOT}#$ATM_FAKE_MODEL_URL#\" {cfg}; exec {bin} {args}",
            go = shell_quote(&go.display().to_string()),
            cfg = shell_quote(&config_path.display().to_string()),
            bin = shell_quote(&bin.display().to_string()),
        ))
    );
    let env = vec![
        ("OPENCODE_CONFIG", config_path.display().to_string()),
        ("OPENCODE_DISABLE_MODELS_FETCH", "1".to_owned()),
        ("OPENCODE_DISABLE_AUTOUPDATE", "1".to_owned()),
        ("OPENCODE_DISABLE_LSP_DOWNLOAD", "1".to_owned()),
        ("OPENCODE_DISABLE_SHARE", "1".to_owned()),
    ];
    let lab = AgentLab::start(&daemon, &project, &command, &env);
    daemon.kill9();
    daemon.wrapper = lab.netns_prefix();
    Some(Opencode {
        lab,
        daemon,
        project,
        _one_at_a_time: guard,
    })
}

/// opencode ignores the hangup of its pane when the lab's tmux server goes, and would live on
/// (orphaned, busy): it is killed first.
impl Drop for Opencode {
    fn drop(&mut self) {
        let pid = self.lab.pid();
        if let Some(pid) = i32::try_from(pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }
}

impl Opencode {
    /// Lets the pane start opencode and waits for its prompt.
    fn go(&self) {
        std::fs::write(self.daemon.dir.path().join("go"), "").unwrap();
        self.wait_prompt();
    }

    /// opencode's start is slow and CPU-bound (some 10 s of CPU before its prompt; 9-16 s on
    /// this 2-core machine with two busy loops beside it, up to 31 s with the real Claude
    /// suite running too): the lab's usual 30 s is not enough under load.
    fn wait_prompt(&self) {
        self.lab.wait_screen_within(
            atm_tests::agents::FIRST,
            Duration::from_secs(90),
            "opencode's prompt",
            |s| s.contains("Fake Chat") && s.contains("1.18"),
        );
    }

    fn start_atmd(&mut self) {
        self.daemon.spawn();
    }

    /// This test's opencode session: the one of the pane's process.
    fn own<'a>(&self, all: &'a [Value]) -> Option<&'a Value> {
        let pid = self.lab.pid();
        all.iter()
            .find(|s| s["harness"] == "opencode" && s["pid"] == pid)
    }

    fn wait_session(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let sessions = self
            .daemon
            .wait_sessions(what, |all| self.own(all).is_some_and(&pred));
        self.own(&sessions).cloned().unwrap()
    }

    fn wait_state(&self, state: &str) -> Value {
        self.wait_session(&format!("state {state}"), |s| s["state"] == state)
    }

    /// Waits until no session of this test's opencode is listed; returns how long it took.
    fn wait_gone(&self, since: Instant) -> Duration {
        let pid = self.lab.pid();
        self.daemon
            .wait_sessions("the opencode session gone", |all| {
                !all.iter()
                    .any(|s| s["harness"] == "opencode" && (s["pid"] == pid || s["pid"].is_null()))
            });
        since.elapsed()
    }
}

/// Waits until process `pid` has exited (gone or a zombie); returns when that was seen.
fn wait_exited(pid: u32) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rsplit_once(") ").map(|(_, rest)| rest.chars().next());
        if !matches!(state, Some(Some(c)) if c != 'Z' && c != 'X') {
            return Instant::now();
        }
        assert!(Instant::now() < deadline, "opencode {pid} never exited");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The `$N.NN spent` opencode's sidebar shows.
fn screen_cost(screen: &str) -> Option<String> {
    let at = screen.find(" spent")?;
    let start = screen[..at].rfind('$')?;
    Some(screen[start..at].to_owned())
}

fn cost_of(s: &Value) -> f64 {
    s["cost_usd"].as_f64().unwrap_or(0.0)
}

#[test]
fn start_tool_permission_approved_declined_turn_end_cost_and_ctrl_c_match_the_screen() {
    let Some(mut o) = setup() else { return };
    o.start_atmd();
    o.go();
    // Waiting at its prompt, before any session exists: idle, in its pane.
    let s = o.wait_state("idle");
    assert_eq!(s["tmux_pane"], o.lab.pane(), "{s:#}");

    o.lab.type_line("hello there");
    o.lab
        .wait_screen("the answer", |s| s.contains("FAKE-REPLY"));
    let s = o.wait_session("the real session, idle", |s| {
        s["state"] == "idle" && s["id"].as_str().is_some_and(|i| i.starts_with("ses_"))
    });
    assert_eq!(s["tmux_pane"], o.lab.pane(), "{s:#}");
    // The title opencode shows atop the session (its title request answered by the fake model).
    o.lab.wait_screen("the title", |s| s.contains("FAKE-TITLE"));
    o.wait_session("the title", |s| s["title"] == "FAKE-TITLE");
    assert_eq!(
        s["working_directory"].as_str(),
        Some(o.project.display().to_string().as_str()),
        "{s:#}"
    );

    // A tool behind a permission prompt, approved.
    o.lab.type_line("please RUN touch made-by-tool");
    o.lab.wait_screen("the permission prompt", |s| {
        s.contains("Permission required")
    });
    let s = o.wait_state("needs_permission");
    let text = s.to_string();
    assert!(text.contains("touch made-by-tool"), "{s:#}");
    o.lab
        .press_until(&["Enter"], "the tool's end", |s| s.contains("FAKE-DONE"));
    o.wait_state("idle");
    assert!(o.project.join("made-by-tool").exists());

    // Declined.
    o.lab.type_line("now RUN touch declined-file");
    o.lab.wait_screen("the permission prompt", |s| {
        s.contains("Permission required")
    });
    o.wait_state("needs_permission");
    o.lab.press_until(&["Escape"], "the prompt gone", |s| {
        !s.contains("Permission required")
    });
    o.wait_state("idle");
    assert!(!o.project.join("declined-file").exists());

    // The cost atm shows is what opencode's sidebar shows. The sidebar is drawn from the same
    // event stream atm reads, and on a loaded machine it lags: it showed the cost before the
    // last turn for ~250 ms after atm had the new one. So the two are read together until they
    // agree.
    let mut seen = (None, 0.0);
    atm_core::testing::wait_until_blocking("the cost opencode shows", || {
        let shown = screen_cost(&o.lab.screen());
        let all = o
            .daemon
            .wait_sessions("the session", |all| o.own(all).is_some());
        let cost = o.own(&all).map_or(0.0, cost_of);
        let agree = shown.as_deref() == Some(format!("${cost:.2}").as_str()) && cost > 0.0;
        if !agree && seen != (shown.clone(), cost) {
            eprintln!("the screen shows {shown:?}, atm {cost}");
        }
        seen = (shown, cost);
        agree
    });

    // Ctrl+C quits the TUI: its session goes with it.
    let pid = o.lab.pid();
    o.lab
        .press_until(&["C-c"], "opencode's exit", |_| o.lab.exited());
    let took = o.wait_gone(wait_exited(pid));
    assert!(
        took < Duration::from_secs(2),
        "gone {took:?} after the exit"
    );
}

#[test]
fn an_interrupt_ends_the_turn_and_a_restarted_opencode_is_followed_again() {
    let Some(mut o) = setup() else { return };
    o.start_atmd();
    o.go();
    o.wait_state("idle");
    o.lab.type_line("be SLOW please");
    // The screen first, then atm: opencode takes its time from Enter to work (3-5 s seen
    // under load, atm following within 0.1 s), longer than atm's wait on a busier machine.
    // opencode interrupts on a second Esc (the first arms it: "esc again to interrupt").
    o.lab
        .wait_screen("the working footer", |s| s.contains("interrupt"));
    o.wait_state("working");
    o.lab
        .press_until(&["Escape"], "the armed interrupt", |s| s.contains("again"));
    o.lab.press_until(&["Escape"], "the interrupted turn", |s| {
        s.contains("interrupted") && !s.contains("esc interrupt")
    });
    o.wait_state("idle");

    // The server is terminated (SIGTERM): its session goes at once, not at the silence expiry.
    // opencode takes its time to shut down (seen: up to ~1 s under load); atm is timed from
    // the process's exit.
    let signalled = Instant::now();
    let pid = rustix::process::Pid::from_raw(i32::try_from(o.lab.pid()).unwrap()).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let exited = wait_exited(o.lab.pid());
    let took = o.wait_gone(exited);
    eprintln!(
        "opencode exited {:?} after SIGTERM; atm removed it {took:?} after",
        exited - signalled
    );
    assert!(
        took < Duration::from_secs(2),
        "gone {took:?} after the exit"
    );

    // Started again (a new server on a new process): followed again.
    o.lab.respawn("agent");
    o.wait_prompt();
    o.wait_state("idle");
    o.lab.type_line("hello again");
    o.lab
        .wait_screen("the answer", |s| s.contains("FAKE-REPLY"));
    o.wait_session("the new session, idle with a cost", |s| {
        s["state"] == "idle" && cost_of(s) > 0.0
    });
}

#[test]
fn opencode_started_before_atmd_shows_its_state_on_connect() {
    let Some(mut o) = setup() else { return };
    o.go();
    o.lab.type_line("hello first");
    o.lab
        .wait_screen("the answer", |s| s.contains("FAKE-REPLY"));
    // atmd starts after the session's turn: it is listed, idle, with its cost.
    o.start_atmd();
    o.wait_session("the earlier session, idle with its cost", |s| {
        s["state"] == "idle" && cost_of(s) > 0.0
    });
    // A permission asked while atmd is down is what atm shows once it is back.
    o.daemon.kill9();
    o.lab.type_line("please RUN touch later-file");
    o.lab.wait_screen("the permission prompt", |s| {
        s.contains("Permission required")
    });
    o.start_atmd();
    let s = o.wait_state("needs_permission");
    assert!(s.to_string().contains("touch later-file"), "{s:#}");
    o.lab
        .press_until(&["Enter"], "the tool's end", |s| s.contains("FAKE-DONE"));
    o.wait_state("idle");
}

#[test]
fn permissions_answered_from_atmctl_reach_opencode_over_its_api() {
    let Some(mut o) = setup() else { return };
    o.start_atmd();
    o.go();
    o.wait_state("idle");
    let atmctl = |args: &[&str]| {
        let out = o.daemon.command("atmctl").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "atmctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let request = |what: &str| {
        let s = o.wait_session(what, |s| s["attention"]["request"]["answerable"] == true);
        s["attention"]["request"]["id"].as_str().unwrap().to_owned()
    };

    // Allowed once, from atmctl: the prompt closes and the tool runs.
    o.lab.type_line("please RUN touch approved-by-atm");
    o.lab.wait_screen("the permission prompt", |s| {
        s.contains("Permission required")
    });
    let id = request("an answerable permission");
    atmctl(&["approve", &id]);
    o.lab
        .wait_screen("the tool's end", |s| s.contains("FAKE-DONE"));
    assert!(o.project.join("approved-by-atm").exists());
    let s = o.wait_state("idle");
    assert!(
        s["request_log"].as_array().is_some_and(|l| l
            .iter()
            .any(|r| r["id"] == id.as_str() && r["fate"] == "answered")),
        "{s:#}"
    );

    // Rejected from atmctl: the prompt closes and the command does not run.
    o.lab.type_line("now RUN touch rejected-by-atm");
    o.lab.wait_screen("the permission prompt", |s| {
        s.contains("Permission required")
    });
    let id = request("the second permission");
    atmctl(&["deny", &id, "-m", "not this one"]);
    o.lab
        .wait_screen("the prompt gone", |s| !s.contains("Permission required"));
    o.wait_state("idle");
    assert!(!o.project.join("rejected-by-atm").exists());
}

/// The port a headless `opencode serve` says it listens on.
fn listening_port(screen: &str) -> Option<u16> {
    let at = screen.find("listening on http://127.0.0.1:")?;
    let rest = &screen[at + "listening on http://127.0.0.1:".len()..];
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

#[test]
fn a_headless_opencode_serve_is_found_and_followed_through_a_permission() {
    let Some(mut o) = setup_running("serve --port 0 --hostname 127.0.0.1") else {
        return;
    };
    o.start_atmd();
    std::fs::write(o.daemon.dir.path().join("go"), "").unwrap();
    let screen = o.lab.wait_screen_within(
        atm_tests::agents::FIRST,
        Duration::from_secs(90),
        "the server listening",
        |s| listening_port(s).is_some(),
    );
    let port = listening_port(&screen).unwrap();
    // A client of the server's API (a web UI, an editor plugin), run in the lab's network
    // namespace where the server listens.
    let api = |method: &str, path: &str, body: &Value| -> Value {
        let mut argv = o.lab.netns_prefix();
        argv.push("curl".to_owned());
        let out = std::process::Command::new(&argv[0])
            .args(&argv[1..])
            .args(["-sS", "--max-time", "20", "-X", method])
            .args([
                "-H",
                "content-type: application/json",
                "-d",
                &body.to_string(),
            ])
            .arg(format!("http://127.0.0.1:{port}{path}"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{method} {path}: {out:?}");
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    };
    let session = api("POST", "/session", &json!({"title": "headless"}));
    let id = session["id"].as_str().unwrap().to_owned();
    // The server's sessions are the server's API clients', not one process's: found by id.
    let wait = |what: &str, pred: &dyn Fn(&Value) -> bool| -> Value {
        let all = o.daemon.wait_sessions(what, |all| {
            all.iter().any(|s| s["id"] == id.as_str() && pred(s))
        });
        all.into_iter().find(|s| s["id"] == id.as_str()).unwrap()
    };
    let s = wait("the API's session, idle", &|s| s["state"] == "idle");
    assert_eq!(s["title"], "headless", "{s:#}");
    assert_eq!(
        s["working_directory"].as_str(),
        Some(o.project.display().to_string().as_str()),
        "{s:#}"
    );
    assert!(
        s["tmux_pane"].is_null() || s["tmux_pane"] == o.lab.pane(),
        "{s:#}"
    );

    // A prompt through the API asks for a permission; atm shows it and answers it.
    let prompt = json!({
        "parts": [{"type": "text", "text": "please RUN touch headless-file"}],
        "model": {"providerID": "fake", "modelID": "fake-chat"}
    });
    api("POST", &format!("/session/{id}/prompt_async"), &prompt);
    let waiting = wait("the permission", &|s| {
        s["state"] == "needs_permission" && s["attention"]["request"]["answerable"] == true
    });
    assert!(
        waiting.to_string().contains("touch headless-file"),
        "{waiting:#}"
    );
    let rid = waiting["attention"]["request"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = o
        .daemon
        .command("atmctl")
        .args(["approve", &rid])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    wait("idle after the tool", &|s| s["state"] == "idle");
    assert!(o.project.join("headless-file").exists());
    wait("with its cost", &|s| cost_of(s) > 0.0);

    // The server is terminated: its session goes at once.
    let pid = o.lab.pid();
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(i32::try_from(pid).unwrap()).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let took = o.wait_gone(wait_exited(pid));
    assert!(
        took < Duration::from_secs(2),
        "gone {took:?} after the exit"
    );
}
