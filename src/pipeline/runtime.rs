//! The broker loop, written once: consume a queue with prefetch and bounded concurrency, hand
//! each delivery to a [`Handler`] as a task of its own, catch panics, then ack, dead-letter (with the reason in
//! headers) or retry. Re-consumes when the broker cancels the consumer or the connection is
//! lost; stops taking deliveries on shutdown and lets the in-flight ones finish (unstarted
//! prefetched deliveries return to the queue when the channel closes).
//!
//! Two bounds keep any message from circulating forever:
//! - a transient failure is retried here, with back-off, for [`Ctx::retry_budget`]; then the
//!   delivery is returned to the queue, which counts as a delivery;
//! - a delivery whose `x-delivery-count` (set by quorum queues) reached [`Ctx::max_deliveries`]
//!   is dead-lettered before it is handled: its earlier deliveries crashed or killed their
//!   consumer. The queues' own `x-delivery-limit` is the broker-side backstop.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use backon::BackoffBuilder;
use futures_util::{FutureExt, StreamExt, future::BoxFuture};
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable};

use uuid::Uuid;

use crate::broker::{Broker, EXCHANGE_DEAD, Message};
use crate::contract::{Envelope, FieldError, storable_text};
use crate::shutdown::Shutdown;

use super::{Ctx, Failure};

/// A delivery as handlers see it.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// Body.
    pub data: Vec<u8>,
    /// Broker-validated publisher (`user_id` property): the submitting system.
    pub user_id: Option<String>,
    /// W3C trace context header.
    pub traceparent: Option<String>,
    /// `message_id` property.
    pub message_id: Option<String>,
    /// Routing key.
    pub routing_key: String,
    /// Whether the broker delivered it before.
    pub redelivered: bool,
    /// How many times the broker handed it out before without it being settled
    /// (`x-delivery-count`, set by quorum queues; 0 on a first delivery).
    pub delivery_count: u32,
    /// Every header, as text (made storable and bounded): what a dead letter keeps, and where
    /// [`Incoming::sender`] finds `x-qyzmet-replayed-for`.
    pub headers: Vec<(String, String)>,
}

