//! Every SQL statement qyzmet runs, in one place.
//!
//! PostgreSQL holds the truth about each request; the broker only carries work. Functions that
//! change a request take the caller's transaction so that a state change, its audit-trail row
//! and the messages it causes (outbox) commit together or not at all.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgConnection, PgPool, Postgres, Transaction};
use std::str::FromStr;
use std::time::Duration;
use uuid::Uuid;

use crate::broker::Message;

pub mod console;

pub use console::{
    ActionRow, AwaitingDecision, DeadLetter, DeadLetterGroup, DecisionRow, Heartbeat, NewDeadLetter, PaymentRow,
    RequestFilter, RequestSummary, SearchKey, ServiceDay, SessionRow, SlaRow, StepActivity,
};

/// Errors from the store: sqlx's own. Which of them are worth retrying is decided in one place,
/// [`crate::pipeline::failure::db_class`].
pub type StoreError = sqlx::Error;

/// How a process uses PostgreSQL.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Connections in the pool.
    pub pool_size: u32,
    /// A statement running longer is cancelled by the server (`statement_timeout`): a stuck
    /// query then fails as a transient error instead of holding a worker and its locks forever.
    pub statement_timeout: Duration,
    /// A transaction left idle longer is ended by the server
    /// (`idle_in_transaction_session_timeout`), releasing its row locks, so a task stuck between
    /// two statements cannot stall the sweeper.
    pub idle_in_transaction_timeout: Duration,
    /// How long to wait for a free connection from the pool.
    pub acquire_timeout: Duration,
}

impl StoreOptions {
    /// Defaults with a pool of `size` connections.
    pub fn with_pool_size(size: u32) -> StoreOptions {
        StoreOptions {
            pool_size: size,
            statement_timeout: Duration::from_secs(30),
            idle_in_transaction_timeout: Duration::from_secs(60),
            acquire_timeout: Duration::from_secs(10),
        }
    }
}

/// The database handle.
#[derive(Clone, Debug)]
pub struct Store {
    pool: PgPool,
    /// Connections for group commit ([`Store::batch_pool`]), whose statements PostgreSQL plans
    /// once per connection instead of once per execution.
    batch: PgPool,
    /// Request serials taken from the sequence ahead of use, a block at a time, so that
    /// registering a request costs no round trip of its own for its number. Numbers stay unique;
    /// with several intake processes they are not in order of arrival across processes.
    serials: std::sync::Arc<tokio::sync::Mutex<Vec<i64>>>,
    /// Document numbers taken ahead of use, [`DOCUMENT_BLOCK`] at a time per scope, for the same
    /// reason (the stock of each scope, as for `serials`).
    documents: std::sync::Arc<tokio::sync::Mutex<std::collections::HashMap<String, Vec<i64>>>>,
}

/// A request's row as the pipeline needs it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RequestRow {
    /// Id.
    pub request_id: Uuid,
    /// Number shown to the applicant.
    pub request_number: Option<String>,
    /// Service as sent.
    pub service: String,
    /// Region as sent.
    pub region: String,
    /// Channel as sent.
    pub channel: String,
    /// Masked applicant identifier.
    pub applicant_masked: String,
    /// queued | waiting | retry | completed | refused.
    pub state: String,
    /// Index of the current step in the route.
    pub step_index: i32,
    /// Current step's pool.
    pub step: Option<String>,
    /// Current step's deadline.
    pub step_deadline: Option<DateTime<Utc>>,
    /// Service deadline (P-41).
    pub service_deadline: Option<DateTime<Utc>>,
    /// Deadline per step (JSON array of RFC 3339 strings).
    pub deadlines: Value,
    /// Attempts of the current step so far.
    pub attempts: i32,
    /// Findings of earlier steps.
    pub facts: Value,
    /// The Request as received.
    pub body: Value,
    /// W3C trace context of the submission.
    pub traceparent: Option<String>,
    /// When intake received it.
    pub received_at: DateTime<Utc>,
}

macro_rules! request_columns {
    () => {
        "request_id, request_number, service, region, channel, applicant_masked, state, step_index, step, \
         step_deadline, service_deadline, deadlines, attempts, facts, body, traceparent, received_at"
    };
}

/// Connections of [`Store::batch_pool`]: one statement in flight per kind of transition
/// (registration, advance, end, park, decision) and for the tasks' reads, and one more for a
/// refused batch written row by row.
const BATCH_CONNECTIONS: u32 = 7;

/// Request serials taken from the sequence at a time ([`Store::next_request_serial`]).
const SERIAL_BLOCK: i64 = 32;

/// How many document numbers of a scope a process takes at once (migration 0012).
const DOCUMENT_BLOCK: i32 = 16;

/// The next of the numbers a process took ahead of use (`stock`, the next last), refilled with
/// the block `take` gives, in order, when it is used up.
async fn next_ahead(
    stock: &mut Vec<i64>,
    take: impl std::future::Future<Output = Result<Vec<i64>, StoreError>>,
) -> Result<i64, StoreError> {
    if stock.is_empty() {
        *stock = take.await?;
        stock.reverse();
    }
    stock.pop().ok_or(sqlx::Error::RowNotFound)
}

/// The guard of every multi-row transition: the `UPDATE requests r` it ends applies to each
/// request of the CTE `input` only while the request still stands where the input's
/// `from_state`, `from_index` and `from_attempts` say, and returns the input rows it moved with
/// each request's `audit_base`: the audit head it had, which the rows the statement appends
/// chain from (the `UPDATE` sets `audit_base` to the old `audit_head`).
/// Compared with the input's columns, the guard is found by the request's id (a `state`
/// literal could send PostgreSQL to the index of every open request instead).
macro_rules! where_still_at {
    () => {
        "FROM input i \
         WHERE r.request_id = i.request_id AND r.state = i.from_state AND r.step_index = i.from_index \
             AND r.attempts = i.from_attempts \
         RETURNING i.*, r.audit_base"
    };
}

/// The hash of the audit row that records a request leaving the step its input row `$row`
/// names (`from_index`, `from_step`, `from_deadline`, `detail`) with `$event`, chained from
/// `$prev`: the statement that moves the request sets its new head from it, and an advance also
/// links the row that follows it to it.
macro_rules! exit_hash {
    ($row:literal, $prev:literal, $event:literal) => {
        concat!(
            "step_history_digest(",
            $prev,
            ", ",
            $row,
            ".request_id, ",
            $row,
            ".from_index, ",
            $row,
            ".from_step, ",
            $event,
            ", now(), ",
            $row,
            ".from_deadline, ",
            $row,
            ".detail)"
        )
    };
}

/// The outbox rows of a multi-row transition: the messages bound by
/// [`OutboxColumns::bind_owned`] at `$columns` (request id first), joined to the requests the
/// statement's CTE `$cte` moved, in order; returns each row's id and message id.
macro_rules! outbox_rows_of {
    ($cte:literal, $columns:literal) => {
        concat!(
            "INSERT INTO outbox (exchange, routing_key, message_id, body, traceparent) \
             SELECT m.exchange, m.routing_key, m.message_id, m.body, m.traceparent FROM ",
            $cte,
            " JOIN unnest(",
            $columns,
            ") WITH ORDINALITY AS m(request_id, exchange, routing_key, message_id, body, traceparent, k) ON m.request_id = ",
            $cte,
            ".request_id ORDER BY m.k RETURNING id, message_id"
        )
    };
}

/// A request row's insert ($1–$18): a request refused at intake.
const INSERT_REQUEST: &str = "INSERT INTO requests (request_id, request_number, service, region, channel, applicant_masked, \
         state, step_index, step, step_deadline, service_deadline, deadlines, body, submitter, traceparent, \
         submitted_at, received_at, applicant_id, registered_at, finished_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, \
             CASE WHEN $2::text IS NULL THEN NULL ELSE now() END, \
             CASE WHEN $7 IN ('completed', 'refused') THEN now() ELSE NULL END) \
     ON CONFLICT (request_id) DO NOTHING";

/// How PostgreSQL plans the pipeline's statements (on [`Store::batch_pool`] and in
/// [`Store::begin`]'s transactions), every one of which finds its rows by key.
///
/// - Generically. The group-commit statements take their rows as arrays; PostgreSQL would
///   plan them afresh on every execution, because a plan made for the array at hand (one row)
///   always looks cheaper than the generic one (ten rows, the same plan). That planning was a
///   sixth of the database's CPU at moderate load (issue 9).
/// - By index, whatever the statistics say. A generic plan is made once per connection, from
///   the statistics of that moment. Made while `requests` is new (a fresh install, every
///   test's database, a restore before its `ANALYZE`), it scanned the whole table and hashed
///   it for every batch, until autovacuum's first analyze replaced it: 2,000 requests at 100
///   per second on a fresh database made 5,000–8,000 scans of `requests`. A keyed statement
///   never gains from a scan or a hash join, so they are priced out (still possible where
///   nothing else can answer).
/// - Without JIT compilation. PostgreSQL compiles a plan whose estimated cost passes
///   `jit_above_cost` (100,000), and pricing a scan out adds 10,000,000,000 to it: a statement
///   with no index to use (a missing or invalid one, a table of ten rows) would be compiled,
///   inlined and optimised by LLVM on every execution — 76 ms for a 10-row table here, against
///   microseconds for the statement. Statements that find a handful of rows by key never gain
///   from it.
const KEYED_PLANS: [(&str, &str); 5] = [
    ("plan_cache_mode", "force_generic_plan"),
    ("enable_seqscan", "off"),
    ("enable_hashjoin", "off"),
    ("enable_mergejoin", "off"),
    ("jit", "off"),
];

