//! `SessionProps`: the typed properties of one session object, computed from a registry
//! [`Session`], and the diff that drives `PropertiesChanged`.
//!
//! The property list lives in one place ([`SessionProps::entries`]): the getters, the
//! `a{sv}` dictionaries of `ListSessions`/`GetSession` and the change detection all read it, so
//! a property cannot be added to one and forgotten in another. Absent text is `""` and an
//! unknown PID is `0`, because D-Bus properties have no null. Every text goes through
//! [`portable`] here, the one place session text becomes D-Bus text: a NUL would make the bus
//! drop our connection, and a noncharacter makes clients such as `busctl` reject the whole
//! `ListSessions` reply.

use std::collections::HashMap;

use atm_core::text::portable;
use atm_core::{AgentState, Attention, Session};
use zbus::{OwnedVariant, Variant};

/// What one session object exposes, by D-Bus type.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionProps {
    pub id: String,
    pub harness: String,
    pub state: String,
    pub attention_reason: String,
    pub tool: String,
    pub cwd: String,
    pub project: String,
    pub branch: String,
    pub tmux_pane: String,
    pub model: String,
    pub cost_usd: f64,
    pub context_percent: f64,
    pub started_at: i64,
    pub last_activity: i64,
    pub pid: u32,
    /// The open request's id (for Approve, Deny, Answer), "" when none.
    pub request_id: String,
    /// Whether an answer to that request can reach the agent now.
    pub request_answerable: bool,
    /// The machine the session runs on.
    pub host: String,
    /// A session of another machine, mirrored here.
    pub remote: bool,
    /// Its host has not been heard for too long.
    pub stale: bool,
}

impl SessionProps {
    pub fn from_session(s: &Session) -> Self {
        let text = |v: Option<&String>| v.map(|t| portable(t).into_owned()).unwrap_or_default();
        let request = s.attention.as_ref().and_then(|a| a.request.as_ref());
        Self {
            id: portable(s.id.as_str()).into_owned(),
            harness: portable(s.harness.as_str()).into_owned(),
            state: s.state.as_str().to_owned(),
            attention_reason: text(s.attention.as_ref().map(|a| &a.reason)),
            // The tool a prompt is about when there is one, else what the agent is doing now.
            tool: text(
                s.attention
                    .as_ref()
                    .and_then(|a| a.tool.as_ref())
                    .or(s.activity.as_ref()),
            ),
            cwd: text(s.cwd.as_ref()),
            project: text(s.git.project_root.as_ref()),
            branch: text(s.git.branch.as_ref()),
            tmux_pane: text(s.tmux_pane.as_ref()),
            model: text(s.model_name.as_ref().or(s.model_id.as_ref())),
            cost_usd: s.usage.cost_usd,
            context_percent: s.usage.context_used_percentage,
            started_at: s.started_at.timestamp(),
            last_activity: s.last_activity.timestamp(),
            pid: s.pid().unwrap_or(0),
            request_id: request
                .map(|r| r.id.as_str().to_owned())
                .unwrap_or_default(),
            request_answerable: request.is_some_and(|r| r.answerable),
            host: s.host.as_str().to_owned(),
            remote: s.is_remote(),
            stale: s.remote.is_some_and(|r| r.stale),
        }
    }

    /// Every property with its D-Bus name, in introspection order.
    pub fn entries(&self) -> [(&'static str, Variant<'_>); 20] {
        [
            ("Id", Variant::from(self.id.as_str())),
            ("Harness", Variant::from(self.harness.as_str())),
            ("State", Variant::from(self.state.as_str())),
            (
                "AttentionReason",
                Variant::from(self.attention_reason.as_str()),
            ),
            ("Tool", Variant::from(self.tool.as_str())),
            ("Cwd", Variant::from(self.cwd.as_str())),
            ("Project", Variant::from(self.project.as_str())),
            ("Branch", Variant::from(self.branch.as_str())),
            ("TmuxPane", Variant::from(self.tmux_pane.as_str())),
            ("Model", Variant::from(self.model.as_str())),
            ("CostUsd", Variant::from(self.cost_usd)),
            ("ContextPercent", Variant::from(self.context_percent)),
            ("StartedAt", Variant::from(self.started_at)),
            ("LastActivity", Variant::from(self.last_activity)),
            ("Pid", Variant::from(self.pid)),
            ("RequestId", Variant::from(self.request_id.as_str())),
            ("RequestAnswerable", Variant::from(self.request_answerable)),
            ("Host", Variant::from(self.host.as_str())),
            ("Remote", Variant::from(self.remote)),
            ("Stale", Variant::from(self.stale)),
        ]
    }

    /// The properties whose value differs in `new`, with their new values.
    pub fn changed<'a>(&self, new: &'a SessionProps) -> HashMap<&'static str, Variant<'a>> {
        self.entries()
            .into_iter()
            .zip(new.entries())
            .filter(|((_, old), (_, new))| old != new)
            .map(|(_, (name, v))| (name, v))
            .collect()
    }

    /// The `a{sv}` dictionary (the same as `Properties.GetAll`).
    pub fn to_dict(&self) -> HashMap<String, OwnedVariant> {
        self.entries()
            .into_iter()
            .filter_map(|(name, v)| OwnedVariant::try_from(v).ok().map(|v| (name.to_owned(), v)))
            .collect()
    }
}

/// What `AttentionNeeded` says in its `summary`: the tool and what it wants to do, or the
/// question, in one short line (made [`portable`] like every property).
pub fn attention_summary(attention: &Attention) -> String {
    let summary = match (&attention.tool, &attention.detail) {
        (Some(tool), Some(detail)) => format!("{tool}: {detail}"),
        (Some(tool), None) => tool.clone(),
        (None, Some(detail)) => detail.clone(),
        (None, None) => attention.reason.clone(),
    };
    portable(&summary).into_owned()
}

