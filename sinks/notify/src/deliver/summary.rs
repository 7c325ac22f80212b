//! The summary notification past the global popup rate ([`crate::burst`] decides what it says
//! and when): shown, replaced in place, and closed when nobody is gathered in it any more.

use std::collections::HashMap;

use tokio::time::Instant;
use tracing::debug;
use zbus::Variant;

use super::Deliverer;
use crate::burst::SummaryUpdate;
use crate::server::{self, Notification, NotificationsProxy, connection_lost};

impl Deliverer {
    /// Shows, replaces or closes the summary notification when it is due.
    pub(super) async fn update_summary(
        &mut self,
        proxy: &NotificationsProxy<'static>,
        now: Instant,
    ) -> Result<(), String> {
        let markup = self.caps.is_some_and(|c| c.markup);
        match self.burst.update(now, markup) {
            None => Ok(()),
            Some(SummaryUpdate::Close) => {
                if let Some(id) = self.burst.summary_id {
                    match proxy.close_notification(id).await {
                        Err(e) if connection_lost(&e) => return Err(e.to_string()),
                        Err(e) => debug!(error = %e, id, "closing the summary failed"),
                        Ok(()) => {}
                    }
                }
                self.burst.updated(now, None);
                Ok(())
            }
            Some(SummaryUpdate::Show(text)) => {
                let mut hints: HashMap<&str, Variant<'_>> = HashMap::new();
                hints.insert("urgency", Variant::U8(1));
                hints.insert("category", Variant::from("x-atm.summary"));
                if let Some(entry) = &self.config.desktop_entry {
                    hints.insert("desktop-entry", Variant::from(entry.as_str()));
                }
                let notification = Notification {
                    app_name: &self.config.app_name,
                    replaces: self.burst.summary_id.unwrap_or(0),
                    summary: &text.summary,
                    body: &text.body,
                    actions: &[],
                    hints,
                };
                match server::notify(proxy, notification).await {
                    Ok((id, _)) => {
                        debug!(id, summary = %text.summary, "summary notification");
                        self.burst.updated(now, Some(id));
                        Ok(())
                    }
                    Err(e) if connection_lost(&e) => Err(e.to_string()),
                    Err(e) => {
                        debug!(error = %e, "the summary notification failed; retried later");
                        self.retry_at = Some(now + self.server_backoff.next());
                        Ok(())
                    }
                }
            }
        }
    }
}
