//! The status API for provider and centre systems (P-41: a request's status and service
//! deadline; P-42: an applicant's history). JSON, read-only, behind the console's access
//! control: `Authorization: Bearer <token>` (a token of the operators file) or a console session.
//!
//! - `GET /api/v1/requests/{request_id}`
//! - `GET /api/v1/requests?number=<request number>`
//! - `GET /api/v1/applicants/{iin_or_bin}/requests?reason=<why>` — recorded with its reason.
//!
//! Applicants appear masked; a refusal carries its reason in Russian and Kazakh; the result
//! document is included once the request is completed (P-41: the result appears only when the
//! answer has arrived).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::contract::to_local;
use crate::store::{RequestFilter, RequestSummary, SearchKey};

use super::{Console, ConsoleError, Principal};

/// The API's routes.
pub fn routes() -> Router<Arc<Console>> {
    Router::new()
        .route("/api/v1/requests", get(by_number))
        .route("/api/v1/requests/{id}", get(by_id))
        .route("/api/v1/applicants/{identifier}/requests", get(history))
}

/// A console error as JSON.
pub struct ApiError(ConsoleError);

impl From<ConsoleError> for ApiError {
    fn from(e: ConsoleError) -> ApiError {
        ApiError(e)
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> ApiError {
        ApiError(ConsoleError::Store(e))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = match &self.0 {
            ConsoleError::Store(_) | ConsoleError::Broker(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ConsoleError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ConsoleError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ConsoleError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
        };
        if status.is_server_error() {
            tracing::warn!(error = %self.0, "status API request failed");
        }
        (status, Json(json!({ "error": code, "detail": self.0.to_string() }))).into_response()
    }
}

type ApiResult = Result<Json<Value>, ApiError>;

/// One request's status as the API shows it.
pub async fn status_json(c: &Console, r: &RequestSummary) -> Result<Value, ConsoleError> {
    let store = &c.ctx.store;
    let outcome = store.outcome_of(r.request_id).await?;
    let history: Vec<Value> = store
        .history_of(r.request_id)
        .await?
        .into_iter()
        .map(|h| {
            json!({
                "step_index": h.step_index,
                "step": h.step,
                "event": h.event,
                "at": to_local(h.at),
                "deadline": h.deadline.map(to_local),
                "on_time": h.deadline.map(|d| h.at <= d),
            })
        })
        .collect();
    let reason = outcome.as_ref().and_then(|o| o.get("reason")).filter(|v| !v.is_null()).cloned();
    let document = outcome.as_ref().and_then(|o| o.get("document")).filter(|v| !v.is_null()).cloned();
    Ok(json!({
        "request_id": r.request_id,
        "request_number": r.request_number,
        "applicant": r.applicant_masked,
        "service": r.service,
        "region": r.region,
        "channel": r.channel,
        "status": r.state,
        "step": r.step,
        "step_deadline": r.step_deadline.map(to_local),
        "service_deadline": r.service_deadline.map(to_local),
        "received_at": to_local(r.received_at),
        "finished_at": r.finished_at.map(to_local),
        "reason": reason,
        "document": document,
        "history": history,
    }))
}

fn brief(r: &RequestSummary) -> Value {
    json!({
        "request_id": r.request_id,
        "request_number": r.request_number,
        "service": r.service,
        "channel": r.channel,
        "status": r.state,
        "code": r.code,
        "service_deadline": r.service_deadline.map(to_local),
        "received_at": to_local(r.received_at),
        "finished_at": r.finished_at.map(to_local),
    })
}

async fn by_id(State(c): State<Arc<Console>>, _who: Principal, Path(id): Path<String>) -> ApiResult {
    let id = Uuid::parse_str(&id).map_err(|_| ConsoleError::BadRequest(format!("{id:?} is not a request id")))?;
    let r = c.ctx.store.request_summary(id).await?.ok_or_else(|| ConsoleError::NotFound(format!("no request {id}")))?;
    Ok(Json(status_json(&c, &r).await?))
}

#[derive(Deserialize)]
struct NumberQuery {
    number: Option<String>,
}

async fn by_number(State(c): State<Arc<Console>>, _who: Principal, Query(q): Query<NumberQuery>) -> ApiResult {
    let number = q.number.filter(|n| !n.trim().is_empty()).ok_or_else(|| {
        ConsoleError::BadRequest("give ?number=<request number>, or use /api/v1/requests/{request_id}".into())
    })?;
    let key = SearchKey::Number(number.trim().to_owned());
    let r = c.ctx.store.search_requests(Some(&key), &RequestFilter::default(), 1).await?.pop();
    let r = r.ok_or_else(|| ConsoleError::NotFound(format!("no request numbered {number:?}")))?;
    Ok(Json(status_json(&c, &r).await?))
}

#[derive(Deserialize)]
struct HistoryQuery {
    reason: Option<String>,
}

async fn history(
    State(c): State<Arc<Console>>,
    who: Principal,
    Path(identifier): Path<String>,
    Query(q): Query<HistoryQuery>,
) -> ApiResult {
    if identifier.len() != 12 || !identifier.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ConsoleError::BadRequest("an applicant is named by a 12-digit IIN or BIN".into()).into());
    }
    let key = super::pages::audited_key(&c, &who, SearchKey::Applicant(identifier), q.reason.as_deref()).await?;
    let rows = c.ctx.store.search_requests(Some(&key), &RequestFilter::default(), 500).await?;
    let applicant = rows.first().map(|r| r.applicant_masked.clone());
    Ok(Json(json!({ "applicant": applicant, "requests": rows.iter().map(brief).collect::<Vec<_>>() })))
}
