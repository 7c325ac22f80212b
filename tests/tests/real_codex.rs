//! The real Codex CLI (the version pinned in `tests/agents/versions`) in real tmux panes,
//! hooked up by the real `atmctl setup codex`, against `atm-fake-model`'s OpenAI Responses API
//! (a custom model provider in the test's `$CODEX_HOME`): what atm says must be what the
//! screen shows.
//!
//! Codex runs as a user gets it: with its background daemon (`codex app-server
//! --managed-daemon`, its default), which runs the hooks and `notify` for every TUI, and with
//! its "Hooks need review" dialog at the first start, answered "Trust all and continue".
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use atm_tests::agents::{
    AgentLab, agent_binary, interrupt_a_slow_turn, lab_daemon, project_dir, session_of,
    sessions_under, shell_quote, stop_codex_daemon,
};
use atm_tests::{Daemon, stdout_of};
use serde_json::Value;

/// Where the model URL goes in config.toml; the pane's command fills it in once the fake
/// model listens (Codex runs its daemon only without `-c` overrides, so the URL cannot be
/// passed on the command line).
const URL_SLOT: &str = "@ATM_FAKE_MODEL_URL@";

/// What Codex 0.171 prints when it cannot take over the terminal at start (seen on a loaded
/// 2-core machine with several Codex and Claude Code starting at once).
const START_FAILURE: &str = "timed out discarding buffered terminal input";

struct Codex {
    daemon: Daemon,
    lab: AgentLab,
    home: PathBuf,
    /// Held for the test's whole run (dropped last, after the daemon is stopped).
    _one_at_a_time: std::sync::MutexGuard<'static, ()>,
}

/// The Codex tests run one at a time: four Codex TUIs, each with its own app-server daemon,
/// starting at once on 2 cores made Codex fail to take over its terminal
/// ([`START_FAILURE`]) in one CI run out of a few.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Attempts at starting Codex in a pane before a test gives up.
const START_ATTEMPTS: usize = 3;

impl Drop for Codex {
    fn drop(&mut self) {
        stop_codex_daemon(&self.home);
    }
}

/// The user's own config.toml: the fake model as a custom provider, asking before commands
/// that leave the sandbox, and `projects` trusted (Codex's folder-trust question answered).
fn user_config(projects: &[&Path]) -> String {
    let mut c = format!(
        "model = \"gpt-fake\"\nmodel_provider = \"fake\"\napproval_policy = \"on-request\"\n\
         sandbox_mode = \"workspace-write\"\n\n[model_providers.fake]\nname = \"atm fake model\"\n\
         base_url = \"{URL_SLOT}/v1\"\nenv_key = \"ATM_FAKE_OPENAI_KEY\"\nwire_api = \"responses\"\n"
    );
    for p in projects {
        c.push_str(&format!(
            "\n[projects.\"{}\"]\ntrust_level = \"trusted\"\n",
            p.display()
        ));
    }
    c
}

/// Starts atmd, writes the user's Codex config for `projects`, runs `atmctl setup codex` and
/// starts Codex in a pane in the first project, through the hook-trust dialog to its prompt.
fn start_codex(projects: &[&str]) -> Option<(Codex, Vec<PathBuf>)> {
    start_codex_answering(projects, "2")
}

