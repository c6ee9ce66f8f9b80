//! Intake pool: reads Requests from `qyzmet.intake`.
//!
//! Unreadable messages (not JSON, no usable `request_id`, oversized) go to the dead-letter queue.
//! A republished `request_id` is acknowledged and nothing else happens. Otherwise
//! [`examine`] decides — field rules (`invalid_request` naming the field), the service/region/
//! channel regulation (`unsupported_service`), the service's own rules (applicant kind, required
//! form fields), the signature (P-12…P-16) — and the request is either refused at once or
//! registered with a number and its deadlines (P-11, P-41, P-46), and its first step queued.

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use serde_json::{Value, json};

use crate::broker::pool_name;
use crate::contract::{Envelope, Reason, Request, Status, storable_copy, storable_text};
use crate::ident::{self, Identifier};
use crate::pipeline::runtime::{self, Disposition, Handler, Incoming};
use crate::pipeline::transition::{self, Head, outcome_message, task_message};
use crate::pipeline::{Ctx, Failure};
use crate::regulations::{DeadlinePlan, Regulations, Route};
use crate::signature::{ExpectedSigner, SignatureFailure, Signer, Verifier};
use crate::store::{NewRequest, Position, Store};
use crate::systems::Systems;

/// What intake decided about a readable Request.
#[derive(Debug)]
pub enum Examined<'r> {
    /// Register it.
    Accepted {
        /// The request.
        request: Box<Request>,
        /// Its route.
        route: Route<'r>,
        /// Its deadlines.
        plan: DeadlinePlan,
    },
    /// Refuse it at intake.
    Refused {
        /// Why.
        reason: Reason,
        /// Machine detail for the audit trail.
        detail: Value,
    },
}

/// What intake checks a Request against besides the regulations.
pub struct Checks<'a> {
    /// Signature verification.
    pub verifier: &'a dyn Verifier,
    /// Result signing: a provider whose documents cannot be signed is refused at once.
    pub signer: &'a dyn Signer,
    /// BINs of the centres whose operators sign centre-channel requests.
    pub centre_bins: &'a [String],
    /// Who may submit what; `None` when the installation has no systems file.
    pub systems: Option<&'a Systems>,
    /// The broker-validated `user_id` of the delivery.
    pub submitter: Option<&'a str>,
}

/// The intake step proper: a plain function of the message, the regulations and the checks.
pub fn examine<'r>(
    regs: &'r Regulations,
    checks: &Checks<'_>,
    env: &Envelope,
    received: DateTime<Utc>,
) -> Examined<'r> {
    let Checks { verifier, signer, centre_bins, systems, submitter } = *checks;
    let request = match Request::from_envelope(env) {
        Ok(r) => r,
        Err(e) => {
            return Examined::Refused {
                reason: transition::common_reason(regs, "invalid_request", &e.to_string()),
                detail: json!({ "field": e.field, "problem": e.problem }),
            };
        }
    };
    let route = match regs.route(request.service, request.region, request.channel) {
        Ok(r) => r,
        Err(why) => {
            return Examined::Refused {
                reason: transition::common_reason(regs, "unsupported_service", &why),
                detail: json!({ "why": why }),
            };
        }
    };
    if let Err(e) = regs.check_request(&route, &request) {
        return Examined::Refused {
            reason: transition::common_reason(regs, "invalid_request", &e.to_string()),
            detail: json!({ "field": e.field, "problem": e.problem }),
        };
    }
    // The system that published it may use this channel, service and provider (the broker's
    // permissions only say it may publish Requests at all).
    if let Some(systems) = systems
        && let Err(e) = systems.may_submit(submitter, request.channel, request.service, &request.provider)
    {
        return Examined::Refused {
            reason: transition::common_reason(regs, "invalid_request", &e.to_string()),
            detail: json!({ "field": e.field, "problem": e.problem, "submitter": submitter }),
        };
    }
    // The applicant signs on the portal; staff sign with a certificate naming their employer:
    // the provider, or for operators a public service centre.
    let subjects = match route.channel.signature.signer.as_str() {
        "applicant" => vec![request.applicant_id()],
        "centre_operator" => centre_bins.iter().map(|b| Identifier::Bin(b.clone())).collect(),
        _ => vec![Identifier::Bin(request.provider.clone())],
    };
    let expected = ExpectedSigner {
        role: &route.channel.signature.signer,
        identifiers: &route.channel.signature.identifier,
        subjects,
        signed_at: request.submitted_at.with_timezone(&Utc),
    };
    if let Err(failure) = verifier.verify(&env.body, &request.signature, &expected) {
        return Examined::Refused {
            reason: signature_reason(regs, &route, failure),
            detail: json!({ "signature": failure.to_string() }),
        };
    }
    if !signer.can_sign(&request.provider) {
        let problem = "qyzmet holds no result-signing key for this provider (and no default key)";
        return Examined::Refused {
            reason: transition::common_reason(regs, "invalid_request", &format!("provider: {problem}")),
            detail: json!({ "field": "provider", "problem": problem }),
        };
    }
    let plan = regs.plan(&route, &request, received);
    Examined::Accepted { request: Box::new(request), route, plan }
}

