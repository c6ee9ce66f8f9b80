//! Provider-review pool (P-29…P-35).
//!
//! Fully automated services (S1–S3) decide by the rules held in the regulation data. S4 and S5
//! wait for a staff Decision on `qyzmet.staff-decisions` within their working-day or
//! calendar-day deadline; waiting is a row state, so no delivery stays unacknowledged. A
//! Decision is applied only while its request is at a decision-mode review step and before the
//! step deadline; a late, early, duplicate or unexpected one is recorded and not applied.

use chrono::Utc;
use futures_util::future::BoxFuture;
use serde_json::{Value, json};

use crate::contract::{Decision, Envelope, Verdict};
use crate::ident::Identifier;
use crate::pipeline::runtime::{self, Disposition, Handler, Incoming};
use crate::pipeline::task::load;
use crate::pipeline::transition::{self, Head, Pending};
use crate::pipeline::{Ctx, Failure, StepError, StepInput, StepOutcome};
use crate::registry::Registry;
use crate::regulations::{IdKind, ReviewMode, RuleCheck};
use crate::signature::ExpectedSigner;
use crate::store::Store;

/// The review step: evaluate the rules, or wait for staff.
pub async fn step(input: &StepInput<'_>, registry: &dyn Registry) -> Result<StepOutcome, StepError> {
    if input.step.mode != Some(ReviewMode::Rules) {
        return Ok(StepOutcome::Wait);
    }
    for rule in &input.step.rules {
        let ok = match rule.check {
            RuleCheck::AttachedToProvider => {
                let attached_to = match input.facts.get("attachment") {
                    Some(Value::Object(a)) => a.get("provider_bin").and_then(Value::as_str).map(str::to_owned),
                    Some(_) => None,
                    None => match input.request.applicant_id() {
                        Identifier::Iin(iin) => registry.attachment(&iin).await?.map(|a| a.provider_bin),
                        Identifier::Bin(_) => None,
                    },
                };
                attached_to.as_deref() == Some(input.request.provider.as_str())
            }
            RuleCheck::ProviderRegistered => registry.entity(&input.request.provider).await?.is_some(),
        };
        if !ok {
            return Ok(StepOutcome::Refuse {
                refusal: rule.refusal.clone(),
                note: None,
                detail: Some(format!("rule {:?} failed", rule.check)),
            });
        }
    }
    Ok(StepOutcome::Pass { facts: None })
}

/// Handles staff Decisions.
pub struct DecisionHandler;

impl Handler for DecisionHandler {
    fn handle<'a>(&'a self, ctx: &'a Ctx, msg: &'a Incoming) -> BoxFuture<'a, Disposition> {
        Box::pin(async move {
            match runtime::read(ctx, msg, Decision::from_envelope, "invalid_decision") {
                Ok((env, d)) => runtime::settle(decide(ctx, &env, &d, msg.sender(ctx)).await, d.request_id, "decision"),
                Err(disposition) => disposition,
            }
        })
    }
}

async fn decide(ctx: &Ctx, env: &Envelope, d: &Decision, submitter: Option<&str>) -> Result<(), Failure> {
    let mut tx = ctx.store.begin().await?;
    Store::lock_request_id(&mut tx, d.request_id).await?;
    if Store::decision_exists(&mut tx, &d.decision_id).await? {
        tracing::info!(decision_id = %d.decision_id, "duplicate decision; ignored");
        return Ok(tx.commit().await?);
    }
    let row = Store::lock_request(&mut tx, d.request_id).await?;
    let mut pending: Option<Pending> = None;
    let rejection: Option<String> = match &row {
        None => Some("unknown_request".into()),
        Some(row) => match load(ctx, row) {
            Err(e) => Some(format!("request unreadable: {e}")),
            Ok((request, route)) => {
                let step = route.step(row.step_index as usize);
                let in_review = matches!(row.state.as_str(), "queued" | "waiting")
                    && step.is_some_and(|s| s.mode == Some(ReviewMode::Decision));
                let expected = ExpectedSigner {
                    role: "provider_staff",
                    identifiers: &[IdKind::Bin],
                    subjects: vec![Identifier::Bin(request.provider.clone())],
                    signed_at: d.decided_at.with_timezone(&Utc),
                };
                let sender = match &ctx.systems {
                    Some(systems) => systems.may_decide(submitter, request.service.as_str(), &request.provider).err(),
                    None => None,
                };
                if let Some(e) = sender {
                    Some(format!("sender_not_allowed: {e}"))
                } else if !in_review {
                    Some(format!(
                        "not_waiting_for_review (state {}, step {})",
                        row.state,
                        row.step.as_deref().unwrap_or("-")
                    ))
                } else if row.step_deadline.is_some_and(|dl| Utc::now() > dl) {
                    Some("late: the review deadline has passed".into())
                } else if let Err(f) = ctx.verifier.verify(&env.body, &d.signature, &expected) {
                    Some(format!("signature_not_confirmed: {f}"))
                } else {
                    let detail = json!({ "decision_id": d.decision_id, "verdict": d.decision });
                    pending = Some(match d.decision {
                        Verdict::Approve => {
                            transition::advance(&mut tx, row, &route, None, Some(detail)).await?.unwrap_or_default()
                        }
                        Verdict::Refuse => {
                            let key = step.and_then(|s| s.refusal.clone()).unwrap_or_default();
                            let reason = transition::regulation_reason(&route, &key, d.reason.as_ref());
                            transition::refuse(
                                &mut tx,
                                &Head::from(row),
                                row.position(),
                                "review",
                                reason,
                                Some(detail),
                            )
                            .await?
                            .unwrap_or_default()
                        }
                    });
                    None
                }
            }
        },
    };
    let reason = d.reason.as_ref().map(|r| json!(r));
    let verdict = match d.decision {
        Verdict::Approve => "approve",
        Verdict::Refuse => "refuse",
    };
    Store::insert_decision(
        &mut tx,
        &d.decision_id,
        d.request_id,
        verdict,
        reason.as_ref(),
        d.decided_at.with_timezone(&Utc),
        rejection.is_none(),
        rejection.as_deref(),
        submitter,
        crate::signature::x509::signer_masked(&d.signature).as_deref(),
    )
    .await?;
    if let (Some(why), Some(row)) = (&rejection, &row) {
        let detail = json!({ "decision_id": d.decision_id, "rejected": why });
        Store::history(
            &mut tx,
            d.request_id,
            row.step_index,
            "review",
            "decision_rejected",
            row.step_deadline,
            Some(&detail),
        )
        .await?;
    }
    tracing::info!(request_id = %d.request_id, decision_id = %d.decision_id, verdict, applied = rejection.is_none(), rejection = ?rejection, "decision recorded");
    tx.commit().await?;
    if let Some(p) = pending {
        ctx.outbox.flush(p).await;
    }
    Ok(())
}
