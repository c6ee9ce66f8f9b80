//! Hostile and careless input: nothing a publisher sends, however often, stops a pool or is
//! retried forever. Every poison kind comes in a batch larger than the pool's concurrency and is
//! followed by a valid request that must complete.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use serde_json::{Map, Value, json};

use qyzmet::broker::{QUEUE_DEAD, QUEUE_DECISIONS, QUEUE_INTAKE, QUEUE_PAYMENT_NOTICES};
use qyzmet::contract::{EXCHANGE_DECISIONS, EXCHANGE_PAYMENTS, EXCHANGE_REQUESTS, Outcome, Status};
use qyzmet::signature::Signer;
use qyzmet::signature::keys::Keyring;
use qyzmet::startup::{Deps, Options};
use qyzmet::store::Store;

use crate::common::*;

/// More than the concurrency of every pool started here (4), so a poison kind that held its
/// consumer would stop the pool.
const BATCH: usize = 6;

fn s1_portal() -> Value {
    request("doctor-appointment", "akmola", "portal", json!({ "iin": who::CITIZEN }), who::AKMOLA_PHC, json!({}))
}

/// Nested objects `depth` levels deep.
fn nested(depth: usize) -> Value {
    (0..depth).fold(json!("bottom"), |inner, _| json!({ "x": inner }))
}

/// Waits for the final Outcome of each request and checks it is an `invalid_request` refusal
/// at intake whose texts name `field`.
async fn assert_refused_naming(env: &TestEnv, reqs: &[Value], field: &str) {
    for r in reqs {
        let o: Outcome = env.final_outcome(id_of(r)).await;
        assert_eq!(o.status, Status::Refused, "{field}: {o:?}");
        let reason = o.reason.expect("reason");
        assert_eq!(reason.kind, "invalid_request", "{field}: {reason:?}");
        assert!(reason.en.contains(field), "the refusal names {field}: {}", reason.en);
        assert_eq!(o.step.as_deref(), Some("intake"));
    }
}

/// Waits until `n` messages are in the dead-letter queue and returns their reason headers.
async fn dead_letter_reasons(env: &TestEnv, n: usize) -> Vec<String> {
    let mut reasons = Vec::new();
    while reasons.len() < n {
        let (_, headers) = env.wait_dead_letter().await;
        reasons.push(headers.get("x-qyzmet-reason").cloned().unwrap_or_default());
    }
    reasons
}