impl Incoming {
    /// Reads what the pipeline uses of a delivery. Everything here comes from outside and ends
    /// up in logs, columns and headers, so it is made safe on the way in: a `traceparent` that
    /// is not W3C-shaped is dropped (a new trace starts, as the W3C rules say), and text
    /// properties lose control characters and are bounded in length.
    pub fn from_delivery(d: &Delivery) -> Incoming {
        let header = |name: &str| d.properties.headers().as_ref().and_then(|h| h.inner().get(name).cloned());
        let traceparent = header("traceparent")
            .and_then(|v| match v {
                AMQPValue::LongString(s) => Some(s.to_string()),
                AMQPValue::ShortString(s) => Some(s.to_string()),
                _ => None,
            })
            .filter(|t| is_traceparent(t));
        let delivery_count = header("x-delivery-count").and_then(|v| amqp_count(&v)).unwrap_or(0);
        Incoming {
            data: d.data.clone(),
            user_id: d.properties.user_id().as_ref().map(|s| storable_text(s.as_str(), 255)),
            traceparent,
            message_id: d.properties.message_id().as_ref().map(|s| storable_text(s.as_str(), 255)),
            routing_key: storable_text(d.routing_key.as_str(), 255),
            redelivered: d.redelivered,
            delivery_count,
            headers: d
                .properties
                .headers()
                .as_ref()
                .map(|h| {
                    h.inner()
                        .iter()
                        .map(|(k, v)| (storable_text(k.as_str(), 255), storable_text(&amqp_text(v), 4096)))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// The system that sent this message, for the sender checks and the record: the
    /// broker-validated `user_id`, except for a replayed dead letter, which qyzmet itself
    /// re-published — then the system that first published it. The broker lets no one else
    /// publish as qyzmet's user, so no upstream system can claim to replay for another.
    pub fn sender<'a>(&'a self, ctx: &Ctx) -> Option<&'a str> {
        match (self.header("x-qyzmet-replayed-for"), &ctx.systems) {
            (Some(original), Some(systems)) if self.user_id.as_deref() == Some(systems.own_user()) => Some(original),
            _ => self.user_id.as_deref(),
        }
    }

    /// A header's text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// Whether a header is a W3C `traceparent`: `00-<32 hex>-<16 hex>-<2 hex>`, ids not all zero.
pub fn is_traceparent(t: &str) -> bool {
    let parts: Vec<&str> = t.split('-').collect();
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    parts.len() == 4
        && hex(parts[0], 2)
        && parts[0] != "ff"
        && hex(parts[1], 32)
        && parts[1].bytes().any(|b| b != b'0')
        && hex(parts[2], 16)
        && parts[2].bytes().any(|b| b != b'0')
        && hex(parts[3], 2)
}

/// An AMQP header value as text: strings as they are, anything else (numbers, the broker's
/// `x-death` tables) in a readable debug form.
fn amqp_text(v: &AMQPValue) -> String {
    match v {
        AMQPValue::LongString(s) => s.to_string(),
        AMQPValue::ShortString(s) => s.to_string(),
        other => amqp_count(other).map(|n| n.to_string()).unwrap_or_else(|| format!("{other:?}")),
    }
}

/// An AMQP integer header as a count (RabbitMQ sends `x-delivery-count` as a long or a
/// long-long, depending on version).
fn amqp_count(v: &AMQPValue) -> Option<u32> {
    let n: i64 = match v {
        AMQPValue::ShortShortInt(n) => i64::from(*n),
        AMQPValue::ShortShortUInt(n) => i64::from(*n),
        AMQPValue::ShortInt(n) => i64::from(*n),
        AMQPValue::ShortUInt(n) => i64::from(*n),
        AMQPValue::LongInt(n) => i64::from(*n),
        AMQPValue::LongUInt(n) => i64::from(*n),
        AMQPValue::LongLongInt(n) => *n,
        _ => return None,
    };
    u32::try_from(n.max(0)).ok()
}

/// What to do with a delivery once handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// Done (including duplicates and stale tasks).
    Ack,
    /// Cannot be understood: copy to the dead-letter queue with this reason, then ack.
    DeadLetter {
        /// Machine word (`not_json`, `oversized`, …).
        reason: String,
        /// Human detail.
        detail: String,
    },
    /// A transient failure before anything was committed: handle it again after a pause, and
    /// give it back to the queue once the retry budget is spent.
    Retry {
        /// What failed, for the log.
        error: String,
    },
}

/// Handles one delivery.
pub trait Handler: Send + Sync + 'static {
    /// Processes the message; must not return before its effects are committed.
    fn handle<'a>(&'a self, ctx: &'a Ctx, msg: &'a Incoming) -> BoxFuture<'a, Disposition>;
}

/// Reads a delivery as far as the contract requires before it counts as understood; an
/// unreadable one becomes a dead-letter disposition with its reason.
pub fn envelope(ctx: &Ctx, msg: &Incoming) -> Result<Envelope, Disposition> {
    Envelope::parse(&msg.data, ctx.max_message_bytes)
        .map_err(|e| Disposition::DeadLetter { reason: e.code().into(), detail: e.to_string() })
}

/// Reads a delivery as a contract message (PaymentNotice, Decision); one that breaks a field
/// rule is dead-lettered as `invalid`, since nobody waits for an answer to it.
pub fn read<T>(
    ctx: &Ctx,
    msg: &Incoming,
    parse: fn(&Envelope) -> Result<T, FieldError>,
    invalid: &str,
) -> Result<(Envelope, T), Disposition> {
    let env = envelope(ctx, msg)?;
    let value = parse(&env).map_err(|e| Disposition::DeadLetter { reason: invalid.into(), detail: e.to_string() })?;
    Ok((env, value))
}

