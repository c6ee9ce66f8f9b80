//! RabbitMQ: connection, topology and confirmed publishing.
//!
//! The contract's exchanges are declared idempotently on start. Internal work travels on the
//! direct exchange `qyzmet.work` to one durable queue per pool, so a pool scales by starting
//! more consumers on its queue (competing consumers). Messages that cannot be understood are
//! copied to `qyzmet.dead-letter` with the reason in headers.

use std::sync::Arc;
use std::time::Duration;

use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind};
use tokio::sync::Mutex;

use crate::contract::{EXCHANGE_DECISIONS, EXCHANGE_FEEDBACK, EXCHANGE_OUTCOMES, EXCHANGE_PAYMENTS, EXCHANGE_REQUESTS};
use crate::regulations::PoolName;

/// Internal exchange carrying step tasks to pool queues (routing key = pool name).
pub const EXCHANGE_WORK: &str = "qyzmet.work";
/// Internal exchange for messages that cannot be understood.
pub const EXCHANGE_DEAD: &str = "qyzmet.dead";
/// Queue of Requests for the intake pool.
pub const QUEUE_INTAKE: &str = "qyzmet.intake";
/// Queue of PaymentNotices for the payment pool.
pub const QUEUE_PAYMENT_NOTICES: &str = "qyzmet.payment-notices";
/// Queue of staff Decisions for the review pool.
pub const QUEUE_DECISIONS: &str = "qyzmet.staff-decisions";
/// Queue of applicants' questionnaire answers (P-51), read by the result pool.
pub const QUEUE_QUESTIONNAIRE: &str = "qyzmet.questionnaire";
/// Dead-letter queue: every message here has an `x-qyzmet-reason` header.
pub const QUEUE_DEAD: &str = "qyzmet.dead-letter";

/// Task queue of a pool.
pub fn task_queue(pool: PoolName) -> String {
    format!("qyzmet.{}", pool_name(pool))
}

/// The pool's name as used in queues, CLI and outcomes.
pub fn pool_name(pool: PoolName) -> &'static str {
    match pool {
        PoolName::Intake => "intake",
        PoolName::Registry => "registry",
        PoolName::Payment => "payment",
        PoolName::Review => "review",
        PoolName::Result => "result",
    }
}

/// Parses a pool name (`intake`, `registry`, `payment`, `review`, `result`).
pub fn parse_pool(s: &str) -> anyhow::Result<PoolName> {
    Ok(match s {
        "intake" => PoolName::Intake,
        "registry" => PoolName::Registry,
        "payment" => PoolName::Payment,
        "review" => PoolName::Review,
        "result" => PoolName::Result,
        other => anyhow::bail!("unknown pool {other:?}: use intake, registry, payment, review or result"),
    })
}

/// Errors talking to the broker. All are transient from the pipeline's point of view.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// A queue exists with other arguments than qyzmet declares — typically a classic queue
    /// left by an earlier version (README «Moving to quorum queues»).
    #[error(
        "queue {queue} exists with other arguments than qyzmet declares (a classic queue from an earlier \
         version?); see README «Moving to quorum queues»: {source}"
    )]
    QueueMismatch {
        /// The queue.
        queue: String,
        /// What the broker said.
        source: lapin::Error,
    },
    /// The broker did not confirm a publish in time (it may be blocked by a resource alarm).
    #[error("no publisher confirm within {0:?} (is the broker blocked by a resource alarm?)")]
    ConfirmTimeout(Duration),
    /// The AMQP client failed.
    #[error("amqp: {0}")]
    Amqp(#[from] lapin::Error),
    /// Connecting took too long (lapin can hang on a rejected connection.open).
    #[error(
        "connecting to the broker timed out after {0:?} (unreachable, or over amqps its certificate is not \
         accepted: check QYZMET_AMQP_CA_FILE and that the certificate names the URL's host)"
    )]
    ConnectTimeout(Duration),
    /// The broker refused a published message.
    #[error("the broker nacked a message to {0}")]
    Nacked(String),
    /// The broker URL cannot be read (the URL itself is not repeated: it may hold a password).
    #[error("the broker URL cannot be read: {0}")]
    InvalidUrl(String),
    /// A mandatory message could not be routed to any queue.
    #[error("unroutable message to {exchange} with key {routing_key}")]
    Unroutable {
        /// Target exchange.
        exchange: String,
        /// Routing key used.
        routing_key: String,
    },
}

