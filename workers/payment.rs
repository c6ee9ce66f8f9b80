//! Payment-confirmation pool (S4 portal, P-23…P-27).
//!
//! PaymentNotices arrive on `qyzmet.payment-notices`, before or after their request. Each is
//! recorded once per `payment_id`; if its request is at the payment step it moves on. The step
//! itself passes when a payment is recorded and otherwise waits (state in PostgreSQL, not an
//! unacked delivery); when the step deadline passes without payment the sweeper refuses with the
//! step's refusal (L2, P-24).

use chrono::Utc;
use futures_util::future::BoxFuture;
use serde_json::{Value, json};

use crate::contract::PaymentNotice;
use crate::ident;
use crate::pipeline::runtime::{self, Disposition, Handler, Incoming};
use crate::pipeline::transition;
use crate::pipeline::{Ctx, Failure, Step, StepError, StepInput, StepOutcome};
use crate::store::{Advance, RequestRow, Store};

/// The payment pool's step: reads the payments recorded for the request, then [`step`].
pub struct PaymentStep;

impl Step for PaymentStep {
    fn run<'a>(&'a self, ctx: &'a Ctx, input: &'a StepInput<'a>) -> BoxFuture<'a, Result<StepOutcome, StepError>> {
        Box::pin(async move {
            let mut conn = ctx.store.pool().acquire().await?;
            let paid = Store::payments_for(&mut conn, input.row.request_id).await?;
            Ok(step(input, &paid))
        })
    }
}

/// The payment step: pass if the request is paid, otherwise wait.
pub fn step(_input: &StepInput<'_>, payments: &[String]) -> StepOutcome {
    match payments.first() {
        Some(id) => {
            let (facts, detail) = paid_with(id);
            StepOutcome::Pass { facts: Some(facts), detail: Some(detail) }
        }
        None => StepOutcome::Wait,
    }
}

/// What a payment adds to a request passing its payment step, however it passes (the step finds
/// the payment, or the notice finds the step): its facts, and its audit row's detail.
fn paid_with(payment_id: &str) -> (Value, Value) {
    (json!({ "paid": true, "payment_id": payment_id }), json!({ "payment_id": payment_id }))
}

/// Handles PaymentNotices.
pub struct NoticeHandler;

impl Handler for NoticeHandler {
    fn handle<'a>(&'a self, ctx: &'a Ctx, msg: &'a Incoming) -> BoxFuture<'a, Disposition> {
        Box::pin(async move {
            let notice = match runtime::read(ctx, msg, PaymentNotice::from_envelope, "invalid_payment_notice") {
                Ok((_, notice)) => notice,
                Err(disposition) => return disposition,
            };
            // Only the payment gateway's notices count; anyone else's is kept as evidence.
            if let Some(systems) = &ctx.systems
                && let Err(e) = systems.may_pay(msg.sender(ctx))
            {
                return Disposition::DeadLetter { reason: "sender_not_allowed".into(), detail: e.to_string() };
            }
            runtime::settle(record(ctx, &notice, msg.sender(ctx)).await, notice.request_id, "payment notice")
        })
    }
}

/// How many times a notice looks for its request at the payment step. A look fails only when
/// the request moved between the read and the advance while still at that step (its own step
/// parked it, or a transient failure scheduled a retry), which can happen a few times at most.
const LOOKS: usize = 4;

