//! The board's page and assets, embedded in the binary: plain HTML, CSS and JavaScript written
//! by hand, so building atm needs no JavaScript toolchain and the page loads nothing from the
//! internet (its Content-Security-Policy forbids it: everything comes from this origin).
//!
//! The login form is a plain HTML form (no script), POSTed to `/login`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// The pages share one `<head>` start (`assets/head.html`: charset, viewport, icon, style
/// sheet); each page file goes on with its title and body.
macro_rules! page {
    ($file:literal) => {
        concat!(
            include_str!("../assets/head.html"),
            include_str!(concat!("../assets/", $file))
        )
    };
}

const BOARD_HTML: &str = page!("board.html");
const LOGIN_HTML: &str = page!("login.html");
const BOARD_JS: &str = include_str!("../assets/board.js");
const BOARD_CSS: &str = include_str!("../assets/board.css");

/// Nothing from elsewhere, no inline script, no framing by other sites, forms post here only.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

fn asset(status: StatusCode, content_type: &'static str, body: &'static str) -> Response {
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Not `no-referrer`: under it browsers send `Origin: null` on the page's own POSTs, and
    // the origin check would refuse them. Other sites still learn nothing.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    r
}

pub(crate) fn board() -> Response {
    asset(StatusCode::OK, "text/html; charset=utf-8", BOARD_HTML)
}

/// The login form (`status`: 200 when asked for, 401 after a wrong token).
pub(crate) fn login_with(status: StatusCode) -> Response {
    asset(status, "text/html; charset=utf-8", LOGIN_HTML)
}

pub(crate) fn login() -> Response {
    login_with(StatusCode::OK)
}

pub(crate) async fn script() -> Response {
    asset(StatusCode::OK, "text/javascript; charset=utf-8", BOARD_JS)
}

pub(crate) async fn style() -> Response {
    asset(StatusCode::OK, "text/css; charset=utf-8", BOARD_CSS)
}

/// Bytes a first load transfers (the page, its script and its style), uncompressed.
pub fn first_load_bytes() -> usize {
    BOARD_HTML.len() + BOARD_JS.len() + BOARD_CSS.len()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_first_load_is_under_100_kb_and_names_no_other_origin() {
        assert!(super::first_load_bytes() < 100_000);
        for text in [
            super::BOARD_HTML,
            super::BOARD_JS,
            super::BOARD_CSS,
            super::LOGIN_HTML,
        ] {
            assert!(!text.contains("http://") && !text.contains("https://"));
        }
    }
}