/// The disposition once a handler tried to commit, by the one classification of failures:
/// ack; retry a transient failure (nothing was committed, so handling it again is safe); or
/// dead-letter a message the database refuses every time (`permanent_failure`), so that it
/// cannot occupy the pool.
pub fn settle(result: Result<(), Failure>, request_id: Uuid, what: &str) -> Disposition {
    match result {
        Ok(()) => Disposition::Ack,
        Err(e) if e.is_transient() => {
            tracing::warn!(%request_id, error = %e, "{what} not committed; will retry");
            Disposition::Retry { error: e.to_string() }
        }
        Err(e) => {
            tracing::error!(%request_id, error = %e, "{what} can never be committed; dead-lettering it");
            Disposition::DeadLetter { reason: "permanent_failure".into(), detail: format!("{what}: {e}") }
        }
    }
}

/// Exponential pauses with jitter from `min` up to `max`, without end (the callers bound them).
fn pauses(min: Duration, max: Duration) -> backon::ExponentialBackoff {
    backon::ExponentialBuilder::default()
        .with_min_delay(min)
        .with_max_delay(max)
        .with_jitter()
        .without_max_times()
        .build()
}

/// How often a consumer checks that its channel is up.
const RECOVERY_CHECK: Duration = Duration::from_secs(2);

/// Pause before a delivery that could not be dead-lettered goes back to the queue.
const REQUEUE_PAUSE: Duration = Duration::from_secs(1);

/// Consumes `queue` until shutdown.
pub async fn consume(
    ctx: Arc<Ctx>,
    broker: Arc<Broker>,
    queue: String,
    concurrency: usize,
    handler: Arc<dyn Handler>,
    shutdown: Shutdown,
) {
    let concurrency = concurrency.max(1);
    let mut backoff = pauses(Duration::from_millis(200), Duration::from_secs(10));
    while !shutdown.is_shutdown() {
        let channel = match broker.channel().await {
            Ok(ch) => ch,
            Err(e) => {
                let pause = backoff.next().unwrap_or(Duration::from_secs(5));
                tracing::warn!(%queue, error = %e, ?pause, "cannot open a channel; retrying");
                shutdown.sleep(pause).await;
                continue;
            }
        };
        let prefetch = u16::try_from(concurrency).unwrap_or(u16::MAX);
        let consumer = async {
            channel.basic_qos(prefetch, BasicQosOptions::default()).await?;
            channel
                .basic_consume(queue.as_str().into(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
                .await
        };
        let consumer = match tokio::time::timeout(SETTLE_TIMEOUT, consumer).await {
            Ok(Ok(c)) => c,
            failed => {
                let e = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => format!("no answer within {SETTLE_TIMEOUT:?}"),
                };
                let pause = backoff.next().unwrap_or(Duration::from_secs(5));
                tracing::warn!(%queue, error = %e, ?pause, "cannot consume; retrying");
                let _ = tokio::time::timeout(SETTLE_TIMEOUT, channel.close(200, "retry".into())).await;
                shutdown.sleep(pause).await;
                continue;
            }
        };
        tracing::info!(%queue, concurrency, "consuming");
        ctx.consuming.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        backoff = pauses(Duration::from_millis(200), Duration::from_secs(10));
        // Every delivery is a task of its own, so that a pool's work (parsing, signature checks)
        // spreads over every core; `concurrency` slots bound them, as the prefetch does.
        let slots = Arc::new(tokio::sync::Semaphore::new(concurrency));
        let mut deliveries = std::pin::pin!(consumer.take_until(shutdown.clone().wait_owned()));
        let mut watch = tokio::time::interval(RECOVERY_CHECK);
        let mut lost_since: Option<std::time::Instant> = None;
        loop {
            let delivery = tokio::select! {
                delivery = deliveries.next() => delivery,
                _ = watch.tick() => {
                    // lapin's own recovery brings a channel back after a broker restart, but
                    // not always; a channel still down after a while is abandoned for a new
                    // connection, so a pool never waits forever on a recovery that hangs.
                    if channel.status().connected() {
                        lost_since = None;
                    } else if lost_since.get_or_insert_with(std::time::Instant::now).elapsed() > ctx.recovery_patience {
                        tracing::warn!(%queue, patience = ?ctx.recovery_patience, "the channel has not recovered; consuming on a new connection");
                        break;
                    }
                    continue;
                }
            };
            let Some(delivery) = delivery else { break };
            let d = match delivery {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(%queue, error = %e, "consumer error");
                    continue;
                }
            };
            let Ok(slot) = slots.clone().acquire_owned().await else { break };
            let (ctx, handler, queue, shutdown) = (ctx.clone(), handler.clone(), queue.clone(), shutdown.clone());
            tokio::spawn(async move {
                process(&ctx, &queue, &*handler, d, &shutdown).await;
                drop(slot);
            });
        }
        // The deliveries in flight finish before their channel closes.
        let _ = slots.acquire_many(u32::try_from(concurrency).unwrap_or(u32::MAX)).await;
        ctx.consuming.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        if channel.status().connected() {
            let _ = tokio::time::timeout(SETTLE_TIMEOUT, channel.close(200, "bye".into())).await;
        } else {
            crate::broker::retire_channel(channel);
        }
        if !shutdown.is_shutdown() {
            tracing::warn!(%queue, "consumer ended (cancelled by the broker or connection lost); re-consuming");
            shutdown.sleep(Duration::from_millis(500)).await;
        }
    }
    tracing::info!(%queue, "stopped consuming");
}

