//! State changes of a request. Each is one statement that writes the new state, its audit-trail
//! rows and the outbox messages it causes, and applies only while the request still stands where
//! the caller saw it ([`crate::store::Position`]). On a plain connection it is its own
//! transaction; inside the caller's (the sweeper, the payment and decision handlers, which lock
//! the row first) it commits with it. The returned [`Pending`] goes to [`super::Outbox::flush`]
//! once committed.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::broker::{EXCHANGE_WORK, Message, pool_name};
use crate::contract::{
    AnswerChoice, Contact, Delivery, EXCHANGE_OUTCOMES, Outcome, Question, Questionnaire, Reason, StaffReason, Status,
    Wording, routing_word, to_local,
};
use crate::regulations::{Regulations, Route, Texts, code_of};
use crate::store::{Advance, Finish, Park, Parked, Position, RequestRow, StepExit, Store};

use super::{Failure, Task};

/// Messages written to the outbox, to publish once the transaction commits.
#[derive(Debug, Default)]
pub struct Pending {
    /// Outbox row ids.
    pub ids: Vec<i64>,
    /// The messages, in order.
    pub messages: Vec<Message>,
    /// Final outcomes among them, counted in the metrics once the transaction committed.
    pub finals: Vec<crate::metrics::FinalLabels>,
}

impl Pending {
    /// What a transition wrote to the outbox; `None` when it wrote nothing because its request
    /// had moved.
    pub fn written(ids: Vec<i64>, messages: Vec<Message>) -> Option<Pending> {
        (!ids.is_empty()).then(|| Pending { ids, messages, finals: Vec::new() })
    }

    /// Adds another batch.
    pub fn extend(&mut self, other: Pending) {
        self.ids.extend(other.ids);
        self.messages.extend(other.messages);
        self.finals.extend(other.finals);
    }
}

/// What every Outcome of a request repeats.
#[derive(Debug, Clone)]
pub struct Head {
    /// Request id.
    pub request_id: Uuid,
    /// Number, once registered.
    pub request_number: Option<String>,
    /// Service as sent.
    pub service: String,
    /// Region as sent.
    pub region: String,
    /// Channel as sent.
    pub channel: String,
    /// Service deadline.
    pub deadline: Option<DateTime<Utc>>,
    /// Trace context of the request, copied onto every Outcome (contract v1); task messages
    /// between pools carry a child of it ([`crate::tracecontext::child_of`]).
    pub traceparent: Option<String>,
    /// When intake received it (for the end-to-end time; `None` before it was stored).
    pub received_at: Option<DateTime<Utc>>,
    /// What its final Outcome adds; empty when the route is unknown (refused at intake before
    /// one was found).
    pub finale: Finale,
}

/// What a final Outcome adds (contract v1.1): how the result reaches the applicant on this
/// channel (P-44), where to ask (P-52) and the questionnaire to answer (P-51), from the
/// regulation data.
#[derive(Debug, Clone, Default)]
pub struct Finale {
    /// Delivery on the request's channel.
    pub delivery: Option<Delivery>,
    /// The service's information contacts.
    pub contacts: Option<Vec<Contact>>,
    /// The questionnaire offered after the service (P-51).
    pub questionnaire: Option<Questionnaire>,
}

impl Finale {
    /// The finale of a route.
    pub fn of(route: &Route<'_>) -> Finale {
        let d = &route.channel.delivery;
        Finale {
            delivery: Some(Delivery { method: d.method.as_str().to_owned(), text: wording(&d.texts) }),
            contacts: Some(
                route
                    .variant
                    .contacts
                    .iter()
                    .map(|c| Contact { phone: c.phone.clone(), text: wording(&c.texts) })
                    .collect(),
            ),
            questionnaire: Some(questionnaire_of(route)),
        }
    }
}

/// The route of a request by the service, region and channel it was sent with, if they name
/// one.
pub fn route_for<'a>(regs: &'a Regulations, service: &str, region: &str, channel: &str) -> Option<Route<'a>> {
    use crate::contract::{Channel, Region, ServiceCode};
    let (service, region, channel) = (ServiceCode::parse(service)?, Region::parse(region)?, Channel::parse(channel)?);
    regs.route(service, region, channel).ok()
}

