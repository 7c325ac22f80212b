//! A second real user on this machine, for tests that prove another user gets nothing.

/// The name of the second user tests create.
pub const OTHER_USER: &str = "atm-test-other";

/// The uid of a second user, created on first use; `None` (with the reason printed) when this
/// test cannot have one.
pub fn other_user(test: &str) -> Option<u32> {
    static CREATE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    if crate::paths::uid() != 0 {
        println!("SKIPPED {test}: needs root to create and run as a second user");
        return None;
    }
    let _guard = CREATE.lock().unwrap_or_else(|p| p.into_inner());
    let lookup = || {
        let out = std::process::Command::new("id")
            .arg("-u")
            .arg(OTHER_USER)
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<u32>()
            .ok()
    };
    if let Some(uid) = lookup() {
        return Some(uid);
    }
    let made = std::process::Command::new("useradd")
        .args([
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
        ])
        .arg(OTHER_USER)
        .output();
    match (made, lookup()) {
        (_, Some(uid)) => Some(uid),
        (out, None) => {
            println!("SKIPPED {test}: cannot create user {OTHER_USER}: {out:?}");
            None
        }
    }
}

/// Connects to the Unix socket `path` as uid/gid 65534 (`nobody`, a real process of another
/// user: a Python client), sends `request` and returns what came back: the first read's text,
/// `EOF` when the server closed without a word, `DENIED <errno>` when the connection itself was
/// refused (the file's mode), `RESET <errno>` when it was cut. `None` (with the reason printed)
/// when this test cannot run a process as another user.
pub fn exchange_as_nobody(test: &str, path: &std::path::Path, request: &[u8]) -> Option<String> {
    use std::os::unix::process::CommandExt;
    if crate::paths::uid() != 0 {
        println!("SKIPPED {test}: needs root to run a client as another uid");
        return None;
    }
    let python = std::path::Path::new("/usr/bin/python3");
    if !python.exists() {
        println!("SKIPPED {test}: /usr/bin/python3 is not installed");
        return None;
    }
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
    let out = std::process::Command::new(python)
        .arg("-c")
        .arg(script)
        .arg(path)
        .arg(String::from_utf8_lossy(request).as_ref())
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    assert!(
        out.status.success(),
        "the other user's client failed: {out:?}"
    );
    Some(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Asserts that the Unix socket `path` serves no other user: a client of uid 65534 is denied by
/// the file's mode, and, with the mode opened to `0666`, is still not served (the server's peer
/// check closes or cuts it without an answer) although it sends `request`. The parent directory
/// must let others reach the file. `false` when the test cannot run (see
/// [`exchange_as_nobody`]).
pub fn assert_other_users_refused(test: &str, path: &std::path::Path, request: &[u8]) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let Some(denied) = exchange_as_nobody(test, path, request) else {
        return false;
    };
    assert!(
        denied.starts_with("DENIED"),
        "the mode let another user in: {denied}"
    );
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
        .unwrap_or_else(|e| panic!("cannot open the mode of {}: {e}", path.display()));
    let refused = exchange_as_nobody(test, path, request).unwrap_or_default();
    assert!(
        refused == "EOF" || refused.starts_with("RESET"),
        "another uid was served: {refused}"
    );
    true
}
