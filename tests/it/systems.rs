//! Per-system broker users, enforced twice: by RabbitMQ's permissions (derived from the systems
//! file by `Systems::definitions`) and by qyzmet's checks of each message's broker-validated
//! `user_id` against the same file.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use lapin::BasicProperties;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use serde_json::{Value, json};

use qyzmet::broker::{Broker, Message, QUEUE_DEAD};
use qyzmet::contract::{EXCHANGE_DECISIONS, EXCHANGE_PAYMENTS, EXCHANGE_REQUESTS, Status};
use qyzmet::startup::Options;
use qyzmet::systems::Systems;

use crate::common::*;

/// The systems of one test: users made unique to it (broker users are global), their
/// passwords, and the file qyzmet reads.
struct World {
    file: PathBuf,
    tag: String,
    passwords: HashMap<String, String>,
}

impl World {
    fn user(&self, role: &str) -> String {
        format!("{role}-{}", self.tag)
    }

    /// A URL for this test's virtual host, logged in as `role`.
    fn url(&self, env: &TestEnv, role: &str) -> String {
        let user = self.user(role);
        qyzmet::config::with_login(&env.settings.amqp_url, Some(&user), &self.passwords[&user]).expect("url")
    }

    /// Connects as one of the systems (without declaring anything: it may not).
    async fn connect(&self, env: &TestEnv, role: &str) -> Arc<Broker> {
        Broker::open(&self.url(env, role), role).await.unwrap_or_else(|e| panic!("{role} logs in: {e}"))
    }

    /// Removes the users (they outlive the virtual host otherwise).
    async fn remove(self) {
        for user in self.passwords.keys() {
            management("DELETE", &format!("/api/users/{user}"), None).await;
        }
    }
}

/// Writes a systems file, derives the definitions and imports them through the management API.
async fn install(env: &TestEnv) -> World {
    let tag = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
    let text = format!(
        r#"
        [qyzmet]
        user = "qyzmet-{tag}"

        [[system]]
        user = "portal-{tag}"
        kind = "portal"
        services = ["doctor-appointment", "medical-licence"]

        [[system]]
        user = "arm-{tag}"
        kind = "provider_workstation"
        providers = ["{akmola}"]

        [[system]]
        user = "pshep-{tag}"
        kind = "payment_gateway"

        [[system]]
        user = "staff-{tag}"
        kind = "staff_application"
        services = ["medical-licence"]

        [[system]]
        user = "reader-{tag}"
        kind = "outcome_reader"
        queues = [{{ name = "reader-{tag}.outcomes", bindings = ["completed.*"] }}]
        "#,
        akmola = who::AKMOLA_PHC
    );
    let dir = std::env::temp_dir().join(format!("qyzmet-systems-{tag}"));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("systems.toml");
    std::fs::write(&file, text).expect("write systems file");
    let systems = Systems::load(&file).expect("systems file");
    let mut passwords = HashMap::new();
    for role in ["qyzmet", "portal", "arm", "pshep", "staff", "reader"] {
        passwords.insert(format!("{role}-{tag}"), qyzmet::systems::random_password().expect("password"));
    }
    let defs = systems.definitions(env.vhost(), &|u| Ok(passwords[u].clone())).expect("definitions");
    let (st, body) = management("POST", "/api/definitions", Some(&defs)).await;
    assert!(st == 201 || st == 204, "definitions import: HTTP {st} {body}");
    World { file, tag, passwords }
}

/// Settings for qyzmet itself: its own user (the only one that may configure) and the file.
fn qyzmet_settings(env: &TestEnv, world: &World) -> qyzmet::config::Settings {
    let dir = world.file.parent().expect("dir").to_path_buf();
    let password_file = dir.join("qyzmet.password");
    std::fs::write(&password_file, &world.passwords[&world.user("qyzmet")]).expect("password file");
    let mut settings = env.settings.clone();
    settings.amqp_url = world.url(env, "qyzmet").replace(&world.passwords[&world.user("qyzmet")], "from-file");
    settings.amqp_password_file = Some(password_file);
    settings.systems_file = Some(world.file.clone());
    settings
}

async fn publish_as(broker: &Arc<Broker>, exchange: &str, key: &str, body: &Value) -> Result<(), String> {
    let publisher = broker.publisher().await.map_err(|e| e.to_string())?;
    let m = Message {
        exchange: exchange.into(),
        routing_key: key.into(),
        message_id: uuid::Uuid::new_v4().to_string(),
        body: serde_json::to_vec(body).expect("json"),
        traceparent: None,
        headers: Vec::new(),
        must_route: true,
    };
    publisher.publish_all(&[m]).await.map_err(|e| e.to_string())
}

fn signed(mut v: Value, signer: &str) -> Value {
    sign_as(signer, &mut v);
    v
}

