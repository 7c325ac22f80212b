//! The real Gemini CLI (the version pinned in `tests/agents/versions`) in a real tmux pane,
//! hooked up by the real `atmctl setup gemini`, against `atm-fake-model`'s Gemini API
//! (`GOOGLE_GEMINI_BASE_URL`, an API key): what atm says must be what the screen shows.
//!
//! Gemini asks before every shell command (its default approval mode), so the scripted
//! `RUN <command>` always opens its "Allow execution" dialog.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use atm_tests::agents::{
    AgentLab, OwnSession, RecordingFile, agent_binary, lab_daemon, project_dir, record_if_asked,
    shell_quote,
};
use atm_tests::{Daemon, stdout_of};
use serde_json::{Value, json};

/// The model the user picked (Gemini's `model.name` setting).
const MODEL: &str = "gemini-2.5-flash";

/// Gemini's approval dialog.
const DIALOG: &str = "Allow execution";

struct Gemini {
    daemon: Daemon,
    lab: AgentLab,
    project: PathBuf,
    /// With `ATM_GEMINI_RECORD=<dir>`: what atm-hook sent, written to `<dir>/<test>.jsonl`.
    _recording: Option<RecordingFile>,
}

impl Drop for Gemini {
    fn drop(&mut self) {
        // Gemini outlives its terminal: when the tmux server goes it keeps running, orphaned.
        for pid in process_tree(self.lab.pid()) {
            if let Some(pid) = i32::try_from(pid)
                .ok()
                .and_then(rustix::process::Pid::from_raw)
            {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
    }
}

/// Starts atmd (the gemini adapter and proc-discovery), writes the user's Gemini settings (an
/// API key as the sign-in, the model, no folder-trust question, no telemetry or update
/// checks), runs `atmctl setup gemini` and starts Gemini in a pane, up to its prompt. `test`
/// names the recording, if any.
fn start_gemini(test: &str) -> Option<Gemini> {
    let gemini = agent_binary("gemini")?;
    let daemon = lab_daemon(Some("gemini"));
    let project = project_dir(&daemon, "project");
    let settings_dir = daemon.dir.path().join("home/.gemini");
    std::fs::create_dir_all(&settings_dir).unwrap();
    let settings = json!({
        "security": {"auth": {"selectedType": "gemini-api-key"}, "folderTrust": {"enabled": false}},
        "general": {"disableAutoUpdate": true, "disableUpdateNag": true},
        "privacy": {"usageStatisticsEnabled": false},
        "telemetry": {"enabled": false},
        "ui": {"theme": "Default"},
        "model": {"name": MODEL},
    });
    std::fs::write(settings_dir.join("settings.json"), settings.to_string()).unwrap();
    let said = stdout_of(daemon.command("atmctl").args(["setup", "gemini"]));
    assert!(said.contains("Gemini CLI hook events"), "{said}");
    let command = format!(
        "/bin/sh -c {}",
        shell_quote(&format!(
            "GOOGLE_GEMINI_BASE_URL=\"$ATM_FAKE_MODEL_URL\" exec {}",
            shell_quote(&gemini.display().to_string())
        ))
    );
    // atm-hook gives the daemon 50 ms per event and then drops it (never delaying Gemini). On
    // this suite's machine (2 cores shared by several suites, load 15+) that dropped every hook
    // of a turn now and then; the suite is about what atm makes of the events, so it allows 1 s.
    let mut env = vec![
        ("GEMINI_API_KEY", "atm-fake-gemini-key".to_owned()),
        ("ATM_HOOK_BUDGET_MS", "1000".to_owned()),
    ];
    let recording = record_if_asked(
        &daemon,
        "ATM_GEMINI_RECORD",
        test,
        "ATM_HOOKS_SOCKET",
        &mut env,
    );
    let lab = AgentLab::start(&daemon, &project, &command, &env);
    lab.wait_screen("Gemini's prompt", |s| {
        s.contains("Type your message") && s.contains(MODEL)
    });
    Some(Gemini {
        daemon,
        lab,
        project,
        _recording: recording,
    })
}

impl OwnSession for Gemini {
    fn daemon(&self) -> &Daemon {
        &self.daemon
    }

    /// This test's Gemini session: the one whose process is the pane's or one of its
    /// descendants (Gemini re-launches itself as a child node process, which is the one its
    /// hooks name); proc-discovery also finds the Geminis of the tests beside this one.
    /// `None` while there are two (a duplicate is never what the screen shows).
    fn own<'a>(&self, all: &'a [Value]) -> Option<&'a Value> {
        let pids = process_tree(self.lab.pid());
        let mine: Vec<_> = all
            .iter()
            .filter(|s| s["harness"] == "gemini")
            .filter(|s| s["pid"].as_u64().is_some_and(|p| pids.contains(&p)))
            .collect();
        (mine.len() == 1).then(|| mine[0])
    }
}

