//! Two plugins registering one name: the daemon refuses to start and names both. A test binary
//! of its own, because the duplicate is linked into everything in it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

use atm_core::plugin::{AdapterContext, PluginError};
use atm_core::{InputAdapter, async_trait};
use atm_daemon::config::ConfigSource;

struct Idle;

#[async_trait]
impl InputAdapter for Idle {
    async fn run(self: Box<Self>, ctx: AdapterContext) -> Result<(), PluginError> {
        ctx.cancel.cancelled().await;
        Ok(())
    }
}

mod first {
    atm_core::register_plugin! {
        adapter "twin",
        description: "test: one of two plugins named twin",
        sample_config: "[[adapter]]\ntype = \"twin\"\n",
        factory: |_| Ok(Box::new(super::Idle)),
    }
}

mod second {
    atm_core::register_plugin! {
        adapter "twin",
        description: "test: the other plugin named twin",
        sample_config: "[[adapter]]\ntype = \"twin\"\n",
        factory: |_| Ok(Box::new(super::Idle)),
    }
}

#[tokio::test]
async fn the_daemon_refuses_to_start_naming_both() {
    let err = atm_core::plugin::check_unique().unwrap_err();
    let message = err.to_string();
    assert!(message.contains("adapter `twin`"), "{message}");
    assert!(message.contains("duplicate_plugins::first"), "{message}");
    assert!(message.contains("duplicate_plugins::second"), "{message}");

    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[daemon]\nruntime_dir = {:?}\nstate_dir = {:?}\n",
        dir.path().join("run").display().to_string(),
        dir.path().join("state").display().to_string(),
    );
    let config =
        atm_daemon::config::parse(&text, ConfigSource::File(dir.path().join("x.toml"))).unwrap();
    let err = atm_daemon::daemon::run(config).await.unwrap_err();
    assert_eq!(err.to_string(), message);
    assert!(
        !dir.path().join("run").exists(),
        "nothing may start before the check"
    );
}
