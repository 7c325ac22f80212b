//! Hostile text for the property tests of everything that renders agents' strings for a medium
//! (D-Bus properties and signals, notifications, the log, the wire).
//!
//! Agents hand atm ids, paths, prompts and commands that atm keeps as they came, so a renderer
//! must make any `String` valid where it goes. The strategy here draws strings built from what
//! breaks media: NUL and other C0/C1 controls, Unicode noncharacters (U+FFFE, U+FDD0, the last
//! two of every plane), bidi overrides and isolates, markup characters (`<`, `>`, `&`), combining
//! marks, multi-byte and astral characters, text that was not UTF-8 (converted lossily, as the
//! wire decoder would), and now and then something huge. One strategy serves every renderer, so
//! a new medium's tests get the same nasty cases the old ones did.

use proptest::prelude::*;

/// Characters that are valid in a Rust `String` and invalid, dangerous or confusing somewhere.
const NASTY: &[char] = &[
    '\u{0}',
    '\u{1}',
    '\u{7}',
    '\u{8}',
    '\t',
    '\n',
    '\r',
    '\u{b}',
    '\u{c}',
    '\u{1b}',
    '\u{7f}',
    '\u{80}',
    '\u{85}',
    '\u{9f}',
    '\u{FFFE}',
    '\u{FFFF}',
    '\u{FDD0}',
    '\u{FDEF}',
    '\u{1FFFE}',
    '\u{10FFFF}',
    '\u{202A}',
    '\u{202B}',
    '\u{202D}',
    '\u{202E}',
    '\u{2066}',
    '\u{2067}',
    '\u{2068}',
    '\u{2069}',
    '\u{200E}',
    '\u{200F}',
    '\u{200B}',
    '\u{FEFF}',
    '\u{2028}',
    '\u{2029}',
    '\u{FFFD}',
    '\u{301}',
    '<',
    '>',
    '&',
    '"',
    '\'',
    ';',
    '%',
    '/',
    '\\',
    ' ',
    'é',
    '語',
    '🦀',
    'a',
    'Z',
    '0',
    '_',
];

/// One piece of hostile text: a run of [`NASTY`] characters, any Unicode, or bytes that were
/// not UTF-8, converted the way a lossy decoder would.
fn piece() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::collection::vec(prop::sample::select(NASTY), 0..24)
            .prop_map(|cs| cs.into_iter().collect::<String>()),
        2 => ".{0,24}".prop_map(String::from),
        2 => prop::collection::vec(any::<u8>(), 0..32)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ]
}

/// Any hostile string: a few [`piece`]s, and one time in sixteen one of them repeated up to
/// 4,000 times (past every length cap atm has).
pub fn arb_hostile_text() -> impl Strategy<Value = String> {
    let normal = prop::collection::vec(piece(), 0..5).prop_map(|p| p.concat());
    let huge = (piece(), 500usize..4000).prop_map(|(p, n)| {
        let p = if p.is_empty() {
            "\u{0}<&".to_owned()
        } else {
            p
        };
        p.repeat(n)
    });
    prop_oneof![15 => normal, 1 => huge]
}

/// `Some` hostile text three times in four, else `None`: an optional field of a session.
pub fn arb_hostile_field() -> impl Strategy<Value = Option<String>> {
    prop_oneof![3 => arb_hostile_text().prop_map(Some), 1 => Just(None)]
}

/// A session whose every text field (harness, id, cwd, project, branch, pane, model, activity,
/// attention, first prompt, last error) is hostile, in any state, with or without a prompt
/// waiting: what a renderer must survive, as an agent could make the registry hold it.
pub fn arb_hostile_session() -> impl Strategy<Value = crate::Session> {
    use crate::AgentState;
    let texts = prop::collection::vec(arb_hostile_field(), 12);
    let state = prop::sample::select(&[
        AgentState::Starting,
        AgentState::Working,
        AgentState::NeedsPermission,
        AgentState::NeedsInput,
        AgentState::Idle,
    ]);
    (arb_hostile_text(), arb_hostile_text(), texts, state).prop_map(
        |(harness, id, mut t, state)| {
            session_with_texts(harness, id, state, move || t.pop().flatten())
        },
    )
}

/// A session of `harness` and `id` in `state` whose other text fields come from `next`, in a
/// fixed order (cwd, project, branch, pane, model name and id, activity, first prompt, last
/// error, attention tool, detail and reason; `None` leaves a field unset, and no reason, no
/// attention). What [`arb_hostile_session`] and the renderer fuzz targets build sessions with.
pub fn session_with_texts(
    harness: String,
    id: String,
    state: crate::AgentState,
    mut next: impl FnMut() -> Option<String>,
) -> crate::Session {
    use crate::{Attention, Harness, Session, SessionId, SessionKey};
    let key = SessionKey::Id {
        harness: Harness::new(harness),
        id: SessionId::new(id.clone()),
    };
    let at = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default();
    let mut s = Session::new(key, SessionId::new(id), None, "fuzz", at);
    s.state = state;
    s.cwd = next();
    s.git.project_root = next();
    s.git.branch = next();
    s.tmux_pane = next();
    s.model_name = next();
    s.model_id = next();
    s.activity = next();
    s.first_prompt = next();
    s.last_error = next();
    let (tool, detail) = (next(), next());
    s.attention = next().map(|reason| Attention {
        reason,
        tool,
        detail,
        ..Attention::default()
    });
    s
}
