//! The web board in a real browser, end to end: the real `atmd` with the `http` sink, the real
//! `atm-hook` feeding Claude's hooks, and Debian's headless Chromium (over WebDriver) logging in
//! with the token, seeing the session appear and change state live, and pressing Allow on a
//! permission that the waiting `atm-hook` then prints for Claude.
//!
//! `ATM_UPDATE_SCREENSHOT=1` writes the board as the browser showed it to `docs/board.png`
//! (the README's picture); otherwise it goes to the test's temp dir only.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

use atm_core::testing::wait_until_blocking;
use atm_tests::waiting_hook::{decision_of, permission};
use atm_tests::webdriver::Browser;
use atm_tests::{Daemon, FakeAgent, basic_config, hook, status};
use serde_json::json;

const HTTP_SINK: &str = "[[sink]]\ntype = \"http\"\nlisten = \"127.0.0.1:0\"\n";

/// JS: true when some session card's text has every one of `arguments[0]`.
const CARD_SHOWS: &str = "return [...document.querySelectorAll('article.card')]\
    .some(c => arguments[0].every(t => c.innerText.includes(t)));";

/// `SessionStart` through the real `atm-hook` (its agent process: this test).
fn start_session(d: &Daemon, sid: &str, cwd: &str, pane: &str) {
    let payload = json!({"hook_event_name": "SessionStart", "session_id": sid, "cwd": cwd,
        "source": "startup"});
    d.run_hook(pane, &[], payload.to_string().as_bytes());
}

fn prompt(d: &Daemon, sid: &str, cwd: &str, pane: &str, text: &str) {
    let payload = json!({"hook_event_name": "UserPromptSubmit", "session_id": sid, "cwd": cwd,
        "prompt": text});
    d.run_hook(pane, &[], payload.to_string().as_bytes());
}

