//! Where an opencode server's event stream is: a configured `url` (or a found server's port),
//! checked once when it is read, and the request targets under the server's root.

use std::str::FromStr;

use atm_core::plugin::ConfigError;
use hyper::Uri;
use hyper::header::HeaderValue;
use hyper::http::uri::InvalidUri;

/// Where the event stream is, checked when the config is read.
#[derive(Debug, Clone)]
pub(crate) struct EventStreamUrl {
    /// As configured, for logs.
    pub display: String,
    pub host: String,
    pub port: u16,
    /// The request target (`/event`).
    pub target: Uri,
    /// The server's root path (what precedes `/event`), without a trailing slash.
    root: String,
    pub host_header: HeaderValue,
}

impl EventStreamUrl {
    /// A fresh HTTP/1.1 connection to the server (connected within `limit`), and the task
    /// driving it, which must be kept while a response is read.
    pub async fn connect<B>(
        &self,
        limit: std::time::Duration,
    ) -> Result<
        (
            hyper::client::conn::http1::SendRequest<B>,
            tokio_util::task::AbortOnDropHandle<Result<(), hyper::Error>>,
        ),
        crate::server::StreamError,
    >
    where
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        use crate::server::StreamError;
        let tcp = atm_core::tokio::time::timeout(
            limit,
            atm_core::tokio::net::TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        .map_err(|_| StreamError::Timeout(limit))?
        .map_err(StreamError::Connect)?;
        let _ = tcp.set_nodelay(true);
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await?;
        Ok((
            sender,
            tokio_util::task::AbortOnDropHandle::new(atm_core::tokio::spawn(conn)),
        ))
    }

    /// The request target of `path` (`/session/status`) under the server's root.
    pub fn at(&self, path: &str) -> Result<Uri, InvalidUri> {
        Uri::from_str(&format!("{}{path}", self.root))
    }

    pub fn parse(url: &str) -> Result<Self, ConfigError> {
        let bad = |why: &str| ConfigError::for_key("url", format!("invalid `url` {url:?}: {why}"));
        let uri = Uri::from_str(url.trim()).map_err(|e| bad(&e.to_string()))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(bad(
                    "https is not supported; opencode serves plain http (e.g. http://127.0.0.1:4096)",
                ));
            }
            _ => {
                return Err(bad(
                    "write it as http://HOST:PORT, e.g. http://127.0.0.1:4096",
                ));
            }
        }
        let Some(authority) = uri.authority() else {
            return Err(bad("no host; write it as http://HOST:PORT"));
        };
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = match authority.port_u16() {
            Some(p) if p > 0 => p,
            None if authority.as_str() == authority.host() => 80,
            _ => return Err(bad("the port must be a number from 1 to 65535")),
        };
        let given = uri.path().trim_end_matches('/');
        // The server's root: what precedes `/event` or `/global/event` when the URL names the
        // stream itself.
        let (path, root) = match given.strip_suffix("/event") {
            Some(prefix) => (
                given.to_owned(),
                prefix.strip_suffix("/global").unwrap_or(prefix),
            ),
            None => (format!("{given}/event"), given),
        };
        let target = Uri::from_str(&path).map_err(|e| bad(&e.to_string()))?;
        Uri::from_str(&format!("{root}/session/status")).map_err(|e| bad(&e.to_string()))?;
        let root = root.to_owned();
        let host_header =
            HeaderValue::from_str(authority.as_str()).map_err(|e| bad(&e.to_string()))?;
        Ok(Self {
            display: format!("http://{}{path}", authority.as_str()),
            host,
            port,
            target,
            root,
            host_header,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn urls() {
        let u = EventStreamUrl::parse("http://127.0.0.1:4096").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("127.0.0.1", 4096));
        assert_eq!(u.target.path(), "/event");
        assert_eq!(u.host_header, "127.0.0.1:4096");
        let u = EventStreamUrl::parse("http://localhost:4096/base/").unwrap();
        assert_eq!(u.target.path(), "/base/event");
        let u = EventStreamUrl::parse("http://[::1]:9/global/event").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 9));
        assert_eq!(u.target.path(), "/global/event");
        assert_eq!(EventStreamUrl::parse("http://h").unwrap().port, 80);
        for bad in [
            "https://h:1",
            "127.0.0.1:4096",
            "ftp://h",
            "http://",
            "",
            "http://h:99999",
        ] {
            let e = EventStreamUrl::parse(bad).unwrap_err();
            assert_eq!(e.key.as_deref(), Some("url"), "{bad}");
        }
    }
}
