//! `dist/grafana/`: the dashboard and the alert rules use only metrics this encoder writes, and
//! Prometheus's own `promtool` accepts the scrape, the rules, every dashboard query, and the
//! rules' unit tests (`alerts_test.yml`).
//!
//! `promtool` comes with Debian's `prometheus` package (`.ci/run` installs it).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::tests::{every_family, hostile_metrics};

fn grafana_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dist/grafana")
}

fn read(name: &str) -> String {
    let path = grafana_dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Runs `promtool args` (stdin: `input`), panicking with its output unless it succeeds.
fn promtool(args: &[&str], input: Option<&str>, dir: &Path) -> String {
    let mut child = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run promtool ({e}): install Debian's `prometheus` package \
                 (apt-get install prometheus; .ci/run does)"
            )
        });
    let mut stdin = child.stdin.take().unwrap();
    if let Some(input) = input {
        stdin.write_all(input.as_bytes()).unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

/// The metric names a scrape of every family carries (`_bucket`, `_sum`, `_count` included).
fn emitted() -> BTreeSet<String> {
    every_family()
        .encode()
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

/// The `atm_*` names an expression mentions.
fn names_in(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("atm_") {
        let before = rest[..at].chars().next_back();
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            names.push(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    names
}

fn dashboard() -> serde_json::Value {
    serde_json::from_str(&read("atm-dashboard.json")).expect("the dashboard is JSON")
}

/// Every query of the dashboard, with Grafana's variables replaced by what Prometheus reads.
pub(super) fn dashboard_queries() -> Vec<(String, String)> {
    let d = dashboard();
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            let promql = expr
                .replace("$__rate_interval", "5m")
                .replace("$__range", "6h")
                .replace("$host", ".*");
            out.push((p["title"].as_str().unwrap().to_owned(), promql));
        }
    }
    out
}

#[test]
fn the_dashboard_imports_with_a_prometheus_input_and_reads_only_emitted_metrics() {
    let d = dashboard();
    let inputs = d["__inputs"].as_array().unwrap();
    assert!(inputs.iter().any(|i| i["name"] == "DS_PROMETHEUS"
        && i["type"] == "datasource"
        && i["pluginId"] == "prometheus"));
    assert!(d["id"].is_null(), "no id: Grafana assigns one on import");
    let ds = serde_json::json!({"type": "prometheus", "uid": "${DS_PROMETHEUS}"});
    for var in d["templating"]["list"].as_array().unwrap() {
        assert_eq!(var["datasource"], ds, "variable {}", var["name"]);
        for name in names_in(var["definition"].as_str().unwrap()) {
            assert!(emitted().contains(&name), "variable uses {name}");
        }
    }
    let emitted = emitted();
    let mut ids = BTreeSet::new();
    let mut used = BTreeSet::new();
    let panels = d["panels"].as_array().unwrap();
    for p in panels {
        let title = p["title"].as_str().unwrap();
        assert!(ids.insert(p["id"].as_u64().unwrap()), "unique id: {title}");
        assert_eq!(p["datasource"], ds, "{title}");
        let g = &p["gridPos"];
        assert!(
            g["x"].as_u64().unwrap() + g["w"].as_u64().unwrap() <= 24,
            "{title}"
        );
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title}");
        for t in targets {
            assert_eq!(t["datasource"], ds, "{title}");
            let expr = t["expr"].as_str().unwrap();
            let names = names_in(expr);
            assert!(!names.is_empty(), "{title}: {expr}");
            for name in names {
                assert!(
                    emitted.contains(&name),
                    "{title} reads {name}, which /metrics never writes"
                );
                used.insert(name);
            }
        }
    }
    // The panels the issue asks for are there.
    let titles: Vec<&str> = panels
        .iter()
        .map(|p| p["title"].as_str().unwrap())
        .collect();
    for want in [
        "Sessions by state",
        "Waiting on you",
        "Cost per hour",
        "Context used per session",
        "Permission wait",
        "Approvals by surface and outcome",
        "Events by adapter",
        "Drops and resyncs",
    ] {
        assert!(titles.contains(&want), "no panel {want:?}: {titles:?}");
    }
    assert!(
        panels.iter().any(|p| p["type"] == "heatmap"),
        "a heatmap of waits"
    );
    for family in [
        "atm_sessions",
        "atm_cost_usd_total",
        "atm_session_context_ratio",
        "atm_request_wait_seconds_bucket",
        "atm_requests_ended_total",
        "atm_adapter_events_total",
        "atm_sink_resyncs_total",
        "atm_sink_dropped_total",
    ] {
        assert!(used.contains(family), "the dashboard shows {family}");
    }
}

#[test]
fn the_alert_rules_are_well_formed_and_read_only_emitted_metrics() {
    let rules: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&read("alerts.yml")).expect("alerts.yml is YAML");
    let emitted = emitted();
    let mut alerts = Vec::new();
    for group in rules["groups"].as_sequence().unwrap() {
        assert!(group["name"].as_str().is_some());
        for rule in group["rules"].as_sequence().unwrap() {
            let name = rule["alert"].as_str().unwrap();
            let expr = rule["expr"].as_str().unwrap();
            assert!(rule["for"].as_str().is_some(), "{name}: a `for`");
            assert!(rule["labels"]["severity"].as_str().is_some(), "{name}");
            assert!(rule["annotations"]["summary"].as_str().is_some(), "{name}");
            let names = names_in(expr);
            assert!(!names.is_empty(), "{name}");
            for n in names {
                assert!(
                    emitted.contains(&n),
                    "{name} reads {n}, which /metrics never writes"
                );
            }
            alerts.push(name.to_owned());
        }
    }
    assert_eq!(alerts, ["AtmAgentWaitingOnYou", "AtmCostPerHourOverBudget"]);
}

#[test]
fn promtool_accepts_the_scrape_the_rules_their_tests_and_every_dashboard_query() {
    let dir = grafana_dir();
    for m in [every_family(), hostile_metrics()] {
        promtool(&["check", "metrics"], Some(&m.encode().unwrap()), &dir);
    }
    promtool(&["check", "rules", "alerts.yml"], None, &dir);
    let tested = promtool(&["test", "rules", "alerts_test.yml"], None, &dir);
    assert!(tested.contains("SUCCESS"), "{tested}");

    // Each dashboard query as a recording rule: promtool parses every expression.
    let tmp = tempfile::tempdir().unwrap();
    let mut file = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, (title, expr)) in dashboard_queries().iter().enumerate() {
        file.push_str(&format!(
            "      # {title}\n      - record: dashboard:query_{i}\n        expr: {}\n",
            serde_json::to_string(expr).unwrap()
        ));
    }
    std::fs::write(tmp.path().join("queries.yml"), &file).unwrap();
    let checked = promtool(&["check", "rules", "queries.yml"], None, tmp.path());
    assert!(
        checked.contains(&format!("{} rules found", dashboard_queries().len())),
        "{checked}"
    );
}
