//! The one ingest adapter every hook-style agent uses, and the [`Translator`] an agent supplies.
//!
//! Agents whose hooks (or extension) send JSON to the shared ingest socket differ only in how
//! their JSON maps to [`AgentEvent`]s. Everything else is the same for all of them and lives
//! here once: the config (`socket`), attaching the routes to the daemon's ingest hub, counting
//! ([`IngestStats`](crate::ingest::IngestStats)), resolving the process identity the payload
//! names (one cached `/proc` read), applying to the registry and answering. An agent's crate is
//! then a [`Translator`] (its routes, its harness and a `translate` from a message to a
//! [`Translation`] or a wire error) registered with [`register_translator!`](crate::register_translator).
//!
//! The handler never reads the registry to decide what to apply: what an event *means* is said
//! by the translation, and only the state machine decides a state. The one read is the reply a
//! client may ask for (`want_reply`): the session's view after the event.
//!
//! - `adapter`: [`IngestAdapter`], its config and the run loop;
//! - `handler`: what happens to one message.

mod adapter;
mod handler;

pub use adapter::{IngestAdapter, IngestAdapterConfig, factory};

use crate::event::AgentEvent;
use crate::fields::{self, Object};
use crate::ingest::IngestMessage;
use crate::model::SessionId;
use crate::protocol::WireError;

/// What an agent's crate implements: how its messages on the ingest socket become events.
///
/// `translate` should be pure (no I/O, no state) so it can be unit-tested and fuzzed; the
/// adapter does the rest. A translator is built with `Default` by [`factory`].
pub trait Translator: Default + Send + Sync + 'static {
    /// The message routes served on the ingest socket: a message's `type`, or `type:agent`
    /// when it names an `agent` (`hook_event:codex`).
    const ROUTES: &'static [&'static str];
    /// The harness of every session this translator reports (`claude`, `codex`, ...).
    const HARNESS: &'static str;
    /// The agent's name in log lines (`"Claude Code"`).
    const AGENT: &'static str;
    /// True when this agent's hook client can hand an answer back to the agent (Claude's
    /// `PermissionRequest`): a message with `"await_decision": true` whose event asks the
    /// user then waits for a decision made through atm. False (the default) for agents that
    /// decide only in their own dialog: their requests are shown, never answerable.
    const ANSWERABLE: bool = false;
    /// How this agent's tmux pane is read for the moves it fires no hook for
    /// ([`crate::screen`]): the adapter then runs a pane watcher beside the socket. `None`
    /// (the default): the hooks say everything.
    const SCREEN: Option<crate::screen::PaneScreen> = None;

    /// Translates one message (its `data` is the agent's payload; [`fields::data_object`] reads
    /// it). An error goes back to the client as an `error` line and is counted as a bad
    /// message; the connection stays open.
    fn translate(&self, msg: &IngestMessage) -> Result<Translation, WireError>;
}

/// One translated message: what to apply and who raised it.
#[derive(Debug, Clone, PartialEq)]
pub struct Translation {
    /// The agent's own event name (cut to a sane length), for logs.
    pub event_name: String,
    pub session_id: SessionId,
    /// The agent's process as the payload names it; the adapter turns it into an identity.
    pub pid: Option<u32>,
    pub tmux_pane: Option<String>,
    pub cwd: Option<String>,
    /// Set when the event was raised inside a subagent of the session.
    pub subagent_id: Option<String>,
    /// The agent's id of the turn the event belongs to (Codex's `turn_id`, Claude's
    /// `prompt_id`), when it names one.
    pub turn_id: Option<String>,
    /// What to apply. `None`: the event is deliberately ignored (counted as such).
    pub event: Option<AgentEvent>,
    /// False for event names the translator does not know (accepted as activity, counted).
    pub known: bool,
    /// Answer with the session's view (`session_updated`) once the event is applied.
    pub want_reply: bool,
}

impl Translation {
    /// A known event for `session_id`, with nothing else known about who raised it.
    pub fn new(event_name: impl Into<String>, session_id: SessionId, event: AgentEvent) -> Self {
        Self {
            event_name: event_name.into(),
            session_id,
            pid: None,
            tmux_pane: None,
            cwd: None,
            subagent_id: None,
            turn_id: None,
            event: Some(event),
            known: true,
            want_reply: false,
        }
    }

    /// Known exactly when the event's name is in one of the `lists` (an agent's documented
    /// events, for example the ones that say a state and the ones that are activity only; any
    /// other is accepted as activity and counted as unknown).
    #[must_use]
    pub fn known_among(mut self, lists: &[&[&str]]) -> Self {
        let name = self.event_name.as_str();
        self.known = lists.iter().any(|list| list.contains(&name));
        self
    }