/// [`start_codex`], answering the hook-trust dialog with `answer`.
fn start_codex_answering(projects: &[&str], answer: &str) -> Option<(Codex, Vec<PathBuf>)> {
    let codex = agent_binary("codex")?;
    let one_at_a_time = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let daemon = lab_daemon(Some("codex"));
    let dirs: Vec<PathBuf> = projects.iter().map(|p| project_dir(&daemon, p)).collect();
    let home = daemon.dir.path().join("codex");
    std::fs::create_dir_all(&home).unwrap();
    let refs: Vec<&Path> = dirs.iter().map(PathBuf::as_path).collect();
    let config = user_config(&refs);
    std::fs::write(home.join("config.toml"), &config).unwrap();
    let said = stdout_of(
        daemon
            .command("atmctl")
            .args(["setup", "codex"])
            .env("CODEX_HOME", &home),
    );
    assert!(
        said.contains("Trust all and continue"),
        "setup tells about Codex's trust dialog: {said}"
    );
    let installed = std::fs::read_to_string(home.join("config.toml")).unwrap();
    assert!(installed.starts_with(&config[..40]), "{installed}");
    assert!(
        installed.contains("features.hooks = true"),
        "the current key: {installed}"
    );
    let command = format!(
        "/bin/sh -c {}",
        shell_quote(&format!(
            "grep -q '{URL_SLOT}' \"$CODEX_HOME/config.toml\" && \
             sed -i \"s#{URL_SLOT}#$ATM_FAKE_MODEL_URL#\" \"$CODEX_HOME/config.toml\"; exec {}",
            shell_quote(&codex.display().to_string())
        ))
    );
    // One Codex home, one daemon (its socket is `/tmp/codex-daemon-<uid>/<hash of the home>`).
    let env = [
        ("CODEX_HOME", home.display().to_string()),
        ("ATM_FAKE_OPENAI_KEY", "sk-atm-fake-model".to_owned()),
    ];
    let lab = AgentLab::start(&daemon, &dirs[0], &command, &env);
    let c = Codex {
        daemon,
        lab,
        home,
        _one_at_a_time: one_at_a_time,
    };
    c.answer_trust_dialog("agent", Some(answer));
    Some((c, dirs))
}

impl Codex {
    /// Says `hellos` in the first pane and in `second` (whose TUIs run in `dirs`), and waits
    /// until atm shows two idle sessions, one per pane, each with its TUI's PID and directory.
    fn two_idle_sessions(&self, second: &str, dirs: [&Path; 2], hellos: [&str; 2]) {
        self.lab.type_line(hellos[0]);
        self.lab
            .wait_screen("the first reply", |s| s.contains("FAKE-REPLY"));
        self.lab.type_line_in(second, hellos[1]);
        self.lab
            .wait_screen_in(second, "the second reply", |s| s.contains("FAKE-REPLY"));
        let first = self.lab.pane();
        let both = self.sessions("two idle sessions, one per pane", |s| {
            s.len() == 2
                && s.iter().all(|s| s["state"] == "idle")
                && s.iter().any(|s| s["tmux_pane"] == first.as_str())
                && s.iter().any(|s| s["tmux_pane"] == second)
        });
        for (pane, pid, dir) in [
            (first.as_str(), self.tui_pid("agent"), dirs[0]),
            (second, self.tui_pid(second), dirs[1]),
        ] {
            let s = both
                .iter()
                .find(|s| s["tmux_pane"] == pane)
                .unwrap_or_else(|| panic!("no session in pane {pane}: {both:#?}"));
            assert_eq!(s["pid"], pid, "{s:#}");
            assert_eq!(s["working_directory"], dir.display().to_string(), "{s:#}");
        }
    }

    /// Answers the hook-trust dialog (which Codex shows, over its prompt, until the hooks are
    /// trusted) with "Trust all and continue", and waits for the prompt.
    fn through_trust_dialog(&self, pane: &str, dialog: bool) {
        self.answer_trust_dialog(pane, dialog.then_some("2"));
    }

    /// Answers the hook-trust dialog with choice `answer` (`"2"`: trust all, `"3"`: continue
    /// without trusting), or expects none, and waits for the prompt.
    fn answer_trust_dialog(&self, pane: &str, answer: Option<&str>) {
        // On a loaded machine Codex 0.171 sometimes fails to take over the terminal and exits
        // ("timed out discarding buffered terminal input"), at start or just after the dialog;
        // a user starts it again.
        for attempt in 1..=START_ATTEMPTS {
            match self.try_answer_trust_dialog(pane, answer, attempt == 1) {
                Ok(()) => return,
                Err(_) if attempt < START_ATTEMPTS => {
                    eprintln!(
                        "Codex failed to start ({START_FAILURE}), attempt {attempt}; starting it again"
                    );
                    self.lab.respawn(pane);
                }
                Err(screen) => panic!(
                    "Codex failed to start {START_ATTEMPTS} times ({START_FAILURE}); screen:\n{screen}"
                ),
            }
        }
    }

