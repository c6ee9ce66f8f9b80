//! Registry-lookup pool: ГБД ФЛ / ГБД ЮЛ by IIN or BIN (P-18…P-20), ЕНИС for a notarised power
//! of attorney on the centre channel (P-21). Portal requests have no lookup step (P-22); the
//! attached-population register (P-30) is read by the provider's review, where the sources put
//! that check.
//!
//! A missing record refuses with the step's `not_found_refusal` (R4, L6, L8); a missing or
//! unusable power of attorney uses the `…/power_of_attorney_not_found` variant of that code when
//! the regulation data defines one. Findings are kept in the request's facts for later steps.

use serde_json::{Map, Value, json};

use crate::contract::Request;
use crate::ident::Identifier;
use futures_util::future::BoxFuture;

use crate::pipeline::{Ctx, Step, StepError, StepInput, StepOutcome};
use crate::registry::Registry;
use crate::regulations::{Lookup, code_of};

fn refuse(input: &StepInput<'_>, poa: bool, detail: &str) -> StepOutcome {
    let base = input.step.not_found_refusal.clone().unwrap_or_default();
    let special = format!("{}/power_of_attorney_not_found", code_of(&base));
    let refusal = if poa && input.route.refusal(&special).is_some() { special } else { base };
    StepOutcome::Refuse { refusal, note: None, detail: Some(detail.to_owned()) }
}

/// The registry pool's step.
pub struct RegistryStep;

