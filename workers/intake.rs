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
use crate::pipeline::transition::{self, Head, Said, outcome_message};
use crate::pipeline::{Ctx, Failure};
use crate::regulations::{DeadlinePlan, Regulations, Route};
use crate::signature::{ExpectedSigner, SignatureFailure, Signer, Verifier};
use crate::store::{NewRequest, Position, Registration, Store};
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
    let examined = match examine(&ctx.regs, &checks, env, received) {
        // P-10: where the variant accepts requests only until some time before the provider
        // closes, the provider registry's closing time replaces the data's default.
        Examined::Accepted { request, route, plan } if route.variant.intake_cutoff.is_some() => {
            let closes = ctx.registry.entity(&request.provider).await?.and_then(|e| e.closes_at);
            let plan = match closes {
                Some(closes) => ctx.regs.plan_with(&route, &request, received, Some(closes)),
                None => plan,
            };
            Examined::Accepted { request, route, plan }
        }
        other => other,
    };
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
                service: service.clone(),
                region: region.clone(),
                channel: channel.clone(),
                applicant_masked: applicant.clone(),
                applicant_id,
                state: "queued".into(),
                step_index: 0,
                step: Some("intake".into()),
                step_deadline: None,
                service_deadline: None,
                deadlines: json!([]),
                body,
                submitter: msg.sender(ctx).map(str::to_owned),
                traceparent: Some(trace.clone()),
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
                finale: transition::route_for(&ctx.regs, &service, &region, &channel)
                    .map(|route| transition::Finale::of(&route))
                    .unwrap_or_default(),
            };
            let pending = transition::refuse(&mut tx, &head, at, "intake", reason, Some(detail)).await?;
            tx.commit().await?;
            pending
        }
        Examined::Accepted { request, route, plan } => {
            let registered = Accepted { env, msg, request: &request, route: &route, plan: &plan };
            match register(ctx, &registered, body, applicant, submitted_at, received).await? {
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

struct Accepted<'a> {
    env: &'a Envelope,
    msg: &'a Incoming,
    request: &'a Request,
    route: &'a Route<'a>,
    plan: &'a DeadlinePlan,
}

/// Registers an accepted request with its number and queues its first step, in one statement
/// with other deliveries' registrations; `None` if its id was already registered (a republished
/// request).
async fn register(
    ctx: &Ctx,
    r: &Accepted<'_>,
    body: Value,
    applicant: String,
    submitted_at: Option<DateTime<Utc>>,
    received: DateTime<Utc>,
) -> Result<Option<transition::Pending>, Failure> {
    let Accepted { env, msg, request, route, plan } = *r;
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
    let (state, task) = transition::entry(first, env.request_id, 1, Some(&trace));
    let new = NewRequest {
        request_id: env.request_id,
        request_number: Some(number.clone()),
        service: request.service.as_str().to_owned(),
        region: request.region.as_str().to_owned(),
        channel: request.channel.as_str().to_owned(),
        applicant_masked: applicant.clone(),
        applicant_id: Some(applicant_id.digits().to_owned()),
        state: state.into(),
        step_index: 1,
        step: Some(first_name.to_owned()),
        step_deadline: Some(first_deadline),
        service_deadline: Some(plan.service),
        deadlines: json!(deadlines),
        body,
        submitter: msg.sender(ctx).map(str::to_owned),
        traceparent: Some(trace.clone()),
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
        finale: transition::Finale::default(),
    };
    let said = Said { notice: transition::notice(r.route, 0), ..Said::default() };
    let (_, registered) = outcome_message(
        &head,
        Status::Registered,
        Some(first_name),
        said,
        Utc::now(),
        format!("{}:0:registered", env.request_id),
    );
    let messages = std::iter::once(registered).chain(task).collect();
    let registration = Registration { request: new, intake_deadline: plan.steps[0].1, detail, messages };
    let Some(pending) = ctx.registrations.commit(registration).await? else {
        republished(env);
        return Ok(None);
    };
    tracing::info!(request_id = %env.request_id, number = %number, service = %request.service, region = %request.region,
        channel = %request.channel, applicant = %applicant, "registered");
    Ok(Some(pending))
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Duration, Utc};
    use serde_json::{Value, json};

    use super::{Checks, Examined, examine};
    use crate::contract::{Channel, Reason, ServiceCode};
    use crate::regulations::PoolName;
    use crate::signature::keys::Keyring;
    use crate::signature::{SignatureFailure, Signer};
    use crate::systems::Systems;
    use crate::workers::test_support::{
        archive_form, archive_portal_body, bin, body, envelope, iin, licence_form, pki, regs, signed, signed_by, who,
    };
    use qyzmet_demo_pki::DEMO_CENTRE_BIN;

    /// Examines `body` as intake would, with the demo PKI and the demo centre.
    fn examine_with(
        body: &Value,
        signer: &dyn Signer,
        systems: Option<&Systems>,
        submitter: Option<&str>,
        received: DateTime<Utc>,
    ) -> Examined<'static> {
        let centre_bins = [DEMO_CENTRE_BIN.to_owned()];
        let checks = Checks { verifier: &pki().verifier, signer, centre_bins: &centre_bins, systems, submitter };
        examine(regs(), &checks, &envelope(body), received)
    }

    /// Examines `body` received now, with the demo's signing keys and no systems file.
    fn examined(body: &Value) -> Examined<'static> {
        examine_with(body, &pki().keyring, None, None, Utc::now())
    }

    fn refused(e: Examined<'_>) -> (Reason, Value) {
        match e {
            Examined::Refused { reason, detail } => (reason, detail),
            Examined::Accepted { request, .. } => panic!("expected a refusal, {} was accepted", request.request_id),
        }
    }

    /// The refusal `invalid_request` naming `field` with `problem`, in the common wording.
    fn assert_invalid(e: Examined<'_>, field: &str, problem: &str) {
        let (reason, detail) = refused(e);
        assert_eq!((reason.kind.as_str(), reason.code.as_deref()), ("invalid_request", None));
        assert_eq!(
            reason.en,
            format!("The request is refused: it does not meet the established requirements ({field}: {problem}).")
        );
        assert_eq!(detail["field"], field, "{detail}");
        assert_eq!(detail["problem"], problem, "{detail}");
    }

    /// The refusal `unsupported_service` with this explanation.
    fn assert_unsupported(e: Examined<'_>, why: &str) {
        let (reason, detail) = refused(e);
        assert_eq!((reason.kind.as_str(), reason.code.as_deref()), ("unsupported_service", None));
        assert!(reason.ru.contains(why), "{}", reason.ru);
        assert_eq!(detail, json!({ "why": why }));
    }

    /// The regulation's signature refusal `code` of `service`, with its texts, for `failure`.
    fn assert_signature_refusal(e: Examined<'_>, service: ServiceCode, code: &str, failure: SignatureFailure) {
        let def = &regs().service(service).expect("service").refusals[code];
        let (reason, detail) = refused(e);
        assert_eq!(reason.code.as_deref(), Some(code));
        assert_eq!(reason.kind, "signature_not_confirmed");
        assert_eq!((reason.ru.as_str(), reason.kk.as_str()), (def.texts.ru.as_str(), def.texts.kk.as_str()));
        assert_eq!(detail, json!({ "signature": failure.to_string() }));
    }

    fn appointment(channel: &str, applicant: Value) -> Value {
        body("doctor-appointment", "akmola", channel, applicant, who::AKMOLA_PHC, json!({}))
    }

    fn licence(channel: &str, form: Value) -> Value {
        body("medical-licence", "aktobe", channel, bin(who::CLINIC), who::AKTOBE_HEALTH, form)
    }

    #[test]
    fn p11_p46_signed_portal_appointment_is_accepted_with_cumulative_step_deadlines() {
        let b = signed(appointment("portal", iin(who::CITIZEN)));
        let received = Utc::now();
        let Examined::Accepted { request, route, plan } = examine_with(&b, &pki().keyring, None, None, received) else {
            panic!("a properly signed request is accepted");
        };
        assert_eq!(request.applicant.iin.as_deref(), Some(who::CITIZEN));
        assert_eq!(route.channel.channel, Channel::Portal);
        // 2m intake, 10m review (no lookup step on the portal, P-22), result shared with the review.
        let m = Duration::minutes;
        let due = [
            (PoolName::Intake, received + m(2)),
            (PoolName::Review, received + m(12)),
            (PoolName::Result, received + m(12)),
        ];
        assert_eq!(plan.steps, due);
        assert_eq!(plan.service, received + m(12));
    }

    #[test]
    fn p14_provider_request_signed_by_the_providers_employee_is_accepted() {
        let b = signed(appointment("provider", iin(who::CITIZEN)));
        assert!(matches!(examined(&b), Examined::Accepted { .. }));
    }

    #[test]
    fn p14_centre_request_signed_by_an_operator_of_a_listed_centre_is_accepted() {
        let b = signed(licence("centre", licence_form("issue")));
        assert!(matches!(examined(&b), Examined::Accepted { .. }));
    }

    #[test]
    fn p14_centre_request_signed_by_staff_of_a_centre_not_listed_is_refused_signature_not_confirmed_without_a_code() {
        // The provider's own employee is no centre operator.
        let b = signed_by(&format!("staff-{}", who::AKTOBE_HEALTH), licence("centre", licence_form("issue")));
        let (reason, detail) = refused(examined(&b));
        assert_eq!((reason.kind.as_str(), reason.code.as_deref()), ("signature_not_confirmed", None));
        assert_eq!(detail, json!({ "signature": SignatureFailure::IdentifierMismatch.to_string() }));
    }

    #[test]
    fn p7_applicant_iin_with_a_bad_check_digit_is_refused_invalid_request_naming_applicant_iin() {
        let b = signed_by("iin-850401300125", appointment("portal", iin("850401300126")));
        assert_invalid(examined(&b), "applicant.iin", "bad check digit");
    }

    #[test]
    fn p7_licence_without_its_kind_is_refused_invalid_request_naming_form_kind() {
        let b = signed(licence("portal", json!({ "activity": "стоматология" })));
        assert_invalid(examined(&b), "form.kind", "is missing");
    }

    #[test]
    fn p33_licence_kind_outside_the_deadline_table_is_refused_invalid_request_naming_form_kind() {
        let b = signed(licence("portal", licence_form("renewal")));
        assert_invalid(examined(&b), "form.kind", "must be one of duplicate, issue, reissue");
    }

    #[test]
    fn p13_bin_applicant_on_an_iin_only_variant_is_refused_invalid_request_naming_applicant_bin() {
        let b = signed(appointment("portal", bin(who::CLINIC)));
        assert_invalid(
            examined(&b),
            "applicant.bin",
            "doctor-appointment in akmola is provided to applicants identified by IIN only",
        );
    }

    #[test]
    fn unknown_service_code_is_refused_invalid_request_naming_service() {
        let b = signed(body("passport", "akmola", "portal", iin(who::CITIZEN), who::AKMOLA_PHC, json!({})));
        let (reason, detail) = refused(examined(&b));
        assert_eq!((reason.kind.as_str(), reason.code.as_deref()), ("invalid_request", None));
        assert_eq!(detail["field"], "service", "{detail}");
        assert!(detail["problem"].as_str().is_some_and(|p| p.starts_with("unknown code \"passport\"")), "{detail}");
    }

    #[test]
    fn p47_licence_in_akmola_is_refused_unsupported_service() {
        let b = signed(body(
            "medical-licence",
            "akmola",
            "portal",
            bin(who::CLINIC),
            who::AKMOLA_PHC,
            licence_form("issue"),
        ));
        assert_unsupported(examined(&b), "medical-licence has no regulation in akmola");
    }

    #[test]
    fn p1_doctor_appointment_through_a_centre_is_refused_unsupported_service() {
        let b = signed(appointment("centre", iin(who::CITIZEN)));
        assert_unsupported(examined(&b), "doctor-appointment in akmola is not offered through the centre channel");
    }

    #[test]
    fn p12_p13_p16_portal_appointment_signed_by_another_person_is_refused_r2() {
        let b = signed_by("iin-921212500674", appointment("portal", iin(who::CITIZEN)));
        assert_signature_refusal(
            examined(&b),
            ServiceCode::DoctorAppointment,
            "R2",
            SignatureFailure::IdentifierMismatch,
        );
    }

    #[test]
    fn p12_p16_licence_signed_with_an_expired_certificate_is_refused_l3() {
        let b =
            body("medical-licence", "aktobe", "portal", iin(who::CITIZEN), who::AKTOBE_HEALTH, licence_form("issue"));
        let b = signed_by("expired-850401300125", b);
        assert_signature_refusal(examined(&b), ServiceCode::MedicalLicence, "L3", SignatureFailure::Expired);
    }

    #[test]
    fn p12_p16_archive_portal_request_changed_after_signing_is_refused_a6() {
        let mut b = signed(archive_portal_body());
        b["form"]["period"] = json!("1990-2001");
        assert_signature_refusal(examined(&b), ServiceCode::ArchiveCertificate, "A6", SignatureFailure::BadSignature);
    }

    #[test]
    fn p12_p16_archive_request_signed_by_another_providers_employee_is_refused_a2() {
        let b =
            body("archive-certificate", "astana", "provider", iin(who::CITIZEN), who::ASTANA_ARCHIVES, archive_form());
        let b = signed_by(&format!("staff-{}", who::AKMOLA_PHC), b);
        assert_signature_refusal(
            examined(&b),
            ServiceCode::ArchiveCertificate,
            "A2",
            SignatureFailure::IdentifierMismatch,
        );
    }

    #[test]
    fn p14_provider_channel_without_a_regulation_check_refuses_a_bad_signature_with_no_code() {
        let b = signed_by(&format!("staff-{}", who::ASTANA_PHC), appointment("provider", iin(who::CITIZEN)));
        let (reason, detail) = refused(examined(&b));
        assert_eq!((reason.kind.as_str(), reason.code.as_deref()), ("signature_not_confirmed", None));
        assert_eq!(
            reason.en,
            "The request is refused: it does not meet the established requirements (signature: identifier_mismatch)."
        );
        assert_eq!(detail, json!({ "signature": "identifier_mismatch" }));
    }

    #[test]
    fn a_provider_whose_results_cannot_be_signed_is_refused_invalid_request_naming_provider() {
        let b = signed(appointment("portal", iin(who::CITIZEN)));
        assert_invalid(
            examine_with(&b, &Keyring::default(), None, None, Utc::now()),
            "provider",
            "qyzmet holds no result-signing key for this provider (and no default key)",
        );
    }

    #[test]
    fn a_system_submitting_on_another_systems_channel_is_refused_invalid_request_naming_the_channel() {
        let text = "[qyzmet]\nuser = \"qyzmet\"\n\n[[system]]\nuser = \"egov-portal\"\nkind = \"portal\"\n";
        let systems = Systems::parse(text, std::path::Path::new(".")).expect("systems");
        let b = signed(appointment("provider", iin(who::CITIZEN)));
        let (reason, detail) =
            refused(examine_with(&b, &pki().keyring, Some(&systems), Some("egov-portal"), Utc::now()));
        assert_eq!(reason.kind, "invalid_request");
        assert_eq!(detail["field"], "channel", "{detail}");
        assert_eq!(detail["submitter"], "egov-portal", "{detail}");
    }
}
