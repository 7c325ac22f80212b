//! What a status bar shows: one line per [`BarFormat`] for a set of sessions, or for a daemon
//! that is not there.
//!
//! Pure and separate from the socket code so that every format is tested without a daemon and
//! `--follow` can compare rendered lines (it prints only when the line a bar would show
//! changes). Nothing time-dependent ("5s ago") goes into a line, or `--follow` would print every
//! second for nothing.
//!
//! The tmux, polybar and i3blocks lines carry only counts and the cost, never text from a
//! session, so no markup can leak in; Waybar's tooltip names projects and tools, and is escaped
//! for Pango, which Waybar renders it with.

use std::fmt::Write as _;

use atm_core::{AgentState, SessionView};
use serde_json::json;

/// The output formats of `atmctl status --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BarFormat {
    /// `2 working · 1 needs you · 3 idle · $4.20`
    Plain,
    /// The plain line with tmux colour markup (`#[fg=red]`), for `status-right`.
    Tmux,
    /// Waybar's custom-module JSON: text, tooltip, class (the most urgent state), percentage.
    Waybar,
    /// i3blocks/i3bar JSON (`format=json`): full_text, short_text, color, urgent.
    I3blocks,
    /// The plain line with polybar colour tags (`%{F#rrggbb}`).
    Polybar,
}

/// Why there is nothing to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Down {
    /// No daemon answers on the socket.
    NotRunning,
    /// A daemon answered with something atmctl cannot read (the message says what).
    Error(String),
}

const RED: &str = "#ff5555";
const GREEN: &str = "#50fa7b";
const GREY: &str = "#888888";

/// The counts a bar shows, most urgent first.
#[derive(Debug, Default, Clone, PartialEq)]
struct Summary {
    needs_you: usize,
    working: usize,
    idle: usize,
    cost: f64,
    /// The fullest context window, 0-100.
    context: f64,
    /// The most urgent state of any session.
    urgent: Option<AgentState>,
}

/// Higher is more urgent: what the user must act on first.
fn urgency(s: AgentState) -> u8 {
    match s {
        AgentState::NeedsPermission => 4,
        AgentState::NeedsInput => 3,
        AgentState::Working => 2,
        AgentState::Starting => 1,
        AgentState::Idle => 0,
    }
}

impl Summary {
    fn of(views: &[SessionView]) -> Self {
        let mut s = Self::default();
        for v in views {
            match v.state {
                st if st.needs_attention() => s.needs_you += 1,
                AgentState::Working => s.working += 1,
                _ => s.idle += 1,
            }
            s.cost += v.cost_usd;
            if v.context_percentage.is_finite() {
                s.context = s.context.max(v.context_percentage.clamp(0.0, 100.0));
            }
            if s.urgent.is_none_or(|u| urgency(v.state) > urgency(u)) {
                s.urgent = Some(v.state);
            }
        }
        s
    }

    /// The non-zero counts as (number, label, colour), in the order the plain line shows them.
    fn parts(&self) -> Vec<(usize, &'static str, Option<&'static str>)> {
        [
            (self.working, "working", Some(GREEN)),
            (self.needs_you, "needs you", Some(RED)),
            (self.idle, "idle", None),
        ]
        .into_iter()
        .filter(|(n, _, _)| *n > 0)
        .collect()
    }

    fn class(&self) -> &'static str {
        self.urgent.map_or("none", AgentState::as_str)
    }
}

/// Joins the counts and the cost, each count wrapped by `paint(text, colour)`.
fn line(s: &Summary, paint: impl Fn(&str, &str) -> String) -> String {
    let mut parts: Vec<String> = s
        .parts()
        .into_iter()
        .map(|(n, label, colour)| {
            let text = format!("{n} {label}");
            match colour {
                Some(c) => paint(&text, c),
                None => text,
            }
        })
        .collect();
    parts.push(format!("${:.2}", s.cost));
    parts.join(" · ")
}

/// `status`'s plain line: `2 working · 1 needs you · 3 idle · $4.20`.
pub fn format_status(views: &[SessionView]) -> String {
    if views.is_empty() {
        return "no agents".to_owned();
    }
    line(&Summary::of(views), |t, _| t.to_owned())
}

