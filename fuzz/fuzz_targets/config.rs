//! The config loader: any text either validates or gives an error that names a location or the
//! whole file; never a panic (plugin factories included).
#![no_main]

use atm_daemon::config::{ConfigSource, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    atm_daemon::link_plugins();
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse(text, ConfigSource::Embedded);
    }
});
