//! Traces: a request keeps one W3C trace from intake to its final Outcome (the incoming
//! `traceparent`, or a new trace), every Outcome carries a `traceparent` of it, and with
//! `OTEL_EXPORTER_OTLP_ENDPOINT` set the binary exports its spans over OTLP/HTTP with the
//! sender's span as their parent.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::Notify;
use uuid::Uuid;

use qyzmet::broker::Message;
use qyzmet::contract::{EXCHANGE_REQUESTS, Status};
use qyzmet::pipeline::runtime::is_traceparent;

use crate::common::*;

/// (trace id, parent id, flags) of a `traceparent`.
fn parts(tp: &str) -> (String, String, String) {
    let p: Vec<&str> = tp.split('-').collect();
    assert_eq!(p.len(), 4, "{tp}");
    (p[1].to_owned(), p[2].to_owned(), p[3].to_owned())
}

/// A fresh `traceparent` for a test (the harness's own publishes all use one fixed trace).
fn unique_traceparent() -> String {
    let t = Uuid::new_v4().simple().to_string();
    let s = &Uuid::new_v4().simple().to_string()[..16];
    format!("00-{t}-{s}-01")
}

fn signed_request() -> Value {
    let mut r =
        request("doctor-appointment", "akmola", "portal", json!({ "iin": who::CITIZEN }), who::AKMOLA_PHC, json!({}));
    sign_as(&proper_signer(&r), &mut r);
    r
}

/// Publishes a signed Request with the given `traceparent` (or none).
async fn publish(env: &TestEnv, request: &Value, traceparent: Option<String>) {
    let publisher = env.broker().publisher().await.expect("publisher");
    let m = Message {
        exchange: EXCHANGE_REQUESTS.into(),
        routing_key: "doctor-appointment".into(),
        message_id: id_of(request).to_string(),
        body: serde_json::to_vec(request).expect("json"),
        traceparent,
        headers: Vec::new(),
        must_route: true,
    };
    publisher.publish_all(&[m]).await.expect("publish");
}

#[tokio::test]
async fn every_outcome_carries_a_traceparent_of_the_requests_trace_new_or_continued() {
    let env = TestEnv::new().await;
    let app = env.start_all().await;
    let incoming = unique_traceparent();
    let (trace, _, _) = parts(&incoming);
    let traced = signed_request();
    let untraced = signed_request();
    publish(&env, &traced, Some(incoming.clone())).await;
    publish(&env, &untraced, None).await;
    assert_eq!(env.final_outcome(id_of(&traced)).await.status, Status::Completed);
    assert_eq!(env.final_outcome(id_of(&untraced)).await.status, Status::Completed);

    let outcomes = env.outcome_traceparents(id_of(&traced)).await;
    assert!(outcomes.len() >= 3, "registered, in progress and completed: {outcomes:?}");
    for (status, tp) in &outcomes {
        let tp = tp.as_deref().unwrap_or_else(|| panic!("{status:?} Outcome without a traceparent"));
        assert!(is_traceparent(tp), "{tp}");
        // Contract v1: the sender's traceparent is copied onto every Outcome of its request.
        assert_eq!(tp, incoming, "{status:?} Outcome carries the request's traceparent");
        assert_eq!(parts(tp).0, trace);
    }
    let row = env.store.get_request(id_of(&traced)).await.expect("row").expect("stored");
    assert_eq!(row.traceparent.as_deref(), Some(incoming.as_str()), "the incoming traceparent is kept");

    // Without one, intake starts a trace, keeps it with the request, and every Outcome is of it.
    let outcomes = env.outcome_traceparents(id_of(&untraced)).await;
    let row = env.store.get_request(id_of(&untraced)).await.expect("row").expect("stored");
    let kept = row.traceparent.expect("a new trace is stored at intake");
    assert!(is_traceparent(&kept), "{kept}");
    let (new_trace, _, _) = parts(&kept);
    assert_ne!(new_trace, trace);
    for (status, tp) in &outcomes {
        let tp = tp.as_deref().unwrap_or_else(|| panic!("{status:?} Outcome without a traceparent"));
        assert_eq!(tp, kept, "{status:?} Outcome carries the trace intake started");
        assert_eq!(parts(tp).0, new_trace);
    }
    app.shutdown(Duration::from_secs(5)).await;
    env.cleanup().await;
}

/// What a tiny OTLP/HTTP receiver got: every `POST /v1/traces` body, decoded.
#[derive(Clone, Default)]
struct Receiver {
    requests: Arc<std::sync::Mutex<Vec<ExportTraceServiceRequest>>>,
    content_types: Arc<std::sync::Mutex<Vec<String>>>,
    arrived: Arc<Notify>,
}

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

/// An exported span: (service.name, name, trace id, span id, parent span id), ids in hex.
type Exported = (String, String, String, String, String);

