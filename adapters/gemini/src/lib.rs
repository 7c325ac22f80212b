//! `gemini`: Gemini CLI hook events as atm sessions (harness `gemini`).
//!
//! Gemini CLI runs `atm-hook --agent gemini` for each hook event configured in its
//! `settings.json`; `atm-hook` adds the Gemini PID and `$TMUX_PANE`, sends the JSON as a
//! `hook_event` with `"agent":"gemini"` (routed to `hook_event:gemini`) and prints nothing
//! (Gemini reads a hook's stdout as its decision, so it must stay silent).
//!
//! This crate is a translator: [`translate`] is the pure mapping of every documented Gemini
//! hook event; [`GeminiHooks`] hands it to atm-core's generic ingest adapter, which serves the
//! route, resolves the process identity, applies to the registry and counts. Beside it,
//! [`screen::watch`] reads the panes of active Gemini sessions, for the moves Gemini fires no
//! hook for (an approval answered, Esc), and reports what they show as discovery hints.

pub mod screen;
pub mod translate;

use atm_core::ingest::IngestMessage;
use atm_core::ingest_adapter::{IngestAdapter, IngestAdapterConfig, Translation, Translator};
use atm_core::model::Harness;
use atm_core::plugin::{AdapterContext, ConfigError, InputAdapter, PluginError};
use atm_core::protocol::WireError;

pub use translate::translate;

/// Gemini CLI's hook events, for the generic ingest adapter.
#[derive(Debug, Default)]
pub struct GeminiHooks;

impl Translator for GeminiHooks {
    const ROUTES: &'static [&'static str] = &["hook_event:gemini"];
    const HARNESS: &'static str = Harness::GEMINI;
    const AGENT: &'static str = "Gemini CLI";

    fn translate(&self, msg: &IngestMessage) -> Result<Translation, WireError> {
        translate(msg.data())
    }
}

/// `[[adapter]] type = "gemini"`: the generic ingest adapter with [`GeminiHooks`], and the
/// pane watcher ([`screen::watch`]).
#[derive(Debug)]
pub struct GeminiAdapter(IngestAdapter<GeminiHooks>);

impl GeminiAdapter {
    pub fn new(config: IngestAdapterConfig) -> Self {
        Self(IngestAdapter::new(config))
    }
}

fn factory(cfg: &atm_core::toml::Value) -> Result<Box<dyn InputAdapter>, ConfigError> {
    Ok(Box::new(GeminiAdapter(IngestAdapter::from_config(cfg)?)))
}

#[atm_core::async_trait]
impl InputAdapter for GeminiAdapter {
    async fn run(self: Box<Self>, ctx: AdapterContext) -> Result<(), PluginError> {
        ctx.spawn(screen::watch(
            ctx.registry.clone(),
            ctx.cancel.clone(),
            ctx.name.clone(),
        ));
        Box::new(self.0).run(ctx).await
    }
}

atm_core::register_plugin! {
    adapter "gemini",
    description: "Gemini CLI hook events (BeforeTool, Notification ToolPermission, AfterAgent, ...) sent by atm-hook, and its pane's screen for what no hook tells",
    sample_config: include_str!("../sample.toml"),
    factory: factory,
}
