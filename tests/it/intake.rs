//! Intake: malformed input, invalid requests, duplicates (contract.md "Messages that cannot be
//! understood"; P-11).

use serde_json::json;

use qyzmet::contract::{EXCHANGE_REQUESTS, Status};

use crate::common::*;

#[tokio::test]
async fn unreadable_messages_are_dead_lettered_with_their_reason_and_intake_keeps_consuming() {
    let env = TestEnv::new().await;
    let app = env.start_all().await;
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"{this is not json".to_vec(), "not_json"),
        (br#"["an", "array"]"#.to_vec(), "not_an_object"),
        (br#"{"service": "doctor-appointment"}"#.to_vec(), "no_request_id"),
        (
            format!(r#"{{"request_id": "{}", "pad": "{}"}}"#, uuid::Uuid::new_v4(), "x".repeat(300_000)).into_bytes(),
            "oversized",
        ),
    ];
    for (body, reason) in cases {
        env.publish_raw(EXCHANGE_REQUESTS, "doctor-appointment", body.clone()).await;
        let (dead, headers) = env.wait_dead_letter().await;
        assert_eq!(headers.get("x-qyzmet-reason").map(String::as_str), Some(reason), "{headers:?}");
        assert_eq!(headers.get("x-qyzmet-queue").map(String::as_str), Some(qyzmet::broker::QUEUE_INTAKE));
        assert_eq!(dead, body, "the original body is kept");
    }
    // The worker is still consuming: a valid request goes through.
    let ok =
        request("doctor-appointment", "akmola", "portal", json!({ "iin": who::CITIZEN }), who::AKMOLA_PHC, json!({}));
    env.publish_request(&ok).await;
    assert_eq!(env.final_outcome(id_of(&ok)).await.status, Status::Completed);
    app.shutdown(std::time::Duration::from_secs(5)).await;
    env.cleanup().await;
}

#[tokio::test]
async fn requests_breaking_a_rule_are_refused_invalid_request_naming_the_field() {
    let env = TestEnv::new().await;
    let app = env.start_all().await;
    let base = || {
        request("doctor-appointment", "akmola", "portal", json!({ "iin": who::CITIZEN }), who::AKMOLA_PHC, json!({}))
    };
    let mut wrong_type = base();
    wrong_type["provider"] = json!(51140000113u64);
    let mut bad_digit = base();
    bad_digit["applicant"] = json!({ "iin": "850401300124" });
    let mut unknown_service = base();
    unknown_service["service"] = json!("fishing-licence");
    let no_signature = base();
    // Akmola S1 serves individuals only (P-13): a BIN applicant is invalid there.
    let mut bin_applicant = base();
    bin_applicant["applicant"] = json!({ "bin": who::CLINIC });
    // S4 needs form.kind (P-7, P-33).
    let no_kind = request(
        "medical-licence",
        "aktobe",
        "portal",
        json!({ "bin": who::CLINIC }),
        who::AKTOBE_HEALTH,
        json!({ "activity": "x" }),
    );
    let cases = [
        (wrong_type, "provider"),
        (bad_digit, "applicant.iin"),
        (unknown_service, "service"),
        (no_signature, "signature"),
        (bin_applicant, "applicant.bin"),
        (no_kind, "form.kind"),
    ];
    for (req, field) in &cases {
        if *field == "signature" {
            env.publish_raw(EXCHANGE_REQUESTS, "doctor-appointment", serde_json::to_vec(req).expect("json")).await;
        } else {
            env.publish_request(req).await;
        }
    }
    for (req, field) in &cases {
        let o = env.final_outcome(id_of(req)).await;
        assert_eq!(o.status, Status::Refused);
        let r = o.reason.expect("reason");
        assert_eq!(r.kind, "invalid_request");
        assert_eq!(r.code, None);
        assert!(r.en.contains(field) && r.ru.contains(field), "field {field} named in {r:#?}");
        assert!(o.request_number.is_none());
    }
    app.shutdown(std::time::Duration::from_secs(5)).await;
    env.cleanup().await;
}

#[tokio::test]
async fn service_without_a_regulation_in_the_region_is_refused_unsupported_service() {
    let env = TestEnv::new().await;
    let app = env.start_all().await;
    // S4 exists only in Aktobe; S1 has no centre channel.
    let a = request(
        "medical-licence",
        "akmola",
        "portal",
        json!({ "bin": who::CLINIC }),
        who::AKTOBE_HEALTH,
        json!({ "kind": "issue" }),
    );
    let b =
        request("doctor-appointment", "akmola", "centre", json!({ "iin": who::CITIZEN }), who::AKMOLA_PHC, json!({}));
    for r in [&a, &b] {
        env.publish_request(r).await;
        let o = env.final_outcome(id_of(r)).await;
        assert_eq!(o.reason.expect("reason").kind, "unsupported_service");
    }
    app.shutdown(std::time::Duration::from_secs(5)).await;
    env.cleanup().await;
}

#[tokio::test]
async fn p11_republished_request_yields_one_registration_and_one_outcome() {
    let env = TestEnv::new().await;
    let app = env.start_all().await;
    let req = request(
        "doctor-appointment",
        "astana",
        "portal",
        json!({ "iin": who::CITIZEN_ASTANA }),
        who::ASTANA_PHC,
        json!({}),
    );
    let id = id_of(&req);
    for _ in 0..3 {
        env.publish_request(&req).await;
    }
    let done = env.final_outcome(id).await;
    assert_eq!(done.status, Status::Completed);
    assert!(done.request_number.as_deref().is_some_and(|n| n.starts_with("S1-AST-")), "{:?}", done.request_number);
    // Publish once more after completion; once intake has taken it, a graceful shutdown waits
    // for it to be handled.
    env.publish_request(&req).await;
    env.wait_queue_empty(qyzmet::broker::QUEUE_INTAKE).await;
    app.shutdown(std::time::Duration::from_secs(5)).await;
    let all = env.outcomes_of(id).await;
    assert_eq!(all.iter().filter(|o| o.status.is_final()).count(), 1, "{all:#?}");
    assert_eq!(all.iter().filter(|o| o.status == Status::Registered).count(), 1, "{all:#?}");
    // Every Outcome continues the submitter's trace.
    assert!(env.store.get_request(id).await.expect("row").expect("exists").traceparent.is_some());
    env.cleanup().await;
}

#[tokio::test]
async fn registry_import_reports_rejected_rows_and_imports_the_rest() {
    let env = TestEnv::new().await;
    let dir = std::env::temp_dir().join(format!("qyzmet-import-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("dir");
    let csv = dir.join("people.csv");
    std::fs::write(&csv, "iin,full_name,birth_date\n850401300125,Сапарова А.,1985-04-01\n850401300124,Bad Digit,1985-04-01\n921212500674,,\n010203600450,Нурланов Д.,not-a-date\n")
        .expect("write");
    let report = qyzmet::registry::import_file(&env.store, &csv, None).await.expect("import");
    assert_eq!(report.accepted.iter().map(|(_, n)| n).sum::<usize>(), 1);
    let lines: Vec<usize> = report.rejected.iter().map(|r| r.line).collect();
    assert_eq!(lines, vec![3, 4, 5], "{:?}", report.rejected);
    assert!(report.rejected[0].reason.contains("check digit"), "{:?}", report.rejected[0]);
    assert!(!report.rejected[0].reason.contains("850401300124"), "identifiers are masked in reports");
    assert!(report.rejected[1].reason.contains("full_name"));
    assert!(report.rejected[2].reason.contains("birth_date"));
    let jsonl = dir.join("mixed.jsonl");
    std::fs::write(&jsonl, "{\"registry\":\"legal-entities\",\"bin\":\"150340000892\",\"name\":\"ТОО Тест\"}\nnot json\n{\"registry\":\"nope\"}\n")
        .expect("write");
    let report = qyzmet::registry::import_file(&env.store, &jsonl, None).await.expect("import");
    assert_eq!(report.rejected.len(), 2);
    assert!(env.store.find_entity("150340000892").await.expect("lookup").is_some());
    env.cleanup().await;
}