impl Receiver {
    async fn start() -> (Receiver, std::net::SocketAddr) {
        use axum::routing::post;
        let me = Receiver::default();
        let state = me.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let state = state.clone();
                async move {
                    let ct = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                    state.content_types.lock().expect("lock").push(ct);
                    match <ExportTraceServiceRequest as prost::Message>::decode(body) {
                        Ok(req) => {
                            state.requests.lock().expect("lock").push(req);
                            state.arrived.notify_waiters();
                            axum::http::StatusCode::OK
                        }
                        Err(_) => axum::http::StatusCode::BAD_REQUEST,
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the receiver");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (me, addr)
    }

    fn spans(&self) -> Vec<Exported> {
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        let mut out = Vec::new();
        for req in self.requests.lock().expect("lock").iter() {
            for rs in &req.resource_spans {
                let service = rs
                    .resource
                    .as_ref()
                    .and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"))
                    .and_then(|a| a.value.as_ref())
                    .and_then(|v| match &v.value {
                        Some(opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(s)) => {
                            Some(s.clone())
                        }
                        _ => None,
                    })
                    .unwrap_or_default();
                for ss in &rs.scope_spans {
                    for s in &ss.spans {
                        out.push((
                            service.clone(),
                            s.name.clone(),
                            hex(&s.trace_id),
                            hex(&s.span_id),
                            hex(&s.parent_span_id),
                        ));
                    }
                }
            }
        }
        out
    }

    /// Waits until an exported span matches.
    async fn wait_span(&self, what: &str, pred: impl Fn(&Exported) -> bool) -> Exported {
        let wait = async {
            loop {
                let notified = self.arrived.notified();
                if let Some(s) = self.spans().into_iter().find(|s| pred(s)) {
                    return s;
                }
                notified.await;
            }
        };
        match tokio::time::timeout(EVENT_TIMEOUT, wait).await {
            Ok(s) => s,
            Err(_) => panic!("no exported span {what} within {EVENT_TIMEOUT:?}; got {:#?}", self.spans()),
        }
    }
}

#[tokio::test]
async fn with_an_otlp_endpoint_the_binary_exports_its_spans_under_the_senders_span_and_flushes_them_on_sigterm() {
    let env = TestEnv::new().await;
    let (receiver, addr) = Receiver::start().await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_qyzmet"))
        .args(["run", "--concurrency", "2"])
        .envs(env.child_env())
        // Info lines too, to check that a log written to a pipe carries no colour codes.
        .env("QYZMET_LOG", "info,sqlx=warn,lapin=warn,amq_protocol=warn")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{addr}"))
        // Nothing is exported before shutdown: the spans arrive only if SIGTERM flushes them.
        .env("OTEL_BSP_SCHEDULE_DELAY", "600000")
        .env_remove("OTEL_SERVICE_NAME")
        .env_remove("OTEL_RESOURCE_ATTRIBUTES")
        .env_remove("OTEL_TRACES_EXPORTER")
        .env_remove("OTEL_TRACES_SAMPLER")
        .env_remove("OTEL_SDK_DISABLED")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_PROTOCOL")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn qyzmet run");
    // Its log, line by line, as it comes.
    let stderr = child.stderr.take().expect("stderr");
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        let mut reader = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stderr));
        while let Ok(Some(line)) = reader.next_line().await {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut log = String::new();
    // SIGTERM is graceful once it says it is running (before that, the default action applies).
    let running = async {
        while let Some(line) = lines.recv().await {
            log.push_str(&line);
            log.push('\n');
            if line.contains("running; SIGTERM") {
                return true;
            }
        }
        false
    };
    let running = tokio::time::timeout(EVENT_TIMEOUT, running).await;
    assert!(matches!(running, Ok(true)), "qyzmet run did not start: {log}");

    let incoming = unique_traceparent();
    let (trace, parent, _) = parts(&incoming);
    let r = signed_request();
    publish(&env, &r, Some(incoming.clone())).await;
    assert_eq!(env.final_outcome(id_of(&r)).await.status, Status::Completed);
    let outcomes = env.outcome_traceparents(id_of(&r)).await;
    assert!(receiver.spans().is_empty(), "the batch delay holds spans until shutdown");

    // Stop it as an orchestrator does, by its pid.
    let pid = child.id().expect("the child runs");
    let killed = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().expect("kill runs");
    assert!(killed.success());
    let status = tokio::time::timeout(EVENT_TIMEOUT, child.wait()).await.expect("qyzmet stops").expect("wait");
    while let Some(line) = lines.recv().await {
        log.push_str(&line);
        log.push('\n');
    }
    assert!(status.success(), "qyzmet run exited with {status}: {log}");
    assert!(!log.contains('\u{1b}'), "a log written to a pipe has no ANSI codes: {log:?}");
    assert!(log.contains("exporting traces over OTLP"), "{log}");

    // The intake delivery span is a child of the publisher's span, in its trace.
    let (service, _, _, intake_span, _) = receiver
        .wait_span(&format!("delivery in trace {trace} with parent {parent}"), |(_, name, t, _, p)| {
            name == "delivery" && *t == trace && *p == parent
        })
        .await;
    assert_eq!(service, "qyzmet", "service.name defaults to qyzmet");
    assert!(
        receiver.content_types.lock().expect("lock").iter().all(|c| c == "application/x-protobuf"),
        "OTLP over HTTP/protobuf"
    );
    let ours: Vec<Exported> = receiver.spans().into_iter().filter(|s| s.2 == trace).collect();
    let ids: Vec<&str> = ours.iter().map(|s| s.3.as_str()).collect();
    // The steps run under deliveries of the same trace, whose parents are exported spans.
    assert!(ours.iter().any(|s| s.1 == "step"), "step spans exported: {ours:#?}");
    for (_, name, _, id, p) in &ours {
        assert!(*p == parent || ids.contains(&p.as_str()), "span {name} {id} has an unknown parent {p}: {ours:#?}");
    }
    assert!(ours.iter().any(|s| s.4 == intake_span), "the pools' deliveries continue from intake's span");
    // Every Outcome carries the sender's traceparent (contract v1), so its reader's spans join
    // the same trace.
    for (status, tp) in &outcomes {
        assert_eq!(
            parts(tp.as_deref().expect("traceparent")),
            (trace.clone(), parent.clone(), "01".to_owned()),
            "{status:?}"
        );
    }
    env.cleanup().await;
}
