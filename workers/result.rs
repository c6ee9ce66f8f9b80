//! Result-generation pool (P-36…P-39): builds the service's result document from the request,
//! the registry findings and the regulation data. The pipeline numbers it (per prefix and year,
//! e.g. licence numbers), signs it on behalf of the provider and publishes it as `completed`.
//!
//! The pool also reads what follows a result: the applicant's answers to the quality and
//! accessibility questionnaire (P-51) on `qyzmet.questionnaire`. One answer set per request is
//! accepted, from the system that submitted the request, after the final outcome and within
//! [`QUESTIONNAIRE_WINDOW_DAYS`]; every other set is recorded with why it was ignored.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use crate::contract::QuestionnaireAnswer;
use crate::ident::{self, Identifier};
use futures_util::future::BoxFuture;

use crate::pipeline::runtime::{self, Disposition, Handler, Incoming};
use crate::pipeline::{Ctx, DocumentDraft, Failure, Step, StepError, StepInput, StepOutcome};
use crate::store::{QuestionnaireRow, QuestionnaireSubject, Store};

/// How many days after its final outcome an applicant's answers still count (the sources say
/// only "after the service"; a month keeps the figures about that service).
pub const QUESTIONNAIRE_WINDOW_DAYS: i64 = 30;

/// Why an answer set is ignored, if it is; `None` accepts it.
pub fn judge(subject: Option<&QuestionnaireSubject>, sender: Option<&str>, now: DateTime<Utc>) -> Option<&'static str> {
    let Some(s) = subject else { return Some("unknown_request") };
    let Some(finished) = s.finished_at else { return Some("not_finished") };
    if s.answered {
        return Some("already_answered");
    }
    if let Some(submitter) = s.submitter.as_deref()
        && sender != Some(submitter)
    {
        return Some("not_the_submitting_system");
    }
    if now - finished > chrono::Duration::days(QUESTIONNAIRE_WINDOW_DAYS) {
        return Some("late");
    }
    None
}

/// Handles questionnaire answers.
pub struct QuestionnaireHandler;

impl Handler for QuestionnaireHandler {
    fn handle<'a>(&'a self, ctx: &'a Ctx, msg: &'a Incoming) -> BoxFuture<'a, Disposition> {
        Box::pin(async move {
            match runtime::read(ctx, msg, QuestionnaireAnswer::from_envelope, "invalid_questionnaire") {
                Ok((_, a)) => runtime::settle(record(ctx, &a, msg.sender(ctx)).await, a.request_id, "questionnaire"),
                Err(disposition) => disposition,
            }
        })
    }
}

async fn record(ctx: &Ctx, a: &QuestionnaireAnswer, sender: Option<&str>) -> Result<(), Failure> {
    let mut tx = ctx.store.begin().await?;
    Store::lock_request_id(&mut tx, a.request_id).await?;
    let subject = Store::questionnaire_subject(&mut tx, a.request_id).await?;
    let rejection = judge(subject.as_ref(), sender, Utc::now());
    let (service, region, channel) =
        subject.as_ref().map(|s| (s.service.as_str(), s.region.as_str(), s.channel.as_str())).unwrap_or(("", "", ""));
    let row = QuestionnaireRow {
        answer_id: &a.answer_id,
        request_id: a.request_id,
        service,
        region,
        channel,
        quality: a.quality,
        information: a.information,
        answered_at: a.answered_at.with_timezone(&Utc),
        submitter: sender,
        rejection,
    };
    if Store::insert_questionnaire(&mut tx, &row).await? {
        tracing::info!(request_id = %a.request_id, answer_id = %a.answer_id, accepted = rejection.is_none(), ?rejection, "questionnaire answers recorded");
    } else {
        tracing::info!(request_id = %a.request_id, answer_id = %a.answer_id, "questionnaire answers repeated; nothing to do");
    }
    tx.commit().await?;
    Ok(())
}

/// The result pool's step (numbering and signing follow in the step loop, for every result).
pub struct ResultStep;

impl Step for ResultStep {
    fn run<'a>(&'a self, _ctx: &'a Ctx, input: &'a StepInput<'a>) -> BoxFuture<'a, Result<StepOutcome, StepError>> {
        Box::pin(async move { Ok(step(input)) })
    }
}

