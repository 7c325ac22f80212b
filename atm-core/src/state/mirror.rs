//! A session of another machine, as this registry keeps it.
//!
//! Its own host's state machine decided its state; this one does not decide it again. What it
//! decides is what a mirrored record may hold here: the key under its host (so it never meets a
//! local session), no process (its PID means nothing on this machine, and nothing here may
//! watch or signal it), no tmux pane (`%5` here is another pane), its text made safe to show as
//! every local preview is, and the link fresh (its host just spoke).

use crate::host::HostId;
use crate::model::{RemoteLink, Session, SessionKey};
use crate::redact::safe_preview;

/// The record `incoming` (as its host `host` published it) becomes in this registry.
pub fn mirrored(host: &HostId, mut incoming: Session) -> Session {
    let remote_key = match incoming.key {
        // A host that publishes a mirrored session of its own is relaying: keep its own key.
        SessionKey::Remote { key, .. } => *key,
        key => key,
    };
    incoming.key = SessionKey::Remote {
        host: host.clone(),
        key: Box::new(remote_key),
    };
    incoming.host = host.clone();
    incoming.remote = Some(RemoteLink { stale: false });
    incoming.process = None;
    incoming.tmux_pane = None;
    let safe = |t: &mut Option<String>, max| {
        if let Some(x) = t.as_mut() {
            *x = safe_preview(x, max);
        }
    };
    safe(&mut incoming.first_prompt, crate::limits::FIRST_PROMPT);
    safe(&mut incoming.title, crate::limits::PREVIEW);
    safe(&mut incoming.activity, crate::limits::NAME);
    safe(&mut incoming.last_error, crate::limits::PREVIEW);
    if let Some(a) = incoming.attention.as_mut() {
        safe(&mut a.detail, crate::limits::PREVIEW);
        safe(&mut a.tool, crate::limits::NAME);
        a.subagent_id = None;
    }
    incoming
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Attention, Harness, ProcessIdentity, SessionId};

    #[test]
    fn a_mirrored_session_keeps_its_state_and_loses_what_is_local_to_its_host() {
        let host = HostId::parse("devbox").unwrap();
        let key = SessionKey::Process {
            harness: Harness::claude(),
            pid: 42,
            start_time: 7,
        };
        let process = Some(ProcessIdentity {
            pid: 42,
            start_time: 7,
        });
        let mut s = Session::new(
            key.clone(),
            SessionId::new("a"),
            process,
            "t",
            chrono::Utc::now(),
        );
        s.state = crate::model::AgentState::NeedsPermission;
        s.tmux_pane = Some("%5".into());
        s.attention = Some(Attention {
            reason: "permission".into(),
            detail: Some("rm -rf \u{1b}[2J /".into()),
            ..Default::default()
        });
        let m = mirrored(&host, s);
        assert_eq!(m.state, crate::model::AgentState::NeedsPermission);
        assert_eq!(
            m.key,
            SessionKey::Remote {
                host: host.clone(),
                key: Box::new(key.clone())
            }
        );
        assert_eq!((m.process, m.tmux_pane.as_deref()), (None, None));
        assert_eq!(m.host, host);
        assert!(!m.remote.unwrap().stale);
        let detail = m.attention.unwrap().detail.unwrap();
        assert!(!detail.contains('\u{1b}'), "{detail:?}");
        // Mirrored again (a relay): still one level deep.
        let mut again = Session::new(
            m.key.clone(),
            SessionId::new("a"),
            None,
            "t",
            chrono::Utc::now(),
        );
        again.host = host.clone();
        let other = HostId::parse("hub").unwrap();
        let twice = mirrored(&other, again);
        assert_eq!(
            twice.key,
            SessionKey::Remote {
                host: other,
                key: Box::new(key)
            }
        );
    }
}
