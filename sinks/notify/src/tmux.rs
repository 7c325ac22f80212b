//! The tmux calls this sink makes (the quiet rule, the location in the body, the Focus action)
//! live in [`atm_core::tmux`], shared with `atmctl focus` and the tmux-marks sink so that "take
//! the user to the agent" is decided in one place.

pub use atm_core::tmux::{TMUX_TIMEOUT, Tmux, TmuxError, TmuxSocket};