impl Gemini {
    /// Types `text` and sends it. Gemini drops an Enter now and then (just after a cancelled
    /// turn, or while it completes a `/command`), so Enter is pressed again until the input box
    /// is empty, as a user would. (`text` must not be on the screen already.)
    fn submit(&self, text: &str) {
        self.lab.type_line(text);
        // Taken: the input box is empty again (the text went to the history), or Gemini works,
        // asks, or has exited.
        let taken = |s: &str| {
            s.contains("Type your message")
                || s.contains(DIALOG)
                || s.contains("esc to cancel")
                || self.lab.exited()
        };
        let deadline = Instant::now() + Duration::from_millis(1500);
        while Instant::now() < deadline {
            if taken(&self.lab.screen()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("Gemini did not take the Enter after {text:?}; pressing it again");
        self.lab
            .press_until(&["Enter"], "the input box taking the text", taken);
    }

    /// Types `text` and waits for the approval dialog; returns atm's session once it shows the
    /// permission with `command`.
    fn ask(&self, text: &str, command: &str) -> Value {
        self.submit(text);
        self.lab
            .wait_screen("the approval dialog", |s| s.contains(DIALOG));
        // The screen may show the dialog before the `Notification` hook lands (a wait with a
        // reason only); the hook then names the tool.
        let asking = self.wait_session("needs_permission with the hook's tool", |s| {
            s["state"] == "needs_permission" && !s["attention"]["tool"].is_null()
        });
        assert_eq!(
            asking["attention"]["tool"],
            "run_shell_command",
            "{asking:#}\natmd log:\n{}",
            self.daemon.log()
        );
        assert!(asking.to_string().contains(command), "{asking:#}");
        asking
    }

    /// Every state atm showed for this session, sampled every 25 ms, while `f` runs.
    fn states_during(&self, f: impl FnOnce()) -> Vec<Value> {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let query = self.daemon.query_socket();
        let pids = process_tree(self.lab.pid());
        let watcher = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut c = atm_tests::Client::connect(&query);
                let mut seen = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    seen.extend(
                        c.list()
                            .into_iter()
                            .filter(|s| s["pid"].as_u64().is_some_and(|p| pids.contains(&p))),
                    );
                    std::thread::sleep(Duration::from_millis(25));
                }
                seen
            })
        };
        f();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        watcher.join().unwrap()
    }
}

#[test]
fn start_approved_tool_turn_end_model_and_quit_match_the_screen() {
    let Some(g) = start_gemini("approved") else {
        return;
    };
    // At its prompt: idle, with pane and project.
    let first = g.wait_session("the session, idle, with its pane and cwd", |s| {
        s["state"] == "idle"
            && s["id"].as_str().is_some_and(|i| !i.starts_with("pending-"))
            && s["tmux_pane"] == g.lab.pane()
            && s["working_directory"] == g.project.display().to_string()
    });
    eprintln!("gemini at its prompt: {first:#}");
    let id = first["id"].as_str().unwrap().to_owned();
    assert!(!id.starts_with("pending-"), "{first:#}");

    // A command asked about and approved, then running: working on the shell tool with its
    // command; then the model's answer; then idle, with the model known. Never "Compacting":
    // Gemini asks its PreCompress hook before every request but compresses nothing here.
    let ran = g.project.join("ran");
    let command = format!("sleep 3 && touch {}", ran.display());
    let seen = g.states_during(|| {
        g.ask(&format!("please RUN {command}"), &command);
        g.lab
            .press_until(&["1"], "the dialog closing", |s| !s.contains(DIALOG));
        let working = g.wait_session("working on the shell tool", |s| {
            s["state"] == "working" && s.to_string().contains("sleep 3")
        });
        assert_eq!(working["id"], id.as_str(), "{working:#}");
        assert!(
            !ran.exists(),
            "atm saw the tool while it ran: {working:#}\natmd log:\n{}",
            g.daemon.log()
        );
        g.lab
            .wait_screen("the answer after the tool", |s| s.contains("FAKE-DONE"));
        assert!(ran.exists());
        let idle = g.wait_session("idle with the model", |s| {
            s["state"] == "idle" && s.to_string().contains(MODEL)
        });
        assert!(idle["attention"].is_null(), "{idle:#}");
    });
    let compacting: Vec<_> = seen
        .iter()
        .filter(|s| s.to_string().contains("Compacting"))
        .collect();
    assert!(
        compacting.is_empty(),
        "nothing was compressed: {compacting:#?}"
    );

    // A plain answer: working, then idle.
    g.submit("hello");
    g.lab
        .wait_screen("the model's reply", |s| s.contains("FAKE-REPLY"));
    g.wait_state("idle");

    // /quit: gone.
    let pids = process_tree(g.lab.pid());
    let quit_at = Instant::now();
    g.submit("/quit");
    // A loaded Gemini may take the Enter for picking `/quit` in its command menu: pressed
    // again while the command still stands in the input box, as a person would.
    for _ in 0..3 {
        let deadline = Instant::now() + Duration::from_secs(3);
        while !g.lab.exited() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let screen = g.lab.screen();
        if g.lab.exited()
            || !screen
                .lines()
                .any(|l| l.contains("> ") && l.contains("/quit"))
        {
            break;
        }
        eprintln!("/quit still in the input box; pressing Enter again");
        g.lab.keys(&["Enter"]);
    }
    atm_core::testing::wait_until_blocking("Gemini to exit", || g.lab.exited());
    eprintln!("exited {:?} after /quit", quit_at.elapsed());
    g.daemon.wait_sessions("the session gone", |all| {
        !all.iter()
            .any(|s| s["pid"].as_u64().is_some_and(|p| pids.contains(&p)))
    });
    eprintln!("gone {:?} after /quit", quit_at.elapsed());
}