/// The largest AMQP frame qyzmet asks for unless the URL sets `frame_max` itself. lapin keeps
/// 32 frames of buffer in each direction per connection, allocated and zeroed at connect: with
/// RabbitMQ's default of 128 KiB that is 8 MiB per connection and 16 MiB of every worker's
/// resident memory (issue 9). 16 KiB holds every message the contract describes in one frame
/// (a signed Request with its chain ≈ 4 KB, a final Outcome with its document ≈ 6 KB); a larger
/// one is sent as several frames.
pub const DEFAULT_FRAME_MAX: u32 = 16 * 1024;

/// Parses a broker URL, asking for [`DEFAULT_FRAME_MAX`] when it does not say `frame_max`.
pub fn amqp_uri(url: &str) -> Result<lapin::uri::AMQPUri, BrokerError> {
    let mut uri = url.trim().parse::<lapin::uri::AMQPUri>().map_err(BrokerError::InvalidUrl)?;
    uri.query.frame_max.get_or_insert(DEFAULT_FRAME_MAX);
    Ok(uri)
}

/// One connection per process; channels are opened from it on demand and the connection is
/// re-established when it is gone (lapin's auto-recovery handles broker restarts; this is the
/// outer loop for everything else).
pub struct Broker {
    /// The nodes to connect to: one URL, or a cluster's nodes separated by commas. With one,
    /// lapin's auto-recovery rides out a restart; with several, a lost connection is replaced
    /// by one to the next node (lapin would keep retrying the lost node).
    urls: Vec<String>,
    /// Index of the node tried next (rotates on every new connection).
    next_url: std::sync::atomic::AtomicUsize,
    name: String,
    /// The user this connection authenticates as. Every message published through it carries
    /// it as `user_id`, which the broker checks against the login: consumers (and qyzmet's own
    /// systems checks) can trust who sent it.
    user: String,
    /// Consumers' connection.
    consume: Mutex<Option<Arc<Connection>>>,
    /// PEM bundle of the CAs an `amqps://` broker's certificate must chain to (added to the
    /// built-in web roots); the certificate must also name the host of the URL.
    ca_pem: Option<String>,
    /// Publishers' connection, kept apart: under a resource alarm RabbitMQ blocks a connection
    /// that publishes — reads included — so consumers on their own connection can still
    /// acknowledge and the pipeline drains what it holds.
    publish: Mutex<Option<Arc<Connection>>>,
}

/// Which of a process's two connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Consume,
    Publish,
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// lapin's reconnection attempts after a broker restart: every 0.25–2 s (jittered), so a
/// consumer is back within about two seconds of its broker (lapin's default doubles up to a
/// minute), and at most 60 times — about two minutes; then the connection fails for good and
/// the next use opens a new one.
fn recovery_backoff() -> backon::ExponentialBuilder {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(250))
        .with_max_delay(Duration::from_secs(2))
        .with_jitter()
        .with_max_times(60)
}

/// How often a retired connection or channel is looked at.
const RETIRED_CHECK: Duration = Duration::from_millis(500);

/// Closes a connection that was replaced while lapin was still recovering it, as soon as the
/// recovery succeeds. A recovered connection re-subscribes its consumers, and the broker would
/// hand a prefetch's worth of deliveries to consumers nobody reads any more: they would stay
/// unacknowledged, their requests stalled, until the process exits. The watch ends when the
/// connection is closed or has failed for good.
fn retire_connection(conn: Arc<Connection>) {
    tokio::spawn(async move {
        loop {
            let status = conn.status();
            if status.connected() {
                let _ = tokio::time::timeout(CONNECT_TIMEOUT, conn.close(200, "replaced".into())).await;
                tracing::info!("closed a replaced broker connection that had recovered");
                return;
            }
            if !(status.reconnecting() || status.connecting()) {
                return;
            }
            tokio::time::sleep(RETIRED_CHECK).await;
        }
    });
}

