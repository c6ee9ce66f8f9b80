//! The operators' SQL: searches, timelines, the deadline report (P-46), dead letters, sessions,
//! the operators' audit trail and the processes' heartbeats. Read-mostly; nothing here changes
//! a request's state.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::{Store, StoreError};

/// How a search names its request(s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SearchKey {
    /// The number shown to the applicant.
    Number(String),
    /// The sender's request id.
    Id(Uuid),
    /// The applicant's IIN or BIN, exact (the console records every such search).
    Applicant(String),
}

/// Filters of the Requests page; `None` means any.
#[derive(Debug, Clone, Default)]
pub struct RequestFilter {
    /// Service code.
    pub service: Option<String>,
    /// Region code.
    pub region: Option<String>,
    /// Channel.
    pub channel: Option<String>,
    /// State: queued, waiting, retry, completed, refused.
    pub status: Option<String>,
    /// Current (or last) step.
    pub step: Option<String>,
    /// Received at or after.
    pub from: Option<DateTime<Utc>>,
    /// Received before.
    pub to: Option<DateTime<Utc>>,
}

/// A request in a list.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct RequestSummary {
    /// Id.
    pub request_id: Uuid,
    /// Number shown to the applicant.
    pub request_number: Option<String>,
    /// Service, region and channel as sent.
    pub service: String,
    /// Region.
    pub region: String,
    /// Channel.
    pub channel: String,
    /// Masked IIN/BIN.
    pub applicant_masked: String,
    /// queued | waiting | retry | completed | refused.
    pub state: String,
    /// Current (or last) step.
    pub step: Option<String>,
    /// Deadline of the current step.
    pub step_deadline: Option<DateTime<Utc>>,
    /// Service deadline (P-41).
    pub service_deadline: Option<DateTime<Utc>>,
    /// When intake received it.
    pub received_at: DateTime<Utc>,
    /// When it reached its final outcome.
    pub finished_at: Option<DateTime<Utc>>,
    /// Refusal code of the final outcome.
    pub code: Option<String>,
}

const SUMMARY: &str = "SELECT r.request_id, r.request_number, r.service, r.region, r.channel, r.applicant_masked, \
     r.state, r.step, r.step_deadline, r.service_deadline, r.received_at, r.finished_at, o.code \
     FROM requests r LEFT JOIN outcomes o USING (request_id)";

/// A payment recorded for a request.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct PaymentRow {
    /// The gateway's id.
    pub payment_id: String,
    /// Amount, as text (numeric).
    pub amount: String,
    /// Currency.
    pub currency: String,
    /// When paid.
    pub paid_at: DateTime<Utc>,
    /// Masked payer.
    pub payer_masked: String,
    /// Broker user that sent the notice.
    pub submitter: Option<String>,
}

/// A staff decision recorded for a request.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct DecisionRow {
    /// The staff application's id.
    pub decision_id: String,
    /// approve | refuse.
    pub verdict: String,
    /// When decided.
    pub decided_at: DateTime<Utc>,
    /// Whether it was applied.
    pub applied: bool,
    /// Why not, when not.
    pub rejection: Option<String>,
    /// Broker user that sent it.
    pub submitter: Option<String>,
    /// The signer's IIN, masked.
    pub signer_masked: Option<String>,
}

/// Activity of one pool (step) for the Overview page.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct StepActivity {
    /// Step (pool) name.
    pub step: String,
    /// Tasks queued to it in the window.
    pub arrived: i64,
    /// Steps it finished (passed, completed or refused) in the window.
    pub finished: i64,
    /// Retries and refusals at it in the window.
    pub errors: i64,
    /// Requests now queued or retrying at it.
    pub open: i64,
    /// Seconds the oldest of those has waited.
    pub oldest_seconds: Option<f64>,
}

/// One service's day for the Overview page.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ServiceDay {
    /// Service code.
    pub service: String,
    /// Requests received.
    pub received: i64,
    /// Completed.
    pub completed: i64,
    /// Refused.
    pub refused: i64,
    /// Share of the finished ones that finished by their service deadline.
    pub on_time_share: Option<f64>,
}

