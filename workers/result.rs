//! Result-generation pool (P-36…P-39): builds the service's result document from the request,
//! the registry findings and the regulation data. The pipeline numbers it (per prefix and year,
//! e.g. licence numbers), signs it on behalf of the provider and publishes it as `completed`.

use serde_json::{Map, Value, json};

use crate::ident::{self, Identifier};
use futures_util::future::BoxFuture;

use crate::pipeline::{Ctx, DocumentDraft, Step, StepError, StepInput, StepOutcome};

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
