//! The routes: the board page and its assets, the live stream, the JSON API and its answers,
//! `/metrics` and `/healthz`.
//!
//! | route | auth | what |
//! |---|---|---|
//! | `GET /healthz` | none | `ok` |
//! | `GET /` | none | the board when the browser is logged in, else the login form |
//! | `POST /login` | the token, in a form | sets the login cookie (see [`crate::auth`]) |
//! | `POST /logout` | token | clears it |
//! | `GET /board.js` | token | the board's script |
//! | `GET /board.css` | none | the style of the board and of the login form (static) |
//! | `GET /events` | token | the live stream ([`crate::sse`]) |
//! | `GET /api/sessions` | token | what `atmctl list --json` prints |
//! | `GET /api/pending` | token | what `atmctl pending --json` prints |
//! | `POST /api/requests/{id}/decision` | token | answer a request: the body is a protocol `decide` decision |
//! | `POST /api/sessions/{id}/focus` | token | move tmux to the session's pane, as `atmctl focus` does |
//! | `GET /metrics` | token | Prometheus text |

use std::sync::Arc;
use std::time::Duration;

use atm_core::SessionView;
use atm_core::registry::RegistryHandle;
use atm_core::request::{DecideError, Decision, RequestId, Surface};
use atm_core::tmux::Tmux;
use axum::extract::rejection::{FormRejection, JsonRejection};
use axum::extract::{DefaultBodyLimit, Extension, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use chrono::Utc;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::auth;
use crate::board::Board;
use crate::listen::PeerUid;
use crate::metrics::Metrics;
use crate::page;
use crate::token::Token;

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) token: Token,
    pub(crate) board: Arc<Board>,
    pub(crate) registry: RegistryHandle,
    pub(crate) cancel: CancellationToken,
    /// Places for live streams (`max_clients`).
    pub(crate) streams: Arc<Semaphore>,
    pub(crate) keepalive: Duration,
    pub(crate) tmux: Arc<Tmux>,
    pub(crate) metrics: Metrics,
}

pub(crate) fn router(state: AppState, max_body: usize) -> Router {
    let protected = Router::new()
        .route("/board.js", get(page::script))
        .route("/events", get(events))
        .route("/api/sessions", get(sessions))
        .route("/api/pending", get(pending))
        .route("/api/requests/{id}/decision", post(decide))
        .route("/api/sessions/{id}/focus", post(focus))
        .route("/metrics", get(metrics))
        .route("/logout", post(logout))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/", get(index))
        // The login form's style: static, public like the form.
        .route("/board.css", get(page::style))
        .route("/login", post(login))
        .merge(protected)
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

/// A JSON error body: `{"error": message}`.
fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, Json(json!({"error": message.to_string()}))).into_response()
}

/// A body that is not the JSON asked for: 400 (413 when it is too large), saying what was wrong
/// with the JSON, never echoing it.
fn bad_body(e: &JsonRejection) -> Response {
    let status = e.status();
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        return status.into_response();
    }
    let status = if status.is_client_error() {
        StatusCode::BAD_REQUEST
    } else {
        status
    };
    error(status, e.body_text())
}

async fn index(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if auth::shown(&headers, &state.token).is_some() {
        page::board()
    } else {
        page::login()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    token: String,
}

/// The login form's POST (`application/x-www-form-urlencoded`, `token=...`): the cookie and
/// back to the board, or 401 and the form again.
async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Form<Login>, FormRejection>,
) -> Response {
    if !auth::post_allowed(&headers, None) {
        return StatusCode::FORBIDDEN.into_response();
    }
    let Ok(Form(login)) = body else {
        return page::login_with(StatusCode::BAD_REQUEST);
    };
    if !state.token.matches(login.token.trim().as_bytes()) {
        return page::login_with(StatusCode::UNAUTHORIZED);
    }
    let secure = headers
        .get("x-forwarded-proto")
        .is_some_and(|v| v.as_bytes() == b"https");
    (
        StatusCode::SEE_OTHER,
        [
            (header::SET_COOKIE, auth::login_cookie(&state.token, secure)),
            (header::LOCATION, "/".to_owned()),
        ],
    )
        .into_response()
}

async fn logout() -> Response {
    (
        StatusCode::NO_CONTENT,
        [(header::SET_COOKIE, auth::logout_cookie())],
    )
        .into_response()
}

async fn events(State(state): State<AppState>) -> Response {
    let Ok(permit) = state.streams.clone().try_acquire_owned() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many live clients; raise `max_clients` in the http sink's table",
        );
    };
    crate::sse::response(&state.board, state.cancel.clone(), state.keepalive, permit)
}

/// Every session's view, as `list_sessions` sends them.
fn views(board: &Board) -> Vec<Value> {
    let now = Utc::now();
    board
        .sessions()
        .1
        .iter()
        .filter_map(|s| serde_json::to_value(SessionView::from_session(s, now)).ok())
        .collect()
}

async fn sessions(State(state): State<AppState>) -> Response {
    Json(views(&state.board)).into_response()
}

async fn pending(State(state): State<AppState>) -> Response {
    let pending: Vec<Value> = views(&state.board)
        .iter()
        .filter_map(atm_core::view::pending_of)
        .collect();
    Json(pending).into_response()
}

async fn decide(
    State(state): State<AppState>,
    Path(id): Path<String>,
    peer: Option<Extension<PeerUid>>,
    body: Result<Json<Decision>, JsonRejection>,
) -> Response {
    let Some(id) = RequestId::parse(&id) else {
        return error(
            StatusCode::NOT_FOUND,
            "a request id is 32 hex digits (`/api/pending` lists them)",
        );
    };
    let decision = match body {
        Ok(Json(d)) => d,
        Err(e) => return bad_body(&e),
    };
    let uid = peer.and_then(|Extension(PeerUid(uid))| uid);
    let surface = Surface::new("http", uid);
    match state.registry.decide(id, decision, surface).await {
        Ok(Ok(d)) => Json(json!({
            "request_id": d.request_id,
            "session_id": d.session_id.as_str(),
        }))
        .into_response(),
        Ok(Err(e)) => {
            let status = match &e {
                DecideError::NotFound(_) => StatusCode::NOT_FOUND,
                DecideError::Invalid(_) => StatusCode::BAD_REQUEST,
                DecideError::AlreadyAnswered(_)
                | DecideError::Ended { .. }
                | DecideError::NotAnswerable(_) => StatusCode::CONFLICT,
                // Another machine's request whose host cannot be reached now.
                DecideError::Unreachable { .. } => StatusCode::BAD_GATEWAY,
            };
            error(status, e)
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

async fn focus(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let Some(session) = state.board.session(&id) else {
        return error(StatusCode::NOT_FOUND, format!("no session {id}"));
    };
    let Some(pane) = session.tmux_pane.clone() else {
        return error(
            StatusCode::CONFLICT,
            "this session has no tmux pane (it was not started inside tmux)",
        );
    };
    match state.tmux.focus_pane(&pane).await {
        Ok(f) => {
            Json(json!({"pane": pane, "location": f.location, "client": f.client})).into_response()
        }
        Err(e) => error(StatusCode::CONFLICT, e),
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    match state.metrics.encode() {
        Ok(text) => ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "/metrics failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}
