//! The client side of atm.
//!
//! - [`hook`]: `atm-hook`, the tiny program agents' hooks and status lines run. It has no async
//!   runtime and reads no config file, because it sits on the agent's critical path.
//! - [`setup`]: `atmctl setup <agent>`: installs and removes hook configuration safely.
//! - [`client`]: `atmctl list|watch|get`, and the one query connection every command opens;
//!   [`format`] renders their output.
//! - [`status`]: `atmctl status [--format] [--follow]`, rendered by [`bar`] for each status bar.
//! - [`focus`]: `atmctl focus`: takes the attached tmux client to an agent's pane.
//! - [`web`]: `atmctl web`: where the web board is and how to log in.

pub mod bar;
pub mod client;
pub mod doctor;
pub mod focus;
pub mod format;
pub mod hook;
pub mod requests;
pub mod setup;
pub mod status;
pub mod web;