/// A row of the deadline report (P-46): one step of one route.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct SlaRow {
    /// Service code.
    pub service: String,
    /// Region.
    pub region: String,
    /// Channel.
    pub channel: String,
    /// Step (pool).
    pub step: String,
    /// Position of the step in the route.
    pub step_index: i32,
    /// Steps finished in the period.
    pub count: i64,
    /// Share finished by their deadline.
    pub on_time_share: f64,
    /// Median duration, seconds.
    pub p50_seconds: f64,
    /// 95th percentile duration, seconds.
    pub p95_seconds: f64,
    /// Median legal deadline (from the step's start), seconds.
    pub deadline_seconds: Option<f64>,
}

/// A request awaiting a staff decision.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct AwaitingDecision {
    /// Id.
    pub request_id: Uuid,
    /// Number.
    pub request_number: Option<String>,
    /// Service.
    pub service: String,
    /// Region.
    pub region: String,
    /// Provider BIN (an organisation, not a person).
    pub provider: Option<String>,
    /// Since when it waits.
    pub since: DateTime<Utc>,
    /// The review deadline.
    pub step_deadline: Option<DateTime<Utc>>,
}

/// A dead letter as moved off the broker.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct DeadLetter {
    /// Row id.
    pub id: i64,
    /// Why it was dead-lettered.
    pub reason: String,
    /// The queue it was taken from.
    pub source_queue: String,
    /// Its routing key there.
    pub routing_key: String,
    /// Its message id, if it had one.
    pub message_id: Option<String>,
    /// The broker user that published it.
    pub submitter: Option<String>,
    /// All its headers, as text.
    pub headers: Value,
    /// The body, as received.
    #[serde(skip)]
    pub body: Vec<u8>,
    /// When it was dead-lettered.
    pub dead_at: DateTime<Utc>,
    /// open | replayed | discarded.
    pub state: String,
    /// The operator who replayed or discarded it.
    pub acted_by: Option<String>,
    /// When.
    pub acted_at: Option<DateTime<Utc>>,
    /// Why (discards).
    pub why: Option<String>,
}

/// What the dead-letter mover stores.
#[derive(Debug, Clone)]
pub struct NewDeadLetter {
    /// SHA-256 of headers and body (a redelivery of a moved message has the same one).
    pub digest: Vec<u8>,
    /// Reason.
    pub reason: String,
    /// Source queue.
    pub source_queue: String,
    /// Routing key.
    pub routing_key: String,
    /// Message id.
    pub message_id: Option<String>,
    /// Publisher.
    pub submitter: Option<String>,
    /// Headers as text.
    pub headers: Value,
    /// Body.
    pub body: Vec<u8>,
    /// When it died.
    pub dead_at: DateTime<Utc>,
}

/// Open dead letters of one reason and source queue.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct DeadLetterGroup {
    /// Reason.
    pub reason: String,
    /// Source queue.
    pub source_queue: String,
    /// How many.
    pub count: i64,
    /// The oldest.
    pub first: DateTime<Utc>,
    /// The newest.
    pub last: DateTime<Utc>,
}

/// A signed-in operator's session.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SessionRow {
    /// Account name.
    pub operator: String,
    /// viewer | operator.
    pub role: String,
    /// The token its forms must carry.
    pub csrf: String,
}

/// One operator action.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ActionRow {
    /// When.
    pub at: DateTime<Utc>,
    /// Who.
    pub operator: String,
    /// In which role.
    pub role: String,
    /// What (sign_in, search_applicant, replay, discard, …).
    pub action: String,
    /// On what.
    pub target: Option<String>,
    /// Why.
    pub why: Option<String>,
    /// More.
    pub detail: Option<Value>,
}

/// A process's heartbeat.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Heartbeat {
    /// Random id of the process run.
    pub process_id: Uuid,
    /// Host name.
    pub host: String,
    /// Process id on the host.
    pub pid: i32,
    /// Pools it runs.
    pub pools: String,
    /// In-flight messages per queue.
    pub concurrency: i32,
    /// qyzmet version.
    pub version: String,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// Its last heartbeat.
    pub last_seen: DateTime<Utc>,
}

/// Events that end a step.
const STEP_ENDS: &str = "('passed', 'completed', 'refused')";

