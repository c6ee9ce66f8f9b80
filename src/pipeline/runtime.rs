//! The broker loop, written once: consume a queue with prefetch and bounded concurrency, hand
//! each delivery to a [`Handler`], catch panics, then ack, dead-letter (with the reason in
//! headers) or requeue. Re-consumes when the broker cancels the consumer or the connection is
//! lost; stops taking deliveries on shutdown and lets the in-flight ones finish (unstarted
//! prefetched deliveries return to the queue when the channel closes).

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
use crate::contract::{Envelope, FieldError};
use crate::shutdown::Shutdown;
use crate::store::StoreError;

use super::Ctx;

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
}

impl Incoming {
    fn from_delivery(d: &Delivery) -> Incoming {
        let traceparent = d.properties.headers().as_ref().and_then(|h| {
            h.inner().get("traceparent").and_then(|v| match v {
                AMQPValue::LongString(s) => Some(s.to_string()),
                AMQPValue::ShortString(s) => Some(s.to_string()),
                _ => None,
            })
        });
        Incoming {
            data: d.data.clone(),
            user_id: d.properties.user_id().as_ref().map(|s| s.to_string()),
            traceparent,
            message_id: d.properties.message_id().as_ref().map(|s| s.to_string()),
            routing_key: d.routing_key.to_string(),
            redelivered: d.redelivered,
        }
    }
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
    /// A dependency failed before anything was committed: give it back to the queue.
    Requeue,
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

/// The disposition once a handler tried to commit: ack, or give the message back when the
/// database could not be reached (nothing was committed, so redelivery is safe).
pub fn settle(result: Result<(), StoreError>, request_id: Uuid, what: &str) -> Disposition {
    match result {
        Ok(()) => Disposition::Ack,
        Err(e) => {
            tracing::warn!(%request_id, error = %e, "{what} not committed; requeueing");
            Disposition::Requeue
        }
    }
}

/// Pause before requeueing, so a failing dependency is not hammered.
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
    let mut backoff = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(10))
        .with_jitter()
        .without_max_times()
        .build();
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
        }
        .await;
        let consumer = match consumer {
            Ok(c) => c,
            Err(e) => {
                let pause = backoff.next().unwrap_or(Duration::from_secs(5));
                tracing::warn!(%queue, error = %e, ?pause, "cannot consume; retrying");
                let _ = channel.close(200, "retry".into()).await;
                shutdown.sleep(pause).await;
                continue;
            }
        };
        tracing::info!(%queue, concurrency, "consuming");
        backoff = backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(Duration::from_secs(10))
            .with_jitter()
            .without_max_times()
            .build();
        consumer
            .take_until(shutdown.clone().wait_owned())
            .for_each_concurrent(concurrency, |delivery| {
                let ctx = ctx.clone();
                let handler = handler.clone();
                let queue = queue.clone();
                async move {
                    match delivery {
                        Ok(d) => process(&ctx, &queue, &*handler, d).await,
                        Err(e) => tracing::warn!(%queue, error = %e, "consumer error"),
                    }
                }
            })
            .await;
        let _ = channel.close(200, "bye".into()).await;
        if !shutdown.is_shutdown() {
            tracing::warn!(%queue, "consumer ended (cancelled by the broker or connection lost); re-consuming");
            shutdown.sleep(Duration::from_millis(500)).await;
        }
    }
    tracing::info!(%queue, "stopped consuming");
}

async fn process(ctx: &Ctx, queue: &str, handler: &dyn Handler, d: Delivery) {
    let msg = Incoming::from_delivery(&d);
    let disposition = match AssertUnwindSafe(handler.handle(ctx, &msg)).catch_unwind().await {
        Ok(disp) => disp,
        Err(panic) => {
            let what = panic_text(&panic);
            tracing::error!(%queue, panic = %what, "handler panicked; dead-lettering the message");
            Disposition::DeadLetter { reason: "handler_panicked".into(), detail: what }
        }
    };
    let result = match disposition {
        Disposition::Ack => d.acker.ack(BasicAckOptions::default()).await,
        Disposition::DeadLetter { reason, detail } => {
            tracing::warn!(%queue, %reason, %detail, message_id = ?msg.message_id, "dead-lettering");
            match dead_letter(ctx, queue, &msg, &reason, &detail).await {
                Ok(()) => d.acker.ack(BasicAckOptions::default()).await,
                Err(e) => {
                    tracing::warn!(%queue, error = %e, "dead-letter publish failed; requeueing");
                    tokio::time::sleep(REQUEUE_PAUSE).await;
                    d.acker.nack(BasicNackOptions { requeue: true, ..BasicNackOptions::default() }).await
                }
            }
        }
        Disposition::Requeue => {
            tokio::time::sleep(REQUEUE_PAUSE).await;
            d.acker.nack(BasicNackOptions { requeue: true, ..BasicNackOptions::default() }).await
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