    /// One start of Codex in `pane` up to its prompt; the screen when Codex failed to start.
    /// The dialog must show on the first attempt; after a restart it shows again only if the
    /// hooks were not trusted.
    fn try_answer_trust_dialog(
        &self,
        pane: &str,
        answer: Option<&str>,
        first_attempt: bool,
    ) -> Result<(), String> {
        let failed = |s: &str| s.contains(START_FAILURE);
        let dialog_shown = |s: &str| s.contains("Hooks need review");
        let prompt = |s: &str| s.contains("for shortcuts");
        let mut screen = self
            .lab
            .wait_screen_in(pane, "Codex starting, or failing to", |s| {
                dialog_shown(s) || prompt(s) || failed(s)
            });
        if answer.is_some() && first_attempt && !dialog_shown(&screen) && !failed(&screen) {
            screen = self
                .lab
                .wait_screen_in(pane, "Codex's hook-trust dialog", |s| {
                    dialog_shown(s) || failed(s)
                });
        }
        if failed(&screen) {
            return Err(screen);
        }
        if let Some(answer) = answer
            && dialog_shown(&screen)
        {
            if first_attempt {
                assert!(
                    screen.contains("12 hooks are new"),
                    "every hook atm installs: {screen}"
                );
            }
            // A digit selects the choice, and for some choices confirms it at once.
            self.lab
                .press_until_in(pane, &[answer], "the answer selected", |s| {
                    s.contains(&format!("› {answer}.")) || !dialog_shown(s) || failed(s)
                });
            let now = self.lab.screen_in(pane);
            if dialog_shown(&now) && !failed(&now) {
                self.lab
                    .press_until_in(pane, &["Enter"], "the dialog closing", |s| {
                        !dialog_shown(s) || failed(s)
                    });
            }
        }
        let end = self.lab.wait_screen_in(pane, "Codex's prompt", |s| {
            (prompt(s) && !(answer.is_some() && dialog_shown(s))) || failed(s)
        });
        if failed(&end) {
            return Err(end);
        }
        Ok(())
    }

