//! Deadlines (P-46): every pool refuses a request whose step runs past its deadline, and the
//! sweeper refuses requests that wait past it — in a queue, for a payment, for a staff decision,
//! or with the pool stopped. Deadlines are shortened for these tests through the regulation
//! override; the arithmetic of real deadlines is unit-tested in `regulations`.

use std::sync::Arc;
use std::time::Duration;

use chrono::Duration as Span;
use futures_util::future::BoxFuture;
use serde_json::json;

use qyzmet::contract::{Outcome, Status};
use qyzmet::registry::{Registry, RegistryError};
use qyzmet::regulations::PoolName;
use qyzmet::startup::{self, Deps, Options};
use qyzmet::store::{AttachmentRecord, EntityRecord, PersonRecord, PowerOfAttorneyRecord};

use crate::common::*;

fn assert_deadline_refusal(o: &Outcome, step: &str) {
    assert_eq!(o.status, Status::Refused, "{o:#?}");
    let r = o.reason.as_ref().expect("reason");
    assert_eq!(r.kind, "deadline_exceeded", "{r:#?}");
    assert_eq!(o.step.as_deref(), Some(step), "{o:#?}");
}

fn s1_portal() -> serde_json::Value {
    request("doctor-appointment", "akmola", "portal", json!({ "iin": who::CITIZEN }), who::AKMOLA_PHC, json!({}))
}

async fn refused_at(pool: PoolName, step: &str, req: serde_json::Value) {
    let env = TestEnv::new().await;
    let mut regs = regulations();
    regs.override_step_deadline(pool, Span::zero());
    let app = env.start(regs, Options::all(2)).await;
    env.publish_request(&req).await;
    assert_deadline_refusal(&env.final_outcome(id_of(&req)).await, step);
    app.shutdown(Duration::from_secs(5)).await;
    env.cleanup().await;
}

#[tokio::test]
async fn p46_deadline_exceeded_at_intake() {
    refused_at(PoolName::Intake, "intake", s1_portal()).await;
}

#[tokio::test]
async fn p46_deadline_exceeded_at_registry() {
    refused_at(PoolName::Registry, "registry", appointment_at_provider()).await;
}

#[tokio::test]
async fn p46_deadline_exceeded_at_review() {
    refused_at(PoolName::Review, "review", s1_portal()).await;
}

#[tokio::test]
async fn p46_deadline_exceeded_at_result() {
    refused_at(PoolName::Result, "result", s1_portal()).await;
}

