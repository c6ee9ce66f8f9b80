//! Happy paths and the refusals of §13.11 the pipeline owns, per service and channel.

use serde_json::json;

use qyzmet::contract::{Outcome, Status};

use crate::common::*;

fn assert_completed(o: &Outcome, kind: &str) {
    assert_eq!(o.status, Status::Completed, "{o:#?}");
    let doc = o.document.as_ref().expect("a completed outcome carries its document");
    assert_eq!(doc["kind"], json!(kind), "{doc:#}");
    assert!(doc["number"].as_str().is_some_and(|n| !n.is_empty()), "document number: {doc:#}");
    assert!(o.request_number.is_some(), "request number");
    assert!(o.deadline.is_some(), "service deadline (P-41)");
    assert!(o.reason.is_none());
}

fn assert_refused(o: &Outcome, code: Option<&str>, kind: &str, step: &str) {
    assert_eq!(o.status, Status::Refused, "{o:#?}");
    let r = o.reason.as_ref().expect("a refusal carries its reason");
    assert_eq!(r.code.as_deref(), code, "{r:#?}");
    assert_eq!(r.kind, kind, "{r:#?}");
    assert_eq!(o.step.as_deref(), Some(step), "{o:#?}");
    for text in [&r.ru, &r.kk, &r.en] {
        assert!(!text.trim().is_empty(), "texts in three languages (P-50): {r:#?}");
    }
    assert!(o.document.is_none());
}

/// Publishes a request and answers payment and review as staff would, until the final outcome.
async fn drive(env: &TestEnv, req: &serde_json::Value, verdict: &str) -> Outcome {
    let id = id_of(req);
    env.publish_request(req).await;
    let service = req["service"].as_str().unwrap_or_default().to_owned();
    if req["service"] == "medical-licence" && req["channel"] == "portal" {
        env.wait_step(id, "payment").await;
        env.publish_payment(&payment(id, &format!("PSHEP-{id}"))).await;
    }
    if matches!(service.as_str(), "medical-licence" | "archive-certificate") {
        env.wait_step(id, "review").await;
        env.publish_decision(&service, &decision(id, verdict)).await;
    }
    env.final_outcome(id).await
}

#[tokio::test]
async fn p36_p37_s1_s2_s3_every_region_and_channel_completes_with_its_document() {
    let env = TestEnv::new().await;
    let app = env.start_all().await;
    let cases = [
        ("doctor-appointment", "akmola", "portal", who::CITIZEN, who::AKMOLA_PHC, "appointment-certificate"),
        ("doctor-appointment", "akmola", "provider", who::CITIZEN, who::AKMOLA_PHC, "appointment-journal-entry"),
        ("doctor-appointment", "astana", "portal", who::CITIZEN_ASTANA, who::ASTANA_PHC, "appointment-certificate"),
        ("doctor-appointment", "astana", "provider", who::CITIZEN_ASTANA, who::ASTANA_PHC, "appointment-journal-entry"),
        ("phc-attachment", "akmola", "portal", who::UNATTACHED, who::AKMOLA_PHC, "attachment-certificate"),
        ("phc-attachment", "akmola", "provider", who::UNATTACHED, who::AKMOLA_PHC, "attachment-coupon"),
        ("phc-attachment", "aktobe", "portal", who::UNATTACHED, who::AKMOLA_PHC, "attachment-certificate"),
        ("phc-attachment", "aktobe", "provider", who::UNATTACHED, who::AKMOLA_PHC, "attachment-coupon"),
        ("phc-attachment", "astana", "portal", who::UNATTACHED, who::ASTANA_PHC, "attachment-certificate"),
        ("phc-attachment", "astana", "provider", who::UNATTACHED, who::ASTANA_PHC, "attachment-coupon"),
        ("home-doctor-call", "akmola", "portal", who::CITIZEN, who::AKMOLA_PHC, "home-call-certificate"),
        ("home-doctor-call", "akmola", "provider", who::CITIZEN, who::AKMOLA_PHC, "home-call-journal-entry"),
        ("home-doctor-call", "astana", "portal", who::CITIZEN_ASTANA, who::ASTANA_PHC, "home-call-certificate"),
        ("home-doctor-call", "astana", "provider", who::CITIZEN_ASTANA, who::ASTANA_PHC, "home-call-journal-entry"),
    ];
    let reqs: Vec<_> = cases
        .iter()
        .map(|(s, r, c, iin, p, _)| request(s, r, c, json!({ "iin": iin }), p, json!({ "note": "demo" })))
        .collect();
    for r in &reqs {
        env.publish_request(r).await;
    }
    for (r, case) in reqs.iter().zip(cases.iter()) {
        let o = env.final_outcome(id_of(r)).await;
        assert_completed(&o, case.5);
        assert_eq!(env.outcomes_of(id_of(r)).await.iter().filter(|o| o.status.is_final()).count(), 1, "{case:?}");
    }
    app.shutdown(std::time::Duration::from_secs(5)).await;
    env.cleanup().await;
}

