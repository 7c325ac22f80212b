//! The settings.json merger: for any settings object, install is idempotent and uninstall
//! gives back what was there (or fails cleanly on a shape it refuses to edit).
#![no_main]

use atm_cli::setup::claude::{HookCommand, install, uninstall};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(settings) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let Ok(hook) = HookCommand::new("/usr/local/bin/atm-hook") else {
        return;
    };
    if let Ok(once) = install(&settings, &hook) {
        let twice = install(&once, &hook).expect("installing over our own install works");
        assert_eq!(once, twice, "install is not idempotent");
        let _ = uninstall(&once, &hook);
    }
});