#[tokio::test]
async fn poison_batches_of_every_kind_stop_no_pool_and_are_never_retried() {
    let logs = capture_logs();
    let env = TestEnv::new().await;
    let app = env.start_all().await;

    // 1. A NUL character in a form value, in a member name, and in a top-level code: valid
    //    JSON, correctly signed, but PostgreSQL cannot store it.
    let nul_value: Vec<Value> = (0..BATCH)
        .map(|_| {
            let mut r = s1_portal();
            r["form"] = json!({ "note": "before\u{0}after" });
            r
        })
        .collect();
    let nul_key: Vec<Value> = (0..BATCH)
        .map(|_| {
            let mut r = s1_portal();
            let mut form = Map::new();
            form.insert("bad\u{0}key".into(), json!("x"));
            r["form"] = Value::Object(form);
            r
        })
        .collect();
    let nul_code: Vec<Value> = (0..BATCH)
        .map(|_| {
            let mut r = s1_portal();
            r["region"] = json!("akmola\u{0}");
            r
        })
        .collect();
    // 2. Nesting deeper than any form needs.
    let deep: Vec<Value> = (0..BATCH)
        .map(|_| {
            let mut r = s1_portal();
            r["form"] = json!({ "tree": nested(40) });
            r
        })
        .collect();
    // 3. An over-long power-of-attorney number (an index entry PostgreSQL would refuse).
    let long_poa: Vec<Value> = (0..BATCH)
        .map(|_| {
            let mut r = s1_portal();
            r["representative"] = json!({ "iin": who::REPRESENTATIVE, "power_of_attorney": "P".repeat(3000) });
            r
        })
        .collect();
    for r in nul_value.iter().chain(&nul_key).chain(&nul_code).chain(&deep).chain(&long_poa) {
        env.publish_request(r).await;
    }
    // 4. A traceparent header that is not W3C-shaped (with a NUL in it) on a valid request:
    //    dropped, and the request goes through.
    let odd_trace: Vec<Value> = (0..BATCH).map(|_| s1_portal()).collect();
    for r in &odd_trace {
        let mut signed = r.clone();
        sign_as(&proper_signer(r), &mut signed);
        env.publish_with_headers(
            EXCHANGE_REQUESTS,
            "doctor-appointment",
            serde_json::to_vec(&signed).expect("json"),
            vec![("traceparent".into(), "00-\u{0}-garbage".into())],
        )
        .await;
    }
    // 5. PaymentNotices the payments table cannot hold: an amount past numeric(14,2), an
    //    over-long payment_id, a NUL in the payer. 6. A Decision with a NUL in its reason.
    let target = uuid::Uuid::new_v4();
    let mut bad_notices = Vec::new();
    for i in 0..BATCH {
        let mut huge = payment(target, &format!("P-HUGE-{i}"));
        huge["amount"] = json!("12345678901234.00");
        let mut long_id = payment(target, "x");
        long_id["payment_id"] = json!("P".repeat(4000));
        let mut nul_payer = payment(target, &format!("P-NUL-{i}"));
        nul_payer["payer"] = json!({ "bin": "1205400\u{0}00785" });
        bad_notices.extend([huge, long_id, nul_payer]);
    }
    for n in &bad_notices {
        env.publish_payment(n).await;
    }
    for _ in 0..BATCH {
        let mut d = decision(target, "refuse");
        d["reason"] = json!({ "ru": "нет\u{0}", "kk": "жоқ" });
        env.publish_decision("medical-licence", &d).await;
    }

    // Every poisoned request is refused at intake, naming its field …
    assert_refused_naming(&env, &nul_value, "form.note").await;
    assert_refused_naming(&env, &nul_key, "form.bad\\u0000key").await;
    assert_refused_naming(&env, &nul_code, "region").await;
    assert_refused_naming(&env, &deep, "form.tree").await;
    assert_refused_naming(&env, &long_poa, "representative.power_of_attorney").await;
    for r in &odd_trace {
        assert_eq!(env.final_outcome(id_of(r)).await.status, Status::Completed);
    }
    // … every unusable notice and decision is dead-lettered with its reason …
    let reasons = dead_letter_reasons(&env, bad_notices.len() + BATCH).await;
    let notices = reasons.iter().filter(|r| *r == "invalid_payment_notice").count();
    let decisions = reasons.iter().filter(|r| *r == "invalid_decision").count();
    assert_eq!((notices, decisions), (bad_notices.len(), BATCH), "{reasons:?}");
    // … and the pools are still taking work.
    let after = s1_portal();
    env.publish_request(&after).await;
    assert_eq!(env.final_outcome(id_of(&after)).await.status, Status::Completed);

    // The audit copy of a NUL request is stored, with the NUL replaced.
    let row = env.store.get_request(id_of(&nul_value[0])).await.expect("db").expect("row");
    assert_eq!(row.body["form"]["note"], json!("before\u{fffd}after"));

    // Nothing was handed back to a queue or left waiting there.
    app.shutdown(Duration::from_secs(5)).await;
    for q in [QUEUE_INTAKE, QUEUE_PAYMENT_NOTICES, QUEUE_DECISIONS, "qyzmet.registry", "qyzmet.result"] {
        assert_eq!(env.queue_ready(q).await, 0, "{q} is empty");
    }
    assert_eq!(env.queue_ready(QUEUE_DEAD).await, 0, "no dead letter beyond those expected");
    let log = log_text(&logs);
    for retry_word in ["will retry", "returning the delivery", "retry scheduled"] {
        assert!(!log.contains(retry_word), "nothing was retried, but the log says {retry_word:?}");
    }
    env.cleanup().await;
}

