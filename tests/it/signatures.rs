//! Signatures on a real pipeline (P-12…P-17): every reason a signature is not confirmed ends in
//! the regulation's refusal, with the specific reason in the stored record, and nothing else.

use std::time::Duration;

use serde_json::{Value, json};

use qyzmet::contract::Status;

use crate::common::*;

fn s1_portal() -> Value {
    request(
        "doctor-appointment",
        "akmola",
        "portal",
        json!({ "iin": who::CITIZEN }),
        who::AKMOLA_PHC,
        json!({ "slot": "10:30" }),
    )
}

fn signed(holder_name: &str) -> Value {
    let mut v = s1_portal();
    sign_as(holder_name, &mut v);
    v
}

async fn stored_reason(env: &TestEnv, id: uuid::Uuid) -> String {
    let history = env.store.history_of(id).await.expect("history");
    history
        .iter()
        .find_map(|h| h.detail.as_ref().and_then(|d| d.get("signature")).and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| panic!("no stored signature reason: {history:#?}"))
}

#[tokio::test]
async fn p16_each_signature_failure_is_refused_r2_with_its_reason_stored() {
    let env = TestEnv::new().await;
    let app = env.start_all().await;
    let mut cases: Vec<(Value, &str)> = vec![
        (signed("expired-850401300125"), "expired"),
        (signed("notyet-850401300125"), "not_yet_valid"),
        (signed("revoked-850401300125"), "revoked"),
        (signed("rogue-850401300125"), "unknown_issuer"),
        (signed("nosig-850401300125"), "key_usage"),
        (signed("iin-921212500674"), "identifier_mismatch"),
    ];
    let mut tampered = signed("iin-850401300125");
    tampered["form"]["slot"] = json!("18:00");
    cases.push((tampered, "bad_signature"));
    let mut swapped = signed("iin-850401300125");
    swapped["signature"]["certificate_chain"] = signed("iin-921212500674")["signature"]["certificate_chain"].clone();
    cases.push((swapped, "bad_signature"));
    let mut gost = signed("iin-850401300125");
    gost["signature"]["algorithm"] = json!("GOST34.10-2015");
    cases.push((gost, "unsupported_algorithm"));
    let mut garbage = signed("iin-850401300125");
    garbage["signature"]["certificate_chain"] = json!(["MIIB////"]);
    cases.push((garbage, "malformed"));
    // A valid request replayed under a new request_id: the signature no longer matches; and
    // re-signed for the replay with an old, expired certificate: refused as expired.
    let original = signed("iin-850401300125");
    let mut replay = original.clone();
    replay["request_id"] = json!(uuid::Uuid::new_v4().to_string());
    cases.push((replay.clone(), "bad_signature"));
    let mut resigned = replay;
    resigned["request_id"] = json!(uuid::Uuid::new_v4().to_string());
    sign_as("expired-850401300125", &mut resigned);
    cases.push((resigned, "expired"));
    for (req, _) in &cases {
        env.publish_request(req).await;
    }
    for (req, reason) in &cases {
        let id = id_of(req);
        let o = env.final_outcome(id).await;
        assert_eq!(o.status, Status::Refused, "{reason}");
        let r = o.reason.clone().expect("reason");
        assert_eq!((r.code.as_deref(), r.kind.as_str()), (Some("R2"), "signature_not_confirmed"), "{reason}");
        assert!(r.ru.contains("ЭЦП"), "the regulation's text, not an internal error: {}", r.ru);
        assert!(!r.en.contains(reason), "internal reasons stay out of the outcome: {}", r.en);
        assert_eq!(stored_reason(&env, id).await, *reason);
        assert!(o.request_number.is_none(), "not registered");
        assert_eq!(env.outcomes_of(id).await.len(), 1, "nothing else is published for {reason}");
    }
    app.shutdown(Duration::from_secs(5)).await;
    env.cleanup().await;
}