/// Runs the handler once, turning a panic into a dead letter (a handler that panics on a
/// message would panic on it again).
async fn handle_once(ctx: &Ctx, queue: &str, handler: &dyn Handler, msg: &Incoming) -> Disposition {
    match AssertUnwindSafe(handler.handle(ctx, msg)).catch_unwind().await {
        Ok(disp) => disp,
        Err(panic) => {
            let what = panic_text(&panic);
            tracing::error!(%queue, panic = %what, "handler panicked; dead-lettering the message");
            Disposition::DeadLetter { reason: "handler_panicked".into(), detail: what }
        }
    }
}

/// Handles a delivery: the delivery-count check, then the handler, retried in place with
/// back-off while it fails transiently and the budget lasts.
async fn dispose(ctx: &Ctx, queue: &str, handler: &dyn Handler, msg: &Incoming, shutdown: &Shutdown) -> Disposition {
    if msg.delivery_count >= ctx.max_deliveries {
        return Disposition::DeadLetter {
            reason: "delivery_limit".into(),
            detail: format!(
                "delivered {} times without being settled (its consumer crashed, was killed or kept failing); \
                 limit {}",
                msg.delivery_count, ctx.max_deliveries
            ),
        };
    }
    let started = std::time::Instant::now();
    let mut backoff = pauses(Duration::from_millis(100), Duration::from_secs(5));
    let mut attempt = 1u32;
    loop {
        let disposition = handle_once(ctx, queue, handler, msg).await;
        let Disposition::Retry { error } = &disposition else { return disposition };
        let pause = backoff.next().unwrap_or(Duration::from_secs(5));
        if started.elapsed() + pause > ctx.retry_budget || shutdown.is_shutdown() {
            tracing::warn!(%queue, attempt, %error, message_id = ?msg.message_id,
                "still failing after the retry budget; returning the delivery to the queue");
            return disposition;
        }
        tracing::debug!(%queue, attempt, %error, ?pause, "transient failure; retrying the delivery");
        shutdown.sleep(pause).await;
        attempt += 1;
    }
}

/// How long an ack, a nack or a channel operation may take. During a broker restart lapin may
/// hold them while it recovers; an unanswered one must not keep its slot of the consumer's
/// concurrency forever (the broker redelivers what was not settled).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(15);

/// Settles a delivery: ack, or give it back to its queue.
async fn settle_delivery(d: &Delivery, ack: bool) -> Result<(), String> {
    let settled = async {
        if ack {
            d.acker.ack(BasicAckOptions::default()).await
        } else {
            d.acker.nack(BasicNackOptions { requeue: true, ..BasicNackOptions::default() }).await
        }
    };
    match tokio::time::timeout(SETTLE_TIMEOUT, settled).await {
        Ok(r) => r.map(|_| ()).map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {SETTLE_TIMEOUT:?}")),
    }
}

