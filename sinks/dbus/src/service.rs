//! The D-Bus face of the sink: the published session table ([`Mirror`]) and the two interfaces
//! served from it, `io.github.atm.Monitor1` ([`Manager`]) and `io.github.atm.Monitor1.Session`
//! ([`SessionObject`]).
//!
//! The mirror is the one copy of what D-Bus clients see. The bus task writes it (always, even
//! while no bus is connected, so a reconnect can publish it at once); property getters and
//! methods only read it. It sits behind a `std` lock held for map operations only, never across
//! an `.await`, so a slow client can never hold up the bus task or the other way round.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use atm_core::control::ControlBus;
use atm_core::request::Decision;
use atm_core::{AgentState, Attention, RegistryHandle, Session, SessionKey};
use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::{Connection, OwnedObjectPath, OwnedVariant, fdo, interface};

use crate::answer;
use crate::path::session_path;
use crate::props::SessionProps;

/// The manager interface name (at [`crate::path::MANAGER_PATH`]).
pub const MANAGER_INTERFACE: &str = "io.github.atm.Monitor1";
/// The per-session interface name.
pub const SESSION_INTERFACE: &str = "io.github.atm.Monitor1.Session";

/// How long `Rescan` waits for the adapters.
const RESCAN_TIMEOUT: Duration = Duration::from_secs(10);

/// One published session.
#[derive(Debug, Clone)]
pub struct Published {
    /// The registry key it is published for now (it can move from an id key to a process key).
    pub key: SessionKey,
    pub props: SessionProps,
    pub state: AgentState,
    pub attention: Option<Attention>,
}

impl Published {
    pub fn new(s: &Session) -> Self {
        Self {
            key: s.key.clone(),
            props: SessionProps::from_session(s),
            state: s.state,
            attention: s.attention.clone(),
        }
    }
}

/// Every published session, by object path.
#[derive(Debug, Default)]
pub struct Mirror {
    by_path: BTreeMap<String, Published>,
    by_key: HashMap<SessionKey, String>,
}

/// The published counts, which the manager exposes as properties.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub sessions: u32,
    pub attention: u32,
}

impl Mirror {
    /// The path a session is published at, if it is. A session first known by its id and later
    /// attached to its process keeps the path it was published under.
    pub fn find(&self, s: &Session) -> Option<&str> {
        if let Some(p) = self.by_key.get(&s.key) {
            return Some(p);
        }
        let by_id = SessionKey::Id {
            harness: s.harness.clone(),
            id: s.id.clone(),
        };
        self.by_key.get(&by_id).map(String::as_str)
    }

    /// Replaces the record at `path` (which must come from [`Mirror::find`]); returns the old one.
    pub fn replace(&mut self, path: &str, new: Published) -> Option<Published> {
        let slot = self.by_path.get_mut(path)?;
        let old = std::mem::replace(slot, new);
        if old.key != slot.key {
            self.by_key.remove(&old.key);
            self.by_key.insert(slot.key.clone(), path.to_owned());
        }
        Some(old)
    }

    /// Publishes a new session; returns its path.
    pub fn insert(&mut self, new: Published) -> String {
        let mut path = session_path(&new.key);
        // Paths come from unique keys, but a path kept across a key change could in principle
        // be wanted again by a new session: never let two sessions share one.
        let mut n = 1u32;
        while self.by_path.contains_key(&path) {
            n += 1;
            path = format!("{}__{n}", session_path(&new.key));
        }
        self.by_key.insert(new.key.clone(), path.clone());
        self.by_path.insert(path.clone(), new);
        path
    }

    pub fn remove(&mut self, path: &str) -> Option<Published> {
        let old = self.by_path.remove(path)?;
        self.by_key.remove(&old.key);
        Some(old)
    }

    pub fn get(&self, path: &str) -> Option<&Published> {
        self.by_path.get(path)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Published)> {
        self.by_path.iter()
    }

    pub fn counts(&self) -> Counts {
        let n = |c: usize| u32::try_from(c).unwrap_or(u32::MAX);
        Counts {
            sessions: n(self.by_path.len()),
            attention: n(self
                .by_path
                .values()
                .filter(|p| p.state.needs_attention())
                .count()),
        }
    }
}

/// The mirror, shared between the bus task and the interfaces.
#[derive(Debug, Clone, Default)]
pub struct SharedMirror(Arc<RwLock<Mirror>>);

