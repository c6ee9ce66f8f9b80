//! The audit trail (P-49): insert-only for the role the pipeline runs as, and tamper-evident
//! through a hash chain per request that `qyzmet audit verify` checks.

use std::time::Duration;

use serde_json::{Value, json};

use qyzmet::contract::Status;
use qyzmet::store::Store;

use crate::common::*;

fn s1() -> Value {
    request("doctor-appointment", "akmola", "portal", json!({ "iin": who::CITIZEN }), who::AKMOLA_PHC, json!({}))
}

/// `qyzmet audit verify` as an operator runs it: (exit success, standard output).
fn audit_verify(env: &TestEnv) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_qyzmet"))
        .args(["audit", "verify"])
        .envs(env.child_env())
        .output()
        .expect("qyzmet audit verify runs");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

async fn sqlstate(store: &Store, sql: &str) -> Option<String> {
    match sqlx::query(sqlx::AssertSqlSafe(sql.to_owned())).execute(store.pool()).await {
        Ok(_) => None,
        Err(sqlx::Error::Database(e)) => e.code().map(|c| c.into_owned()),
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test]
async fn p49_workers_cannot_rewrite_the_audit_trail_or_outcomes() {
    let env = TestEnv::new().await;
    let app = env.start_all().await;
    let r = s1();
    env.publish_request(&r).await;
    assert_eq!(env.final_outcome(id_of(&r)).await.status, Status::Completed);
    app.shutdown(Duration::from_secs(5)).await;
    // The role qyzmet runs as (the test's worker login, a member of qyzmet_worker).
    let worker = Store::connect(&env.settings.database_url, 1).await.expect("worker connection");
    for sql in [
        "UPDATE step_history SET event = 'forged'",
        "DELETE FROM step_history",
        "UPDATE outcomes SET status = 'refused'",
        "DELETE FROM outcomes",
        "UPDATE registry_persons SET full_name = 'x'",
        "CREATE TABLE sneaky (id int)",
    ] {
        assert_eq!(sqlstate(&worker, sql).await.as_deref(), Some("42501"), "{sql} must be refused");
    }
    // What it needs, it has.
    assert_eq!(sqlstate(&worker, "SELECT count(*) FROM requests").await, None);
    worker.close().await;
    env.cleanup().await;
}

#[tokio::test]
async fn p49_audit_verify_finds_a_changed_a_removed_and_a_cut_off_row() {
    let env = TestEnv::new().await;
    let app = env.start_all().await;
    let reqs: Vec<Value> = (0..4).map(|_| s1()).collect();
    for r in &reqs {
        env.publish_request(r).await;
    }
    for r in &reqs {
        assert_eq!(env.final_outcome(id_of(r)).await.status, Status::Completed);
    }
    app.shutdown(Duration::from_secs(5)).await;
    assert_eq!(env.store.audit_breaks(None).await.expect("check"), vec![]);
    let (ok, out) = audit_verify(&env);
    assert!(ok && out.contains("intact"), "{out}");

    // Someone with the owner's rights edits, removes and cuts rows of three requests.
    let rows = |id: uuid::Uuid| {
        let store = env.store.clone();
        async move {
            let ids: Vec<(i64,)> = sqlx::query_as("SELECT id FROM step_history WHERE request_id = $1 ORDER BY id")
                .bind(id)
                .fetch_all(store.pool())
                .await
                .expect("rows");
            ids.into_iter().map(|(i,)| i).collect::<Vec<_>>()
        }
    };
    let (changed, removed, cut) = (id_of(&reqs[0]), id_of(&reqs[1]), id_of(&reqs[2]));
    let changed_rows = rows(changed).await;
    sqlx::query("UPDATE step_history SET detail = '{\"forged\": true}' WHERE id = $1")
        .bind(changed_rows[1])
        .execute(env.store.pool())
        .await
        .expect("edit");
    let removed_rows = rows(removed).await;
    sqlx::query("DELETE FROM step_history WHERE id = $1")
        .bind(removed_rows[1])
        .execute(env.store.pool())
        .await
        .expect("delete");
    let cut_rows = rows(cut).await;
    sqlx::query("DELETE FROM step_history WHERE id = $1")
        .bind(cut_rows[cut_rows.len() - 1])
        .execute(env.store.pool())
        .await
        .expect("cut");

    let breaks = env.store.audit_breaks(None).await.expect("check");
    let found: Vec<(uuid::Uuid, i64, &str)> = breaks.iter().map(|b| (b.request_id, b.id, b.problem.as_str())).collect();
    assert!(found.contains(&(changed, changed_rows[1], "changed")), "{found:?}");
    assert!(found.contains(&(removed, removed_rows[2], "link")), "{found:?}");
    assert!(found.iter().any(|(r, _, p)| *r == cut && *p == "truncated"), "{found:?}");
    assert!(found.iter().all(|(r, _, _)| *r != id_of(&reqs[3])), "the untouched request is intact: {found:?}");
    let (ok, out) = audit_verify(&env);
    assert!(!ok, "audit verify fails on a broken trail");
    for id in [changed, removed, cut] {
        assert!(out.contains(&id.to_string()), "{out}");
    }
    env.cleanup().await;
}
