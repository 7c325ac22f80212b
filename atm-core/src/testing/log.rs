//! Log lines a test captured, for checks such as "one warning per outage".
//!
//! A test installs a subscriber whose writer is a [`LogCapture`] (`tracing_subscriber::fmt()
//! .with_writer(move || capture.clone())`) and counts what the code under test logged.

use std::io::Write;
use std::sync::{Arc, Mutex};

/// Formatted log output, shared between the subscriber that writes it and the test that reads
/// it.
#[derive(Debug, Clone, Default)]
pub struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogCapture {
    /// Everything logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// How often `needle` occurs in what was logged.
    pub fn count(&self, needle: &str) -> usize {
        self.text().matches(needle).count()
    }

    /// How many logged lines contain `needle`.
    pub fn lines_with(&self, needle: &str) -> usize {
        self.text().lines().filter(|l| l.contains(needle)).count()
    }
}
