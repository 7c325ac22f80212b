//! The Claude hook payload translator: any bytes that are JSON either translate or give a
//! stable error; never a panic, and previews stay within their character limits.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) {
        if let Ok(t) = adapter_claude_hooks::translate(&value) {
            let _ = format!("{t:?}");
        }
    }
});
