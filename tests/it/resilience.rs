//! Nothing lost, nothing doubled: workers killed while inside a step (held there on a barrier),
//! and a worker process killed with SIGKILL while requests flow through it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde_json::{Value, json};
use tokio::sync::Notify;

use qyzmet::contract::Status;
use qyzmet::registry::{Registry, RegistryError};
use qyzmet::regulations::PoolName;
use qyzmet::startup::Options;
use qyzmet::store::{AttachmentRecord, EntityRecord, PersonRecord, PowerOfAttorneyRecord};

use crate::common::*;

/// A registry whose lookups never return: each caller is counted, then held inside its step
/// until the process is killed.
struct Barrier {
    entered: Arc<AtomicUsize>,
    arrived: Arc<Notify>,
}

impl Barrier {
    fn hold<T: Send + 'static>(&self) -> BoxFuture<'_, Result<Option<T>, RegistryError>> {
        self.entered.fetch_add(1, Ordering::SeqCst);
        self.arrived.notify_waiters();
        Box::pin(std::future::pending())
    }
}

impl Registry for Barrier {
    fn person(&self, _: &str) -> BoxFuture<'_, Result<Option<PersonRecord>, RegistryError>> {
        self.hold()
    }
    fn entity(&self, _: &str) -> BoxFuture<'_, Result<Option<EntityRecord>, RegistryError>> {
        self.hold()
    }
    fn power_of_attorney(&self, _: &str) -> BoxFuture<'_, Result<Option<PowerOfAttorneyRecord>, RegistryError>> {
        self.hold()
    }
    fn attachment(&self, _: &str) -> BoxFuture<'_, Result<Option<AttachmentRecord>, RegistryError>> {
        self.hold()
    }
}

/// Every pool but the registry running, and `n` S1 provider-channel requests published (they
/// stop at the registry step).
async fn without_registry(
    env: &TestEnv,
    n: usize,
    sweeper: bool,
) -> (qyzmet::startup::Running, Vec<serde_json::Value>) {
    let rest = env
        .start(
            regulations(),
            Options {
                pools: vec![(PoolName::Intake, 2), (PoolName::Review, 2), (PoolName::Result, 2)],
                sweeper,
                console: false,
                name: "rest".into(),
            },
        )
        .await;
    let reqs: Vec<_> = (0..n).map(|_| appointment_at_provider()).collect();
    for r in &reqs {
        env.publish_request(r).await;
    }
    (rest, reqs)
}

