//! Who may do what: the token check every endpoint but `/healthz` (and the login form) runs, and
//! the cross-site checks of state-changing requests.
//!
//! Two ways to show the token:
//! - `Authorization: Bearer <token>`, for scripts (`curl`) and `atmctl`;
//! - the cookie `atm_web`, which a browser gets by POSTing the token to `/login` (the login form
//!   `atmctl web` points to). It is `HttpOnly` (page scripts cannot read it, so an injected
//!   script cannot steal it), `SameSite=Strict` (other sites' pages cannot make the browser send
//!   it) and scoped to this origin. The token never appears in a URL, so it is in no history,
//!   proxy log or `Referer`.
//!
//! State-changing requests are POSTs. A POST that carries an `Origin` must come from this
//! origin (`Origin` equal to `http(s)://<Host>`); one authenticated by the cookie must also
//! carry `Origin` and the header `X-Atm-Csrf: 1`, which a cross-site page cannot add without a
//! CORS preflight this server never grants. A bearer token is not sent by browsers on their own,
//! so a POST with it needs no more.
//!
//! Failures say nothing more than their status (401, 403): no hint of what was wrong.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::api::AppState;
use crate::token::Token;

/// The cookie a browser shows the token in.
pub(crate) const COOKIE: &str = "atm_web";
/// The header cookie-authenticated POSTs must carry.
pub(crate) const CSRF_HEADER: &str = "x-atm-csrf";

/// How a request showed the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shown {
    Bearer,
    Cookie,
}

/// The token `headers` show, if it is the right one.
pub(crate) fn shown(headers: &HeaderMap, token: &Token) -> Option<Shown> {
    for value in headers.get_all(header::AUTHORIZATION) {
        let given = value.as_bytes();
        if let Some(t) = given.strip_prefix(b"Bearer ")
            && token.matches(t.trim_ascii())
        {
            return Some(Shown::Bearer);
        }
    }
    for value in headers.get_all(header::COOKIE) {
        for pair in value.as_bytes().split(|b| *b == b';') {
            let pair = pair.trim_ascii();
            if let Some(t) = pair
                .strip_prefix(COOKIE.as_bytes())
                .and_then(|r| r.strip_prefix(b"="))
                && token.matches(t)
            {
                return Some(Shown::Cookie);
            }
        }
    }
    None
}

/// Whether `Origin` (if any) is this server's own origin, as the client addressed it.
fn same_origin(headers: &HeaderMap) -> Option<bool> {
    let origin = headers.get(header::ORIGIN)?.as_bytes();
    let Some(host) = headers.get(header::HOST).map(HeaderValue::as_bytes) else {
        return Some(false);
    };
    let after_scheme = origin
        .strip_prefix(b"http://")
        .or_else(|| origin.strip_prefix(b"https://"));
    Some(after_scheme.is_some_and(|h| h.eq_ignore_ascii_case(host)))
}

/// The checks every POST passes, whatever it shows: an `Origin`, when present, is ours.
pub(crate) fn post_allowed(headers: &HeaderMap, shown: Option<Shown>) -> bool {
    match (same_origin(headers), shown) {
        (Some(false), _) => false,
        (same, Some(Shown::Cookie)) => {
            same == Some(true)
                && headers
                    .get(CSRF_HEADER)
                    .is_some_and(|v| v.as_bytes() == b"1")
        }
        _ => true,
    }
}

pub(crate) fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
    )
        .into_response()
}

/// Middleware: the token, then the POST checks.
pub(crate) async fn require_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let Some(how) = shown(request.headers(), &state.token) else {
        return unauthorized();
    };
    if request.method() == Method::POST && !post_allowed(request.headers(), Some(how)) {
        return StatusCode::FORBIDDEN.into_response();
    }
    next.run(request).await
}

/// The `Set-Cookie` value that logs a browser in (`secure`: the page was reached over HTTPS,
/// through a proxy).
pub(crate) fn login_cookie(token: &Token, secure: bool) -> String {
    format!(
        "{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/; Max-Age=31536000{}",
        token.as_str(),
        if secure { "; Secure" } else { "" }
    )
}

pub(crate) fn logout_cookie() -> String {
    format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn bearer_or_cookie_and_nothing_else() {
        let t = Token::parse("0123456789abcdef0123456789abcdef").unwrap();
        let good = t.as_str();
        let bearer = format!("Bearer {good}");
        assert_eq!(
            shown(&headers(&[("authorization", &bearer)]), &t),
            Some(Shown::Bearer)
        );
        let cookie = format!("other=1; {COOKIE}={good}; x=y");
        assert_eq!(
            shown(&headers(&[("cookie", &cookie)]), &t),
            Some(Shown::Cookie)
        );
        for bad in [
            "Bearer 0123",
            "Basic abc",
            "Bearer ",
            "0123456789abcdef0123456789abcdef",
        ] {
            assert_eq!(
                shown(&headers(&[("authorization", bad)]), &t),
                None,
                "{bad}"
            );
        }
        let wrong = format!("{COOKIE}x={good}");
        assert_eq!(shown(&headers(&[("cookie", &wrong)]), &t), None);
    }

    #[test]
    fn cross_site_posts_are_refused() {
        let host = ("host", "127.0.0.1:7378");
        let ours = ("origin", "http://127.0.0.1:7378");
        let theirs = ("origin", "http://evil.example");
        let csrf = ("x-atm-csrf", "1");
        assert!(post_allowed(&headers(&[host]), Some(Shown::Bearer)));
        assert!(post_allowed(&headers(&[host, ours]), Some(Shown::Bearer)));
        assert!(!post_allowed(
            &headers(&[host, theirs]),
            Some(Shown::Bearer)
        ));
        assert!(post_allowed(
            &headers(&[host, ours, csrf]),
            Some(Shown::Cookie)
        ));
        assert!(!post_allowed(&headers(&[host, ours]), Some(Shown::Cookie)));
        assert!(!post_allowed(&headers(&[host, csrf]), Some(Shown::Cookie)));
        assert!(!post_allowed(
            &headers(&[host, theirs, csrf]),
            Some(Shown::Cookie)
        ));
        assert!(!post_allowed(&headers(&[ours, csrf]), Some(Shown::Cookie)));
    }
}