/// The questionnaire of a route's service, as a final Outcome offers it (P-51).
fn questionnaire_of(route: &Route<'_>) -> Questionnaire {
    let q = &route.service.questionnaire;
    Questionnaire {
        routing_key: crate::contract::questionnaire_routing_key(route.service.service.as_str()),
        questions: vec![
            Question { key: "quality".into(), text: wording(&q.quality) },
            Question { key: "information".into(), text: wording(&q.information) },
        ],
        answers: (1..).zip(&q.answers).map(|(value, a)| AnswerChoice { value, text: wording(a) }).collect(),
    }
}

/// The three texts of a data text.
pub fn wording(t: &Texts) -> Wording {
    Wording { ru: t.ru.clone(), kk: t.kk.clone(), en: t.en.clone() }
}

/// What the applicant is told when the request reaches step `index` of its route.
pub fn notice(route: &Route<'_>, index: usize) -> Option<Wording> {
    route.step(index).and_then(|s| s.notice.as_ref()).map(|n| wording(&n.texts))
}

impl Head {
    /// With the final Outcome's delivery and contacts of `route`.
    pub fn on(mut self, route: &Route<'_>) -> Head {
        self.finale = Finale::of(route);
        self
    }
}

/// What an Outcome says besides where the request stands.
#[derive(Debug, Clone, Default)]
pub struct Said {
    /// The refusal (refused).
    pub reason: Option<Reason>,
    /// The signed result document (completed).
    pub document: Option<Value>,
    /// The sources' status wording (registered, in progress).
    pub notice: Option<Wording>,
}

impl From<&RequestRow> for Head {
    fn from(r: &RequestRow) -> Self {
        Head {
            request_id: r.request_id,
            request_number: r.request_number.clone(),
            service: r.service.clone(),
            region: r.region.clone(),
            channel: r.channel.clone(),
            deadline: r.service_deadline,
            traceparent: r.traceparent.clone(),
            received_at: Some(r.received_at),
            finale: Finale::default(),
        }
    }
}

/// Metric labels of a final outcome (codes from outside bounded to the contract's).
fn final_labels(
    head: &Head,
    status: &'static str,
    reason: Option<&Reason>,
    now: DateTime<Utc>,
) -> crate::metrics::FinalLabels {
    use crate::contract::{Channel, Region, ServiceCode};
    use crate::metrics::code_label;
    let slack = match (head.received_at, head.deadline) {
        (Some(from), Some(to)) if to > from => {
            Some((to - now).num_milliseconds() as f64 / (to - from).num_milliseconds().max(1) as f64)
        }
        _ => None,
    };
    crate::metrics::FinalLabels {
        service: code_label(&head.service, ServiceCode::parse),
        region: code_label(&head.region, Region::parse),
        channel: code_label(&head.channel, Channel::parse),
        status,
        kind: reason.map(|r| r.kind.clone()).unwrap_or_else(|| "none".into()),
        code: reason.and_then(|r| r.code.clone()).unwrap_or_else(|| "none".into()),
        end_to_end: head.received_at.map(|t| (now - t).num_milliseconds().max(0) as f64 / 1000.0),
        slack,
    }
}

/// Builds an Outcome and its message.
pub fn outcome_message(
    head: &Head,
    status: Status,
    step: Option<&str>,
    said: Said,
    at: DateTime<Utc>,
    message_id: String,
) -> (Outcome, Message) {
    let Said { reason, document, notice } = said;
    let finale = if status.is_final() { head.finale.clone() } else { Finale::default() };
    let outcome = Outcome {
        request_id: head.request_id,
        request_number: head.request_number.clone(),
        service: head.service.clone(),
        region: head.region.clone(),
        channel: head.channel.clone(),
        status,
        step: step.map(str::to_owned),
        deadline: head.deadline.map(to_local),
        reason,
        document,
        at: to_local(at),
        notice,
        delivery: finale.delivery,
        contacts: finale.contacts,
        questionnaire: finale.questionnaire,
    };
    let body = serde_json::to_vec(&outcome).unwrap_or_default();
    let message = Message {
        exchange: EXCHANGE_OUTCOMES.to_owned(),
        routing_key: format!("{}.{}", status.routing_prefix(), routing_word(&head.service)),
        message_id,
        body,
        traceparent: head.traceparent.clone(),
        headers: Vec::new(),
        must_route: false,
    };
    (outcome, message)
}