#[tokio::test]
async fn p24_no_payment_by_the_payment_deadline_is_refused_l2() {
    let env = TestEnv::new().await;
    let mut regs = regulations();
    regs.override_step_deadline(PoolName::Payment, Span::milliseconds(1500));
    let app = env.start(regs, Options::all(2)).await;
    let req = licence_request("portal", "issue");
    env.publish_request(&req).await;
    env.wait_state(id_of(&req), "waiting").await;
    let o = env.final_outcome(id_of(&req)).await;
    assert_eq!(o.status, Status::Refused);
    let r = o.reason.expect("reason");
    assert_eq!((r.code.as_deref(), r.kind.as_str()), (Some("L2"), "no_payment"));
    assert_eq!(o.step.as_deref(), Some("payment"));
    // A payment arriving after the refusal is recorded but changes nothing.
    env.publish_payment(&payment(id_of(&req), "PSHEP-LATE")).await;
    let recorded = async {
        loop {
            let n: (i64,) = sqlx::query_as("SELECT count(*) FROM payments WHERE payment_id = 'PSHEP-LATE'")
                .fetch_one(env.store.pool())
                .await
                .expect("count");
            if n.0 == 1 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(EVENT_TIMEOUT, recorded).await.expect("late notice recorded");
    app.shutdown(Duration::from_secs(5)).await;
    assert_eq!(env.outcomes_of(id_of(&req)).await.iter().filter(|o| o.status.is_final()).count(), 1);
    env.cleanup().await;
}

#[tokio::test]
async fn p35_staff_decision_not_given_by_the_deadline_is_refused_and_a_late_one_not_applied() {
    let env = TestEnv::new().await;
    let mut regs = regulations();
    regs.override_step_deadline(PoolName::Review, Span::milliseconds(1500));
    let app = env.start(regs, Options::all(2)).await;
    let req = request(
        "archive-certificate",
        "astana",
        "portal",
        json!({ "iin": who::CITIZEN }),
        who::ASTANA_ARCHIVES,
        json!({}),
    );
    let id = id_of(&req);
    env.publish_request(&req).await;
    env.wait_state(id, "waiting").await;
    assert_deadline_refusal(&env.final_outcome(id).await, "review");
    env.publish_decision("archive-certificate", &decision(id, "approve")).await;
    let d = env.wait_decisions(id).await;
    assert!(!d[0].1, "a late decision is not applied: {d:?}");
    assert_eq!(env.outcomes_of(id).await.iter().filter(|o| o.status.is_final()).count(), 1);
    app.shutdown(Duration::from_secs(5)).await;
    env.cleanup().await;
}

#[tokio::test]
async fn p46_sweeper_refuses_a_request_waiting_in_the_queue_of_a_stopped_pool() {
    let env = TestEnv::new().await;
    let mut regs = regulations();
    regs.override_step_deadline(PoolName::Registry, Span::milliseconds(500));
    // Only intake and the sweeper run: no registry worker exists.
    let opts =
        Options { pools: vec![(PoolName::Intake, 2)], sweeper: true, console: false, name: "intake only".into() };
    let app = env.start(regs, opts).await;
    let req = appointment_at_provider();
    env.publish_request(&req).await;
    assert_deadline_refusal(&env.final_outcome(id_of(&req)).await, "registry");
    // The task is still in the stopped pool's queue; when a worker comes it is ignored.
    assert_eq!(env.queue_ready("qyzmet.registry").await, 1);
    let late = env
        .start(
            regulations(),
            Options {
                pools: vec![(PoolName::Registry, 1)],
                sweeper: false,
                console: false,
                name: "late registry".into(),
            },
        )
        .await;
    env.wait_queue_empty("qyzmet.registry").await;
    late.shutdown(Duration::from_secs(5)).await;
    assert_eq!(env.outcomes_of(id_of(&req)).await.iter().filter(|o| o.status.is_final()).count(), 1);
    app.shutdown(Duration::from_secs(5)).await;
    env.cleanup().await;
}

/// A registry that never answers (a hung gateway), fails, or panics.
struct Misbehaving {
    mode: &'static str,
    calls: std::sync::atomic::AtomicUsize,
}

impl Misbehaving {
    fn answer<T: Send + 'static>(&self) -> BoxFuture<'_, Result<Option<T>, RegistryError>> {
        let n = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let mode = self.mode;
        Box::pin(async move {
            match mode {
                "hang" => {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    Ok(None)
                }
                "flaky" if n >= 2 => Ok(None),
                "panic" => panic!("registry adapter bug"),
                _ => Err(RegistryError::Unavailable("gateway timeout".into())),
            }
        })
    }
}

impl Registry for Misbehaving {
    fn person(&self, _: &str) -> BoxFuture<'_, Result<Option<PersonRecord>, RegistryError>> {
        if self.mode == "flaky" && self.calls.load(std::sync::atomic::Ordering::SeqCst) >= 2 {
            self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let p = PersonRecord {
                iin: who::CITIZEN.into(),
                full_name: "Сапарова Айгерим Маратовна".into(),
                birth_date: None,
            };
            return Box::pin(async move { Ok(Some(p)) });
        }
        self.answer()
    }
    fn entity(&self, bin: &str) -> BoxFuture<'_, Result<Option<EntityRecord>, RegistryError>> {
        let e = EntityRecord { bin: bin.into(), name: "registered".into(), closes_at: None };
        Box::pin(async move { Ok(Some(e)) })
    }
    fn power_of_attorney(&self, _: &str) -> BoxFuture<'_, Result<Option<PowerOfAttorneyRecord>, RegistryError>> {
        self.answer()
    }
    fn attachment(&self, iin: &str) -> BoxFuture<'_, Result<Option<AttachmentRecord>, RegistryError>> {
        let a = AttachmentRecord { iin: iin.into(), provider_bin: who::AKMOLA_PHC.into(), since: None };
        Box::pin(async move { Ok(Some(a)) })
    }
}

