//! Claude Code's per-process session file: `<config dir>/sessions/<pid>.json`.
//!
//! Claude Code writes it for every running process (undocumented): `pid`, `sessionId`, `cwd`,
//! `startedAt` (milliseconds since the epoch) and, in newer versions, `status`
//! (`busy`/`idle`/`waiting`, and `shell`: idle while a background shell runs, 2.1.332),
//! `waitingFor` and `statusUpdatedAt` (when the status last changed,
//! milliseconds since the epoch). It survives crashes, so a file can describe a dead
//! process whose PID was reused: it is believed only when its `pid` is the process's PID and it
//! was not started before the process was. Anything malformed, oversized or not UTF-8 is
//! ignored (the session then stays `pending-<pid>` until a hook or a later file names it).

use std::path::Path;

use atm_core::AgentState;
use atm_core::chrono::{DateTime, Utc};
use atm_core::registry::limits;
use serde::Deserialize;

use crate::procread::{ReadError, read_capped};

/// Larger files are not Claude's session file; refusing them bounds the parse.
pub const SESSION_FILE_CAP: u64 = 64 * 1024;

/// How much earlier than the process start `startedAt` may be and still be believed: the boot
/// time we derive the process start from has one-second resolution, and clocks drift.
const START_TOLERANCE_MS: i64 = 5_000;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawSessionFile {
    pid: Option<u64>,
    session_id: Option<String>,
    cwd: Option<String>,
    started_at: Option<serde_json::Value>,
    status: Option<String>,
    waiting_for: Option<serde_json::Value>,
    status_updated_at: Option<serde_json::Value>,
}

/// What a valid session file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionFile {
    pub session_id: String,
    pub cwd: Option<String>,
    /// `busy` -> working, `idle` -> idle, `waiting` -> needs input (needs permission when
    /// `waitingFor` mentions a permission).
    pub state: Option<AgentState>,
    /// When the status was written (`statusUpdatedAt`): a newer status than the last hook
    /// corrects the state (Esc, a declined or approved permission fire no hook).
    pub status_at: Option<DateTime<Utc>>,
}

fn epoch_ms(v: &serde_json::Value) -> Option<i64> {
    match v {
        serde_json::Value::Number(n) => n.as_i64(),
        serde_json::Value::String(s) => atm_core::chrono::DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|d| d.timestamp_millis()),
        _ => None,
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.chars().count() <= limits::ID
        && !id.chars().any(char::is_control)
        && !id.starts_with("pending-")
}

/// Parses a session file's bytes for process `pid`, started at `process_start_ms` (milliseconds
/// since the epoch, when known). `None` when it is malformed or describes another process.
pub fn parse(bytes: &[u8], pid: u32, process_start_ms: Option<i64>) -> Option<SessionFile> {
    let raw: RawSessionFile = serde_json::from_slice(bytes).ok()?;
    if raw.pid != Some(u64::from(pid)) {
        return None;
    }
    if let (Some(started), Some(process)) =
        (raw.started_at.as_ref().and_then(epoch_ms), process_start_ms)
        && started < process - START_TOLERANCE_MS
    {
        return None;
    }
    let session_id = raw.session_id.filter(|s| valid_id(s))?;
    let waiting_for_permission = raw
        .waiting_for
        .as_ref()
        .is_some_and(|w| w.to_string().to_ascii_lowercase().contains("permission"));
    let state = match raw.status.as_deref() {
        Some("busy") => Some(AgentState::Working),
        // `shell`: the turn is over and a background shell still runs (the screen says "done ·
        // 1 shell still running"); a background subagent keeps the status `busy`.
        Some("idle" | "shell") => Some(AgentState::Idle),
        Some("waiting") if waiting_for_permission => Some(AgentState::NeedsPermission),
        Some("waiting") => Some(AgentState::NeedsInput),
        _ => None,
    };
    let cwd = raw
        .cwd
        .filter(|c| c.starts_with('/') && c.len() <= limits::PATH);
    let status_at = state
        .and(raw.status_updated_at.as_ref())
        .and_then(epoch_ms)
        .and_then(DateTime::from_timestamp_millis);
    Some(SessionFile {
        session_id,
        cwd,
        state,
        status_at,
    })
}

/// Reads and parses `<config_dir>/sessions/<pid>.json`. Missing, unreadable, oversized or
/// invalid files give `None`.
pub fn read(config_dir: &Path, pid: u32, process_start_ms: Option<i64>) -> Option<SessionFile> {
    let path = session_file_path(config_dir, pid);
    let bytes = match read_capped(&path, SESSION_FILE_CAP + 1) {
        Ok(b) => b,
        Err(ReadError::Vanished) => return None,
        Err(ReadError::Unreadable(e)) => {
            tracing::debug!(path = %path.display(), error = %e, "cannot read Claude session file");
            return None;
        }
    };
    if bytes.len() as u64 > SESSION_FILE_CAP {
        tracing::debug!(path = %path.display(), "Claude session file too large; ignored");
        return None;
    }
    parse(&bytes, pid, process_start_ms)
}

