//! The operator console and the status API (P-41, P-42, P-46) over a real pipeline: sign-in,
//! roles, CSRF, searches recorded with their reason, the deadline report, dead letters moved
//! off the broker and replayed or discarded, and every act in the operators' audit trail.

use std::time::Duration;

use serde_json::{Value, json};

use qyzmet::contract::{EXCHANGE_REQUESTS, Status};

use crate::common::*;

pub const OPERATOR: (&str, &str, &str) = ("aigerim", "operator", "aigerim-passphrase-1");
pub const VIEWER: (&str, &str, &str) = ("daniyar", "viewer", "daniyar-passphrase-2");
pub const TOKEN: (&str, &str, &str) = ("astana-con", "viewer", "0123456789abcdef-test-token");

/// Signs in; returns the `Cookie` header value of the session.
pub async fn sign_in(addr: std::net::SocketAddr, name: &str, password: &str) -> String {
    let form = format!("name={name}&password={password}&next=/console");
    let r = http(addr, "POST", "/console/login", &[("Content-Type", "application/x-www-form-urlencoded")], &form).await;
    assert_eq!(r.status, 303, "sign-in of {name} answered {}: {}", r.status, r.body);
    let set = r.header("set-cookie").expect("a session cookie");
    assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict"), "{set}");
    set.split(';').next().expect("cookie").to_owned()
}

/// GET with the session cookie.
pub async fn page(addr: std::net::SocketAddr, cookie: &str, path: &str) -> Reply {
    http(addr, "GET", path, &[("Cookie", cookie)], "").await
}

/// POST a form with the session cookie.
pub async fn post(addr: std::net::SocketAddr, cookie: &str, path: &str, form: &str) -> Reply {
    http(addr, "POST", path, &[("Cookie", cookie), ("Content-Type", "application/x-www-form-urlencoded")], form).await
}

/// The CSRF token a page's forms carry.
fn csrf(body: &str) -> String {
    let at = body.find("name=\"csrf\" value=\"").expect("a form with a CSRF token") + 19;
    body[at..].split('"').next().expect("token").to_owned()
}

async fn console_env() -> (TestEnv, qyzmet::startup::Running) {
    let mut env = TestEnv::new().await;
    env.enable_console(&[OPERATOR, VIEWER], &[TOKEN]).await;
    let app = env.start_all().await;
    (env, app)
}

async fn actions(env: &TestEnv) -> Vec<(String, String, Option<String>, Option<String>)> {
    sqlx::query_as("SELECT operator, action, target, why FROM operator_actions ORDER BY id")
        .fetch_all(env.store.pool())
        .await
        .expect("operator actions")
}

