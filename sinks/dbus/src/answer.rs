//! Answering pending requests over D-Bus: who may (the caller's uid, asked of the bus), what a
//! request looks like in `ListRequests`, and how a refused decision reads as a D-Bus error.
//!
//! Same user only. The session bus normally admits no other user, but a bus can be configured
//! to (or the sink pointed at the system bus), so every request method asks the bus daemon for
//! the caller's uid (`org.freedesktop.DBus.GetConnectionUnixUser` on the message's sender)
//! and refuses any uid but atmd's own ([`check_same_user`]). The uid checked is the one the
//! audit trail records with the answer (surface `dbus`).
//!
//! Requests are listed from the [`Mirror`], like everything else the service shows; a decision
//! goes to the registry, which checks it against what the agent asked and hands it to the
//! waiting hook.

use std::collections::HashMap;

use atm_core::RegistryHandle;
use atm_core::registry::RegistryError;
use atm_core::request::{DecideError, Decision, RequestId, Surface};
use atm_core::text::portable;
use zbus::message::Header;
use zbus::{Connection, OwnedObjectPath, OwnedVariant, Variant};

use crate::service::{Mirror, MonitorError, Published};

/// The surface name D-Bus answers are recorded with.
pub const SURFACE: &str = "dbus";

/// One question as `ListRequests` shows it: header, question, the option labels, multi-select.
pub type QuestionView = (String, String, Vec<String>, bool);

/// Refuses a caller that is not atmd's own user.
pub fn check_same_user(caller: u32, own: u32) -> Result<(), MonitorError> {
    if caller == own {
        Ok(())
    } else {
        Err(MonitorError::AccessDenied(format!(
            "uid {caller} may not see or answer the requests of uid {own}'s agents"
        )))
    }
}

/// The uid of the process that sent the call in `header`, as the bus daemon knows it.
pub async fn caller_uid(conn: &Connection, header: &Header<'_>) -> Result<u32, MonitorError> {
    let denied = |why: String| MonitorError::AccessDenied(format!("cannot tell who calls: {why}"));
    let Some(sender) = header.sender() else {
        return Err(denied("the call names no sender".into()));
    };
    let reply = conn
        .call_method(
            Some("org.freedesktop.DBus"),
            "/org/freedesktop/DBus",
            Some("org.freedesktop.DBus"),
            "GetConnectionUnixUser",
            &(sender.as_str(),),
        )
        .await
        .map_err(|e| denied(e.to_string()))?;
    reply
        .body()
        .deserialize::<u32>()
        .map_err(|e| denied(e.to_string()))
}

/// The caller's uid, if it is atmd's own.
pub async fn same_user(
    conn: &Connection,
    header: &Header<'_>,
    own: u32,
) -> Result<u32, MonitorError> {
    let uid = caller_uid(conn, header).await?;
    check_same_user(uid, own)?;
    Ok(uid)
}

/// `ListRequests`: every open request in the mirror, by id.
pub fn list(mirror: &Mirror) -> HashMap<String, HashMap<String, OwnedVariant>> {
    mirror
        .iter()
        .filter_map(|(path, p)| {
            let r = p.attention.as_ref()?.request.as_ref()?;
            Some((r.id.to_string(), request_dict(path, p)))
        })
        .collect()
}

fn text(s: &str) -> String {
    portable(s).into_owned()
}

