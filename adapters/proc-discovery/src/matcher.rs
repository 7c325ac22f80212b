//! Which processes are agents: the per-agent matcher table.
//!
//! A process is judged by what it *is*, never by what it merely mentions: its executable
//! (`/proc/<pid>/exe`) and its `argv[0]`, and, only when one of those is an interpreter such as
//! `node`, the script that interpreter runs (its first non-option argument). That is what keeps
//! `vim claude` or `cat claude` out (their program is `vim`/`cat`; `claude` is just an argument)
//! while `node …/@anthropic-ai/claude-code/cli.js` and `node ~/.local/bin/claude` are found.
//! Node programs may also rename themselves (`process.title = "claude"`), which rewrites
//! `argv[0]`; the name rule catches that too.

use std::path::Path;

use serde::Deserialize;

/// One matcher as written in the config (`[[adapter.matcher]]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatcherConfig {
    /// The harness name sessions get (`claude`, `codex`, ...).
    pub harness: String,
    /// Basenames that name the agent itself, compared with `argv[0]` and the executable.
    #[serde(default)]
    pub names: Vec<String>,
    /// Interpreters (basenames of `argv[0]` or the executable) that may run the agent as a script.
    #[serde(default)]
    pub interpreters: Vec<String>,
    /// The interpreter's script names the agent when its basename (with `.js`/`.mjs`/`.cjs`
    /// removed) is one of these...
    #[serde(default)]
    pub script_names: Vec<String>,
    /// ...or when its path contains one of these.
    #[serde(default)]
    pub script_contains: Vec<String>,
}

impl MatcherConfig {
    /// Checks that the matcher can match something, with a message naming the fix.
    pub fn validate(&self) -> Result<(), String> {
        if self.harness.trim().is_empty() {
            return Err("a matcher has an empty `harness`; name the agent, e.g. \"claude\"".into());
        }
        let scripts = !self.script_names.is_empty() || !self.script_contains.is_empty();
        let by_script = scripts && !self.interpreters.is_empty();
        if self.names.is_empty() && !by_script {
            return Err(format!(
                "matcher for `{}` can never match: give `names`, or `interpreters` with `script_names`/`script_contains`",
                self.harness
            ));
        }
        if self
            .names
            .iter()
            .chain(&self.interpreters)
            .chain(&self.script_names)
            .chain(&self.script_contains)
            .any(|s| s.is_empty())
        {
            return Err(format!(
                "matcher for `{}` has an empty string in a list; remove it",
                self.harness
            ));
        }
        Ok(())
    }
}

const NODE_LIKE: [&str; 3] = ["node", "nodejs", "bun"];

fn owned(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn node_matcher(harness: &str, names: &[&str], contains: &[&str]) -> MatcherConfig {
    MatcherConfig {
        harness: harness.to_owned(),
        names: owned(names),
        interpreters: owned(&NODE_LIKE),
        script_names: owned(names),
        script_contains: owned(contains),
    }
}

/// The built-in table: Claude Code (native or under node), Codex, Gemini CLI, pi and opencode.
pub fn default_matchers() -> Vec<MatcherConfig> {
    vec![
        node_matcher("claude", &["claude"], &["@anthropic-ai/claude-code"]),
        node_matcher("codex", &["codex"], &["@openai/codex"]),
        node_matcher("gemini", &["gemini"], &["@google/gemini-cli"]),
        node_matcher("pi", &["pi"], &["@mariozechner/pi-coding-agent"]),
        node_matcher("opencode", &["opencode"], &["opencode-ai"]),
    ]
}

/// The table in effect: the user's matchers first; a user matcher replaces the default one with
/// the same harness; `use_defaults = false` drops the defaults altogether.
pub fn effective_matchers(user: &[MatcherConfig], use_defaults: bool) -> Vec<MatcherConfig> {
    let mut out = user.to_vec();
    if use_defaults {
        out.extend(
            default_matchers()
                .into_iter()
                .filter(|d| !user.iter().any(|u| u.harness == d.harness)),
        );
    }
    out
}

/// How a process matched: by its own name, or as an interpreter running the agent's script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchKind {
    Name,
    Script,
}

