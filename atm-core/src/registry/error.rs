//! What a registry call can fail with.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("session {0} not found")]
    SessionNotFound(String),
    #[error(
        "the registry is full ({max} sessions); raise `max_sessions` in [daemon] or wait for stale sessions to expire"
    )]
    RegistryFull { max: usize },
    #[error("the registry is not running (the daemon is shutting down)")]
    ChannelClosed,
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}
