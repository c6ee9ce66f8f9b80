//! Nothing lost, nothing doubled: workers killed mid-step, and a worker process killed with
//! SIGKILL while requests flow through it.

use std::time::Duration;

use serde_json::json;

use qyzmet::contract::Status;
use qyzmet::regulations::PoolName;
use qyzmet::startup::Options;

use crate::common::*;

#[tokio::test]
async fn a_worker_killed_mid_step_loses_nothing_and_the_request_gets_one_outcome() {
    let env = TestEnv::new().await;
    // Everything but the result pool runs normally.
    let rest = env
        .start(
            regulations(),
            Options {
                pools: vec![(PoolName::Intake, 2), (PoolName::Registry, 2), (PoolName::Review, 2)],
                sweeper: true,
                name: "rest".into(),
            },
        )
        .await;
    let reqs: Vec<_> = (0..5)
        .map(|_| {
            request(
                "doctor-appointment",
                "akmola",
                "portal",
                json!({ "iin": who::CITIZEN }),
                who::AKMOLA_PHC,
                json!({}),
            )
        })
        .collect();
    for r in &reqs {
        env.publish_request(r).await;
    }
    // Wait until every request waits in the result queue, then start a result worker and kill
    // it while it holds deliveries (prefetch 5, killed before it can ack them all).
    let queued = async {
        while env.queue_ready("qyzmet.result").await < 5 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(EVENT_TIMEOUT, queued).await.expect("requests reach the result queue");
    let doomed = env
        .start(regulations(), Options { pools: vec![(PoolName::Result, 5)], sweeper: false, name: "doomed".into() })
        .await;
    let taken = async {
        while env.queue_ready("qyzmet.result").await == 5 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    tokio::time::timeout(EVENT_TIMEOUT, taken).await.expect("the doomed worker takes deliveries");
    doomed.abort().await;
    let survivor = env
        .start(regulations(), Options { pools: vec![(PoolName::Result, 2)], sweeper: false, name: "survivor".into() })
        .await;
    for r in &reqs {
        let o = env.final_outcome(id_of(r)).await;
        assert_eq!(o.status, Status::Completed);
    }
    let drained = async {
        while env.queue_ready("qyzmet.result").await > 0 || env.store.outbox_backlog().await.unwrap_or(1) > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(EVENT_TIMEOUT, drained).await.expect("everything drains");
    for r in &reqs {
        let finals = env.outcomes_of(id_of(r)).await.into_iter().filter(|o| o.status.is_final()).count();
        assert_eq!(finals, 1, "exactly one final outcome for {}", id_of(r));
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
    let reqs: Vec<_> = (0..40)
        .map(|_| {
            request(
                "doctor-appointment",
                "akmola",
                "provider",
                json!({ "iin": who::CITIZEN }),
                who::AKMOLA_PHC,
                json!({}),
            )
        })
        .collect();
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
            Options { pools: vec![(PoolName::Registry, 4)], sweeper: false, name: "replacement".into() },
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