/// Closes a consumer's channel that was given up on while lapin was recovering it, as soon as
/// it is back (see [`retire_connection`]: a recovered channel consumes again, for nobody).
pub fn retire_channel(channel: Channel) {
    tokio::spawn(async move {
        loop {
            let status = channel.status();
            if status.connected() {
                let _ = tokio::time::timeout(CONNECT_TIMEOUT, channel.close(200, "replaced".into())).await;
                tracing::info!("closed an abandoned consumer channel that had recovered");
                return;
            }
            if !(status.reconnecting() || status.initializing()) {
                return;
            }
            tokio::time::sleep(RETIRED_CHECK).await;
        }
    });
}

/// How long a publisher waits for confirms unless configured otherwise.
pub const DEFAULT_CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

impl Broker {
    /// Connects and declares the topology.
    pub async fn connect(url: &str, name: &str) -> Result<Arc<Broker>, BrokerError> {
        Broker::connect_with(url, name, None).await
    }

    /// Connects (over TLS for `amqps://`, trusting `ca_pem` too) and declares the topology.
    pub async fn connect_with(url: &str, name: &str, ca_pem: Option<String>) -> Result<Arc<Broker>, BrokerError> {
        let broker = Broker::open_with(url, name, ca_pem).await?;
        let ch = broker.channel().await?;
        declare_topology(&ch).await?;
        let _ = ch.close(200, "topology declared".into()).await;
        Ok(broker)
    }

    /// Connects without declaring anything: for upstream systems (and tools acting as them),
    /// whose broker users may not configure.
    pub async fn open(url: &str, name: &str) -> Result<Arc<Broker>, BrokerError> {
        Broker::open_with(url, name, None).await
    }

    /// [`Broker::open`] with a CA bundle for `amqps://`.
    pub async fn open_with(url: &str, name: &str, ca_pem: Option<String>) -> Result<Arc<Broker>, BrokerError> {
        let user = url
            .split(',')
            .next()
            .unwrap_or(url)
            .trim()
            .parse::<lapin::uri::AMQPUri>()
            .map(|u| u.authority.userinfo.username)
            .unwrap_or_else(|_| "guest".to_owned());
        let broker = Arc::new(Broker {
            urls: url.split(',').map(|u| u.trim().to_owned()).filter(|u| !u.is_empty()).collect(),
            next_url: std::sync::atomic::AtomicUsize::new(0),
            name: name.to_owned(),
            user,
            ca_pem,
            consume: Mutex::new(None),
            publish: Mutex::new(None),
        });
        drop(broker.connection(Role::Consume).await?);
        Ok(broker)
    }

    fn slot(&self, role: Role) -> &Mutex<Option<Arc<Connection>>> {
        match role {
            Role::Consume => &self.consume,
            Role::Publish => &self.publish,
        }
    }

