//! The query socket is private: mode 0600, and peers of another uid are refused even when the
//! file's mode would let them in.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::os::unix::fs::PermissionsExt;

use common::*;
use sink_socket::SocketConfig;

#[tokio::test]
async fn the_socket_is_created_0600() {
    let server = Server::start(SocketConfig::default()).await;
    let mode = std::fs::metadata(&server.path)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
    server.stop().await;
}

const CONNECT: &[u8] = b"{\"type\":\"connect\",\"protocol_version\":{\"major\":1,\"minor\":0}}\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_uid_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let server = Server::start_in(dir.path(), SocketConfig::default()).await;
    let path = server.path.clone();
    // The file mode keeps the other user out, and with the mode opened the peer check does.
    let checked = tokio::task::spawn_blocking(move || {
        atm_core::testing::assert_other_users_refused("another_uid_is_refused", &path, CONNECT)
    })
    .await
    .unwrap();
    if !checked {
        return server.stop().await;
    }
    // Our own uid is still served.
    let mut c = server.connected(None).await;
    assert!(c.sync(1).await.is_empty());
    server.stop().await;
}
