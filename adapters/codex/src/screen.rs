//! What a Codex pane shows: the signal for the one wait Codex fires no hook for.
//!
//! Codex 0.171 fires `SessionStart` with the first prompt, not when its TUI comes up, so a
//! Codex that waits at its first prompt would show `starting` until the user types. While a
//! Codex session in a tmux pane is `starting`, atm-core's pane watcher ([`atm_core::screen`])
//! reads it and asks [`classify`] what it shows ([`SCREEN`]); its prompt makes the session idle.
//! Everything later has a hook (`Interrupt` for Esc at an approval, `Stop` for a turn's end),
//! so other states are not read.

use atm_core::model::AgentState;
use atm_core::screen::PaneScreen;

/// How a Codex pane is read: only while the session is `starting`.
pub const SCREEN: PaneScreen = PaneScreen {
    watched: &[AgentState::Starting],
    classify,
};

/// The approval dialog's question.
const APPROVAL: &str = "Would you like to";
/// The status line while the model or a tool works (`Working (3s • esc to interrupt)`).
const BUSY: &str = "esc to interrupt";
/// The composer's footer hint, shown with the input box.
const PROMPT: &str = "for shortcuts";
/// Dialogs Codex shows over its prompt at start: not the prompt yet.
const START_DIALOGS: &[&str] = &["Hooks need review", "Do you trust"];

/// The state a captured Codex screen shows, `None` when it says nothing sure.
pub fn classify(screen: &str) -> Option<AgentState> {
    if screen.contains(APPROVAL) {
        Some(AgentState::NeedsPermission)
    } else if screen.contains(BUSY) {
        Some(AgentState::Working)
    } else if START_DIALOGS.iter().any(|d| screen.contains(d)) {
        None
    } else if screen.contains(PROMPT) {
        Some(AgentState::Idle)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codex_screens_are_classified() {
        let prompt = "╭──────────────╮\n│ >_ OpenAI Codex (v0.171.0) │\n╰──────────────╯\n\n› Ask Codex to do anything\n\n  ? for shortcuts                                   100% context left\n";
        assert_eq!(classify(prompt), Some(AgentState::Idle));
        let busy =
            "• Working (3s • esc to interrupt)\n\n› Ask Codex to do anything\n  ? for shortcuts\n";
        assert_eq!(classify(busy), Some(AgentState::Working));
        let approval =
            "  Would you like to run the following command?\n  $ touch x\n› 1. Yes, proceed (y)\n";
        assert_eq!(classify(approval), Some(AgentState::NeedsPermission));
        let trust = "  Hooks need review\n  12 hooks are new\n  ? for shortcuts\n";
        assert_eq!(classify(trust), None);
        assert_eq!(classify("Loading..."), None);
        assert_eq!(classify(""), None);
    }
}