#[tokio::test]
async fn p33_p38_s4_licence_issue_reissue_duplicate_on_every_channel() {
    let env = TestEnv::new().await;
    let app = env.start_all().await;
    for (channel, kind) in [("portal", "issue"), ("provider", "reissue"), ("centre", "duplicate")] {
        let mut req = request(
            "medical-licence",
            "aktobe",
            channel,
            json!({ "bin": who::CLINIC }),
            who::AKTOBE_HEALTH,
            json!({ "kind": kind, "activity": "первичная медико-санитарная помощь" }),
        );
        if channel == "centre" {
            req["representative"] = json!({ "iin": who::REPRESENTATIVE, "power_of_attorney": "ENIS-2026-000417" });
        }
        let o = drive(&env, &req, "approve").await;
        assert_completed(&o, "medical-licence");
        let number = o.document.as_ref().and_then(|d| d["number"].as_str()).unwrap_or_default().to_owned();
        assert!(number.starts_with("LIC-"), "licence number {number}");
        // P-33: the service deadline follows the licence kind (15/10/2 working days).
        let registered = env
            .outcomes_of(id_of(&req))
            .await
            .into_iter()
            .find(|o| o.status == Status::Registered)
            .expect("registered");
        let days = (o.deadline.expect("deadline") - registered.at).num_days();
        let expected = match kind {
            "issue" => 19..=25,
            "reissue" => 12..=18,
            _ => 1..=5,
        };
        assert!(expected.contains(&days), "{kind}: deadline {days} days ahead");
    }
    app.shutdown(std::time::Duration::from_secs(5)).await;
    env.cleanup().await;
}

#[tokio::test]
async fn p39_s5_archive_certificate_on_every_channel() {
    let env = TestEnv::new().await;
    let app = env.start_all().await;
    for channel in ["provider", "centre", "portal"] {
        let req = request(
            "archive-certificate",
            "astana",
            channel,
            json!({ "iin": who::CITIZEN_ASTANA }),
            who::ASTANA_ARCHIVES,
            json!({ "certificate_type": "трудовой стаж", "period": "1995-2001" }),
        );
        let o = drive(&env, &req, "approve").await;
        assert_completed(&o, "archive-certificate");
    }
    app.shutdown(std::time::Duration::from_secs(5)).await;
    env.cleanup().await;
}

#[tokio::test]
async fn p30_p29_p22_only_the_attachment_precondition_refuses_r3_r5_and_a_portal_request_has_no_lookup_step() {
    let env = TestEnv::new().await;
    let app = env.start_all().await;
    // S1 Akmola portal, citizen attached elsewhere -> R3 not_attached (P-30).
    let a = request(
        "doctor-appointment",
        "akmola",
        "portal",
        json!({ "iin": who::UNATTACHED }),
        who::AKMOLA_PHC,
        json!({}),
    );
    // S3 Akmola provider channel, same -> R5 not_attached.
    let b = request(
        "home-doctor-call",
        "akmola",
        "provider",
        json!({ "iin": who::UNATTACHED }),
        who::AKMOLA_PHC,
        json!({}),
    );
    // S2 Astana portal naming a provider missing from ГБД ЮЛ: no source makes that a ground
    // (P-22, D27), so nothing refuses it.
    let c = request(
        "phc-attachment",
        "astana",
        "portal",
        json!({ "iin": who::UNATTACHED }),
        who::UNREGISTERED_PROVIDER,
        json!({}),
    );
    // S2 Akmola provider channel, the same.
    let d = request(
        "phc-attachment",
        "akmola",
        "provider",
        json!({ "iin": who::UNATTACHED }),
        who::UNREGISTERED_PROVIDER,
        json!({}),
    );
    for r in [&a, &b, &c, &d] {
        env.publish_request(r).await;
    }
    assert_refused(&env.final_outcome(id_of(&a)).await, Some("R3"), "not_attached", "review");
    assert_refused(&env.final_outcome(id_of(&b)).await, Some("R5"), "not_attached", "review");
    assert_eq!(env.final_outcome(id_of(&c)).await.status, Status::Completed);
    assert_eq!(env.final_outcome(id_of(&d)).await.status, Status::Completed);
    // P-22: the portal request went from intake straight to the provider's check.
    let steps: Vec<String> =
        env.store.history_of(id_of(&a)).await.expect("history").into_iter().map(|h| h.step).collect();
    assert!(!steps.iter().any(|s| s == "registry"), "no lookup step on the portal: {steps:?}");
    assert!(steps.iter().any(|s| s == "review"), "{steps:?}");
    app.shutdown(std::time::Duration::from_secs(5)).await;
    env.cleanup().await;
}