impl SharedMirror {
    // A panic while holding the lock cannot leave the maps half-updated in a way that matters
    // more than stopping the service would, so a poisoned lock is used as it is.
    pub fn read(&self) -> RwLockReadGuard<'_, Mirror> {
        self.0.read().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn write(&self) -> RwLockWriteGuard<'_, Mirror> {
        self.0.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Errors the manager's methods return, as `io.github.atm.Monitor1.Error.*`.
#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "io.github.atm.Monitor1.Error")]
pub enum MonitorError {
    #[zbus(error)]
    ZBus(zbus::Error),
    /// No session has this id (it ended, or the id changed on `/clear` or resume), or no
    /// request has this id (it was never asked, or it ended long ago).
    NotFound(String),
    /// The request was answered already (through atm).
    AlreadyAnswered(String),
    /// The request ended without an answer through atm (answered in the terminal,
    /// superseded, its session gone).
    Ended(String),
    /// Nothing can deliver an answer to this request's agent: answer it in its terminal.
    NotAnswerable(String),
    /// The call does not fit (a malformed id, "always" with no rule offered, answers for a
    /// request that asks no questions, ...).
    Invalid(String),
    /// The caller is not atmd's own user (or the bus could not say who it is).
    AccessDenied(String),
    /// atmd is shutting down.
    Unavailable(String),
}

/// `io.github.atm.Monitor1` at `/io/github/atm/Monitor1`.
pub struct Manager {
    pub mirror: SharedMirror,
    pub control: ControlBus,
    pub registry: RegistryHandle,
    /// atmd's uid: the only caller allowed to see and answer requests.
    pub uid: u32,
}

impl Manager {
    async fn decide(
        &self,
        conn: &Connection,
        header: &Header<'_>,
        id: &str,
        decision: Decision,
    ) -> Result<String, MonitorError> {
        let uid = answer::same_user(conn, header, self.uid).await?;
        answer::decide(&self.registry, id, decision, uid).await
    }
}

/// Every session of the atm registry. Each session is also an object below
/// /io/github/atm/Monitor1/sessions (see org.freedesktop.DBus.ObjectManager on this object).
#[interface(name = "io.github.atm.Monitor1")]
impl Manager {
    /// Every session: its Id mapped to the same properties as the session object's
    /// org.freedesktop.DBus.Properties.GetAll("io.github.atm.Monitor1.Session").
    #[zbus(out_args("sessions"))]
    fn list_sessions(&self) -> HashMap<String, HashMap<String, OwnedVariant>> {
        self.mirror
            .read()
            .iter()
            .map(|(_, p)| (p.props.id.clone(), p.props.to_dict()))
            .collect()
    }

    /// One session by its Id: its object path and its properties.
    #[zbus(out_args("path", "properties"))]
    fn get_session(
        &self,
        id: &str,
    ) -> Result<(OwnedObjectPath, HashMap<String, OwnedVariant>), MonitorError> {
        let mirror = self.mirror.read();
        let found = mirror.iter().find(|(_, p)| p.props.id == id);
        match found {
            Some((path, p)) => {
                let path = OwnedObjectPath::try_from(path.as_str())?;
                Ok((path, p.props.to_dict()))
            }
            None => Err(MonitorError::NotFound(format!(
                "no session with id {id:?}; call ListSessions for the current ids"
            ))),
        }
    }

    /// Asks the discovery adapters to look for agent processes now. Returns how many sessions
    /// they found and how many processes they could not read.
    #[zbus(out_args("discovered", "failed"))]
    async fn rescan(&self) -> (u32, u32) {
        let report = self.control.rescan(RESCAN_TIMEOUT).await;
        let n = |c: u64| u32::try_from(c).unwrap_or(u32::MAX);
        (n(report.discovered), n(report.failed))
    }