async fn with_registry(
    mode: &'static str,
    registry_deadline: Span,
) -> (TestEnv, qyzmet::startup::Running, Arc<Misbehaving>) {
    let env = TestEnv::new().await;
    let mut regs = regulations();
    regs.override_step_deadline(PoolName::Registry, registry_deadline);
    let reg = Arc::new(Misbehaving { mode, calls: Default::default() });
    let deps = Deps { registry: Some(reg.clone()), ..env.deps() };
    let app = startup::start(&env.settings, regs, Options::all(2), deps).await.expect("starts");
    (env, app, reg)
}

#[tokio::test]
async fn p46_a_step_running_past_its_deadline_is_cancelled_and_refused() {
    let (env, app, _) = with_registry("hang", Span::milliseconds(1500)).await;
    let req = appointment_at_provider();
    env.publish_request(&req).await;
    assert_deadline_refusal(&env.final_outcome(id_of(&req)).await, "registry");
    app.shutdown(Duration::from_secs(5)).await;
    env.cleanup().await;
}

#[tokio::test]
async fn transient_failures_are_retried_with_backoff_until_the_deadline_then_refused() {
    let (env, app, reg) = with_registry("down", Span::seconds(3)).await;
    let req = appointment_at_provider();
    env.publish_request(&req).await;
    assert_deadline_refusal(&env.final_outcome(id_of(&req)).await, "registry");
    assert!(reg.calls.load(std::sync::atomic::Ordering::SeqCst) >= 2, "retried");
    let history = env.store.history_of(id_of(&req)).await.expect("history");
    assert!(history.iter().any(|h| h.event == "retry"), "retries are in the audit trail: {history:#?}");
    app.shutdown(Duration::from_secs(5)).await;
    env.cleanup().await;
}

#[tokio::test]
async fn transient_failures_that_clear_before_the_deadline_end_in_the_result() {
    let (env, app, _) = with_registry("flaky", Span::seconds(30)).await;
    let req = appointment_at_provider();
    env.publish_request(&req).await;
    assert_eq!(env.final_outcome(id_of(&req)).await.status, Status::Completed);
    // It waited in `retry` and the sweeper's scan for due retries put it back on its queue.
    let history = env.store.history_of(id_of(&req)).await.expect("history");
    assert!(history.iter().any(|h| h.event == "retry"), "it was retried: {history:#?}");
    app.shutdown(Duration::from_secs(5)).await;
    env.cleanup().await;
}

/// The sweeper finds due retries by `next_attempt_at` alone (migration 0015), so the database
/// must refuse a request that has one outside `retry`, or is in `retry` without one.
#[tokio::test]
async fn a_request_has_a_next_attempt_time_exactly_while_it_waits_to_retry() {
    let env = TestEnv::new().await;
    let insert = |state: &'static str, next: Option<chrono::DateTime<chrono::Utc>>| {
        sqlx::query(
            "INSERT INTO requests (request_id, service, region, channel, applicant_masked, state, body, \
             received_at, next_attempt_at) \
             VALUES ($1, 'doctor-appointment', 'akmola', 'portal', '******', $2, '{}', now(), $3)",
        )
        .bind(uuid::Uuid::new_v4())
        .bind(state)
        .bind(next)
        .execute(env.store.pool())
    };
    let soon = Some(chrono::Utc::now());
    assert_eq!(sqlstate_of(insert("retry", soon).await), None, "in retry with its next attempt");
    assert_eq!(sqlstate_of(insert("queued", None).await), None, "queued without one");
    assert_eq!(sqlstate_of(insert("waiting", soon).await).as_deref(), Some("23514"), "waiting with a next attempt");
    assert_eq!(sqlstate_of(insert("retry", None).await).as_deref(), Some("23514"), "in retry without one");
    env.cleanup().await;
}

#[tokio::test]
async fn a_panicking_step_is_handled_as_a_failure_and_the_worker_keeps_going() {
    let (env, app, _) = with_registry("panic", Span::seconds(2)).await;
    let req = appointment_at_provider();
    env.publish_request(&req).await;
    assert_deadline_refusal(&env.final_outcome(id_of(&req)).await, "registry");
    // The same workers still serve requests that need no registry.
    let other = s1_portal();
    env.publish_request(&other).await;
    assert_eq!(env.final_outcome(id_of(&other)).await.status, Status::Completed);
    app.shutdown(Duration::from_secs(5)).await;
    env.cleanup().await;
}