fn signature_reason(regs: &Regulations, route: &Route<'_>, failure: SignatureFailure) -> Reason {
    match &route.channel.signature.refusal {
        Some(key) => transition::regulation_reason(route, key, None),
        None => {
            // The regulation specifies no check for this signer (P-14) but qyzmet verifies every
            // signature; the refusal then has no regulation code.
            let mut r = transition::common_reason(regs, "invalid_request", &format!("signature: {failure}"));
            r.kind = "signature_not_confirmed".into();
            r
        }
    }
}

/// The intake handler for the broker loop.
pub struct IntakeHandler;

impl Handler for IntakeHandler {
    fn handle<'a>(&'a self, ctx: &'a Ctx, msg: &'a Incoming) -> BoxFuture<'a, Disposition> {
        Box::pin(async move {
            match runtime::envelope(ctx, msg) {
                Ok(env) => runtime::settle(accept(ctx, &env, msg).await, env.request_id, "request"),
                Err(disposition) => disposition,
            }
        })
    }
}

fn republished(env: &Envelope) {
    tracing::info!(request_id = %env.request_id, "request republished; already received, nothing to do");
}

/// A top-level text member as sent, safe to store even when the request is refused for it.
fn text_of(env: &Envelope, key: &str) -> String {
    storable_text(env.body.get(key).and_then(Value::as_str).unwrap_or(""), 64)
}

/// The applicant's IIN or BIN as sent (bounded and storable), whatever else is wrong with it.
fn applicant_id(env: &Envelope) -> Option<String> {
    env.body
        .get("applicant")
        .and_then(|a| a.get("iin").or_else(|| a.get("bin")))
        .and_then(Value::as_str)
        .map(|id| storable_text(id, 32))
}

fn masked_applicant(id: Option<&str>) -> String {
    id.map(|id| storable_text(&ident::mask(id), 32)).unwrap_or_else(|| "-".into())
}

fn region_abbrev(region: &str) -> &'static str {
    match region {
        "akmola" => "AKM",
        "aktobe" => "AKT",
        "astana" => "AST",
        _ => "XXX",
    }
}

async fn accept(ctx: &Ctx, env: &Envelope, msg: &Incoming) -> Result<(), Failure> {
    // A republished request_id is found by the insert below (the primary key is the inbox);
    // nothing is written or published for it.
    let received = Utc::now();
    let checks = Checks {
        verifier: &*ctx.verifier,
        signer: &*ctx.signer,
        centre_bins: &ctx.centre_bins,
        systems: ctx.systems.as_deref(),
        submitter: msg.sender(ctx),
    };
    let examined = examine(&ctx.regs, &checks, env, received);
    // A refused request may be refused precisely because PostgreSQL cannot hold it as sent
    // (a NUL character): its audit copy is made storable. An accepted one is stored as sent.
    let body = match &examined {
        Examined::Accepted { .. } => Value::Object(env.body.clone()),
        Examined::Refused { .. } => storable_copy(&Value::Object(env.body.clone())),
    };
    let service = text_of(env, "service");
    let region = text_of(env, "region");
    let channel = text_of(env, "channel");
    let applicant_id = applicant_id(env);
    let applicant = masked_applicant(applicant_id.as_deref());
    let submitted_at = env
        .body
        .get("submitted_at")
        .and_then(Value::as_str)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc));
    // The intake step has its own deadline (P-46): work that overran it is refused.
    let examined = match examined {
        Examined::Accepted { plan, .. } if Utc::now() >= plan.steps[0].1 => Examined::Refused {
            reason: transition::common_reason(&ctx.regs, "deadline_exceeded", "intake"),
            detail: json!({ "why": "intake did not finish before its deadline" }),
        },
        other => other,
    };
    let pending = match examined {
        Examined::Refused { reason, detail } => {
            let mut tx = ctx.store.begin().await?;
            // Kept with the request: every Outcome carries a traceparent of this trace.
            let trace = crate::tracecontext::for_request(msg.traceparent.as_deref());
            let new = NewRequest {
                request_id: env.request_id,
                request_number: None,
                service: &service,
                region: &region,
                channel: &channel,
                applicant_masked: &applicant,
                applicant_id: applicant_id.as_deref(),
                state: "queued",
                step_index: 0,
                step: Some("intake"),
                step_deadline: None,
                service_deadline: None,
                deadlines: json!([]),
                body: &body,
                submitter: msg.sender(ctx),
                traceparent: Some(&trace),
                submitted_at,
                received_at: received,
            };
            if !Store::insert_request(&mut tx, &new).await? {
                republished(env);
                return Ok(());
            }
            tracing::info!(request_id = %env.request_id, kind = %reason.kind, code = ?reason.code, applicant = %applicant, "refused at intake");
            let at = Position { state: "queued", step_index: 0, attempts: 0 };
            let head = Head {
                request_id: env.request_id,
                request_number: None,
                service: service.clone(),
                region: region.clone(),
                channel: channel.clone(),
                deadline: None,
                traceparent: Some(trace.clone()),
                received_at: Some(received),
            };
            let pending = transition::refuse(&mut tx, &head, at, "intake", reason, Some(detail)).await?;
            tx.commit().await?;
            pending
        }
        Examined::Accepted { request, route, plan } => {
            let registered = Registration { env, msg, request: &request, route: &route, plan: &plan, body: &body };
            match register(ctx, &registered, &applicant, submitted_at, received).await? {
                Some(p) => Some(p),
                None => return Ok(()),
            }
        }
    };
    if let Some(p) = pending {
        ctx.outbox.flush(p).await;
    }
    Ok(())
}