pub fn session_file_path(config_dir: &Path, pid: u32) -> std::path::PathBuf {
    config_dir.join("sessions").join(format!("{pid}.json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_file_maps_status_and_checks_pid() {
        let f =
            br#"{"pid":42,"sessionId":"abc","cwd":"/w","startedAt":1700000000000,"status":"busy"}"#;
        let s = parse(f, 42, Some(1_700_000_000_000)).unwrap();
        assert_eq!(s.session_id, "abc");
        assert_eq!(s.cwd.as_deref(), Some("/w"));
        assert_eq!(s.state, Some(AgentState::Working));
        assert_eq!(parse(f, 43, None), None, "another pid's file");
        let shell = br#"{"pid":1,"sessionId":"a","status":"shell"}"#;
        assert_eq!(parse(shell, 1, None).unwrap().state, Some(AgentState::Idle));
        let idle = br#"{"pid":1,"sessionId":"a","status":"idle"}"#;
        assert_eq!(parse(idle, 1, None).unwrap().state, Some(AgentState::Idle));
        let waiting = br#"{"pid":1,"sessionId":"a","status":"waiting","waitingFor":"input"}"#;
        assert_eq!(
            parse(waiting, 1, None).unwrap().state,
            Some(AgentState::NeedsInput)
        );
        let perm =
            br#"{"pid":1,"sessionId":"a","status":"waiting","waitingFor":{"type":"permission"}}"#;
        assert_eq!(
            parse(perm, 1, None).unwrap().state,
            Some(AgentState::NeedsPermission)
        );
        let odd = br#"{"pid":1,"sessionId":"a","status":"dancing","cwd":"relative"}"#;
        let s = parse(odd, 1, None).unwrap();
        assert_eq!((s.state, s.cwd), (None, None));
    }

    #[test]
    fn status_time_is_read_in_milliseconds_or_rfc3339_and_only_with_a_status() {
        let at = |f: &[u8]| parse(f, 1, None).unwrap().status_at;
        let want = DateTime::from_timestamp_millis(1_700_000_000_123);
        assert_eq!(
            at(br#"{"pid":1,"sessionId":"a","status":"idle","statusUpdatedAt":1700000000123}"#),
            want
        );
        assert_eq!(
            at(br#"{"pid":1,"sessionId":"a","status":"idle","statusUpdatedAt":"2023-11-14T22:13:20.123Z"}"#),
            want
        );
        for odd in [
            &br#"{"pid":1,"sessionId":"a","status":"idle","statusUpdatedAt":"soon"}"#[..],
            br#"{"pid":1,"sessionId":"a","status":"idle","statusUpdatedAt":1e300}"#,
            br#"{"pid":1,"sessionId":"a","status":"idle","statusUpdatedAt":9223372036854775807}"#,
            br#"{"pid":1,"sessionId":"a","status":"idle","statusUpdatedAt":null}"#,
            br#"{"pid":1,"sessionId":"a","statusUpdatedAt":1700000000123}"#,
            br#"{"pid":1,"sessionId":"a","status":"dancing","statusUpdatedAt":1700000000123}"#,
        ] {
            assert_eq!(at(odd), None, "{}", String::from_utf8_lossy(odd));
        }
    }

    #[test]
    fn the_real_claude_2_1_332_file_is_read() {
        // Recorded by tests/tests/real_claude.rs from the pinned Claude Code at its prompt.
        let real =
            include_bytes!("../../../tests/agents/recorded/claude-2.1.332/session-file-idle.json");
        let s = parse(real, 16688, Some(1_796_175_548_000)).unwrap();
        assert_eq!(s.session_id, "4aa5aed2-1031-42cf-8d08-63a890e35b15");
        assert_eq!(s.state, Some(AgentState::Idle));
        assert_eq!(
            s.status_at,
            DateTime::from_timestamp_millis(1_796_175_548_974)
        );
        assert_eq!(s.cwd.as_deref(), Some("/tmp/.tmpbUKJPv/project"));
    }

    #[test]
    fn stale_file_from_an_earlier_process_is_refused() {
        let f = br#"{"pid":42,"sessionId":"old","startedAt":1000}"#;
        assert_eq!(parse(f, 42, Some(1_700_000_000_000)), None);
        let iso = br#"{"pid":42,"sessionId":"new","startedAt":"2030-01-01T00:00:00Z"}"#;
        assert!(parse(iso, 42, Some(1_700_000_000_000)).is_some());
    }

    #[test]
    fn malformed_truncated_and_non_utf8_files_are_ignored() {
        for bad in [
            &b""[..],
            b"{",
            br#"{"pid":42,"sessionId":"ab"#,
            b"\xff\xfe{\"pid\":42}",
            br#"{"pid":"42","sessionId":"x"}"#,
            br#"{"pid":42,"sessionId":""}"#,
            br#"{"pid":42,"sessionId":"a\u0007b"}"#,
            br#"{"pid":42,"sessionId":"pending-42"}"#,
            br#"[1,2,3]"#,
            br#"{"pid":42}"#,
        ] {
            assert_eq!(
                parse(bad, 42, None),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long_id = format!(
            r#"{{"pid":42,"sessionId":"{}"}}"#,
            "x".repeat(limits::ID + 1)
        );
        assert_eq!(parse(long_id.as_bytes(), 42, None), None);
    }

    #[test]
    fn huge_file_is_refused_without_parsing_it_all() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sessions")).unwrap();
        let mut big = br#"{"pid":7,"sessionId":"s","pad":""#.to_vec();
        big.extend(std::iter::repeat_n(b'x', 200_000));
        big.extend(br#""}"#);
        std::fs::write(session_file_path(dir.path(), 7), &big).unwrap();
        assert_eq!(read(dir.path(), 7, None), None);
        std::fs::write(
            session_file_path(dir.path(), 7),
            br#"{"pid":7,"sessionId":"s"}"#,
        )
        .unwrap();
        assert_eq!(read(dir.path(), 7, None).unwrap().session_id, "s");
        assert_eq!(read(dir.path(), 8, None), None, "missing file");
    }
}
