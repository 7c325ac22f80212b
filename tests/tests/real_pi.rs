//! The real pi coding agent (the version pinned in `tests/agents/versions`) in a real tmux pane,
//! connected by atm's own pi extension as the real `atmctl setup pi` installs it, against
//! `atm-fake-model`'s Anthropic Messages API (a custom provider in pi's `models.json`): what
//! atm says must be what the screen shows.
//!
//! pi has no permission prompts of its own; users add them as extensions. The tests install
//! two: pi's own example `permission-gate.ts` (shipped in the npm package; it asks with
//! `ctx.ui.select` before `rm -rf`, `sudo`, ...) and a tiny one of the test's that asks with
//! `ctx.ui.confirm` before `rm -f`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use atm_tests::agents::{
    AgentLab, OwnSession, RecordingFile, agent_binary, lab_daemon, project_dir, record_if_asked,
    sessions_under, shell_quote,
};
use atm_tests::{Daemon, stdout_of};
use serde_json::{Value, json};

/// Where the model URL goes in models.json; the pane's command fills it in once the fake
/// model listens.
const URL_SLOT: &str = "@ATM_FAKE_MODEL_URL@";

/// The test's own extension: a gate (`ctx.ui.confirm` before a bash command that starts with
/// `rm -f `) and a command `/atm-ask` that asks with `ctx.ui.select` while pi is idle.
const CONFIRM_GATE: &str = r#"export default function (pi: any) {
  pi.registerCommand("atm-ask", {
    description: "asks a question (atm's real-agent suite)",
    handler: async (_args: string, ctx: any) => {
      const pick = await ctx.ui.select("ASK-DIALOG: pick one", ["one", "two"]);
      ctx.ui.notify(`ASK-ANSWER ${pick}`, "info");
    },
  });
  pi.on("tool_call", async (event: any, ctx: any) => {
    const command = event.toolName === "bash" ? String(event.input?.command ?? "") : "";
    if (!command.startsWith("rm -f ")) return undefined;
    const ok = await ctx.ui.confirm("CONFIRM-GATE: run this command?", command);
    return ok ? undefined : { block: true, reason: "Declined by the user" };
  });
}
"#;

struct Pi {
    daemon: Daemon,
    lab: AgentLab,
    project: PathBuf,
    /// With `ATM_PI_RECORD=<dir>`: what the extension sent, written to `<dir>/<test>.jsonl`.
    _recording: Option<RecordingFile>,
}

/// pi's agent dir as a user has it with the fake model as a custom provider (priced like a
/// real model, so there is a cost to show), the two gates, then atm's extension installed by
/// `atmctl setup pi`.
fn configure(daemon: &Daemon, agent_dir: &Path, pi_bin: &Path) {
    let extensions = agent_dir.join("extensions");
    std::fs::create_dir_all(&extensions).unwrap();
    let models = json!({"providers": {"fake": {
        "baseUrl": URL_SLOT, "api": "anthropic-messages", "apiKey": "ATM_FAKE_ANTHROPIC_KEY",
        "models": [{"id": "fake-sonnet", "name": "Fake Sonnet",
                    "cost": {"input": 3, "output": 15, "cacheRead": 0.3, "cacheWrite": 3.75}}]}}});
    std::fs::write(agent_dir.join("models.json"), models.to_string()).unwrap();
    let settings = json!({"defaultProvider": "fake", "defaultModel": "fake-sonnet",
                          "enableInstallTelemetry": false});
    std::fs::write(agent_dir.join("settings.json"), settings.to_string()).unwrap();
    std::fs::write(extensions.join("confirm-gate.ts"), CONFIRM_GATE).unwrap();
    let package = pi_bin
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("@mariozechner/pi-coding-agent");
    std::fs::copy(
        package.join("examples/extensions/permission-gate.ts"),
        extensions.join("permission-gate.ts"),
    )
    .unwrap();
    let said = stdout_of(
        daemon
            .command("atmctl")
            .args(["setup", "pi"])
            .env("PI_CODING_AGENT_DIR", agent_dir),
    );
    assert!(said.contains("installed atm's pi extension"), "{said}");
    assert!(extensions.join("atm.ts").exists(), "{said}");
}

/// Starts atmd (the pi adapter and proc-discovery), configures pi and starts it in a pane.
fn start_pi(test: Option<&str>) -> Option<Pi> {
    start_pi_with(test, |_| {})
}

