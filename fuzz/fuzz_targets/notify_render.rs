//! The notification renderer: any text in any session field gives a summary of one portable
//! line within its cap and a body of portable lines within theirs, escaped when the server
//! renders markup. (`cargo test -p sink-notify` runs the same property on generated text.)
#![no_main]

use std::sync::Arc;
use std::time::Duration;

use atm_core::text::is_portable;
use libfuzzer_sys::fuzz_target;
use sink_notify::content::{LINE_MAX, SUMMARY_MAX, render};
use sink_notify::plan::{Kind, Show};

mod session;

fuzz_target!(|data: &[u8]| {
    let kind = match data.last().map(|b| b % 4) {
        Some(0) => Kind::Permission,
        Some(1) => Kind::Input,
        Some(2) => Kind::Idle,
        _ => Kind::Error,
    };
    let markup = data.len() % 2 == 0;
    let show = Show {
        kind,
        session: Arc::new(session::from_bytes(data)),
        turn: Some(Duration::from_secs(data.len() as u64)),
    };
    let t = render(&show, None, markup);
    assert!(t.summary.chars().count() <= SUMMARY_MAX);
    assert!(t.summary.chars().all(is_portable));
    for line in t.body.split('\n') {
        assert!(line.chars().all(is_portable), "{line:?}");
        if markup {
            assert!(!line.contains(['<', '>']), "{line:?}");
        }
        let shown = line.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&");
        assert!(shown.chars().count() <= LINE_MAX, "{line:?}");
    }
});