/// The task message for a step.
pub fn task_message(
    request_id: Uuid,
    step_index: i32,
    pool: crate::regulations::PoolName,
    traceparent: Option<&str>,
) -> Message {
    let task = Task { request_id, step_index };
    Message {
        exchange: EXCHANGE_WORK.to_owned(),
        routing_key: pool_name(pool).to_owned(),
        message_id: format!("{request_id}:{step_index}:task"),
        body: serde_json::to_vec(&task).unwrap_or_default(),
        traceparent: traceparent.map(crate::tracecontext::child_of),
        headers: Vec::new(),
        must_route: true,
    }
}

/// How a request enters step `step_index` of its route: `queued`, with the task message that
/// runs the step, or `waiting` with none at a step that only waits for a staff Decision
/// ([`StepDef::only_waits`](crate::regulations::StepDef::only_waits)): the request is parked
/// there at once, and the Decision's handler moves it on.
pub fn entry(
    step: &crate::regulations::StepDef,
    request_id: Uuid,
    step_index: i32,
    traceparent: Option<&str>,
) -> (&'static str, Option<Message>) {
    if step.only_waits() {
        ("waiting", None)
    } else {
        ("queued", Some(task_message(request_id, step_index, step.pool, traceparent)))
    }
}

async fn stage(tx: &mut PgConnection, messages: Vec<Message>) -> Result<Pending, Failure> {
    let ids = Store::outbox_insert(tx, &messages).await?;
    Ok(Pending { ids, messages, finals: Vec::new() })
}

/// The deadline of step `index` from the stored plan.
pub fn step_deadline(row: &RequestRow, index: i32) -> Option<DateTime<Utc>> {
    row.deadlines
        .get(usize::try_from(index).ok()?)
        .and_then(Value::as_str)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
}

fn merge_facts(base: &Value, add: Option<Value>) -> Value {
    let mut merged = base.as_object().cloned().unwrap_or_default();
    if let Some(Value::Object(add)) = add {
        merged.extend(add);
    }
    Value::Object(merged)
}

/// Texts of a regulation refusal (plus the staff member's reason, when given).
pub fn regulation_reason(route: &Route<'_>, key: &str, note: Option<&StaffReason>) -> Reason {
    let Some(def) = route.refusal(key) else {
        // Loading validates every key a route can emit; this is a data bug.
        tracing::error!(refusal = key, service = %route.service.service, "refusal key missing from regulation data");
        return Reason {
            code: Some(code_of(key).to_owned()),
            kind: "provider_refused".into(),
            ru: "Мотивированный отказ в оказании государственной услуги".into(),
            kk: "Мемлекеттік қызметті көрсетуден бас тарту туралы дәлелді жауап".into(),
            en: "Reasoned refusal to provide the public service".into(),
        };
    };
    let (ru, kk, en) = match note {
        Some(n) => (
            format!("{} Причина: {}", def.texts.ru, n.ru),
            format!("{} Себебі: {}", def.texts.kk, n.kk),
            format!("{} Reason given by the provider (in Russian): {}", def.texts.en, n.ru),
        ),
        None => (def.texts.ru.clone(), def.texts.kk.clone(), def.texts.en.clone()),
    };
    Reason { code: Some(code_of(key).to_owned()), kind: def.kind.clone(), ru, kk, en }
}

/// Texts of a refusal no regulation defines (`invalid_request`, `unsupported_service`,
/// `deadline_exceeded`), with the specific detail filled in.
pub fn common_reason(regs: &Regulations, kind: &str, detail: &str) -> Reason {
    match regs.common(kind) {
        Some(c) => Reason {
            code: None,
            kind: kind.to_owned(),
            ru: c.texts.ru.replace("{detail}", detail),
            kk: c.texts.kk.replace("{detail}", detail),
            en: c.texts.en.replace("{detail}", detail),
        },
        None => Reason {
            code: None,
            kind: kind.to_owned(),
            ru: detail.to_owned(),
            kk: detail.to_owned(),
            en: detail.to_owned(),
        },
    }
}