/// Drafts the result document.
pub fn step(input: &StepInput<'_>) -> StepOutcome {
    let req = input.request;
    let kind = input.step.document.clone().unwrap_or_default();
    let def = input.route.service.documents.get(&kind);
    let mut content = Map::new();
    content.insert("title".into(), def.map(|d| json!(d.title)).unwrap_or(Value::Null));
    content.insert("request_number".into(), json!(input.row.request_number));
    content.insert("service".into(), json!(req.service));
    content.insert("region".into(), json!(req.region));
    content.insert("channel".into(), json!(req.channel));
    content.insert("provider".into(), json!(req.provider));
    let applicant = match req.applicant_id() {
        Identifier::Iin(iin) => json!({ "iin": iin }),
        Identifier::Bin(bin) => json!({ "bin": bin }),
    };
    content.insert("applicant".into(), applicant);
    if let Some(name) = input.facts.get("applicant_name") {
        content.insert("applicant_name".into(), name.clone());
    }
    if let Some(rep) = &req.representative {
        content.insert("representative".into(), json!({ "iin": rep.iin, "power_of_attorney": rep.power_of_attorney }));
    }
    content.insert("particulars".into(), Value::Object(req.form.clone()));
    content.insert("delivery".into(), def.map(|d| json!(d.delivery)).unwrap_or(Value::Null));
    tracing::debug!(request_id = %req.request_id, applicant = %ident::mask(req.applicant_id().digits()), %kind, "document drafted");
    StepOutcome::Complete {
        document: DocumentDraft {
            kind,
            number_prefix: def.map(|d| d.number_prefix.clone()).unwrap_or_else(|| "DOC".into()),
            content: Value::Object(content),
        },
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::step;
    use crate::pipeline::{DocumentDraft, StepOutcome};
    use crate::regulations::PoolName;
    use crate::workers::test_support::{
        CITIZEN_NAME, CLINIC_NAME, Case, POA, archive_form, archive_portal_body, bin, body, iin, licence_form,
        represented, who,
    };

    fn draft(mut case: Case) -> DocumentDraft {
        match step(&case.input(PoolName::Result)) {
            StepOutcome::Complete { document } => document,
            other => panic!("expected a completed document, got {other:?}"),
        }
    }

    /// The delivery text of a document kind, as the regulation data words it.
    fn delivery(case: &Case, kind: &str) -> Value {
        json!(case.route.service.documents.get(kind).expect("a document the service defines").delivery)
    }

    #[test]
    fn p36_portal_appointment_completes_with_the_certificate_and_its_content() {
        let case = Case::new(body(
            "doctor-appointment",
            "akmola",
            "portal",
            iin(who::CITIZEN),
            who::AKMOLA_PHC,
            json!({ "doctor": "терапевт" }),
        ))
        .facts(json!({ "applicant_name": CITIZEN_NAME, "attachment": null }));
        let expected = json!({
            "title": {
                "ru": "Справка о записи на прием к врачу",
                "kk": "Дәрігердің қабылдауына жазылу туралы анықтама",
                "en": "Certificate of a doctor's appointment",
            },
            "request_number": "S1-XXX-20261123-0000001",
            "service": "doctor-appointment",
            "region": "akmola",
            "channel": "portal",
            "provider": who::AKMOLA_PHC,
            "applicant": { "iin": who::CITIZEN },
            "applicant_name": CITIZEN_NAME,
            "particulars": { "doctor": "терапевт" },
            "delivery": delivery(&case, "appointment-certificate"),
        });
        let doc = draft(case);
        assert_eq!(
            doc,
            DocumentDraft { kind: "appointment-certificate".into(), number_prefix: "APT".into(), content: expected }
        );
    }

    #[test]
    fn p22_p36_without_a_registry_finding_the_document_names_no_applicant() {
        let case =
            Case::new(body("doctor-appointment", "akmola", "portal", iin(who::CITIZEN), who::AKMOLA_PHC, json!({})));
        let doc = draft(case);
        assert_eq!(doc.content.get("applicant_name"), None, "{}", doc.content);
        assert_eq!(doc.content["applicant"], json!({ "iin": who::CITIZEN }));
    }

    #[test]
    fn p37_provider_appointment_records_the_journal_entry_with_the_apj_prefix() {
        let case =
            Case::new(body("doctor-appointment", "akmola", "provider", iin(who::CITIZEN), who::AKMOLA_PHC, json!({})));
        let doc = draft(case);
        assert_eq!((doc.kind.as_str(), doc.number_prefix.as_str()), ("appointment-journal-entry", "APJ"));
        assert_eq!(doc.content["title"]["ru"], "Запись в журнале предварительной записи на прием к врачу");
    }

    #[test]
    fn p37_provider_attachment_issues_the_coupon_with_the_atc_prefix() {
        let case =
            Case::new(body("phc-attachment", "akmola", "provider", iin(who::CITIZEN), who::AKMOLA_PHC, json!({})));
        let doc = draft(case);
        assert_eq!((doc.kind.as_str(), doc.number_prefix.as_str()), ("attachment-coupon", "ATC"));
    }

    #[test]
    fn p38_licence_via_a_representative_names_the_entity_and_the_representative_with_the_lic_prefix() {
        let b = body(
            "medical-licence",
            "aktobe",
            "centre",
            bin(who::CLINIC),
            who::AKTOBE_HEALTH,
            licence_form("duplicate"),
        );
        let case = Case::new(represented(b, who::REPRESENTATIVE, Some(POA)))
            .facts(json!({ "applicant_name": CLINIC_NAME, "power_of_attorney": POA }));
        let delivery = delivery(&case, "medical-licence");
        let doc = draft(case);
        assert_eq!((doc.kind.as_str(), doc.number_prefix.as_str()), ("medical-licence", "LIC"));
        assert_eq!(doc.content["applicant"], json!({ "bin": who::CLINIC }));
        assert_eq!(doc.content["applicant_name"], json!(CLINIC_NAME));
        assert_eq!(doc.content["representative"], json!({ "iin": who::REPRESENTATIVE, "power_of_attorney": POA }));
        assert_eq!(doc.content["particulars"], licence_form("duplicate"));
        assert_eq!(doc.content["channel"], "centre");
        assert_eq!(doc.content["delivery"], delivery);
    }

    #[test]
    fn p39_archive_request_completes_with_the_archive_certificate_and_the_arc_prefix() {
        let case = Case::new(archive_portal_body());
        let doc = draft(case);
        assert_eq!((doc.kind.as_str(), doc.number_prefix.as_str()), ("archive-certificate", "ARC"));
        assert_eq!(doc.content["provider"], who::ASTANA_ARCHIVES);
        assert_eq!(doc.content["particulars"], archive_form());
    }
}
