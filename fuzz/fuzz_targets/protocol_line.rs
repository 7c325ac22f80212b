//! Protocol-v1 line decoding: any bytes either decode or give a stable error code; a decoded
//! message re-encodes to a line that decodes to the same message.
#![no_main]

use atm_core::protocol::{client_line, decode_line};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = decode_line(data) {
        let mut fields = msg.body.clone();
        fields.remove("type");
        fields.remove("protocol_version");
        let line = client_line(&msg.kind, fields);
        let again = decode_line(line.strip_suffix(b"\n").unwrap_or(&line));
        assert!(again.is_ok(), "re-encoded line does not decode");
        assert_eq!(again.map(|m| m.kind).ok(), Some(msg.kind));
    }
});
