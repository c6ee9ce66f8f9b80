//! The operator console and the status API, served by `qyzmet console` and `qyzmet run` on the
//! process's HTTP address next to `/healthz`, `/readyz` and `/metrics`.
//!
//! - [`auth`]: operator accounts, API tokens, sessions and roles.
//! - [`pages`]: the server-rendered pages — Overview, Requests (search and a request's
//!   timeline), Deadlines (P-46), Waiting for staff, Dead letters, Audit. No JavaScript: every
//!   page reads and every action works with forms; the style sheet is served from the binary.
//! - [`api`]: JSON status for provider and centre systems (P-41, P-42).
//! - [`dead_letters`]: moves the dead-letter queue into PostgreSQL, where operators replay or
//!   discard what is there.
//!
//! Every operator action, and every search by IIN/BIN, is recorded in `operator_actions`
//! (append-only) and shown on the Audit page.

pub mod api;
pub mod auth;
pub mod dead_letters;
pub mod pages;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use tokio::sync::Mutex;

use crate::broker::Broker;
use crate::pipeline::Ctx;

pub use auth::{Operators, Role};

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "qyzmet_session";

/// How long a session lasts (a working shift).
pub const SESSION_HOURS: i64 = 10;

/// What the console's handlers share.
pub struct Console {
    /// The process's context: store, regulations, verifier.
    pub ctx: Arc<Ctx>,
    /// For queue depths and replays.
    pub broker: Arc<Broker>,
    /// Who may sign in.
    pub operators: Operators,
    /// BINs whose certificates may sign result documents for every provider (to verify
    /// documents on a request's page).
    pub shared_signer_bins: Vec<String>,
    /// Whether the session cookie is `Secure` (behind a TLS proxy).
    pub secure_cookie: bool,
    /// Group replays running or finished in this process, by id: the page that started one
    /// shows its progress.
    pub jobs: Mutex<HashMap<u64, dead_letters::ReplayJob>>,
}

/// The console's and the status API's routes.
pub fn router(console: Arc<Console>) -> Router {
    pages::routes().merge(api::routes()).with_state(console)
}

/// The caller of a console page or API endpoint, signed in or holding a token.
#[derive(Debug, Clone)]
pub struct Principal {
    /// Account or token name.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// The CSRF token its forms carry (sessions only: a token cannot post forms).
    pub csrf: Option<String>,
}

impl Principal {
    /// Refuses a viewer where an operator is needed.
    pub fn require_operator(&self) -> Result<(), ConsoleError> {
        if self.role == Role::Operator { Ok(()) } else { Err(ConsoleError::Forbidden("operators only".into())) }
    }

    /// Checks a form's CSRF token against the session's.
    pub fn check_csrf(&self, sent: &str) -> Result<(), ConsoleError> {
        match &self.csrf {
            Some(expected) if auth::same_secret(expected, sent) => Ok(()),
            _ => Err(ConsoleError::Forbidden("the form is stale or not from this console; reload the page".into())),
        }
    }

    /// Records an action of this caller in the operators' audit trail.
    pub async fn record(
        &self,
        c: &Console,
        action: &str,
        target: Option<&str>,
        why: Option<&str>,
        detail: Option<&serde_json::Value>,
    ) -> Result<(), ConsoleError> {
        c.ctx.store.record_action(&self.name, self.role.as_str(), action, target, why, detail).await?;
        Ok(())
    }
}

/// A cookie's value from the request's `Cookie` headers.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

impl FromRequestParts<Arc<Console>> for Principal {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, c: &Arc<Console>) -> Result<Principal, Response> {
        let bearer = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|t| t.trim().to_owned());
        if let Some(token) = bearer {
            return match c.operators.check_token(&token) {
                Some((name, role)) => Ok(Principal { name, role, csrf: None }),
                None => Err(unauthorized(parts)),
            };
        }
        let Some(token) = cookie(&parts.headers, SESSION_COOKIE) else { return Err(unauthorized(parts)) };
        match c.ctx.store.session(&auth::digest(&token)).await {
            Ok(Some(s)) => match Role::parse(&s.role) {
                Some(role) => Ok(Principal { name: s.operator, role, csrf: Some(s.csrf) }),
                None => Err(unauthorized(parts)),
            },
            Ok(None) => Err(unauthorized(parts)),
            Err(e) => Err(ConsoleError::from(e).into_response()),
        }
    }
}

/// No (valid) credentials: the API answers 401; a page sends the person to sign in and back.
fn unauthorized(parts: &Parts) -> Response {
    let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/console");
    if path.starts_with("/api/") {
        let body = serde_json::json!({ "error": "unauthorized", "detail": "send Authorization: Bearer <token>" });
        (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], axum::Json(body)).into_response()
    } else {
        let next = if path.starts_with("/console") && !path.starts_with("/console/login") { path } else { "/console" };
        Redirect::to(&format!("/console/login?next={}", percent_encode(next))).into_response()
    }
}

/// Percent-encodes a query value.
pub fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// Why a console request failed, and how it is answered.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// The database failed.
    #[error("database: {0}")]
    Store(#[from] sqlx::Error),
    /// Nothing with that key.
    #[error("not found: {0}")]
    NotFound(String),
    /// Signed in, but not allowed.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The request is wrong.
    #[error("{0}")]
    BadRequest(String),
    /// The broker refused or is away.
    #[error("broker: {0}")]
    Broker(String),
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let status = match &self {
            ConsoleError::Store(_) | ConsoleError::Broker(_) => StatusCode::SERVICE_UNAVAILABLE,
            ConsoleError::NotFound(_) => StatusCode::NOT_FOUND,
            ConsoleError::Forbidden(_) => StatusCode::FORBIDDEN,
            ConsoleError::BadRequest(_) => StatusCode::BAD_REQUEST,
        };
        if status.is_server_error() {
            tracing::warn!(error = %self, "console request failed");
        }
        (status, pages::error_page(status, &self.to_string())).into_response()
    }
}