/// Records the payment, then moves its request on if it stands at its payment step.
///
/// No lock is taken. The payment is committed first, in a statement of its own, and the
/// request read afterwards; the payment step reads the payments only once its request stands
/// at that step. Of the two, whichever reads second sees the other's write: either the step
/// finds the payment and passes, or this notice finds the request at the step (queued or
/// waiting) and advances it in the group commit of the steps' advances, guarded by the
/// position it read. Of a step and a notice that both advance, the second finds the request
/// moved and changes nothing. A notice redelivered after a crash finds its payment recorded
/// and still moves the request on, so a crash between the two writes loses nothing.
async fn record(ctx: &Ctx, n: &PaymentNotice, submitter: Option<&str>) -> Result<(), Failure> {
    let payer = n.payer.identifier().map(|id| ident::mask(id.digits())).unwrap_or_default();
    let new = {
        let mut conn = ctx.store.pool().acquire().await?;
        Store::insert_payment(
            &mut conn,
            &n.payment_id,
            n.request_id,
            &n.amount,
            &n.currency,
            n.paid_at.with_timezone(&Utc),
            &payer,
            submitter,
        )
        .await?
    };
    if !new {
        tracing::info!(payment_id = %n.payment_id, "duplicate payment notice; counted once");
    }
    let applied = move_request_on(ctx, n).await?;
    if new {
        tracing::info!(request_id = %n.request_id, payment_id = %n.payment_id, payer = %payer, applied, "payment recorded");
    }
    Ok(())
}

/// Moves the notice's request on if it stands at its payment step; whether it did. A request
/// that kept moving at that step through every look is a transient failure: the notice is
/// handled again, and finds its payment recorded.
async fn move_request_on(ctx: &Ctx, n: &PaymentNotice) -> Result<bool, Failure> {
    for _ in 0..LOOKS {
        // No row: the request is not registered yet, and its payment step will find the payment.
        let Some(row) = ctx.reads.get(n.request_id).await? else { return Ok(false) };
        let Some(advance) = advance_at_payment_step(ctx, &row, n)? else { return Ok(false) };
        if let Some(pending) = ctx.advances.commit(advance).await? {
            ctx.outbox.flush(pending).await;
            return Ok(true);
        }
    }
    Err(Failure::Transient(format!("request kept moving at its payment step through {LOOKS} looks")))
}

/// The advance of a request at its payment step (queued or waiting) on to the next, with the
/// payment in its facts; `None` for a request anywhere else.
fn advance_at_payment_step(ctx: &Ctx, row: &RequestRow, n: &PaymentNotice) -> Result<Option<Advance>, Failure> {
    let at_payment = matches!(row.state.as_str(), "queued" | "waiting") && row.step.as_deref() == Some("payment");
    if !at_payment {
        return Ok(None);
    }
    // The route follows from the row's columns: the stored request need not be parsed.
    let Some(route) = transition::route_for(&ctx.regs, &row.service, &row.region, &row.channel) else {
        return Ok(None);
    };
    let (facts, detail) = paid_with(&n.payment_id);
    transition::next_step(row, &route, Some(facts), Some(detail)).map(Some)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::step;
    use crate::pipeline::StepOutcome;
    use crate::regulations::PoolName;
    use crate::workers::test_support::{Case, bin, body, licence_form, who};

    fn licence_on_portal() -> Case {
        Case::new(body(
            "medical-licence",
            "aktobe",
            "portal",
            bin(who::CLINIC),
            who::AKTOBE_HEALTH,
            licence_form("issue"),
        ))
    }

    fn paid(ids: &[&str]) -> StepOutcome {
        let ids: Vec<String> = ids.iter().map(|s| (*s).to_owned()).collect();
        step(&licence_on_portal().input(PoolName::Payment), &ids)
    }

    #[test]
    fn p24_paid_request_passes_with_the_payment_id() {
        let facts = json!({ "paid": true, "payment_id": "PSHEP-2026-0001" });
        let detail = json!({ "payment_id": "PSHEP-2026-0001" });
        assert_eq!(paid(&["PSHEP-2026-0001"]), StepOutcome::Pass { facts: Some(facts), detail: Some(detail) });
    }

    #[test]
    fn p23_p24_unpaid_request_waits_for_the_payment_notice() {
        assert_eq!(paid(&[]), StepOutcome::Wait);
    }

    #[test]
    fn p24_with_several_recorded_payments_the_first_recorded_one_is_named() {
        let facts = json!({ "paid": true, "payment_id": "PSHEP-A" });
        let detail = json!({ "payment_id": "PSHEP-A" });
        assert_eq!(paid(&["PSHEP-A", "PSHEP-B"]), StepOutcome::Pass { facts: Some(facts), detail: Some(detail) });
    }
}