    /// Every pending request: its id mapped to SessionId (s), Session (o), Harness (s),
    /// Reason (s), Tool (s), Detail (s), Answerable (b: an answer can reach the agent),
    /// AskedAt (x, Unix seconds), Questions (a(ssasb): header, question, option labels,
    /// multi-select), Rules (as: the "always allow" rules offered, for ApproveRule) and Id (s).
    /// Callers of another uid get AccessDenied.
    #[zbus(out_args("requests"))]
    async fn list_requests(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<HashMap<String, HashMap<String, OwnedVariant>>, MonitorError> {
        answer::same_user(conn, &header, self.uid).await?;
        Ok(answer::list(&self.mirror.read()))
    }

    /// Lets the tool run; `always` also adds the first rule the agent offers. Returns the
    /// session's Id. Errors: NotFound, AlreadyAnswered, Ended, NotAnswerable, Invalid,
    /// AccessDenied.
    #[zbus(out_args("session_id"))]
    async fn approve(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        id: &str,
        always: bool,
    ) -> Result<String, MonitorError> {
        let decision = Decision::Allow { always, rule: None };
        self.decide(conn, &header, id, decision).await
    }

    /// Lets the tool run and adds the offered rule number `rule` (0-based, in the order of
    /// the request's Rules). Returns the session's Id.
    #[zbus(out_args("session_id"))]
    async fn approve_rule(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        id: &str,
        rule: u32,
    ) -> Result<String, MonitorError> {
        let rule = usize::try_from(rule).unwrap_or(usize::MAX);
        let decision = Decision::Allow {
            always: true,
            rule: Some(rule),
        };
        self.decide(conn, &header, id, decision).await
    }

    /// Refuses the tool; `message` ("" for none) is told to the agent, `interrupt` also stops
    /// its turn. Returns the session's Id.
    #[zbus(out_args("session_id"))]
    async fn deny(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        id: &str,
        message: &str,
        interrupt: bool,
    ) -> Result<String, MonitorError> {
        let message = (!message.is_empty()).then(|| message.to_owned());
        let decision = Decision::Deny { message, interrupt };
        self.decide(conn, &header, id, decision).await
    }

    /// Answers the request's questions, one answer per question in order (an option's label
    /// or free text; several labels of a multi-select question joined by ", "). Returns the
    /// session's Id.
    #[zbus(out_args("session_id"))]
    async fn answer(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        id: &str,
        answers: Vec<String>,
    ) -> Result<String, MonitorError> {
        self.decide(conn, &header, id, Decision::Answer { answers })
            .await
    }

    /// How many sessions there are.
    #[zbus(property)]
    fn session_count(&self) -> u32 {
        self.mirror.read().counts().sessions
    }

    /// How many sessions wait for their user (State needs_permission or needs_input).
    #[zbus(property)]
    fn attention_count(&self) -> u32 {
        self.mirror.read().counts().attention
    }

    /// A session changed state (starting, working, needs_permission, needs_input, idle).
    /// `reason` is its AttentionReason after the change ("" when it needs no attention).
    #[zbus(signal)]
    pub async fn state_changed(
        emitter: &SignalEmitter<'_>,
        id: &str,
        old: &str,
        new: &str,
        reason: &str,
    ) -> zbus::Result<()>;

    /// A session started waiting for its user: `reason` is permission, input, plan_approval,
    /// ...; `summary` is one short line (the tool and what it wants, or the question).
    #[zbus(signal)]
    pub async fn attention_needed(
        emitter: &SignalEmitter<'_>,
        id: &str,
        reason: &str,
        summary: &str,
    ) -> zbus::Result<()>;

    /// A session asks something that can be answered with Approve, Deny or Answer (see
    /// ListRequests for the whole request, and whether an answer can reach the agent now).
    #[zbus(signal)]
    pub async fn request_added(
        emitter: &SignalEmitter<'_>,
        id: &str,
        session_id: &str,
        tool: &str,
        detail: &str,
    ) -> zbus::Result<()>;

    /// A request ended. `fate` is answered (`detail`: the surface that answered: dbus,
    /// atmctl, notify, ...) or withdrawn (`detail`: why: answered in the terminal, superseded
    /// by a newer request, the session ended, ...).
    #[zbus(signal)]
    pub async fn request_resolved(
        emitter: &SignalEmitter<'_>,
        id: &str,
        session_id: &str,
        fate: &str,
        detail: &str,
    ) -> zbus::Result<()>;
}

/// `io.github.atm.Monitor1.Session`, one object per session.
pub struct SessionObject {
    pub path: String,
    pub mirror: SharedMirror,
}

impl SessionObject {
    fn prop<T>(&self, get: impl FnOnce(&SessionProps) -> T) -> fdo::Result<T> {
        match self.mirror.read().get(&self.path) {
            Some(p) => Ok(get(&p.props)),
            None => Err(fdo::Error::UnknownObject(format!(
                "session {} has just ended",
                self.path
            ))),
        }
    }
}

/// One agent session. Every property is read-only and announced through
/// org.freedesktop.DBus.Properties.PropertiesChanged (only the changed ones).
#[interface(name = "io.github.atm.Monitor1.Session")]
impl SessionObject {
    /// The agent's own session id. It changes on /clear, resume or fork; the object path does not.
    #[zbus(property)]
    fn id(&self) -> fdo::Result<String> {
        self.prop(|p| p.id.clone())
    }