impl Step for RegistryStep {
    fn run<'a>(&'a self, ctx: &'a Ctx, input: &'a StepInput<'a>) -> BoxFuture<'a, Result<StepOutcome, StepError>> {
        Box::pin(step(input, &*ctx.registry))
    }
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
                // A power of attorney's last day is a day in Kazakhstan, not in UTC.
                let today = crate::contract::to_local(input.now).date_naive();
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
        }
    }
    Ok(StepOutcome::Pass { facts: Some(Value::Object(facts)), detail: None })
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::step;
    use crate::pipeline::{Class, StepOutcome};
    use crate::regulations::PoolName;
    use crate::workers::test_support::{
        CITIZEN_NAME, CLINIC_NAME, Case, POA, REVOKED_POA, add_power, bin, body, date, iin, licence_form, power,
        registry, represented, who,
    };

    async fn run(mut case: Case, registry: &crate::registry::MemoryRegistry) -> StepOutcome {
        step(&case.input(PoolName::Registry), registry).await.expect("the registry answers")
    }

    fn pass(facts: Value) -> StepOutcome {
        StepOutcome::Pass { facts: Some(facts), detail: None }
    }

    fn refuse(refusal: &str, detail: &str) -> StepOutcome {
        StepOutcome::Refuse { refusal: refusal.into(), note: None, detail: Some(detail.into()) }
    }

    /// S1 Akmola, provider channel: ГБД ФЛ.
    fn appointment_at_provider(applicant: &str) -> Case {
        Case::new(body("doctor-appointment", "akmola", "provider", iin(applicant), who::AKMOLA_PHC, json!({})))
    }

    /// S1 Akmola, portal: the attached-population register only.
    /// S1 Astana, provider channel: ГБД ФЛ or ГБД ЮЛ.
    fn astana_appointment_at_provider(applicant: Value) -> Case {
        Case::new(body("doctor-appointment", "astana", "provider", applicant, who::ASTANA_PHC, json!({})))
    }

    /// S4 Aktobe, centre: ГБД ФЛ/ГБД ЮЛ and ЕНИС, the clinic acting through its representative.
    fn licence_at_centre(applicant: &str, representative: &str, number: Option<&str>) -> Case {
        let b = body("medical-licence", "aktobe", "centre", bin(applicant), who::AKTOBE_HEALTH, licence_form("issue"));
        Case::new(represented(b, representative, number))
    }

    const POA_REFUSAL: &str = "L8/power_of_attorney_not_found";

    /// The demo registries with [`POA`] (the clinic to its representative) valid until `day`.
    fn registry_with_poa_valid_until(day: &str) -> crate::registry::MemoryRegistry {
        let reg = registry();
        add_power(
            &reg,
            crate::store::PowerOfAttorneyRecord {
                valid_until: Some(date(day)),
                ..power(POA, who::CLINIC, who::REPRESENTATIVE)
            },
        );
        reg
    }

    #[tokio::test]
    async fn p18_person_found_in_gbd_fl_passes_with_the_applicant_name() {
        let out = run(appointment_at_provider(who::CITIZEN), &registry()).await;
        assert_eq!(out, pass(json!({ "applicant_name": CITIZEN_NAME })));
    }

    #[tokio::test]
    async fn p18_person_missing_from_gbd_fl_refuses_r4() {
        let out = run(appointment_at_provider(who::UNKNOWN_PERSON), &registry()).await;
        assert_eq!(out, refuse("R4", "applicant not found in ГБД ФЛ"));
    }

    #[tokio::test]
    async fn p18_p30_an_unattached_person_found_in_gbd_fl_passes_the_lookup_for_the_review_to_decide() {
        let out = run(appointment_at_provider(who::UNATTACHED), &registry()).await;
        assert_eq!(out, pass(json!({ "applicant_name": "Ахметов Тимур Даулетович" })));
    }

    #[tokio::test]
    async fn p19_entity_found_in_gbd_yul_passes_with_its_registered_name() {
        let out = run(astana_appointment_at_provider(bin(who::CLINIC)), &registry()).await;
        assert_eq!(out, pass(json!({ "applicant_name": CLINIC_NAME })));
    }

    #[tokio::test]
    async fn p19_entity_missing_from_gbd_yul_refuses_r4_person_or_entity() {
        let out = run(astana_appointment_at_provider(bin(who::UNKNOWN_ENTITY)), &registry()).await;
        assert_eq!(out, refuse("R4/person_or_entity", "applicant not found in ГБД ЮЛ"));
    }

    #[tokio::test]
    async fn p19_person_missing_on_a_person_or_entity_lookup_refuses_r4_person_or_entity() {
        let out = run(astana_appointment_at_provider(iin(who::UNKNOWN_PERSON)), &registry()).await;
        assert_eq!(out, refuse("R4/person_or_entity", "applicant not found in ГБД ФЛ"));
    }

    #[tokio::test]
    async fn p20_licence_applicant_missing_from_gbd_yul_at_the_provider_refuses_l6() {
        let b = body(
            "medical-licence",
            "aktobe",
            "provider",
            bin(who::UNKNOWN_ENTITY),
            who::AKTOBE_HEALTH,
            licence_form("issue"),
        );
        let out = run(Case::new(b), &registry()).await;
        assert_eq!(out, refuse("L6", "applicant not found in ГБД ЮЛ"));
    }

    #[tokio::test]
    async fn p21_centre_request_with_a_valid_power_of_attorney_passes_with_its_number() {
        let out = run(licence_at_centre(who::CLINIC, who::REPRESENTATIVE, Some(POA)), &registry()).await;
        assert_eq!(out, pass(json!({ "applicant_name": CLINIC_NAME, "power_of_attorney": POA })));
    }

    #[tokio::test]
    async fn p21_power_of_attorney_missing_from_enis_refuses_l8_power_of_attorney_not_found() {
        let case = licence_at_centre(who::CLINIC, who::REPRESENTATIVE, Some("ENIS-2026-404404"));
        assert_eq!(run(case, &registry()).await, refuse(POA_REFUSAL, "power of attorney not found in ЕНИС"));
    }

    #[tokio::test]
    async fn p21_revoked_power_of_attorney_refuses_l8_power_of_attorney_not_found() {
        let case = licence_at_centre(who::CLINIC, who::REPRESENTATIVE, Some(REVOKED_POA));
        assert_eq!(run(case, &registry()).await, refuse(POA_REFUSAL, "power of attorney revoked"));
    }

    #[tokio::test]
    async fn p21_power_of_attorney_that_expired_the_day_before_refuses_l8_power_of_attorney_not_found() {
        let reg = registry_with_poa_valid_until("2026-11-22");
        let case = licence_at_centre(who::CLINIC, who::REPRESENTATIVE, Some(POA));
        assert_eq!(run(case, &reg).await, refuse(POA_REFUSAL, "power of attorney expired"));
    }

    #[tokio::test]
    async fn p21_power_of_attorney_is_still_valid_on_its_last_day() {
        let reg = registry_with_poa_valid_until("2026-11-23");
        let case = licence_at_centre(who::CLINIC, who::REPRESENTATIVE, Some(POA));
        assert_eq!(run(case, &reg).await, pass(json!({ "applicant_name": CLINIC_NAME, "power_of_attorney": POA })));
    }

    /// 23 November 02:00 in Almaty is still 22 November in UTC: a power of attorney whose last
    /// day was 22 November has expired locally.
    #[tokio::test]
    async fn p21_power_of_attorney_expiry_is_judged_by_the_almaty_date() {
        let reg = registry_with_poa_valid_until("2026-11-22");
        let case = licence_at_centre(who::CLINIC, who::REPRESENTATIVE, Some(POA)).now("2026-11-23T02:00:00+05:00");
        assert_eq!(run(case, &reg).await, refuse(POA_REFUSAL, "power of attorney expired"));
    }

    #[tokio::test]
    async fn p21_power_of_attorney_given_by_another_principal_refuses_l8_power_of_attorney_not_found() {
        let reg = registry();
        add_power(&reg, power(POA, who::AKMOLA_PHC, who::REPRESENTATIVE));
        let case = licence_at_centre(who::CLINIC, who::REPRESENTATIVE, Some(POA));
        assert_eq!(run(case, &reg).await, refuse(POA_REFUSAL, "power of attorney was given by someone else"));
    }

    #[tokio::test]
    async fn p21_power_of_attorney_naming_another_representative_refuses_l8_power_of_attorney_not_found() {
        let case = licence_at_centre(who::CLINIC, who::OTHER_PERSON, Some(POA));
        assert_eq!(run(case, &registry()).await, refuse(POA_REFUSAL, "power of attorney names another representative"));
    }

    #[tokio::test]
    async fn p21_recipient_missing_at_the_centre_refuses_plain_l8_even_with_a_valid_power_of_attorney() {
        let reg = registry();
        add_power(&reg, power(POA, who::UNKNOWN_ENTITY, who::REPRESENTATIVE));
        let case = licence_at_centre(who::UNKNOWN_ENTITY, who::REPRESENTATIVE, Some(POA));
        assert_eq!(run(case, &reg).await, refuse("L8", "applicant not found in ГБД ЮЛ"));
    }

    #[tokio::test]
    async fn p8_p21_representative_without_a_notarised_power_of_attorney_is_not_checked_in_enis() {
        let case = licence_at_centre(who::CLINIC, who::OTHER_PERSON, None);
        assert_eq!(run(case, &registry()).await, pass(json!({ "applicant_name": CLINIC_NAME })));
    }

    #[tokio::test]
    async fn p21_centre_request_without_a_representative_passes_on_the_recipient_alone() {
        let b =
            body("medical-licence", "aktobe", "centre", bin(who::CLINIC), who::AKTOBE_HEALTH, licence_form("issue"));
        assert_eq!(run(Case::new(b), &registry()).await, pass(json!({ "applicant_name": CLINIC_NAME })));
    }

    #[tokio::test]
    async fn an_unreachable_registry_is_a_transient_failure_not_a_refusal() {
        let reg = registry();
        reg.down.store(true, std::sync::atomic::Ordering::SeqCst);
        let mut case = appointment_at_provider(who::CITIZEN);
        let err = step(&case.input(PoolName::Registry), &reg).await.expect_err("the registry is down");
        assert_eq!(err.class(), Class::Transient, "{err}");
    }
}
