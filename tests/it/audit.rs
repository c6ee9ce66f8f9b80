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
    sqlstate_of(sqlx::query(sqlx::AssertSqlSafe(sql.to_owned())).execute(store.pool()).await)
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

#[tokio::test]
async fn p49_audit_verify_finds_the_cut_off_tail_of_a_request_still_in_progress() {
    let env = TestEnv::new().await;
    let app = env.start_all().await;
    // A portal licence application waits at its payment step: its trail has no final event
    // that a missing tail would be noticed by.
    let r = request(
        "medical-licence",
        "aktobe",
        "portal",
        json!({ "bin": who::CLINIC }),
        who::AKTOBE_HEALTH,
        json!({ "kind": "issue", "activity": "стоматология" }),
    );
    env.publish_request(&r).await;
    let id = id_of(&r);
    env.wait_state(id, "waiting").await;
    app.shutdown(Duration::from_secs(5)).await;
    assert_eq!(env.store.audit_breaks(Some(id)).await.expect("check"), vec![]);

    // Someone with the owner's rights removes the request's latest audit row ("waiting").
    let (last,): (i64,) = sqlx::query_as("SELECT max(id) FROM step_history WHERE request_id = $1")
        .bind(id)
        .fetch_one(env.store.pool())
        .await
        .expect("last row");
    sqlx::query("DELETE FROM step_history WHERE id = $1").bind(last).execute(env.store.pool()).await.expect("cut");

    let breaks = env.store.audit_breaks(None).await.expect("check");
    let found: Vec<(uuid::Uuid, &str)> = breaks.iter().map(|b| (b.request_id, b.problem.as_str())).collect();
    assert_eq!(found, vec![(id, "truncated")], "the trail no longer ends at the request's head");
    let (ok, out) = audit_verify(&env);
    assert!(!ok && out.contains(&format!("request {id} row ")) && out.contains("stops before"), "{out}");

    // With every row gone, the request's head still tells that it had a trail.
    sqlx::query("DELETE FROM step_history WHERE request_id = $1")
        .bind(id)
        .execute(env.store.pool())
        .await
        .expect("wipe");
    let (ok, out) = audit_verify(&env);
    assert!(!ok && out.contains(&format!("request {id}: every row of its trail was removed")), "{out}");
    env.cleanup().await;
}

#[tokio::test]
async fn p48_after_the_retention_period_personal_data_are_purged_and_the_audit_skeleton_stays() {
    use qyzmet::pipeline::retention::run_once;
    let env = TestEnv::new().await;
    let app = env.start_all().await;
    let req = appointment_at_provider();
    let id = id_of(&req);
    env.publish_request(&req).await;
    let done = env.final_outcome(id).await;
    assert_eq!(done.status, Status::Completed);
    let history_before = env.store.history_of(id).await.expect("history").len();
    let stored = |what: &'static str| {
        let sql = match what {
            "request" => {
                "SELECT body::text || facts::text || coalesce(applicant_id, '') FROM requests WHERE request_id = $1"
            }
            _ => "SELECT body::text || coalesce(document::text, '') FROM outcomes WHERE request_id = $1",
        };
        let store = env.store.clone();
        async move {
            let (text,): (String,) = sqlx::query_as(sql).bind(id).fetch_one(store.pool()).await.expect("row");
            text
        }
    };
    assert!(stored("request").await.contains(who::CITIZEN) && stored("outcome").await.contains(who::CITIZEN));

    // The repository's period (three years) keeps it; the pass runs as the pipeline's own role.
    let kept = run_once(&app.ctx.store, &app.ctx.regs, false).await.expect("retention pass");
    assert!(kept.iter().all(|p| p.due == 0 && p.purged == 0), "{kept:?}");
    // A shortened period: a dry run counts it and changes nothing, then a pass purges it.
    let mut short = regulations();
    short.override_retention(chrono::Duration::zero());
    let dry = run_once(&app.ctx.store, &short, true).await.expect("dry run");
    assert!(dry.iter().any(|p| p.due == 1 && p.purged == 0), "{dry:?}");
    assert!(stored("request").await.contains(who::CITIZEN), "a dry run changes nothing");
    let ran = run_once(&app.ctx.store, &short, false).await.expect("retention pass");
    assert_eq!(ran.iter().map(|p| p.purged).sum::<usize>(), 1, "{ran:?}");
    for what in ["request", "outcome"] {
        let text = stored(what).await;
        assert!(!text.contains(who::CITIZEN) && !text.contains("Сапарова"), "{what} keeps personal data: {text}");
    }
    // The skeleton stays: number, service, steps and times, the outcome's status and code.
    let row = env.store.get_request(id).await.expect("row").expect("the request stays");
    assert_eq!(row.request_number, done.request_number);
    assert_eq!(row.state, "completed");
    assert_eq!(env.store.history_of(id).await.expect("history").len(), history_before);
    let (status, step): (String, Option<String>) =
        sqlx::query_as("SELECT status, step FROM outcomes WHERE request_id = $1")
            .bind(id)
            .fetch_one(env.store.pool())
            .await
            .expect("outcome");
    assert_eq!((status.as_str(), step.as_deref()), ("completed", Some("result")));
    let (ok, report) = audit_verify(&env);
    assert!(ok, "the audit trail is untouched: {report}");
    // Once is enough: nothing is due any more.
    let again = run_once(&app.ctx.store, &short, false).await.expect("retention pass");
    assert!(again.iter().all(|p| p.due == 0), "{again:?}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_qyzmet"))
        .args(["retention", "run", "--dry-run"])
        .envs(env.child_env())
        .output()
        .expect("qyzmet retention run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("keep  1095 days"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    app.shutdown(Duration::from_secs(5)).await;
    env.cleanup().await;
}
