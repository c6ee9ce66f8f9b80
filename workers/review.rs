//! Provider-review pool (P-29…P-35).
//!
//! Fully automated services (S1–S3) decide by the rules held in the regulation data. S4 and S5
//! wait for a staff Decision on `qyzmet.staff-decisions` within their working-day or
//! calendar-day deadline; waiting is a row state, so no delivery stays unacknowledged. A
//! Decision is applied only while its request is at a decision-mode review step and before the
//! step deadline; a late, early, duplicate or unexpected one is recorded and not applied.

use chrono::Utc;
use futures_util::future::BoxFuture;
use serde_json::json;

use crate::contract::Request;
use crate::contract::{Decision, Envelope, Verdict};
use crate::ident::Identifier;
use crate::pipeline::runtime::{self, Disposition, Handler, Incoming};
use crate::pipeline::task::load;
use crate::pipeline::transition::{self, Head, Pending};
use crate::pipeline::{Ctx, Failure, Step, StepError, StepInput, StepOutcome};
use crate::registry::Registry;
use crate::regulations::Route;
use crate::regulations::{IdKind, ReviewMode, RuleCheck};
use crate::signature::ExpectedSigner;
use crate::store::{Decided, DecisionRecord, RequestRow, Store};

/// The review pool's step.
pub struct ReviewStep;

impl Step for ReviewStep {
    fn run<'a>(&'a self, ctx: &'a Ctx, input: &'a StepInput<'a>) -> BoxFuture<'a, Result<StepOutcome, StepError>> {
        Box::pin(step(input, &*ctx.registry))
    }
}

/// The review step: evaluate the rules, or wait for staff.
pub async fn step(input: &StepInput<'_>, registry: &dyn Registry) -> Result<StepOutcome, StepError> {
    if input.step.mode != Some(ReviewMode::Rules) {
        return Ok(StepOutcome::Wait);
    }
    for rule in &input.step.rules {
        let ok = match rule.check {
            // P-30 is part of the provider's conformity check: the review itself reads the
            // attached-population register (no step table has a lookup row for it).
            RuleCheck::AttachedToProvider => match input.request.applicant_id() {
                Identifier::Iin(iin) => {
                    registry.attachment(&iin).await?.is_some_and(|a| a.provider_bin == input.request.provider)
                }
                Identifier::Bin(_) => false,
            },
        };
        if !ok {
            return Ok(StepOutcome::Refuse {
                refusal: rule.refusal.clone(),
                note: None,
                detail: Some(format!("rule {:?} failed", rule.check)),
            });
        }
    }
    Ok(StepOutcome::Pass { facts: None, detail: None })
}

/// Why a decision to extend the step's term cannot be applied, if it cannot (P-34): the step
/// allows no extension (or no exceptional one), the new deadline is not later than the current
/// one, or it is past the longest term the regulation allows, counted from when the step began.
pub fn extension_problem(
    regs: &crate::regulations::Regulations,
    row: &crate::store::RequestRow,
    route: &crate::regulations::Route<'_>,
    d: &Decision,
) -> Option<String> {
    let to = d.extend_to?.with_timezone(&Utc);
    let current = row.step_deadline?;
    if to <= current {
        return Some(format!("not_later: the step is due {} already", crate::contract::to_local(current)));
    }
    let index = usize::try_from(row.step_index).ok()?;
    let start = transition::step_deadline(row, row.step_index - 1).unwrap_or(row.received_at);
    match regs.extension_limit(route, index, start, d.exceptional) {
        None if d.exceptional => Some("extension_not_allowed: this step has no exceptional extension".into()),
        None => Some("extension_not_allowed: the regulation gives this step no extension".into()),
        Some(limit) if to > limit => {
            Some(format!("beyond_the_allowed_term: at most {}", crate::contract::to_local(limit)))
        }
        Some(_) => None,
    }
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

/// Decides on a Decision: an approval is applied without a lock when it can be ([`approve`]);
/// everything else, and an approval that found its request moved, under the request's lock
/// ([`decide_locked`]).
async fn decide(ctx: &Ctx, env: &Envelope, d: &Decision, submitter: Option<&str>) -> Result<(), Failure> {
    if d.decision == Verdict::Approve && approve(ctx, env, d, submitter).await? {
        return Ok(());
    }
    decide_locked(ctx, env, d, submitter).await
}

/// Applies an approval in the group commit of decisions, without a lock: its checks run on the
/// request as read, and its advance applies only while the request still stands where it was
/// read and its record is new, the decision recorded in the same transaction. `true` if it
/// applied; `false` when it must be decided under the lock: it is rejected (recorded there,
/// with the reason), its request moved since it was read, or it was recorded before (a
/// duplicate, which the lock's way recognises and ignores). Duplicates are rare, so they are
/// not looked for first: that was a round trip for every approval.
async fn approve(ctx: &Ctx, env: &Envelope, d: &Decision, submitter: Option<&str>) -> Result<bool, Failure> {
    let Some(row) = ctx.reads.get(d.request_id).await? else { return Ok(false) };
    let Ok((request, route)) = load(ctx, &row) else { return Ok(false) };
    if rejection(ctx, env, d, submitter, &row, &request, &route).is_some() {
        return Ok(false);
    }
    let detail = applied_detail(d);
    let decided = Decided {
        advance: transition::next_step(&row, &route, None, Some(detail))?,
        decision: record_of(d, submitter, None),
    };
    let Some(pending) = ctx.decisions.commit(decided).await? else { return Ok(false) };
    tracing::info!(request_id = %d.request_id, decision_id = %d.decision_id, verdict = "approve", applied = true, "decision recorded");
    ctx.outbox.flush(pending).await;
    Ok(true)
}

/// Why a decision cannot be applied to its request as it stands (P-35), checked in this
/// order: its sender, the request's step, the step's deadline, the staff signature, the term
/// of an extension. `None`: it can.
fn rejection(
    ctx: &Ctx,
    env: &Envelope,
    d: &Decision,
    submitter: Option<&str>,
    row: &RequestRow,
    request: &Request,
    route: &Route<'_>,
) -> Option<String> {
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
        Some(format!("not_waiting_for_review (state {}, step {})", row.state, row.step.as_deref().unwrap_or("-")))
    } else if row.step_deadline.is_some_and(|dl| Utc::now() > dl) {
        Some("late: the review deadline has passed".into())
    } else if let Err(f) = ctx.verifier.verify(&env.body, &d.signature, &expected) {
        Some(format!("signature_not_confirmed: {f}"))
    } else if d.decision == Verdict::Extend {
        extension_problem(&ctx.regs, row, route, d)
    } else {
        None
    }
}

