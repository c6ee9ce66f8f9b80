//! Result-generation pool (P-36…P-39): builds the service's result document from the request,
//! the registry findings and the regulation data. The pipeline numbers it (per prefix and year,
//! e.g. licence numbers), signs it on behalf of the provider and publishes it as `completed`.

use serde_json::{Map, Value, json};

use crate::ident::{self, Identifier};
use crate::pipeline::{DocumentDraft, StepInput, StepOutcome};

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