/// Waits until an SQL count reaches `n`.
async fn wait_count(env: &TestEnv, sql: &str, n: i64) {
    let wait = async {
        loop {
            let (c,): (i64,) =
                sqlx::query_as(sqlx::AssertSqlSafe(sql.to_owned())).fetch_one(env.store.pool()).await.expect("count");
            if c >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(EVENT_TIMEOUT, wait).await.unwrap_or_else(|_| panic!("never {n}: {sql}"));
}

#[tokio::test]
async fn the_console_and_api_need_sign_in_and_a_wrong_password_is_refused_and_recorded() {
    let (env, app) = console_env().await;
    let addr = app.http_addr;
    let r = http(addr, "GET", "/console/deadlines", &[], "").await;
    assert_eq!(r.status, 303);
    assert_eq!(r.header("location"), Some("/console/login?next=/console/deadlines"));
    let r = http(addr, "GET", &format!("/api/v1/requests/{}", uuid::Uuid::new_v4()), &[], "").await;
    assert_eq!(r.status, 401, "{}", r.body);
    let r = http(addr, "GET", "/api/v1/requests?number=1", &[("Authorization", "Bearer wrong")], "").await;
    assert_eq!(r.status, 401);

    let form = "name=aigerim&password=not-it&next=/console";
    let r = http(addr, "POST", "/console/login", &[("Content-Type", "application/x-www-form-urlencoded")], form).await;
    assert_eq!(r.status, 401);
    assert!(r.header("set-cookie").is_none());
    assert!(r.body.contains("Wrong account or password"));

    let cookie = sign_in(addr, OPERATOR.0, OPERATOR.2).await;
    let overview = page(addr, &cookie, "/console").await;
    assert_eq!(overview.status, 200);
    assert!(overview.body.contains("qyzmet.intake") && overview.body.contains("Worker processes"), "{}", overview.body);
    assert!(
        overview.header("content-security-policy").is_some_and(|c| c.contains("default-src 'none'")),
        "no inline anything"
    );
    let css = page(addr, &cookie, "/console/static/console.css").await;
    assert_eq!(css.status, 200);
    assert!(css.header("content-type").is_some_and(|t| t.starts_with("text/css")));

    let logout = post(addr, &cookie, "/console/logout", &format!("csrf={}", csrf(&overview.body))).await;
    assert_eq!(logout.status, 303);
    assert_eq!(page(addr, &cookie, "/console").await.status, 303, "the session ended");

    let acts = actions(&env).await;
    let names: Vec<(&str, &str)> = acts.iter().map(|(o, a, _, _)| (o.as_str(), a.as_str())).collect();
    assert_eq!(names, [("aigerim", "sign_in_failed"), ("aigerim", "sign_in"), ("aigerim", "sign_out")]);
    app.shutdown(Duration::from_secs(5)).await;
    env.cleanup().await;
}

#[tokio::test]
async fn p41_p42_status_api_and_search_find_a_request_and_a_search_by_iin_needs_and_records_a_reason() {
    let (env, app) = console_env().await;
    let addr = app.http_addr;
    let req =
        request("doctor-appointment", "akmola", "portal", json!({ "iin": who::CITIZEN }), who::AKMOLA_PHC, json!({}));
    env.publish_request(&req).await;
    let done = env.final_outcome(id_of(&req)).await;
    assert_eq!(done.status, Status::Completed);
    let number = done.request_number.clone().expect("a request number");
    let bearer = format!("Bearer {}", TOKEN.2);

    // P-41: one request by id and by number, with its status, deadline and history.
    let by_id =
        http(addr, "GET", &format!("/api/v1/requests/{}", id_of(&req)), &[("Authorization", &bearer)], "").await;
    assert_eq!(by_id.status, 200, "{}", by_id.body);
    let v: Value = serde_json::from_str(&by_id.body).expect("json");
    assert_eq!(v["status"], "completed");
    assert_eq!(v["request_number"], json!(number));
    assert_eq!(v["applicant"], "8504******25");
    assert!(v["service_deadline"].is_string(), "{v}");
    assert!(v["document"].is_object(), "the result appears once it has arrived: {v}");
    let steps: Vec<&str> =
        v["history"].as_array().expect("history").iter().filter_map(|h| h["step"].as_str()).collect();
    assert!(steps.contains(&"review") && steps.contains(&"result"), "{steps:?}");
    let mut outside_document = v.clone();
    outside_document["document"] = Value::Null;
    assert!(
        !outside_document.to_string().contains(who::CITIZEN),
        "the applicant appears masked everywhere but in their own signed document"
    );
    let by_number =
        http(addr, "GET", &format!("/api/v1/requests?number={number}"), &[("Authorization", &bearer)], "").await;
    assert_eq!(serde_json::from_str::<Value>(&by_number.body).expect("json")["request_id"], v["request_id"]);

    // P-42: an applicant's history, only with a reason, which is recorded.
    let path = format!("/api/v1/applicants/{}/requests", who::CITIZEN);
    let no_reason = http(addr, "GET", &path, &[("Authorization", &bearer)], "").await;
    assert_eq!(no_reason.status, 400, "{}", no_reason.body);
    let hist = http(addr, "GET", &format!("{path}?reason=citizen-call-1414"), &[("Authorization", &bearer)], "").await;
    assert_eq!(hist.status, 200, "{}", hist.body);
    let h: Value = serde_json::from_str(&hist.body).expect("json");
    assert_eq!(h["requests"].as_array().map(Vec::len), Some(1), "{h}");

    // The console's search: a number finds the request; an IIN without a reason finds nothing.
    let cookie = sign_in(addr, VIEWER.0, VIEWER.2).await;
    let found = page(addr, &cookie, &format!("/console/requests?q={number}")).await;
    assert!(found.body.contains(&format!("/console/requests/{}", id_of(&req))), "{}", found.body);
    let refused = page(addr, &cookie, &format!("/console/requests?q={}", who::CITIZEN)).await;
    assert!(refused.body.contains("needs a reason") && !refused.body.contains(&id_of(&req).to_string()));
    let with_reason = page(addr, &cookie, &format!("/console/requests?q={}&reason=complaint+42", who::CITIZEN)).await;
    assert!(with_reason.body.contains(&id_of(&req).to_string()));
    assert!(
        !with_reason.body.contains(who::CITIZEN) || with_reason.body.contains("value=\"850401300125\""),
        "the IIN shows only in the search box the person typed it in"
    );

    let timeline = page(addr, &cookie, &format!("/console/requests/{}", id_of(&req))).await;
    assert_eq!(timeline.status, 200);
    assert!(timeline.body.contains("id=\"timeline\"") && timeline.body.contains("on time"), "{}", timeline.body);
    assert!(timeline.body.contains("valid: result document"), "the document verifies: {}", timeline.body);
    assert!(!timeline.body.contains(who::CITIZEN));

    let acts = actions(&env).await;
    let searches: Vec<_> = acts.iter().filter(|a| a.1 == "search_applicant").collect();
    assert_eq!(searches.len(), 2, "{acts:?}");
    assert_eq!(searches[0].0, "astana-con");
    assert_eq!(searches[0].2.as_deref(), Some("8504******25"));
    assert_eq!(searches[0].3.as_deref(), Some("citizen-call-1414"));
    assert_eq!(searches[1].3.as_deref(), Some("complaint 42"));
    app.shutdown(Duration::from_secs(5)).await;
    env.cleanup().await;
}

#[tokio::test]
async fn p46_the_deadline_page_csv_and_report_sla_show_the_same_steps_against_their_deadlines() {
    let (env, app) = console_env().await;
    let addr = app.http_addr;
    let req =
        request("doctor-appointment", "akmola", "portal", json!({ "iin": who::CITIZEN }), who::AKMOLA_PHC, json!({}));
    env.publish_request(&req).await;
    env.final_outcome(id_of(&req)).await;
    let cookie = sign_in(addr, VIEWER.0, VIEWER.2).await;
    let html = page(addr, &cookie, "/console/deadlines").await;
    assert_eq!(html.status, 200);
    assert!(html.body.contains("id=\"sla\"") && html.body.contains("doctor-appointment"), "{}", html.body);
    let csv = page(addr, &cookie, "/console/deadlines.csv").await;
    assert!(csv.header("content-type").is_some_and(|t| t.starts_with("text/csv")));
    let lines: Vec<&str> = csv.body.lines().collect();
    assert!(lines[0].starts_with("service,region,channel,step,step_index,count,on_time_share"), "{}", csv.body);
    let review = lines.iter().find(|l| l.contains(",review,")).expect("a review row");
    assert!(review.starts_with("doctor-appointment,akmola,portal,review,1,1,1.0000,"), "{review}");

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_qyzmet"))
        .args(["report", "sla", "--format", "csv"])
        .envs(env.child_env())
        .output()
        .expect("qyzmet report sla");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), csv.body, "the CLI and the page report the same figures");
    app.shutdown(Duration::from_secs(5)).await;
    env.cleanup().await;
}

