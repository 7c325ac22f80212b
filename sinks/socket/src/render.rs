//! What the socket sink writes: `session_updated` lines, rendered once per change and shared by
//! every subscriber, and `session_list` replies, rendered piece by piece as they are written.
//!
//! Why it is shaped so: with 1,000 subscribers, per-subscriber JSON work would cost a thousand
//! serializations per change; here a change costs one `SessionView` render and one allocation,
//! and subscribers receive a reference-counted [`Bytes`]. Lists are rendered from the registry's
//! own sessions (no cached views: several view fields are relative to "now", `5s ago`, so cached
//! ones go stale) one 64 KiB piece at a time ([`ListJob::into_pieces`]), so a reply of 10,000
//! sessions never exists in memory as a whole.

use std::cell::RefCell;
use std::sync::Arc;

use atm_core::protocol::ServerMessage;
use atm_core::request::RequestRecord;
use atm_core::{Session, SessionView};
use bytes::Bytes;
use chrono::{DateTime, Utc};

const UPDATED_PREFIX: &[u8] = b"{\"type\":\"session_updated\",\"session\":";
const UPDATED_SUFFIX: &[u8] = b"}\n";
const LIST_PREFIX: &[u8] = b"{\"type\":\"session_list\",\"sessions\":[";
const LIST_SUFFIX: &[u8] = b"]}\n";

thread_local! {
    /// Update lines are serialized into this reused buffer and sent as an exact-size copy.
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(4096));
}

/// Appends the view of `session` as of `wall`.
fn write_view(out: &mut Vec<u8>, session: &Session, wall: DateTime<Utc>) {
    // A SessionView holds strings, numbers and maps with string keys: it always serializes.
    let _ = serde_json::to_writer(out, &SessionView::from_session(session, wall));
}

/// The `session_updated` line for `session`.
pub(crate) fn updated_line(session: &Session) -> Bytes {
    SCRATCH.with_borrow_mut(|buf| {
        buf.clear();
        buf.extend_from_slice(UPDATED_PREFIX);
        write_view(buf, session, Utc::now());
        buf.extend_from_slice(UPDATED_SUFFIX);
        Bytes::copy_from_slice(buf)
    })
}

/// The `session_removed` line for the session with id `id`.
pub(crate) fn removed_line(id: &str) -> Bytes {
    Bytes::from(
        ServerMessage::SessionRemoved {
            session_id: id.to_owned(),
        }
        .to_line(),
    )
}

/// `request_resolved` lines (protocol 1.1) for the requests a change to session `session_id`
/// ended, each with the key it is queued under so that it is not merged with the session's
/// own updates.
pub(crate) fn resolved_lines(session_id: &str, ended: &[RequestRecord]) -> Vec<(String, Bytes)> {
    ended
        .iter()
        .map(|r| {
            let msg = ServerMessage::RequestResolved {
                request_id: r.id.clone(),
                session_id: session_id.to_owned(),
                fate: r.fate.clone(),
            };
            (format!("request:{}", r.id), Bytes::from(msg.to_line()))
        })
        .collect()
}

/// A point-in-time list for one reply: the sessions as they were when it was taken.
pub(crate) struct ListJob {
    entries: Vec<Arc<Session>>,
}