/// `BEGIN` with [`KEYED_PLANS`] set for that transaction alone, as one simple query.
static BEGIN_KEYED: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    KEYED_PLANS.iter().fold(String::from("BEGIN"), |sql, (name, value)| format!("{sql}; SET LOCAL {name} = {value}"))
});

/// A new request to insert at intake.
#[derive(Debug)]
pub struct NewRequest {
    /// Id.
    pub request_id: Uuid,
    /// The request number (`S4-AKT-20261123-0000042`, from [`Store::next_request_serial`]);
    /// `None` for requests refused at intake.
    pub request_number: Option<String>,
    /// Service as sent.
    pub service: String,
    /// Region as sent.
    pub region: String,
    /// Channel as sent.
    pub channel: String,
    /// Masked applicant.
    pub applicant_masked: String,
    /// The applicant's IIN or BIN as sent, for an operator's search by it (never logged).
    pub applicant_id: Option<String>,
    /// Initial state: `queued`, or `waiting` at a first step that only waits for an event.
    pub state: String,
    /// Index of the first queued step.
    pub step_index: i32,
    /// Its pool.
    pub step: Option<String>,
    /// Its deadline.
    pub step_deadline: Option<DateTime<Utc>>,
    /// Service deadline.
    pub service_deadline: Option<DateTime<Utc>>,
    /// All step deadlines.
    pub deadlines: Value,
    /// The Request.
    pub body: Value,
    /// Broker-validated `user_id` of the publisher.
    pub submitter: Option<String>,
    /// W3C trace context.
    pub traceparent: Option<String>,
    /// Sender's submission time.
    pub submitted_at: Option<DateTime<Utc>>,
    /// When intake received it.
    pub received_at: DateTime<Utc>,
}

/// A request accepted at intake, owned, so that it can wait in a batch for
/// [`Store::register_all`].
#[derive(Debug)]
pub struct Registration {
    /// The row, numbered and queued at its first step ([`Store::register_all`] writes the state
    /// `queued`; its `state` is not read).
    pub request: NewRequest,
    /// Intake's own deadline, for the "registered" audit row.
    pub intake_deadline: DateTime<Utc>,
    /// The "registered" audit row's detail (its number and service deadline).
    pub detail: Value,
    /// Its outbox messages: the Registered Outcome and the first step's task.
    pub messages: Vec<Message>,
}

/// Messages as the column arrays `unnest` turns into outbox rows.
struct OutboxColumns<'a> {
    exchanges: Vec<&'a str>,
    keys: Vec<&'a str>,
    ids: Vec<&'a str>,
    bodies: Vec<&'a [u8]>,
    traces: Vec<Option<&'a str>>,
}

/// A statement with its parameters bound.
type PgQuery<'q> = sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>;

impl<'a> OutboxColumns<'a> {
    /// Binds `messages` as a statement's last five parameters, the arrays of
    /// `unnest($n::text[], $n+1::text[], $n+2::text[], $n+3::bytea[], $n+4::text[])`.
    fn bind<'q>(q: PgQuery<'q>, messages: &'q [Message]) -> PgQuery<'q> {
        let c = OutboxColumns::of(messages);
        q.bind(c.exchanges).bind(c.keys).bind(c.ids).bind(c.bodies).bind(c.traces)
    }

    /// Binds many transitions' messages as a statement's last six parameters: their requests'
    /// ids (`$n::uuid[]`), then the five outbox columns.
    fn bind_owned<'q>(q: PgQuery<'q>, owned: &'q [(Uuid, &'q Message)]) -> PgQuery<'q> {
        let c = OutboxColumns::of(owned.iter().map(|(_, m)| *m));
        q.bind(owned.iter().map(|(id, _)| *id).collect::<Vec<_>>())
            .bind(c.exchanges)
            .bind(c.keys)
            .bind(c.ids)
            .bind(c.bodies)
            .bind(c.traces)
    }

    fn of(messages: impl IntoIterator<Item = &'a Message>) -> Self {
        let mut c = OutboxColumns { exchanges: vec![], keys: vec![], ids: vec![], bodies: vec![], traces: vec![] };
        for m in messages {
            c.exchanges.push(m.exchange.as_str());
            c.keys.push(m.routing_key.as_str());
            c.ids.push(m.message_id.as_str());
            c.bodies.push(m.body.as_slice());
            c.traces.push(m.traceparent.as_deref());
        }
        c
    }
}

/// Runs a statement that returns the ids of the outbox rows it wrote (none when it changed
/// nothing).
async fn outbox_ids(q: PgQuery<'_>, conn: &mut PgConnection) -> Result<Vec<i64>, StoreError> {
    q.fetch_all(&mut *conn).await?.iter().map(|row| sqlx::Row::try_get::<i64, _>(row, 0)).collect()
}

/// The messages of many transitions, each with its request's id, in order.
fn owned_messages<'a>(all: impl Iterator<Item = (Uuid, &'a [Message])>) -> Vec<(Uuid, &'a Message)> {
    all.flat_map(|(id, messages)| messages.iter().map(move |m| (id, m))).collect()
}

/// Hands each returned outbox row (`id`, `message_id`) back to the transition whose message it
/// holds: message ids are unique within a request, and the requests of one statement differ.
fn ids_by_owner<'a>(
    rows: Vec<sqlx::postgres::PgRow>,
    messages: impl Iterator<Item = &'a [Message]>,
) -> Result<Vec<Vec<i64>>, StoreError> {
    let mut count = 0;
    let mut owner = std::collections::HashMap::new();
    for (i, of_one) in messages.enumerate() {
        owner.extend(of_one.iter().map(|m| (m.message_id.as_str(), i)));
        count = i + 1;
    }
    let mut ids = vec![Vec::new(); count];
    for row in rows {
        let id: i64 = sqlx::Row::try_get(&row, 0)?;
        let message_id: String = sqlx::Row::try_get(&row, 1)?;
        if let Some(&i) = owner.get(message_id.as_str()) {
            ids[i].push(id);
        }
    }
    Ok(ids)
}

/// A request ending, owned, so that it can wait in a batch for [`Store::finish_all`].
#[derive(Debug)]
pub struct Finish {
    /// The request.
    pub request_id: Uuid,
    /// Where it must still stand, and what its audit row records of the step it ends at.
    pub from: StepExit,
    /// completed | refused.
    pub status: &'static str,
    /// Deciding step.
    pub step: Option<String>,
    /// Refusal code.
    pub code: Option<String>,
    /// Refusal kind.
    pub kind: Option<String>,
    /// Result document.
    pub document: Option<Value>,
    /// The whole Outcome message.
    pub body: Value,
    /// When.
    pub at: DateTime<Utc>,
    /// The final Outcome's message.
    pub messages: Vec<Message>,
}

/// Where a request stands. A state change applies only while the request still stands there,
/// which is what makes a duplicate delivery, or two events racing for the same request, change
/// nothing the second time — without a lock taken beforehand.
#[derive(Debug, Clone, Copy)]
pub struct Position<'a> {
    /// `queued`, `waiting` or `retry`.
    pub state: &'a str,
    /// Index of the current step.
    pub step_index: i32,
    /// Attempts of that step so far: a retry scheduled meanwhile changes them.
    pub attempts: i32,
}

impl RequestRow {
    /// Where this row saw the request.
    pub fn position(&self) -> Position<'_> {
        Position { state: &self.state, step_index: self.step_index, attempts: self.attempts }
    }
}

/// A request leaving its step for the next one, owned, so that it can wait in a batch for
/// [`Store::advance_all`].
#[derive(Debug)]
pub struct Advance {
    /// The request.
    pub request_id: Uuid,
    /// Where it must still stand, and what its audit row records of the step it leaves.
    pub from: StepExit,
    /// Index of the next step.
    pub to_index: i32,
    /// Its pool.
    pub to_step: String,
    /// Its deadline.
    pub to_deadline: DateTime<Utc>,
    /// `queued` for a task to run the next step; `waiting` at a step that only waits for an
    /// event ([`crate::regulations::StepDef::only_waits`]), which has no task to run.
    pub to_state: &'static str,
    /// The request's facts after the step (what it learnt merged in).
    pub facts: Value,
    /// The Outcome, and the task message unless the request waits.
    pub messages: Vec<Message>,
}

/// A staff decision as recorded: applied, or not with the reason why (P-35).
#[derive(Debug, Clone)]
pub struct DecisionRecord {
    /// The staff system's id of the decision: a decision counts once.
    pub decision_id: String,
    /// The request it decides.
    pub request_id: Uuid,
    /// `approve`, `refuse` or `extend`.
    pub verdict: &'static str,
    /// The staff's reason, as sent.
    pub reason: Option<Value>,
    /// When the staff decided (signed).
    pub decided_at: DateTime<Utc>,
    /// Whether it moved the request.
    pub applied: bool,
    /// Why it did not.
    pub rejection: Option<String>,
    /// The upstream system that sent it.
    pub submitter: Option<String>,
    /// Its signer, masked: who decided, without the IIN in clear.
    pub signer_masked: Option<String>,
}

/// An approving decision and the advance it makes, to commit together in a batch
/// ([`Store::decide_all`]): both are written, or neither.
#[derive(Debug)]
pub struct Decided {
    /// The request's move past its review step.
    pub advance: Advance,
    /// The decision's record.
    pub decision: DecisionRecord,
}

