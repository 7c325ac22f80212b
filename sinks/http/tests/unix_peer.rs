//! The web board's Unix socket serves only its own user: a client of another uid is refused
//! even when the socket file's mode would let it connect, and even when it holds the token.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;

use common::*;

/// Runs a Python client as uid/gid 65534 that connects to `path`, sends `request` and prints
/// what came back (`EOF` when the daemon closed without a word).
fn request_as_nobody(path: &Path, request: &[u8]) -> String {
    let script = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    s.connect(sys.argv[1])
except OSError as e:
    print("DENIED", e.errno); sys.exit(0)
s.settimeout(10)
try:
    s.sendall(sys.argv[2].encode())
    data = s.recv(4096)
except OSError as e:
    print("RESET", e.errno); sys.exit(0)
print("EOF" if not data else data.decode(errors="replace"))
"#;
    let out = std::process::Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(script)
        .arg(path)
        .arg(String::from_utf8(request.to_vec()).unwrap())
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_uid_is_refused_on_the_unix_socket_even_with_the_token() {
    if atm_core::paths::uid() != 0 {
        println!("SKIPPED: needs root to run a client as another uid");
        return;
    }
    if !Path::new("/usr/bin/python3").exists() {
        println!("SKIPPED: /usr/bin/python3 is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("run/web.sock");
    let r = start(
        dir.path(),
        &format!("unix_socket = \"{}\"\n", sock.display()),
    )
    .await;
    atm_core::testing::wait_until("the socket", || {
        let s = sock.clone();
        async move { s.exists() }
    })
    .await;
    let open = |p: &Path, mode| std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode));
    open(dir.path(), 0o755).unwrap();
    open(sock.parent().unwrap(), 0o755).unwrap();
    let request = raw_request(
        "GET",
        "/api/sessions",
        &[("authorization", &r.bearer())],
        b"",
    );
    // The file's mode alone keeps the other user out...
    let denied = tokio::task::spawn_blocking({
        let (sock, request) = (sock.clone(), request.clone());
        move || request_as_nobody(&sock, &request)
    })
    .await
    .unwrap();
    assert!(denied.starts_with("DENIED"), "{denied}");
    // ...and with the mode opened, the peer check still refuses it, token or not.
    open(&sock, 0o666).unwrap();
    let refused = tokio::task::spawn_blocking({
        let (sock, request) = (sock.clone(), request.clone());
        move || request_as_nobody(&sock, &request)
    })
    .await
    .unwrap();
    assert!(
        refused == "EOF" || refused.starts_with("RESET"),
        "another uid was served: {refused}"
    );
    // Our own uid is still served on the same socket.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::UnixStream::connect(&sock).await.unwrap();
    s.write_all(&request).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
}
