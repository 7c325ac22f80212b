//! The planner: from registry changes to what each session's notification should be.
//!
//! Pure and synchronous so that every rule (which transitions notify, the turn-length rule,
//! mutes, re-keying, resynchronisation after a lag) is unit-tested without a bus. It decides
//! *what* is wanted; the deliverer ([`crate::deliver`]) decides *when* and *how* (rate limit,
//! the tmux quiet rule, the server's capabilities).
//!
//! Only what the notification shows matters: the state, and in a wait its request (a newer
//! request, or one that became answerable or stopped being so, changes the buttons). An
//! update that leaves those alone (usage, a subagent's events, activity) never notifies. The
//! planner remembers what it last saw per session key, so a re-keyed session (same process,
//! new agent id: removed then added) is not notified twice.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use atm_core::request::RequestId;
use atm_core::{AgentState, Session, SessionChange, SessionEvent, SessionKey, Snapshot};

use crate::config::{NotifyConfig, NotifyOn};

/// The registry's removal reason for the first half of a re-key: the key stays, so the
/// notification must stay too.
use atm_core::registry::REKEYED;

/// What kind of notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Permission,
    Input,
    Idle,
    Error,
}

impl Kind {
    /// The `category` hint.
    pub fn category(self) -> &'static str {
        match self {
            Self::Permission => "x-atm.permission",
            Self::Input => "x-atm.input",
            Self::Idle => "x-atm.idle",
            Self::Error => "x-atm.error",
        }
    }

    /// The `urgency` hint: 1 normal, 2 critical.
    pub fn urgency(self) -> u8 {
        match self {
            Self::Permission | Self::Input => 2,
            Self::Idle | Self::Error => 1,
        }
    }

    /// Idle notifications are informational: the server need not keep them.
    pub fn transient(self) -> bool {
        self == Self::Idle
    }
}

/// A notification to show for one session.
#[derive(Debug, Clone)]
pub struct Show {
    pub kind: Kind,
    pub session: Arc<Session>,
    /// How long the turn that just ended worked (idle and error only).
    pub turn: Option<Duration>,
}

/// What a session's notification should become.
#[derive(Debug, Clone)]
pub enum Desired {
    /// Show (or replace the session's current notification with) this one.
    Show(Box<Show>),
    /// Close the session's notification, if any.
    Close,
    /// The session is gone: close its notification and forget it.
    Forget,
}

impl Desired {
    /// A short name for logs.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Show(s) => match s.kind {
                Kind::Permission => "show permission",
                Kind::Input => "show input",
                Kind::Idle => "show idle",
                Kind::Error => "show error",
            },
            Self::Close => "close",
            Self::Forget => "forget",
        }
    }
}

/// What a session's notification depends on: its state and, in a wait, its request.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    state: AgentState,
    /// The open request and whether it is answerable.
    request: Option<(RequestId, bool)>,
}

impl Seen {
    fn of(s: &Session) -> Self {
        let request = s
            .attention
            .as_ref()
            .and_then(|a| a.request.as_ref())
            .map(|r| (r.id.clone(), r.answerable));
        Self {
            state: s.state,
            request,
        }
    }

    fn request_id(&self) -> Option<&RequestId> {
        self.request.as_ref().map(|(id, _)| id)
    }
}

/// Turns registry changes into [`Desired`] notifications per session key.
pub struct Planner {
    config: Arc<NotifyConfig>,
    /// What was last seen per session: bounded by the registry's session count, because
    /// removed sessions are dropped.
    states: HashMap<SessionKey, Seen>,
}

impl Planner {
    /// Starts from a snapshot: what already is never notifies.
    pub fn new(config: Arc<NotifyConfig>, snapshot: &Snapshot) -> Self {
        let mut planner = Self {
            config,
            states: HashMap::new(),
        };
        planner.resync(snapshot);
        planner
    }

    /// One registry change.
    pub fn on_event(&mut self, event: &SessionEvent) -> Option<(SessionKey, Desired)> {
        let session = &event.session;
        let key = session.key.clone();
        match &event.change {
            SessionChange::Removed { reason } if reason == REKEYED => None,
            SessionChange::Removed { .. } => {
                self.states.remove(&key);
                Some((key, Desired::Forget))
            }
            SessionChange::Added | SessionChange::Updated => {
                let seen = Seen::of(session);
                let known = self.states.insert(key.clone(), seen.clone());
                let unchanged = match known {
                    Some(known) => known == seen,
                    None => event.previous_state == Some(session.state),
                };
                if unchanged {
                    return None;
                }
                Some((key, self.desired_for(session)))
            }
        }
    }

