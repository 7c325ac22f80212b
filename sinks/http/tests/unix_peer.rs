//! The web board's Unix socket serves only its own user: a client of another uid is refused
//! even when the socket file's mode would let it connect, and even when it holds the token.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::*;

const TEST: &str = "another_uid_is_refused_on_the_unix_socket_even_with_the_token";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_uid_is_refused_on_the_unix_socket_even_with_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let (r, sock) = start_with_unix_socket(dir.path()).await;
    let open = |p: &Path, mode| std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode));
    open(dir.path(), 0o755).unwrap();
    open(sock.parent().unwrap(), 0o755).unwrap();
    let request = raw_request(
        "GET",
        "/api/sessions",
        &[("authorization", &r.bearer())],
        b"",
    );
    // The file's mode keeps the other user out, and with the mode opened the peer check does,
    // token or not.
    let checked = tokio::task::spawn_blocking({
        let (sock, request) = (sock.clone(), request.clone());
        move || atm_core::testing::assert_other_users_refused(TEST, &sock, &request)
    })
    .await
    .unwrap();
    if !checked {
        return;
    }
    // Our own uid is still served on the same socket.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::UnixStream::connect(&sock).await.unwrap();
    s.write_all(&request).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
}
