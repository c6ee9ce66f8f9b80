//! Bounded waits: while RabbitMQ blocks publishers (a memory alarm), deadlines are still
//! enforced — the sweeper records the refusals in PostgreSQL — and once the alarm clears every
//! outcome is published exactly once.

use std::time::Duration;

use qyzmet::contract::Status;
use qyzmet::regulations::PoolName;

use crate::common::*;

/// Raises the alarm for its lifetime; clears it when dropped, even if the test fails, so the
/// broker is never left blocking the other tests.
struct MemoryAlarm;

impl MemoryAlarm {
    fn raise() -> MemoryAlarm {
        rabbitmqctl(&["set_vm_memory_high_watermark", "absolute", "1"]);
        MemoryAlarm
    }
}

impl Drop for MemoryAlarm {
    fn drop(&mut self) {
        rabbitmqctl(&["set_vm_memory_high_watermark", "0.4"]);
    }
}

#[tokio::test]
async fn exclusive_under_a_memory_alarm_deadlines_are_still_enforced_and_outcomes_published_once_after() {
    let mut env = TestEnv::new().await;
    env.settings.confirm_timeout_ms = 1000;
    env.settings.outbox_relay_secs = 2;
    let mut regs = regulations();
    // Staff never decide; the review deadline passes during the alarm.
    regs.override_step_deadline(PoolName::Review, chrono::Duration::seconds(6));
    let app = env.start(regs, qyzmet::startup::Options::all(4)).await;
    let reqs: Vec<_> = (0..8).map(|_| licence_request("provider", "issue")).collect();
    for r in &reqs {
        env.publish_request(r).await;
    }
    for r in &reqs {
        env.wait_step(id_of(r), "review").await;
        env.wait_state(id_of(r), "waiting").await;
    }
    let before = env.outcome_deliveries().await.len();
    let alarm = MemoryAlarm::raise();
    // The deadline passes while nothing can be published: the refusals are recorded anyway.
    let recorded = async {
        loop {
            let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM outcomes WHERE kind = 'deadline_exceeded'")
                .fetch_one(env.store.pool())
                .await
                .expect("count");
            if n == reqs.len() as i64 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(EVENT_TIMEOUT, recorded).await.expect("the sweeper refuses overdue requests during the alarm");
    let stuck = env.store.outbox_backlog().await.expect("backlog");
    assert!(stuck >= reqs.len() as i64, "the refusals wait in the outbox while publishing is blocked ({stuck})");
    assert_eq!(env.outcome_deliveries().await.len(), before, "nothing was published during the alarm");
    drop(alarm);
    for r in &reqs {
        let o = env.final_outcome(id_of(r)).await;
        assert_eq!(o.status, Status::Refused);
        assert_eq!(o.reason.expect("reason").kind, "deadline_exceeded");
    }
    let drained = async {
        while env.store.outbox_backlog().await.unwrap_or(1) > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(EVENT_TIMEOUT, drained).await.expect("the outbox drains after the alarm");
    app.shutdown(Duration::from_secs(5)).await;
    for r in &reqs {
        let finals = env.outcomes_of(id_of(r)).await.into_iter().filter(|o| o.status.is_final()).count();
        assert_eq!(finals, 1, "one final outcome for {}", id_of(r));
    }
    env.cleanup().await;
}
