//! `atm-hook`: forwards an agent's hook or status-line JSON to the ingest socket.
//! (Being written.)
