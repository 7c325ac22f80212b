//! Wall time of one `atm-hook` invocation against the floor: a minimal native program that reads
//! stdin, connects to a Unix socket and writes one line (`examples/hook_floor.rs`).
//!
//! Build the release binaries first, then run the benchmark:
//!
//! ```sh
//! cargo build --release -p atm-cli --bins --examples
//! cargo bench -p atm-cli --bench hook_latency            # 500 runs of each
//! cargo bench -p atm-cli --bench hook_latency -- 2000    # or choose the count
//! ```
//!
//! A listener thread on a temporary socket reads and discards lines (the daemon at its fastest);
//! the two programs run interleaved, each fed a realistic `PreToolUse` event, so that machine
//! noise hits both alike. The target is a median ratio of at most 1.5. The listener also counts
//! the `hook_event` lines it got, so a hook that silently sent nothing cannot look fast. A last
//! series runs `atm-hook` with no daemon listening.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const PAYLOAD: &str = r#"{"session_id":"8e11bfb5-7dc2-432b-9206-928fa5c35731","transcript_path":"/home/u/.claude/projects/-home-u-src-app/8e11bfb5-7dc2-432b-9206-928fa5c35731.jsonl","cwd":"/home/u/src/app","permission_mode":"default","hook_event_name":"PreToolUse","tool_name":"Bash","tool_input":{"command":"cargo test --workspace -- --nocapture","description":"Run the test suite"},"tool_use_id":"toolu_01ABCDEF"}"#;

fn main() -> ExitCode {
    let runs: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(500);
    let Some(dir) = release_dir() else {
        eprintln!("cannot locate the target dir from the benchmark's own path");
        return ExitCode::FAILURE;
    };
    let hook = dir.join("atm-hook");
    let floor = dir.join("examples/hook_floor");
    for bin in [&hook, &floor] {
        if !bin.is_file() {
            eprintln!(
                "{} is missing: run `cargo build --release -p atm-cli --bins --examples` first",
                bin.display()
            );
            return ExitCode::FAILURE;
        }
    }

    let tmp = std::env::temp_dir().join(format!("atm-hook-bench-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&tmp) {
        eprintln!("cannot create {}: {e}", tmp.display());
        return ExitCode::FAILURE;
    }
    let socket = tmp.join("hooks.sock");
    let listener = match UnixListener::bind(&socket) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cannot listen on {}: {e}", socket.display());
            return ExitCode::FAILURE;
        }
    };
    let hook_lines = Arc::new(AtomicUsize::new(0));
    let counter = hook_lines.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            for line in BufReader::new(stream).split(b'\n').map_while(Result::ok) {
                let tag = br#""type":"hook_event""#;
                if line.windows(tag.len()).any(|w| w == tag) {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    });

    // Warm the page cache and the listener before timing anything.
    for _ in 0..20 {
        let _ = run_once(&hook, &socket);
        let _ = run_once(&floor, &socket);
    }
    let warm = hook_lines.load(Ordering::Relaxed);

    let mut hook_times = Vec::with_capacity(runs);
    let mut floor_times = Vec::with_capacity(runs);
    for _ in 0..runs {
        match (run_once(&hook, &socket), run_once(&floor, &socket)) {
            (Some(h), Some(f)) => {
                hook_times.push(h);
                floor_times.push(f);
            }
            _ => {
                eprintln!("a run failed to start or exited non-zero");
                return ExitCode::FAILURE;
            }
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    let delivered = hook_lines.load(Ordering::Relaxed) - warm;

    let absent = tmp.join("absent.sock");
    let mut absent_times: Vec<Duration> = (0..runs / 5 + 1)
        .filter_map(|_| run_once(&hook, &absent))
        .collect();
    let _ = std::fs::remove_dir_all(&tmp);

    let (hm, hp) = stats(&mut hook_times);
    let (fm, fp) = stats(&mut floor_times);
    let (am, ap) = stats(&mut absent_times);
    println!(
        "runs: {runs} of each, interleaved; payload {} bytes",
        PAYLOAD.len()
    );
    println!("floor (examples/hook_floor): median {fm:>8.3?}  p99 {fp:>8.3?}");
    println!("atm-hook, daemon up:         median {hm:>8.3?}  p99 {hp:>8.3?}");
    println!("atm-hook, daemon absent:     median {am:>8.3?}  p99 {ap:>8.3?}");
    let ratio = hm.as_secs_f64() / fm.as_secs_f64().max(1e-9);
    println!("median ratio atm-hook / floor: {ratio:.2} (target <= 1.5)");
    println!("hook_event lines delivered: {delivered} of {runs}");
    if delivered != runs {
        eprintln!("atm-hook did not deliver every event");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// `target/release`, from this benchmark's path (`target/release/deps/hook_latency-*`).
fn release_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    Some(exe.parent()?.parent()?.to_path_buf())
}

/// One invocation, from spawn to exit, with the payload on stdin.
fn run_once(bin: &Path, socket: &Path) -> Option<Duration> {
    let start = Instant::now();
    let mut child = Command::new(bin)
        .env("ATM_HOOKS_SOCKET", socket)
        .env("TMUX_PANE", "%1")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .ok()?;
    let mut stdin = child.stdin.take()?;
    stdin.write_all(PAYLOAD.as_bytes()).ok()?;
    drop(stdin);
    let status = child.wait().ok()?;
    let elapsed = start.elapsed();
    status.success().then_some(elapsed)
}

/// Median and 99th percentile.
fn stats(times: &mut [Duration]) -> (Duration, Duration) {
    if times.is_empty() {
        return (Duration::ZERO, Duration::ZERO);
    }
    times.sort_unstable();
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99))
}