/// Document numbers come from blocks each process takes ahead of use (migration 0012): two
/// processes interleaving their completions, and a third started after them, never give one
/// number twice, and each gives its own in increasing order.
#[tokio::test]
async fn document_numbers_taken_in_blocks_are_unique_across_processes() {
    let env = TestEnv::new().await;
    let url = &env.settings.database_url;
    let (a, b) = (Store::connect(url, 2).await.expect("a"), Store::connect(url, 2).await.expect("b"));
    let scope = "TEST-2026";
    let mut seen = std::collections::HashSet::new();
    let (mut last_a, mut last_b) = (0, 0);
    for _ in 0..40 {
        let (n, m) = (a.next_document_number(scope).await.expect("a"), b.next_document_number(scope).await.expect("b"));
        assert!(n > last_a && m > last_b, "each process's numbers increase: {last_a}→{n}, {last_b}→{m}");
        (last_a, last_b) = (n, m);
        assert!(seen.insert(n) && seen.insert(m), "{n} or {m} given twice");
    }
    let c = Store::connect(url, 4).await.expect("c");
    let concurrent = futures_util::future::join_all((0..40).map(|_| c.next_document_number(scope))).await;
    for n in concurrent {
        let n = n.expect("c");
        assert!(n > last_a.max(last_b), "a later process starts after every block taken: {n}");
        assert!(seen.insert(n), "{n} given twice");
    }
    assert_eq!(seen.len(), 120);
    let other = a.next_document_number("OTHER-2026").await.expect("other scope");
    assert_eq!(other, 1, "scopes count on their own");
    env.cleanup().await;
}

#[tokio::test]
async fn request_numbers_past_9_999_999_stay_unique() {
    let env = TestEnv::new().await;
    sqlx::query("SELECT setval('request_number_seq', 9999998)").execute(env.store.pool()).await.expect("setval");
    let app = env.start_all().await;
    let reqs: Vec<Value> = (0..3).map(|_| s1_portal()).collect();
    for r in &reqs {
        env.publish_request(r).await;
    }
    let mut numbers = Vec::new();
    for r in &reqs {
        let o = env.final_outcome(id_of(r)).await;
        assert_eq!(o.status, Status::Completed);
        numbers.push(o.request_number.expect("number"));
    }
    numbers.sort();
    let serials: Vec<&str> = numbers.iter().map(|n| n.rsplit('-').next().unwrap_or_default()).collect();
    assert_eq!(serials, ["10000000", "10000001", "9999999"], "{numbers:?}");
    app.shutdown(Duration::from_secs(5)).await;
    env.cleanup().await;
}