/// A process matched by the table: which matcher (its index) and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MatchResult {
    pub matcher: usize,
    pub kind: MatchKind,
}

/// The last path component, as text; `None` for an empty or non-UTF-8 name.
fn basename(s: &str) -> Option<&str> {
    let s = s.strip_suffix(" (deleted)").unwrap_or(s);
    Path::new(s)
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| !n.is_empty())
}

fn script_stem(name: &str) -> &str {
    for ext in [".js", ".mjs", ".cjs"] {
        if let Some(stem) = name.strip_suffix(ext) {
            return stem;
        }
    }
    name
}

/// Node options whose value is the next argument (so it is not the script).
const OPTIONS_WITH_VALUE: [&str; 8] = [
    "-r",
    "--require",
    "--import",
    "--loader",
    "--experimental-loader",
    "-C",
    "--conditions",
    "--inspect-port",
];
/// Node options after which there is no script (code comes from the command line).
const EVAL_OPTIONS: [&str; 4] = ["-e", "--eval", "-p", "--print"];

/// The script an interpreter runs: its first non-option argument (`bun run x` skips `run`).
fn script_of(args: &[String]) -> Option<&str> {
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        if EVAL_OPTIONS.contains(&a.as_str()) {
            return None;
        }
        if a == "--" {
            return it.next().map(String::as_str);
        }
        if OPTIONS_WITH_VALUE.contains(&a.as_str()) {
            it.next();
            continue;
        }
        if a.starts_with('-') || a == "run" {
            continue;
        }
        return Some(a.as_str());
    }
    None
}

/// Subcommands that run an agent's background server, not a session: Codex's
/// `codex app-server` (its daemon, `--managed-daemon`, and helpers such as
/// `app-server daemon pid-update-loop`), which serves the TUIs' threads and outlives them.
const SERVER_SUBCOMMANDS: &[(&str, &str)] = &[("codex", "app-server")];

fn is_server(harness: &str, argv: &[String]) -> bool {
    SERVER_SUBCOMMANDS
        .iter()
        .any(|(h, sub)| *h == harness && argv.get(1).is_some_and(|a| a == sub))
}