/// What the audit row of a step left by a decision records (approve, refuse).
fn applied_detail(d: &Decision) -> serde_json::Value {
    json!({ "decision_id": d.decision_id, "verdict": d.decision })
}

/// A decision's record: applied, or rejected with the reason.
fn record_of(d: &Decision, submitter: Option<&str>, rejection: Option<String>) -> DecisionRecord {
    DecisionRecord {
        decision_id: d.decision_id.clone(),
        request_id: d.request_id,
        verdict: match d.decision {
            Verdict::Approve => "approve",
            Verdict::Refuse => "refuse",
            Verdict::Extend => "extend",
        },
        reason: d.reason.as_ref().map(|r| json!(r)),
        decided_at: d.decided_at.with_timezone(&Utc),
        applied: rejection.is_none(),
        rejection,
        submitter: submitter.map(str::to_owned),
        signer_masked: crate::signature::x509::signer_masked(&d.signature),
    }
}

/// Decides under the request's lock (and the request id's, for a decision that comes before
/// its request): records a duplicate once, a rejection with its reason and an audit row, and
/// applies an approval, a refusal or an extension.
async fn decide_locked(ctx: &Ctx, env: &Envelope, d: &Decision, submitter: Option<&str>) -> Result<(), Failure> {
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
            Ok((request, route)) => match rejection(ctx, env, d, submitter, row, &request, &route) {
                Some(why) => Some(why),
                None => {
                    pending = Some(apply(&mut tx, d, row, &route).await?);
                    None
                }
            },
        },
    };
    let record = record_of(d, submitter, rejection);
    if !Store::insert_decision(&mut tx, &record).await? {
        // Another delivery of it recorded it meanwhile, in the group commit of approvals: that
        // record stands, and dropping this transaction undoes whatever this one did.
        tracing::info!(decision_id = %d.decision_id, "duplicate decision; ignored");
        return Ok(());
    }
    if let (Some(why), Some(row)) = (&record.rejection, &row) {
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
    tracing::info!(request_id = %d.request_id, decision_id = %d.decision_id, verdict = record.verdict, applied = record.applied, rejection = ?record.rejection, "decision recorded");
    tx.commit().await?;
    if let Some(p) = pending {
        ctx.outbox.flush(p).await;
    }
    Ok(())
}

