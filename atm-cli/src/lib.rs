//! The client side of atm.
//!
//! - [`hook`]: `atm-hook`, the tiny program agents' hooks and status lines run. It has no async
//!   runtime and reads no config file, because it sits on the agent's critical path.
//! - [`setup`]: `atmctl setup <agent>`: installs and removes hook configuration safely.
//! - [`client`]: `atmctl list|watch|status|get`: queries the daemon's socket.

pub mod client;
pub mod hook;
pub mod setup;