#[test]
fn the_board_shows_sessions_live_and_allow_reaches_the_waiting_hook() {
    let d = Daemon::start_with_hooks(&basic_config(HTTP_SINK));
    let atm_tests::WebBoard { url, token, .. } = d.web_board();
    let browser = Browser::start(1280, 1000);

    // The login form, then the board (the token goes in a form field, never in the URL).
    browser.goto(&url);
    let field = browser.find("#token").expect("the login form");
    browser.type_into(&field, &token);
    browser.click(&browser.find("button[type=submit]").unwrap());
    browser.wait_for(
        "the live board",
        "return document.getElementById('conn')?.textContent === 'live';",
        json!([]),
    );
    let at = browser.run("return location.href;", json!([]));
    assert!(!at.as_str().unwrap().contains(&token), "{at}");

    // A session fed through the hooks socket appears, then changes state live.
    start_session(&d, "web-1", "/home/dev/shop", "%7");
    browser.wait_for("the new session", CARD_SHOWS, json!([["Starting"]]));
    assert!(browser.text().contains("…/dev/shop"), "grouped by project");
    prompt(&d, "web-1", "/home/dev/shop", "%7", "Add a checkout page");
    browser.wait_for(
        "the session working",
        CARD_SHOWS,
        json!([["Working", "Add a checkout page"]]),
    );
    d.send_hooks(&[status(json!({"session_id": "web-1",
        "model": {"id": "claude-opus-4-6", "display_name": "Opus 4.6"},
        "cost": {"total_cost_usd": 1.75},
        "context_window": {"context_window_size": 200000, "used_percentage": 42.5},
        "rate_limits": {"five_hour": {"used_percentage": 31.0}, "seven_day": {"used_percentage": 64.0}}}))]);
    browser.wait_for(
        "the status line's figures",
        CARD_SHOWS,
        json!([["Opus 4.6", "$1.75"]]),
    );

    // Two more agents (processes of their own: atm knows an agent by its process), for a
    // board worth a picture.
    let (atlas, docs) = (FakeAgent::spawn(), FakeAgent::spawn());
    // An agent's line: `data` of session `sid` in `cwd`, from the agent's process and pane.
    let line = |agent: &FakeAgent, pane: &str, sid: &str, cwd: &str, data: serde_json::Value| {
        let mut data = data;
        data["pid"] = json!(agent.pid());
        data["tmux_pane"] = json!(pane);
        data["session_id"] = json!(sid);
        if !cwd.is_empty() {
            data["cwd"] = json!(cwd);
        }
        data
    };
    let atlas_line = |data| line(&atlas, "%9", "web-2", "/home/dev/atlas", data);
    let docs_line = |data| line(&docs, "%8", "web-3", "/home/dev/shop", data);
    d.send_hooks(&[
        hook(atlas_line(
            json!({"hook_event_name": "SessionStart", "source": "startup"}),
        )),
        hook(atlas_line(json!({"hook_event_name": "UserPromptSubmit",
            "prompt": "Why does the nightly job time out?"}))),
        hook(atlas_line(json!({"hook_event_name": "Stop"}))),
        status(line(
            &atlas,
            "%9",
            "web-2",
            "",
            json!({"model": {"id": "claude-sonnet-4-5", "display_name": "Sonnet 4.5"},
            "cost": {"total_cost_usd": 0.42},
            "context_window": {"context_window_size": 200000, "used_percentage": 81.0}}),
        )),
        hook(docs_line(
            json!({"hook_event_name": "SessionStart", "source": "startup"}),
        )),
        hook(docs_line(
            json!({"hook_event_name": "UserPromptSubmit", "prompt": "Write the release notes"}),
        )),
    ]);
    browser.wait_for(
        "three sessions",
        "return document.querySelectorAll('article.card').length === 3;",
        json!([]),
    );

    // A permission: the real atm-hook waits on it; the page shows it with its buttons.
    let suggestion = json!([{"type": "addRules", "rules": [{"toolName": "Bash",
        "ruleContent": "cargo test:*"}], "behavior": "allow", "destination": "localSettings"}]);
    let waiting = atm_tests::WaitingHook::start(
        &d,
        permission(
            "web-1",
            "cargo test --workspace",
            json!({"cwd": "/home/dev/shop", "permission_suggestions": suggestion}),
        ),
    );
    browser.wait_for(
        "the pending request",
        "return [...document.querySelectorAll('li.request')].some(c => \
         c.innerText.includes('cargo test --workspace') && c.querySelector('button.allow'));",
        json!([]),
    );
    browser.wait_for(
        "the session waiting",
        CARD_SHOWS,
        json!([["Needs permission", "cargo test --workspace"]]),
    );
    let png = browser.screenshot();
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    std::fs::write(d.dir.path().join("board.png"), &png).unwrap();
    if std::env::var_os("ATM_UPDATE_SCREENSHOT").is_some() {
        let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/board.png");
        std::fs::write(docs, &png).unwrap();
    }

    // The filter hides what does not match, and shows it again.
    let filter = browser.find("#filter").unwrap();
    browser.type_into(&filter, "atlas");
    browser.wait_for(
        "only the matching session",
        "return document.querySelectorAll('article.card').length === 1;",
        json!([]),
    );
    browser.run(
        "const f = document.getElementById('filter'); f.value = ''; \
         f.dispatchEvent(new Event('input'));",
        json!([]),
    );

    // Typing a denial's message survives updates of other sessions (the card is not redrawn).
    let message = browser
        .find("li.request input[type=text]")
        .expect("the message field");
    browser.click(&message);
    browser.type_into(&message, "not now");
    d.send_hooks(&[status(line(
        &atlas,
        "%9",
        "web-2",
        "",
        json!({"cost": {"total_cost_usd": 0.99}}),
    ))]);
    browser.wait_for(
        "the other session's new cost",
        CARD_SHOWS,
        json!([["$0.99"]]),
    );
    let kept = browser.run(
        "const a = document.activeElement; return a && a.matches('li.request input') ? a.value : null;",
        json!([]),
    );
    assert_eq!(kept, json!("not now"), "focus and text kept");

    // Allow, pressed in the browser, is what the waiting hook prints for Claude.
    let allow = browser
        .find("li.request button.allow")
        .expect("an Allow button");
    browser.click(&allow);
    assert_eq!(decision_of(waiting), json!({"behavior": "allow"}));
    browser.wait_for(
        "the request gone from the page",
        "return document.getElementById('pending-section').hidden === true;",
        json!([]),
    );
    let audit = d.wait_sessions("the answer audited", |s| {
        s.iter()
            .any(|x| x["request_log"][0]["surface"]["name"] == "http")
    });
    assert!(!audit.is_empty());
    assert!(!d.log().contains(&token), "the token is in no log line");
}

#[test]
fn atmctl_web_prints_the_address_and_the_token_and_says_when_the_board_is_off() {
    let off = Daemon::start(&basic_config(""));
    let out = off.command("atmctl").arg("web").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "no board: not running");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("web board is not running") && said.contains("web.url"),
        "{said}"
    );
    drop(off);

    let d = Daemon::start(&basic_config(HTTP_SINK));
    let atm_tests::WebBoard { url, token, .. } = d.web_board();
    let printed = atm_tests::stdout_of(d.command("atmctl").arg("web"));
    assert!(printed.contains(&format!("The board: {url}")), "{printed}");
    assert!(printed.contains(&token), "{printed}");
    assert!(
        !printed.contains(&format!("{url}#")) && !printed.contains("?token"),
        "no token in a URL: {printed}"
    );
    let only = atm_tests::stdout_of(d.command("atmctl").args(["web", "--token"]));
    assert_eq!(only.trim(), &token);
}

#[test]
fn a_taken_port_is_logged_with_its_address_and_the_daemon_keeps_serving() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let d = Daemon::start_with_hooks(&basic_config(&format!(
        "[[sink]]\ntype = \"http\"\nlisten = \"{addr}\"\n"
    )));
    wait_until_blocking("the bind failure in the log", || {
        d.log()
            .contains(&format!("cannot listen on {addr}; another program uses it"))
    });
    // Everything else runs: hooks are taken and the query socket answers.
    start_session(&d, "still-1", "/w", "%1");
    d.wait_sessions("the session", |s| s.iter().any(|x| x["id"] == "still-1"));
    assert!(!d.runtime_dir().join("web.url").exists());
}
