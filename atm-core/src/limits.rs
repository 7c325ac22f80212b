//! Limits on what one session may hold: the numbers, enforced by [`crate::sanitize`].
//!
//! A module of its own, depending on nothing, so that the model, the state machine, the
//! registry and the translators read the same numbers without depending on each other.

pub const ID: usize = 256;
pub const PATH: usize = 4096;
pub const NAME: usize = 128;
pub const PREVIEW: usize = 200;
pub const FIRST_PROMPT: usize = 200;
pub const CHILDREN: usize = 64;
pub const RETIRED_IDS: usize = 8;
/// Rate-limit windows kept per session (Claude reports two).
pub const RATE_LIMITS: usize = 8;
/// "Always allow" rules kept with a wait (Claude offers two or three).
pub const SUGGESTIONS: usize = 4;
/// The largest such rule kept, as JSON.
pub const SUGGESTION_BYTES: usize = 2048;

/// Ended requests kept per session (its audit trail of answers).
pub const REQUEST_LOG: usize = 16;
/// Questions kept with one wait, and choices per question (Claude asks at most 4 of 4).
pub const QUESTIONS: usize = 8;
pub const QUESTION_OPTIONS: usize = 16;

/// How far in the future a session's times may be before they are taken for a clock that was
/// wrong (a snapshot written by a clock that ran ahead, a clock set back while running).
pub const FUTURE_TOLERANCE: chrono::Duration = chrono::Duration::minutes(1);