/// One tooltip line per session, most urgent first.
fn tooltip(views: &[SessionView]) -> String {
    let mut sorted: Vec<&SessionView> = views.iter().collect();
    sorted.sort_by_key(|v| std::cmp::Reverse(urgency(v.state)));
    let mut out = String::new();
    for v in sorted {
        if !out.is_empty() {
            out.push('\n');
        }
        let _ = write!(
            out,
            "{} {} {} {} · {} · {:.0}% · {}",
            v.status_icon,
            v.id_short,
            v.harness,
            v.state,
            crate::format::project_name(v),
            v.context_percentage,
            v.cost_display
        );
        if let Some(a) = &v.activity_detail {
            let _ = write!(out, " · {a}");
        }
    }
    out
}

/// Escapes text for Pango markup (Waybar renders text and tooltip as markup).
fn pango(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Renders what `format` shows for `views`.
pub fn render(format: BarFormat, views: &[SessionView]) -> String {
    let s = Summary::of(views);
    let plain = format_status(views);
    match format {
        BarFormat::Plain => plain,
        BarFormat::Tmux if views.is_empty() => plain,
        BarFormat::Tmux => line(&s, |t, c| format!("#[fg={c}]{t}#[default]")),
        BarFormat::Polybar if views.is_empty() => plain,
        BarFormat::Polybar => line(&s, |t, c| format!("%{{F{c}}}{t}%{{F-}}")),
        BarFormat::Waybar => json!({
            "text": pango(&plain),
            "tooltip": pango(&tooltip(views)),
            "class": s.class(),
            "percentage": s.context.round() as u64,
        })
        .to_string(),
        BarFormat::I3blocks => {
            let mut block = json!({
                "full_text": plain,
                "short_text": short(&s, views.is_empty()),
                "urgent": s.needs_you > 0,
            });
            let colour = if s.needs_you > 0 {
                Some(RED)
            } else if s.working > 0 {
                Some(GREEN)
            } else {
                None
            };
            if let (Some(c), Some(obj)) = (colour, block.as_object_mut()) {
                obj.insert("color".into(), json!(c));
            }
            block.to_string()
        }
    }
}

/// A narrow bar's text: `!1 >2 -3`, the icons the published clients use.
fn short(s: &Summary, empty: bool) -> String {
    if empty {
        return "-".to_owned();
    }
    let mut out = Vec::new();
    for (n, icon) in [(s.needs_you, '!'), (s.working, '>'), (s.idle, '-')] {
        if n > 0 {
            out.push(format!("{icon}{n}"));
        }
    }
    out.join(" ")
}

/// What `format` shows while there is no daemon to ask.
pub fn render_down(format: BarFormat, down: &Down) -> String {
    let (text, detail) = match down {
        Down::NotRunning => (
            "atmd not running",
            "atmd is not running; start it with `atmd` or `systemctl --user start atmd`".to_owned(),
        ),
        Down::Error(e) => ("atm error", e.clone()),
    };
    let class = match down {
        Down::NotRunning => "not_running",
        Down::Error(_) => "error",
    };
    match format {
        BarFormat::Plain => text.to_owned(),
        BarFormat::Tmux => format!("#[fg={GREY}]{text}#[default]"),
        BarFormat::Polybar => format!("%{{F{GREY}}}{text}%{{F-}}"),
        BarFormat::Waybar => json!({
            "text": text,
            "tooltip": pango(&detail),
            "class": class,
            "percentage": 0,
        })
        .to_string(),
        BarFormat::I3blocks => json!({
            "full_text": text,
            "short_text": "atm?",
            "color": GREY,
            "urgent": false,
        })
        .to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::tests::view;
    use serde_json::Value;

    fn mixed() -> Vec<SessionView<'static>> {
        let mut full = view("c", AgentState::NeedsPermission, 0.2, "/src/a&b<c>");
        full.context_percentage = 87.4;
        vec![
            view("a", AgentState::Working, 1.0, "/a"),
            view("b", AgentState::Working, 2.0, "/b"),
            full,
            view("d", AgentState::Idle, 1.0, "/d"),
            view("e", AgentState::Starting, 0.0, "/e"),
        ]
    }

    #[test]
    fn status_counts_states_and_sums_cost() {
        let views = mixed();
        assert_eq!(
            format_status(&views),
            "2 working · 1 needs you · 2 idle · $4.20"
        );
        assert_eq!(format_status(&[]), "no agents");
        assert_eq!(
            format_status(&[view("x", AgentState::NeedsInput, 0.0, "/")]),
            "1 needs you · $0.00"
        );
    }

    #[test]
    fn tmux_and_polybar_colour_the_counts() {
        let views = mixed();
        assert_eq!(
            render(BarFormat::Tmux, &views),
            "#[fg=#50fa7b]2 working#[default] · #[fg=#ff5555]1 needs you#[default] · 2 idle · $4.20"
        );
        assert_eq!(
            render(BarFormat::Polybar, &views),
            "%{F#50fa7b}2 working%{F-} · %{F#ff5555}1 needs you%{F-} · 2 idle · $4.20"
        );
        assert_eq!(render(BarFormat::Tmux, &[]), "no agents");
        assert_eq!(render(BarFormat::Plain, &views), format_status(&views));
    }

    #[test]
    fn waybar_json_has_text_tooltip_the_most_urgent_class_and_context() {
        let v: Value = serde_json::from_str(&render(BarFormat::Waybar, &mixed())).unwrap();
        assert_eq!(v["text"], "2 working · 1 needs you · 2 idle · $4.20");
        assert_eq!(v["class"], "needs_permission");
        assert_eq!(v["percentage"], 87);
        let tooltip = v["tooltip"].as_str().unwrap();
        assert_eq!(tooltip.lines().count(), 5, "{tooltip}");
        assert!(tooltip.lines().next().unwrap().contains("needs_permission"));
        // Pango markup: a project name cannot inject tags.
        assert!(tooltip.contains("a&amp;b&lt;c&gt;"), "{tooltip}");
        let idle: Value = serde_json::from_str(&render(BarFormat::Waybar, &mixed()[3..])).unwrap();
        assert_eq!(idle["class"], "starting");
        let none: Value = serde_json::from_str(&render(BarFormat::Waybar, &[])).unwrap();
        assert_eq!(
            (none["class"].as_str(), none["percentage"].as_u64()),
            (Some("none"), Some(0))
        );
    }

    #[test]
    fn i3blocks_json_is_an_i3bar_block() {
        let v: Value = serde_json::from_str(&render(BarFormat::I3blocks, &mixed())).unwrap();
        assert_eq!(v["full_text"], "2 working · 1 needs you · 2 idle · $4.20");
        assert_eq!(v["short_text"], "!1 >2 -2");
        assert_eq!(v["color"], RED);
        assert_eq!(v["urgent"], true);
        let calm: Value =
            serde_json::from_str(&render(BarFormat::I3blocks, &mixed()[3..4])).unwrap();
        assert_eq!(calm["urgent"], false);
        assert!(calm.get("color").is_none(), "{calm}");
    }

    #[test]
    fn every_format_says_when_atmd_is_not_running() {
        for format in [
            BarFormat::Plain,
            BarFormat::Tmux,
            BarFormat::Waybar,
            BarFormat::I3blocks,
            BarFormat::Polybar,
        ] {
            let line = render_down(format, &Down::NotRunning);
            assert!(line.contains("atmd not running"), "{format:?}: {line}");
            assert!(!line.contains('\n'), "{format:?}: one line");
        }
        let v: Value =
            serde_json::from_str(&render_down(BarFormat::Waybar, &Down::NotRunning)).unwrap();
        assert_eq!(v["class"], "not_running");
        let e = render_down(BarFormat::Waybar, &Down::Error("bad <reply>".into()));
        let v: Value = serde_json::from_str(&e).unwrap();
        assert_eq!(
            (v["class"].as_str(), v["tooltip"].as_str()),
            (Some("error"), Some("bad &lt;reply&gt;"))
        );
        let v: Value =
            serde_json::from_str(&render_down(BarFormat::I3blocks, &Down::NotRunning)).unwrap();
        assert_eq!(v["full_text"], "atmd not running");
    }

    #[test]
    fn a_nonsense_context_share_stays_in_range() {
        let mut v = view("x", AgentState::Idle, 0.0, "/");
        v.context_percentage = f64::NAN;
        let mut w = view("y", AgentState::Idle, 0.0, "/");
        w.context_percentage = 1e9;
        let out: Value = serde_json::from_str(&render(BarFormat::Waybar, &[v, w])).unwrap();
        assert_eq!(out["percentage"], 100);
    }
}