    /// This test's Codex sessions (see [`sessions_under`]).
    fn ours<'a>(&self, all: &'a [Value]) -> Vec<&'a Value> {
        sessions_under(all, "codex", self.daemon.dir.path())
    }

    fn sessions(&self, what: &str, pred: impl Fn(&[&Value]) -> bool) -> Vec<Value> {
        let all = self.daemon.wait_sessions(what, |all| pred(&self.ours(all)));
        self.ours(&all).into_iter().cloned().collect()
    }

    /// Waits until atm shows exactly one Codex session and it satisfies `pred`; returns it.
    fn wait_one(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let one = self.sessions(&format!("one Codex session: {what}"), |s| {
            s.len() == 1 && pred(s[0])
        });
        one[0].clone()
    }

    fn wait_state(&self, state: &str) -> Value {
        self.wait_one(&format!("state {state}"), |s| s["state"] == state)
    }

    /// The TUI's process in pane `target`: the native `codex` that npm's node launcher (the
    /// pane's process) starts.
    fn tui_pid(&self, target: &str) -> u32 {
        let launcher = self.lab.pid_in(target);
        std::fs::read_to_string(format!("/proc/{launcher}/task/{launcher}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(launcher)
    }

    fn daemon_pid(&self) -> Option<i32> {
        let text = std::fs::read_to_string(self.home.join("app-server-daemon/daemon.pid")).ok()?;
        let v: Value = serde_json::from_str(&text).ok()?;
        i32::try_from(v["pid"].as_i64()?).ok()
    }
}

fn approval(s: &str) -> bool {
    s.contains("Would you like to run the following command?")
}

#[test]
fn start_permission_approve_turn_end_and_quit_match_the_screen() {
    let Some((c, dirs)) = start_codex(&["project"]) else {
        return;
    };
    let project = &dirs[0];
    // No hook fires while Codex waits at its first prompt: its screen says idle.
    let ready = c.wait_state("idle");
    assert_eq!(ready["tmux_pane"], c.lab.pane(), "{ready:#}");
    let target = project.join("approved");
    c.lab
        .type_line(&format!("please RUN touch {}", target.display()));
    c.lab.wait_screen("the approval dialog", approval);
    let waiting = c.wait_state("needs_permission");
    eprintln!("needs_permission: {waiting:#}");
    assert_eq!(waiting["attention"]["tool"], "Bash", "{waiting:#}");
    assert!(
        waiting["attention"]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("touch")),
        "{waiting:#}"
    );
    // The TUI's process and pane, though Codex's daemon ran the hook.
    assert_eq!(waiting["pid"], c.tui_pid("agent"), "{waiting:#}");
    assert_eq!(waiting["tmux_pane"], c.lab.pane(), "{waiting:#}");
    assert_eq!(
        waiting["working_directory"],
        project.display().to_string(),
        "{waiting:#}"
    );
    let thread = waiting["id"].clone();
    let daemon = c.daemon_pid().expect("Codex started its background daemon");
    // Codex names its turns (`turn_id` on every hook of the turn).
    let turn = waiting["turn_id"].clone();
    assert!(turn.as_str().is_some_and(|t| !t.is_empty()), "{waiting:#}");

    c.lab
        .press_until(&["y"], "the dialog closing", |s| !approval(s));
    c.lab.wait_screen("the model's answer after the tool", |s| {
        s.contains("FAKE-DONE")
    });
    assert!(target.exists(), "the approved command ran");
    let idle = c.wait_state("idle");
    assert!(idle["attention"].is_null(), "{idle:#}");
    assert_eq!(idle["turn_id"], turn, "the same turn ended: {idle:#}");
    assert_eq!(
        idle["id"], thread,
        "the title thread's notify did not re-key it"
    );

    c.lab.type_line("hello");
    c.lab.wait_screen("the model's reply", |s| {
        s.matches("FAKE-REPLY").count() >= 1
    });
    let idle = c.wait_state("idle");
    assert_eq!(idle["id"], thread);

    c.lab.type_line("/quit");
    atm_core::testing::wait_until_blocking("Codex to exit", || c.lab.exited());
    c.sessions("the session to be gone", |s| s.is_empty());
    assert!(
        rustix::process::Pid::from_raw(daemon)
            .is_some_and(|p| rustix::process::test_kill_process(p).is_ok()),
        "Codex's daemon lives on after /quit, yet the session is gone"
    );

    // Codex wrote a trust entry per hook of atm's; uninstall leaves none of them, and nothing
    // else of atm's.
    let trusted = std::fs::read_to_string(c.home.join("config.toml")).unwrap();
    assert_eq!(trusted.matches("trusted_hash").count(), 12, "{trusted}");
    stdout_of(
        c.daemon
            .command("atmctl")
            .args(["setup", "codex", "--uninstall"])
            .env("CODEX_HOME", &c.home),
    );
    let left = std::fs::read_to_string(c.home.join("config.toml")).unwrap();
    for ours in ["trusted_hash", "hooks.state", "atm-hook", "features.hooks"] {
        assert!(!left.contains(ours), "{ours} left behind:\n{left}");
    }
    let hooks = std::fs::read_to_string(c.home.join("hooks.json")).unwrap_or_default();
    assert!(!hooks.contains("atm-hook"), "{hooks}");
}