#[test]
fn declined_esc_at_the_dialog_and_interrupt_leave_the_wait() {
    let Some(g) = start_gemini("declined") else {
        return;
    };
    // Idle under Gemini's own id: its SessionStart hook fired, so it has finished starting (a
    // prompt typed before is queued, and a declined queued prompt comes back into the input).
    g.wait_session("idle under Gemini's id", |s| {
        s["state"] == "idle" && s["id"].as_str().is_some_and(|i| !i.starts_with("pending-"))
    });

    // Declined ("No, suggest changes"): the command does not run, the wait ends.
    let kept = g.project.join("kept");
    let command = format!("touch {}", kept.display());
    g.ask(&format!("please RUN {command}"), &command);
    g.lab
        .press_until(&["3"], "the dialog closing", |s| !s.contains(DIALOG));
    let after = g.wait_session("a state other than needs_permission", |s| {
        s["state"] != "needs_permission"
    });
    eprintln!("after declining: {after:#}\nscreen:\n{}", g.lab.screen());
    g.wait_state("idle");
    assert!(!kept.exists(), "the declined command did not run");

    // "No, suggest changes" may put the prompt back into the input box: cleared (Ctrl+U), as a
    // user would before typing anew.
    g.lab
        .wait_screen("the turn cancelled", |s| s.contains("Request cancelled"));
    g.lab.press_until(&["C-u"], "an empty input box", |s| {
        s.contains("Type your message")
    });
    // Another command: the typed text must not be on the screen already (the history shows the
    // first one), or the Enter would be sent before the typing is shown.
    let kept_too = g.project.join("kept-too");
    let command = format!("touch {}", kept_too.display());
    g.ask(&format!("now RUN {command}"), &command);

    // Esc at the dialog: no hook fires; atm leaves the wait within 2 s all the same.
    g.lab
        .press_until(&["Escape"], "the dialog closing", |s| !s.contains(DIALOG));
    let closed = Instant::now();
    let after = g.wait_session("a state other than needs_permission", |s| {
        s["state"] != "needs_permission"
    });
    eprintln!(
        "{:?} after Esc: {after:#}\nscreen:\n{}",
        closed.elapsed(),
        g.lab.screen()
    );
    assert!(
        closed.elapsed() < Duration::from_secs(2),
        "{:?}\natmd log:\n{}",
        closed.elapsed(),
        g.daemon.log()
    );
    g.wait_state("idle");
    assert!(!kept_too.exists(), "the cancelled command did not run");

    // Esc while the model works: idle.
    g.submit("be SLOW please");
    g.wait_state("working");
    g.lab.press_until(&["Escape"], "Gemini stopping", |s| {
        s.contains("Request cancelled")
    });
    let stopped = Instant::now();
    g.wait_state("idle");
    eprintln!("{:?} after the interrupt: idle", stopped.elapsed());
    assert!(
        stopped.elapsed() < Duration::from_secs(2),
        "{:?}",
        stopped.elapsed()
    );
}

/// `pid` and its descendants (from `/proc/<pid>/task/*/children`).
fn process_tree(pid: u32) -> Vec<u64> {
    let mut out = vec![u64::from(pid)];
    let mut i = 0;
    while i < out.len() {
        let tasks = std::fs::read_dir(format!("/proc/{}/task", out[i]));
        for task in tasks.into_iter().flatten().flatten() {
            let children =
                std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            out.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<u64>().ok()),
            );
        }
        i += 1;
    }
    out
}
