//! What a notification says: summary and body, from the session and why it notifies.
//!
//! The summary names the agent, why and the project ("Claude needs permission: Bash · myrepo");
//! the body the command or file preview, the branch and the tmux location. Everything is cut
//! by characters (never bytes), and the body is escaped only for servers that render body
//! markup: a server without markup would show `&amp;` literally. Every line is made
//! [`portable`] (no NUL, control characters or noncharacters), since the text goes over D-Bus
//! to the notification server.

use std::time::Duration;

use atm_core::Session;
use atm_core::text::{one_line_preview, portable, truncate_chars};

use crate::plan::{Kind, Show, project_name};

/// The longest summary, in characters.
pub const SUMMARY_MAX: usize = 120;
/// The longest body line, in characters.
pub const LINE_MAX: usize = 200;

/// A rendered notification text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text {
    pub summary: String,
    pub body: String,
}

/// Renders `show`. `location` is the pane's tmux location (`work:1.0`) when known; `markup`
/// says whether the server renders body markup.
pub fn render(show: &Show, location: Option<&str>, markup: bool) -> Text {
    let s = &show.session;
    let mut summary = format!("{} {}", agent_name(s), why(show));
    if let Some(project) = project_name(s) {
        summary.push_str(" · ");
        summary.push_str(&project);
    }
    // A session of another machine says which: the same agent and project may run on both.
    if s.is_remote() {
        summary.push_str(" @ ");
        summary.push_str(s.host.as_str());
    }
    let mut lines = Vec::new();
    match show.kind {
        Kind::Permission | Kind::Input => {
            if let Some(detail) = s.attention.as_ref().and_then(|a| a.detail.as_deref()) {
                lines.push(one_line_preview(detail, LINE_MAX));
            }
        }
        Kind::Idle | Kind::Error => {
            if let Some(turn) = show.turn.filter(|t| t.as_secs() > 0) {
                lines.push(format!("Worked for {}", human(turn)));
            }
            if let Some(prompt) = &s.first_prompt {
                lines.push(one_line_preview(prompt, LINE_MAX));
            }
        }
    }
    let mut place = Vec::new();
    if let Some(branch) = &s.git.branch {
        place.push(format!("branch {branch}"));
    }
    match (location, &s.tmux_pane) {
        (Some(loc), _) => place.push(format!("tmux {loc}")),
        (None, Some(pane)) => place.push(format!("tmux {pane}")),
        (None, None) => {}
    }
    if !place.is_empty() {
        lines.push(place.join(" · "));
    }
    let body = lines
        .iter()
        .map(|l| {
            let cut = truncate_chars(&portable(l), LINE_MAX);
            if markup { escape(&cut) } else { cut }
        })
        .collect::<Vec<_>>()
        .join("\n");
    Text {
        summary: one_line_preview(&summary, SUMMARY_MAX),
        body,
    }
}

/// "Claude" for `claude`: the harness name with a capital.
fn agent_name(s: &Session) -> String {
    let name = s.harness.as_str();
    let mut chars = name.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => "Agent".to_owned(),
    }
}

fn why(show: &Show) -> String {
    let attention = show.session.attention.as_ref();
    match show.kind {
        Kind::Permission => match attention.and_then(|a| a.tool.as_deref()) {
            Some(tool) => format!("needs permission: {tool}"),
            None => "needs permission".to_owned(),
        },
        Kind::Input => match attention.map(|a| a.reason.as_str()) {
            Some(reason) if reason != "input" && !reason.is_empty() => {
                format!("needs input: {}", reason.replace('_', " "))
            }
            _ => "needs input".to_owned(),
        },
        Kind::Idle => "finished".to_owned(),
        Kind::Error => match &show.session.last_error {
            Some(e) => format!("stopped on an error: {}", e.replace('_', " ")),
            None => "stopped on an error".to_owned(),
        },
    }
}