    async fn connection(&self, role: Role) -> Result<Arc<Connection>, BrokerError> {
        let mut guard = self.slot(role).lock().await;
        if let Some(conn) = guard.as_ref()
            && conn.status().connected()
        {
            return Ok(conn.clone());
        }
        if let Some(old) = guard.take() {
            crate::metrics::reconnect();
            retire_connection(old);
        }
        let name = match role {
            Role::Consume => self.name.clone(),
            Role::Publish => format!("{} (publishing)", self.name),
        };
        let mut last = None;
        // Every node once, starting with the next in turn.
        for _ in 0..self.urls.len().max(1) {
            let i = self.next_url.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % self.urls.len().max(1);
            let Some(url) = self.urls.get(i) else { break };
            let mut props = ConnectionProperties::default().with_connection_name(LongString::from(name.clone()));
            if self.urls.len() == 1 {
                props = props.with_backoff(recovery_backoff()).enable_auto_recover();
            }
            // TLS for amqps:// URLs: rustls, the certificate verified against the web roots and
            // the configured CA bundle, and the URL's host name checked.
            let tls = lapin::tcp::OwnedTLSConfig { identity: None, cert_chain: self.ca_pem.clone() };
            let runtime = lapin::runtime::default_runtime()?;
            let uri = amqp_uri(url)?;
            match tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect_uri_with_config(uri, props, tls, runtime))
                .await
            {
                Ok(Ok(conn)) => {
                    let conn = Arc::new(conn);
                    *guard = Some(conn.clone());
                    return Ok(conn);
                }
                Ok(Err(e)) => last = Some(BrokerError::Amqp(e)),
                Err(_) => last = Some(BrokerError::ConnectTimeout(CONNECT_TIMEOUT)),
            }
            if self.urls.len() > 1 {
                tracing::warn!(node = i, "cannot connect to this broker node; trying the next");
            }
        }
        Err(last.unwrap_or(BrokerError::ConnectTimeout(CONNECT_TIMEOUT)))
    }

    async fn open_channel(&self, role: Role) -> Result<Channel, BrokerError> {
        let conn = self.connection(role).await?;
        // A blocked connection (resource alarm) answers nothing, channel.open included.
        match tokio::time::timeout(CONNECT_TIMEOUT, conn.create_channel()).await {
            Ok(Ok(ch)) => Ok(ch),
            Ok(Err(e)) => {
                // The connection may be half-dead: forget it so the next call reconnects.
                *self.slot(role).lock().await = None;
                Err(e.into())
            }
            Err(_) => Err(BrokerError::ConnectTimeout(CONNECT_TIMEOUT)),
        }
    }

    /// A new channel on the consumers' connection (reconnecting first if needed).
    pub async fn channel(&self) -> Result<Channel, BrokerError> {
        self.open_channel(Role::Consume).await
    }

    /// A new confirm-mode channel on the publishers' connection.
    async fn publish_channel(&self) -> Result<Channel, BrokerError> {
        let ch = self.open_channel(Role::Publish).await?;
        tokio::time::timeout(CONNECT_TIMEOUT, ch.confirm_select(ConfirmSelectOptions::default()))
            .await
            .map_err(|_| BrokerError::ConnectTimeout(CONNECT_TIMEOUT))??;
        Ok(ch)
    }

    /// A channel in confirm mode for publishing, waiting at most [`DEFAULT_CONFIRM_TIMEOUT`]
    /// for a confirm.
    pub async fn publisher(self: &Arc<Self>) -> Result<Publisher, BrokerError> {
        self.publisher_with(DEFAULT_CONFIRM_TIMEOUT).await
    }

    /// A channel in confirm mode for publishing, waiting at most `confirm_timeout` for the
    /// confirms of a batch.
    pub async fn publisher_with(self: &Arc<Self>, confirm_timeout: Duration) -> Result<Publisher, BrokerError> {
        let ch = self.publish_channel().await?;
        Ok(Publisher { broker: self.clone(), channel: Mutex::new(Some(ch)), confirm_timeout })
    }

    /// The broker user this process authenticates as.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// Closes both connections (in-flight unacked deliveries go back to their queues).
    pub async fn close(&self) {
        for role in [Role::Publish, Role::Consume] {
            if let Some(conn) = self.slot(role).lock().await.take() {
                let _ = tokio::time::timeout(CONNECT_TIMEOUT, conn.close(200, "shutdown".into())).await;
            }
        }
    }
}

fn durable_exchange() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() }
}

fn durable_queue() -> QueueDeclareOptions {
    QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() }
}

/// The broker-side bound on deliveries of one message to the pipeline's queues: past it the
/// broker dead-letters the message itself. It is a backstop: consumers dead-letter a message
/// earlier, at `QYZMET_MAX_DELIVERIES`, with qyzmet's reason headers. Fixed, because a queue's
/// arguments cannot change once it is declared.
pub const QUEUE_DELIVERY_LIMIT: u32 = 20;

