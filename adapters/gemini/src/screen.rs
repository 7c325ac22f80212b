//! What a Gemini CLI pane shows: the signal for the moves Gemini fires no hook for.
//!
//! Gemini CLI 0.61 fires no hook when the user answers its approval dialog with "Allow" (the
//! tool then runs, and only `AfterTool` follows when it is done), with Esc or "No" (the turn is
//! cancelled: nothing follows), or presses Esc while the model works, and it fires
//! `SessionStart` before its prompt is up. Its chat file records a cancel but not an approval,
//! and the process shows an approved shell command but nothing else; the screen shows all of
//! them. So while a Gemini session in a tmux pane is `starting`, `working` or
//! `needs_permission`, atm-core's pane watcher ([`atm_core::screen`]) reads it and asks
//! [`classify`] what it shows ([`SCREEN`]).

use atm_core::model::AgentState;
use atm_core::screen::PaneScreen;

/// How a Gemini pane is read: in the states Gemini may leave without a hook.
pub const SCREEN: PaneScreen = PaneScreen {
    watched: &[
        AgentState::Starting,
        AgentState::Working,
        AgentState::NeedsPermission,
    ],
    classify: |text| classify(text).state(),
};

/// What a Gemini CLI 0.61 pane shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Screen {
    /// A confirmation dialog ("Allow once", "Allow for this session", "No, suggest changes").
    Dialog,
    /// The model or a tool at work: the spinner line ends in "(esc to cancel, 3s)".
    Busy,
    /// The input box, nothing running, no dialog.
    Prompt,
    /// Anything else (starting up, another dialog, not Gemini's screen).
    Unknown,
}

impl Screen {
    /// The state this screen means, if any.
    pub fn state(self) -> Option<AgentState> {
        match self {
            Self::Dialog => Some(AgentState::NeedsPermission),
            Self::Busy => Some(AgentState::Working),
            Self::Prompt => Some(AgentState::Idle),
            Self::Unknown => None,
        }
    }
}

/// Classifies a captured Gemini CLI screen (`tmux capture-pane -p`).
pub fn classify(screen: &str) -> Screen {
    if screen.contains("Allow once") {
        Screen::Dialog
    } else if screen.contains("esc to cancel") {
        Screen::Busy
    } else if screen.contains("Type your message") || screen.contains("? for shortcuts") {
        Screen::Prompt
    } else {
        Screen::Unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_screens_are_classified() {
        let dialog = "│ ? Shell  touch /tmp/x\n│ Allow execution of [Shell]?\n│ ● 1. Allow once\n│   2. Allow for this session\n│   3. No, suggest changes (esc)\n";
        assert_eq!(classify(dialog), Screen::Dialog);
        let busy = " ⠼ Thinking... (esc to cancel, 1s)      ? for shortcuts\n >   Type your message or @path/to/file\n";
        assert_eq!(classify(busy), Screen::Busy);
        let prompt =
            "ℹ Request cancelled.\n    ? for shortcuts\n >   Type your message or @path/to/file\n";
        assert_eq!(classify(prompt), Screen::Prompt);
        assert_eq!(
            classify(" > half typed\n   ? for shortcuts\n"),
            Screen::Prompt
        );
        assert_eq!(classify("Gemini CLI v0.61.0\n"), Screen::Unknown);
    }
}