#[tokio::test]
async fn dead_letters_are_moved_off_the_broker_replayed_by_operators_only_and_every_act_is_recorded() {
    let (env, app) = console_env().await;
    let addr = app.http_addr;
    env.publish_raw(EXCHANGE_REQUESTS, "doctor-appointment", b"{not json at all".to_vec()).await;
    wait_count(&env, "SELECT count(*) FROM dead_letters", 1).await;
    env.wait_queue_empty(qyzmet::broker::QUEUE_DEAD).await;
    let (id, reason, queue): (i64, String, String) =
        sqlx::query_as("SELECT id, reason, source_queue FROM dead_letters")
            .fetch_one(env.store.pool())
            .await
            .expect("row");
    assert_eq!((reason.as_str(), queue.as_str()), ("not_json", "qyzmet.intake"));

    // A dead letter that replay can mend: a valid request that died while its pool was down.
    let mut good =
        request("doctor-appointment", "akmola", "portal", json!({ "iin": who::CITIZEN }), who::AKMOLA_PHC, json!({}));
    sign_as(&proper_signer(&good), &mut good);
    let body = serde_json::to_vec(&good).expect("json");
    let (mended,): (i64,) = sqlx::query_as(
        "INSERT INTO dead_letters (digest, reason, source_queue, routing_key, message_id, headers, body, dead_at) \
         VALUES (sha256($1), 'delivery_limit', 'qyzmet.intake', 'doctor-appointment', $2, '{}', $1, now()) RETURNING id",
    )
    .bind(&body)
    .bind(id_of(&good).to_string())
    .fetch_one(env.store.pool())
    .await
    .expect("dead letter");

    // A viewer sees it and its masked preview but cannot act; a form without the token fails.
    let viewer = sign_in(addr, VIEWER.0, VIEWER.2).await;
    let list = page(addr, &viewer, "/console/dead-letters").await;
    assert!(list.body.contains("not_json") && list.body.contains("delivery_limit"), "{}", list.body);
    assert!(!list.body.contains("Replay all"), "viewers get no replay buttons");
    let one = page(addr, &viewer, &format!("/console/dead-letters/{mended}")).await;
    assert!(one.body.contains("8504******25") && !one.body.contains(who::CITIZEN), "masked preview: {}", one.body);
    let token = csrf(&one.body);
    let forbidden =
        post(addr, &viewer, &format!("/console/dead-letters/{mended}/replay"), &format!("csrf={token}")).await;
    assert_eq!(forbidden.status, 403);
    let operator = sign_in(addr, OPERATOR.0, OPERATOR.2).await;
    let stale = post(addr, &operator, &format!("/console/dead-letters/{mended}/replay"), "csrf=forged").await;
    assert_eq!(stale.status, 403, "CSRF");

    // The operator replays the mendable one: it goes through intake and completes.
    let token = csrf(&page(addr, &operator, &format!("/console/dead-letters/{mended}")).await.body);
    let replayed =
        post(addr, &operator, &format!("/console/dead-letters/{mended}/replay"), &format!("csrf={token}")).await;
    assert_eq!(replayed.status, 303, "{}", replayed.body);
    assert_eq!(env.final_outcome(id_of(&good)).await.status, Status::Completed);
    let again =
        post(addr, &operator, &format!("/console/dead-letters/{mended}/replay"), &format!("csrf={token}")).await;
    assert_eq!(again.status, 400, "a letter is replayed once");

    // The unreadable one, replayed, reaches intake again and is dead-lettered again there.
    post(addr, &operator, &format!("/console/dead-letters/{id}/replay"), &format!("csrf={token}")).await;
    wait_count(&env, "SELECT count(*) FROM dead_letters WHERE reason = 'not_json'", 2).await;
    let discard =
        post(addr, &operator, &format!("/console/dead-letters/{}/discard", id + 2), &format!("csrf={token}&why="))
            .await;
    assert_eq!(discard.status, 400, "a discard needs a reason");
    let newest: (i64,) =
        sqlx::query_as("SELECT max(id) FROM dead_letters").fetch_one(env.store.pool()).await.expect("id");
    let discard = post(
        addr,
        &operator,
        &format!("/console/dead-letters/{}/discard", newest.0),
        &format!("csrf={token}&why=garbage+from+a+test+client"),
    )
    .await;
    assert_eq!(discard.status, 303);

    let audit = page(addr, &viewer, "/console/audit").await;
    for what in ["replay", "discard", "garbage from a test client"] {
        assert!(audit.body.contains(what), "the audit page lacks {what}");
    }
    let acts = actions(&env).await;
    let acted: Vec<(&str, &str)> =
        acts.iter().filter(|a| a.1 != "sign_in").map(|a| (a.0.as_str(), a.1.as_str())).collect();
    assert_eq!(acted, [("aigerim", "replay"), ("aigerim", "replay"), ("aigerim", "discard")]);
    let changed = sqlx::query("UPDATE operator_actions SET why = 'edited'").execute(env.store.pool()).await;
    assert!(changed.is_err(), "the operators' audit trail is append-only, even for the owner");
    let (_, metrics) = http_get(addr, "/metrics").await;
    assert!(metrics.contains("qyzmet_dead_letters_open"), "{metrics}");
    assert!(metrics.contains("qyzmet_queue_messages{queue=\"qyzmet.intake\"}"), "{metrics}");
    app.shutdown(Duration::from_secs(5)).await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_group_replay_replays_every_open_letter_of_its_reason_and_shows_progress() {
    let (env, app) = console_env().await;
    let addr = app.http_addr;
    for _ in 0..5 {
        env.publish_raw(EXCHANGE_REQUESTS, "doctor-appointment", b"nope".to_vec()).await;
    }
    wait_count(&env, "SELECT count(*) FROM dead_letters", 5).await;
    let operator = sign_in(addr, OPERATOR.0, OPERATOR.2).await;
    let list = page(addr, &operator, "/console/dead-letters").await;
    assert!(list.body.contains("Replay all 5"), "{}", list.body);
    let form = format!("csrf={}&reason=not_json&queue=qyzmet.intake", csrf(&list.body));
    let started = post(addr, &operator, "/console/dead-letters/replay-group", &form).await;
    assert_eq!(started.status, 303);
    let progress = started.header("location").expect("to the progress").to_owned();
    wait_count(&env, "SELECT count(*) FROM dead_letters", 10).await;
    let done = async {
        loop {
            let p = page(addr, &operator, &progress).await;
            if p.body.contains("5 of 5 replayed") && p.body.contains("done") {
                return p;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(EVENT_TIMEOUT, done).await.expect("the group replay finishes");
    let (replayed,): (i64,) = sqlx::query_as("SELECT count(*) FROM dead_letters WHERE state = 'replayed'")
        .fetch_one(env.store.pool())
        .await
        .expect("count");
    assert_eq!(replayed, 5);
    app.shutdown(Duration::from_secs(5)).await;
    env.cleanup().await;
}

#[tokio::test]
async fn the_console_alone_runs_no_pool_holds_no_signing_key_and_still_moves_dead_letters() {
    use qyzmet::startup::{self, Deps, Options};
    let mut env = TestEnv::new().await;
    env.enable_console(&[OPERATOR], &[]).await;
    let mut settings = env.settings.clone();
    settings.signing_keys = None;
    let deps = Deps::for_console(&settings).expect("the console needs no signing key");
    let app =
        startup::start(&settings, regulations(), Options::console_only(), deps).await.expect("the console starts");
    let headers = vec![
        ("x-qyzmet-reason".to_owned(), "oversized".to_owned()),
        ("x-qyzmet-queue".to_owned(), "qyzmet.intake".to_owned()),
    ];
    env.publish_with_headers(qyzmet::broker::EXCHANGE_DEAD, "oversized", b"{}".to_vec(), headers).await;
    wait_count(&env, "SELECT count(*) FROM dead_letters WHERE reason = 'oversized'", 1).await;
    let (_, consumers) = qyzmet::broker::queue_counts(env.broker(), qyzmet::broker::QUEUE_INTAKE).await;
    assert_eq!(consumers, 0, "no pool consumes in a console process");
    let cookie = sign_in(app.http_addr, OPERATOR.0, OPERATOR.2).await;
    assert!(page(app.http_addr, &cookie, "/console/dead-letters").await.body.contains("oversized"));
    app.shutdown(Duration::from_secs(5)).await;
    env.cleanup().await;
}