/// Arguments of every durable queue: quorum (replicated on a cluster; RabbitMQ 3.10 and 4.x),
/// with a delivery limit and, for the pipeline's queues, at-least-once dead-lettering to
/// `qyzmet.dead` (which needs `reject-publish` overflow).
fn quorum_args(dead_letter: bool) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    if dead_letter {
        args.insert("x-delivery-limit".into(), AMQPValue::LongInt(QUEUE_DELIVERY_LIMIT as i32));
        args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(EXCHANGE_DEAD.into()));
        args.insert("x-dead-letter-strategy".into(), AMQPValue::LongString("at-least-once".into()));
        args.insert("x-overflow".into(), AMQPValue::LongString("reject-publish".into()));
    }
    args
}

async fn declare_queue(ch: &Channel, queue: &str, dead_letter: bool) -> Result<(), BrokerError> {
    ch.queue_declare(queue.into(), durable_queue(), quorum_args(dead_letter)).await.map(|_| ()).map_err(|source| {
        if source.to_string().contains("PRECONDITION_FAILED") {
            BrokerError::QueueMismatch { queue: queue.to_owned(), source }
        } else {
            BrokerError::Amqp(source)
        }
    })
}

/// Declares exchanges, queues and bindings (idempotent; the same on RabbitMQ 3.10 and 4.x).
pub async fn declare_topology(ch: &Channel) -> Result<(), BrokerError> {
    for ex in [EXCHANGE_REQUESTS, EXCHANGE_PAYMENTS, EXCHANGE_DECISIONS, EXCHANGE_OUTCOMES, EXCHANGE_FEEDBACK] {
        ch.exchange_declare(ex.into(), ExchangeKind::Topic, durable_exchange(), FieldTable::default()).await?;
    }
    ch.exchange_declare(EXCHANGE_WORK.into(), ExchangeKind::Direct, durable_exchange(), FieldTable::default()).await?;
    ch.exchange_declare(EXCHANGE_DEAD.into(), ExchangeKind::Fanout, durable_exchange(), FieldTable::default()).await?;
    declare_queue(ch, QUEUE_DEAD, false).await?;
    ch.queue_bind(
        QUEUE_DEAD.into(),
        EXCHANGE_DEAD.into(),
        "".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    let inputs = [
        (QUEUE_INTAKE, EXCHANGE_REQUESTS, "#"),
        (QUEUE_PAYMENT_NOTICES, EXCHANGE_PAYMENTS, "#"),
        (QUEUE_DECISIONS, EXCHANGE_DECISIONS, "#"),
        (QUEUE_QUESTIONNAIRE, EXCHANGE_FEEDBACK, "#"),
    ];
    for (queue, exchange, key) in inputs {
        declare_queue(ch, queue, true).await?;
        ch.queue_bind(queue.into(), exchange.into(), key.into(), QueueBindOptions::default(), FieldTable::default())
            .await?;
    }
    for pool in [PoolName::Registry, PoolName::Payment, PoolName::Review, PoolName::Result] {
        let queue = task_queue(pool);
        declare_queue(ch, &queue, true).await?;
        ch.queue_bind(
            queue.as_str().into(),
            EXCHANGE_WORK.into(),
            pool_name(pool).into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    }
    Ok(())
}

/// Every durable queue of the pipeline, in the order work flows through them (the dead-letter
/// queue last).
pub fn pipeline_queues() -> Vec<String> {
    let mut queues = vec![QUEUE_INTAKE.to_owned()];
    queues.extend([PoolName::Registry, PoolName::Payment, PoolName::Review, PoolName::Result].map(task_queue));
    queues.extend([QUEUE_PAYMENT_NOTICES, QUEUE_DECISIONS, QUEUE_DEAD].map(str::to_owned));
    queues
}

/// Ready messages and consumers of one queue.
#[derive(Debug, Clone, serde::Serialize)]
pub struct QueueStat {
    /// Queue name.
    pub queue: String,
    /// Messages ready for delivery.
    pub messages: u32,
    /// Consumers attached.
    pub consumers: u32,
}

/// [`QueueStat`]s of every pipeline queue, by passive declares on one channel. A queue that
/// cannot be asked (missing, broker away) is left out.
pub async fn queue_stats(broker: &Broker) -> Vec<QueueStat> {
    let mut out = Vec::new();
    let mut ch = None;
    for queue in pipeline_queues() {
        if ch.as_ref().is_none_or(|c: &Channel| !c.status().connected()) {
            ch = broker.channel().await.ok();
        }
        let Some(c) = &ch else { break };
        let passive = QueueDeclareOptions { passive: true, ..Default::default() };
        if let Ok(q) = c.queue_declare(queue.as_str().into(), passive, FieldTable::default()).await {
            out.push(QueueStat { queue, messages: q.message_count(), consumers: q.consumer_count() });
        }
    }
    if let Some(c) = ch {
        let _ = c.close(200, "ok".into()).await;
    }
    out
}

/// Ready and consumer counts of a queue, exactly (a passive declare); `(0, 0)` if it is missing
/// or the broker cannot be reached.
pub async fn queue_counts(broker: &Broker, queue: &str) -> (u32, u32) {
    queue_counts_if_any(broker, queue).await.unwrap_or((0, 0))
}

/// Ready and consumer counts of a queue, exactly, on a channel of its own (the broker closes a
/// channel whose passive declare names a missing queue); `None` if it is missing or the broker
/// cannot be reached.
pub async fn queue_counts_if_any(broker: &Broker, queue: &str) -> Option<(u32, u32)> {
    let ch = broker.channel().await.ok()?;
    let counts = ch
        .queue_declare(queue.into(), QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default())
        .await
        .map(|q| (q.message_count(), q.consumer_count()))
        .ok();
    let _ = ch.close(200, "ok".into()).await;
    counts
}

/// A private, exclusive queue bound to every Outcome on `qyzmet.outcomes`, and its consumer
/// (for the demo, the benchmark and anyone watching outcomes). Keep the channel alive while
/// consuming. Deliveries come without acknowledgements: the queue is the watcher's alone and
/// goes with its connection, so an acknowledgement could not save a message, and it would cost
/// the broker a frame and a queue operation per Outcome.
pub async fn subscribe_outcomes(broker: &Broker) -> Result<(Channel, lapin::Consumer), BrokerError> {
    use lapin::options::BasicConsumeOptions;
    let ch = broker.channel().await?;
    let q = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() },
            FieldTable::default(),
        )
        .await?;
    ch.queue_bind(
        q.name().clone(),
        EXCHANGE_OUTCOMES.into(),
        "#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    let no_ack = BasicConsumeOptions { no_ack: true, ..BasicConsumeOptions::default() };
    let consumer = ch.basic_consume(q.name().clone(), "".into(), no_ack, FieldTable::default()).await?;
    Ok((ch, consumer))
}

/// A message to publish.
#[derive(Debug, Clone)]
pub struct Message {
    /// Target exchange.
    pub exchange: String,
    /// Routing key.
    pub routing_key: String,
    /// `message_id` property (consumers deduplicate by it).
    pub message_id: String,
    /// JSON body.
    pub body: Vec<u8>,
    /// W3C trace context to continue.
    pub traceparent: Option<String>,
    /// Extra headers (dead-letter reasons).
    pub headers: Vec<(String, String)>,
    /// Whether an unroutable message is an error. Outcomes are not: nobody may be listening,
    /// and they are kept in PostgreSQL anyway.
    pub must_route: bool,
}

/// Publishes with confirms and `mandatory`; reopens its channel after a failure.
pub struct Publisher {
    broker: Arc<Broker>,
    channel: Mutex<Option<Channel>>,
    /// A batch whose confirms take longer fails (and stays in the outbox for the relay): a
    /// blocked broker must not hold a handler, the sweeper or the relay forever.
    confirm_timeout: Duration,
}

impl Publisher {
    async fn channel(&self) -> Result<Channel, BrokerError> {
        let mut guard = self.channel.lock().await;
        if let Some(ch) = guard.as_ref()
            && ch.status().connected()
        {
            return Ok(ch.clone());
        }
        let ch = self.broker.publish_channel().await?;
        *guard = Some(ch.clone());
        Ok(ch)
    }

    /// Publishes a batch and waits for every confirm. On error the caller keeps the messages
    /// (they live in the outbox) and tries again later.
    pub async fn publish_all(&self, messages: &[Message]) -> Result<(), BrokerError> {
        if messages.is_empty() {
            return Ok(());
        }
        let ch = self.channel().await?;
        let deadline = tokio::time::Instant::now() + self.confirm_timeout;
        let mut confirms = Vec::with_capacity(messages.len());
        for m in messages {
            let mut headers = FieldTable::default();
            if let Some(tp) = &m.traceparent {
                headers.insert("traceparent".into(), AMQPValue::LongString(tp.as_str().into()));
            }
            for (k, v) in &m.headers {
                headers.insert(ShortString::from(k.as_str()), AMQPValue::LongString(v.as_str().into()));
            }
            let props = BasicProperties::default()
                .with_content_type("application/json".into())
                .with_content_encoding("utf-8".into())
                .with_delivery_mode(2)
                .with_message_id(m.message_id.as_str().into())
                .with_user_id(self.broker.user.as_str().into())
                .with_app_id("qyzmet".into())
                .with_headers(headers);
            let publish = ch.basic_publish(
                m.exchange.as_str().into(),
                m.routing_key.as_str().into(),
                BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() },
                &m.body,
                props,
            );
            let confirm = match tokio::time::timeout_at(deadline, publish).await {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    self.forget_channel().await;
                    return Err(e.into());
                }
                Err(_) => {
                    self.forget_channel().await;
                    return Err(BrokerError::ConfirmTimeout(self.confirm_timeout));
                }
            };
            confirms.push((m, confirm));
        }
        for (m, confirm) in confirms {
            let confirmation = match tokio::time::timeout_at(deadline, confirm).await {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    self.forget_channel().await;
                    return Err(e.into());
                }
                Err(_) => {
                    // Late confirms would arrive on a channel nobody waits on: start afresh.
                    self.forget_channel().await;
                    return Err(BrokerError::ConfirmTimeout(self.confirm_timeout));
                }
            };
            match confirmation {
                Confirmation::Ack(None) | Confirmation::NotRequested => {}
                Confirmation::Ack(Some(_)) if !m.must_route => {
                    tracing::debug!(exchange = %m.exchange, key = %m.routing_key, "no queue bound for this outcome");
                }
                Confirmation::Ack(Some(_)) => {
                    return Err(BrokerError::Unroutable {
                        exchange: m.exchange.clone(),
                        routing_key: m.routing_key.clone(),
                    });
                }
                Confirmation::Nack(_) => return Err(BrokerError::Nacked(m.exchange.clone())),
            }
        }
        Ok(())
    }

    async fn forget_channel(&self) {
        *self.channel.lock().await = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_without_frame_max_asks_for_the_small_default_and_one_with_it_keeps_its_own() {
        let uri = amqp_uri("amqp://qyzmet:secret@127.0.0.1:5672/%2f").expect("url");
        assert_eq!(uri.query.frame_max, Some(DEFAULT_FRAME_MAX));
        let uri = amqp_uri("amqp://qyzmet:secret@127.0.0.1:5672/%2f?frame_max=131072").expect("url");
        assert_eq!(uri.query.frame_max, Some(131_072));
    }

    #[test]
    fn an_unreadable_url_is_refused_without_repeating_it() {
        let e = amqp_uri("amqp://qyzmet:secret@127.0.0.1:notaport/%2f").expect_err("bad port");
        assert!(!e.to_string().contains("secret"), "{e}");
    }
}