    /// The turn the event belongs to, as the agent names it (cut to an id's length; empty
    /// is none).
    #[must_use]
    pub fn with_turn_id(mut self, id: Option<&str>) -> Self {
        self.turn_id = id
            .filter(|id| !id.is_empty())
            .map(|id| crate::text::truncate_chars(id, crate::registry::limits::ID));
        self
    }

    /// Reads what `atm-hook` adds to every payload (`pid`, `tmux_pane`) and the agent's `cwd`.
    #[must_use]
    pub fn with_hook_fields(mut self, obj: &Object) -> Self {
        self.pid = fields::pid(obj);
        self.tmux_pane = fields::tmux_pane(obj);
        self.cwd = fields::opt_str(obj, "cwd").map(str::to_owned);
        self
    }
}

/// Registers a [`Translator`] as an adapter plugin: [`register_plugin!`](crate::register_plugin)
/// with the generic [`IngestAdapter`] as the factory. With `adapter: Name`, it also names the
/// adapter (`pub type Name = IngestAdapter<Translator>`), for tests and programs that start it
/// themselves.
///
/// ```ignore
/// atm_core::register_translator! {
///     "amp", AmpHooks,
///     adapter: AmpAdapter,
///     description: "Amp hook events sent by atm-hook",
///     sample_config: include_str!("../sample.toml"),
/// }
/// ```
#[macro_export]
macro_rules! register_translator {
    ($name:literal, $translator:ty, adapter: $adapter:ident, description: $desc:expr, sample_config: $sample:expr $(,)?) => {
        #[doc = concat!("`[[adapter]] type = \"", $name, "\"`: the generic ingest adapter with [`", stringify!($translator), "`].")]
        pub type $adapter = $crate::ingest_adapter::IngestAdapter<$translator>;

        $crate::register_translator!($name, $translator, description: $desc, sample_config: $sample);
    };
    ($name:literal, $translator:ty, description: $desc:expr, sample_config: $sample:expr $(,)?) => {
        $crate::register_plugin! {
            adapter $name,
            description: $desc,
            sample_config: $sample,
            factory: $crate::ingest_adapter::factory::<$translator>,
        }
    };
}

/// Declares a hook agent's translator in one place: the unit struct, its [`Translator`] impl
/// (routes, harness, agent name, and `translate`, a closure or function from the
/// [`IngestMessage`] to a [`Translation`]) and its registration as the adapter plugin `name`
/// ([`register_translator!`](crate::register_translator), with `adapter` naming the adapter
/// type and the crate's own `sample.toml` as the sample config). A translator that needs more
/// than that implements [`Translator`] by hand.
///
/// ```ignore
/// atm_core::translator! {
///     /// Amp's hook events, for the generic ingest adapter.
///     pub struct AmpHooks as "amp", adapter AmpAdapter;
///     harness: "amp", agent: "Amp",
///     routes: &["hook_event:amp"],
///     description: "Amp hook events sent by atm-hook --agent amp",
///     translate: |msg| translate(msg.data()),
/// }
/// ```
#[macro_export]
macro_rules! translator {
    (
        $(#[$meta:meta])*
        pub struct $translator:ident as $name:literal, adapter $adapter:ident;
        harness: $harness:expr, agent: $agent:literal,
        $(#[$routes_meta:meta])*
        routes: $routes:expr,
        description: $desc:expr,
        $(answerable: $answerable:expr,)?
        $(screen: $screen:expr,)?
        translate: $translate:expr $(,)?
    ) => {
        $(#[$meta])*
        #[derive(Debug, Default)]
        pub struct $translator;

        impl $crate::ingest_adapter::Translator for $translator {
            $(#[$routes_meta])*
            const ROUTES: &'static [&'static str] = $routes;
            const HARNESS: &'static str = $harness;
            const AGENT: &'static str = $agent;
            $(const ANSWERABLE: bool = $answerable;)?
            $(const SCREEN: Option<$crate::screen::PaneScreen> = Some($screen);)?

            fn translate(
                &self,
                msg: &$crate::ingest::IngestMessage,
            ) -> ::core::result::Result<$crate::ingest_adapter::Translation, $crate::protocol::WireError>
            {
                $crate::ingest_adapter::translate_with(msg, $translate)
            }
        }

        $crate::register_translator! {
            $name, $translator,
            adapter: $adapter,
            description: $desc,
            sample_config: include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/sample.toml")),
        }
    };
}

/// Calls `translate` on `msg`: lets [`translator!`](crate::translator) take a closure whose
/// argument type is inferred.
#[doc(hidden)]
pub fn translate_with<F>(msg: &IngestMessage, translate: F) -> Result<Translation, WireError>
where
    F: FnOnce(&IngestMessage) -> Result<Translation, WireError>,
{
    translate(msg)
}