/// Whole seconds, as "3m 12s".
fn human(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

/// Escapes the characters the notification body markup gives meaning to.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use atm_core::chrono::Utc;
    use atm_core::{AgentState, Attention};
    use std::sync::Arc;

    fn attention(reason: &str, tool: Option<String>, detail: Option<String>) -> Attention {
        Attention {
            reason: reason.into(),
            tool,
            detail,
            ..Attention::default()
        }
    }

    fn permission(tool: impl Into<String>, detail: Option<String>) -> Attention {
        attention("permission", Some(tool.into()), detail)
    }

    fn show(kind: Kind, edit: impl FnOnce(&mut Session)) -> Show {
        let mut s = atm_core::testing::claude_session("s", Utc::now());
        s.state = AgentState::NeedsPermission;
        s.cwd = Some("/home/u/src/other".into());
        s.git.project_root = Some("/home/u/src/myrepo".into());
        s.git.branch = Some("main".into());
        s.tmux_pane = Some("%5".into());
        edit(&mut s);
        Show {
            kind,
            session: Arc::new(s),
            turn: None,
        }
    }

    #[test]
    fn nul_noncharacters_and_controls_never_reach_the_notification_server() {
        let sh = show(Kind::Permission, |s| {
            s.attention = Some(permission(
                "Ba\u{0}sh\u{FFFE}",
                Some("rm\u{0} -rf \u{FDD0}x".into()),
            ));
            s.git.branch = Some("ma\u{0}in\u{FFFF}\u{7}".into());
            s.tmux_pane = Some("%5\u{1b}".into());
        });
        for markup in [true, false] {
            let t = render(&sh, None, markup);
            for text in [&t.summary, &t.body] {
                assert!(
                    text.chars()
                        .all(|c| atm_core::text::is_portable(c) || c == '\n'),
                    "{text:?}"
                );
            }
            assert!(
                t.body.contains("branch ma\u{FFFD}in\u{FFFD}\u{FFFD}"),
                "{:?}",
                t.body
            );
        }
    }

    #[test]
    fn permission_names_agent_tool_and_project() {
        let sh = show(Kind::Permission, |s| {
            s.attention = Some(permission("Bash", Some("cargo test && echo <ok>".into())))
        });
        let t = render(&sh, Some("work:1.0"), true);
        assert_eq!(t.summary, "Claude needs permission: Bash · myrepo");
        assert_eq!(
            t.body,
            "cargo test &amp;&amp; echo &lt;ok&gt;\nbranch main · tmux work:1.0"
        );
        let plain = render(&sh, None, false);
        assert_eq!(plain.body, "cargo test && echo <ok>\nbranch main · tmux %5");
    }

    #[test]
    fn a_remote_session_names_its_host() {
        let sh = show(Kind::Permission, |s| {
            s.attention = Some(permission("Bash", None));
            s.host = atm_core::HostId::parse("devbox").unwrap();
            s.remote = Some(Default::default());
        });
        assert_eq!(
            render(&sh, None, true).summary,
            "Claude needs permission: Bash · myrepo @ devbox"
        );
        // A local session does not: its host is this machine.
        let local = show(Kind::Permission, |s| {
            s.attention = Some(permission("Bash", None))
        });
        assert!(!render(&local, None, true).summary.contains('@'));
    }

    #[test]
    fn input_idle_and_error_say_why() {
        let sh = show(Kind::Input, |s| {
            s.attention = Some(attention("plan_approval", None, None))
        });
        assert_eq!(
            render(&sh, None, true).summary,
            "Claude needs input: plan approval · myrepo"
        );
        let mut sh = show(Kind::Idle, |s| {
            s.first_prompt = Some("fix the tests".into());
            s.git = Default::default();
            s.tmux_pane = None;
        });
        sh.turn = Some(Duration::from_millis(192_400));
        let t = render(&sh, None, true);
        assert_eq!(t.summary, "Claude finished · other");
        assert_eq!(t.body, "Worked for 3m 12s\nfix the tests");
        let sh = show(Kind::Error, |s| s.last_error = Some("rate_limit".into()));
        assert_eq!(
            render(&sh, None, true).summary,
            "Claude stopped on an error: rate limit · myrepo"
        );
    }

    #[test]
    fn long_and_multibyte_texts_are_cut_by_characters() {
        let sh = show(Kind::Permission, |s| {
            s.attention = Some(permission("ツール".repeat(100), Some("é&".repeat(500))));
            s.git.project_root = None;
            s.cwd = None;
            s.git.branch = None;
            s.tmux_pane = None;
        });
        let t = render(&sh, None, true);
        assert_eq!(t.summary.chars().count(), SUMMARY_MAX);
        assert!(t.summary.ends_with('…'));
        // Cut first, then escaped: no entity is ever split.
        assert!(t.body.ends_with('…'), "{}", t.body);
        assert!(!t.body.contains("&am…"));
        assert_eq!(t.body.matches("&amp;").count(), (LINE_MAX - 1) / 2);
    }

    #[test]
    fn control_characters_never_reach_the_summary() {
        let sh = show(Kind::Permission, |s| {
            s.attention = Some(permission("Ba\nsh\u{1b}", None))
        });
        let t = render(&sh, None, false);
        assert!(!t.summary.chars().any(char::is_control), "{:?}", t.summary);
    }

    /// The notification renderer fed hostile text (the fuzz property the `notify_render` fuzz
    /// target runs for longer): the summary is one portable line of at most [`SUMMARY_MAX`]
    /// characters; the body is at most three portable lines of at most [`LINE_MAX`]
    /// characters each, and with markup every `<`, `>` and `&` of the text is escaped, so no
    /// agent's text can open a tag or an entity in the server's renderer.
    mod fuzz {
        use super::*;
        use atm_core::testing::{arb_hostile_field, arb_hostile_session};
        use atm_core::text::is_portable;
        use proptest::prelude::*;

        /// The text a markup body shows, or `None` if some `&` starts no entity of ours.
        fn unescaped(line: &str) -> Option<String> {
            let mut out = String::new();
            let mut rest = line;
            while let Some(at) = rest.find('&') {
                out.push_str(&rest[..at]);
                let tail = &rest[at..];
                let (c, len) = [("&amp;", '&'), ("&lt;", '<'), ("&gt;", '>')]
                    .iter()
                    .find(|(e, _)| tail.starts_with(e))
                    .map(|(e, c)| (*c, e.len()))?;
                out.push(c);
                rest = &tail[len..];
            }
            out.push_str(rest);
            Some(out)
        }

        fn kind() -> impl Strategy<Value = Kind> {
            prop::sample::select(&[Kind::Permission, Kind::Input, Kind::Idle, Kind::Error])
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(400))]
            #[test]
            fn any_session_text_renders_to_a_valid_notification(
                session in arb_hostile_session(),
                kind in kind(),
                location in arb_hostile_field(),
                turn in proptest::option::of(0u64..1_000_000),
                markup in any::<bool>(),
            ) {
                let show = Show {
                    kind,
                    session: Arc::new(session),
                    turn: turn.map(Duration::from_secs),
                };
                let t = render(&show, location.as_deref(), markup);
                prop_assert!(t.summary.chars().count() <= SUMMARY_MAX, "{:?}", t.summary);
                prop_assert!(t.summary.chars().all(is_portable), "{:?}", t.summary);
                let lines: Vec<&str> = t.body.split('\n').collect();
                prop_assert!(lines.len() <= 3, "{:?}", t.body);
                for line in lines {
                    prop_assert!(line.chars().all(is_portable), "{:?}", line);
                    let shown = if markup {
                        prop_assert!(!line.contains(['<', '>']), "{:?}", line);
                        unescaped(line)
                    } else {
                        Some(line.to_owned())
                    };
                    prop_assert!(shown.is_some(), "a bare `&` in {:?}", line);
                    let shown = shown.unwrap_or_default();
                    prop_assert!(shown.chars().count() <= LINE_MAX, "{:?}", line);
                }
            }
        }
    }
}
