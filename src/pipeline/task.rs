//! The step loop, the same for every pool that runs tasks; a pool's own work is its [`Step`].
//!
//! For a task "run step N of request R": read the request; ignore the task if the request is no
//! longer queued at step N (a duplicate or stale message); refuse if the step deadline already
//! passed; otherwise run the pool's step under a timeout that ends at the step deadline,
//! catching panics. The result is classified once:
//! - a business answer (pass, refuse, wait, complete) is applied in one statement (a pass in
//!   one with other deliveries' passes: [`super::batch`]);
//! - a transient failure (a dependency down, a panic) schedules the next attempt in PostgreSQL
//!   with exponential back-off and jitter, unless it would fall after the deadline, in which
//!   case the request is refused `deadline_exceeded`;
//! - a permanent failure (the stored request no longer fits its route, the database refuses
//!   the step's data, the provider has no signing key) refuses the request `invalid_request`
//!   at once, naming the field;
//! - a task that cannot be read is dead-lettered.
//!
//! The step runs without holding a row lock; every statement that applies its answer is guarded
//! by the position the step saw (state, step, attempts) and changes nothing if the request moved
//! meanwhile, so duplicate deliveries never apply twice.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use backon::BackoffBuilder;
use chrono::Utc;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::broker::pool_name;
use crate::contract::{Request, now_local};
use crate::regulations::{PoolName, Route};
use crate::store::RequestRow;

use super::runtime::{self, Disposition, Handler, Incoming, panic_text};
use super::transition::{self, Head, Pending};
use super::{Ctx, DocumentDraft, Failure, Step, StepInput, StepOutcome, Task};

/// Runs the steps of one pool.
pub struct TaskHandler {
    /// Which pool: its name labels logs, metrics and the audit trail.
    pub pool: PoolName,
    /// What the pool does with a request.
    pub step: Arc<dyn Step>,
}

impl Handler for TaskHandler {
    fn handle<'a>(&'a self, ctx: &'a Ctx, msg: &'a Incoming) -> BoxFuture<'a, Disposition> {
        Box::pin(async move {
            let task: Task = match serde_json::from_slice(&msg.data) {
                Ok(t) => t,
                Err(e) => {
                    return Disposition::DeadLetter { reason: "bad_task".into(), detail: e.to_string() };
                }
            };
            runtime::settle(run(ctx, self, task).await, task.request_id, "task")
        })
    }
}

/// Whether a row is still waiting for this task.
fn is_current(row: &RequestRow, task: &Task) -> bool {
    row.state == "queued" && row.step_index == task.step_index
}

/// Back-off before attempt `n` (1-based) of a step.
pub fn retry_delay(attempt: u32) -> Duration {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(250))
        .with_max_delay(Duration::from_secs(60))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
        .nth(attempt.saturating_sub(1) as usize)
        .unwrap_or(Duration::from_secs(60))
}

/// Parses the stored request and finds its route. A failure is permanent: the row will read
/// the same next time (the regulations changed under it, or it was written by a bug).
pub fn load<'r>(ctx: &'r Ctx, row: &RequestRow) -> Result<(Request, Route<'r>), Failure> {
    let request = Request::deserialize(&row.body)
        .map_err(|e| Failure::permanent("request", format!("stored request unreadable: {e}")))?;
    let route = ctx
        .regs
        .route(request.service, request.region, request.channel)
        .map_err(|why| Failure::permanent("service", format!("no route any more: {why}")))?;
    Ok((request, route))
}

