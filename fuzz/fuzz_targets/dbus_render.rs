//! The D-Bus renderer: any text in any session field becomes D-Bus strings with no NUL, no
//! noncharacter and no control character, a dictionary that serialises, and a valid object
//! path. (`cargo test -p sink-dbus` runs the same property on generated hostile text.)
#![no_main]

use atm_core::text::is_portable;
use libfuzzer_sys::fuzz_target;
use sink_dbus::props::{SessionProps, attention_summary};
use zbus::wire::{Endian, ObjectPath, Variant, serialized::Context, to_bytes};

mod session;

fuzz_target!(|data: &[u8]| {
    let s = session::from_bytes(data);
    let p = SessionProps::from_session(&s);
    for (name, value) in p.entries() {
        if let Variant::Str(text) = &value {
            assert!(text.as_str().chars().all(is_portable), "{name}: {text:?}");
        }
    }
    assert!(to_bytes(Context::new(Endian::Little, 0), &p.to_dict()).is_ok());
    if let Some(a) = &s.attention {
        assert!(attention_summary(a).chars().all(is_portable));
    }
    let path = sink_dbus::path::session_path(&s.key);
    assert!(ObjectPath::try_from(path.as_str()).is_ok(), "{path}");
});
