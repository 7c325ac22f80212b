//! The human-readable renderings of `atmctl list`, `watch` and `get`: a table padded by
//! characters (ids and paths may be non-ASCII), one line per update, and `key: value` details.
//! Pure functions of session views; decoding the daemon's messages is [`crate::client`]'s.

use atm_core::SessionView;

/// The last component of the project root, else of the working directory.
pub(crate) fn project_name(v: &SessionView) -> String {
    let path = v
        .project_root
        .as_deref()
        .or(v.working_directory.as_deref())
        .unwrap_or("");
    let name = path.trim_end_matches('/').rsplit('/').next().unwrap_or("");
    if name.is_empty() {
        "-".to_owned()
    } else {
        name.to_owned()
    }
}

fn activity(v: &SessionView) -> String {
    v.activity_detail.as_deref().unwrap_or("-").to_owned()
}

/// What the HOST column says: the host, marked `(stale)` while it is not heard.
fn host_cell(v: &SessionView) -> String {
    let host = if v.host.is_empty() { "-" } else { &v.host };
    if v.stale {
        format!("{host} (stale)")
    } else {
        host.to_owned()
    }
}

/// `list`'s table, columns padded by characters (ids and paths may be non-ASCII). A HOST
/// column comes first when the sessions run on more than one machine.
pub fn format_table(views: &[SessionView]) -> String {
    if views.is_empty() {
        return "no sessions\n".to_owned();
    }
    let several_hosts = views.iter().any(|v| v.host != views[0].host || v.remote);
    let mut header = vec![
        "ID", "HARNESS", "STATE", "ACTIVITY", "PROJECT", "CTX", "COST", "AGE",
    ];
    if several_hosts {
        header.insert(0, "HOST");
    }
    let rows: Vec<Vec<String>> = views
        .iter()
        .map(|v| {
            let mut row = vec![
                v.id_short.to_string(),
                v.harness.to_string(),
                v.state.as_str().to_owned(),
                atm_core::text::truncate_chars(&activity(v), 20),
                atm_core::text::truncate_chars(&project_name(v), 24),
                format!("{:.0}%", v.context_percentage),
                v.cost_display.to_string(),
                v.age_display.trim_end_matches(" ago").to_owned(),
            ];
            if several_hosts {
                row.insert(0, host_cell(v));
            }
            row
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut push_row = |cells: &[String]| {
        let mut line = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths.iter().copied()).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            if i + 1 < cells.len() {
                line.extend(std::iter::repeat_n(' ', w - cell.chars().count()));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    };
    push_row(&header.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>());
    for row in &rows {
        push_row(row);
    }
    out
}

/// `watch`'s line for one session.
pub fn format_watch_line(v: &SessionView) -> String {
    format!(
        "{}  {}  {}  {}  {}  {:.0}%  {}",
        v.id_short,
        v.harness,
        v.state,
        activity(v),
        project_name(v),
        v.context_percentage,
        v.cost_display
    )
}

/// `get`'s details, one `key: value` per line.
pub fn format_details(v: &SessionView) -> String {
    let mut rows: Vec<(&str, String)> = vec![
        ("id", v.id.to_string()),
        ("host", host_cell(v)),
        ("harness", v.harness.to_string()),
        ("state", format!("{} (since {})", v.state, v.state_since)),
        ("activity", activity(v)),
    ];
    if let Some(a) = &v.attention {
        let mut text = a.reason.clone();
        if let Some(t) = &a.tool {
            text.push_str(&format!(": {t}"));
        }
        if let Some(d) = &a.detail {
            text.push_str(&format!(" ({d})"));
        }
        rows.push(("attention", text));
    }
    rows.push(("model", v.model.to_string()));
    let optional = [
        ("directory", &v.working_directory),
        ("project", &v.project_root),
        ("branch", &v.worktree_branch),
        ("tmux pane", &v.tmux_pane),
        ("error", &v.error),
    ];
    for (k, val) in optional {
        if let Some(val) = val {
            rows.push((k, val.to_string()));
        }
    }
    if let Some(pid) = v.pid {
        rows.push(("pid", pid.to_string()));
    }
    rows.push(("context", v.context_display.to_string()));
    rows.push(("cost", v.cost_display.to_string()));
    rows.push(("duration", v.duration_display.to_string()));
    rows.push(("lines", v.lines_display.to_string()));
    rows.push(("started", format!("{} ({})", v.started_at, v.age_display)));
    rows.push((
        "last activity",
        format!("{} ({})", v.last_activity, v.last_activity_display),
    ));
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (k, val) in rows {
        out.push_str(&format!("{k:<width$}  {val}\n"));
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use atm_core::AgentState;
    use chrono::Utc;

    /// A session view for unit tests of the renderers.
    pub(crate) fn view(id: &str, state: AgentState, cost: f64, cwd: &str) -> SessionView<'static> {
        let mut s = atm_core::testing::claude_session(id, Utc::now());
        s.state = state;
        s.usage.cost_usd = cost;
        s.cwd = Some(cwd.into());
        SessionView::from_session(&s, Utc::now()).into_owned()
    }

    #[test]
    fn the_table_aligns_non_ascii_cells_by_characters() {
        let views = [
            view(
                "日本語のセッション",
                AgentState::Working,
                0.5,
                "/home/ü/проект/",
            ),
            view("abcdef0123", AgentState::Idle, 12.0, "/srv/app"),
        ];
        let table = format_table(&views);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        assert!(lines[0].starts_with("ID"));
        assert!(lines[1].contains("日本語のセッショ") && lines[1].contains("проект"));
        assert!(lines[2].contains("abcdef01") && lines[2].contains("$12.00"));
        // Columns line up: STATE starts at the same character offset on every line.
        let col = |l: &str, word: &str| l.find(word).map(|b| l[..b].chars().count());
        assert_eq!(col(lines[0], "STATE"), col(lines[1], "working"));
        assert_eq!(col(lines[0], "STATE"), col(lines[2], "idle"));
        assert_eq!(format_table(&[]), "no sessions\n");
        assert!(
            !table.contains("HOST"),
            "one host, no HOST column:\n{table}"
        );
    }

    #[test]
    fn sessions_of_several_hosts_get_a_host_column() {
        let mut a = view("aaaa1111", AgentState::Working, 0.0, "/srv/a");
        a.host = "laptop".into();
        let mut b = view("bbbb2222", AgentState::Idle, 0.0, "/srv/b");
        b.host = "devbox".into();
        b.remote = true;
        b.stale = true;
        let table = format_table(&[a, b]);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("HOST"), "{table}");
        assert!(lines[1].starts_with("laptop") && lines[1].contains("aaaa1111"));
        assert!(lines[2].starts_with("devbox (stale)"), "{table}");
        let col = |l: &str, word: &str| l.find(word).map(|b| l[..b].chars().count());
        assert_eq!(col(lines[0], "ID"), col(lines[2], "bbbb2222"));
    }
}