/// The move of a request from its current step to the next one: the new position, the audit
/// rows' content and the messages. Nothing is written; [`advance`] applies it on a connection,
/// [`super::batch::Commits`] with other deliveries' in one statement.
pub fn next_step(
    row: &RequestRow,
    route: &Route<'_>,
    add_facts: Option<Value>,
    detail: Option<Value>,
) -> Result<Advance, Failure> {
    let now = Utc::now();
    let current = route.step(row.step_index as usize).map(|s| pool_name(s.pool)).unwrap_or("?");
    let next_index = row.step_index + 1;
    let Some(next) = route.step(next_index as usize) else {
        return Err(Failure::permanent("service", format!("its route has no step {next_index}")));
    };
    let next_name = pool_name(next.pool);
    let head = Head::from(row);
    let said = Said { notice: notice(route, next_index as usize), ..Said::default() };
    let (_, status) = outcome_message(
        &head,
        Status::InProgress,
        Some(next_name),
        said,
        now,
        format!("{}:{next_index}:in_progress", row.request_id),
    );
    let (to_state, task) = entry(next, row.request_id, next_index, row.traceparent.as_deref());
    Ok(Advance {
        request_id: row.request_id,
        from: exit_at(row.position(), current, row.step_deadline, detail),
        to_index: next_index,
        to_step: next_name.to_owned(),
        to_deadline: step_deadline(row, next_index).unwrap_or(now),
        to_state,
        facts: merge_facts(&row.facts, add_facts),
        messages: std::iter::once(status).chain(task).collect(),
    })
}

/// Moves a request from its current step to the next one and queues it, if it is still where
/// `row` saw it; `None` if it had moved (a duplicate task, a payment or a decision that came
/// first). One statement: on a plain connection it is its own transaction.
pub async fn advance(
    conn: &mut PgConnection,
    row: &RequestRow,
    route: &Route<'_>,
    add_facts: Option<Value>,
    detail: Option<Value>,
) -> Result<Option<Pending>, Failure> {
    super::batch::write_on(conn, next_step(row, route, add_facts, detail)?).await
}

/// Extends the term of the decision step a request waits at (P-34) to `to`: that step's
/// deadline, every later one and the service deadline move by the same amount, and an
/// `in_progress` Outcome announces the new service deadline. In the caller's transaction, which
/// holds the request's lock.
pub async fn extend(
    conn: &mut PgConnection,
    row: &RequestRow,
    route: &Route<'_>,
    to: DateTime<Utc>,
    detail: Value,
) -> Result<Pending, Failure> {
    let now = Utc::now();
    let index = usize::try_from(row.step_index).unwrap_or(0);
    let shift = to - row.step_deadline.unwrap_or(to);
    let deadlines: Vec<Value> = row
        .deadlines
        .as_array()
        .map(|all| {
            all.iter()
                .enumerate()
                .map(|(i, d)| match d.as_str().and_then(|t| DateTime::parse_from_rfc3339(t).ok()) {
                    Some(t) if i >= index => json!((t.with_timezone(&Utc) + shift).to_rfc3339()),
                    _ => d.clone(),
                })
                .collect()
        })
        .unwrap_or_default();
    let service = row.service_deadline.map(|d| d + shift);
    let mut head = Head::from(row);
    head.deadline = service;
    let step = route.step(index).map(|s| pool_name(s.pool)).unwrap_or("review");
    let said = Said { notice: notice(route, index), ..Said::default() };
    let id = format!("{}:{}:extended-{}", row.request_id, row.step_index, to.timestamp());
    let (_, message) = outcome_message(&head, Status::InProgress, Some(step), said, now, id);
    let messages = vec![message];
    let ids =
        Store::extend(conn, row.request_id, (row.step_index, step), &json!(deadlines), to, service, &detail, &messages)
            .await?;
    Ok(Pending { ids, messages, finals: Vec::new() })
}

/// A request's end: what [`Store::finish_all`] writes, and its metric labels, counted once it
/// committed.
#[derive(Debug)]
pub struct Ending {
    /// The final state, outcome, audit row and message.
    pub finish: Finish,
    /// The final outcome's labels.
    pub label: crate::metrics::FinalLabels,
}

impl Ending {
    /// What it wrote to the outbox, with its final outcome to count; `None` when its request
    /// had moved.
    pub fn written(self, ids: Vec<i64>) -> Option<Pending> {
        let mut pending = Pending::written(ids, self.finish.messages)?;
        pending.finals.push(self.label);
        Some(pending)
    }
}

/// A refusal of a request standing `at` that position. Nothing is written: [`refuse`] applies it
/// on a connection, [`super::batch::Commits`] with other deliveries' ends in one statement.
pub fn refusal(head: &Head, at: Position<'_>, step: &str, reason: Reason, detail: Option<Value>) -> Ending {
    let now = Utc::now();
    let (outcome, message) = outcome_message(
        head,
        Status::Refused,
        Some(step),
        Said { reason: Some(reason.clone()), ..Said::default() },
        now,
        format!("{}:final", head.request_id),
    );
    let mut detail = detail.unwrap_or_else(|| json!({}));
    if let Some(obj) = detail.as_object_mut() {
        obj.insert("code".into(), json!(reason.code));
        obj.insert("kind".into(), json!(reason.kind));
    }
    let label = final_labels(head, "refused", Some(&reason), now);
    let finish = Finish {
        request_id: head.request_id,
        from: exit_at(at, step, head.deadline, Some(detail)),
        status: "refused",
        step: Some(step.to_owned()),
        code: reason.code,
        kind: Some(reason.kind),
        document: None,
        body: serde_json::to_value(&outcome).unwrap_or(Value::Null),
        at: now,
        messages: vec![message],
    };
    Ending { finish, label }
}

