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