#[tokio::test]
async fn p10_a_providers_closing_time_from_the_registry_import_sets_the_astana_home_call_cutoff() {
    let env = TestEnv::new().await;
    // The Astana clinic closes at 02:00 local time: its cut-off (two hours before) is midnight,
    // so a portal call at any time of day is past it and is served the next working day.
    let mut tx = env.store.begin().await.expect("tx");
    let clinic = EntityRecord {
        bin: who::ASTANA_PHC.into(),
        name: "clinic".into(),
        closes_at: chrono::NaiveTime::from_hms_opt(2, 0, 0),
    };
    qyzmet::store::Store::upsert_entities(&mut tx, std::slice::from_ref(&clinic)).await.expect("import");
    tx.commit().await.expect("commit");
    let app = env.start_all().await;
    let req = request(
        "home-doctor-call",
        "astana",
        "portal",
        json!({ "iin": who::CITIZEN_ASTANA }),
        who::ASTANA_PHC,
        json!({ "note": "fever" }),
    );
    env.publish_request(&req).await;
    assert_eq!(env.final_outcome(id_of(&req)).await.status, Status::Completed);
    let row = env.store.get_request(id_of(&req)).await.expect("row").expect("registered");
    let local = |t: chrono::DateTime<chrono::Utc>| t.with_timezone(&chrono_tz::Asia::Almaty).date_naive();
    let deadline = row.service_deadline.expect("a service deadline");
    assert!(
        local(deadline) > local(row.received_at),
        "past the provider's own cut-off the call is served on a later day: received {}, due {deadline}",
        row.received_at
    );
    app.shutdown(Duration::from_secs(5)).await;
    env.cleanup().await;
}

/// The sweep, the outbox relay and the retention pass are the fleet's chores: each pass is run
/// by the process that takes its turn (migration 0018), so the fleet runs each about once per
/// interval however many processes ask. Asked as qyzmet's own database role.
#[tokio::test]
async fn p46_the_fleet_takes_one_turn_per_interval_at_each_chore_whichever_processes_ask() {
    let env = TestEnv::new().await;
    let worker = qyzmet::store::Store::connect(&env.settings.database_url, 8).await.expect("the worker's connection");
    let every = Duration::from_millis(400);
    let (a, b) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());

    let asked = std::time::Instant::now();
    assert!(worker.take_turn("sweep", every, a).await.expect("turn"), "the first process to ask takes the turn");
    assert!(!worker.take_turn("sweep", every, b).await.expect("turn"), "another process finds it taken");
    assert!(!worker.take_turn("sweep", every, a).await.expect("turn"), "so does the taker, within the interval");
    assert!(worker.take_turn("relay", every, b).await.expect("turn"), "each chore has a turn of its own");

    // The turn is free again once the interval has passed on the database's clock: b asks until
    // it gets it.
    let waited = tokio::time::timeout(EVENT_TIMEOUT, async {
        while !worker.take_turn("sweep", every, b).await.expect("turn") {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        asked.elapsed()
    })
    .await
    .expect("the turn comes free after its interval");
    assert!(waited >= every, "the turn came free after {waited:?}, before its interval of {every:?}");
    let (taken_by,): (uuid::Uuid,) = sqlx::query_as("SELECT taken_by FROM chore_turns WHERE chore = 'sweep'")
        .fetch_one(env.store.pool())
        .await
        .expect("turn row");
    assert_eq!(taken_by, b, "the turn names the process that took it");

    // Eight processes asking at once for a turn nobody has taken yet: exactly one gets it.
    let asks = (0..8).map(|_| {
        let worker = worker.clone();
        tokio::spawn(
            async move { worker.take_turn("retention", Duration::from_secs(3600), uuid::Uuid::new_v4()).await },
        )
    });
    let mut taken = 0;
    for ask in asks.collect::<Vec<_>>() {
        taken += usize::from(ask.await.expect("ask").expect("turn"));
    }
    assert_eq!(taken, 1, "{taken} of eight simultaneous askers took the same turn");
}
