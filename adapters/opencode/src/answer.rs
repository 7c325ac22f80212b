//! Answering opencode's permission requests through atm: opencode's own HTTP API takes the
//! answer (`POST /permission/{id}/reply` with `reply`: `once`, `always` or `reject`, and a
//! `message`), racing its TUI's dialog the way a second client does; whichever answers first
//! wins, and a late answer is refused by opencode.
//!
//! When a `permission.asked` event opens a request, the adapter waits for it in a task of its
//! own ([`Answerers`]): the registry hands it the verdict when a person answers from a
//! notification, D-Bus or `atmctl`, or tells it the request was withdrawn (answered in the
//! TUI: opencode's `permission.replied` moved the session on). Tasks are bounded
//! ([`MAX_WAITING`]); past that, a new request stays shown but is not answerable through atm
//! (the registry is told nobody waits), so memory stays bounded whatever the server sends.

use std::time::Duration;

use atm_core::registry::RegistryHandle;
use atm_core::request::{RequestEnd, RequestId, Verdict};
use atm_core::serde_json::json;
use atm_core::tokio;
use atm_core::tokio_util::sync::CancellationToken;
use atm_core::tracing::{debug, info, warn};
use bytes::Bytes;
use http_body_util::Full;
use hyper::Request;
use hyper::header::{self, HeaderValue};
use tokio::sync::oneshot;
use tokio::task::JoinSet;

use crate::server::StreamError;
use crate::url::EventStreamUrl;

/// Requests waited on at once, per server. opencode asks one at a time per session; this is
/// room for many sessions.
pub(crate) const MAX_WAITING: usize = 256;

/// opencode's `reply` and `message` for a verdict.
pub(crate) fn reply_for(verdict: &Verdict) -> (&'static str, Option<&str>) {
    match verdict {
        Verdict::Allow {
            updated_permissions,
            ..
        } if !updated_permissions.is_empty() => ("always", None),
        Verdict::Allow { .. } => ("once", None),
        Verdict::Deny { message, .. } => ("reject", message.as_deref()),
    }
}

/// The tasks waiting for answers to one server's requests.
pub(crate) struct Answerers {
    tasks: JoinSet<()>,
}

impl Answerers {
    pub fn new() -> Self {
        Self {
            tasks: JoinSet::new(),
        }
    }

    /// Waits (in a task) for the end of request `id`, opencode's `per_...`; a verdict is
    /// posted to the server at `url`.
    pub fn wait(
        &mut self,
        url: &EventStreamUrl,
        connect_timeout: Duration,
        registry: &RegistryHandle,
        (id, end): (RequestId, oneshot::Receiver<RequestEnd>),
        opencode_id: String,
        cancel: &CancellationToken,
    ) {
        while self.tasks.try_join_next().is_some() {}
        if self.tasks.len() >= MAX_WAITING {
            debug!(request = %id, "too many opencode requests waited on; this one is shown only");
            registry.stop_waiting(&id);
            return;
        }
        let (url, registry, cancel) = (url.clone(), registry.clone(), cancel.clone());
        self.tasks.spawn(async move {
            let verdict = tokio::select! {
                end = end => match end {
                    Ok(RequestEnd::Decided(v)) => v,
                    Ok(RequestEnd::Withdrawn(_)) | Err(_) => return,
                },
                () = cancel.cancelled() => {
                    registry.stop_waiting(&id);
                    return;
                }
            };
            let (reply, message) = reply_for(&verdict);
            match post_reply(&url, connect_timeout, &opencode_id, reply, message).await {
                Ok(()) => info!(request = %id, opencode = %opencode_id, reply, "answer posted to opencode"),
                Err(e) => warn!(
                    request = %id, opencode = %opencode_id, error = %e,
                    "opencode did not take the answer given through atm (answered in its TUI \
                     meanwhile, or the server is gone); answer it there"
                ),
            }
        });
    }
}

/// `POST /permission/{id}/reply` on a fresh connection.
async fn post_reply(
    url: &EventStreamUrl,
    limit: Duration,
    id: &str,
    reply: &str,
    message: Option<&str>,
) -> Result<(), StreamError> {
    let target = url
        .at(&format!("/permission/{id}/reply"))
        .map_err(StreamError::from)?;
    let mut body = json!({"reply": reply});
    if let Some(m) = message {
        body["message"] = json!(m);
    }
    let (mut sender, _conn) = url.connect(limit).await?;
    let mut req = Request::new(Full::new(Bytes::from(body.to_string())));
    *req.method_mut() = hyper::Method::POST;
    *req.uri_mut() = target;
    let headers = req.headers_mut();
    headers.insert(header::HOST, url.host_header.clone());
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let resp = tokio::time::timeout(limit, sender.send_request(req))
        .await
        .map_err(|_| StreamError::Timeout(limit))??;
    if !resp.status().is_success() {
        return Err(StreamError::Status(resp.status().as_u16()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_become_opencodes_replies() {
        let once = Verdict::Allow {
            updated_permissions: Vec::new(),
            answers: Vec::new(),
        };
        assert_eq!(reply_for(&once), ("once", None));
        let always = Verdict::Allow {
            updated_permissions: vec![json!({"always": ["echo *"]})],
            answers: Vec::new(),
        };
        assert_eq!(reply_for(&always), ("always", None));
        let deny = Verdict::Deny {
            message: Some("no".into()),
            interrupt: false,
        };
        assert_eq!(reply_for(&deny), ("reject", Some("no")));
    }
}