/// Finds the first matcher that claims a process with this `argv` and executable path.
pub fn match_process(
    matchers: &[MatcherConfig],
    argv: &[String],
    exe: Option<&str>,
) -> Option<MatchResult> {
    let argv0 = argv.first().and_then(|a| basename(a));
    let exe = exe.and_then(basename);
    for (i, m) in matchers.iter().enumerate() {
        let named = |n: Option<&str>| n.is_some_and(|n| m.names.iter().any(|x| x == n));
        if named(argv0) || named(exe) {
            if is_server(&m.harness, argv) {
                return None;
            }
            return Some(MatchResult {
                matcher: i,
                kind: MatchKind::Name,
            });
        }
        let interp = |n: Option<&str>| n.is_some_and(|n| m.interpreters.iter().any(|x| x == n));
        if !(interp(argv0) || interp(exe)) {
            continue;
        }
        let Some(script) = script_of(argv) else {
            continue;
        };
        let by_name = basename(script)
            .map(script_stem)
            .is_some_and(|s| m.script_names.iter().any(|x| x == s));
        let by_path = m
            .script_contains
            .iter()
            .any(|c| script.contains(c.as_str()));
        if by_name || by_path {
            return Some(MatchResult {
                matcher: i,
                kind: MatchKind::Script,
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| (*x).to_owned()).collect()
    }

    fn harness_of(a: &[&str], exe: Option<&str>) -> Option<String> {
        let ms = default_matchers();
        match_process(&ms, &argv(a), exe).map(|r| ms[r.matcher].harness.clone())
    }

    #[test]
    fn native_and_node_agents_match() {
        assert_eq!(
            harness_of(
                &["claude"],
                Some("/home/u/.local/share/claude/versions/2.0.1")
            ),
            Some("claude".into())
        );
        assert_eq!(
            harness_of(&["/home/u/.local/bin/claude", "--resume"], None),
            Some("claude".into())
        );
        assert_eq!(
            harness_of(
                &[
                    "node",
                    "--max-old-space-size=4096",
                    "/usr/lib/node_modules/@anthropic-ai/claude-code/cli.js"
                ],
                Some("/usr/bin/node")
            ),
            Some("claude".into())
        );
        assert_eq!(
            harness_of(&["node", "/usr/local/bin/claude"], Some("/usr/bin/node")),
            Some("claude".into())
        );
        assert_eq!(
            harness_of(
                &["node", "-r", "x.js", "/usr/bin/codex"],
                Some("/usr/bin/node")
            ),
            Some("codex".into())
        );
        assert_eq!(
            harness_of(&["/usr/bin/gemini"], Some("/usr/bin/node")),
            Some("gemini".into())
        );
        assert_eq!(
            harness_of(&["opencode"], Some("/x/opencode (deleted)")),
            Some("opencode".into())
        );
    }

    #[test]
    fn codexs_background_server_is_not_a_session() {
        let daemon = "/h/.codex/packages/app-server-daemon/releases/0.171.0/bin/codex";
        for args in [
            &[
                daemon,
                "app-server",
                "--listen",
                "unix://",
                "--managed-daemon",
            ][..],
            &[daemon, "app-server", "daemon", "pid-update-loop"][..],
        ] {
            assert_eq!(harness_of(args, Some(daemon)), None, "{args:?}");
        }
        assert_eq!(harness_of(&[daemon], Some(daemon)), Some("codex".into()));
        assert_eq!(
            harness_of(&[daemon, "exec", "app-server"], Some(daemon)),
            Some("codex".into())
        );
    }

    #[test]
    fn arguments_named_like_agents_do_not_match() {
        assert_eq!(harness_of(&["vim", "claude"], Some("/usr/bin/vim")), None);
        assert_eq!(
            harness_of(&["cat", "/tmp/claude"], Some("/usr/bin/cat")),
            None
        );
        assert_eq!(
            harness_of(&["node", "build.js", "claude"], Some("/usr/bin/node")),
            None
        );
        assert_eq!(
            harness_of(&["node", "-e", "claude"], Some("/usr/bin/node")),
            None
        );
        assert_eq!(
            harness_of(&["grep", "@anthropic-ai/claude-code"], None),
            None
        );
        assert_eq!(harness_of(&[], None), None);
        assert_eq!(harness_of(&[""], Some("")), None);
    }

    #[test]
    fn user_matchers_replace_defaults_of_the_same_harness() {
        let mine = MatcherConfig {
            harness: "claude".into(),
            names: vec!["my-claude".into()],
            interpreters: vec![],
            script_names: vec![],
            script_contains: vec![],
        };
        let all = effective_matchers(std::slice::from_ref(&mine), true);
        assert_eq!(all[0], mine);
        assert_eq!(all.iter().filter(|m| m.harness == "claude").count(), 1);
        assert_eq!(all.len(), default_matchers().len());
        assert_eq!(effective_matchers(&[mine], false).len(), 1);
        assert_eq!(
            match_process(&all, &argv(&["claude"]), None),
            None,
            "the replaced default no longer applies"
        );
    }

    #[test]
    fn validation_names_the_problem() {
        let mut m = default_matchers().remove(0);
        assert!(m.validate().is_ok());
        m.names.clear();
        m.interpreters.clear();
        assert!(m.validate().unwrap_err().contains("never match"));
        m.harness = " ".into();
        assert!(m.validate().unwrap_err().contains("harness"));
    }
}
