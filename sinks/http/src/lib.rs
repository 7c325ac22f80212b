//! The `http` sink: atm's web board and Prometheus `/metrics` (issue 17).
//!
//! This file holds only what the metrics need; the server (axum, token, board, SSE, JSON API)
//! joins it.

pub mod metrics;