async fn process(ctx: &Ctx, queue: &str, handler: &dyn Handler, d: Delivery, shutdown: &Shutdown) {
    let msg = Incoming::from_delivery(&d);
    crate::metrics::in_flight(queue, 1.0);
    // One span per delivery: what it is (never who it is about) and where it came from.
    let span = tracing::info_span!(
        "delivery",
        queue,
        message_id = msg.message_id.as_deref().unwrap_or(""),
        delivery_count = msg.delivery_count,
        traceparent = msg.traceparent.as_deref().unwrap_or(""),
    );
    // The sender's span is its OpenTelemetry parent (a no-op without the OpenTelemetry layer).
    if let Some(tp) = &msg.traceparent {
        let _ = tracing_opentelemetry::OpenTelemetrySpanExt::set_parent(&span, crate::tracecontext::parent_context(tp));
    }
    let disposition = tracing::Instrument::instrument(dispose(ctx, queue, handler, &msg, shutdown), span).await;
    crate::metrics::in_flight(queue, -1.0);
    let result = match disposition {
        Disposition::Ack => {
            crate::metrics::delivery(queue, "ack");
            settle_delivery(&d, true).await
        }
        Disposition::DeadLetter { reason, detail } => {
            crate::metrics::delivery(queue, "dead_letter");
            crate::metrics::dead_letter(queue, &reason);
            tracing::warn!(%queue, %reason, %detail, message_id = ?msg.message_id, "dead-lettering");
            match dead_letter(ctx, queue, &msg, &reason, &detail).await {
                Ok(()) => settle_delivery(&d, true).await,
                Err(e) => {
                    tracing::warn!(%queue, error = %e, "dead-letter publish failed; returning the delivery");
                    tokio::time::sleep(REQUEUE_PAUSE).await;
                    settle_delivery(&d, false).await
                }
            }
        }
        Disposition::Retry { .. } => {
            crate::metrics::delivery(queue, "retry");
            settle_delivery(&d, false).await
        }
    };
    if let Err(e) = result {
        // The channel is gone: the broker redelivers the message; handlers are idempotent.
        tracing::warn!(%queue, error = %e, "ack/nack failed");
    }
}

async fn dead_letter(ctx: &Ctx, queue: &str, msg: &Incoming, reason: &str, detail: &str) -> Result<(), String> {
    let mut headers = vec![
        ("x-qyzmet-reason".to_owned(), reason.to_owned()),
        ("x-qyzmet-delivery-count".to_owned(), msg.delivery_count.to_string()),
        ("x-qyzmet-detail".to_owned(), detail.chars().take(1000).collect()),
        ("x-qyzmet-queue".to_owned(), queue.to_owned()),
        ("x-qyzmet-routing-key".to_owned(), msg.routing_key.clone()),
        ("x-qyzmet-at".to_owned(), crate::contract::now_local().to_rfc3339()),
    ];
    if let Some(user) = &msg.user_id {
        headers.push(("x-qyzmet-user-id".to_owned(), user.clone()));
    }
    let message = Message {
        exchange: EXCHANGE_DEAD.to_owned(),
        routing_key: reason.to_owned(),
        message_id: msg.message_id.clone().unwrap_or_else(|| format!("dead:{}", uuid::Uuid::new_v4())),
        body: msg.data.clone(),
        traceparent: msg.traceparent.clone(),
        headers,
        must_route: true,
    };
    ctx.outbox.publisher().publish_all(std::slice::from_ref(&message)).await.map_err(|e| e.to_string())
}

/// The text of a caught panic.
pub fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_w3c_shaped_traceparents_are_kept() {
        assert!(is_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
        assert!(!is_traceparent("00-00000000000000000000000000000000-00f067aa0ba902b7-01"), "zero trace id");
        assert!(!is_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"), "zero span id");
        assert!(!is_traceparent("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"), "version ff");
        assert!(!is_traceparent("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"), "upper case");
        assert!(!is_traceparent("00-\u{0}-garbage"));
    }

    #[test]
    fn delivery_counts_are_read_from_any_integer_type() {
        assert_eq!(amqp_count(&AMQPValue::LongLongInt(3)), Some(3));
        assert_eq!(amqp_count(&AMQPValue::LongInt(2)), Some(2));
        assert_eq!(amqp_count(&AMQPValue::LongLongInt(-1)), Some(0));
        assert_eq!(amqp_count(&AMQPValue::LongString("3".into())), None);
    }
}