async fn run(ctx: &Ctx, handler: &TaskHandler, task: Task) -> Result<(), Failure> {
    let Some(row) = ctx.reads.get(task.request_id).await? else {
        tracing::warn!(request_id = %task.request_id, "task for an unknown request; ignored");
        return Ok(());
    };
    if !is_current(&row, &task) {
        tracing::debug!(request_id = %task.request_id, state = %row.state, "stale or duplicate task; ignored");
        return Ok(());
    }
    let step_name = pool_name(handler.pool);
    let now = Utc::now();
    let deadline = row.step_deadline.unwrap_or(now);
    let (request, route) = match load(ctx, &row) {
        Ok(x) => x,
        Err(e) => return refuse_invalid(ctx, &row, step_name, &e).await,
    };
    if now >= deadline {
        return refuse_overdue(
            ctx,
            &row,
            Some(&route),
            "the step deadline passed while the request waited in the queue",
        )
        .await;
    }
    let Some(step) = route.step(row.step_index as usize) else {
        let e = Failure::permanent("service", format!("its route has no step {}", row.step_index));
        return refuse_invalid(ctx, &row, step_name, &e).await;
    };
    let input = StepInput { request: &request, route, step, facts: &row.facts, row: &row, now };
    let budget = (deadline - now).to_std().unwrap_or(Duration::ZERO);
    let started = std::time::Instant::now();
    // One span per step run: the request (its applicant masked), the step and the attempt.
    let span = tracing::info_span!(
        "step",
        request_id = %row.request_id,
        applicant = %row.applicant_masked,
        step = step_name,
        attempt = row.attempts + 1,
    );
    let step_run = AssertUnwindSafe(handler.step.run(ctx, &input)).catch_unwind();
    let outcome = tokio::time::timeout(budget, tracing::Instrument::instrument(step_run, span)).await;
    tracing::debug!(request_id = %row.request_id, pool = step_name, elapsed_ms = started.elapsed().as_millis() as u64, "step ran");
    crate::metrics::step_duration(step_name, started.elapsed());
    match outcome {
        Ok(Ok(Ok(result))) => match apply(ctx, &row, &route, &request.provider, step_name, result).await {
            Err(e) if !e.is_transient() => refuse_invalid(ctx, &row, step_name, &e).await,
            other => other,
        },
        Ok(Ok(Err(e))) if e.is_transient() => schedule_retry(ctx, &row, &input.route, step_name, &e.to_string()).await,
        Ok(Ok(Err(e))) => refuse_invalid(ctx, &row, step_name, &e).await,
        Ok(Err(panic)) => {
            let what = panic_text(&panic);
            tracing::error!(request_id = %row.request_id, pool = step_name, panic = %what, "step panicked; handled as a failure");
            schedule_retry(ctx, &row, &input.route, step_name, &format!("step panicked: {what}")).await
        }
        Err(_) => {
            refuse_overdue(
                ctx,
                &row,
                Some(&input.route),
                "the step did not finish before its deadline and was cancelled",
            )
            .await
        }
    }
}

/// Applies a step's answer, if the request is still where the step saw it.
///
/// Every answer is one statement guarded by the request's position (state, step, attempts),
/// so nothing is locked while the step runs or beforehand, and a duplicate delivery changes
/// nothing the second time. A step that passes, and a request's end, are committed with other
/// deliveries' in one statement ([`super::batch`]), and so is a wait.
///
/// Waiting is the same for every step that waits: the row becomes `waiting`, and the event it
/// waits for (a PaymentNotice, a staff Decision) moves it on. The event's handler locks the row
/// after recording the event, so an event recorded while the step was looking either finds the
/// request still queued and moves it on itself (this answer then finds it moved), or finds it
/// waiting.
async fn apply(
    ctx: &Ctx,
    row: &RequestRow,
    route: &Route<'_>,
    provider: &str,
    step_name: &str,
    outcome: StepOutcome,
) -> Result<(), Failure> {
    // Every answer is committed in a batch with other deliveries'. A document is numbered and
    // signed before, so that nothing waits on it while it signs.
    let pending = match outcome {
        StepOutcome::Pass { facts, detail } => {
            ctx.advances.commit(transition::next_step(row, route, facts, detail)?).await?
        }
        StepOutcome::Refuse { refusal, note, detail } => {
            let reason = transition::regulation_reason(route, &refusal, note.as_ref());
            let detail = detail.map(|d| json!({ "detail": d }));
            let head = Head::from(row).on(route);
            ctx.endings.commit(transition::refusal(&head, row.position(), step_name, reason, detail)).await?
        }
        StepOutcome::Wait => ctx.parks.commit(transition::waiting(row, step_name)).await?,
        StepOutcome::Complete { document } => {
            let doc = finished_document(ctx, provider, document).await?;
            ctx.endings.commit(transition::completion(row, route, doc)).await?
        }
    };
    // No connection is held while the broker's confirms are awaited.
    if let Some(p) = pending {
        ctx.outbox.flush(p).await;
    }
    Ok(())
}

/// Numbers and signs a result document with the key of `provider` (the validated request's;
/// the default key where the provider has none). The number comes from the process's block (no
/// completion holds the counter's row while it signs); a completion that then finds the request
/// moved leaves a gap.
async fn finished_document(ctx: &Ctx, provider: &str, document: DocumentDraft) -> Result<Map<String, Value>, Failure> {
    let year = now_local().format("%Y");
    let scope = format!("{}-{year}", document.number_prefix);
    let n = ctx.store.next_document_number(&scope).await?;
    let mut doc = Map::new();
    doc.insert("kind".into(), json!(document.kind));
    doc.insert("number".into(), json!(format!("{scope}-{n:06}")));
    doc.insert("issued_at".into(), json!(now_local()));
    doc.insert("content".into(), document.content);
    let signature = ctx.signer.sign(provider, &doc).map_err(|e| Failure::permanent("provider", e))?;
    doc.insert("signature".into(), signature);
    Ok(doc)
}

