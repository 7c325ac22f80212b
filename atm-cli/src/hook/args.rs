//! `atm-hook`'s command line, parsed by hand: a parser that exits 2 on a typo would break the
//! agent's session, so unknown arguments are ignored rather than refused.

use std::ffi::OsString;

/// What `atm-hook` was asked to do.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HookArgs {
    /// `--agent NAME`: routes the event to another agent's adapter (`hook_event:NAME`).
    pub agent: Option<String>,
    /// `statusline`: status-line mode.
    pub statusline: bool,
    /// Everything after `--` in status-line mode: the user's own status-line command.
    pub user_command: Vec<OsString>,
    /// `--notify`: the event is the last argument, not stdin (Codex's `notify` program gets
    /// its JSON appended to the configured command). Empty when no argument followed.
    pub notify: Option<Vec<u8>>,
}

impl HookArgs {
    /// Parses `[--agent NAME] [statusline [--agent NAME] [-- CMD ...]]` or
    /// `[--agent NAME] --notify JSON`. Unknown arguments are ignored: a hook must not fail
    /// because its command line has a typo.
    pub fn parse(args: impl IntoIterator<Item = OsString>) -> Self {
        let mut out = Self::default();
        let mut args = args.into_iter();
        let mut last = None;
        while let Some(arg) = args.next() {
            if arg == "--" {
                out.user_command = args.collect();
                break;
            }
            if arg == "statusline" {
                out.statusline = true;
            } else if arg == "--notify" {
                out.notify = Some(Vec::new());
            } else if arg == "--agent" {
                out.agent = args.next().and_then(|a| a.into_string().ok());
            } else if let Some(name) = arg.to_str().and_then(|a| a.strip_prefix("--agent=")) {
                out.agent = Some(name.to_owned());
            }
            last = Some(arg);
        }
        // The payload is whatever came last, wherever `--notify` stood: Codex appends it.
        if let Some(payload) = out.notify.as_mut()
            && let Some(last) = last.filter(|a| a != "--notify")
        {
            *payload = last.into_encoded_bytes();
        }
        // Claude is the default route; naming it explicitly must not change the route.
        if out
            .agent
            .as_deref()
            .is_some_and(|a| a.is_empty() || a == "claude")
        {
            out.agent = None;
        }
        if !out.statusline {
            out.user_command.clear();
        } else {
            out.notify = None;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn parses_arguments_leniently() {
        assert_eq!(HookArgs::parse(os(&[])), HookArgs::default());
        let a = HookArgs::parse(os(&["--agent", "codex"]));
        assert_eq!(a.agent.as_deref(), Some("codex"));
        assert!(!a.statusline);
        assert_eq!(HookArgs::parse(os(&["--agent=claude"])).agent, None);
        assert_eq!(HookArgs::parse(os(&["--agent"])).agent, None);
        let s = HookArgs::parse(os(&["statusline", "--", "echo hi", "--agent", "x"]));
        assert!(s.statusline);
        assert_eq!(s.agent, None);
        assert_eq!(s.user_command, os(&["echo hi", "--agent", "x"]));
        let junk = HookArgs::parse(os(&["--bogus", "-x", "statusline"]));
        assert!(junk.statusline && junk.user_command.is_empty());
        // `--` outside status-line mode carries nothing.
        assert!(HookArgs::parse(os(&["--", "rm"])).user_command.is_empty());
        // Notify: the payload is the last argument, wherever `--notify` stands.
        let n = HookArgs::parse(os(&["--agent", "codex", "--notify", r#"{"type":"x"}"#]));
        assert_eq!(n.agent.as_deref(), Some("codex"));
        assert_eq!(n.notify.as_deref(), Some(&br#"{"type":"x"}"#[..]));
        let n = HookArgs::parse(os(&["--notify", "--agent", "codex", "{}"]));
        assert_eq!(n.notify.as_deref(), Some(&b"{}"[..]));
        assert_eq!(
            HookArgs::parse(os(&["--notify"])).notify.as_deref(),
            Some(&b""[..])
        );
        assert_eq!(HookArgs::parse(os(&["{}"])).notify, None);
        assert_eq!(
            HookArgs::parse(os(&["statusline", "--notify"])).notify,
            None
        );
    }
}