    /// After a lag: adopt the fresh snapshot. Nothing new pops up (those changes are old news);
    /// a session that moved on (another state, or another request: the one shown has ended)
    /// has its notification closed, a vanished one is forgotten.
    pub fn resync(&mut self, snapshot: &Snapshot) -> Vec<(SessionKey, Desired)> {
        let mut out = Vec::new();
        let mut fresh = HashMap::with_capacity(snapshot.sessions.len());
        for s in &snapshot.sessions {
            let seen = Seen::of(s);
            if let Some(old) = self.states.get(&s.key)
                && (old.state != seen.state || old.request_id() != seen.request_id())
            {
                out.push((s.key.clone(), Desired::Close));
            }
            fresh.insert(s.key.clone(), seen);
        }
        for key in self.states.keys() {
            if !fresh.contains_key(key) {
                out.push((key.clone(), Desired::Forget));
            }
        }
        self.states = fresh;
        out
    }

    /// The notification a session that just entered its state should have.
    fn desired_for(&self, session: &Arc<Session>) -> Desired {
        let Some((kind, turn)) = self.kind_for(session) else {
            return Desired::Close;
        };
        if self.is_muted(session) {
            return Desired::Close;
        }
        Desired::Show(Box::new(Show {
            kind,
            session: session.clone(),
            turn,
        }))
    }

    fn kind_for(&self, s: &Session) -> Option<(Kind, Option<Duration>)> {
        let c = &self.config;
        match s.state {
            AgentState::NeedsPermission => c
                .notifies(NotifyOn::NeedsPermission)
                .then_some((Kind::Permission, None)),
            AgentState::NeedsInput => c
                .notifies(NotifyOn::NeedsInput)
                .then_some((Kind::Input, None)),
            AgentState::Idle => {
                // A subagent's own session finishing is its parent's business, not the user's.
                if s.agent_type != "main" {
                    return None;
                }
                let turn = s
                    .turn_started_at
                    .and_then(|start| (s.state_since - start).to_std().ok());
                if s.last_error.is_some() {
                    c.notifies(NotifyOn::Error).then_some((Kind::Error, turn))
                } else {
                    let long_enough = turn.is_some_and(|t| t >= c.min_turn);
                    (long_enough && c.notifies(NotifyOn::Idle)).then_some((Kind::Idle, turn))
                }
            }
            AgentState::Working | AgentState::Starting => None,
        }
    }

    fn is_muted(&self, s: &Session) -> bool {
        if self.config.mute_projects.is_empty() {
            return false;
        }
        let name = project_name(s);
        let paths = [s.git.project_root.as_deref(), s.cwd.as_deref()];
        self.config.mute_projects.iter().any(|m| {
            if m.contains('/') || m.starts_with('~') || m.starts_with('$') {
                let muted = atm_core::paths::expand(m);
                paths
                    .iter()
                    .flatten()
                    .any(|p| Path::new(p).starts_with(&muted))
            } else {
                name.as_deref() == Some(m.as_str())
            }
        })
    }
}