/// Ends a request with a refusal, if it still stands `at` that position; `None` if it had
/// moved (or already had its final outcome). One statement.
pub async fn refuse(
    conn: &mut PgConnection,
    head: &Head,
    at: Position<'_>,
    step: &str,
    reason: Reason,
    detail: Option<Value>,
) -> Result<Option<Pending>, Failure> {
    super::batch::write_on(conn, refusal(head, at, step, reason, detail)).await
}

/// The completion of a request with its result document, where `row` saw it. Nothing is
/// written, as with [`refusal`].
pub fn completion(row: &RequestRow, route: &Route<'_>, document: Map<String, Value>) -> Ending {
    let now = Utc::now();
    let head = Head::from(row).on(route);
    let document = Value::Object(document);
    let (outcome, message) = outcome_message(
        &head,
        Status::Completed,
        Some("result"),
        Said { document: Some(document.clone()), ..Said::default() },
        now,
        format!("{}:final", row.request_id),
    );
    let detail = json!({ "document": document.get("number") });
    let finish = Finish {
        request_id: row.request_id,
        from: exit_at(row.position(), "result", row.step_deadline, Some(detail)),
        status: "completed",
        step: Some("result".to_owned()),
        code: None,
        kind: None,
        document: Some(document),
        body: serde_json::to_value(&outcome).unwrap_or(Value::Null),
        at: now,
        messages: vec![message],
    };
    Ending { finish, label: final_labels(&head, "completed", None, now) }
}

/// Ends a request with its result document, if it still stands where `row` saw it; `None` if
/// it had moved. One statement.
pub async fn complete(
    conn: &mut PgConnection,
    row: &RequestRow,
    route: &Route<'_>,
    document: Map<String, Value>,
) -> Result<Option<Pending>, Failure> {
    super::batch::write_on(conn, completion(row, route, document)).await
}

/// Where a request leaving `step` must still stand, owned.
fn exit_at(at: Position<'_>, step: &str, deadline: Option<DateTime<Utc>>, detail: Option<Value>) -> StepExit {
    StepExit {
        state: at.state.to_owned(),
        step_index: at.step_index,
        attempts: at.attempts,
        step: step.to_owned(),
        deadline,
        detail,
    }
}

/// A request parked until an external event (payment, staff decision) or its deadline, if it
/// is still where `row` saw it: to commit in a batch ([`super::batch`]).
pub fn waiting(row: &RequestRow, step: &str) -> Park {
    Park {
        request_id: row.request_id,
        from: exit_at(row.position(), step, row.step_deadline, None),
        to: Parked::Waiting,
    }
}

/// Schedules another attempt of the current step after a transient failure, if the request is
/// still where `row` saw it; whether it was.
pub async fn retry(
    conn: &mut PgConnection,
    row: &RequestRow,
    step: &str,
    next_attempt_at: DateTime<Utc>,
    error: &str,
) -> Result<bool, Failure> {
    let detail = json!({ "attempt": row.attempts + 1, "error": error, "next_attempt_at": next_attempt_at });
    let park = Park {
        request_id: row.request_id,
        from: exit_at(row.position(), step, row.step_deadline, Some(detail)),
        to: Parked::Retry(next_attempt_at),
    };
    Ok(Store::park_all(conn, &[&park]).await?.pop().unwrap_or(false))
}

/// Puts a request whose retry is due back on its pool's queue.
pub async fn requeue(tx: &mut PgConnection, row: &RequestRow, route: &Route<'_>) -> Result<Pending, Failure> {
    let Some(step) = route.step(row.step_index as usize) else {
        return Err(Failure::permanent("service", format!("its route has no step {}", row.step_index)));
    };
    Store::set_requeued(tx, row.request_id).await?;
    let task = task_message(row.request_id, row.step_index, step.pool, row.traceparent.as_deref());
    stage(tx, vec![task]).await
}
