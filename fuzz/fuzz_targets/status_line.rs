//! The status-line parser: never a panic; percentages stay within 0-100 and finite.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(data)
        && let Ok(line) = adapter_claude_statusline::parse_status_line(&value)
        && let Some(p) = line.usage.context_used_percentage
    {
        assert!(p.is_finite() && (0.0..=100.0).contains(&p), "percentage {p}");
    }
});
