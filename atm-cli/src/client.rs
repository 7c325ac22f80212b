//! `atmctl list|watch|status|get`: protocol-v1 queries against the daemon's query socket.
//! (Being written.)
