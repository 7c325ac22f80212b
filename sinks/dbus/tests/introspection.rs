//! The introspection XML checked into `introspection/` is what the running service exposes.
//!
//! Both sides are normalised the same way (comments dropped, whitespace collapsed, the members
//! of each interface sorted), so formatting is free but every method, argument, type, property,
//! access and annotation must match. To refresh the files after an intended change, run this
//! test with `ATM_WRITE_INTROSPECTION=1`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails by panicking

mod common;

use common::*;
use sink_dbus as _;

/// Cuts `<interface name="NAME"> ... </interface>` out of a node's XML.
fn interface_block(xml: &str, name: &str) -> String {
    let start_tag = format!("<interface name=\"{name}\">");
    let start = xml
        .find(&start_tag)
        .unwrap_or_else(|| panic!("{name} not in\n{xml}"));
    let end = xml[start..].find("</interface>").unwrap() + start + "</interface>".len();
    xml[start..end].to_owned()
}

/// Drops comments, collapses whitespace, and sorts the top-level members of one interface.
fn normalise(block: &str) -> Vec<String> {
    let mut text = String::new();
    let mut rest = block;
    while let Some(i) = rest.find("<!--") {
        text.push_str(&rest[..i]);
        let j = rest[i..].find("-->").unwrap() + i + 3;
        rest = &rest[j..];
    }
    text.push_str(rest);
    let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let collapsed = collapsed.replace("> <", "><").replace(" />", "/>");
    // Split into the members (method/property/signal elements) of the interface.
    let inner = collapsed
        .trim()
        .strip_prefix(&collapsed[..collapsed.find('>').unwrap() + 1])
        .unwrap()
        .strip_suffix("</interface>")
        .unwrap();
    let mut members = Vec::new();
    let mut rest = inner;
    while !rest.is_empty() {
        let tag_end = rest.find([' ', '>', '/']).unwrap();
        let tag = &rest[1..tag_end];
        let self_closing_end = rest.find("/>");
        let open_end = rest.find('>').unwrap();
        let end = if self_closing_end.is_some_and(|s| s + 1 == open_end) {
            open_end + 1
        } else {
            let close = format!("</{tag}>");
            rest.find(&close).unwrap() + close.len()
        };
        members.push(rest[..end].to_owned());
        rest = &rest[end..];
    }
    members.sort();
    members
}

fn checked_in(file: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("introspection")
        .join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn write_back(file: &str, block: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("introspection")
        .join(file);
    let xml = format!(
        "<!DOCTYPE node PUBLIC \"-//freedesktop//DTD D-BUS Object Introspection 1.0//EN\"\n \"http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd\">\n<node>\n  {}\n</node>\n",
        block.trim()
    );
    std::fs::write(path, xml).unwrap();
}

async fn introspect(conn: &zbus::Connection, path: &str) -> String {
    let proxy: zbus::fdo::IntrospectableProxy = service_proxy(conn, path).await;
    proxy.introspect().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_introspection_matches_the_checked_in_xml() {
    let t = OnPrivateBus::start().await;
    t.start_session(&source("intro", 1101), 1).await;

    let manager_xml = introspect(&t.conn, MANAGER).await;
    let session_xml = introspect(
        &t.conn,
        "/io/github/atm/Monitor1/sessions/claude__1101_2101",
    )
    .await;
    // The object manager is served at the manager's path, the root of the tree.
    interface_block(&manager_xml, "org.freedesktop.DBus.ObjectManager");
    assert!(
        manager_xml.contains("<node name=\"sessions\""),
        "{manager_xml}"
    );

    for (xml, iface, file) in [
        (
            &manager_xml,
            "io.github.atm.Monitor1",
            "io.github.atm.Monitor1.xml",
        ),
        (
            &session_xml,
            "io.github.atm.Monitor1.Session",
            "io.github.atm.Monitor1.Session.xml",
        ),
    ] {
        let live = interface_block(xml, iface);
        if std::env::var_os("ATM_WRITE_INTROSPECTION").is_some() {
            write_back(file, &live);
        }
        let stored = interface_block(&checked_in(file), iface);
        assert_eq!(
            normalise(&live),
            normalise(&stored),
            "introspection/{file} differs from the running service; if the change is intended, \
             rerun with ATM_WRITE_INTROSPECTION=1 (and bump the interface version if it breaks clients)"
        );
    }

    // busctl reads the same members.
    let out = t
        .busctl(&["introspect", SERVICE, MANAGER, "io.github.atm.Monitor1"])
        .await;
    for member in [
        ".GetSession",
        ".ListSessions",
        ".Rescan",
        ".AttentionCount",
        ".SessionCount",
        ".AttentionNeeded",
        ".StateChanged",
        ".ListRequests",
        ".Approve",
        ".ApproveRule",
        ".Deny",
        ".Answer",
        ".RequestAdded",
        ".RequestResolved",
    ] {
        assert!(out.contains(member), "{member} not in\n{out}");
    }

    t.stop().await;
}

#[test]
fn normalising_ignores_layout_and_order_but_not_content() {
    let a = r#"<interface name="x"><!-- doc --><method name="A"><arg type="s" direction="in"/></method>
        <property name="P" type="u" access="read"/></interface>"#;
    let b = r#"<interface name="x">
        <property name="P" type="u" access="read" />
        <method name="A">
          <arg type="s" direction="in"/>
        </method>
      </interface>"#;
    assert_eq!(normalise(a), normalise(b));
    let c = b.replace("type=\"u\"", "type=\"t\"");
    assert_ne!(normalise(a), normalise(&c));
}