#[tokio::test]
async fn each_system_may_publish_only_where_the_systems_file_says_and_the_broker_refuses_the_rest() {
    let env = TestEnv::new().await;
    let world = install(&env).await;
    // qyzmet runs as its own user, which may declare its topology.
    let settings = qyzmet_settings(&env, &world);
    let app = qyzmet::startup::start(&settings, regulations(), Options::all(4), env.deps()).await.expect("start");

    let portal = world.connect(&env, "portal").await;
    let ok = s1("portal");
    assert_eq!(
        publish_as(&portal, EXCHANGE_REQUESTS, "doctor-appointment", &signed(ok.clone(), &proper_signer(&ok))).await,
        Ok(())
    );
    // A portal may not write to the payments exchange …
    let e = publish_as(&portal, EXCHANGE_PAYMENTS, qyzmet::contract::ROUTING_KEY_PAYMENT, &payment(id_of(&ok), "P-1"))
        .await
        .unwrap_err();
    assert!(e.contains("ACCESS_REFUSED"), "{e}");
    // … nor use a service routing key it was not given (topic permission) …
    let e = publish_as(&portal, EXCHANGE_REQUESTS, "archive-certificate", &ok).await.unwrap_err();
    assert!(e.contains("ACCESS_REFUSED"), "{e}");
    // … nor declare anything (only qyzmet configures).
    let ch = portal.channel().await.expect("channel");
    let e =
        ch.queue_declare("portal-own".into(), QueueDeclareOptions::default(), FieldTable::default()).await.unwrap_err();
    assert!(e.to_string().contains("ACCESS_REFUSED"), "{e}");
    // The gateway may not submit requests, staff may not pay.
    let pshep = world.connect(&env, "pshep").await;
    let e = publish_as(&pshep, EXCHANGE_REQUESTS, "doctor-appointment", &ok).await.unwrap_err();
    assert!(e.contains("ACCESS_REFUSED"), "{e}");
    let staff = world.connect(&env, "staff").await;
    let e = publish_as(&staff, EXCHANGE_PAYMENTS, qyzmet::contract::ROUTING_KEY_PAYMENT, &ok).await.unwrap_err();
    assert!(e.contains("ACCESS_REFUSED"), "{e}");

    // The allowed request went through, and its submitter is recorded.
    assert_eq!(env.final_outcome(id_of(&ok)).await.status, Status::Completed);
    let (submitter,): (Option<String>,) = sqlx::query_as("SELECT submitter FROM requests WHERE request_id = $1")
        .bind(id_of(&ok))
        .fetch_one(env.store.pool())
        .await
        .expect("row");
    assert_eq!(submitter, Some(world.user("portal")));

    // The reader reads its own queue (bound to completed.*), and nothing else.
    let reader = world.connect(&env, "reader").await;
    let ch = reader.channel().await.expect("channel");
    let queue = format!("reader-{}.outcomes", world.tag);
    let got = ch
        .basic_get(queue.as_str().into(), lapin::options::BasicGetOptions { no_ack: true })
        .await
        .expect("the reader may read its queue");
    let body: Value =
        serde_json::from_slice(&got.expect("the completed outcome is in it").delivery.data).expect("json");
    assert_eq!(body["status"], "completed");
    let ch = reader.channel().await.expect("channel");
    let e = ch.basic_get(QUEUE_DEAD.into(), lapin::options::BasicGetOptions { no_ack: true }).await.unwrap_err();
    assert!(e.to_string().contains("ACCESS_REFUSED"), "{e}");

    for b in [portal, pshep, staff, reader] {
        b.close().await;
    }
    app.shutdown(Duration::from_secs(5)).await;
    world.remove().await;
    env.cleanup().await;
}

fn s1(channel: &str) -> Value {
    request("doctor-appointment", "akmola", channel, json!({ "iin": who::CITIZEN }), who::AKMOLA_PHC, json!({}))
}

#[tokio::test]
async fn a_message_claiming_another_systems_user_id_is_refused_by_the_broker() {
    let env = TestEnv::new().await;
    let world = install(&env).await;
    let portal = world.connect(&env, "portal").await;
    let ch = portal.channel().await.expect("channel");
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");
    let props = BasicProperties::default().with_user_id(world.user("pshep").as_str().into());
    let published = ch
        .basic_publish(
            EXCHANGE_REQUESTS.into(),
            "doctor-appointment".into(),
            BasicPublishOptions::default(),
            b"{}",
            props,
        )
        .await;
    let outcome = match published {
        Ok(confirm) => confirm.await.map(|_| ()),
        Err(e) => Err(e),
    };
    let e = outcome.expect_err("the broker refuses a user_id that is not the login");
    assert!(e.to_string().contains("PRECONDITION_FAILED"), "{e}");
    portal.close().await;
    world.remove().await;
    env.cleanup().await;
}

