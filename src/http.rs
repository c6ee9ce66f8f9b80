//! The HTTP surface every qyzmet process serves: `/healthz` (the process is alive), `/readyz`
//! (PostgreSQL and the broker answer, and every consumer of the process is attached) and
//! `/metrics` (Prometheus text format). Loopback by default (`QYZMET_HTTP_ADDR`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;

use crate::broker::Broker;
use crate::pipeline::Ctx;
use crate::shutdown::Shutdown;

/// What the handlers look at.
#[derive(Clone)]
pub struct Surface {
    /// The process's context (store, consumer count).
    pub ctx: Arc<Ctx>,
    /// Its broker connection.
    pub broker: Arc<Broker>,
    /// Consumers the process should have attached (queues it consumes).
    pub expected_consumers: usize,
    /// The metrics recorder.
    pub metrics: PrometheusHandle,
    /// The operator console and status API, when this process serves them.
    pub console: Option<Arc<crate::console::Console>>,
    /// Queue figures read from the broker, and when: refreshed at most every
    /// [`QUEUE_STATS_EVERY`], so frequent scrapes of many processes cost the broker little.
    pub queue_stats: Arc<tokio::sync::Mutex<Option<QueueStats>>>,
}

/// Queue figures and when they were read.
pub type QueueStats = (std::time::Instant, Vec<crate::broker::QueueStat>);

/// How fresh the queue gauges on `/metrics` are at least.
pub const QUEUE_STATS_EVERY: Duration = Duration::from_secs(5);

/// How long a readiness probe waits for PostgreSQL or the broker.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The routes.
pub fn router(surface: Surface) -> Router {
    let console = surface.console.clone();
    let base = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(surface);
    match console {
        Some(c) => base.merge(crate::console::router(c)).route("/", get(|| async { Redirect::to("/console") })),
        None => base,
    }
}

async fn readyz(State(s): State<Surface>) -> Response {
    let database = matches!(tokio::time::timeout(PROBE_TIMEOUT, s.ctx.store.ping()).await, Ok(Ok(())));
    let broker = match tokio::time::timeout(PROBE_TIMEOUT, s.broker.channel()).await {
        Ok(Ok(ch)) => {
            let _ = tokio::time::timeout(PROBE_TIMEOUT, ch.close(200, "probe".into())).await;
            true
        }
        _ => false,
    };
    let attached = s.ctx.consuming.load(Ordering::Relaxed);
    let consumers = attached >= s.expected_consumers;
    let ready = database && broker && consumers;
    let body = json!({
        "ready": ready,
        "database": database,
        "broker": broker,
        "consumers": { "attached": attached, "expected": s.expected_consumers },
    });
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// Queue depths are read from the broker when Prometheus asks (a passive declare per queue),
/// and the console's open dead letters from PostgreSQL, at most every [`QUEUE_STATS_EVERY`].
async fn metrics(State(s): State<Surface>) -> Response {
    {
        let mut cached = s.queue_stats.lock().await;
        if cached.as_ref().is_none_or(|(at, _)| at.elapsed() >= QUEUE_STATS_EVERY)
            && let Ok(stats) = tokio::time::timeout(PROBE_TIMEOUT, crate::broker::queue_stats(&s.broker)).await
        {
            stats.iter().for_each(crate::metrics::queue);
            // The console's open dead letters, on the same schedule (not once per moved letter).
            if let Some(c) = &s.console
                && let Ok(open) = c.ctx.store.open_dead_letters().await
            {
                crate::metrics::dead_letters_open(open);
            }
            *cached = Some((std::time::Instant::now(), stats));
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], s.metrics.render()).into_response()
}

/// Binds `addr` (when its port is taken, another process of this host has it: an ephemeral port
/// is used instead, and logged) and serves until shutdown. Returns the bound address.
pub async fn serve(addr: &str, surface: Surface, shutdown: Shutdown) -> anyhow::Result<SocketAddr> {
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            let host = addr.rsplit_once(':').map(|(h, _)| h).unwrap_or("127.0.0.1");
            tracing::warn!(%addr, "HTTP address in use (another qyzmet process here?); using an ephemeral port");
            tokio::net::TcpListener::bind(format!("{host}:0")).await?
        }
        Err(e) => return Err(anyhow::anyhow!("cannot listen on {addr} (QYZMET_HTTP_ADDR): {e}")),
    };
    let bound = listener.local_addr()?;
    tracing::info!(%bound, "serving /healthz, /readyz and /metrics (and /console when enabled)");
    tokio::spawn(async move {
        let served = axum::serve(listener, router(surface)).with_graceful_shutdown(shutdown.wait_owned()).await;
        if let Err(e) = served {
            tracing::warn!(error = %e, "HTTP server stopped");
        }
    });
    Ok(bound)
}