/// Applies a decision that passed its checks, in the caller's transaction, which holds the
/// request's lock: the request moves on (approve), is refused with the step's refusal and the
/// staff's reason (refuse), or its term is extended (extend, P-34).
async fn apply(
    tx: &mut sqlx::PgConnection,
    d: &Decision,
    row: &RequestRow,
    route: &Route<'_>,
) -> Result<Pending, Failure> {
    let detail = applied_detail(d);
    Ok(match d.decision {
        Verdict::Approve => transition::advance(tx, row, route, None, Some(detail)).await?.unwrap_or_default(),
        Verdict::Refuse => {
            let step = route.step(row.step_index as usize);
            let key = step.and_then(|s| s.refusal.clone()).unwrap_or_default();
            let reason = transition::regulation_reason(route, &key, d.reason.as_ref());
            transition::refuse(tx, &Head::from(row).on(route), row.position(), "review", reason, Some(detail))
                .await?
                .unwrap_or_default()
        }
        Verdict::Extend => {
            let to = d.extend_to.map(|t| t.with_timezone(&Utc)).unwrap_or_else(Utc::now);
            let detail = json!({
                "decision_id": d.decision_id,
                "verdict": "extend",
                "from": row.step_deadline.map(crate::contract::to_local),
                "to": crate::contract::to_local(to),
                "exceptional": d.exceptional,
            });
            transition::extend(tx, row, route, to, detail).await?
        }
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::step;
    use crate::pipeline::{Class, StepOutcome};
    use crate::registry::MemoryRegistry;
    use crate::regulations::PoolName;
    use crate::workers::test_support::{Case, archive_form, bin, body, iin, licence_form, registry, who};

    async fn review(mut case: Case, registry: &MemoryRegistry) -> StepOutcome {
        step(&case.input(PoolName::Review), registry).await.expect("the registry answers")
    }

    fn refuse(refusal: &str, rule: &str) -> StepOutcome {
        StepOutcome::Refuse { refusal: refusal.into(), note: None, detail: Some(format!("rule {rule} failed")) }
    }

    const PASS: StepOutcome = StepOutcome::Pass { facts: None, detail: None };

    /// S1 Akmola: the rule attached_to_provider (R3/not_attached portal, R5/not_attached provider).
    fn akmola_appointment(channel: &str, applicant: &str, provider: &str) -> Case {
        Case::new(body("doctor-appointment", "akmola", channel, iin(applicant), provider, json!({})))
    }

    /// S1 Astana portal: no rule (no sourced ground, D27).
    fn astana_appointment(provider: &str) -> Case {
        Case::new(body("doctor-appointment", "astana", "portal", iin(who::CITIZEN), provider, json!({})))
    }

    #[tokio::test]
    async fn p32_p35_licence_review_waits_for_a_staff_decision() {
        let b =
            body("medical-licence", "aktobe", "portal", bin(who::CLINIC), who::AKTOBE_HEALTH, licence_form("issue"));
        assert_eq!(review(Case::new(b), &registry()).await, StepOutcome::Wait);
    }

    #[tokio::test]
    async fn p34_p35_archive_review_waits_for_a_staff_decision() {
        let b =
            body("archive-certificate", "astana", "centre", iin(who::CITIZEN), who::ASTANA_ARCHIVES, archive_form());
        assert_eq!(review(Case::new(b), &registry()).await, StepOutcome::Wait);
    }

    #[tokio::test]
    async fn p30_applicant_attached_to_the_provider_per_the_register_passes() {
        assert_eq!(review(akmola_appointment("portal", who::CITIZEN, who::AKMOLA_PHC), &registry()).await, PASS);
    }

    #[tokio::test]
    async fn p30_applicant_attached_to_another_provider_refuses_r3_not_attached() {
        let case = akmola_appointment("portal", who::CITIZEN, who::ASTANA_PHC);
        assert_eq!(review(case, &registry()).await, refuse("R3/not_attached", "AttachedToProvider"));
    }

    #[tokio::test]
    async fn p30_applicant_missing_from_the_register_refuses_r3_not_attached() {
        let case = akmola_appointment("portal", who::UNATTACHED, who::AKMOLA_PHC);
        assert_eq!(review(case, &registry()).await, refuse("R3/not_attached", "AttachedToProvider"));
    }

    #[tokio::test]
    async fn p29_p30_unattached_applicant_on_the_provider_channel_refuses_r5_not_attached() {
        let case = akmola_appointment("provider", who::UNATTACHED, who::AKMOLA_PHC);
        assert_eq!(review(case, &registry()).await, refuse("R5/not_attached", "AttachedToProvider"));
    }

    #[tokio::test]
    async fn p29_d27_without_a_sourced_ground_the_check_passes_even_for_a_provider_missing_from_gbd_yul() {
        // The provider's registration is no ground in any source (P-22, D27): nothing refuses.
        assert_eq!(review(astana_appointment(who::UNREGISTERED_PROVIDER), &registry()).await, PASS);
    }

    #[tokio::test]
    async fn an_unreachable_registry_during_the_rules_is_a_transient_failure_not_a_refusal() {
        let reg = registry();
        reg.down.store(true, std::sync::atomic::Ordering::SeqCst);
        let mut case = akmola_appointment("portal", who::CITIZEN, who::AKMOLA_PHC);
        let err = step(&case.input(PoolName::Review), &reg).await.expect_err("the registry is down");
        assert_eq!(err.class(), Class::Transient, "{err}");
    }
}
