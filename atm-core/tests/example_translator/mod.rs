//! A complete hook-based agent, as `docs/writing-a-plugin.md` shows it: one translator file.
//! "Example Agent" runs `atm-hook --agent example` per hook, which sends its JSON (plus `pid`
//! and `tmux_pane`) as a `hook_event` routed to `hook_event:example`.

use atm_core::event::{AgentEvent, StartSource};
use atm_core::fields::{self, Object};
use atm_core::ingest::IngestMessage;
use atm_core::ingest_adapter::{Translation, Translator};
use atm_core::protocol::WireError;
use atm_core::text::{one_line_preview, truncate_chars};

#[derive(Debug, Default)]
pub struct ExampleHooks;

impl Translator for ExampleHooks {
    const ROUTES: &'static [&'static str] = &["hook_event:example"];
    const HARNESS: &'static str = "example";
    const AGENT: &'static str = "Example Agent";

    fn translate(&self, msg: &IngestMessage) -> Result<Translation, WireError> {
        let data = fields::data_object(&msg.raw.body, "Example Agent's hook JSON")?;
        let mut t = translate(data)?;
        t.want_reply = msg.wants_reply(); // its status-line client asks for the session back
        Ok(t)
    }
}

/// The pure part: one hook payload to one event.
pub fn translate(obj: &Object) -> Result<Translation, WireError> {
    let session_id = fields::session_id(obj)?;
    let name = truncate_chars(fields::required_str(obj, "hook_event_name")?, 64);
    let text = |key| fields::opt_str(obj, key).map(|s| one_line_preview(s, 120));
    let tool = || text("tool_name").unwrap_or_else(|| "unknown".to_owned());
    let command =
        || fields::opt_object(obj, "tool_input").and_then(|i| fields::opt_str(i, "command"));
    let event = match name.as_str() {
        "SessionStart" => AgentEvent::SessionStarted {
            source: StartSource::parse(fields::opt_str(obj, "source").unwrap_or("")),
            model: text("model"),
        },
        "UserPromptSubmit" => AgentEvent::PromptSubmitted {
            prompt: text("prompt"),
        },
        "PreToolUse" => AgentEvent::ToolStarted {
            tool: tool(),
            detail: command().map(|c| one_line_preview(c, 120)),
        },
        "PermissionRequest" => AgentEvent::PermissionRequested {
            tool: tool(),
            detail: command().map(|c| one_line_preview(c, 120)),
            suggestions: Vec::new(),
        },
        "PostToolUse" => AgentEvent::ToolFinished {
            tool: text("tool_name"),
        },
        "Stop" => AgentEvent::TurnFinished,
        "SessionEnd" => AgentEvent::SessionEnded {
            reason: text("reason").unwrap_or_else(|| "other".to_owned()),
            continues: false,
        },
        other => AgentEvent::Activity {
            what: other.to_owned(),
        },
    };
    let known = !matches!(event, AgentEvent::Activity { .. }) || name == "Heartbeat";
    let mut t = Translation::new(name, session_id, event).with_hook_fields(obj);
    t.known = known;
    // A heartbeat means nothing to atm: dropped, and counted as ignored.
    t.event = t.event.take().filter(|_| t.event_name != "Heartbeat");
    Ok(t)
}

atm_core::register_translator! {
    "example", ExampleHooks,
    description: "Example Agent hook events sent by atm-hook --agent example",
    sample_config: "[[adapter]]\ntype = \"example\"\n# socket = \"~/.local/run/atm/hooks.sock\"\n",
}