/// A request parked at its step, owned, so that it can wait in a batch for [`Store::park_all`].
#[derive(Debug)]
pub struct Park {
    /// The request.
    pub request_id: Uuid,
    /// Where it must still stand, and what its audit row records of the step.
    pub from: StepExit,
    /// What it waits for.
    pub to: Parked,
}

/// What a parked request waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parked {
    /// An external event (a payment notice, a staff decision) or its deadline.
    Waiting,
    /// Its next attempt after a transient failure, due then.
    Retry(DateTime<Utc>),
}

impl Parked {
    /// The state it puts the request in.
    fn as_str(&self) -> &'static str {
        match self {
            Parked::Waiting => "waiting",
            Parked::Retry(_) => "retry",
        }
    }

    /// When the next attempt is due; only a retry has one (a constraint keeps it so).
    fn next_attempt_at(&self) -> Option<DateTime<Utc>> {
        match self {
            Parked::Waiting => None,
            Parked::Retry(at) => Some(*at),
        }
    }
}

/// A request leaving a step: where it must still stand, and what the audit trail records of
/// it. Owned, so that a transition can wait in a batch.
#[derive(Debug, Clone)]
pub struct StepExit {
    /// State it must still be in.
    pub state: String,
    /// Index of the step it must still be at.
    pub step_index: i32,
    /// Attempts of that step it must still have.
    pub attempts: i32,
    /// Pool of the step.
    pub step: String,
    /// Deadline recorded with the audit row.
    pub deadline: Option<DateTime<Utc>>,
    /// Detail recorded with the audit row.
    pub detail: Option<Value>,
}

impl StepExit {
    /// Binds many requests' exits as a statement's first seven parameters, the arrays of
    /// `unnest($1::uuid[] (request ids), $2::text[], $3::integer[], $4::integer[], $5::text[],
    /// $6::timestamptz[], $7::jsonb[])`: state, step index, attempts, step, deadline, detail.
    fn bind_all<'q>(q: PgQuery<'q>, all: impl Iterator<Item = (Uuid, &'q StepExit)> + Clone) -> PgQuery<'q> {
        q.bind(all.clone().map(|(id, _)| id).collect::<Vec<_>>())
            .bind(all.clone().map(|(_, e)| e.state.as_str()).collect::<Vec<_>>())
            .bind(all.clone().map(|(_, e)| e.step_index).collect::<Vec<_>>())
            .bind(all.clone().map(|(_, e)| e.attempts).collect::<Vec<_>>())
            .bind(all.clone().map(|(_, e)| e.step.as_str()).collect::<Vec<_>>())
            .bind(all.clone().map(|(_, e)| e.deadline).collect::<Vec<_>>())
            .bind(all.map(|(_, e)| e.detail.as_ref()).collect::<Vec<_>>())
    }
}

/// A step-history row for the status screen.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct HistoryRow {
    /// Step index.
    pub step_index: i32,
    /// Pool.
    pub step: String,
    /// What happened.
    pub event: String,
    /// When.
    pub at: DateTime<Utc>,
    /// Deadline in force.
    pub deadline: Option<DateTime<Utc>>,
    /// Details.
    pub detail: Option<Value>,
}

/// An outbox row waiting for the relay.
#[derive(Debug, sqlx::FromRow)]
pub struct OutboxRow {
    /// Id.
    pub id: i64,
    /// Exchange.
    pub exchange: String,
    /// Routing key.
    pub routing_key: String,
    /// message_id.
    pub message_id: String,
    /// Body.
    pub body: Vec<u8>,
    /// Trace context.
    pub traceparent: Option<String>,
}

impl OutboxRow {
    /// As a message to publish.
    pub fn into_message(self) -> Message {
        let must_route = self.exchange != crate::contract::EXCHANGE_OUTCOMES;
        Message {
            exchange: self.exchange,
            routing_key: self.routing_key,
            message_id: self.message_id,
            body: self.body,
            traceparent: self.traceparent,
            headers: Vec::new(),
            must_route,
        }
    }
}

/// A person in ГБД ФЛ.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct PersonRecord {
    /// IIN.
    pub iin: String,
    /// Full name.
    pub full_name: String,
    /// Birth date.
    pub birth_date: Option<chrono::NaiveDate>,
}

/// What a questionnaire answer is about (see [`Store::questionnaire_subject`]).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct QuestionnaireSubject {
    /// Service as stored.
    pub service: String,
    /// Region as stored.
    pub region: String,
    /// Channel as stored.
    pub channel: String,
    /// The system that submitted the request: only it may send the applicant's answers.
    pub submitter: Option<String>,
    /// When the request got its final outcome; answers before it are ignored.
    pub finished_at: Option<DateTime<Utc>>,
    /// Whether an answer set was accepted already (one per request).
    pub answered: bool,
}

/// An answer set to record.
#[derive(Debug, Clone)]
pub struct QuestionnaireRow<'a> {
    /// The sender's id of the set.
    pub answer_id: &'a str,
    /// The request.
    pub request_id: Uuid,
    /// Service, region and channel of the request ('' when unknown), for the report.
    pub service: &'a str,
    /// Region.
    pub region: &'a str,
    /// Channel.
    pub channel: &'a str,
    /// Answer to question 1 (1–3).
    pub quality: i16,
    /// Answer to question 2 (1–3).
    pub information: i16,
    /// When the applicant answered.
    pub answered_at: DateTime<Utc>,
    /// Who sent it.
    pub submitter: Option<&'a str>,
    /// Why it is ignored; `None` when accepted.
    pub rejection: Option<&'a str>,
}

/// A line of the questionnaire report.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct QuestionnaireCount {
    /// Service.
    pub service: String,
    /// Region.
    pub region: String,
    /// Channel.
    pub channel: String,
    /// Answer sets accepted.
    pub accepted: i64,
    /// Answer sets recorded and ignored.
    pub ignored: i64,
    /// Accepted answers 1, 2, 3 to question 1.
    pub quality_1: i64,
    /// …
    pub quality_2: i64,
    /// …
    pub quality_3: i64,
    /// Accepted answers 1, 2, 3 to question 2.
    pub information_1: i64,
    /// …
    pub information_2: i64,
    /// …
    pub information_3: i64,
}

/// A legal entity in ГБД ЮЛ.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct EntityRecord {
    /// BIN.
    pub bin: String,
    /// Registered name.
    pub name: String,
    /// When a provider closes (local time), where the registry knows it: the cut-off of
    /// Astana's same-day home calls is two hours before it (P-10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closes_at: Option<chrono::NaiveTime>,
}

/// A notarised power of attorney in ЕНИС.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct PowerOfAttorneyRecord {
    /// Registry number.
    pub number: String,
    /// IIN or BIN of the principal.
    pub principal: String,
    /// IIN of the representative.
    pub representative_iin: String,
    /// Last valid day.
    pub valid_until: Option<chrono::NaiveDate>,
    /// Revoked by the principal.
    pub revoked: bool,
}

/// An attachment in the attached-population register.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct AttachmentRecord {
    /// IIN of the patient.
    pub iin: String,
    /// BIN of the PHC organisation.
    pub provider_bin: String,
    /// Since when.
    pub since: Option<chrono::NaiveDate>,
}

impl Store {
    /// Connects with a pool of `size` connections and the default time bounds.
    pub async fn connect(url: &str, size: u32) -> Result<Store, StoreError> {
        Store::connect_with(url, &StoreOptions::with_pool_size(size)).await
    }

