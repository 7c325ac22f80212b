//! Scan cost with 2,000 extra processes, against `ps -eo pid,comm,args` over the same processes,
//! and the idle CPU of the running adapter (a real registry, a pass every 2 s for 20 s).
//!
//! Run: `cargo bench -p adapter-proc-discovery --bench scan` (release). Prints the figures.
//! `SCAN_BENCH_PROCS` and `SCAN_BENCH_IDLE_SECS` override the process count and idle window.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use adapter_proc_discovery::scan::{ScanSettings, Scanner};
use adapter_proc_discovery::{ProcDiscoveryAdapter, ProcDiscoveryConfig};
use atm_core::InputAdapter;
use atm_core::plugin::parse_config;
use atm_core::testing::TestHarness;

/// Kills and reaps every child on drop, even when the benchmark fails half-way.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
        }
        for c in &mut self.0 {
            let _ = c.wait();
        }
    }
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// This process's CPU time (user + system) from `/proc/self/stat`.
fn own_cpu() -> Duration {
    let st = procfs::process::Process::myself().unwrap().stat().unwrap();
    Duration::from_secs_f64((st.utime + st.stime) as f64 / procfs::ticks_per_second() as f64)
}

/// What each `/proc/<pid>` file costs over all listed processes (median), to show where a cold
/// scan's time goes.
fn breakdown(runs: usize) {
    let pids: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter(|n| n.parse::<u32>().is_ok())
        .collect();
    let list = median(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                let n = std::fs::read_dir("/proc").unwrap().count();
                assert!(n > 0);
                t.elapsed()
            })
            .collect(),
    );
    println!("per-file cost over {} processes (median):", pids.len());
    println!("  listing       : {}", ms(list));
    for file in ["stat", "status", "cmdline", "environ"] {
        let d = median(
            (0..runs)
                .map(|_| {
                    let t = Instant::now();
                    for p in &pids {
                        let _ = std::fs::read(format!("/proc/{p}/{file}"));
                    }
                    t.elapsed()
                })
                .collect(),
        );
        println!("  {file:<14}: {}", ms(d));
    }
    for (what, f) in [
        (
            "exe (readlink)",
            (|p: &str| std::fs::read_link(format!("/proc/{p}/exe")).is_ok()) as fn(&str) -> bool,
        ),
        ("dir (statx)", |p: &str| {
            std::fs::metadata(format!("/proc/{p}")).is_ok()
        }),
    ] {
        let d = median(
            (0..runs)
                .map(|_| {
                    let t = Instant::now();
                    for p in &pids {
                        let _ = f(p);
                    }
                    t.elapsed()
                })
                .collect(),
        );
        println!("  {what:<14}: {}", ms(d));
    }
}

fn main() {
    let extra = env_num("SCAN_BENCH_PROCS", 2000) as usize;
    let idle_secs = env_num("SCAN_BENCH_IDLE_SECS", 20);
    let runs = 7;
    let tmp = tempfile::tempdir().unwrap();
    let claude_dir = tmp.path().join("home/.claude");
    std::fs::create_dir_all(claude_dir.join("sessions")).unwrap();
    let agent_exe = atm_core::testing::ingest::sleep_named(tmp.path(), "claude");

    let mut children = Children(Vec::with_capacity(extra + 3));
    let t = Instant::now();
    for _ in 0..extra {
        children.0.push(
            Command::new("sleep")
                .arg("600")
                .stdin(Stdio::null())
                .spawn()
                .expect("spawn sleep"),
        );
    }
    for _ in 0..3 {
        children
            .0
            .push(Command::new(&agent_exe).arg("600").spawn().unwrap());
    }
    let total = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .count();
    println!(
        "spawned {extra} sleep + 3 agent-like processes in {}; {total} processes listed in /proc",
        ms(t.elapsed())
    );

    let settings = ScanSettings {
        proc_root: PathBuf::from("/proc"),
        claude_config_dir: claude_dir.clone(),
        matchers: adapter_proc_discovery::matcher::default_matchers(),
        uid: atm_core::paths::uid(),
        adapter_name: "bench".into(),
    };

    let mut ps = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let out = Command::new("ps")
            .args(["-eo", "pid,comm,args"])
            .stdout(Stdio::piped())
            .output()
            .unwrap();
        ps.push(t.elapsed());
        assert!(out.status.success());
    }

    let mut cold = Vec::new();
    let mut found = 0;
    for _ in 0..runs {
        let t = Instant::now();
        let mut sc = Scanner::new(settings.clone());
        let out = sc.scan().unwrap();
        cold.push(t.elapsed());
        found = out.found.len();
    }

    // Steady state means known processes: let the fresh ones pass the young age (young
    // non-agents are re-read each pass until then, to catch a late `exec` of an agent).
    std::thread::sleep(Duration::from_secs(
        adapter_proc_discovery::scan::YOUNG_SECS + 1,
    ));
    let mut sc = Scanner::new(settings.clone());
    sc.scan().unwrap();
    let mut steady = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let out = sc.scan().unwrap();
        steady.push(t.elapsed());
        found = out.found.len();
    }
    let (ps, cold, steady) = (median(ps), median(cold), median(steady));
    println!("median of {runs} runs each:");
    println!("  ps -eo pid,comm,args : {}", ms(ps));
    println!(
        "  cold scan            : {}  ({:.1}x faster than ps)",
        ms(cold),
        ps.as_secs_f64() / cold.as_secs_f64()
    );
    println!(
        "  steady-state rescan  : {}  ({:.1}x faster than ps)",
        ms(steady),
        ps.as_secs_f64() / steady.as_secs_f64()
    );
    println!("  agents found per scan: {found}");

    breakdown(runs);

    let rt = atm_core::tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (cpu, wall, sessions) = rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let harness = TestHarness::new(dir.path()).await;
        let table = format!(
            "interval = \"2s\"\nclaude_config_dir = \"{}\"\n",
            claude_dir.display()
        );
        let config: ProcDiscoveryConfig = parse_config(&atm_core::toml::Value::Table(
            atm_core::toml::from_str(&table).unwrap(),
        ))
        .unwrap();
        let adapter = Box::new(ProcDiscoveryAdapter::new(config).unwrap());
        let task = atm_core::tokio::spawn(adapter.run(harness.adapter_context("proc-discovery")));
        // Let the cold start pass finish, then measure steady state only.
        atm_core::tokio::time::sleep(Duration::from_secs(3)).await;
        let (cpu0, t0) = (own_cpu(), Instant::now());
        atm_core::tokio::time::sleep(Duration::from_secs(idle_secs)).await;
        let (cpu, wall) = (own_cpu() - cpu0, t0.elapsed());
        let sessions = harness.registry.get_all_sessions().await.unwrap().len();
        harness.cancel.cancel();
        let _ = task.await;
        (cpu, wall, sessions)
    });
    println!(
        "idle adapter (pass every 2 s, real registry, {sessions} sessions): {} CPU over {:.1} s = {:.3}% of one core (target <= 0.5%)",
        ms(cpu),
        wall.as_secs_f64(),
        cpu.as_secs_f64() / wall.as_secs_f64() * 100.0
    );
    drop(children);
}
