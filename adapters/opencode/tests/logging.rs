//! The outage log: one warning per outage, however many attempts fail. In a test binary of its
//! own, because a thread-scoped log subscriber only sees every event when no other test's
//! thread registers the same log call sites first.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests report failures by panicking

mod common;

use adapter_opencode::OpencodeStats;
use atm_core::testing::LogCapture;
use common::{Running, SseServer, status};
use tokio::net::TcpListener;

#[tokio::test]
async fn an_outage_is_logged_once() {
    let logs = LogCapture::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(atm_core::tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = atm_core::tracing::subscriber::set_default(subscriber);

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let run = Running::start(&format!("http://127.0.0.1:{port}"), None).await;
    run.wait_for_failed_attempts(3).await;
    assert_eq!(
        logs.count("unavailable"),
        1,
        "one warning per outage: {}",
        logs.text()
    );
    let mut server = SseServer::on(TcpListener::bind(("127.0.0.1", port)).await.unwrap());
    let mut conn = server.next_conn().await;
    conn.send(&status("ses_l", "busy")).await;
    run.wait_for_state("ses_l", "working").await;
    assert_eq!(logs.count("opencode event stream back"), 1);
    // A second outage gets its own single warning.
    let failed = OpencodeStats::get(&run.stats.failed_attempts);
    drop(conn);
    drop(server);
    run.wait_for_failed_attempts(failed + 3).await;
    assert_eq!(logs.count("unavailable"), 2, "one warning per outage");
    run.stop().await;
}