#[tokio::test]
async fn channels_services_and_providers_a_system_may_not_use_are_refused_naming_the_field() {
    let env = TestEnv::new().await;
    let world = install(&env).await;
    let settings = qyzmet_settings(&env, &world);
    let app = qyzmet::startup::start(&settings, regulations(), Options::all(4), env.deps()).await.expect("start");
    let portal = world.connect(&env, "portal").await;
    let arm = world.connect(&env, "arm").await;
    // A portal submitting a provider-channel request (same exchange, same routing key).
    let wrong_channel = s1("provider");
    // A workstation submitting for a provider it does not act for.
    let wrong_provider = request(
        "doctor-appointment",
        "astana",
        "provider",
        json!({ "iin": who::CITIZEN_ASTANA }),
        who::ASTANA_PHC,
        json!({}),
    );
    // A workstation may submit for its own polyclinic.
    let allowed = s1("provider");
    for (broker, r) in [(&portal, &wrong_channel), (&arm, &wrong_provider), (&arm, &allowed)] {
        let body = signed(r.clone(), &proper_signer(r));
        publish_as(broker, EXCHANGE_REQUESTS, "doctor-appointment", &body).await.expect("publish");
    }
    for (r, field) in [(&wrong_channel, "channel"), (&wrong_provider, "provider")] {
        let o = env.final_outcome(id_of(r)).await;
        assert_eq!(o.status, Status::Refused);
        let reason = o.reason.expect("reason");
        assert_eq!(reason.kind, "invalid_request");
        assert!(reason.en.contains(field), "the refusal names {field}: {}", reason.en);
    }
    assert_eq!(env.final_outcome(id_of(&allowed)).await.status, Status::Completed);
    // The test's own connection (guest, not in the file) is refused too: an unknown sender.
    let stranger = s1("portal");
    env.publish_request(&stranger).await;
    let reason = env.final_outcome(id_of(&stranger)).await.reason.expect("refused");
    assert!(reason.en.contains("user_id"), "{}", reason.en);
    portal.close().await;
    arm.close().await;
    app.shutdown(Duration::from_secs(5)).await;
    world.remove().await;
    env.cleanup().await;
}

#[tokio::test]
async fn payment_notices_and_decisions_count_only_from_the_gateway_and_staff_applications() {
    let env = TestEnv::new().await;
    let world = install(&env).await;
    let settings = qyzmet_settings(&env, &world);
    let app = qyzmet::startup::start(&settings, regulations(), Options::all(4), env.deps()).await.expect("start");
    let portal = world.connect(&env, "portal").await;
    let pshep = world.connect(&env, "pshep").await;
    let staff = world.connect(&env, "staff").await;
    let lic = licence_request("portal", "issue");
    publish_as(&portal, EXCHANGE_REQUESTS, "medical-licence", &signed(lic.clone(), &proper_signer(&lic)))
        .await
        .expect("publish");
    env.wait_step(id_of(&lic), "payment").await;
    // A notice from anyone but the gateway (here the test's admin connection) is not applied:
    // it is dead-lettered as evidence.
    env.publish_payment(&payment(id_of(&lic), "P-FAKE")).await;
    let (_, headers) = env.wait_dead_letter().await;
    assert_eq!(headers.get("x-qyzmet-reason").map(String::as_str), Some("sender_not_allowed"), "{headers:?}");
    assert!(payments_of(&env, id_of(&lic)).await.is_empty(), "the fake payment was not recorded");
    // The gateway's notice is.
    publish_as(&pshep, EXCHANGE_PAYMENTS, qyzmet::contract::ROUTING_KEY_PAYMENT, &payment(id_of(&lic), "P-REAL"))
        .await
        .expect("publish");
    env.wait_step(id_of(&lic), "review").await;
    env.wait_state(id_of(&lic), "waiting").await;
    // A decision published by someone other than a staff application is recorded, not applied.
    env.publish_decision("medical-licence", &decision(id_of(&lic), "approve")).await;
    let recorded = env.wait_decisions(id_of(&lic)).await;
    assert!(!recorded[0].1, "not applied");
    assert!(recorded[0].2.as_deref().unwrap_or_default().starts_with("sender_not_allowed"), "{recorded:?}");
    // The staff application's decision is applied.
    let mut d = decision(id_of(&lic), "approve");
    sign_as(&format!("staff-{}", who::AKTOBE_HEALTH), &mut d);
    publish_as(&staff, EXCHANGE_DECISIONS, &qyzmet::contract::decision_routing_key("medical-licence"), &d)
        .await
        .expect("publish");
    assert_eq!(env.final_outcome(id_of(&lic)).await.status, Status::Completed);
    for b in [portal, pshep, staff] {
        b.close().await;
    }
    app.shutdown(Duration::from_secs(5)).await;
    world.remove().await;
    env.cleanup().await;
}

/// Payments recorded for a request, with their submitters.
async fn payments_of(env: &TestEnv, id: uuid::Uuid) -> Vec<(String, Option<String>)> {
    sqlx::query_as("SELECT payment_id, submitter FROM payments WHERE request_id = $1")
        .bind(id)
        .fetch_all(env.store.pool())
        .await
        .expect("payments")
}
