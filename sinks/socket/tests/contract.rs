//! The plugin contract every sink keeps.
#![allow(clippy::unwrap_used)]

use sink_socket as _;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socket_sink_keeps_the_plugin_contract() {
    let dir = tempfile::tempdir().unwrap();
    let mut table = atm_core::toml::Table::new();
    table.insert(
        "socket".into(),
        atm_core::toml::Value::String(dir.path().join("contract.sock").display().to_string()),
    );
    atm_core::testing::check_sink_contract(
        "socket",
        atm_core::toml::Value::Table(table),
        dir.path(),
    )
    .await;
    assert!(!dir.path().join("contract.sock").exists());
}