#[tokio::test]
async fn p35_a_decision_signed_with_a_citizens_certificate_approves_nothing() {
    let env = TestEnv::new().await;
    let app = env.start_all().await;
    let req = licence_request("provider", "reissue");
    let id = id_of(&req);
    env.publish_request(&req).await;
    env.wait_step(id, "review").await;
    let mut fake = decision(id, "approve");
    sign_as("impostor-011040000330", &mut fake);
    env.publish_decision("medical-licence", &fake).await;
    let recorded = env.wait_decisions(id).await;
    assert!(!recorded[0].1, "not applied");
    assert_eq!(recorded[0].2.as_deref(), Some("signature_not_confirmed: role_not_allowed"));
    assert!(env.outcomes_of(id).await.iter().all(|o| !o.status.is_final()));
    // Real staff then decide.
    env.publish_decision("medical-licence", &decision(id, "approve")).await;
    let done = env.final_outcome(id).await;
    assert_eq!(done.status, Status::Completed);
    let doc = done.document.expect("document");
    assert_eq!(doc["signature"]["format"], "jcs-x509");
    assert_eq!(doc["signature"]["algorithm"], "ES256");
    app.shutdown(Duration::from_secs(5)).await;
    env.cleanup().await;
}

#[tokio::test]
async fn p12_without_a_crl_for_the_issuer_signatures_fail_closed_while_workers_run() {
    let env = TestEnv::new().await;
    let app = env.start_all().await;
    let first = signed("iin-850401300125");
    env.publish_request(&first).await;
    assert_eq!(env.final_outcome(id_of(&first)).await.status, Status::Completed);
    // The intermediate's CRL disappears; running workers notice without a restart.
    std::fs::remove_file(pki().crl_dir.join("intermediate.crl.pem")).expect("remove CRL");
    let refused = async {
        loop {
            let req = signed("iin-850401300125");
            env.publish_request(&req).await;
            let o = env.final_outcome(id_of(&req)).await;
            if o.status == Status::Refused {
                return id_of(&req);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    };
    let id = tokio::time::timeout(EVENT_TIMEOUT, refused).await.expect("refused once the CRL is gone");
    assert_eq!(stored_reason(&env, id).await, "crl_missing");
    app.shutdown(Duration::from_secs(5)).await;
    env.cleanup().await;
}

#[tokio::test]
async fn documents_signed_by_the_shared_default_key_verify_offline_when_the_verifier_trusts_it() {
    use qyzmet::signature::Signer as _;
    // A provider without a key of its own: the default key (a shared signer) signs for it.
    let keyring = qyzmet::signature::keys::Keyring::load(&pki().keys_dir).expect("keys");
    let mut doc = serde_json::Map::new();
    doc.insert("kind".into(), json!("appointment-certificate"));
    doc.insert("number".into(), json!("APT-2026-000001"));
    doc.insert("issued_at".into(), json!(qyzmet::contract::now_local()));
    doc.insert("content".into(), json!({ "provider": "081140000436" }));
    let signature = keyring.sign("081140000436", &doc).expect("the default key signs");
    doc.insert("signature".into(), signature);
    let file = std::env::temp_dir().join(format!("qyzmet-shared-{}.json", uuid::Uuid::new_v4().simple()));
    std::fs::write(&file, serde_json::to_vec(&doc).expect("json")).expect("write");
    let verify = |shared: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_qyzmet"))
            .arg("verify")
            .arg(&file)
            .env("QYZMET_TRUST_BUNDLE", &pki().trust_bundle)
            .env("QYZMET_CRL_PATH", &pki().crl_dir)
            .env("QYZMET_SHARED_SIGNER_BINS", shared)
            .output()
            .expect("qyzmet verify runs")
    };
    let trusted = verify(qyzmet_demo_pki::DEMO_SHARED_SIGNER_BIN);
    assert!(trusted.status.success(), "{}", String::from_utf8_lossy(&trusted.stderr));
    let untrusted = verify("");
    assert!(!untrusted.status.success(), "without the shared signer configured it must not verify");
    assert!(String::from_utf8_lossy(&untrusted.stderr).contains("identifier_mismatch"));
}