/// Whether a change (`old` -> `new`) should raise `AttentionNeeded`: entering an attention
/// state, or a new prompt while already in one (a second permission request).
pub fn raises_attention(
    old: Option<(AgentState, Option<&Attention>)>,
    new_state: AgentState,
    new_attention: Option<&Attention>,
) -> bool {
    if !new_state.needs_attention() || new_attention.is_none() {
        return false;
    }
    match old {
        None => true,
        Some((state, attention)) => state != new_state || attention != new_attention,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use atm_core::chrono::{TimeZone, Utc};
    use atm_core::{Harness, ProcessIdentity, SessionId, SessionKey};

    fn session() -> Session {
        let at = Utc.timestamp_opt(1_700_000_000, 0).unwrap();
        Session::new(
            SessionKey::Id {
                harness: Harness::claude(),
                id: SessionId::new("abc"),
            },
            SessionId::new("abc"),
            None,
            "test",
            at,
        )
    }

    #[test]
    fn absent_values_are_empty_and_zero() {
        let p = SessionProps::from_session(&session());
        assert_eq!(p.id, "abc");
        assert_eq!(p.harness, "claude");
        assert_eq!(p.state, "starting");
        assert_eq!(
            (p.tool.as_str(), p.cwd.as_str(), p.model.as_str()),
            ("", "", "")
        );
        assert_eq!(p.pid, 0);
        assert_eq!(p.started_at, 1_700_000_000);
        assert_eq!(p.to_dict().len(), 20);
        assert_eq!((p.request_id.as_str(), p.request_answerable), ("", false));
    }

    #[test]
    fn changed_lists_only_what_differs() {
        let mut s = session();
        let before = SessionProps::from_session(&s);
        assert!(before.changed(&before.clone()).is_empty());
        s.usage.cost_usd = 1.25;
        s.process = Some(ProcessIdentity {
            pid: 42,
            start_time: 7,
        });
        let after = SessionProps::from_session(&s);
        let changed = before.changed(&after);
        let mut names: Vec<_> = changed.keys().copied().collect();
        names.sort_unstable();
        assert_eq!(names, ["CostUsd", "Pid"]);
        assert_eq!(changed["CostUsd"], Variant::from(1.25f64));
        assert_eq!(changed["Pid"], Variant::from(42u32));
    }

    #[test]
    fn tool_prefers_the_prompt_over_the_activity() {
        let mut s = session();
        s.activity = Some("Thinking".into());
        assert_eq!(SessionProps::from_session(&s).tool, "Thinking");
        s.attention = Some(atm_core::testing::permission_attention(
            "Bash",
            Some("rm -rf build"),
        ));
        let p = SessionProps::from_session(&s);
        assert_eq!(
            (p.tool.as_str(), p.attention_reason.as_str()),
            ("Bash", "permission")
        );
        assert_eq!(
            attention_summary(s.attention.as_ref().unwrap()),
            "Bash: rm -rf build"
        );
    }

    #[test]
    fn attention_is_raised_on_entry_and_on_a_new_prompt_only() {
        let a = atm_core::testing::permission_attention("Bash", None);
        let b = Attention {
            tool: Some("Edit".into()),
            ..a.clone()
        };
        let perm = AgentState::NeedsPermission;
        assert!(raises_attention(None, perm, Some(&a)));
        assert!(raises_attention(
            Some((AgentState::Working, None)),
            perm,
            Some(&a)
        ));
        assert!(!raises_attention(Some((perm, Some(&a))), perm, Some(&a)));
        assert!(raises_attention(Some((perm, Some(&a))), perm, Some(&b)));
        assert!(!raises_attention(
            Some((perm, Some(&a))),
            AgentState::Working,
            None
        ));
        assert!(!raises_attention(None, AgentState::Idle, None));
    }

    /// The D-Bus renderer fed hostile text (the fuzz property the `dbus_render` fuzz target
    /// runs for longer): whatever an agent put in a session, every string we hand the bus is
    /// valid for it (no NUL, no noncharacter, no control character: a NUL makes the bus drop
    /// our connection, a noncharacter makes busctl refuse the whole reply), the `a{sv}` of
    /// `ListSessions` serialises, and the session's object path is a valid path.
    mod fuzz {
        use super::*;
        use atm_core::testing::arb_hostile_session;
        use atm_core::text::is_portable;
        use proptest::prelude::*;
        use zbus::wire::serialized::Context;
        use zbus::wire::{Endian, ObjectPath, to_bytes};

        fn valid(text: &str) -> bool {
            text.chars().all(is_portable)
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(400))]
            #[test]
            fn any_session_text_renders_to_valid_dbus(s in arb_hostile_session()) {
                let p = SessionProps::from_session(&s);
                for (name, value) in p.entries() {
                    if let Variant::Str(text) = &value {
                        prop_assert!(valid(text.as_str()), "{name}: {:?}", text.as_str());
                    }
                }
                let dict = p.to_dict();
                prop_assert_eq!(dict.len(), 20);
                prop_assert!(to_bytes(Context::new(Endian::Little, 0), &dict).is_ok());
                if let Some(a) = &s.attention {
                    let summary = attention_summary(a);
                    prop_assert!(valid(&summary), "{:?}", summary);
                }
                let path = crate::path::session_path(&s.key);
                prop_assert!(ObjectPath::try_from(path.as_str()).is_ok(), "{}", path);
            }
        }
    }
}
