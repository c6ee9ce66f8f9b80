//! Metrics, in Prometheus naming, with low-cardinality labels only: service, region, channel,
//! pool, queue, step, status, kind, code, reason, disposition — never an IIN, BIN, name or
//! request id. Every histogram has the same explicit buckets in every process, so figures add
//! up across the processes of a pool.
//!
//! The recorder is installed once per process ([`install`]); `GET /metrics` renders it
//! ([`crate::http`]). Code records through the small functions here, so the names live in one
//! place.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Buckets for durations, in seconds: from a fast hop to a working day.
pub const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
    28_800.0, 86_400.0,
];

/// Buckets for the share of a legal deadline still left when a request finished (0 = at the
/// deadline, 1 = immediately).
pub const SHARE_BUCKETS: &[f64] = &[0.0, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0];

static HANDLE: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();

/// How often the recorder folds recorded histogram samples into its buckets.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Installs the process's recorder (once; later calls return the same handle), with the thread
/// that keeps it: the recorder holds every histogram sample until upkeep folds it into the
/// buckets, which without it happens only when `/metrics` is scraped — so a worker nobody
/// scraped grew by every sample of every request (about 6 MiB per 100,000 requests).
pub fn install() -> Result<PrometheusHandle, String> {
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_share".into()), SHARE_BUCKETS))
                .map_err(|e| e.to_string())?
                .install_recorder()
                .map_err(|e| e.to_string())?;
            let keeper = handle.clone();
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(UPKEEP_EVERY);
                        keeper.run_upkeep();
                    }
                })
                .map_err(|e| format!("cannot start the metrics upkeep thread: {e}"))?;
            Ok(handle)
        })
        .clone()
}

/// A delivery was settled (`ack`, `dead_letter`, `retry`).
pub fn delivery(queue: &str, disposition: &'static str) {
    counter!("qyzmet_deliveries_total", "queue" => queue.to_owned(), "disposition" => disposition).increment(1);
}

/// A message went to the dead-letter queue.
pub fn dead_letter(queue: &str, reason: &str) {
    counter!("qyzmet_dead_letters_total", "queue" => queue.to_owned(), "reason" => reason.to_owned()).increment(1);
}

/// Deliveries being handled now, per queue.
pub fn in_flight(queue: &str, delta: f64) {
    gauge!("qyzmet_in_flight", "queue" => queue.to_owned()).increment(delta);
}

/// How long one run of a pool's step took.
pub fn step_duration(pool: &'static str, elapsed: Duration) {
    histogram!("qyzmet_step_duration_seconds", "pool" => pool).record(elapsed.as_secs_f64());
}

/// How long a pass of one of the fleet's chores (`sweep`, `relay`, `retention`) took in the
/// process that had its turn. A sweep that takes long is reading dead entries of the open
/// requests' deadline index: vacuum is behind, or a long transaction (a report, a `pg_dump`)
/// keeps them from being marked dead.
pub fn chore_duration(chore: &'static str, elapsed: Duration) {
    histogram!("qyzmet_chore_duration_seconds", "chore" => chore).record(elapsed.as_secs_f64());
}

/// A batched statement carried `transitions` rows of a `kind` (`registration`, `advance`,
/// `ending`, `park`, `decision` written; `read`, requests read by the tasks): their ratio is the
/// mean batch, how much the batching saves.
pub fn batch_written(kind: &'static str, transitions: usize) {
    counter!("qyzmet_batch_statements_total", "kind" => kind).increment(1);
    counter!("qyzmet_batch_transitions_total", "kind" => kind).increment(transitions as u64);
}

/// A transient failure scheduled another attempt of a step.
pub fn retry(pool: &str) {
    counter!("qyzmet_retries_total", "pool" => pool.to_owned()).increment(1);
}

/// A request was refused because a step's deadline passed.
pub fn deadline_refusal(step: &str) {
    counter!("qyzmet_deadline_refusals_total", "step" => step.to_owned()).increment(1);
}

/// Labels of a final outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct FinalLabels {
    /// Contract service code as sent (`unknown` if not one).
    pub service: String,
    /// Region as sent.
    pub region: String,
    /// Channel as sent.
    pub channel: String,
    /// `completed` or `refused`.
    pub status: &'static str,
    /// Refusal kind, or `none`.
    pub kind: String,
    /// Regulation code, or `none`.
    pub code: String,
    /// Seconds from receipt to the final outcome.
    pub end_to_end: Option<f64>,
    /// Share of the service deadline still left (`None` without a deadline).
    pub slack: Option<f64>,
}

/// A label value from outside, bounded to the contract's codes (those `parse` accepts) so a
/// sender cannot create series at will.
pub fn code_label<T>(value: &str, parse: fn(&str) -> Option<T>) -> String {
    if parse(value).is_some() { value.to_owned() } else { "unknown".to_owned() }
}

/// A request reached its final outcome (recorded after the commit).
pub fn final_outcome(l: &FinalLabels) {
    let labels = [
        ("service", l.service.clone()),
        ("region", l.region.clone()),
        ("channel", l.channel.clone()),
        ("status", l.status.to_owned()),
        ("kind", l.kind.clone()),
        ("code", l.code.clone()),
    ];
    counter!("qyzmet_outcomes_total", &labels).increment(1);
    let short = [("service", l.service.clone()), ("status", l.status.to_owned())];
    if let Some(s) = l.end_to_end {
        histogram!("qyzmet_end_to_end_seconds", &short).record(s);
    }
    if let Some(share) = l.slack {
        histogram!("qyzmet_deadline_slack_share", &short).record(share.clamp(0.0, 1.0));
    }
}

/// Unpublished outbox rows.
pub fn outbox_backlog(rows: i64) {
    gauge!("qyzmet_outbox_backlog").set(rows as f64);
}

/// Requests waiting for an outside answer, and how long the oldest has waited.
pub fn waiting(step: &str, count: i64, oldest: f64) {
    gauge!("qyzmet_waiting_requests", "step" => step.to_owned()).set(count as f64);
    gauge!("qyzmet_oldest_wait_seconds", "step" => step.to_owned()).set(oldest);
}

/// Dead letters moved off the broker and not yet replayed or discarded.
pub fn dead_letters_open(count: i64) {
    gauge!("qyzmet_dead_letters_open").set(count as f64);
}

/// Ready messages and consumers of a pipeline queue (every process reports the same figures:
/// aggregate with `max by (queue)`).
pub fn queue(stat: &crate::broker::QueueStat) {
    gauge!("qyzmet_queue_messages", "queue" => stat.queue.clone()).set(f64::from(stat.messages));
    gauge!("qyzmet_queue_consumers", "queue" => stat.queue.clone()).set(f64::from(stat.consumers));
}

/// The broker connection was re-established.
pub fn reconnect() {
    counter!("qyzmet_broker_reconnects_total").increment(1);
}

/// This process: its pools, concurrency and version (value 1), and a heartbeat.
pub fn process_info(pools: &str, concurrency: usize) {
    gauge!("qyzmet_process_info", "pools" => pools.to_owned(), "concurrency" => concurrency.to_string(),
        "version" => env!("CARGO_PKG_VERSION"))
    .set(1.0);
}

/// The heartbeat: when this process last completed its housekeeping (sweeper) pass.
pub fn heartbeat() {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    gauge!("qyzmet_heartbeat_timestamp_seconds").set(now.as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_from_outside_are_bounded_to_known_codes() {
        let parse = crate::contract::ServiceCode::parse;
        assert_eq!(code_label("medical-licence", parse), "medical-licence");
        assert_eq!(code_label("840317000029", parse), "unknown");
    }
}
