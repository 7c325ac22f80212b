//! The query socket is private: mode 0600, and peers of another uid are refused even when the
//! file's mode would let them in.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;

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

/// Runs a Python client as uid/gid 65534 that connects, sends `connect` and prints what it
/// received (`EOF` when the daemon closed without a word).
fn connect_as_nobody(path: &std::path::Path) -> String {
    let script = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    s.connect(sys.argv[1])
except OSError as e:
    print("DENIED", e.errno); sys.exit(0)
s.settimeout(10)
try:
    s.sendall(b'{"type":"connect","protocol_version":{"major":1,"minor":0}}\n')
    data = s.recv(4096)
except OSError as e:
    print("RESET", e.errno); sys.exit(0)
print("EOF" if not data else data.decode())
"#;
    let out = std::process::Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(script)
        .arg(path)
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_uid_is_refused() {
    if atm_core::paths::uid() != 0 {
        println!("SKIPPED another_uid_is_refused: needs root to run a client as another uid");
        return;
    }
    if !std::path::Path::new("/usr/bin/python3").exists() {
        println!("SKIPPED another_uid_is_refused: /usr/bin/python3 is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let server = Server::start_in(dir.path(), SocketConfig::default()).await;
    let path = server.path.clone();
    // The file mode alone keeps the other user out...
    let denied = tokio::task::spawn_blocking({
        let path = path.clone();
        move || connect_as_nobody(&path)
    })
    .await
    .unwrap();
    assert!(denied.starts_with("DENIED"), "{denied}");
    // ...and with the mode opened, the peer check still refuses it.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    let refused = tokio::task::spawn_blocking(move || connect_as_nobody(&path))
        .await
        .unwrap();
    assert!(
        refused == "EOF" || refused.starts_with("RESET"),
        "another uid was served: {refused}"
    );
    // Our own uid is still served.
    let mut c = server.connected(None).await;
    assert!(c.sync(1).await.is_empty());
    server.stop().await;
}