#[test]
fn a_declined_permission_and_an_interrupt_leave_for_idle_within_2s() {
    let Some((c, dirs)) = start_codex(&["project"]) else {
        return;
    };
    c.lab.type_line(&format!(
        "please RUN touch {}",
        dirs[0].join("declined").display()
    ));
    c.lab.wait_screen("the approval dialog", approval);
    c.wait_state("needs_permission");
    c.lab.press_until(&["Escape"], "the cancellation", |s| {
        s.contains("You canceled the request")
    });
    // Codex's only word for it is its `Interrupt` hook.
    let idle = c.wait_state("idle");
    assert!(idle["attention"].is_null(), "{idle:#}");
    assert!(!dirs[0].join("declined").exists());

    interrupt_a_slow_turn(&c.lab, "Codex", |state| {
        c.wait_state(state);
    });
}

#[test]
fn two_tuis_in_two_panes_are_two_sessions_with_their_own_panes() {
    let Some((c, dirs)) = start_codex(&["one", "two"]) else {
        return;
    };
    let second = c.lab.open_pane(&dirs[1]);
    c.through_trust_dialog(&second, false);
    c.two_idle_sessions(
        &second,
        [&dirs[0], &dirs[1]],
        ["hello from one", "hello from two"],
    );

    c.lab.type_line_in(&second, "/quit");
    atm_core::testing::wait_until_blocking("the second Codex to exit", || c.lab.exited_in(&second));
    let left = c.wait_one("the first one left", |s| s["tmux_pane"] == c.lab.pane());
    assert_eq!(left["pid"], c.tui_pid("agent"));
    assert!(session_of(&[left], "codex").is_some());
}

#[test]
fn two_tuis_in_one_directory_are_told_apart_by_the_prompt_on_their_screens() {
    let Some((c, dirs)) = start_codex(&["shared"]) else {
        return;
    };
    let second = c.lab.open_pane(&dirs[0]);
    c.through_trust_dialog(&second, false);
    c.two_idle_sessions(
        &second,
        [&dirs[0], &dirs[0]],
        ["hello from the first pane", "hello from the second pane"],
    );
    // A permission in the second pane is the second pane's, though its hook carries no prompt.
    let target = dirs[0].join("from-two");
    c.lab
        .type_line_in(&second, &format!("please RUN touch {}", target.display()));
    c.lab
        .wait_screen_in(&second, "the approval dialog", approval);
    let now = c.sessions("one of the two waiting", |s| {
        s.len() == 2 && s.iter().any(|s| s["state"] == "needs_permission")
    });
    let waiting = now
        .iter()
        .find(|s| s["state"] == "needs_permission")
        .unwrap();
    assert_eq!(waiting["tmux_pane"], second.as_str(), "{now:#?}");
    assert_eq!(waiting["pid"], c.tui_pid(&second), "{waiting:#}");
}

#[test]
fn with_the_hooks_not_trusted_notify_alone_shows_the_turn_end_of_the_real_thread() {
    // "Continue without trusting (hooks won't run)": only the notify program runs.
    let Some((c, _dirs)) = start_codex_answering(&["project"], "3") else {
        return;
    };
    c.lab.type_line("hello");
    c.lab
        .wait_screen("the model's reply", |s| s.contains("FAKE-REPLY"));
    let idle = c.wait_one("idle under the real thread's id", |s| {
        s["state"] == "idle"
            && !s["id"]
                .as_str()
                .unwrap_or("pending-")
                .starts_with("pending-")
    });
    assert_eq!(idle["pid"], c.tui_pid("agent"), "{idle:#}");
    assert_eq!(idle["tmux_pane"], c.lab.pane(), "{idle:#}");
    // The id is the thread the user talks to (it has a rollout), not the title thread.
    let id = idle["id"].as_str().unwrap().to_owned();
    let rollouts = walk(&c.home.join("sessions"));
    assert!(
        rollouts.iter().any(|p| p.to_string_lossy().contains(&id)),
        "{id} has no rollout among {rollouts:?}"
    );
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