impl Store {
    /// Requests matching a key and filters, newest first.
    pub async fn search_requests(
        &self,
        key: Option<&SearchKey>,
        f: &RequestFilter,
        limit: i64,
    ) -> Result<Vec<RequestSummary>, StoreError> {
        let (number, id, applicant) = match key {
            Some(SearchKey::Number(n)) => (Some(n.as_str()), None, None),
            Some(SearchKey::Id(i)) => (None, Some(*i), None),
            Some(SearchKey::Applicant(a)) => (None, None, Some(a.as_str())),
            None => (None, None, None),
        };
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "{SUMMARY} WHERE ($1::text IS NULL OR r.request_number = $1) \
               AND ($2::uuid IS NULL OR r.request_id = $2) \
               AND ($3::text IS NULL OR r.applicant_id = $3) \
               AND ($4::text IS NULL OR r.service = $4) AND ($5::text IS NULL OR r.region = $5) \
               AND ($6::text IS NULL OR r.channel = $6) AND ($7::text IS NULL OR r.state = $7) \
               AND ($8::text IS NULL OR r.step = $8) \
               AND ($9::timestamptz IS NULL OR r.received_at >= $9) AND ($10::timestamptz IS NULL OR r.received_at < $10) \
             ORDER BY r.received_at DESC LIMIT $11"
        )))
        .bind(number)
        .bind(id)
        .bind(applicant)
        .bind(&f.service)
        .bind(&f.region)
        .bind(&f.channel)
        .bind(&f.status)
        .bind(&f.step)
        .bind(f.from)
        .bind(f.to)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
    }

    /// One request's summary.
    pub async fn request_summary(&self, id: Uuid) -> Result<Option<RequestSummary>, StoreError> {
        Ok(self.search_requests(Some(&SearchKey::Id(id)), &RequestFilter::default(), 1).await?.pop())
    }

    /// Payments recorded for a request.
    pub async fn payments_of(&self, id: Uuid) -> Result<Vec<PaymentRow>, StoreError> {
        sqlx::query_as(
            "SELECT payment_id, amount::text AS amount, currency, paid_at, payer_masked, submitter \
             FROM payments WHERE request_id = $1 ORDER BY received_at",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await
    }

    /// Decisions recorded for a request.
    pub async fn decision_rows(&self, id: Uuid) -> Result<Vec<DecisionRow>, StoreError> {
        sqlx::query_as(
            "SELECT decision_id, verdict, decided_at, applied, rejection, submitter, signer_masked \
             FROM decisions WHERE request_id = $1 ORDER BY received_at",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await
    }

    /// Per step: tasks in, steps finished and errors since `since`; what is open now.
    pub async fn step_activity(&self, since: DateTime<Utc>) -> Result<Vec<StepActivity>, StoreError> {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "WITH recent AS ( \
                 SELECT step, count(*) FILTER (WHERE event = 'queued') AS arrived, \
                        count(*) FILTER (WHERE event IN {STEP_ENDS}) AS finished, \
                        count(*) FILTER (WHERE event IN ('retry', 'refused')) AS errors \
                 FROM step_history WHERE at >= $1 GROUP BY step), \
             open AS ( \
                 SELECT step, count(*) AS open, extract(epoch FROM now() - min(updated_at))::float8 AS oldest_seconds \
                 FROM requests WHERE state IN ('queued', 'retry') AND step IS NOT NULL GROUP BY step) \
             SELECT coalesce(recent.step, open.step) AS step, coalesce(arrived, 0) AS arrived, \
                    coalesce(finished, 0) AS finished, coalesce(errors, 0) AS errors, coalesce(open, 0) AS open, \
                    oldest_seconds \
             FROM recent FULL JOIN open ON recent.step = open.step ORDER BY 1"
        )))
        .bind(since)
        .fetch_all(&self.pool)
        .await
    }

    /// Per service: requests received since `since`, how they ended, the on-time share.
    pub async fn service_days(&self, since: DateTime<Utc>) -> Result<Vec<ServiceDay>, StoreError> {
        sqlx::query_as(
            "SELECT service, count(*) AS received, count(*) FILTER (WHERE state = 'completed') AS completed, \
                    count(*) FILTER (WHERE state = 'refused') AS refused, \
                    avg(CASE WHEN finished_at IS NULL THEN NULL \
                             WHEN service_deadline IS NULL OR finished_at <= service_deadline THEN 1.0 ELSE 0.0 END)::float8 \
                        AS on_time_share \
             FROM requests WHERE received_at >= $1 GROUP BY service ORDER BY service",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await
    }

    /// Refusal codes since `since`: (service, code, count).
    pub async fn refusal_codes(&self, since: DateTime<Utc>) -> Result<Vec<(String, String, i64)>, StoreError> {
        sqlx::query_as(
            "SELECT r.service, coalesce(o.code, '-'), count(*) FROM outcomes o JOIN requests r USING (request_id) \
             WHERE o.status = 'refused' AND o.at >= $1 GROUP BY 1, 2 ORDER BY 1, 3 DESC",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await
    }

    /// The deadline report (P-46): every step that ended in `[from, to)`, per service × region
    /// × channel × step — how many, the share by their deadline, p50/p95 duration, and the
    /// median legal deadline measured from the step's start.
    pub async fn sla(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<Vec<SlaRow>, StoreError> {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "WITH ends AS ( \
                 SELECT e.request_id, e.step_index, e.step, e.at AS ended, e.deadline, \
                        (SELECT min(s.at) FROM step_history s \
                          WHERE s.request_id = e.request_id AND s.step_index = e.step_index) AS started \
                 FROM step_history e WHERE e.event IN {STEP_ENDS} AND e.at >= $1 AND e.at < $2) \
             SELECT r.service, r.region, r.channel, ends.step, min(ends.step_index) AS step_index, count(*) AS count, \
                    avg(CASE WHEN ends.deadline IS NULL OR ends.ended <= ends.deadline THEN 1.0 ELSE 0.0 END)::float8 \
                        AS on_time_share, \
                    percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM ends.ended - ends.started))::float8 \
                        AS p50_seconds, \
                    percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM ends.ended - ends.started))::float8 \
                        AS p95_seconds, \
                    percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM ends.deadline - ends.started))::float8 \
                        AS deadline_seconds \
             FROM ends JOIN requests r USING (request_id) \
             GROUP BY r.service, r.region, r.channel, ends.step \
             ORDER BY r.service, r.region, r.channel, min(ends.step_index)"
        )))
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await
    }

    /// Open requests whose step deadline falls before `until` (`overdue`: already passed),
    /// soonest first.
    pub async fn due_requests(&self, until: DateTime<Utc>, overdue: bool) -> Result<Vec<RequestSummary>, StoreError> {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "{SUMMARY} WHERE r.state IN ('queued', 'waiting', 'retry') AND r.step_deadline < $1 \
               AND (r.step_deadline < now()) = $2 ORDER BY r.step_deadline LIMIT 200"
        )))
        .bind(until)
        .bind(overdue)
        .fetch_all(&self.pool)
        .await
    }

    /// Requests waiting for a staff decision, soonest deadline first.
    pub async fn awaiting_decisions(&self) -> Result<Vec<AwaitingDecision>, StoreError> {
        sqlx::query_as(
            "SELECT request_id, request_number, service, region, body ->> 'provider' AS provider, updated_at AS since, \
                    step_deadline \
             FROM requests WHERE state = 'waiting' AND step = 'review' ORDER BY step_deadline NULLS LAST LIMIT 500",
        )
        .fetch_all(&self.pool)
        .await
    }

    // ---- dead letters -----------------------------------------------------------------------

    /// Stores a dead letter; `false` when this very message was stored before.
    pub async fn insert_dead_letter(&self, d: &NewDeadLetter) -> Result<bool, StoreError> {
        let n = sqlx::query(
            "INSERT INTO dead_letters (digest, reason, source_queue, routing_key, message_id, submitter, headers, \
                 body, dead_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (digest) DO NOTHING",
        )
        .bind(&d.digest)
        .bind(&d.reason)
        .bind(&d.source_queue)
        .bind(&d.routing_key)
        .bind(&d.message_id)
        .bind(&d.submitter)
        .bind(&d.headers)
        .bind(&d.body)
        .bind(d.dead_at)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// Open dead letters by reason and source queue.
    pub async fn dead_letter_groups(&self) -> Result<Vec<DeadLetterGroup>, StoreError> {
        sqlx::query_as(
            "SELECT reason, source_queue, count(*) AS count, min(dead_at) AS first, max(dead_at) AS last \
             FROM dead_letters WHERE state = 'open' GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2",
        )
        .fetch_all(&self.pool)
        .await
    }

    /// Dead letters, newest first; `None` filters mean any.
    pub async fn dead_letters(
        &self,
        reason: Option<&str>,
        queue: Option<&str>,
        state: Option<&str>,
        limit: i64,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        sqlx::query_as(
            "SELECT id, reason, source_queue, routing_key, message_id, submitter, headers, body, dead_at, state, \
                    acted_by, acted_at, why FROM dead_letters \
             WHERE ($1::text IS NULL OR reason = $1) AND ($2::text IS NULL OR source_queue = $2) \
               AND ($3::text IS NULL OR state = $3) ORDER BY id DESC LIMIT $4",
        )
        .bind(reason)
        .bind(queue)
        .bind(state)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
    }

    /// One dead letter.
    pub async fn dead_letter(&self, id: i64) -> Result<Option<DeadLetter>, StoreError> {
        sqlx::query_as(
            "SELECT id, reason, source_queue, routing_key, message_id, submitter, headers, body, dead_at, state, \
                    acted_by, acted_at, why FROM dead_letters WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
    }

    /// Marks an open dead letter replayed or discarded; `false` if it was no longer open (two
    /// operators acting at once: only one wins).
    pub async fn close_dead_letter(
        &self,
        id: i64,
        state: &str,
        by: &str,
        why: Option<&str>,
    ) -> Result<bool, StoreError> {
        let n = sqlx::query(
            "UPDATE dead_letters SET state = $2, acted_by = $3, acted_at = now(), why = $4 \
             WHERE id = $1 AND state = 'open'",
        )
        .bind(id)
        .bind(state)
        .bind(by)
        .bind(why)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// Re-opens a dead letter whose replay could not be published.
    pub async fn reopen_dead_letter(&self, id: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE dead_letters SET state = 'open', acted_by = NULL, acted_at = NULL WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map(|_| ())
    }

    /// Open dead letters (for the gauge).
    pub async fn open_dead_letters(&self) -> Result<i64, StoreError> {
        let (n,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM dead_letters WHERE state = 'open'").fetch_one(&self.pool).await?;
        Ok(n)
    }

    // ---- sessions and the operators' audit trail ----------------------------------------------

    /// Starts a session.
    pub async fn create_session(
        &self,
        digest: &[u8],
        operator: &str,
        role: &str,
        csrf: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM console_sessions WHERE expires_at < now()").execute(&self.pool).await?;
        sqlx::query(
            "INSERT INTO console_sessions (token_digest, operator, role, csrf, expires_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(digest)
        .bind(operator)
        .bind(role)
        .bind(csrf)
        .bind(expires_at)
        .execute(&self.pool)
        .await
        .map(|_| ())
    }

    /// The live session with this token digest.
    pub async fn session(&self, digest: &[u8]) -> Result<Option<SessionRow>, StoreError> {
        sqlx::query_as(
            "SELECT operator, role, csrf FROM console_sessions WHERE token_digest = $1 AND expires_at > now()",
        )
        .bind(digest)
        .fetch_optional(&self.pool)
        .await
    }

    /// Ends a session.
    pub async fn end_session(&self, digest: &[u8]) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM console_sessions WHERE token_digest = $1")
            .bind(digest)
            .execute(&self.pool)
            .await
            .map(|_| ())
    }

    /// Records an operator action (append-only).
    pub async fn record_action(
        &self,
        operator: &str,
        role: &str,
        action: &str,
        target: Option<&str>,
        why: Option<&str>,
        detail: Option<&Value>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO operator_actions (operator, role, action, target, why, detail) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(operator)
        .bind(role)
        .bind(action)
        .bind(target)
        .bind(why)
        .bind(detail)
        .execute(&self.pool)
        .await
        .map(|_| ())
    }

    /// The latest operator actions.
    pub async fn actions(&self, limit: i64) -> Result<Vec<ActionRow>, StoreError> {
        sqlx::query_as(
            "SELECT at, operator, role, action, target, why, detail FROM operator_actions ORDER BY id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await
    }

    // ---- heartbeats ---------------------------------------------------------------------------

    /// A process's heartbeat (insert or refresh).
    pub async fn beat(&self, h: &Heartbeat) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO worker_heartbeats (process_id, host, pid, pools, concurrency, version, started_at, last_seen) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, now()) \
             ON CONFLICT (process_id) DO UPDATE SET last_seen = now()",
        )
        .bind(h.process_id)
        .bind(&h.host)
        .bind(h.pid)
        .bind(&h.pools)
        .bind(h.concurrency)
        .bind(&h.version)
        .bind(h.started_at)
        .execute(&self.pool)
        .await
        .map(|_| ())
    }

    /// Processes seen since `since`, newest first.
    pub async fn heartbeats(&self, since: DateTime<Utc>) -> Result<Vec<Heartbeat>, StoreError> {
        sqlx::query_as(
            "SELECT process_id, host, pid, pools, concurrency, version, started_at, last_seen FROM worker_heartbeats \
             WHERE last_seen >= $1 ORDER BY last_seen DESC",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await
    }
}