#[tokio::test]
async fn a_worker_killed_mid_step_loses_nothing_and_the_request_gets_one_outcome() {
    let env = TestEnv::new().await;
    // Everything but the registry pool runs normally.
    let (rest, reqs) = without_registry(&env, 5, true).await;
    // A registry worker whose lookups block: kill it once all five are inside their step.
    let entered = Arc::new(AtomicUsize::new(0));
    let arrived = Arc::new(Notify::new());
    let mut deps = env.deps();
    deps.registry = Some(Arc::new(Barrier { entered: entered.clone(), arrived: arrived.clone() }));
    let doomed = qyzmet::startup::start(
        &env.settings,
        regulations(),
        Options { pools: vec![(PoolName::Registry, 5)], sweeper: false, console: false, name: "doomed".into() },
        deps,
    )
    .await
    .expect("doomed worker starts");
    let inside = async {
        loop {
            let notified = arrived.notified();
            if entered.load(Ordering::SeqCst) >= 5 {
                return;
            }
            notified.await;
        }
    };
    tokio::time::timeout(EVENT_TIMEOUT, inside).await.expect("all five requests are inside the registry step");
    doomed.abort().await;
    let survivor = env
        .start(
            regulations(),
            Options { pools: vec![(PoolName::Registry, 2)], sweeper: false, console: false, name: "survivor".into() },
        )
        .await;
    for r in &reqs {
        let o = env.final_outcome(id_of(r)).await;
        assert_eq!(o.status, Status::Completed);
    }
    let drained = async {
        while env.queue_ready("qyzmet.registry").await > 0 || env.store.outbox_backlog().await.unwrap_or(1) > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(EVENT_TIMEOUT, drained).await.expect("everything drains");
    for r in &reqs {
        let finals = env.outcomes_of(id_of(r)).await.into_iter().filter(|o| o.status.is_final()).count();
        assert_eq!(finals, 1, "exactly one final outcome for {}", id_of(r));
        let history = env.store.history_of(id_of(r)).await.expect("history");
        let passed = history.iter().filter(|h| h.step == "registry" && h.event == "passed").count();
        assert_eq!(passed, 1, "the killed attempt left no trace; the redelivery passed once");
    }
    let numbers: (i64,) = sqlx::query_as("SELECT count(DISTINCT document->>'number') FROM outcomes")
        .fetch_one(env.store.pool())
        .await
        .expect("count");
    assert_eq!(numbers.0, 5, "each document got its own number");
    survivor.shutdown(Duration::from_secs(5)).await;
    rest.shutdown(Duration::from_secs(5)).await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_worker_process_killed_with_sigkill_loses_nothing_and_doubles_nothing() {
    let env = TestEnv::new().await;
    let others = env
        .start(
            regulations(),
            Options {
                pools: vec![
                    (PoolName::Intake, 4),
                    (PoolName::Review, 4),
                    (PoolName::Result, 4),
                    (PoolName::Payment, 1),
                ],
                sweeper: true,
                console: false,
                name: "others".into(),
            },
        )
        .await;
    // The registry pool runs as a separate `qyzmet worker registry` process.
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_qyzmet"))
        .args(["worker", "registry", "--concurrency", "4"])
        .envs(env.child_env())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn qyzmet worker registry");
    let reqs: Vec<_> = (0..40).map(|_| appointment_at_provider()).collect();
    for r in &reqs {
        env.publish_request(r).await;
    }
    // Kill it once it has done some of the work.
    let some_done = async {
        loop {
            let mut done = 0;
            for r in &reqs {
                if env.outcomes_of(id_of(r)).await.iter().any(|o| o.step.as_deref() == Some("review")) {
                    done += 1;
                }
            }
            if done >= 3 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(EVENT_TIMEOUT, some_done).await.expect("the worker process makes progress");
    child.start_kill().expect("SIGKILL");
    let _ = child.wait().await;
    let replacement = env
        .start(
            regulations(),
            Options {
                pools: vec![(PoolName::Registry, 4)],
                sweeper: false,
                console: false,
                name: "replacement".into(),
            },
        )
        .await;
    for r in &reqs {
        assert_eq!(env.final_outcome(id_of(r)).await.status, Status::Completed);
    }
    let drained = async {
        while env.queue_ready("qyzmet.registry").await > 0 || env.store.outbox_backlog().await.unwrap_or(1) > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(EVENT_TIMEOUT, drained).await.expect("everything drains");
    for r in &reqs {
        let finals = env.outcomes_of(id_of(r)).await.into_iter().filter(|o| o.status.is_final()).count();
        assert_eq!(finals, 1, "exactly one final outcome for {}", id_of(r));
    }
    replacement.shutdown(Duration::from_secs(5)).await;
    others.shutdown(Duration::from_secs(5)).await;
    env.cleanup().await;
}

#[tokio::test]
async fn after_a_task_queue_is_lost_qyzmet_requeue_rebuilds_it_from_postgresql() {
    let env = TestEnv::new().await;
    let (rest, reqs) = without_registry(&env, 6, false).await;
    for r in &reqs {
        env.wait_step(id_of(r), "registry").await;
    }
    let queued = async {
        while env.queue_ready("qyzmet.registry").await < 6 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(EVENT_TIMEOUT, queued).await.expect("the tasks wait in qyzmet.registry");
    // The queue's messages are lost (deleted with a classic queue, say).
    let ch = env.broker().channel().await.expect("channel");
    ch.queue_purge("qyzmet.registry".into(), lapin::options::QueuePurgeOptions::default()).await.expect("purge");
    assert_eq!(env.queue_ready("qyzmet.registry").await, 0);
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_qyzmet"))
        .arg("requeue")
        .envs(env.child_env())
        .output()
        .await
        .expect("qyzmet requeue runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("6 task message(s) re-published"));
    let registry = env
        .start(
            regulations(),
            Options { pools: vec![(PoolName::Registry, 2)], sweeper: false, console: false, name: "registry".into() },
        )
        .await;
    for r in &reqs {
        assert_eq!(env.final_outcome(id_of(r)).await.status, Status::Completed);
    }
    registry.shutdown(Duration::from_secs(5)).await;
    rest.shutdown(Duration::from_secs(5)).await;
    env.cleanup().await;
}

/// Waits until `n` consumers of the process are attached to their queues.
async fn wait_consuming(app: &qyzmet::startup::Running, n: usize, what: &str) {
    let wait = async {
        while app.ctx.consuming.load(Ordering::SeqCst) != n {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(90), wait).await.unwrap_or_else(|_| panic!("{what}"));
}

/// A broker outage longer than the consumers' recovery patience: each consumer gives up on its
/// recovering channel and consumes on a new connection, while lapin goes on recovering the old
/// one. Once the broker is back, the old connection comes back too, with its consumers — and
/// the broker hands them a prefetch's worth of deliveries that nobody reads. Those requests
/// stalled until the process exited (the chaos drill lost four this way). qyzmet now closes a
/// replaced connection as soon as it has recovered, so its deliveries go back to the queue.
#[tokio::test]
async fn exclusive_after_a_broker_outage_longer_than_the_recovery_patience_no_delivery_is_stranded() {
    let mut env = TestEnv::new().await;
    env.settings.recovery_patience_secs = 1;
    let app = env.start(regulations(), Options::all(2)).await;
    let ready = async {
        while http_get(app.http_addr, "/readyz").await.0 != 200 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(EVENT_TIMEOUT, ready).await.expect("every pool consumes");
    let consumers = app.ctx.consuming.load(Ordering::SeqCst);
    rabbitmqctl(&["stop_app"]);
    let broker_back = scopeguard(|| rabbitmqctl(&["start_app"]));
    wait_consuming(&app, 0, "every consumer gives up on its channel while the broker is away").await;
    drop(broker_back);
    wait_consuming(&app, consumers, "every consumer is back on a new connection").await;
    let reqs: Vec<_> = (0..24)
        .map(|_| {
            let mut r = appointment_at_provider();
            sign_as(&proper_signer(&r), &mut r);
            r
        })
        .collect();
    for r in &reqs {
        publish_until_confirmed(env.broker(), r).await;
    }
    for r in &reqs {
        env.wait_state(id_of(r), "completed").await;
    }
    app.shutdown(Duration::from_secs(5)).await;
    env.cleanup().await;
}

/// Runs `f` when dropped (the broker is started again even if the test fails midway).
fn scopeguard(f: impl FnOnce()) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}

/// Starts every pool but the registry's and publishes `n` S1 requests at a provider; returns
/// them once each is registered and queued for the registry step.
async fn queued_for_registry(env: &TestEnv, n: usize) -> (qyzmet::startup::Running, Vec<Value>) {
    let others = env
        .start(
            regulations(),
            Options {
                pools: vec![
                    (PoolName::Intake, 8),
                    (PoolName::Review, 8),
                    (PoolName::Result, 8),
                    (PoolName::Payment, 1),
                ],
                sweeper: true,
                console: false,
                name: "others".into(),
            },
        )
        .await;
    let reqs: Vec<_> = (0..n).map(|_| appointment_at_provider()).collect();
    for r in &reqs {
        env.publish_request(r).await;
    }
    for r in &reqs {
        env.wait_step(id_of(r), "registry").await;
    }
    (others, reqs)
}

/// Group commit at the store: one statement advances many requests, each only where its
/// request still stands; the audit trail of each is chained and in order, and every outbox row
/// goes back to the advance whose message it holds.
#[tokio::test]
async fn many_advances_commit_in_one_statement_each_only_where_its_request_still_stands() {
    use qyzmet::pipeline::transition;
    use qyzmet::store::Store;
    let env = TestEnv::new().await;
    let (others, reqs) = queued_for_registry(&env, 5).await;
    let regs = regulations();
    let mut advances = Vec::new();
    for r in &reqs {
        let row = env.store.get_request(id_of(r)).await.expect("read").expect("row");
        let route = transition::route_for(&regs, &row.service, &row.region, &row.channel).expect("route");
        advances.push(transition::next_step(&row, &route, Some(json!({ "checked": true })), None).expect("next step"));
    }
    // The third one saw its request at another attempt: it must change nothing.
    advances[2].from.attempts = 7;
    let refs: Vec<_> = advances.iter().collect();
    let mut conn = env.store.pool().acquire().await.expect("connection");
    let ids = Store::advance_all(&mut conn, &refs).await.expect("one statement");
    drop(conn);
    let counts: Vec<usize> = ids.iter().map(Vec::len).collect();
    assert_eq!(counts, [2, 2, 0, 2, 2], "an in-progress Outcome and a task each, except where the request moved");
    for (i, r) in reqs.iter().enumerate() {
        let id = id_of(r);
        let row = env.store.get_request(id).await.expect("read").expect("row");
        let events: Vec<(String, String)> =
            env.store.history_of(id).await.expect("history").into_iter().map(|h| (h.step, h.event)).collect();
        if i == 2 {
            assert_eq!(row.step.as_deref(), Some("registry"), "the stale advance left its request alone");
            assert!(!events.iter().any(|(_, e)| e == "passed"), "{events:?}");
        } else {
            assert_eq!(row.step.as_deref(), Some("review"));
            assert_eq!(row.facts["checked"], true);
            let tail: Vec<(&str, &str)> =
                events.iter().rev().take(2).rev().map(|(s, e)| (s.as_str(), e.as_str())).collect();
            assert_eq!(tail, [("registry", "passed"), ("review", "queued")], "{events:?}");
        }
        let owned: Vec<String> = sqlx::query_scalar("SELECT message_id FROM outbox WHERE id = ANY($1)")
            .bind(&ids[i])
            .fetch_all(env.store.pool())
            .await
            .expect("outbox rows");
        assert!(owned.iter().all(|m| m.starts_with(&id.to_string())), "{owned:?} belong to {id}");
    }
    assert!(env.store.audit_breaks(None).await.expect("verify").is_empty(), "every audit chain holds");
    others.shutdown(Duration::from_secs(5)).await;
    env.cleanup().await;
}

/// Group commit of the steps that wait: one statement parks many requests, to wait for an event
/// or to retry, each only where its request still stands, with its audit row chained.
#[tokio::test]
async fn many_parks_commit_in_one_statement_each_only_where_its_request_still_stands() {
    use qyzmet::pipeline::transition;
    use qyzmet::store::{Park, Parked, Store};
    let env = TestEnv::new().await;
    let (others, reqs) = queued_for_registry(&env, 4).await;
    let retry_at = chrono::Utc::now() + chrono::Duration::hours(1);
    let mut parks: Vec<Park> = Vec::new();
    for r in &reqs {
        let row = env.store.get_request(id_of(r)).await.expect("read").expect("row");
        parks.push(transition::waiting(&row, "registry"));
    }
    parks[1].to = Parked::Retry(retry_at);
    // The third one saw its request at another attempt: it must change nothing.
    parks[2].from.attempts = 7;
    let refs: Vec<_> = parks.iter().collect();
    let mut conn = env.store.pool().acquire().await.expect("connection");
    let parked = Store::park_all(&mut conn, &refs).await.expect("one statement");
    drop(conn);
    assert_eq!(parked, [true, true, false, true], "each applied except where the request moved");
    for (i, r) in reqs.iter().enumerate() {
        let id = id_of(r);
        let row = env.store.get_request(id).await.expect("read").expect("row");
        let last = env.store.history_of(id).await.expect("history").pop().expect("an audit row");
        let (state, attempts, event) = match i {
            1 => ("retry", 1, "retry"),
            2 => ("queued", 0, "queued"),
            _ => ("waiting", 0, "waiting"),
        };
        assert_eq!((row.state.as_str(), row.attempts), (state, attempts), "request {i}");
        assert_eq!((last.step.as_str(), last.event.as_str()), ("registry", event), "request {i}");
        let next: Option<chrono::DateTime<chrono::Utc>> =
            sqlx::query_scalar("SELECT next_attempt_at FROM requests WHERE request_id = $1")
                .bind(id)
                .fetch_one(env.store.pool())
                .await
                .expect("next attempt");
        assert_eq!(next.is_some(), i == 1, "only the retry has its next attempt set (request {i})");
    }
    assert!(env.store.audit_breaks(None).await.expect("verify").is_empty(), "every audit chain holds");
    others.shutdown(Duration::from_secs(5)).await;
    env.cleanup().await;
}

/// The planner settings of the pipeline's keyed statements, as `current_setting` gives them.
const KEYED_PLANS: &str = "SELECT current_setting('plan_cache_mode') || ' ' || current_setting('enable_seqscan') \
     || ' ' || current_setting('enable_hashjoin') || ' ' || current_setting('enable_mergejoin') \
     || ' ' || current_setting('jit')";

/// The store's transactions (payment notices, staff decisions, the sweeper) plan their
/// statements as group commit does — generically, by index, without JIT compilation — and leave
/// their connection as they found it.
#[tokio::test]
async fn a_transaction_plans_its_statements_generically_and_leaves_its_connection_as_it_was() {
    let env = TestEnv::new().await;
    // One connection, so that the statement after the commit runs where the transaction ran.
    let store = qyzmet::store::Store::connect(&env.settings.database_url, 1).await.expect("connect");
    let before: String = sqlx::query_scalar(KEYED_PLANS).fetch_one(store.pool()).await.expect("show");
    let mut tx = store.begin().await.expect("begin");
    let inside: String = sqlx::query_scalar(KEYED_PLANS).fetch_one(&mut *tx).await.expect("show");
    assert_eq!(inside, "force_generic_plan off off off off");

    // A statement with no index to use is priced at ten billion, over any JIT threshold; it is
    // still run as planned, not compiled (which took 76 ms for a ten-row table).
    let plan: Vec<String> =
        sqlx::query_scalar("EXPLAIN (ANALYZE) SELECT count(*) FROM worker_heartbeats WHERE pools = 'none'")
            .fetch_all(&mut *tx)
            .await
            .expect("explain");
    let plan = plan.join("\n");
    assert!(plan.contains("Seq Scan on worker_heartbeats"), "{plan}");
    assert!(!plan.contains("JIT"), "a keyed transaction's statement was JIT-compiled:\n{plan}");
    tx.commit().await.expect("commit");
    let after: String = sqlx::query_scalar(KEYED_PLANS).fetch_one(store.pool()).await.expect("show");
    assert_eq!(after, before, "the settings ended with the transaction");
    assert_ne!(after, inside, "the server's own settings differ from the keyed ones");
    store.close().await;
    env.cleanup().await;
}

/// On a new database, whose `requests` has never been analyzed, a keyed statement of the
/// pipeline still finds its rows through the primary key, on the group-commit connections and
/// in the store's transactions alike. Planned generically from those first statistics, the
/// batches scanned and hashed the whole table each time until autovacuum's first analyze.
#[tokio::test]
async fn on_a_new_database_the_pipelines_keyed_statements_plan_an_index_lookup_not_a_scan() {
    let env = TestEnv::new().await;
    let store = qyzmet::store::Store::connect(&env.settings.database_url, 1).await.expect("connect");
    let keyed = "PREPARE keyed(uuid[]) AS UPDATE requests r SET updated_at = now() \
                 FROM unnest($1) AS i(request_id) WHERE r.request_id = i.request_id";
    let plan_of = |plan: Vec<String>, where_: &str| {
        let plan = plan.join("\n");
        assert!(plan.contains("requests_pkey"), "{where_}: the primary key answers\n{plan}");
        assert!(!plan.contains("Seq Scan on requests"), "{where_}: no scan of requests\n{plan}");
        assert!(!plan.contains("Hash"), "{where_}: no hash of requests\n{plan}");
    };

    let mut conn = store.batch_pool().acquire().await.expect("batch connection");
    sqlx::raw_sql(keyed).execute(&mut *conn).await.expect("prepare");
    let plan = sqlx::query_scalar("EXPLAIN EXECUTE keyed('{}')").fetch_all(&mut *conn).await.expect("explain");
    plan_of(plan, "group commit");
    sqlx::raw_sql("DEALLOCATE keyed").execute(&mut *conn).await.expect("deallocate");
    drop(conn);

    let mut tx = store.begin().await.expect("begin");
    sqlx::raw_sql(keyed).execute(&mut *tx).await.expect("prepare");
    let plan = sqlx::query_scalar("EXPLAIN EXECUTE keyed('{}')").fetch_all(&mut *tx).await.expect("explain");
    plan_of(plan, "a transaction");
    tx.rollback().await.expect("rollback");
    store.close().await;
    env.cleanup().await;
}

/// A registration as intake builds it, for the store's group commit.
fn registration(id: uuid::Uuid, n: usize) -> qyzmet::store::Registration {
    use chrono::{Duration as Span, Utc};
    use qyzmet::broker::Message;
    use qyzmet::store::{NewRequest, Registration};
    let now = Utc::now();
    let message = |key: &str, kind: &str| Message {
        exchange: "qyzmet.tasks".into(),
        routing_key: key.into(),
        message_id: format!("{id}:{kind}"),
        body: b"{}".to_vec(),
        traceparent: None,
        headers: Vec::new(),
        must_route: false,
    };
    Registration {
        request: NewRequest {
            request_id: id,
            request_number: Some(format!("S1-AST-20261202-{n:07}")),
            service: "doctor-appointment".into(),
            region: "astana".into(),
            channel: "portal".into(),
            applicant_masked: "8504******25".into(),
            applicant_id: Some("850401300125".into()),
            state: "queued".into(),
            step_index: 1,
            step: Some("registry".into()),
            step_deadline: Some(now + Span::minutes(5)),
            service_deadline: Some(now + Span::days(1)),
            deadlines: json!([]),
            body: json!({ "request_id": id, "n": n }),
            submitter: None,
            traceparent: None,
            submitted_at: Some(now),
            received_at: now,
        },
        intake_deadline: now + Span::minutes(1),
        detail: json!({ "n": n }),
        messages: vec![message("status.doctor-appointment", "0:registered"), message("registry", "1:task")],
    }
}

/// Group commit of intake (P-11): one statement registers many requests, each with its row,
/// its "registered" and "queued" audit rows in order and its outbox rows; a request id already
/// registered (a republished request) gets nothing new.
#[tokio::test]
async fn p11_many_registrations_commit_in_one_statement_and_a_republished_one_adds_nothing() {
    use qyzmet::store::Store;
    let env = TestEnv::new().await;
    let ids: Vec<uuid::Uuid> = (0..4).map(|_| uuid::Uuid::new_v4()).collect();
    let mut conn = env.store.pool().acquire().await.expect("connection");
    let earlier = registration(ids[2], 2);
    let first = Store::register_all(&mut conn, &[&earlier]).await.expect("the earlier one");
    assert_eq!(first.iter().map(Vec::len).collect::<Vec<_>>(), [2]);
    let all: Vec<_> = ids.iter().enumerate().map(|(n, id)| registration(*id, n + 10)).collect();
    let refs: Vec<_> = all.iter().collect();
    let written = Store::register_all(&mut conn, &refs).await.expect("one statement");
    drop(conn);
    let counts: Vec<usize> = written.iter().map(Vec::len).collect();
    assert_eq!(counts, [2, 2, 0, 2], "an Outcome and a task each, except for the id registered before");
    for (i, id) in ids.iter().enumerate() {
        let row = env.store.get_request(*id).await.expect("read").expect("row");
        let kept = if i == 2 { 2 } else { i + 10 };
        assert_eq!(row.request_number, Some(format!("S1-AST-20261202-{kept:07}")), "the first registration stands");
        assert_eq!(row.step.as_deref(), Some("registry"));
        let events: Vec<(String, String)> =
            env.store.history_of(*id).await.expect("history").into_iter().map(|h| (h.step, h.event)).collect();
        let events: Vec<(&str, &str)> = events.iter().map(|(s, e)| (s.as_str(), e.as_str())).collect();
        assert_eq!(events, [("intake", "registered"), ("registry", "queued")], "once each, in order");
        let owned: Vec<String> = sqlx::query_scalar("SELECT message_id FROM outbox WHERE id = ANY($1)")
            .bind(&written[i])
            .fetch_all(env.store.pool())
            .await
            .expect("outbox rows");
        assert!(owned.iter().all(|m| m.starts_with(&id.to_string())), "{owned:?} belong to {id}");
    }
    assert!(env.store.audit_breaks(None).await.expect("verify").is_empty(), "every audit chain holds");
    env.cleanup().await;
}

/// Tasks read their requests through one batch reader: reads asked for together each get their
/// own row, an id with no request gets none, and an id asked for twice (a redelivered task) gets
/// its row both times.
#[tokio::test]
async fn tasks_reading_together_each_get_their_own_row_none_for_an_unknown_id_and_twice_for_a_repeated_one() {
    use qyzmet::pipeline::batch::Reads;
    use qyzmet::store::Store;
    let env = TestEnv::new().await;
    let ids: Vec<uuid::Uuid> = (0..3).map(|_| uuid::Uuid::new_v4()).collect();
    let all: Vec<_> = ids.iter().enumerate().map(|(n, id)| registration(*id, n + 10)).collect();
    let refs: Vec<_> = all.iter().collect();
    let mut conn = env.store.pool().acquire().await.expect("connection");
    Store::register_all(&mut conn, &refs).await.expect("registered");
    drop(conn);
    let reads = Reads::start(env.store.clone());
    let unknown = uuid::Uuid::new_v4();
    let asked = [ids[0], ids[1], unknown, ids[2], ids[0]];
    let rows = futures_util::future::join_all(asked.iter().map(|id| reads.get(*id))).await;
    let got: Vec<Option<(uuid::Uuid, Option<String>)>> =
        rows.into_iter().map(|r| r.expect("read").map(|row| (row.request_id, row.request_number))).collect();
    let number = |n: usize| Some(format!("S1-AST-20261202-{n:07}"));
    assert_eq!(
        got,
        [
            Some((ids[0], number(10))),
            Some((ids[1], number(11))),
            None,
            Some((ids[2], number(12))),
            Some((ids[0], number(10))),
        ]
    );
    env.cleanup().await;
}

/// A worker process killed while its batched commit is inside PostgreSQL — the statement sent,
/// waiting for row locks the test holds — loses nothing and doubles nothing: whether the
/// orphaned statement then commits or not, every request ends in exactly one final outcome,
/// passes its registry step once, and the outbox drains.
#[tokio::test]
async fn a_worker_killed_inside_a_batched_commit_loses_nothing_and_doubles_nothing() {
    let env = TestEnv::new().await;
    let (others, reqs) = queued_for_registry(&env, 40).await;
    let ids: Vec<uuid::Uuid> = reqs.iter().map(id_of).collect();
    let mut locks = env.store.pool().begin().await.expect("begin");
    sqlx::query("SELECT 1 FROM requests WHERE request_id = ANY($1) FOR UPDATE")
        .bind(&ids)
        .execute(&mut *locks)
        .await
        .expect("lock the rows");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_qyzmet"))
        .args(["worker", "registry", "--concurrency", "64"])
        .envs(env.child_env())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn qyzmet worker registry");
    // Its batch writer's statement waits for the locks: the commit is in flight.
    let blocked = async {
        loop {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
                 AND wait_event_type = 'Lock' AND query LIKE 'WITH input AS%'",
            )
            .fetch_one(env.store.pool())
            .await
            .expect("activity");
            if n >= 1 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(EVENT_TIMEOUT, blocked).await.expect("the batched advances reach the database");
    child.start_kill().expect("SIGKILL");
    let _ = child.wait().await;
    locks.commit().await.expect("release the rows");
    let replacement = env
        .start(
            regulations(),
            Options {
                pools: vec![(PoolName::Registry, 8)],
                sweeper: false,
                console: false,
                name: "replacement".into(),
            },
        )
        .await;
    for id in &ids {
        assert_eq!(env.final_outcome(*id).await.status, Status::Completed);
    }
    let drained = async {
        while env.queue_ready("qyzmet.registry").await > 0 || env.store.outbox_backlog().await.unwrap_or(1) > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(EVENT_TIMEOUT, drained).await.expect("everything drains");
    for id in &ids {
        let finals = env.outcomes_of(*id).await.into_iter().filter(|o| o.status.is_final()).count();
        assert_eq!(finals, 1, "exactly one final outcome for {id}");
        let passed = env
            .store
            .history_of(*id)
            .await
            .expect("history")
            .iter()
            .filter(|h| h.step == "registry" && h.event == "passed")
            .count();
        assert_eq!(passed, 1, "{id} passed its registry step once");
    }
    assert!(env.store.audit_breaks(None).await.expect("verify").is_empty(), "every audit chain holds");
    replacement.shutdown(Duration::from_secs(5)).await;
    others.shutdown(Duration::from_secs(5)).await;
    env.cleanup().await;
}