struct Registration<'a> {
    env: &'a Envelope,
    msg: &'a Incoming,
    request: &'a Request,
    route: &'a Route<'a>,
    plan: &'a DeadlinePlan,
    body: &'a Value,
}

/// Registers an accepted request with its number and queues its first step, in one statement;
/// `None` if its id was already registered (a republished request).
async fn register(
    ctx: &Ctx,
    r: &Registration<'_>,
    applicant: &str,
    submitted_at: Option<DateTime<Utc>>,
    received: DateTime<Utc>,
) -> Result<Option<transition::Pending>, Failure> {
    let Registration { env, msg, request, route, plan, body } = *r;
    let Some(first) = route.step(1) else {
        return Err(Failure::permanent("service", "its route has no step after intake"));
    };
    let first_deadline = plan.steps[1].1;
    let number = format!(
        "{}-{}-{}-{:07}",
        route.service.code,
        region_abbrev(request.region.as_str()),
        received.with_timezone(&ctx.regs.calendar().tz()).format("%Y%m%d"),
        ctx.store.next_request_serial().await?
    );
    let deadlines: Vec<String> = plan.steps.iter().map(|(_, t)| t.to_rfc3339()).collect();
    let first_name = pool_name(first.pool);
    let applicant_id = request.applicant_id();
    // Kept with the request: every Outcome carries a traceparent of this trace.
    let trace = crate::tracecontext::for_request(msg.traceparent.as_deref());
    let new = NewRequest {
        request_id: env.request_id,
        request_number: Some(number.clone()),
        service: request.service.as_str(),
        region: request.region.as_str(),
        channel: request.channel.as_str(),
        applicant_masked: applicant,
        applicant_id: Some(applicant_id.digits()),
        state: "queued",
        step_index: 1,
        step: Some(first_name),
        step_deadline: Some(first_deadline),
        service_deadline: Some(plan.service),
        deadlines: json!(deadlines),
        body,
        submitter: msg.sender(ctx),
        traceparent: Some(&trace),
        submitted_at,
        received_at: received,
    };
    let detail = json!({ "request_number": number, "service_deadline": crate::contract::to_local(plan.service) });
    let head = Head {
        request_id: env.request_id,
        request_number: Some(number.clone()),
        service: request.service.as_str().to_owned(),
        region: request.region.as_str().to_owned(),
        channel: request.channel.as_str().to_owned(),
        deadline: Some(plan.service),
        traceparent: Some(trace.clone()),
        received_at: Some(received),
    };
    let (_, registered) = outcome_message(
        &head,
        Status::Registered,
        Some(first_name),
        None,
        None,
        Utc::now(),
        format!("{}:0:registered", env.request_id),
    );
    let task = task_message(env.request_id, 1, first.pool, Some(&trace));
    let messages = vec![registered, task];
    let mut conn = ctx.store.pool().acquire().await?;
    let ids = Store::register(&mut conn, &new, (Some(plan.steps[0].1), &detail), &messages).await?;
    if ids.is_empty() {
        republished(env);
        return Ok(None);
    }
    tracing::info!(request_id = %env.request_id, number = %number, service = %request.service, region = %request.region,
        channel = %request.channel, applicant = %applicant, "registered");
    Ok(Some(transition::Pending { ids, messages, finals: Vec::new() }))
}