    /// Connects with the given pool size and time bounds.
    pub async fn connect_with(url: &str, o: &StoreOptions) -> Result<Store, StoreError> {
        let ms = |d: Duration| d.as_millis().max(1).to_string();
        let options = PgConnectOptions::from_str(url)?
            .application_name("qyzmet")
            .options([
                ("statement_timeout", ms(o.statement_timeout)),
                ("idle_in_transaction_session_timeout", ms(o.idle_in_transaction_timeout)),
            ])
            .log_statements(tracing::log::LevelFilter::Trace)
            .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_secs(2));
        // No test query before every acquire: it would cost a round trip per statement, and a
        // connection that broke meanwhile fails its statement, which is a transient error the
        // caller retries anyway.
        let pool_of = |size: u32| {
            PgPoolOptions::new().max_connections(size).test_before_acquire(false).acquire_timeout(o.acquire_timeout)
        };
        let pool = pool_of(o.pool_size).connect_with(options.clone()).await?;
        // Only the pipeline's keyed statements get these plans ([`KEYED_PLANS`]): a console
        // search, whose filters may be null, needs a plan for its values.
        let batch = pool_of(BATCH_CONNECTIONS).connect_lazy_with(options.options(KEYED_PLANS));
        Ok(Store { pool, batch, serials: Default::default(), documents: Default::default() })
    }

    /// Applies the embedded migrations.
    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        sqlx::migrate!("./migrations").run(&self.pool).await
    }

    /// The pool, for callers that need a plain connection.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Connections for the statements that carry many deliveries' rows ([`Store::register_all`],
    /// [`Store::advance_all`], [`Store::finish_all`], [`Store::get_requests`]), which are planned
    /// once per connection. Other statements use [`Store::pool`].
    pub fn batch_pool(&self) -> &PgPool {
        &self.batch
    }

    /// Starts a transaction whose statements PostgreSQL plans as on [`Store::batch_pool`]
    /// ([`KEYED_PLANS`]). Its transitions are the group-commit statements with one row (a
    /// payment notice's or a staff decision's advance), which PostgreSQL would otherwise plan
    /// afresh on every execution: 0.45 ms a plan, a fifth of the database's CPU for an S4
    /// request in the bench. The settings end with the transaction; they cost no round trip
    /// (one simple query with the `BEGIN`).
    pub async fn begin(&self) -> Result<Transaction<'static, Postgres>, StoreError> {
        self.pool.begin_with(BEGIN_KEYED.as_str()).await
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
        self.batch.close().await;
    }

    // ---- requests -------------------------------------------------------------------------

    /// The next serial for a request number (a block of [`SERIAL_BLOCK`] is taken from the
    /// sequence when the last is used up).
    pub async fn next_request_serial(&self) -> Result<i64, StoreError> {
        let mut serials = self.serials.lock().await;
        next_ahead(&mut serials, async {
            let block: Vec<(i64,)> = sqlx::query_as("SELECT nextval('request_number_seq') FROM generate_series(1, $1)")
                .bind(SERIAL_BLOCK)
                .fetch_all(&self.pool)
                .await?;
            Ok(block.into_iter().map(|(n,)| n).collect())
        })
        .await
    }

    /// Inserts a request unless its id exists; `false` when it was a duplicate.
    pub async fn insert_request(tx: &mut PgConnection, r: &NewRequest) -> Result<bool, StoreError> {
        let inserted = sqlx::query(INSERT_REQUEST)
            .bind(r.request_id)
            .bind(r.request_number.as_deref())
            .bind(r.service.as_str())
            .bind(r.region.as_str())
            .bind(r.channel.as_str())
            .bind(r.applicant_masked.as_str())
            .bind(r.state.as_str())
            .bind(r.step_index)
            .bind(r.step.as_deref())
            .bind(r.step_deadline)
            .bind(r.service_deadline)
            .bind(&r.deadlines)
            .bind(&r.body)
            .bind(r.submitter.as_deref())
            .bind(r.traceparent.as_deref())
            .bind(r.submitted_at)
            .bind(r.received_at)
            .bind(r.applicant_id.as_deref())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        Ok(inserted == 1)
    }

    /// Registers any number of accepted requests in one statement, each as it would be alone:
    /// its row (unless its id exists) in its [`NewRequest::state`], "registered" and "first
    /// step queued" (or "waiting") in its audit trail, and its outbox messages. Returns, per
    /// registration and in order, the ids of its outbox rows; none when its request id existed
    /// (a republished request). The request ids must differ. Many at once is intake's group
    /// commit ([`crate::pipeline::batch`]).
    pub async fn register_all(conn: &mut PgConnection, all: &[&Registration]) -> Result<Vec<Vec<i64>>, StoreError> {
        if all.is_empty() {
            return Ok(Vec::new());
        }
        let owned = owned_messages(all.iter().map(|r| (r.request.request_id, r.messages.as_slice())));
        let q = sqlx::query(concat!(
            "WITH input AS ( \
                 SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
                                      $7::integer[], $8::text[], $9::timestamptz[], $10::timestamptz[], \
                                      $11::jsonb[], $12::jsonb[], $13::text[], $14::text[], $15::timestamptz[], \
                                      $16::timestamptz[], $17::text[], $18::timestamptz[], $19::jsonb[], \
                                      $20::text[]) \
                     WITH ORDINALITY AS i(request_id, request_number, service, region, channel, applicant_masked, \
                                          step_index, step, step_deadline, service_deadline, deadlines, body, \
                                          submitter, traceparent, submitted_at, received_at, applicant_id, \
                                          intake_deadline, detail, state, n)), \
             chained AS ( \
                 SELECT i.*, step_history_digest(NULL, request_id, 0, 'intake', 'registered', now(), \
                                                 intake_deadline, detail) AS registered_hash \
                 FROM input i), \
             ins AS ( \
                 INSERT INTO requests (request_id, request_number, service, region, channel, applicant_masked, \
                     state, step_index, step, step_deadline, service_deadline, deadlines, body, submitter, \
                     traceparent, submitted_at, received_at, applicant_id, registered_at, audit_head) \
                 SELECT request_id, request_number, service, region, channel, applicant_masked, state, \
                     step_index, step, step_deadline, service_deadline, deadlines, body, submitter, traceparent, \
                     submitted_at, received_at, applicant_id, now(), \
                     step_history_digest(registered_hash, request_id, step_index, step, state, now(), \
                                         step_deadline, NULL) \
                 FROM chained ORDER BY n \
                 ON CONFLICT (request_id) DO NOTHING \
                 RETURNING request_id), \
             hist AS ( \
                 INSERT INTO step_history (request_id, step_index, step, event, deadline, detail, prev_hash) \
                 SELECT i.request_id, x.step_index, x.step, x.event, x.deadline, x.detail, x.prev_hash \
                 FROM ins JOIN chained i USING (request_id) \
                     CROSS JOIN LATERAL (VALUES (0, 'intake', 'registered', i.intake_deadline, i.detail, NULL::bytea), \
                                                (i.step_index, i.step, i.state, i.step_deadline, NULL::jsonb, \
                                                 i.registered_hash)) \
                         AS x(step_index, step, event, deadline, detail, prev_hash) \
                 ORDER BY i.n, x.event <> 'registered') ",
            outbox_rows_of!("ins", "$21::uuid[], $22::text[], $23::text[], $24::text[], $25::bytea[], $26::text[]")
        ));
        let rows = all.iter().map(|r| &r.request);
        let q = q
            .bind(rows.clone().map(|r| r.request_id).collect::<Vec<_>>())
            .bind(rows.clone().map(|r| r.request_number.as_deref()).collect::<Vec<_>>())
            .bind(rows.clone().map(|r| r.service.as_str()).collect::<Vec<_>>())
            .bind(rows.clone().map(|r| r.region.as_str()).collect::<Vec<_>>())
            .bind(rows.clone().map(|r| r.channel.as_str()).collect::<Vec<_>>())
            .bind(rows.clone().map(|r| r.applicant_masked.as_str()).collect::<Vec<_>>())
            .bind(rows.clone().map(|r| r.step_index).collect::<Vec<_>>())
            .bind(rows.clone().map(|r| r.step.as_deref()).collect::<Vec<_>>())
            .bind(rows.clone().map(|r| r.step_deadline).collect::<Vec<_>>())
            .bind(rows.clone().map(|r| r.service_deadline).collect::<Vec<_>>())
            .bind(rows.clone().map(|r| &r.deadlines).collect::<Vec<_>>())
            .bind(rows.clone().map(|r| &r.body).collect::<Vec<_>>())
            .bind(rows.clone().map(|r| r.submitter.as_deref()).collect::<Vec<_>>())
            .bind(rows.clone().map(|r| r.traceparent.as_deref()).collect::<Vec<_>>())
            .bind(rows.clone().map(|r| r.submitted_at).collect::<Vec<_>>())
            .bind(rows.clone().map(|r| r.received_at).collect::<Vec<_>>())
            .bind(rows.map(|r| r.applicant_id.as_deref()).collect::<Vec<_>>())
            .bind(all.iter().map(|r| r.intake_deadline).collect::<Vec<_>>())
            .bind(all.iter().map(|r| &r.detail).collect::<Vec<_>>())
            .bind(all.iter().map(|r| r.request.state.as_str()).collect::<Vec<_>>());
        let rows = OutboxColumns::bind_owned(q, &owned).fetch_all(&mut *conn).await?;
        ids_by_owner(rows, all.iter().map(|r| r.messages.as_slice()))
    }

    /// Reads a request without locking it.
    pub async fn get_request(&self, id: Uuid) -> Result<Option<RequestRow>, StoreError> {
        sqlx::query_as(concat!("SELECT ", request_columns!(), " FROM requests WHERE request_id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
    }

    /// Reads many requests without locking them, in one statement (on [`Store::batch_pool`]):
    /// those that exist, in no particular order.
    pub async fn get_requests(&self, ids: &[Uuid]) -> Result<Vec<RequestRow>, StoreError> {
        sqlx::query_as(concat!("SELECT ", request_columns!(), " FROM requests WHERE request_id = ANY($1)"))
            .bind(ids)
            .fetch_all(&self.batch)
            .await
    }

    /// Locks a request for a state change (waits for a concurrent holder).
    pub async fn lock_request(tx: &mut PgConnection, id: Uuid) -> Result<Option<RequestRow>, StoreError> {
        sqlx::query_as(concat!("SELECT ", request_columns!(), " FROM requests WHERE request_id = $1 FOR UPDATE"))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
    }

    /// Serialises everything that concerns one request id, including messages that arrive
    /// before the request row exists (a payment before its request).
    pub async fn lock_request_id(tx: &mut PgConnection, id: Uuid) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1::text, 7431))")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        Ok(())
    }

    /// Puts a request whose retry is due back in the queued state (same step).
    pub async fn set_requeued(tx: &mut PgConnection, id: Uuid) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE requests SET state = 'queued', next_attempt_at = NULL, updated_at = now() WHERE request_id = $1",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }

    /// The commonest transition, for any number of requests in one statement: queue each
    /// request at its next step (or park it there, [`Advance::to_state`]), append "step passed"
    /// and "next step queued" (or "waiting") to its audit trail, and write its outbox messages.
    /// Each applies only while its request is still where the caller saw it
    /// ([`Advance::from`]), so it needs no lock taken beforehand: run on its own the statement
    /// is its own transaction, and of two deliveries of the same task the second finds the
    /// request moved and changes nothing. Returns, per advance and in order, the ids of its
    /// outbox rows; none when its request had moved.
    ///
    /// Many advances in one statement is the group commit of [`crate::pipeline::batch`]: one
    /// round trip, one plan and one commit for them all. The request ids must differ.
    pub async fn advance_all(conn: &mut PgConnection, all: &[&Advance]) -> Result<Vec<Vec<i64>>, StoreError> {
        if all.is_empty() {
            return Ok(Vec::new());
        }
        let owned = owned_messages(all.iter().map(|a| (a.request_id, a.messages.as_slice())));
        let q = sqlx::query(concat!(
            "WITH input AS ( \
                 SELECT * FROM unnest($1::uuid[], $2::text[], $3::integer[], $4::integer[], $5::text[], \
                                      $6::timestamptz[], $7::jsonb[], $8::integer[], $9::text[], \
                                      $10::timestamptz[], $11::jsonb[], $12::text[]) \
                     WITH ORDINALITY AS i(request_id, from_state, from_index, from_attempts, from_step, \
                                          from_deadline, detail, to_index, to_step, to_deadline, facts, \
                                          to_state, n)), \
             upd AS ( \
                 UPDATE requests r SET state = i.to_state, step_index = i.to_index, step = i.to_step, \
                     step_deadline = i.to_deadline, facts = i.facts, attempts = 0, next_attempt_at = NULL, \
                     updated_at = now(), audit_base = r.audit_head, \
                     audit_head = step_history_digest(",
            exit_hash!("i", "r.audit_head", "'passed'"),
            ", r.request_id, i.to_index, i.to_step, i.to_state, now(), i.to_deadline, NULL) \
                 ",
            where_still_at!(),
            "), \
             hist AS ( \
                 INSERT INTO step_history (request_id, step_index, step, event, deadline, detail, prev_hash) \
                 SELECT upd.request_id, x.step_index, x.step, x.event, x.deadline, x.detail, x.prev_hash FROM upd \
                     CROSS JOIN LATERAL (VALUES (upd.from_index, upd.from_step, 'passed', upd.from_deadline, upd.detail, \
                                                 upd.audit_base), \
                                                (upd.to_index, upd.to_step, upd.to_state, upd.to_deadline, NULL::jsonb, \
                                                 ",
            exit_hash!("upd", "upd.audit_base", "'passed'"),
            ")) \
                         AS x(step_index, step, event, deadline, detail, prev_hash) \
                 ORDER BY upd.n, x.event <> 'passed') ",
            outbox_rows_of!("upd", "$13::uuid[], $14::text[], $15::text[], $16::text[], $17::bytea[], $18::text[]")
        ));
        let q = StepExit::bind_all(q, all.iter().map(|a| (a.request_id, &a.from)))
            .bind(all.iter().map(|a| a.to_index).collect::<Vec<_>>())
            .bind(all.iter().map(|a| a.to_step.as_str()).collect::<Vec<_>>())
            .bind(all.iter().map(|a| a.to_deadline).collect::<Vec<_>>())
            .bind(all.iter().map(|a| &a.facts).collect::<Vec<_>>())
            .bind(all.iter().map(|a| a.to_state).collect::<Vec<_>>());
        let rows = OutboxColumns::bind_owned(q, &owned).fetch_all(&mut *conn).await?;
        ids_by_owner(rows, all.iter().map(|a| a.messages.as_slice()))
    }

    /// Ends many requests in one statement, each as [`Store::finish`] would alone: its final
    /// state, its one final outcome, its audit row and its outbox messages, if it still stands
    /// where its [`Finish::from`] says. Returns, per finish and in order, the ids of its outbox
    /// rows; none when its request had moved. The request ids must differ.
    ///
    /// The result document is stored once, in `outcomes.document`; the stored Outcome body
    /// leaves it out and [`Store::outcome_of`] puts it back.
    pub async fn finish_all(conn: &mut PgConnection, all: &[&Finish]) -> Result<Vec<Vec<i64>>, StoreError> {
        if all.is_empty() {
            return Ok(Vec::new());
        }
        let owned = owned_messages(all.iter().map(|f| (f.request_id, f.messages.as_slice())));
        let q = sqlx::query(concat!(
            "WITH input AS ( \
                 SELECT * FROM unnest($1::uuid[], $2::text[], $3::integer[], $4::integer[], $5::text[], \
                                      $6::timestamptz[], $7::jsonb[], $8::text[], $9::text[], $10::text[], \
                                      $11::text[], $12::jsonb[], $13::jsonb[], $14::timestamptz[]) \
                     WITH ORDINALITY AS i(request_id, from_state, from_index, from_attempts, from_step, \
                                          from_deadline, detail, status, step, code, kind, document, body, at, n)), \
             upd AS ( \
                 UPDATE requests r SET state = i.status, finished_at = i.at, next_attempt_at = NULL, \
                     updated_at = now(), audit_base = r.audit_head, audit_head = ",
            exit_hash!("i", "r.audit_head", "i.status"),
            " ",
            where_still_at!(),
            "), \
             fin AS ( \
                 INSERT INTO outcomes (request_id, status, step, code, kind, document, body, at) \
                 SELECT request_id, status, step, code, kind, document, body - 'document', at FROM upd \
                 ORDER BY n RETURNING request_id), \
             hist AS ( \
                 INSERT INTO step_history (request_id, step_index, step, event, deadline, detail, prev_hash) \
                 SELECT upd.request_id, upd.from_index, upd.from_step, upd.status, upd.from_deadline, upd.detail, \
                     upd.audit_base \
                 FROM upd JOIN fin USING (request_id) ORDER BY upd.n) ",
            outbox_rows_of!("fin", "$15::uuid[], $16::text[], $17::text[], $18::text[], $19::bytea[], $20::text[]")
        ));
        let q = StepExit::bind_all(q, all.iter().map(|f| (f.request_id, &f.from)))
            .bind(all.iter().map(|f| f.status).collect::<Vec<_>>())
            .bind(all.iter().map(|f| f.step.as_deref()).collect::<Vec<_>>())
            .bind(all.iter().map(|f| f.code.as_deref()).collect::<Vec<_>>())
            .bind(all.iter().map(|f| f.kind.as_deref()).collect::<Vec<_>>())
            .bind(all.iter().map(|f| f.document.as_ref()).collect::<Vec<_>>())
            .bind(all.iter().map(|f| &f.body).collect::<Vec<_>>())
            .bind(all.iter().map(|f| f.at).collect::<Vec<_>>());
        let rows = OutboxColumns::bind_owned(q, &owned).fetch_all(&mut *conn).await?;
        ids_by_owner(rows, all.iter().map(|f| f.messages.as_slice()))
    }

    /// Parks many requests in one statement, each as it would be alone: moved to `waiting` or
    /// `retry` at its step, with its audit row, if it still stands where its [`Park::from`]
    /// says. Returns, per park and in order, whether it applied (`false`: the request had
    /// moved). The request ids must differ.
    ///
    /// The request is found by its id alone: a guard on `state` written as a literal would let
    /// PostgreSQL answer from `requests_open_deadline`, reading every open request, whenever
    /// its statistics make that index look small (it did, 7 ms a park under load); compared
    /// with the input's column, as here, the guard cannot match the index's predicate.
    pub async fn park_all(conn: &mut PgConnection, all: &[&Park]) -> Result<Vec<bool>, StoreError> {
        if all.is_empty() {
            return Ok(Vec::new());
        }
        let q = sqlx::query(concat!(
            "WITH input AS ( \
                 SELECT * FROM unnest($1::uuid[], $2::text[], $3::integer[], $4::integer[], $5::text[], \
                                      $6::timestamptz[], $7::jsonb[], $8::text[], $9::timestamptz[]) \
                     WITH ORDINALITY AS i(request_id, from_state, from_index, from_attempts, from_step, \
                                          from_deadline, detail, to_state, next_attempt_at, n)), \
             upd AS ( \
                 UPDATE requests r SET state = i.to_state, \
                     attempts = CASE WHEN i.to_state = 'retry' THEN r.attempts + 1 ELSE r.attempts END, \
                     next_attempt_at = i.next_attempt_at, updated_at = now(), audit_base = r.audit_head, \
                     audit_head = ",
            exit_hash!("i", "r.audit_head", "i.to_state"),
            " ",
            where_still_at!(),
            "), \
             hist AS ( \
                 INSERT INTO step_history (request_id, step_index, step, event, deadline, detail, prev_hash) \
                 SELECT request_id, from_index, from_step, to_state, from_deadline, detail, audit_base FROM upd \
                 ORDER BY n) \
             SELECT request_id FROM upd"
        ));
        let q = StepExit::bind_all(q, all.iter().map(|p| (p.request_id, &p.from)))
            .bind(all.iter().map(|p| p.to.as_str()).collect::<Vec<_>>())
            .bind(all.iter().map(|p| p.to.next_attempt_at()).collect::<Vec<_>>());
        let parked = q
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(|row| sqlx::Row::try_get::<Uuid, _>(row, 0))
            .collect::<Result<std::collections::HashSet<_>, _>>()?;
        Ok(all.iter().map(|p| parked.contains(&p.request_id)).collect())
    }

    /// Appends a row to a request's audit trail and moves its head (in the caller's transaction,
    /// which holds the request's lock); writes nothing if there is no such request.
    pub async fn history(
        tx: &mut PgConnection,
        id: Uuid,
        step_index: i32,
        step: &str,
        event: &str,
        deadline: Option<DateTime<Utc>>,
        detail: Option<&Value>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "WITH moved AS ( \
                 UPDATE requests SET audit_base = audit_head, \
                     audit_head = step_history_digest(audit_head, request_id, $2, $3, $4, now(), $5, $6) \
                 WHERE request_id = $1 RETURNING audit_base) \
             INSERT INTO step_history (request_id, step_index, step, event, deadline, detail, prev_hash) \
             SELECT $1, $2, $3, $4, $5, $6, audit_base FROM moved",
        )
        .bind(id)
        .bind(step_index)
        .bind(step)
        .bind(event)
        .bind(deadline)
        .bind(detail)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }

    /// The audit trail of a request.
    pub async fn history_of(&self, id: Uuid) -> Result<Vec<HistoryRow>, StoreError> {
        sqlx::query_as(
            "SELECT step_index, step, event, at, deadline, detail FROM step_history \
             WHERE request_id = $1 ORDER BY id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await
    }

    /// The final outcome message of a request, if any.
    pub async fn outcome_of(&self, id: Uuid) -> Result<Option<Value>, StoreError> {
        let row: Option<(Value,)> = sqlx::query_as(
            "SELECT CASE WHEN document IS NULL THEN body ELSE body || jsonb_build_object('document', document) END \
             FROM outcomes WHERE request_id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(b,)| b))
    }

    /// Ids of open requests past their step deadline, locked (skipping rows a worker holds).
    pub async fn lock_overdue(tx: &mut PgConnection, limit: i64) -> Result<Vec<RequestRow>, StoreError> {
        sqlx::query_as(concat!(
            "SELECT ",
            request_columns!(),
            " FROM requests WHERE state IN ('queued', 'waiting', 'retry') AND step_deadline < now() \
             ORDER BY step_deadline LIMIT $1 FOR UPDATE SKIP LOCKED"
        ))
        .bind(limit)
        .fetch_all(&mut *tx)
        .await
    }

    /// Takes the fleet's turn at `chore` for process `by` if nobody took it within `every`;
    /// whether it was taken. Every process runs the fleet's chores (the deadline sweep, the
    /// outbox relay) and runs a pass only with the turn, so that the fleet runs each about once
    /// per interval however many processes there are (migration 0018). Of two processes asking
    /// at once, the second waits for the first's row and then finds the turn taken.
    ///
    /// A turn not yet due costs a read and no write (an `UPDATE` that matches nothing takes no
    /// lock and commits nothing). A chore without a row (migration 0018 seeds none) gets one.
    pub async fn take_turn(&self, chore: &str, every: Duration, by: Uuid) -> Result<bool, StoreError> {
        let (taken, known): (bool, bool) = sqlx::query_as(
            "WITH taken AS ( \
                 UPDATE chore_turns SET taken_at = now(), taken_by = $3 \
                 WHERE chore = $1 AND taken_at <= now() - make_interval(secs => $2) RETURNING 1) \
             SELECT EXISTS (SELECT 1 FROM taken), EXISTS (SELECT 1 FROM chore_turns WHERE chore = $1)",
        )
        .bind(chore)
        .bind(every.as_secs_f64())
        .bind(by)
        .fetch_one(&self.pool)
        .await?;
        if taken || known {
            return Ok(taken);
        }
        let first = sqlx::query(
            "INSERT INTO chore_turns (chore, taken_at, taken_by) VALUES ($1, now(), $2) ON CONFLICT (chore) DO NOTHING",
        )
        .bind(chore)
        .bind(by)
        .execute(&self.pool)
        .await?;
        Ok(first.rows_affected() == 1)
    }

    /// Requests whose retry is due, locked (skipping rows a worker holds).
    ///
    /// It asks for `next_attempt_at` alone, which is set exactly while a request is in `retry`
    /// (a constraint of migration 0015), so that only `requests_retry_due` can answer it: asked
    /// for `state = 'retry'` too, PostgreSQL could read every open request instead.
    pub async fn lock_due_retries(tx: &mut PgConnection, limit: i64) -> Result<Vec<RequestRow>, StoreError> {
        sqlx::query_as(concat!(
            "SELECT ",
            request_columns!(),
            " FROM requests WHERE next_attempt_at <= now() \
             ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED"
        ))
        .bind(limit)
        .fetch_all(&mut *tx)
        .await
    }

    /// Open requests at a step (waiting for, or queued to, `step`): (id, service).
    pub async fn open_at_step(&self, step: &str) -> Result<Vec<(Uuid, String)>, StoreError> {
        sqlx::query_as(
            "SELECT request_id, service FROM requests WHERE state IN ('queued', 'waiting') AND step = $1 LIMIT 5000",
        )
        .bind(step)
        .fetch_all(&self.pool)
        .await
    }

    /// How many of these requests have their final outcome.
    pub async fn count_outcomes(&self, ids: &[Uuid]) -> Result<i64, StoreError> {
        let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM outcomes WHERE request_id = ANY($1)")
            .bind(ids)
            .fetch_one(&self.pool)
            .await?;
        Ok(n)
    }

    /// The final outcome of each of these requests that has one: `completed` or the refusal kind.
    pub async fn outcome_kinds(&self, ids: &[Uuid]) -> Result<std::collections::HashMap<Uuid, String>, StoreError> {
        let rows: Vec<(Uuid, String)> =
            sqlx::query_as("SELECT request_id, coalesce(kind, status) FROM outcomes WHERE request_id = ANY($1)")
                .bind(ids)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().collect())
    }

    /// Requests queued at a step, i.e. whose task message should be in that pool's queue:
    /// (id, step index, step, trace context).
    pub async fn queued_tasks(&self) -> Result<Vec<(Uuid, i32, String, Option<String>)>, StoreError> {
        sqlx::query_as(
            "SELECT request_id, step_index, step, traceparent FROM requests \
             WHERE state = 'queued' AND step IS NOT NULL ORDER BY step_deadline",
        )
        .fetch_all(&self.pool)
        .await
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map(|_| ())
    }

    /// Requests waiting for an outside answer, by step: (step, count, seconds the oldest waited).
    pub async fn waiting_summary(&self) -> Result<Vec<(String, i64, f64)>, StoreError> {
        sqlx::query_as(
            "SELECT step, count(*), coalesce(extract(epoch FROM now() - min(updated_at)), 0)::float8 \
             FROM requests WHERE state = 'waiting' GROUP BY step",
        )
        .fetch_all(&self.pool)
        .await
    }

    /// Counts requests by state (for the demo and operators).
    pub async fn count_by_state(&self) -> Result<Vec<(String, i64)>, StoreError> {
        sqlx::query_as("SELECT state, count(*) FROM requests GROUP BY state ORDER BY state").fetch_all(&self.pool).await
    }

    // ---- outbox ---------------------------------------------------------------------------

    /// Writes messages to the outbox; returns their ids in order.
    pub async fn outbox_insert(tx: &mut PgConnection, messages: &[Message]) -> Result<Vec<i64>, StoreError> {
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        let q = sqlx::query(
            "INSERT INTO outbox (exchange, routing_key, message_id, body, traceparent) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::text[]) \
             RETURNING id",
        );
        outbox_ids(OutboxColumns::bind(q, messages), tx).await
    }

    /// Removes outbox rows whose messages were published: the outbox holds only what is in
    /// flight, so it stays small however many requests went through.
    pub async fn outbox_mark_published(&self, ids: &[i64]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        sqlx::query("DELETE FROM outbox WHERE id = ANY($1)").bind(ids).execute(&self.pool).await?;
        Ok(())
    }

    /// Claims unpublished rows older than `age` for the relay and returns them. A claim lapses
    /// after `age` too, so rows claimed by a relay that died are claimed again later; two relays
    /// never claim the same row at once (`SKIP LOCKED` while claiming).
    pub async fn outbox_claim_stale(&self, age: Duration, limit: i64) -> Result<Vec<OutboxRow>, StoreError> {
        sqlx::query_as(
            "UPDATE outbox SET relay_claimed_at = now() WHERE id IN ( \
                 SELECT id FROM outbox \
                 WHERE created_at < now() - make_interval(secs => $1) \
                   AND (relay_claimed_at IS NULL OR relay_claimed_at < now() - make_interval(secs => $1)) \
                 ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED) \
             RETURNING id, exchange, routing_key, message_id, body, traceparent",
        )
        .bind(age.as_secs_f64())
        .bind(limit)
        .fetch_all(&self.pool)
        .await
    }

    /// The database's size on disk, bytes (tables, indexes, TOAST): with the request count, what
    /// a request costs to keep.
    pub async fn database_bytes(&self) -> Result<i64, StoreError> {
        let (n,): (i64,) = sqlx::query_as("SELECT pg_database_size(current_database())").fetch_one(&self.pool).await?;
        Ok(n)
    }

    /// Number of unpublished outbox rows.
    pub async fn outbox_backlog(&self) -> Result<i64, StoreError> {
        let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM outbox").fetch_one(&self.pool).await?;
        Ok(n)
    }

    // ---- payments and decisions -----------------------------------------------------------

    /// Records a payment; `false` if this payment_id was already counted.
    #[allow(clippy::too_many_arguments)]
    pub async fn insert_payment(
        tx: &mut PgConnection,
        payment_id: &str,
        request_id: Uuid,
        amount: &str,
        currency: &str,
        paid_at: DateTime<Utc>,
        payer_masked: &str,
        submitter: Option<&str>,
    ) -> Result<bool, StoreError> {
        let n = sqlx::query(
            "INSERT INTO payments (payment_id, request_id, amount, currency, paid_at, payer_masked, submitter) \
             VALUES ($1, $2, $3::numeric, $4, $5, $6, $7) ON CONFLICT (payment_id) DO NOTHING",
        )
        .bind(payment_id)
        .bind(request_id)
        .bind(amount)
        .bind(currency)
        .bind(paid_at)
        .bind(payer_masked)
        .bind(submitter)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// Ids of the payments recorded for a request.
    pub async fn payments_for(tx: &mut PgConnection, request_id: Uuid) -> Result<Vec<String>, StoreError> {
        let rows: Vec<(String,)> =
            sqlx::query_as("SELECT payment_id FROM payments WHERE request_id = $1 ORDER BY received_at")
                .bind(request_id)
                .fetch_all(&mut *tx)
                .await?;
        Ok(rows.into_iter().map(|(p,)| p).collect())
    }

    /// Records a staff decision; `false` if this decision_id was already recorded.
    pub async fn insert_decision(tx: &mut PgConnection, d: &DecisionRecord) -> Result<bool, StoreError> {
        Ok(!Store::insert_decisions(tx, &[d]).await?.is_empty())
    }

    /// Records staff decisions in one statement, each once per decision_id; the ids of those
    /// that were new. One recorded by a transaction not yet committed is waited for.
    pub async fn insert_decisions(tx: &mut PgConnection, all: &[&DecisionRecord]) -> Result<Vec<String>, StoreError> {
        if all.is_empty() {
            return Ok(Vec::new());
        }
        sqlx::query_scalar(
            "INSERT INTO decisions (decision_id, request_id, verdict, reason, decided_at, applied, rejection, submitter, \
                 signer_masked) \
             SELECT * FROM unnest($1::text[], $2::uuid[], $3::text[], $4::jsonb[], $5::timestamptz[], $6::boolean[], \
                                  $7::text[], $8::text[], $9::text[]) \
             ON CONFLICT (decision_id) DO NOTHING RETURNING decision_id",
        )
        .bind(all.iter().map(|d| d.decision_id.as_str()).collect::<Vec<_>>())
        .bind(all.iter().map(|d| d.request_id).collect::<Vec<_>>())
        .bind(all.iter().map(|d| d.verdict).collect::<Vec<_>>())
        .bind(all.iter().map(|d| d.reason.as_ref()).collect::<Vec<_>>())
        .bind(all.iter().map(|d| d.decided_at).collect::<Vec<_>>())
        .bind(all.iter().map(|d| d.applied).collect::<Vec<_>>())
        .bind(all.iter().map(|d| d.rejection.as_deref()).collect::<Vec<_>>())
        .bind(all.iter().map(|d| d.submitter.as_deref()).collect::<Vec<_>>())
        .bind(all.iter().map(|d| d.signer_masked.as_deref()).collect::<Vec<_>>())
        .fetch_all(&mut *tx)
        .await
    }

    /// Applies many approving decisions in one transaction. Returns, per decision and in order,
    /// the ids of its advance's outbox rows; none when it was not applied, and then nothing of
    /// it is written (the caller decides again under the request's lock, or finds it a
    /// duplicate). The request ids must differ.
    ///
    /// The requests are locked first, and only those still where the approval saw them stay
    /// in: the same position, and the same step deadline ([`StepExit::deadline`] of the
    /// advance), since an extension (P-34) moves the deadlines without moving the request.
    /// Their records are written next, and only those that were new move their requests
    /// ([`Store::advance_all`], which then applies to every one of them): a record of the same
    /// decision written by another delivery, applied or rejected, stays the only one.
    pub async fn decide_all(conn: &mut PgConnection, all: &[&Decided]) -> Result<Vec<Vec<i64>>, StoreError> {
        use sqlx::Connection;
        let mut tx = conn.begin().await?;
        let unchanged: std::collections::HashSet<Uuid> = sqlx::query_scalar(
            "SELECT r.request_id FROM requests r \
                 JOIN unnest($1::uuid[], $2::text[], $3::integer[], $4::integer[], $5::timestamptz[]) \
                     AS i(request_id, state, step_index, attempts, step_deadline) ON r.request_id = i.request_id \
             WHERE r.state = i.state AND r.step_index = i.step_index AND r.attempts = i.attempts \
                 AND r.step_deadline IS NOT DISTINCT FROM i.step_deadline \
             ORDER BY r.request_id FOR UPDATE OF r",
        )
        .bind(all.iter().map(|d| d.advance.request_id).collect::<Vec<_>>())
        .bind(all.iter().map(|d| d.advance.from.state.as_str()).collect::<Vec<_>>())
        .bind(all.iter().map(|d| d.advance.from.step_index).collect::<Vec<_>>())
        .bind(all.iter().map(|d| d.advance.from.attempts).collect::<Vec<_>>())
        .bind(all.iter().map(|d| d.advance.from.deadline).collect::<Vec<_>>())
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
        let records: Vec<&DecisionRecord> =
            all.iter().filter(|d| unchanged.contains(&d.advance.request_id)).map(|d| &d.decision).collect();
        let new: std::collections::HashSet<String> =
            Store::insert_decisions(&mut tx, &records).await?.into_iter().collect();
        let moving: Vec<&Advance> = all
            .iter()
            .filter(|d| unchanged.contains(&d.advance.request_id) && new.contains(&d.decision.decision_id))
            .map(|d| &d.advance)
            .collect();
        let mut written: std::collections::HashMap<Uuid, Vec<i64>> =
            moving.iter().map(|a| a.request_id).zip(Store::advance_all(&mut tx, &moving).await?).collect();
        tx.commit().await?;
        Ok(all.iter().map(|d| written.remove(&d.advance.request_id).unwrap_or_default()).collect())
    }

    /// Whether a decision id was already recorded.
    pub async fn decision_exists(tx: &mut PgConnection, decision_id: &str) -> Result<bool, StoreError> {
        let row: Option<(i32,)> = sqlx::query_as("SELECT 1 FROM decisions WHERE decision_id = $1")
            .bind(decision_id)
            .fetch_optional(&mut *tx)
            .await?;
        Ok(row.is_some())
    }

    /// What an arriving questionnaire answer refers to, read under the request's lock; `None`
    /// for an unknown request.
    pub async fn questionnaire_subject(
        tx: &mut PgConnection,
        request_id: Uuid,
    ) -> Result<Option<QuestionnaireSubject>, StoreError> {
        sqlx::query_as(
            "SELECT r.service, r.region, r.channel, r.submitter, o.at AS finished_at, \
                    EXISTS (SELECT 1 FROM questionnaire_answers q WHERE q.request_id = r.request_id AND q.accepted) \
                      AS answered \
             FROM requests r LEFT JOIN outcomes o ON o.request_id = r.request_id WHERE r.request_id = $1",
        )
        .bind(request_id)
        .fetch_optional(&mut *tx)
        .await
    }

    /// Records an answer set; `false` when this `answer_id` was recorded before (a repeat).
    pub async fn insert_questionnaire(tx: &mut PgConnection, a: &QuestionnaireRow<'_>) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO questionnaire_answers (answer_id, request_id, service, region, channel, quality, \
                 information, answered_at, submitter, accepted, rejection) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT (answer_id) DO NOTHING",
        )
        .bind(a.answer_id)
        .bind(a.request_id)
        .bind(a.service)
        .bind(a.region)
        .bind(a.channel)
        .bind(a.quality)
        .bind(a.information)
        .bind(a.answered_at)
        .bind(a.submitter)
        .bind(a.rejection.is_none())
        .bind(a.rejection)
        .execute(&mut *tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Questionnaire answers by service, region and channel: how many were accepted and
    /// ignored, and how the accepted ones answered each question (`qyzmet report
    /// questionnaire`).
    pub async fn questionnaire_counts(&self) -> Result<Vec<QuestionnaireCount>, StoreError> {
        sqlx::query_as(
            "SELECT service, region, channel, \
                    count(*) FILTER (WHERE accepted) AS accepted, count(*) FILTER (WHERE NOT accepted) AS ignored, \
                    count(*) FILTER (WHERE accepted AND quality = 1) AS quality_1, \
                    count(*) FILTER (WHERE accepted AND quality = 2) AS quality_2, \
                    count(*) FILTER (WHERE accepted AND quality = 3) AS quality_3, \
                    count(*) FILTER (WHERE accepted AND information = 1) AS information_1, \
                    count(*) FILTER (WHERE accepted AND information = 2) AS information_2, \
                    count(*) FILTER (WHERE accepted AND information = 3) AS information_3 \
             FROM questionnaire_answers GROUP BY service, region, channel ORDER BY service, region, channel",
        )
        .fetch_all(&self.pool)
        .await
    }

    /// Extends a request's current step (P-34), in the caller's transaction and under its lock:
    /// the new step deadlines, the step's and the service's deadline, an `extended` history row
    /// and the Outcome announcing it; the outbox ids.
    #[allow(clippy::too_many_arguments)]
    pub async fn extend(
        tx: &mut PgConnection,
        id: Uuid,
        step: (i32, &str),
        deadlines: &Value,
        step_deadline: DateTime<Utc>,
        service_deadline: Option<DateTime<Utc>>,
        detail: &Value,
        messages: &[Message],
    ) -> Result<Vec<i64>, StoreError> {
        sqlx::query(
            "UPDATE requests SET deadlines = $2, step_deadline = $3, service_deadline = $4, updated_at = now() \
             WHERE request_id = $1",
        )
        .bind(id)
        .bind(deadlines)
        .bind(step_deadline)
        .bind(service_deadline)
        .execute(&mut *tx)
        .await?;
        Store::history(tx, id, step.0, step.1, "extended", Some(step_deadline), Some(detail)).await?;
        Store::outbox_insert(tx, messages).await
    }

    /// Finished requests of `service` whose personal data are due for purging: final outcome
    /// older than `keep`, not purged yet; at most `limit`, oldest first.
    pub async fn due_for_purge(
        &self,
        service: &str,
        keep: chrono::Duration,
        limit: i64,
    ) -> Result<Vec<Uuid>, StoreError> {
        let rows: Vec<(Uuid,)> = sqlx::query_as(
            "SELECT request_id FROM requests \
             WHERE service = $1 AND purged_at IS NULL AND finished_at IS NOT NULL AND finished_at < now() - $2 \
             ORDER BY finished_at LIMIT $3",
        )
        .bind(service)
        .bind(keep)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|r| r.0).collect())
    }

    /// Purges one finished request's personal data if its final outcome is older than `keep`
    /// (migration 0010: the one function that may rewrite a request's body and outcome);
    /// whether it did.
    pub async fn purge_personal_data(&self, request_id: Uuid, keep: chrono::Duration) -> Result<bool, StoreError> {
        let (done,): (bool,) = sqlx::query_as("SELECT purge_personal_data($1, $2)")
            .bind(request_id)
            .bind(keep)
            .fetch_one(&self.pool)
            .await?;
        Ok(done)
    }

    /// Decisions recorded for a request: (decision_id, applied, rejection).
    pub async fn decisions_for(&self, request_id: Uuid) -> Result<Vec<(String, bool, Option<String>)>, StoreError> {
        sqlx::query_as(
            "SELECT decision_id, applied, rejection FROM decisions WHERE request_id = $1 ORDER BY received_at",
        )
        .bind(request_id)
        .fetch_all(&self.pool)
        .await
    }

    /// Next document number in a scope (prefix and year), from this process's block; a new
    /// block of [`DOCUMENT_BLOCK`] is taken when it is used up (migration 0012 says why that is
    /// safe without a synchronous commit).
    pub async fn next_document_number(&self, scope: &str) -> Result<i64, StoreError> {
        let mut blocks = self.documents.lock().await;
        if !blocks.contains_key(scope) {
            blocks.insert(scope.to_owned(), Vec::new());
        }
        let stock = blocks.get_mut(scope).ok_or(sqlx::Error::RowNotFound)?;
        next_ahead(stock, async {
            let (last,): (i64,) = sqlx::query_as("SELECT next_document_numbers($1, $2)")
                .bind(scope)
                .bind(DOCUMENT_BLOCK)
                .fetch_one(&self.pool)
                .await?;
            Ok((last - i64::from(DOCUMENT_BLOCK) + 1..=last).collect())
        })
        .await
    }

    // ---- registries -----------------------------------------------------------------------

    /// ГБД ФЛ by IIN.
    pub async fn find_person(&self, iin: &str) -> Result<Option<PersonRecord>, StoreError> {
        sqlx::query_as("SELECT iin, full_name, birth_date FROM registry_persons WHERE iin = $1")
            .bind(iin)
            .fetch_optional(&self.pool)
            .await
    }

    /// ГБД ЮЛ by BIN.
    pub async fn find_entity(&self, bin: &str) -> Result<Option<EntityRecord>, StoreError> {
        sqlx::query_as("SELECT bin, name, closes_at FROM registry_legal_entities WHERE bin = $1")
            .bind(bin)
            .fetch_optional(&self.pool)
            .await
    }

    /// ЕНИС by number.
    pub async fn find_power_of_attorney(&self, number: &str) -> Result<Option<PowerOfAttorneyRecord>, StoreError> {
        sqlx::query_as(
            "SELECT number, principal, representative_iin, valid_until, revoked \
             FROM registry_powers_of_attorney WHERE number = $1",
        )
        .bind(number)
        .fetch_optional(&self.pool)
        .await
    }

    /// Attached-population register by IIN.
    pub async fn find_attachment(&self, iin: &str) -> Result<Option<AttachmentRecord>, StoreError> {
        sqlx::query_as("SELECT iin, provider_bin, since FROM registry_attachments WHERE iin = $1")
            .bind(iin)
            .fetch_optional(&self.pool)
            .await
    }

    /// Upserts persons.
    pub async fn upsert_persons(tx: &mut PgConnection, rows: &[PersonRecord]) -> Result<(), StoreError> {
        for r in rows {
            sqlx::query(
                "INSERT INTO registry_persons (iin, full_name, birth_date) VALUES ($1, $2, $3) \
                 ON CONFLICT (iin) DO UPDATE SET full_name = EXCLUDED.full_name, birth_date = EXCLUDED.birth_date, \
                 imported_at = now()",
            )
            .bind(&r.iin)
            .bind(&r.full_name)
            .bind(r.birth_date)
            .execute(&mut *tx)
            .await?;
        }
        Ok(())
    }

    /// Upserts legal entities.
    pub async fn upsert_entities(tx: &mut PgConnection, rows: &[EntityRecord]) -> Result<(), StoreError> {
        for r in rows {
            sqlx::query(
                "INSERT INTO registry_legal_entities (bin, name, closes_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (bin) DO UPDATE SET name = EXCLUDED.name, closes_at = EXCLUDED.closes_at, \
                 imported_at = now()",
            )
            .bind(&r.bin)
            .bind(&r.name)
            .bind(r.closes_at)
            .execute(&mut *tx)
            .await?;
        }
        Ok(())
    }

    /// Upserts powers of attorney.
    pub async fn upsert_powers_of_attorney(
        tx: &mut PgConnection,
        rows: &[PowerOfAttorneyRecord],
    ) -> Result<(), StoreError> {
        for r in rows {
            sqlx::query(
                "INSERT INTO registry_powers_of_attorney (number, principal, representative_iin, valid_until, revoked) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (number) DO UPDATE SET principal = EXCLUDED.principal, \
                 representative_iin = EXCLUDED.representative_iin, valid_until = EXCLUDED.valid_until, \
                 revoked = EXCLUDED.revoked, imported_at = now()",
            )
            .bind(&r.number)
            .bind(&r.principal)
            .bind(&r.representative_iin)
            .bind(r.valid_until)
            .bind(r.revoked)
            .execute(&mut *tx)
            .await?;
        }
        Ok(())
    }

    /// Upserts attachments.
    pub async fn upsert_attachments(tx: &mut PgConnection, rows: &[AttachmentRecord]) -> Result<(), StoreError> {
        for r in rows {
            sqlx::query(
                "INSERT INTO registry_attachments (iin, provider_bin, since) VALUES ($1, $2, $3) \
                 ON CONFLICT (iin) DO UPDATE SET provider_bin = EXCLUDED.provider_bin, since = EXCLUDED.since, \
                 imported_at = now()",
            )
            .bind(&r.iin)
            .bind(&r.provider_bin)
            .bind(r.since)
            .execute(&mut *tx)
            .await?;
        }
        Ok(())
    }

    // ---- audit trail ----------------------------------------------------------------------

    /// Rows in the audit trail (of one request, or all).
    pub async fn audit_rows(&self, request: Option<Uuid>) -> Result<i64, StoreError> {
        let (n,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM step_history WHERE $1::uuid IS NULL OR request_id = $1")
                .bind(request)
                .fetch_one(&self.pool)
                .await?;
        Ok(n)
    }

    /// Breaks in the audit trail's hash chain (P-49), for one request or all: a row whose
    /// content no longer matches its hash (`changed`), whose link does not match the previous
    /// row's hash (`link`: a row before it was removed or changed), or a trail that does not
    /// end where its request's `audit_head` says, or for a finished request with its final
    /// event (`truncated`, at the trail's last row left, 0 when none is). Empty when the trail
    /// is intact.
    pub async fn audit_breaks(&self, request: Option<Uuid>) -> Result<Vec<AuditBreak>, StoreError> {
        sqlx::query_as(
            "WITH chain AS ( \
                 SELECT request_id, id, event, prev_hash, hash, \
                        lag(hash) OVER w AS before, \
                        row_number() OVER (PARTITION BY request_id ORDER BY id DESC) AS from_end, \
                        step_history_digest(prev_hash, request_id, step_index, step, event, at, deadline, detail) \
                            AS recomputed \
                 FROM step_history WHERE $1::uuid IS NULL OR request_id = $1 \
                 WINDOW w AS (PARTITION BY request_id ORDER BY id)) \
             SELECT request_id, id, 'changed' AS problem FROM chain WHERE hash IS DISTINCT FROM recomputed \
             UNION ALL \
             SELECT request_id, id, 'link' FROM chain WHERE prev_hash IS DISTINCT FROM before \
             UNION ALL \
             SELECT c.request_id, c.id, 'truncated' FROM chain c JOIN outcomes o USING (request_id) \
                 WHERE c.from_end = 1 AND c.event NOT IN ('completed', 'refused') \
             UNION \
             SELECT r.request_id, coalesce(c.id, 0), 'truncated' FROM requests r \
                 LEFT JOIN chain c ON c.request_id = r.request_id AND c.from_end = 1 \
                 WHERE ($1::uuid IS NULL OR r.request_id = $1) AND r.audit_head IS DISTINCT FROM c.hash \
             ORDER BY 1, 2",
        )
        .bind(request)
        .fetch_all(&self.pool)
        .await
    }
}

/// A place where the audit trail's hash chain is broken.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AuditBreak {
    /// The request whose trail is broken.
    pub request_id: Uuid,
    /// The `step_history` row where the break shows.
    pub id: i64,
    /// `changed`, `link` or `truncated`.
    pub problem: String,
}
