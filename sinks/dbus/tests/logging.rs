//! An outage is logged once when it starts and once when it ends, however many retries it
//! takes (its own test binary, because it installs the global log subscriber).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails by panicking

mod common;

use atm_core::testing::LogCapture;
use common::*;
use sink_dbus as _;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_line_per_outage_not_per_retry() {
    let captured = LogCapture::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        // Retries log at debug level: counted to know that several happened.
        .with_env_filter("info,sink_dbus=debug")
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

    let (dir, socket, address) = address_in_new_dir("flaky.sock");
    let sink = SinkUnderTest::start(dir.path(), &address).await;
    // 50 ms doubling up to 400 ms: several attempts, only the first one a warning.
    wait_until("four failed attempts", || {
        let c = captured.clone();
        async move { c.lines_with("D-Bus still unavailable") >= 3 }
    })
    .await;
    assert_eq!(captured.lines_with("D-Bus service unavailable"), 1);
    assert_eq!(
        captured.lines_with("WARN"),
        1,
        "one warning for the whole outage"
    );

    let mut bus = FixedBus::start(&socket);
    let conn = connected(&address).await;
    wait_until("the end of the outage is logged", || {
        let c = captured.clone();
        async move { c.lines_with("D-Bus service back on the") == 1 }
    })
    .await;

    // A second outage: the bus goes away, then comes back.
    drop(conn);
    let retries_before = captured.lines_with("D-Bus still unavailable");
    bus.kill();
    wait_until("four failed attempts in the second outage", || {
        let c = captured.clone();
        async move { c.lines_with("D-Bus still unavailable") >= retries_before + 3 }
    })
    .await;
    assert_eq!(
        captured.lines_with("WARN"),
        2,
        "one more warning for the second outage"
    );
    let _bus = FixedBus::start(&socket);
    wait_until("the end of the second outage is logged", || {
        let c = captured.clone();
        async move { c.lines_with("D-Bus service back on the") == 2 }
    })
    .await;
    assert_eq!(captured.lines_with("WARN"), 2);

    sink.stop().await;
}