/// A keyring with one provider's key only (no `default`).
fn keyring_with_only(bin: &str) -> Keyring {
    let dir = std::env::temp_dir().join(format!("qyzmet-one-key-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    for ext in ["key.pem", "chain.pem"] {
        std::fs::copy(pki().keys_dir.join(format!("{bin}.{ext}")), dir.join(format!("{bin}.{ext}"))).expect("copy");
    }
    Keyring::load(&dir).expect("keyring")
}

#[tokio::test]
async fn a_provider_whose_results_cannot_be_signed_is_refused_at_intake_naming_the_provider() {
    let env = TestEnv::new().await;
    let mut deps = env.deps();
    deps.signer = Arc::new(keyring_with_only(who::ASTANA_PHC));
    let app = qyzmet::startup::start(&env.settings, regulations(), Options::all(4), deps).await.expect("start");
    let reqs: Vec<Value> = (0..BATCH).map(|_| s1_portal()).collect();
    for r in &reqs {
        env.publish_request(r).await;
    }
    assert_refused_naming(&env, &reqs, "provider").await;
    let served = request(
        "doctor-appointment",
        "astana",
        "portal",
        json!({ "iin": who::CITIZEN_ASTANA }),
        who::ASTANA_PHC,
        json!({}),
    );
    env.publish_request(&served).await;
    assert_eq!(env.final_outcome(id_of(&served)).await.status, Status::Completed);
    app.shutdown(Duration::from_secs(5)).await;
    env.cleanup().await;
}

/// A signer that says it can sign but fails every time (a key that became unusable after intake).
struct BrokenSigner;

impl Signer for BrokenSigner {
    fn sign(&self, _: &str, _: &Map<String, Value>) -> Result<Value, String> {
        Err("the signing key cannot be used".into())
    }
    fn can_sign(&self, _: &str) -> bool {
        true
    }
}

#[tokio::test]
async fn a_step_that_fails_permanently_refuses_invalid_request_at_once_without_retrying() {
    let logs = capture_logs();
    let env = TestEnv::new().await;
    let deps = Deps { signer: Arc::new(BrokenSigner), ..env.deps() };
    let app = qyzmet::startup::start(&env.settings, regulations(), Options::all(4), deps).await.expect("start");
    let reqs: Vec<Value> = (0..BATCH).map(|_| s1_portal()).collect();
    for r in &reqs {
        env.publish_request(r).await;
    }
    for r in &reqs {
        let o = env.final_outcome(id_of(r)).await;
        assert_eq!(o.status, Status::Refused);
        assert_eq!(o.step.as_deref(), Some("result"));
        let reason = o.reason.expect("reason");
        assert_eq!(reason.kind, "invalid_request");
        assert!(reason.en.contains("provider"), "{}", reason.en);
    }
    let history = env.store.history_of(id_of(&reqs[0])).await.expect("history");
    assert!(history.iter().all(|h| h.event != "retry"), "a permanent failure is not retried: {history:?}");
    assert!(!log_text(&logs).contains("retry scheduled"));
    app.shutdown(Duration::from_secs(5)).await;
    env.cleanup().await;
}

/// Takes one delivery from `queue` and closes the channel without settling it — what a worker
/// killed while holding the message does.
async fn crash_holding_one(env: &TestEnv, queue: &str) -> u32 {
    let ch = env.broker().channel().await.expect("channel");
    ch.basic_qos(1, BasicQosOptions::default()).await.expect("qos");
    let mut consumer = ch
        .basic_consume(queue.into(), "crasher".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect("consume");
    let delivery = tokio::time::timeout(EVENT_TIMEOUT, consumer.next())
        .await
        .expect("a delivery")
        .expect("stream")
        .expect("delivery");
    let count = qyzmet::pipeline::runtime::Incoming::from_delivery(&delivery).delivery_count;
    let _ = ch.close(320, "crashed".into()).await;
    count
}

#[tokio::test]
async fn a_message_that_kept_killing_its_consumer_is_dead_lettered_by_its_delivery_count() {
    let mut env = TestEnv::new().await;
    env.settings.max_deliveries = 3;
    let r = s1_portal();
    env.publish_request(&r).await;
    // Three consumers die holding it; quorum queues count each return.
    let mut counts = Vec::new();
    for _ in 0..3 {
        counts.push(crash_holding_one(&env, QUEUE_INTAKE).await);
    }
    assert_eq!(counts, [0, 1, 2], "x-delivery-count grows with every crash");
    let app = env.start_all().await;
    let (body, headers) = env.wait_dead_letter().await;
    assert_eq!(headers.get("x-qyzmet-reason").map(String::as_str), Some("delivery_limit"), "{headers:?}");
    assert_eq!(headers.get("x-qyzmet-delivery-count").map(String::as_str), Some("3"));
    assert_eq!(serde_json::from_slice::<Value>(&body).expect("json")["request_id"], r["request_id"]);
    assert!(env.store.get_request(id_of(&r)).await.expect("db").is_none(), "it was never handled");
    let after = s1_portal();
    env.publish_request(&after).await;
    assert_eq!(env.final_outcome(id_of(&after)).await.status, Status::Completed);
    app.shutdown(Duration::from_secs(5)).await;
    env.cleanup().await;
}

#[tokio::test]
async fn without_any_qyzmet_consumer_the_queues_own_delivery_limit_dead_letters_a_crashing_message() {
    let env = TestEnv::new().await;
    let r = s1_portal();
    env.publish_request(&r).await;
    for _ in 0..=qyzmet::broker::QUEUE_DELIVERY_LIMIT {
        crash_holding_one(&env, QUEUE_INTAKE).await;
    }
    // The broker moved it to qyzmet.dead (at-least-once dead-lettering) with its x-death record.
    let (body, headers) = env.wait_dead_letter().await;
    assert_eq!(serde_json::from_slice::<Value>(&body).expect("json")["request_id"], r["request_id"]);
    assert_eq!(headers.get("x-first-death-reason").map(String::as_str), Some("delivery_limit"), "{headers:?}");
    assert_eq!(env.queue_ready(QUEUE_INTAKE).await, 0);
    env.cleanup().await;
}

#[tokio::test]
async fn while_the_database_refuses_connections_deliveries_are_held_and_complete_when_it_returns() {
    let logs = capture_logs();
    let env = TestEnv::new().await;
    let app = env.start_all().await;
    let warm = s1_portal();
    env.publish_request(&warm).await;
    assert_eq!(env.final_outcome(id_of(&warm)).await.status, Status::Completed);

    // Take the test database away: no new connections, existing ones ended.
    env.database_away().await;
    let reqs: Vec<Value> = (0..BATCH).map(|_| s1_portal()).collect();
    for r in &reqs {
        env.publish_request(r).await;
    }
    let held = async {
        while !log_text(&logs).contains("not committed; will retry") {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(EVENT_TIMEOUT, held).await.expect("intake retries while the database is away");
    env.database_back().await;
    for r in &reqs {
        assert_eq!(env.final_outcome(id_of(r)).await.status, Status::Completed);
    }
    assert_eq!(env.queue_ready(QUEUE_DEAD).await, 0, "nothing was dead-lettered during the outage");
    app.shutdown(Duration::from_secs(5)).await;
    env.cleanup().await;
}

#[tokio::test]
async fn staff_decisions_and_payment_notices_that_parse_are_not_poison() {
    // The same exchanges still take valid messages after a poison batch (a regression guard for
    // the payment and decision consumers sharing the review and payment pools).
    let env = TestEnv::new().await;
    let app = env.start_all().await;
    let target = uuid::Uuid::new_v4();
    for i in 0..BATCH {
        let mut huge = payment(target, &format!("P-{i}"));
        huge["amount"] = json!("99999999999999.99");
        env.publish_raw(
            EXCHANGE_PAYMENTS,
            qyzmet::contract::ROUTING_KEY_PAYMENT,
            serde_json::to_vec(&huge).expect("json"),
        )
        .await;
        env.publish_raw(
            EXCHANGE_DECISIONS,
            &qyzmet::contract::decision_routing_key("medical-licence"),
            b"{\"request_id\": 1}".to_vec(),
        )
        .await;
    }
    let reasons = dead_letter_reasons(&env, 2 * BATCH).await;
    assert_eq!(reasons.iter().filter(|r| *r == "invalid_payment_notice").count(), BATCH, "{reasons:?}");
    assert_eq!(reasons.iter().filter(|r| *r == "no_request_id").count(), BATCH, "{reasons:?}");
    // A paid licence goes through payment and review afterwards.
    let lic = licence_request("portal", "issue");
    env.publish_request(&lic).await;
    env.wait_step(id_of(&lic), "payment").await;
    env.publish_payment(&payment(id_of(&lic), "P-OK")).await;
    env.wait_step(id_of(&lic), "review").await;
    env.wait_state(id_of(&lic), "waiting").await;
    env.publish_decision("medical-licence", &decision(id_of(&lic), "approve")).await;
    assert_eq!(env.final_outcome(id_of(&lic)).await.status, Status::Completed);
    app.shutdown(Duration::from_secs(5)).await;
    env.cleanup().await;
}
