//! Registry-lookup pool: ГБД ФЛ / ГБД ЮЛ by IIN or BIN (P-18…P-20), ЕНИС for a notarised power
//! of attorney on the centre channel (P-21), and the attached-population register (P-30).
//!
//! A missing record refuses with the step's `not_found_refusal` (R4, L6, L8); a missing or
//! unusable power of attorney uses the `…/power_of_attorney_not_found` variant of that code when
//! the regulation data defines one. The attachment lookup only gathers the fact; the review
//! rules decide on it. Findings are kept in the request's facts for later steps.

use serde_json::{Map, Value, json};

use crate::contract::Request;
use crate::ident::Identifier;
use crate::pipeline::{StepError, StepInput, StepOutcome};
use crate::registry::Registry;
use crate::regulations::{Lookup, code_of};

fn refuse(input: &StepInput<'_>, poa: bool, detail: &str) -> StepOutcome {
    let base = input.step.not_found_refusal.clone().unwrap_or_default();
    let special = format!("{}/power_of_attorney_not_found", code_of(&base));
    let refusal = if poa && input.route.refusal(&special).is_some() { special } else { base };
    StepOutcome::Refuse { refusal, note: None, detail: Some(detail.to_owned()) }
}

/// Runs the lookups of this step.
pub async fn step(input: &StepInput<'_>, registry: &dyn Registry) -> Result<StepOutcome, StepError> {
    let req: &Request = input.request;
    let mut facts = Map::new();
    for lookup in &input.step.lookups {
        match (lookup, req.applicant_id()) {
            (Lookup::Person, Identifier::Iin(iin)) | (Lookup::PersonOrEntity, Identifier::Iin(iin)) => {
                match registry.person(&iin).await? {
                    Some(p) => {
                        facts.insert("applicant_name".into(), json!(p.full_name));
                    }
                    None => return Ok(refuse(input, false, "applicant not found in ГБД ФЛ")),
                }
            }
            (Lookup::PersonOrEntity, Identifier::Bin(bin)) => match registry.entity(&bin).await? {
                Some(e) => {
                    facts.insert("applicant_name".into(), json!(e.name));
                }
                None => return Ok(refuse(input, false, "applicant not found in ГБД ЮЛ")),
            },
            (Lookup::Person, Identifier::Bin(_)) => {
                // Intake admits only the identifier kinds the variant allows; a BIN here means
                // the data allows BIN but looks up ГБД ФЛ only.
                return Ok(refuse(input, false, "ГБД ФЛ cannot be searched by BIN"));
            }
            (Lookup::PowerOfAttorney, applicant) => {
                let Some(rep) = &req.representative else {
                    continue;
                };
                // P-8: only a notarised power of attorney carries a number to check in ЕНИС.
                let Some(number) = &rep.power_of_attorney else {
                    continue;
                };
                let Some(poa) = registry.power_of_attorney(number).await? else {
                    return Ok(refuse(input, true, "power of attorney not found in ЕНИС"));
                };
                let today = input.now.date_naive();
                let problem = if poa.revoked {
                    Some("power of attorney revoked")
                } else if poa.valid_until.is_some_and(|d| d < today) {
                    Some("power of attorney expired")
                } else if poa.principal != applicant.digits() {
                    Some("power of attorney was given by someone else")
                } else if poa.representative_iin != rep.iin {
                    Some("power of attorney names another representative")
                } else {
                    None
                };
                if let Some(p) = problem {
                    return Ok(refuse(input, true, p));
                }
                facts.insert("power_of_attorney".into(), json!(poa.number));
            }
            (Lookup::Attachment, Identifier::Iin(iin)) => {
                let found = registry.attachment(&iin).await?;
                facts.insert(
                    "attachment".into(),
                    found.map(|a| json!({ "provider_bin": a.provider_bin, "since": a.since })).unwrap_or(Value::Null),
                );
            }
            (Lookup::Attachment, Identifier::Bin(_)) => {
                facts.insert("attachment".into(), Value::Null);
            }
        }
    }
    Ok(StepOutcome::Pass { facts: Some(Value::Object(facts)) })
}