/// One request's dictionary (see the README for each key). `p` must hold a request.
fn request_dict(path: &str, p: &Published) -> HashMap<String, OwnedVariant> {
    let mut d = HashMap::new();
    let Some(a) = p.attention.as_ref() else {
        return d;
    };
    let Some(r) = a.request.as_ref() else {
        return d;
    };
    let opt = |v: Option<&String>| v.map(|t| text(t)).unwrap_or_default();
    let questions: Vec<QuestionView> = a
        .questions
        .iter()
        .map(|q| {
            (
                opt(q.header.as_ref()),
                text(&q.question),
                q.options.iter().map(|o| text(&o.label)).collect(),
                q.multi_select,
            )
        })
        .collect();
    let rules: Vec<String> = a.suggestions.iter().map(|s| text(&s.label)).collect();
    let entries: [(&str, Variant<'_>); 10] = [
        ("SessionId", Variant::from(p.props.id.as_str())),
        ("Harness", Variant::from(p.props.harness.as_str())),
        ("Reason", Variant::from(text(&a.reason))),
        ("Tool", Variant::from(opt(a.tool.as_ref()))),
        ("Detail", Variant::from(opt(a.detail.as_ref()))),
        ("Answerable", Variant::from(r.answerable)),
        ("AskedAt", Variant::from(r.asked_at.timestamp())),
        ("Questions", Variant::from(questions)),
        ("Rules", Variant::from(rules)),
        ("Id", Variant::from(r.id.as_str())),
    ];
    for (k, v) in entries {
        if let Ok(v) = OwnedVariant::try_from(v) {
            d.insert(k.to_owned(), v);
        }
    }
    if let Ok(o) = OwnedObjectPath::try_from(path)
        && let Ok(v) = OwnedVariant::try_from(Variant::from(o))
    {
        d.insert("Session".to_owned(), v);
    }
    d
}

/// Decides request `id` for a caller of uid `uid`; the session id on success.
pub async fn decide(
    registry: &RegistryHandle,
    id: &str,
    decision: Decision,
    uid: u32,
) -> Result<String, MonitorError> {
    let Some(request) = RequestId::parse(id) else {
        return Err(MonitorError::Invalid(format!(
            "{id:?} is not a request id (32 hex digits; ListRequests lists the open ones)"
        )));
    };
    match registry
        .decide(request, decision, Surface::new(SURFACE, Some(uid)))
        .await
    {
        Ok(Ok(decided)) => Ok(decided.session_id.as_str().to_owned()),
        Ok(Err(e)) => Err(refused(e)),
        Err(e) => Err(unavailable(&e)),
    }
}

/// A refused decision as a D-Bus error.
pub fn refused(e: DecideError) -> MonitorError {
    match e {
        DecideError::NotFound(id) => MonitorError::NotFound(format!(
            "no pending request {id}: it was never asked, or it has ended (ListRequests lists \
             the open ones)"
        )),
        e @ DecideError::AlreadyAnswered(_) => MonitorError::AlreadyAnswered(e.to_string()),
        e @ DecideError::Ended { .. } => MonitorError::Ended(e.to_string()),
        e @ DecideError::NotAnswerable(_) => MonitorError::NotAnswerable(e.to_string()),
        DecideError::Invalid(m) => MonitorError::Invalid(m),
        e @ DecideError::Unreachable { .. } => MonitorError::Unavailable(e.to_string()),
    }
}

fn unavailable(e: &RegistryError) -> MonitorError {
    MonitorError::Unavailable(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use zbus::DBusError;

    #[test]
    fn only_atmds_own_user_is_let_through() {
        assert!(check_same_user(1000, 1000).is_ok());
        let e = check_same_user(1001, 1000).unwrap_err();
        assert_eq!(
            e.name().as_str(),
            "io.github.atm.Monitor1.Error.AccessDenied"
        );
        assert!(e.description().unwrap().contains("uid 1001"), "{e:?}");
        assert!(check_same_user(0, 1000).is_err(), "not even root");
    }

    #[test]
    fn each_refusal_has_its_own_error_name() {
        let id = "0".repeat(32);
        for (e, name) in [
            (DecideError::NotFound(id.clone()), "NotFound"),
            (DecideError::AlreadyAnswered(id.clone()), "AlreadyAnswered"),
            (
                DecideError::Ended {
                    id: id.clone(),
                    reason: "answered in the terminal".into(),
                },
                "Ended",
            ),
            (DecideError::NotAnswerable(id.clone()), "NotAnswerable"),
            (DecideError::Invalid("no rule".into()), "Invalid"),
        ] {
            let e = refused(e);
            assert_eq!(
                e.name().as_str(),
                format!("io.github.atm.Monitor1.Error.{name}")
            );
            assert!(!e.description().unwrap_or_default().is_empty());
        }
    }

    /// The request renderer fed hostile text (like the session properties' fuzz test): every
    /// string of a `ListRequests` entry is valid D-Bus text and the reply serialises.
    mod fuzz {
        use super::*;
        use atm_core::chrono::Utc;
        use atm_core::model::PermissionSuggestion;
        use atm_core::request::{PendingRequest, Question, QuestionOption};
        use atm_core::testing::{arb_hostile_session, arb_hostile_text};
        use atm_core::text::is_portable;
        use proptest::prelude::*;
        use zbus::wire::serialized::Context;
        use zbus::wire::{Endian, to_bytes};

        use crate::service::Mirror;

        fn strings(v: &Variant<'_>, out: &mut Vec<String>) {
            match v {
                Variant::Str(s) => out.push(s.to_string()),
                Variant::Array(a) => a.inner().iter().for_each(|v| strings(v, out)),
                Variant::Structure(st) => st.fields().iter().for_each(|v| strings(v, out)),
                Variant::Variant(v) => strings(v, out),
                _ => {}
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(200))]
            #[test]
            fn any_request_text_renders_to_valid_dbus(
                s in arb_hostile_session(),
                t in prop::collection::vec(arb_hostile_text(), 5),
            ) {
                let mut s = s;
                let mut a = s.attention.clone().unwrap_or_else(|| {
                    atm_core::testing::permission_attention("Bash", None)
                });
                a.request = Some(PendingRequest {
                    id: RequestId::parse(&"a".repeat(32)).unwrap(),
                    asked_at: Utc::now(),
                    answerable: true,
                });
                a.questions = vec![Question {
                    question: t[0].clone(),
                    header: Some(t[1].clone()),
                    options: vec![QuestionOption { label: t[2].clone(), description: None }],
                    multi_select: true,
                }];
                a.suggestions = vec![PermissionSuggestion {
                    label: t[3].clone(),
                    rule: atm_core::serde_json::json!({"x": t[4]}),
                }];
                s.attention = Some(a);
                let mut mirror = Mirror::default();
                mirror.insert(Published::new(&s));
                let listed = list(&mirror);
                prop_assert_eq!(listed.len(), 1);
                let dict = listed.values().next().unwrap();
                prop_assert_eq!(dict.len(), 11);
                let mut texts = Vec::new();
                for v in dict.values() {
                    strings(v, &mut texts);
                }
                for text in &texts {
                    prop_assert!(text.chars().all(is_portable), "{:?}", text);
                }
                prop_assert!(to_bytes(Context::new(Endian::Little, 0), &listed).is_ok());
            }
        }
    }
}