/// The project a session works on: the repository's directory name, else the cwd's.
pub fn project_name(s: &Session) -> Option<String> {
    [s.git.project_root.as_deref(), s.cwd.as_deref()]
        .into_iter()
        .flatten()
        .find_map(|p| {
            Path::new(p)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use atm_core::SessionId;
    use atm_core::chrono::{TimeDelta, Utc};

    fn session(id: &str, state: AgentState) -> Session {
        let mut s = atm_core::testing::claude_session(id, Utc::now());
        s.state = state;
        s.cwd = Some("/home/u/src/myrepo".into());
        s
    }

    fn event(s: Session, change: SessionChange, prev: Option<AgentState>) -> SessionEvent {
        SessionEvent {
            seq: 1,
            change,
            session: Arc::new(s),
            previous_state: prev,
            requests: Default::default(),
        }
    }

    fn planner(config: NotifyConfig) -> Planner {
        Planner::new(Arc::new(config), &Snapshot::default())
    }

    fn shown(d: Option<(SessionKey, Desired)>) -> Option<Kind> {
        match d {
            Some((_, Desired::Show(s))) => Some(s.kind),
            _ => None,
        }
    }

    fn moved(p: &mut Planner, s: Session, prev: AgentState) -> Option<(SessionKey, Desired)> {
        p.on_event(&event(s, SessionChange::Updated, Some(prev)))
    }

    #[test]
    fn attention_states_notify_on_entry_only() {
        let mut p = planner(NotifyConfig::default());
        let mut s = session("a", AgentState::NeedsPermission);
        s.attention = Some(atm_core::testing::permission_attention("Bash", Some("ls")));
        assert_eq!(
            shown(moved(&mut p, s.clone(), AgentState::Working)),
            Some(Kind::Permission)
        );
        // Same state again (a usage update): nothing.
        assert!(moved(&mut p, s, AgentState::NeedsPermission).is_none());
        let s = session("a", AgentState::NeedsInput);
        assert_eq!(
            shown(moved(&mut p, s, AgentState::NeedsPermission)),
            Some(Kind::Input)
        );
        let s = session("a", AgentState::Working);
        assert!(matches!(
            moved(&mut p, s, AgentState::NeedsInput),
            Some((_, Desired::Close))
        ));
    }

    #[test]
    fn a_new_or_newly_answerable_request_in_the_same_wait_replans_and_usage_does_not() {
        use atm_core::request::PendingRequest;
        let mut p = planner(NotifyConfig::default());
        let request = |id: &str, answerable| PendingRequest {
            id: RequestId::parse(&id.repeat(16)).unwrap(),
            asked_at: Utc::now(),
            answerable,
        };
        let mut s = session("a", AgentState::NeedsPermission);
        let mut a = atm_core::testing::permission_attention("Bash", Some("ls"));
        a.request = Some(request("ab", false));
        s.attention = Some(a);
        assert!(shown(moved(&mut p, s.clone(), AgentState::Working)).is_some());
        assert!(moved(&mut p, s.clone(), AgentState::NeedsPermission).is_none());
        for r in [
            request("ab", true),
            request("cd", true),
            request("cd", false),
        ] {
            if let Some(a) = s.attention.as_mut() {
                a.request = Some(r);
            }
            let got = moved(&mut p, s.clone(), AgentState::NeedsPermission);
            assert_eq!(shown(got), Some(Kind::Permission));
        }
        s.usage.cost_usd = 2.0;
        assert!(moved(&mut p, s.clone(), AgentState::NeedsPermission).is_none());
        // After a lag, a wait on another request closes what showed the old one.
        let mut other = s.clone();
        if let Some(a) = other.attention.as_mut() {
            a.request = Some(request("ef", true));
        }
        let same = p.resync(&Snapshot {
            seq: 5,
            sessions: vec![Arc::new(s)],
        });
        assert!(same.is_empty(), "{same:?}");
        let out = p.resync(&Snapshot {
            seq: 6,
            sessions: vec![Arc::new(other)],
        });
        assert!(matches!(out.as_slice(), [(_, Desired::Close)]), "{out:?}");
    }

    #[test]
    fn idle_needs_a_long_enough_turn_and_errors_always_count() {
        let config = NotifyConfig {
            min_turn: Duration::from_secs(20),
            ..NotifyConfig::default()
        };
        let mut p = planner(config);
        let mut long = session("a", AgentState::Idle);
        long.turn_started_at = Some(long.state_since - TimeDelta::seconds(30));
        let got = moved(&mut p, long.clone(), AgentState::Working);
        let Some((_, Desired::Show(show))) = got else {
            panic!("no idle notification")
        };
        assert_eq!(show.kind, Kind::Idle);
        assert_eq!(show.turn, Some(Duration::from_secs(30)));

        let mut short = session("b", AgentState::Idle);
        short.turn_started_at = Some(short.state_since - TimeDelta::seconds(5));
        assert!(matches!(
            moved(&mut p, short.clone(), AgentState::Working),
            Some((_, Desired::Close))
        ));
        // No known turn start: no idle notification.
        let unknown = session("c", AgentState::Idle);
        assert!(shown(moved(&mut p, unknown, AgentState::Working)).is_none());

        let mut failed = session("d", AgentState::Idle);
        failed.turn_started_at = short.turn_started_at;
        failed.last_error = Some("rate_limit".into());
        assert_eq!(
            shown(moved(&mut p, failed, AgentState::Working)),
            Some(Kind::Error)
        );

        let mut sub = long.clone();
        sub.key = session("e", AgentState::Idle).key;
        sub.agent_type = "Explore".into();
        assert!(shown(moved(&mut p, sub, AgentState::Working)).is_none());
    }

    #[test]
    fn states_switched_off_and_muted_projects_do_not_notify() {
        let mut p = planner(NotifyConfig {
            on: vec![NotifyOn::NeedsInput],
            mute_projects: vec!["muted".into(), "/srv/secret".into()],
            ..NotifyConfig::default()
        });
        let s = session("a", AgentState::NeedsPermission);
        assert!(shown(moved(&mut p, s, AgentState::Working)).is_none());
        let mut s = session("b", AgentState::NeedsInput);
        s.git.project_root = Some("/x/muted".into());
        assert!(shown(moved(&mut p, s, AgentState::Working)).is_none());
        let mut s = session("c", AgentState::NeedsInput);
        s.cwd = Some("/srv/secret/sub".into());
        assert!(shown(moved(&mut p, s, AgentState::Working)).is_none());
        let s = session("d", AgentState::NeedsInput);
        assert_eq!(
            shown(moved(&mut p, s, AgentState::Working)),
            Some(Kind::Input)
        );
    }

    #[test]
    fn rekey_keeps_the_notification_and_removal_forgets_it() {
        let mut p = planner(NotifyConfig::default());
        let s = session("a", AgentState::NeedsPermission);
        assert!(shown(moved(&mut p, s.clone(), AgentState::Working)).is_some());
        let rekeyed = SessionChange::Removed {
            reason: REKEYED.into(),
        };
        assert!(p.on_event(&event(s.clone(), rekeyed, None)).is_none());
        let mut renamed = s.clone();
        renamed.id = SessionId::new("a2");
        assert!(
            p.on_event(&event(renamed, SessionChange::Added, None))
                .is_none()
        );
        let gone = SessionChange::Removed {
            reason: "session ended".into(),
        };
        assert!(matches!(
            p.on_event(&event(s, gone, Some(AgentState::NeedsPermission))),
            Some((_, Desired::Forget))
        ));
        assert!(p.states.is_empty());
    }

    #[test]
    fn discovered_sessions_waiting_for_the_user_notify() {
        let mut p = planner(NotifyConfig::default());
        let s = session("a", AgentState::NeedsInput);
        assert_eq!(
            shown(p.on_event(&event(s, SessionChange::Added, None))),
            Some(Kind::Input)
        );
    }

    #[test]
    fn resync_closes_moved_sessions_and_never_shows() {
        let waiting = session("a", AgentState::NeedsPermission);
        let gone = session("b", AgentState::NeedsInput);
        let snap = Snapshot {
            seq: 1,
            sessions: vec![Arc::new(waiting.clone()), Arc::new(gone.clone())],
        };
        let mut p = planner(NotifyConfig::default());
        p.resync(&snap);
        let mut moved_on = waiting.clone();
        moved_on.state = AgentState::Working;
        let fresh = session("c", AgentState::NeedsPermission);
        let out = p.resync(&Snapshot {
            seq: 9,
            sessions: vec![Arc::new(moved_on), Arc::new(fresh)],
        });
        assert_eq!(out.len(), 2, "{out:?}");
        assert!(
            out.iter()
                .any(|(k, d)| *k == waiting.key && matches!(d, Desired::Close))
        );
        assert!(
            out.iter()
                .any(|(k, d)| *k == gone.key && matches!(d, Desired::Forget))
        );
    }

    #[test]
    fn project_name_prefers_the_repository() {
        let mut s = session("a", AgentState::Idle);
        assert_eq!(project_name(&s).as_deref(), Some("myrepo"));
        s.git.project_root = Some("/w/atm".into());
        assert_eq!(project_name(&s).as_deref(), Some("atm"));
        s.git.project_root = None;
        s.cwd = None;
        assert_eq!(project_name(&s), None);
    }
}