#[tokio::test]
async fn p18_p20_p21_registry_refusals_r4_l6_l8() {
    let env = TestEnv::new().await;
    let app = env.start_all().await;
    let r4 = request(
        "doctor-appointment",
        "akmola",
        "provider",
        json!({ "iin": who::UNKNOWN_PERSON }),
        who::AKMOLA_PHC,
        json!({}),
    );
    let form = json!({ "kind": "issue", "activity": "стоматология" });
    let l6 = request(
        "medical-licence",
        "aktobe",
        "provider",
        json!({ "bin": who::UNKNOWN_ENTITY }),
        who::AKTOBE_HEALTH,
        form.clone(),
    );
    let l8 = request(
        "medical-licence",
        "aktobe",
        "centre",
        json!({ "bin": who::UNKNOWN_ENTITY }),
        who::AKTOBE_HEALTH,
        form.clone(),
    );
    let mut l8_poa =
        request("medical-licence", "aktobe", "centre", json!({ "bin": who::CLINIC }), who::AKTOBE_HEALTH, form.clone());
    l8_poa["representative"] = json!({ "iin": who::REPRESENTATIVE, "power_of_attorney": "ENIS-2026-000999" });
    let mut l8_missing =
        request("medical-licence", "aktobe", "centre", json!({ "bin": who::CLINIC }), who::AKTOBE_HEALTH, form);
    l8_missing["representative"] = json!({ "iin": who::REPRESENTATIVE, "power_of_attorney": "ENIS-0000-000000" });
    for r in [&r4, &l6, &l8, &l8_poa, &l8_missing] {
        env.publish_request(r).await;
    }
    assert_refused(&env.final_outcome(id_of(&r4)).await, Some("R4"), "not_in_registry", "registry");
    assert_refused(&env.final_outcome(id_of(&l6)).await, Some("L6"), "not_in_registry", "registry");
    assert_refused(&env.final_outcome(id_of(&l8)).await, Some("L8"), "not_in_registry", "registry");
    // ENIS-2026-000999 is revoked; the other number does not exist.
    assert_refused(&env.final_outcome(id_of(&l8_poa)).await, Some("L8"), "power_of_attorney_not_found", "registry");
    assert_refused(&env.final_outcome(id_of(&l8_missing)).await, Some("L8"), "power_of_attorney_not_found", "registry");
    app.shutdown(std::time::Duration::from_secs(5)).await;
    env.cleanup().await;
}

#[tokio::test]
async fn p32_p34_staff_refusals_use_each_channels_code_l4_l7_l9_a7() {
    let env = TestEnv::new().await;
    let app = env.start_all().await;
    let form = json!({ "kind": "issue", "activity": "стоматология" });
    let mut centre =
        request("medical-licence", "aktobe", "centre", json!({ "bin": who::CLINIC }), who::AKTOBE_HEALTH, form.clone());
    centre["representative"] = json!({ "iin": who::REPRESENTATIVE, "power_of_attorney": "ENIS-2026-000417" });
    let cases = [
        (
            request(
                "medical-licence",
                "aktobe",
                "portal",
                json!({ "bin": who::CLINIC }),
                who::AKTOBE_HEALTH,
                form.clone(),
            ),
            "L4",
        ),
        (
            request(
                "medical-licence",
                "aktobe",
                "provider",
                json!({ "bin": who::CLINIC }),
                who::AKTOBE_HEALTH,
                form.clone(),
            ),
            "L7",
        ),
        (centre, "L9"),
        (
            request(
                "archive-certificate",
                "astana",
                "portal",
                json!({ "iin": who::CITIZEN }),
                who::ASTANA_ARCHIVES,
                json!({}),
            ),
            "A7",
        ),
    ];
    for (req, code) in &cases {
        let o = drive(&env, req, "refuse").await;
        assert_refused(&o, Some(code), "provider_refused", "review");
        let reason = o.reason.expect("reason");
        assert!(reason.ru.contains("квалификационным"), "staff reason is carried: {}", reason.ru);
    }
    app.shutdown(std::time::Duration::from_secs(5)).await;
    env.cleanup().await;
}

#[tokio::test]
async fn p16_signature_not_confirmed_uses_each_regulations_code() {
    let env = TestEnv::new().await;
    let app = env.start_all().await;
    let bad =
        json!({ "format": "jcs-x509", "algorithm": "GOST3410-2015", "certificate_chain": ["MIIB"], "value": "AAAA" });
    let form = json!({ "kind": "issue", "activity": "стоматология" });
    let cases = [
        (
            request(
                "doctor-appointment",
                "akmola",
                "portal",
                json!({ "iin": who::CITIZEN }),
                who::AKMOLA_PHC,
                json!({}),
            ),
            Some("R2"),
        ),
        (
            request("medical-licence", "aktobe", "portal", json!({ "bin": who::CLINIC }), who::AKTOBE_HEALTH, form),
            Some("L3"),
        ),
        (
            request(
                "archive-certificate",
                "astana",
                "provider",
                json!({ "iin": who::CITIZEN }),
                who::ASTANA_ARCHIVES,
                json!({}),
            ),
            Some("A2"),
        ),
        (
            request(
                "archive-certificate",
                "astana",
                "centre",
                json!({ "iin": who::CITIZEN }),
                who::ASTANA_ARCHIVES,
                json!({}),
            ),
            Some("A4"),
        ),
        (
            request(
                "archive-certificate",
                "astana",
                "portal",
                json!({ "iin": who::CITIZEN }),
                who::ASTANA_ARCHIVES,
                json!({}),
            ),
            Some("A6"),
        ),
        // P-14: no check is specified for the PHC employee's signature; qyzmet still checks it.
        (appointment_at_provider(), None),
    ];
    for (mut req, code) in cases {
        req["signature"] = bad.clone();
        env.publish_request(&req).await;
        let o = env.final_outcome(id_of(&req)).await;
        assert_refused(&o, code, "signature_not_confirmed", "intake");
        assert!(o.request_number.is_none(), "a request with an unconfirmed signature is not registered (P-15)");
    }
    app.shutdown(std::time::Duration::from_secs(5)).await;
    env.cleanup().await;
}