    /// Which agent: claude, codex, gemini, ...
    #[zbus(property)]
    fn harness(&self) -> fdo::Result<String> {
        self.prop(|p| p.harness.clone())
    }

    /// starting, working, needs_permission, needs_input or idle.
    #[zbus(property)]
    fn state(&self) -> fdo::Result<String> {
        self.prop(|p| p.state.clone())
    }

    /// Why the session waits for its user (permission, input, plan_approval, ...); "" when it does not.
    #[zbus(property)]
    fn attention_reason(&self) -> fdo::Result<String> {
        self.prop(|p| p.attention_reason.clone())
    }

    /// The tool a prompt is about, else what the agent does now (a tool name, Thinking, ...); "" when unknown.
    #[zbus(property)]
    fn tool(&self) -> fdo::Result<String> {
        self.prop(|p| p.tool.clone())
    }

    /// The working directory; "" when unknown.
    #[zbus(property)]
    fn cwd(&self) -> fdo::Result<String> {
        self.prop(|p| p.cwd.clone())
    }

    /// The git project root; "" when unknown.
    #[zbus(property)]
    fn project(&self) -> fdo::Result<String> {
        self.prop(|p| p.project.clone())
    }

    /// The git branch; "" when unknown.
    #[zbus(property)]
    fn branch(&self) -> fdo::Result<String> {
        self.prop(|p| p.branch.clone())
    }

    /// The tmux pane (%12); "" when not in tmux.
    #[zbus(property)]
    fn tmux_pane(&self) -> fdo::Result<String> {
        self.prop(|p| p.tmux_pane.clone())
    }

    /// The model's display name, else its id; "" when unknown.
    #[zbus(property)]
    fn model(&self) -> fdo::Result<String> {
        self.prop(|p| p.model.clone())
    }

    /// Cost so far, in US dollars.
    #[zbus(property)]
    fn cost_usd(&self) -> fdo::Result<f64> {
        self.prop(|p| p.cost_usd)
    }

    /// Used share of the context window, 0 to 100.
    #[zbus(property)]
    fn context_percent(&self) -> fdo::Result<f64> {
        self.prop(|p| p.context_percent)
    }

    /// When the session started, in Unix seconds.
    #[zbus(property)]
    fn started_at(&self) -> fdo::Result<i64> {
        self.prop(|p| p.started_at)
    }

    /// The last activity, in Unix seconds.
    #[zbus(property)]
    fn last_activity(&self) -> fdo::Result<i64> {
        self.prop(|p| p.last_activity)
    }

    /// The agent's process id; 0 when unknown.
    #[zbus(property)]
    fn pid(&self) -> fdo::Result<u32> {
        self.prop(|p| p.pid)
    }

    /// The id of the request the session waits on (for the manager's Approve, Deny and
    /// Answer); "" when it waits on none.
    #[zbus(property)]
    fn request_id(&self) -> fdo::Result<String> {
        self.prop(|p| p.request_id.clone())
    }

    /// Whether an answer to RequestId can reach the agent now (a hook waits for it).
    #[zbus(property)]
    fn request_answerable(&self) -> fdo::Result<bool> {
        self.prop(|p| p.request_answerable)
    }

    /// The machine the session runs on (this daemon's host for its own sessions).
    #[zbus(property)]
    fn host(&self) -> fdo::Result<String> {
        self.prop(|p| p.host.clone())
    }

    /// Whether the session runs on another machine and is mirrored here.
    #[zbus(property)]
    fn remote(&self) -> fdo::Result<bool> {
        self.prop(|p| p.remote)
    }

    /// Whether the session's host has not been heard for too long (what is shown may be old).
    #[zbus(property)]
    fn stale(&self) -> fdo::Result<bool> {
        self.prop(|p| p.stale)
    }
}
