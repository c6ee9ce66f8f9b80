//! Payment-confirmation pool (S4 portal, P-23…P-27).
//!
//! PaymentNotices arrive on `qyzmet.payment-notices`, before or after their request. Each is
//! recorded once per `payment_id`; if its request is at the payment step it moves on. The step
//! itself passes when a payment is recorded and otherwise waits (state in PostgreSQL, not an
//! unacked delivery); when the step deadline passes without payment the sweeper refuses with the
//! step's refusal (L2, P-24).

use chrono::Utc;
use futures_util::future::BoxFuture;
use serde_json::json;

use crate::contract::PaymentNotice;
use crate::ident;
use crate::pipeline::runtime::{self, Disposition, Handler, Incoming};
use crate::pipeline::transition;
use crate::pipeline::transition::Pending;
use crate::pipeline::{Ctx, Failure, Step, StepError, StepInput, StepOutcome};
use crate::store::{RequestRow, Store};

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
        Some(id) => StepOutcome::Pass { facts: Some(json!({ "paid": true, "payment_id": id })) },
        None => StepOutcome::Wait,
    }
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

async fn record(ctx: &Ctx, n: &PaymentNotice, submitter: Option<&str>) -> Result<(), Failure> {
    let payer = n.payer.identifier().map(|id| ident::mask(id.digits())).unwrap_or_default();
    let mut tx = ctx.store.begin().await?;
    Store::lock_request_id(&mut tx, n.request_id).await?;
    let new = Store::insert_payment(
        &mut tx,
        &n.payment_id,
        n.request_id,
        &n.amount,
        &n.currency,
        n.paid_at.with_timezone(&Utc),
        &payer,
        submitter,
    )
    .await?;
    if !new {
        tracing::info!(payment_id = %n.payment_id, "duplicate payment notice; counted once");
        return Ok(tx.commit().await?);
    }
    let found = Store::lock_request(&mut tx, n.request_id).await?;
    let mut pending = match &found {
        Some(row) => move_on(ctx, &mut tx, row, n).await?,
        None => None,
    };
    tracing::info!(request_id = %n.request_id, payment_id = %n.payment_id, payer = %payer, applied = pending.is_some(), "payment recorded");
    tx.commit().await?;
    if found.is_none() {
        // A notice before its request found no row to lock. Meanwhile its request may have
        // been registered and its payment step, not seeing this uncommitted payment, may have
        // parked it: look again now that the payment is committed, or the request would wait
        // for a payment it has. (With a row, its lock kept the request from reaching the
        // payment step until this commit.)
        let mut tx = ctx.store.begin().await?;
        if let Some(row) = Store::lock_request(&mut tx, n.request_id).await? {
            pending = move_on(ctx, &mut tx, &row, n).await?;
        }
        tx.commit().await?;
    }
    if let Some(p) = pending {
        ctx.outbox.flush(p).await;
    }
    Ok(())
}

/// Moves a request at its payment step (queued or waiting) on to the next, with the payment in
/// its facts; anything else is left alone.
async fn move_on(
    ctx: &Ctx,
    tx: &mut sqlx::PgConnection,
    row: &RequestRow,
    n: &PaymentNotice,
) -> Result<Option<Pending>, Failure> {
    let at_payment = matches!(row.state.as_str(), "queued" | "waiting") && row.step.as_deref() == Some("payment");
    if !at_payment {
        return Ok(None);
    }
    // The route follows from the row's columns: the stored request need not be parsed while
    // its lock is held.
    let Some(route) = transition::route_for(&ctx.regs, &row.service, &row.region, &row.channel) else {
        return Ok(None);
    };
    let facts = json!({ "paid": true, "payment_id": n.payment_id });
    transition::advance(tx, row, &route, Some(facts), Some(json!({ "payment_id": n.payment_id }))).await
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
        assert_eq!(paid(&["PSHEP-2026-0001"]), StepOutcome::Pass { facts: Some(facts) });
    }

    #[test]
    fn p23_p24_unpaid_request_waits_for_the_payment_notice() {
        assert_eq!(paid(&[]), StepOutcome::Wait);
    }

    #[test]
    fn p24_with_several_recorded_payments_the_first_recorded_one_is_named() {
        let facts = json!({ "paid": true, "payment_id": "PSHEP-A" });
        assert_eq!(paid(&["PSHEP-A", "PSHEP-B"]), StepOutcome::Pass { facts: Some(facts) });
    }
}