#[tokio::test]
async fn p23_payment_notice_before_its_request_is_matched_and_counted_once() {
    let env = TestEnv::new().await;
    let app = env.start_all().await;
    let req = licence_request("portal", "duplicate");
    let id = id_of(&req);
    let notice = payment(id, "PSHEP-000981");
    env.publish_payment(&notice).await;
    env.publish_payment(&notice).await;
    // Both notices are recorded (once) before the request arrives.
    let wait = async {
        loop {
            let n: (i64,) = sqlx::query_as("SELECT count(*) FROM payments WHERE request_id = $1")
                .bind(id)
                .fetch_one(env.store.pool())
                .await
                .expect("count");
            if n.0 == 1 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(EVENT_TIMEOUT, wait).await.expect("notices recorded");
    env.publish_request(&req).await;
    env.wait_step(id, "review").await;
    env.publish_decision("medical-licence", &decision(id, "approve")).await;
    assert_completed(&env.final_outcome(id).await, "medical-licence");
    // The step found the payment itself; its pass in the audit trail names it (P-49).
    let passed = passed_at(&env, id, "payment").await;
    let passed = passed.first().expect("the payment step passed");
    assert_eq!(passed.detail, Some(json!({ "payment_id": "PSHEP-000981" })));
    app.shutdown(std::time::Duration::from_secs(5)).await;
    env.cleanup().await;
}

/// The audit rows that record a request passing `step`.
async fn passed_at(env: &TestEnv, id: uuid::Uuid, step: &str) -> Vec<qyzmet::store::HistoryRow> {
    let history = env.store.history_of(id).await.expect("history");
    history.into_iter().filter(|h| h.step == step && h.event == "passed").collect()
}

/// The notice takes no lock: it commits the payment, then looks for the request at the payment
/// step, while the step looks for the payment. Each notice is published the moment its request
/// is announced at the payment step, so it races the step's look (the step may find the payment
/// or park the request first); whichever looks second must see the other's write, so no request
/// waits for a payment it has, and none passes the step twice. Either way the audit trail names
/// the payment.
#[tokio::test]
async fn p23_p24_payments_racing_the_payment_step_each_move_their_request_on_once() {
    let env = TestEnv::new().await;
    let app = env.start_all().await;
    let requests: Vec<_> = (0..12).map(|_| licence_request("portal", "issue")).collect();
    futures_util::future::join_all(requests.iter().map(|req| async {
        let id = id_of(req);
        env.publish_request(req).await;
        env.wait_step(id, "payment").await;
        env.publish_payment(&payment(id, &format!("PSHEP-{id}"))).await;
    }))
    .await;
    for req in &requests {
        let id = id_of(req);
        env.wait_step(id, "review").await;
        env.publish_decision("medical-licence", &decision(id, "approve")).await;
    }
    for req in &requests {
        let id = id_of(req);
        assert_completed(&env.final_outcome(id).await, "medical-licence");
        let passed = passed_at(&env, id, "payment").await;
        assert_eq!(passed.len(), 1, "{id} passed its payment step once");
        // Whether the step found the payment or the notice found the step, the trail names it.
        let named = passed[0].detail.as_ref().and_then(|d| d.get("payment_id"));
        assert_eq!(named, Some(&json!(format!("PSHEP-{id}"))), "{id}: {:?}", passed[0].detail);
    }
    app.shutdown(std::time::Duration::from_secs(5)).await;
    env.cleanup().await;
}

/// An approval is applied without a lock, guarded by the request's position: of two
/// deliveries of it at once, one applies and the other finds it recorded or the request moved.
#[tokio::test]
async fn p35_one_approval_delivered_twice_at_once_is_applied_and_recorded_once() {
    let env = TestEnv::new().await;
    let app = env.start_all().await;
    let req = licence_request("provider", "issue");
    let id = id_of(&req);
    env.publish_request(&req).await;
    env.wait_step(id, "review").await;
    let approval = decision(id, "approve");
    tokio::join!(
        env.publish_decision("medical-licence", &approval),
        env.publish_decision("medical-licence", &approval)
    );
    assert_completed(&env.final_outcome(id).await, "medical-licence");
    let recorded = env.wait_decisions(id).await;
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert!(recorded[0].1, "applied: {recorded:?}");
    assert_eq!(passed_at(&env, id, "review").await.len(), 1, "the request passed its review once");
    app.shutdown(std::time::Duration::from_secs(5)).await;
    env.cleanup().await;
}

#[tokio::test]
async fn p35_decisions_not_waiting_for_review_are_recorded_not_applied() {
    let env = TestEnv::new().await;
    let app = env.start_all().await;
    // A decision for a request that does not exist.
    let ghost = decision(uuid::Uuid::new_v4(), "approve");
    env.publish_decision("medical-licence", &ghost).await;
    // A decision for an S1 request (reviewed by rules, never by staff).
    let s1 =
        request("doctor-appointment", "akmola", "portal", json!({ "iin": who::CITIZEN }), who::AKMOLA_PHC, json!({}));
    env.publish_request(&s1).await;
    let done = env.final_outcome(id_of(&s1)).await;
    assert_eq!(done.status, Status::Completed);
    let late = decision(id_of(&s1), "refuse");
    env.publish_decision("doctor-appointment", &late).await;
    let recorded = env.wait_decisions(id_of(&s1)).await;
    assert_eq!(recorded.len(), 1);
    assert!(!recorded[0].1, "not applied");
    assert!(recorded[0].2.as_deref().is_some_and(|r| r.starts_with("not_waiting_for_review")), "{recorded:?}");
    // Still exactly one final outcome, the original one.
    assert_eq!(env.store.outcome_of(id_of(&s1)).await.expect("outcome").expect("one")["status"], json!("completed"));
    assert_eq!(env.outcomes_of(id_of(&s1)).await.iter().filter(|o| o.status.is_final()).count(), 1);
    app.shutdown(std::time::Duration::from_secs(5)).await;
    env.cleanup().await;
}

#[tokio::test]
async fn p43_p44_p45_p52_outcomes_carry_the_sources_status_wording_the_delivery_and_the_contacts() {
    let env = TestEnv::new().await;
    let app = env.start_all().await;
    let regs = regulations();
    let cases = [
        ("archive-certificate", "astana", "portal", "personal_cabinet"),
        ("archive-certificate", "astana", "provider", "in_person_or_email"),
        ("medical-licence", "aktobe", "centre", "via_centre_operator"),
        ("medical-licence", "aktobe", "portal", "personal_cabinet"),
        ("doctor-appointment", "akmola", "provider", "provider_records"),
    ];
    for (service, region, channel, method) in cases {
        let req = match service {
            "archive-certificate" => request(
                service,
                region,
                channel,
                json!({ "iin": who::CITIZEN_ASTANA }),
                who::ASTANA_ARCHIVES,
                json!({ "certificate_type": "трудовой стаж", "period": "1995-2001" }),
            ),
            "medical-licence" => licence_request(channel, "issue"),
            _ => request(service, region, channel, json!({ "iin": who::CITIZEN }), who::AKMOLA_PHC, json!({})),
        };
        let o = drive(&env, &req, "approve").await;
        assert_eq!(o.status, Status::Completed, "{service} {channel}: {o:#?}");
        let route = qyzmet::pipeline::transition::route_for(&regs, service, region, channel).expect("route");
        // P-44: the delivery of this channel, from the data.
        let delivery = o.delivery.as_ref().expect("a final Outcome says how the result is delivered");
        assert_eq!(delivery.method, method, "{service} {channel}");
        assert_eq!(delivery.text.ru, route.channel.delivery.texts.ru);
        // P-52: the variant's contacts.
        let phones: Vec<&str> = o.contacts.iter().flatten().map(|c| c.phone.as_str()).collect();
        let want: Vec<&str> = route.variant.contacts.iter().map(|c| c.phone.as_str()).collect();
        assert!(!phones.is_empty() && phones == want, "{service}: {phones:?} vs {want:?}");
        // P-43, P-45: each status before the end carries its step's notice, where the data has one.
        let all = env.outcomes_of(id_of(&req)).await;
        for (index, step) in route.channel.steps.iter().enumerate() {
            let pool = qyzmet::broker::pool_name(step.pool);
            let status = if index == 0 { Status::Registered } else { Status::InProgress };
            let Some(seen) = all.iter().find(|x| x.status == status && x.step.as_deref() == Some(pool)) else {
                continue;
            };
            let want = step.notice.as_ref().map(|n| n.texts.kk.clone());
            assert_eq!(seen.notice.as_ref().map(|n| n.kk.clone()), want, "{service} {channel} at {pool}");
            assert!(seen.delivery.is_none() && seen.contacts.is_none(), "only final Outcomes carry delivery");
        }
        assert!(all.iter().any(|x| x.notice.is_some()), "{service} {channel}: some status carries the sources' words");
    }
    app.shutdown(std::time::Duration::from_secs(5)).await;
    env.cleanup().await;
}

/// Answers as a portal would send them.
fn answers(request_id: uuid::Uuid, answer_id: &str, quality: i64, information: i64) -> Vec<u8> {
    let body = json!({
        "answer_id": answer_id,
        "request_id": request_id,
        "answers": { "quality": quality, "information": information },
        "answered_at": qyzmet::contract::now_local(),
    });
    serde_json::to_vec(&body).expect("json")
}

#[tokio::test]
async fn p51_the_questionnaire_is_offered_with_the_result_and_one_answer_set_per_request_counts() {
    use qyzmet::contract::EXCHANGE_FEEDBACK;
    let env = TestEnv::new().await;
    let app = env.start_all().await;
    let done = appointment_at_provider();
    let o = drive(&env, &done, "approve").await;
    assert_eq!(o.status, Status::Completed);
    // The final Outcome offers the service's questionnaire in the sources' words.
    let q = o.questionnaire.as_ref().expect("a final Outcome offers the questionnaire");
    assert_eq!(q.routing_key, "questionnaire.doctor-appointment");
    assert_eq!(q.questions.iter().map(|x| x.key.as_str()).collect::<Vec<_>>(), ["quality", "information"]);
    assert!(q.questions[0].text.ru.starts_with("Удовлетворены ли Вы качеством процесса"), "{q:#?}");
    assert_eq!(q.answers.iter().map(|a| a.value).collect::<Vec<_>>(), [1, 2, 3]);
    // A licence still waiting for staff: answers before the end are recorded and ignored.
    let waiting = licence_request("provider", "issue");
    env.publish_request(&waiting).await;
    env.wait_step(id_of(&waiting), "review").await;

    let key = "questionnaire.doctor-appointment";
    let count = || async {
        let n: (i64,) = sqlx::query_as("SELECT count(*) FROM questionnaire_answers")
            .fetch_one(env.store.pool())
            .await
            .expect("count");
        n.0
    };
    env.publish_raw(EXCHANGE_FEEDBACK, key, answers(id_of(&done), "a-1", 3, 2)).await;
    env.publish_raw(EXCHANGE_FEEDBACK, key, answers(id_of(&done), "a-1", 3, 2)).await; // a repeat
    // Deliveries are handled concurrently: the second set goes out once the first is recorded.
    let first = async {
        while count().await < 1 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(EVENT_TIMEOUT, first).await.expect("the first answer set is recorded");
    env.publish_raw(EXCHANGE_FEEDBACK, key, answers(id_of(&done), "a-2", 1, 1)).await; // a second set
    env.publish_raw(EXCHANGE_FEEDBACK, key, answers(uuid::Uuid::new_v4(), "a-3", 2, 2)).await; // unknown
    env.publish_raw(EXCHANGE_FEEDBACK, "questionnaire.medical-licence", answers(id_of(&waiting), "a-4", 2, 3)).await;
    env.publish_raw(EXCHANGE_FEEDBACK, key, answers(id_of(&done), "a-5", 4, 1)).await; // no such answer
    let (_, headers) = env.wait_dead_letter().await;
    assert_eq!(headers.get("x-qyzmet-reason").map(String::as_str), Some("invalid_questionnaire"), "{headers:?}");
    let recorded = async {
        while count().await < 4 {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(EVENT_TIMEOUT, recorded).await.expect("four answer sets are recorded");
    let why: Vec<(String, bool, Option<String>)> =
        sqlx::query_as("SELECT answer_id, accepted, rejection FROM questionnaire_answers ORDER BY answer_id")
            .fetch_all(env.store.pool())
            .await
            .expect("answers");
    let expected = [
        ("a-1", true, None),
        ("a-2", false, Some("already_answered")),
        ("a-3", false, Some("unknown_request")),
        ("a-4", false, Some("not_finished")),
    ];
    let got: Vec<(&str, bool, Option<&str>)> = why.iter().map(|(a, ok, r)| (a.as_str(), *ok, r.as_deref())).collect();
    assert_eq!(got, expected);
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_qyzmet"))
        .args(["report", "questionnaire", "--format", "csv"])
        .envs(env.child_env())
        .output()
        .await
        .expect("qyzmet report questionnaire");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("doctor-appointment,akmola,provider,1,1,0,0,1,0,1,0\n"), "{report}");
    assert!(report.contains("medical-licence,aktobe,provider,0,1,"), "{report}");
    app.shutdown(std::time::Duration::from_secs(5)).await;
    env.cleanup().await;
}

/// An S5 archive certificate request from the Astana portal.
fn archive_at_the_portal() -> serde_json::Value {
    request(
        "archive-certificate",
        "astana",
        "portal",
        json!({ "iin": who::CITIZEN_ASTANA }),
        who::ASTANA_ARCHIVES,
        json!({ "certificate_type": "трудовой стаж", "period": "1995-2001" }),
    )
}

/// A staff Decision extending the review of a request to `to`.
fn extension(request_id: uuid::Uuid, to: chrono::DateTime<chrono::Utc>, exceptional: bool) -> serde_json::Value {
    let mut d = decision(request_id, "extend");
    d["extend_to"] = json!(qyzmet::contract::to_local(to).to_rfc3339());
    d["exceptional"] = json!(exceptional);
    d["reason"] = json!({
        "ru": "Требуется изучение документов двух и более организаций",
        "kk": "Екі және одан да көп ұйымның құжаттарын зерделеу қажет",
    });
    d
}

#[tokio::test]
async fn p34_s5_staff_extend_the_term_within_what_the_law_allows_and_the_applicant_is_told() {
    let env = TestEnv::new().await;
    let app = env.start_all().await;
    let req = archive_at_the_portal();
    let id = id_of(&req);
    env.publish_request(&req).await;
    env.wait_step(id, "review").await;
    let row = env.store.get_request(id).await.expect("row").expect("registered");
    let due = row.step_deadline.expect("a review deadline");
    let first_service = row.service_deadline.expect("a service deadline");
    // The term starts at 15 calendar days (close of business, moved off days off), counted in
    // local dates: a request received after close of business is due less than 15×24 hours later.
    let local_date = |t| qyzmet::contract::to_local(t).date_naive();
    let days = (local_date(due) - local_date(row.received_at)).num_days();
    assert!((15..=18).contains(&days), "the review starts with 15 calendar days, got {days}");

    // Too far without an exceptional case (past 30 days from the step's start): recorded, not applied.
    env.publish_decision("archive-certificate", &extension(id, row.received_at + chrono::Duration::days(60), false))
        .await;
    let rejected = env.wait_decisions(id).await;
    assert!(rejected[0].2.as_deref().is_some_and(|r| r.starts_with("beyond_the_allowed_term")), "{rejected:?}");
    // Within 30 days: applied, and an in_progress Outcome announces the later service deadline.
    let to = due + chrono::Duration::days(10);
    env.publish_decision("archive-certificate", &extension(id, to, false)).await;
    let announced = env
        .wait_for(id, "extension", |o| {
            o.status == Status::InProgress && o.deadline.is_some_and(|d| d.with_timezone(&chrono::Utc) > first_service)
        })
        .await;
    let shift = announced.deadline.expect("deadline").with_timezone(&chrono::Utc) - first_service;
    assert_eq!(shift, to - due, "the service deadline moves with the review's");
    let row = env.store.get_request(id).await.expect("row").expect("row");
    assert_eq!(row.step_deadline, Some(to));
    let history = env.store.history_of(id).await.expect("history");
    assert!(history.iter().any(|h| h.event == "extended"), "the extension is in the audit trail");
    // An exceptional case may go up to six months; one not later than the current deadline is refused.
    env.publish_decision("archive-certificate", &extension(id, to - chrono::Duration::days(1), false)).await;
    env.publish_decision("archive-certificate", &extension(id, row.received_at + chrono::Duration::days(120), true))
        .await;
    let exceptional = env
        .wait_for(id, "exceptional extension", |o| {
            o.status == Status::InProgress
                && o.deadline
                    .is_some_and(|d| d.with_timezone(&chrono::Utc) > first_service + chrono::Duration::days(90))
        })
        .await;
    assert!(exceptional.deadline.is_some());
    // The two were handled concurrently: wait until both are recorded.
    let all_four = async {
        loop {
            let d = env.store.decisions_for(id).await.expect("decisions");
            if d.len() >= 4 {
                return d;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    let decisions = tokio::time::timeout(EVENT_TIMEOUT, all_four).await.expect("four decisions are recorded");
    assert!(decisions.iter().any(|d| d.2.as_deref().is_some_and(|r| r.starts_with("not_later"))), "{decisions:?}");
    // The request then ends as usual.
    env.publish_decision("archive-certificate", &decision(id, "approve")).await;
    assert_eq!(env.final_outcome(id).await.status, Status::Completed);
    app.shutdown(std::time::Duration::from_secs(5)).await;
    env.cleanup().await;
}

/// An S5 request waiting for its staff decision, and an approval of it as the group commit of
/// approvals gets one: checked on the row as read now, its record marked applied.
async fn archive_request_and_approval_as_read(env: &TestEnv) -> (uuid::Uuid, qyzmet::store::Decided) {
    use qyzmet::pipeline::transition;
    use qyzmet::store::{Decided, DecisionRecord};
    let req = archive_at_the_portal();
    let id = id_of(&req);
    env.publish_request(&req).await;
    env.wait_step(id, "review").await;
    env.wait_state(id, "waiting").await;
    let seen = env.store.get_request(id).await.expect("row").expect("registered");
    let regs = regulations();
    let route = transition::route_for(&regs, &seen.service, &seen.region, &seen.channel).expect("a route");
    let approval = Decided {
        advance: transition::next_step(&seen, &route, None, None).expect("a next step"),
        decision: DecisionRecord {
            decision_id: uuid::Uuid::new_v4().to_string(),
            request_id: id,
            verdict: "approve",
            reason: None,
            decided_at: chrono::Utc::now(),
            applied: true,
            rejection: None,
            submitter: None,
            signer_masked: None,
        },
    };
    (id, approval)
}

/// Commits approvals as the group commit of approvals does; per approval, its outbox rows.
async fn decide_all(env: &TestEnv, all: &[&qyzmet::store::Decided]) -> Vec<Vec<i64>> {
    let mut conn = env.store.pool().acquire().await.expect("a connection");
    qyzmet::store::Store::decide_all(&mut conn, all).await.expect("the batch commits")
}

/// An approval is checked on the request as read and applied without holding its lock; an
/// extension committed in between moves the deadlines but not the request. The approval read
/// before it must not apply with the deadlines it read: it goes back to be decided under the
/// lock, where it sees the extension.
#[tokio::test]
async fn p34_p35_an_approval_read_before_an_extension_committed_does_not_carry_the_old_deadlines_on() {
    let env = TestEnv::new().await;
    let app = env.start_all().await;
    let (id, approval) = archive_request_and_approval_as_read(&env).await;
    let seen = env.store.get_request(id).await.expect("row").expect("registered");
    let to = seen.step_deadline.expect("a review deadline") + chrono::Duration::days(10);
    let first_service = seen.service_deadline.expect("a service deadline");
    env.publish_decision("archive-certificate", &extension(id, to, false)).await;
    env.wait_for(id, "extension", |o| {
        o.status == Status::InProgress && o.deadline.is_some_and(|d| d.with_timezone(&chrono::Utc) > first_service)
    })
    .await;

    let written = decide_all(&env, &[&approval]).await;
    assert_eq!(written, vec![Vec::<i64>::new()], "the approval read before the extension is not applied");
    let row = env.store.get_request(id).await.expect("row").expect("row");
    assert_eq!((row.state.as_str(), row.step_deadline), ("waiting", Some(to)), "the request waits, extended");
    let recorded = env.store.decisions_for(id).await.expect("decisions");
    assert!(recorded.iter().all(|d| d.0 != approval.decision.decision_id), "nothing recorded of it: {recorded:?}");
    // An approval that arrives now is applied.
    env.publish_decision("archive-certificate", &decision(id, "approve")).await;
    assert_eq!(env.final_outcome(id).await.status, Status::Completed);
    app.shutdown(std::time::Duration::from_secs(5)).await;
    env.cleanup().await;
}

/// Two deliveries of one approval can take different ways: one rejected under the lock (it
/// saw the deadline pass, say) while the other, checked a moment earlier, waits in the group
/// commit. The record written first stands, and the request moves only if that one applied.
#[tokio::test]
async fn p35_an_approval_recorded_meanwhile_by_another_delivery_is_not_applied_beside_that_record() {
    let env = TestEnv::new().await;
    let app = env.start_all().await;
    let (id, approval) = archive_request_and_approval_as_read(&env).await;
    let rejected = qyzmet::store::DecisionRecord {
        applied: false,
        rejection: Some("late: the review deadline has passed".into()),
        ..approval.decision.clone()
    };
    {
        let mut conn = env.store.pool().acquire().await.expect("a connection");
        assert!(qyzmet::store::Store::insert_decision(&mut conn, &rejected).await.expect("recorded"));
    }

    assert_eq!(decide_all(&env, &[&approval]).await, vec![Vec::<i64>::new()], "not applied");
    let row = env.store.get_request(id).await.expect("row").expect("row");
    assert_eq!((row.state.as_str(), row.step.as_deref()), ("waiting", Some("review")), "the request still waits");
    let recorded = env.store.decisions_for(id).await.expect("decisions");
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert!(!recorded[0].1, "the record that stands is the rejection: {recorded:?}");
    // The group commit applies an approval that is new.
    let (other, fresh) = archive_request_and_approval_as_read(&env).await;
    assert!(!decide_all(&env, &[&fresh]).await[0].is_empty(), "a new approval is applied");
    let moved = env.store.get_request(other).await.expect("row").expect("row");
    assert_eq!(moved.step.as_deref(), Some("result"), "it moved on to the result");
    assert!(env.store.decisions_for(other).await.expect("decisions").iter().all(|d| d.1), "recorded as applied");
    app.shutdown(std::time::Duration::from_secs(5)).await;
    env.cleanup().await;
}

/// A step that does nothing but wait for a staff Decision (S5's review, P-35) has nothing to
/// run: the request is parked there as it arrives, with no task on the review pool's queue, and
/// the Decision moves it on.
#[tokio::test]
async fn p35_a_request_reaching_a_decision_step_waits_there_at_once_without_a_task() {
    use qyzmet::regulations::PoolName;
    use qyzmet::startup::Options;
    let env = TestEnv::new().await;
    // No review pool: a task for it would stay in its queue.
    let pools = vec![(PoolName::Intake, 2), (PoolName::Result, 2)];
    let app =
        env.start(regulations(), Options { pools, sweeper: true, console: false, name: "no review".into() }).await;
    let req = archive_at_the_portal();
    let id = id_of(&req);
    env.publish_request(&req).await;
    env.wait_state(id, "waiting").await;
    let events: Vec<(String, String)> =
        env.store.history_of(id).await.expect("history").into_iter().map(|h| (h.step, h.event)).collect();
    let events: Vec<(&str, &str)> = events.iter().map(|(s, e)| (s.as_str(), e.as_str())).collect();
    assert_eq!(events, [("intake", "registered"), ("review", "waiting")]);
    assert_eq!(env.queue_ready("qyzmet.review").await, 0, "no task for a step that only waits");
    // The review pool takes the staff's Decisions.
    let pools = vec![(PoolName::Review, 2)];
    let review =
        env.start(regulations(), Options { pools, sweeper: false, console: false, name: "review".into() }).await;
    env.publish_decision("archive-certificate", &decision(id, "approve")).await;
    let done = env.final_outcome(id).await;
    assert_eq!(done.status, Status::Completed, "{done:?}");
    review.shutdown(std::time::Duration::from_secs(5)).await;
    app.shutdown(std::time::Duration::from_secs(5)).await;
    env.cleanup().await;
}