/// [`start_pi`], running `before` on atmd once pi is configured, before pi starts.
/// `test` names the recording, if any (`None`: never recorded, as the tee would hide an atmd
/// restart from the extension).
fn start_pi_with(test: Option<&str>, before: impl FnOnce(&mut Daemon)) -> Option<Pi> {
    let pi = agent_binary("pi")?;
    let mut daemon = lab_daemon(Some("pi"));
    let project = project_dir(&daemon, "project");
    let agent_dir = daemon.dir.path().join("pi-agent");
    configure(&daemon, &agent_dir, &pi);
    let command = format!(
        "/bin/sh -c {}",
        shell_quote(&format!(
            "sed -i \"s#{URL_SLOT}#$ATM_FAKE_MODEL_URL#\" \"$PI_CODING_AGENT_DIR/models.json\"; exec {}",
            shell_quote(&pi.display().to_string())
        ))
    );
    let mut env = vec![
        ("PI_CODING_AGENT_DIR", agent_dir.display().to_string()),
        ("ATM_FAKE_ANTHROPIC_KEY", "sk-ant-atm-fake-model".to_owned()),
        ("PI_OFFLINE", "1".to_owned()),
        ("PI_SKIP_VERSION_CHECK", "1".to_owned()),
        ("PI_TELEMETRY", "0".to_owned()),
    ];
    before(&mut daemon);
    let recording = test.and_then(|test| {
        record_if_asked(&daemon, "ATM_PI_RECORD", test, "ATM_PI_SOCKET", &mut env)
    });
    let lab = AgentLab::start(&daemon, &project, &command, &env);
    lab.wait_screen("pi's prompt", |s| {
        s.contains(" pi v") && s.contains("fake-sonnet")
    });
    Some(Pi {
        daemon,
        lab,
        project,
        _recording: recording,
    })
}

impl OwnSession for Pi {
    fn daemon(&self) -> &Daemon {
        &self.daemon
    }

    /// This test's pi session: proc-discovery also finds the pis of tests running beside it
    /// (in their own directories, or with none known yet), so the PID decides.
    fn own<'a>(&self, all: &'a [Value]) -> Option<&'a Value> {
        let pid = self.lab.pid();
        sessions_under(all, "pi", self.daemon.dir.path())
            .into_iter()
            .find(|s| s["pid"] == pid)
    }
}

impl Pi {
    /// Types a prompt and waits for pi to show it.
    fn prompt(&self, text: &str) {
        self.lab.type_line(text);
    }

    /// The session cost pi's footer shows (`$0.012`), once the footer shows one.
    fn footer_cost(&self) -> String {
        let screen = self
            .lab
            .wait_screen("a cost in pi's footer", |s| footer_cost(s).is_some());
        footer_cost(&screen).unwrap()
    }

    /// Waits until atm's cost, rounded as pi's footer rounds it, is what the footer shows.
    fn wait_cost_matches_footer(&self) -> Value {
        let shown = self.footer_cost();
        self.wait_session(&format!("the cost pi shows ({shown})"), |s| {
            s["cost_usd"]
                .as_f64()
                .or_else(|| s["usage"]["cost_usd"].as_f64())
                .is_some_and(|c| format!("${c:.3}") == shown)
        })
    }
}

/// The `$N.NNN` in pi's footer line.
fn footer_cost(screen: &str) -> Option<String> {
    screen.lines().rev().find_map(|l| {
        l.split_whitespace()
            .find(|w| w.starts_with('$') && w.len() > 2 && w[1..].parse::<f64>().is_ok())
            .map(str::to_owned)
    })
}