async fn schedule_retry(
    ctx: &Ctx,
    row: &RequestRow,
    route: &Route<'_>,
    step_name: &str,
    error: &str,
) -> Result<(), Failure> {
    let attempt = u32::try_from(row.attempts + 1).unwrap_or(u32::MAX);
    let delay = retry_delay(attempt);
    let next = Utc::now() + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::seconds(60));
    if row.step_deadline.is_some_and(|d| next >= d) {
        let why = format!("transient failures until the deadline: {error}");
        return refuse_overdue(ctx, row, Some(route), &why).await;
    }
    let mut conn = ctx.store.pool().acquire().await?;
    if transition::retry(&mut conn, row, step_name, next, error).await? {
        tracing::warn!(request_id = %row.request_id, pool = step_name, attempt, ?delay, %error, "step failed; retry scheduled");
        crate::metrics::retry(step_name);
    }
    Ok(())
}

/// Refuses `invalid_request`, naming the field, a request whose step failed permanently —
/// if it is still at this task's step.
async fn refuse_invalid(ctx: &Ctx, row: &RequestRow, step_name: &str, failure: &Failure) -> Result<(), Failure> {
    tracing::error!(request_id = %row.request_id, pool = step_name, error = %failure, "step failed permanently; refusing the request");
    let problem = failure.to_string();
    let reason = transition::common_reason(&ctx.regs, "invalid_request", &problem);
    let detail = json!({ "field": failure.field(), "problem": problem, "permanent": true });
    refuse_if_current(ctx, row, None, step_name, reason, detail).await.map(|_| ())
}

/// Refuses for its deadline a request still at this task's step.
async fn refuse_overdue(ctx: &Ctx, row: &RequestRow, route: Option<&Route<'_>>, why: &str) -> Result<(), Failure> {
    let (step_name, reason, detail) = deadline_refusal(ctx, row, route, why);
    if refuse_if_current(ctx, row, route, &step_name, reason, detail).await? {
        crate::metrics::deadline_refusal(&step_name);
    }
    Ok(())
}

/// Refuses a request if it is still where `row` saw it, then publishes the outcome. Whether
/// it was refused here. `route` when the caller has it (else it is found from the row).
async fn refuse_if_current(
    ctx: &Ctx,
    row: &RequestRow,
    route: Option<&Route<'_>>,
    step_name: &str,
    reason: crate::contract::Reason,
    detail: serde_json::Value,
) -> Result<bool, Failure> {
    let head = match route {
        Some(route) => Head::from(row).on(route),
        None => head_of(ctx, row),
    };
    let pending =
        ctx.endings.commit(transition::refusal(&head, row.position(), step_name, reason, Some(detail))).await?;
    let refused = pending.is_some();
    if let Some(p) = pending {
        ctx.outbox.flush(p).await;
    }
    Ok(refused)
}

/// The refusal for a request whose step deadline passed: the step's `deadline_refusal` where the
/// regulation defines one (no payment by the deadline → L2), otherwise `deadline_exceeded`
/// naming the step and its deadline. (step, reason, audit detail).
fn deadline_refusal(
    ctx: &Ctx,
    row: &RequestRow,
    route: Option<&Route<'_>>,
    why: &str,
) -> (String, crate::contract::Reason, serde_json::Value) {
    let step_name = row.step.clone().unwrap_or_else(|| "intake".into());
    let deadline = row.step_deadline.map(crate::contract::to_local);
    let detail = json!({ "why": why, "deadline": deadline });
    // The step loop has the route already; the sweeper finds it from the stored request.
    let loaded = match route {
        Some(_) => None,
        None => load(ctx, row).ok().map(|(_, r)| r),
    };
    let reason = route.or(loaded.as_ref()).and_then(|route| {
        let key = route.step(row.step_index as usize)?.deadline_refusal.as_deref()?;
        Some(transition::regulation_reason(route, key, None))
    });
    let reason = reason.unwrap_or_else(|| {
        let when = deadline.map(|d| d.to_rfc3339()).unwrap_or_default();
        transition::common_reason(&ctx.regs, "deadline_exceeded", &format!("{step_name} (deadline {when})"))
    });
    (step_name, reason, detail)
}

/// Refuses, in the caller's transaction, a request whose step deadline passed (the sweeper).
pub async fn refuse_for_deadline(
    ctx: &Ctx,
    tx: &mut sqlx::PgConnection,
    row: &RequestRow,
    why: &str,
) -> Result<Option<Pending>, Failure> {
    let (step_name, reason, detail) = deadline_refusal(ctx, row, None, why);
    let refused = transition::refuse(tx, &head_of(ctx, row), row.position(), &step_name, reason, Some(detail)).await?;
    if refused.is_some() {
        crate::metrics::deadline_refusal(&step_name);
    }
    Ok(refused)
}

/// The Outcome head of a stored request, with its route's delivery and contacts when the
/// route is still known.
fn head_of(ctx: &Ctx, row: &RequestRow) -> Head {
    let head = Head::from(row);
    match transition::route_for(&ctx.regs, &row.service, &row.region, &row.channel) {
        Some(route) => head.on(&route),
        None => head,
    }
}

/// Convenience for the sweeper and handlers that own an `Arc<Ctx>`.
pub type SharedCtx = Arc<Ctx>;
