//! What operators get from every process: `/healthz`, `/readyz` and `/metrics` on its HTTP
//! address, with low-cardinality labels only.

use std::time::Duration;

use serde_json::{Value, json};

use qyzmet::contract::Status;

use crate::common::*;

async fn ready(addr: std::net::SocketAddr) -> Value {
    let (_, body) = http_get(addr, "/readyz").await;
    serde_json::from_str(&body).unwrap_or(Value::Null)
}

#[tokio::test]
async fn every_process_serves_health_readiness_and_metrics_without_personal_data() {
    let env = TestEnv::new().await;
    let app = env.start_all().await;
    let addr = app.http_addr;
    assert_eq!(http_get(addr, "/healthz").await, (200, "ok\n".to_owned()));
    let attached = async {
        while ready(addr).await["ready"] != json!(true) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(EVENT_TIMEOUT, attached).await.expect("the process becomes ready");
    let r = ready(addr).await;
    assert_eq!(r["consumers"]["attached"], r["consumers"]["expected"], "{r}");

    let ok =
        request("doctor-appointment", "akmola", "portal", json!({ "iin": who::CITIZEN }), who::AKMOLA_PHC, json!({}));
    let mut bad = ok.clone();
    bad["request_id"] = json!(uuid::Uuid::new_v4().to_string());
    bad["applicant"] = json!({ "iin": "850401300124" });
    env.publish_request(&ok).await;
    env.publish_request(&bad).await;
    assert_eq!(env.final_outcome(id_of(&ok)).await.status, Status::Completed);
    assert_eq!(env.final_outcome(id_of(&bad)).await.status, Status::Refused);
    env.publish_raw(qyzmet::contract::EXCHANGE_REQUESTS, "doctor-appointment", b"not json".to_vec()).await;
    env.wait_dead_letter().await;

    let (status, text) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200);
    for expected in [
        r#"qyzmet_outcomes_total{service="doctor-appointment",region="akmola",channel="portal",status="completed",kind="none",code="none"} 1"#,
        r#"status="refused",kind="invalid_request",code="none"} 1"#,
        r#"qyzmet_dead_letters_total{queue="qyzmet.intake",reason="not_json"} 1"#,
        "qyzmet_step_duration_seconds_bucket{pool=\"review\"",
        "qyzmet_end_to_end_seconds_bucket",
        "qyzmet_deadline_slack_share_bucket",
        "qyzmet_deliveries_total{queue=\"qyzmet.intake\",disposition=\"ack\"}",
        "qyzmet_process_info{",
        "qyzmet_heartbeat_timestamp_seconds",
        "qyzmet_outbox_backlog",
        // The only process of its database takes every turn of the fleet's sweep.
        "qyzmet_chore_duration_seconds_bucket{chore=\"sweep\"",
    ] {
        assert!(text.contains(expected), "/metrics lacks {expected}:\n{text}");
    }
    for personal in [who::CITIZEN, "850401300124", who::AKMOLA_PHC, &id_of(&ok).to_string()] {
        assert!(!text.contains(personal), "/metrics must not carry {personal}");
    }

    // Without the database the process is alive but not ready.
    env.database_away().await;
    let unready = async {
        loop {
            let (status, body) = http_get(addr, "/readyz").await;
            if status == 503 {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let body = tokio::time::timeout(EVENT_TIMEOUT, unready).await.expect("/readyz reports the database");
    assert!(body.contains(r#""database":false"#), "{body}");
    assert_eq!(http_get(addr, "/healthz").await.0, 200);
    env.database_back().await;
    app.shutdown(Duration::from_secs(5)).await;
    env.cleanup().await;
}