impl ListJob {
    /// A list of `entries`, in the order the reply shows them.
    pub(crate) fn new(entries: Vec<Arc<Session>>) -> Self {
        Self { entries }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    #[cfg(test)]
    pub(crate) fn sessions(&self) -> &[Arc<Session>] {
        &self.entries
    }
}

/// Sessions per piece of a `session_list` line: about 60 KiB, below glibc's mmap threshold, and
/// well under a millisecond to render.
const PIECE_SESSIONS: usize = 64;

/// One piece of a `session_list` line: a run of the list's sessions, with the line's opening
/// (first piece) and closing (last piece).
pub(crate) struct ListPiece {
    entries: Arc<[Arc<Session>]>,
    range: std::ops::Range<usize>,
    wall: DateTime<Utc>,
}

impl ListPiece {
    pub(crate) fn render(&self) -> Vec<u8> {
        let first = self.range.start == 0;
        let mut out = Vec::with_capacity(self.range.len() * 1024 + LIST_PREFIX.len());
        if first {
            out.extend_from_slice(LIST_PREFIX);
        }
        for (i, s) in self.entries[self.range.clone()].iter().enumerate() {
            if i > 0 || !first {
                out.push(b',');
            }
            write_view(&mut out, s, self.wall);
        }
        if self.range.end == self.entries.len() {
            out.extend_from_slice(LIST_SUFFIX);
        }
        out
    }
}

impl ListJob {
    /// The reply in pieces, to be rendered as the connection's writer sends them: memory per
    /// list in flight is a few pieces, whatever the number of sessions, and the client starts
    /// receiving at once. (Rendering whole replies first held about 9 MiB per 10,000-session
    /// list, which the allocator then kept.) The sessions are the versions taken with the
    /// list, so the reply is the table at that instant; time-relative fields are as of now.
    pub(crate) fn into_pieces(self) -> Vec<ListPiece> {
        let wall = Utc::now();
        let entries: Arc<[Arc<Session>]> = self.entries.into();
        let n = entries.len();
        let count = n.div_ceil(PIECE_SESSIONS).max(1);
        (0..count)
            .map(|i| ListPiece {
                entries: entries.clone(),
                range: (i * PIECE_SESSIONS).min(n)..((i + 1) * PIECE_SESSIONS).min(n),
                wall,
            })
            .collect()
    }
}

#[cfg(test)]
fn render_list_now(entries: &[Arc<Session>]) -> Vec<u8> {
    ListJob {
        entries: entries.to_vec(),
    }
    .into_pieces()
    .iter()
    .flat_map(ListPiece::render)
    .collect()
}

/// A Claude session known by its id only, for this crate's unit tests.
#[cfg(test)]
pub(crate) fn test_session(id: &str) -> Session {
    atm_core::testing::claude_session(id, Utc::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(id: &str) -> Arc<Session> {
        let mut s = test_session(id);
        s.cwd = Some("/home/ü/проект".into());
        Arc::new(s)
    }

    #[test]
    fn spliced_lines_equal_the_protocol_messages() {
        let s = session("8e11bfb5-日本");
        let line = updated_line(&s);
        let parsed: ServerMessage = serde_json::from_slice(&line).unwrap();
        let ServerMessage::SessionUpdated { session: view } = parsed else {
            panic!("not an update: {parsed:?}");
        };
        assert_eq!(view.id, "8e11bfb5-日本");
        assert_eq!(view.working_directory.as_deref(), s.cwd.as_deref());
        assert_eq!(*line.last().unwrap(), b'\n');
        let list = render_list_now(&[s.clone(), session("b")]);
        let parsed: ServerMessage = serde_json::from_slice(&list).unwrap();
        let ServerMessage::SessionList { sessions } = parsed else {
            panic!("not a list");
        };
        assert_eq!(sessions.len(), 2);
        assert_eq!(sessions[1].id, "b");
        let empty: ServerMessage = serde_json::from_slice(&render_list_now(&[])).unwrap();
        assert_eq!(
            empty,
            ServerMessage::SessionList {
                sessions: Vec::new()
            }
        );
    }

    #[test]
    fn a_list_cut_into_pieces_is_one_valid_line_in_order() {
        let sessions: Vec<_> = (0..PIECE_SESSIONS * 2 + 3)
            .map(|i| session(&format!("s{i}")))
            .collect();
        let pieces = ListJob {
            entries: sessions.clone(),
        }
        .into_pieces();
        assert_eq!(pieces.len(), 3);
        let line: Vec<u8> = pieces.iter().flat_map(ListPiece::render).collect();
        assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1);
        let parsed: ServerMessage = serde_json::from_slice(&line).unwrap();
        let ServerMessage::SessionList { sessions: views } = parsed else {
            panic!("not a list");
        };
        let ids: Vec<_> = views.iter().map(|v| v.id.to_string()).collect();
        let expected: Vec<_> = sessions.iter().map(|s| s.id.to_string()).collect();
        assert_eq!(ids, expected);
    }

    #[test]
    fn lists_show_time_relative_fields_as_of_now() {
        let mut s = (*session("old")).clone();
        s.last_activity = Utc::now() - chrono::Duration::seconds(125);
        let list = render_list_now(&[Arc::new(s)]);
        let v: serde_json::Value = serde_json::from_slice(&list).unwrap();
        assert_eq!(v["sessions"][0]["last_activity_display"], "2m ago");
    }
}