#[test]
fn start_tool_confirm_approved_turn_end_cost_and_quit_match_the_screen() {
    let Some(p) = start_pi(Some("approved")) else {
        return;
    };
    // At its prompt: idle, under pi's own session id, with pane, project and model.
    let first = p.wait_session("the session, idle, with its id, pane, cwd and model", |s| {
        s["state"] == "idle"
            && s["tmux_pane"] == p.lab.pane()
            && s["working_directory"] == p.project.display().to_string()
    });
    eprintln!("pi at its prompt: {first:#}");
    assert_eq!(first["pid"], p.lab.pid(), "{first:#}");
    let id = first["id"].as_str().unwrap().to_owned();
    assert!(!id.starts_with("pending-"), "{first:#}");
    assert!(
        first.to_string().contains("fake-sonnet"),
        "the model is known at start: {first:#}"
    );

    // A tool that runs: working on bash, the command shown, while the screen shows it running.
    let ran = p.project.join("ran");
    p.prompt(&format!("please RUN sleep 3 && touch {}", ran.display()));
    let working = p.wait_session("working on the bash tool", |s| {
        s["state"] == "working" && s.to_string().contains("sleep 3")
    });
    assert_eq!(working["id"], id.as_str(), "{working:#}");
    assert!(!ran.exists(), "atm saw the tool while it ran");
    p.lab.wait_screen("the model's answer after the tool", |s| {
        s.contains("FAKE-DONE")
    });
    assert!(ran.exists());
    p.wait_state("idle");
    p.wait_cost_matches_footer();

    // A confirm dialog, approved: needs_permission on bash with the command, then idle.
    let victim = p.project.join("victim");
    std::fs::write(&victim, "x").unwrap();
    p.prompt(&format!("please RUN rm -f {}", victim.display()));
    p.lab
        .wait_screen("the confirm dialog", |s| s.contains("CONFIRM-GATE"));
    let asking = p.wait_state("needs_permission");
    assert!(
        asking.to_string().contains("rm -f"),
        "the gated command is shown: {asking:#}"
    );
    assert!(victim.exists(), "nothing ran before the answer");
    p.lab.press_until(&["Enter"], "the dialog closing", |s| {
        !s.contains("CONFIRM-GATE")
    });
    p.lab.wait_screen("the model's answer after the tool", |s| {
        s.matches("FAKE-DONE").count() >= 2
    });
    assert!(!victim.exists(), "the approved command ran");
    let idle = p.wait_state("idle");
    assert!(idle["attention"].is_null(), "{idle:#}");
    p.wait_cost_matches_footer();

    // /quit: gone, and not listed again while the process is on its way out. (By PID: the
    // pis of the tests beside this one are found by this atmd's discovery too.)
    let pid = p.lab.pid();
    let ours = |all: &[Value]| all.iter().find(|s| s["pid"] == pid).cloned();
    p.prompt("/quit");
    let quit_at = Instant::now();
    let mut seen_after_gone = Vec::new();
    let mut gone = false;
    let mut c = p.daemon.client();
    while quit_at.elapsed() < Duration::from_secs(10) {
        match ours(&c.list()) {
            None => gone = true,
            Some(s) if gone => seen_after_gone.push(s),
            Some(_) => {}
        }
        // Watch through two discovery scans after the exit.
        if gone && p.lab.exited() && seen_after_gone.is_empty() {
            let exited_at = Instant::now();
            while exited_at.elapsed() < Duration::from_millis(1200) {
                seen_after_gone.extend(ours(&c.list()));
                std::thread::sleep(Duration::from_millis(25));
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    assert!(gone && p.lab.exited(), "pi exited and its session is gone");
    assert!(
        seen_after_gone.is_empty(),
        "an ended pi (pid {pid}) was listed again: {seen_after_gone:#?}\natmd log:\n{}",
        p.daemon.log()
    );
}

#[test]
fn declined_confirm_declined_select_and_interrupt_leave_the_wait() {
    let Some(p) = start_pi(Some("declined")) else {
        return;
    };
    p.wait_state("idle");

    // The confirm dialog, declined (Escape): the command does not run, the wait ends.
    let kept = p.project.join("kept");
    std::fs::write(&kept, "x").unwrap();
    p.prompt(&format!("please RUN rm -f {}", kept.display()));
    p.lab
        .wait_screen("the confirm dialog", |s| s.contains("CONFIRM-GATE"));
    p.wait_state("needs_permission");
    p.lab.press_until(&["Escape"], "the dialog closing", |s| {
        !s.contains("CONFIRM-GATE")
    });
    p.wait_session("a state other than needs_permission", |s| {
        s["state"] != "needs_permission"
    });
    p.lab
        .wait_screen("the model's answer after the blocked tool", |s| {
            s.contains("FAKE-DONE")
        });
    p.wait_state("idle");
    assert!(kept.exists(), "the declined command did not run");

    // pi's own example gate (`ctx.ui.select`, "Yes"/"No"), answered "No".
    let dir = p.project.join("dir");
    std::fs::create_dir_all(&dir).unwrap();
    p.prompt(&format!("please RUN rm -rf {}", dir.display()));
    p.lab
        .wait_screen("the select dialog", |s| s.contains("Dangerous command"));
    let asking = p.wait_state("needs_permission");
    assert!(asking.to_string().contains("rm -rf"), "{asking:#}");
    p.lab
        .press_until(&["Down", "Enter"], "the dialog closing", |s| {
            !s.contains("Dangerous command")
        });
    p.lab
        .wait_screen("the model's answer after the blocked tool", |s| {
            s.matches("FAKE-DONE").count() >= 2
        });
    p.wait_state("idle");
    assert!(dir.exists(), "the declined command did not run");

    // Esc while the model works: idle.
    p.prompt("be SLOW please");
    p.lab.wait_screen("pi working", |s| s.contains("Working"));
    p.wait_state("working");
    p.lab.press_until(&["Escape"], "pi stopping", |s| {
        s.contains("Operation aborted")
    });
    p.wait_state("idle");
    p.wait_cost_matches_footer();
}

#[test]
fn a_commands_question_needs_input_and_after_an_atmd_restart_the_extension_reports_again() {
    let Some(mut p) = start_pi(None) else {
        return;
    };
    let first = p.wait_state("idle");
    // A command's question while pi is idle: needs_input, then idle again (not working).
    p.prompt("/atm-ask");
    p.lab
        .wait_screen("the select dialog", |s| s.contains("ASK-DIALOG"));
    let asking = p.wait_state("needs_input");
    assert!(asking.to_string().contains("ASK-DIALOG"), "{asking:#}");
    p.lab
        .press_until(&["Enter"], "the answer", |s| s.contains("ASK-ANSWER one"));
    p.wait_state("idle");
    p.daemon.kill9();
    p.daemon.spawn();
    // The extension retries with backoff; the next event reaches the new atmd.
    p.prompt("hello");
    p.lab
        .wait_screen("the model's reply", |s| s.contains("FAKE-REPLY"));
    let again = p.wait_session("the session, idle, with its id, after the restart", |s| {
        s["state"] == "idle" && s["id"] == first["id"] && s["first_prompt"] == "hello"
    });
    assert_eq!(again["pid"], p.lab.pid(), "{again:#}");
    p.wait_cost_matches_footer();
}

#[test]
fn pi_runs_normally_while_atmd_is_down_and_shows_up_when_it_starts() {
    let Some(mut p) = start_pi_with(None, Daemon::kill9) else {
        return;
    };
    // No atmd: pi answers as ever (the extension queues, retries, never blocks pi).
    p.prompt("hello");
    p.lab
        .wait_screen("the model's reply", |s| s.contains("FAKE-REPLY"));
    p.daemon.spawn();
    // What was queued arrives: pi's own id, its prompt, idle, the cost pi shows.
    let s = p.wait_session("the session, idle, with its id and first prompt", |s| {
        s["state"] == "idle" && s["first_prompt"] == "hello"
    });
    assert!(!s["id"].as_str().unwrap().starts_with("pending-"), "{s:#}");
    assert_eq!(s["working_directory"], p.project.display().to_string());
    p.wait_cost_matches_footer();
    // atmd gone again: /quit still ends pi at once (the last line waits 500 ms at most).
    p.daemon.kill9();
    p.prompt("/quit");
    let quit_at = Instant::now();
    atm_core::testing::wait_until_blocking("pi to exit", || p.lab.exited());
    eprintln!(
        "pi exited {:?} after /quit with atmd down",
        quit_at.elapsed()
    );
    assert!(
        quit_at.elapsed() < Duration::from_secs(5),
        "{:?}",
        quit_at.elapsed()
    );
}

#[test]
fn while_atmd_is_down_the_extension_keeps_the_newest_256_lines() {
    let Some(pi) = agent_binary("pi") else {
        return;
    };
    // pi loads extensions with jiti; the test loads atm's the same way, with a stand-in for pi.
    let jiti = pi.with_file_name("jiti");
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let out = std::process::Command::new(jiti)
        .arg(root.join("tests/agents/pi-queue-harness.ts"))
        .env("ATM_PI_SOCKET", dir.path().join("hooks.sock"))
        .env("ATM_EXTENSION", root.join("adapters/pi/extension/atm.ts"))
        .env("EVENTS", "300")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    // The oldest 44 were dropped; the newest, which carry the current state, all arrive, in order.
    assert_eq!(
        got,
        json!({"connect": 1, "count": 256, "first": "t44", "last": "t299"})
    );
}
