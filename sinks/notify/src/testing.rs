//! A test notification server (feature `testing`): `org.freedesktop.Notifications` on a private
//! `dbus-daemon`, recording every `Notify` and `CloseNotification`, able to fail, hang and click
//! a button (`ActionInvoked`). The sink's own tests and the end-to-end suite (atmd with the
//! notify sink) use the same one.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers fail by panicking

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use atm_core::testing::{PrivateBus, wait_for, wait_until};
use zbus::object_server::SignalEmitter;
use zbus::{OwnedVariant, fdo};

pub const PATH: &str = "/org/freedesktop/Notifications";
pub const NAME: &str = "org.freedesktop.Notifications";

/// One `Notify` call as the server saw it.
#[derive(Debug, Clone)]
pub struct Notified {
    pub id: u32,
    pub replaces_id: u32,
    pub app_name: String,
    pub summary: String,
    pub body: String,
    pub actions: Vec<String>,
    pub hints: HashMap<String, OwnedVariant>,
    pub at: Instant,
}

impl Notified {
    pub fn hint_u8(&self, key: &str) -> Option<u8> {
        let v = self.hints.get(key)?;
        u8::try_from(v.try_clone().ok()?).ok()
    }
    pub fn hint_str(&self, key: &str) -> Option<String> {
        let v = self.hints.get(key)?;
        String::try_from(v.try_clone().ok()?).ok()
    }
    pub fn hint_bool(&self, key: &str) -> Option<bool> {
        let v = self.hints.get(key)?;
        bool::try_from(v.try_clone().ok()?).ok()
    }
}

#[derive(Default)]
pub struct Record {
    pub notified: Vec<Notified>,
    pub closed: Vec<u32>,
}

/// A notification server that records what it is asked and can be told to fail.
pub struct TestServer {
    pub record: Arc<Mutex<Record>>,
    pub next_id: AtomicU32,
    pub capabilities: Vec<String>,
    pub failing: Arc<AtomicBool>,
    pub hanging: Arc<AtomicBool>,
    /// `Notify` calls received, answered or not.
    pub calls: Arc<AtomicU32>,
}

#[zbus::interface(name = "org.freedesktop.Notifications")]
impl TestServer {
    #[allow(clippy::too_many_arguments)]
    async fn notify(
        &self,
        app_name: String,
        replaces_id: u32,
        _app_icon: String,
        summary: String,
        body: String,
        actions: Vec<String>,
        hints: HashMap<String, OwnedVariant>,
        _expire_timeout: i32,
    ) -> fdo::Result<u32> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.hanging.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
        if self.failing.load(Ordering::SeqCst) {
            return Err(fdo::Error::Failed("the test server is failing".into()));
        }
        let id = if replaces_id != 0 {
            replaces_id
        } else {
            self.next_id.fetch_add(1, Ordering::SeqCst)
        };
        self.record.lock().unwrap().notified.push(Notified {
            id,
            replaces_id,
            app_name,
            summary,
            body,
            actions,
            hints,
            at: Instant::now(),
        });
        Ok(id)
    }

    async fn close_notification(
        &self,
        id: u32,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> fdo::Result<()> {
        self.record.lock().unwrap().closed.push(id);
        // 3: closed by a call to CloseNotification.
        let _ = Self::notification_closed(&emitter, id, 3).await;
        Ok(())
    }

    fn get_capabilities(&self) -> Vec<String> {
        self.capabilities.clone()
    }

    #[zbus(out_args("name", "vendor", "version", "spec_version"))]
    fn get_server_information(&self) -> (String, String, String, String) {
        ("atm-test".into(), "atm".into(), "1".into(), "1.2".into())
    }

    #[zbus(signal)]
    async fn action_invoked(
        emitter: &SignalEmitter<'_>,
        id: u32,
        action_key: &str,
    ) -> zbus::Result<()>;

    #[zbus(signal)]
    async fn notification_closed(
        emitter: &SignalEmitter<'_>,
        id: u32,
        reason: u32,
    ) -> zbus::Result<()>;
}

/// The server, connected to a bus and owning the name.
pub struct Server {
    pub conn: zbus::Connection,
    pub record: Arc<Mutex<Record>>,
    pub failing: Arc<AtomicBool>,
    pub hanging: Arc<AtomicBool>,
    pub calls: Arc<AtomicU32>,
}

impl Server {
    pub async fn start(bus: &PrivateBus) -> Self {
        Self::start_with(bus, &["actions", "body", "body-markup"], false).await
    }

    pub async fn start_with(bus: &PrivateBus, caps: &[&str], failing: bool) -> Self {
        let record = Arc::new(Mutex::new(Record::default()));
        let failing = Arc::new(AtomicBool::new(failing));
        let hanging = Arc::new(AtomicBool::new(false));
        let calls = Arc::new(AtomicU32::new(0));
        let server = TestServer {
            hanging: hanging.clone(),
            calls: calls.clone(),
            record: record.clone(),
            next_id: AtomicU32::new(1),
            capabilities: caps.iter().map(|c| (*c).to_owned()).collect(),
            failing: failing.clone(),
        };
        let conn = zbus::connection::Builder::address(bus.address.as_str())
            .serve_at(PATH, server)
            .name(NAME)
            .build()
            .await
            .expect("test notification server starts");
        Self {
            conn,
            record,
            failing,
            hanging,
            calls,
        }
    }

    /// Waits until the sink has called `Notify` at least `n` times, answered or not.
    pub async fn wait_calls(&self, n: u32) {
        wait_until(&format!("{n} Notify call(s)"), || async {
            self.calls.load(Ordering::SeqCst) >= n
        })
        .await;
    }

    pub fn notified(&self) -> Vec<Notified> {
        self.record.lock().unwrap().notified.clone()
    }

    pub fn closed(&self) -> Vec<u32> {
        self.record.lock().unwrap().closed.clone()
    }

    pub async fn invoke(&self, id: u32, action: &str) {
        self.conn
            .emit_signal(None::<&str>, PATH, NAME, "ActionInvoked", &(id, action))
            .await
            .expect("ActionInvoked emitted");
    }

    /// Waits until `n` notifications arrived whose summary contains `needle`.
    pub async fn wait_notified(&self, needle: &str, n: usize) -> Vec<Notified> {
        let what = format!("{n} notification(s) about {needle:?}");
        wait_for(&what, || async {
            let got: Vec<Notified> = self
                .notified()
                .into_iter()
                .filter(|c| c.summary.contains(needle))
                .collect();
            (got.len() >= n).then_some(got)
        })
        .await
    }

    pub async fn wait_closed(&self, id: u32) {
        wait_until(&format!("notification {id} closed"), || async {
            self.closed().contains(&id)
        })
        .await;
    }
}
