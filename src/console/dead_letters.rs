//! Dead letters, from the broker's queue to an operator's decision.
//!
//! The console's process consumes `qyzmet.dead-letter` and moves every message into the
//! `dead_letters` table (acking it only after the commit), with its reason, source queue,
//! publisher and headers. There operators see them grouped by reason and source queue, and
//! either **replay** one or a whole group — qyzmet publishes the body unchanged to the queue it
//! came from, saying for whom it replays (`x-qyzmet-replayed-for`), so the sender checks
//! apply to the original sender — or **discard** one with a reason. Each act is recorded.

use std::sync::Arc;

use chrono::Utc;
use futures_util::future::BoxFuture;
use serde_json::{Value, json};

use crate::broker::{Message, pipeline_queues};
use crate::pipeline::Ctx;
use crate::pipeline::runtime::{Disposition, Handler, Incoming};
use crate::store::{DeadLetter, NewDeadLetter};

use super::{Console, ConsoleError, Principal};

/// Moves each dead letter into PostgreSQL.
pub struct DeadLetterMover;

impl Handler for DeadLetterMover {
    fn handle<'a>(&'a self, ctx: &'a Ctx, msg: &'a Incoming) -> BoxFuture<'a, Disposition> {
        Box::pin(async move {
            match ctx.store.insert_dead_letter(&new_dead_letter(msg)).await {
                Ok(_) => Disposition::Ack,
                Err(e) => Disposition::Retry { error: format!("cannot store a dead letter: {e}") },
            }
        })
    }
}

/// What the table keeps of a dead-lettered delivery. qyzmet's own dead letters carry
/// `x-qyzmet-*` headers; those the broker dead-lettered (its delivery limit) carry
/// `x-first-death-*`.
pub fn new_dead_letter(msg: &Incoming) -> NewDeadLetter {
    let header = |name: &str| msg.header(name).map(str::to_owned);
    let reason =
        header("x-qyzmet-reason").or_else(|| header("x-first-death-reason")).unwrap_or_else(|| "unknown".into());
    let source_queue =
        header("x-qyzmet-queue").or_else(|| header("x-first-death-queue")).unwrap_or_else(|| "unknown".into());
    let routing_key = header("x-qyzmet-routing-key").unwrap_or_else(|| msg.routing_key.clone());
    let dead_at = header("x-qyzmet-at")
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(Utc::now);
    let headers: serde_json::Map<String, Value> =
        msg.headers.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
    let mut hashed = Vec::with_capacity(msg.data.len() + 256);
    hashed.extend_from_slice(Value::Object(headers.clone()).to_string().as_bytes());
    hashed.push(0);
    hashed.extend_from_slice(msg.message_id.as_deref().unwrap_or("").as_bytes());
    hashed.push(0);
    hashed.extend_from_slice(&msg.data);
    NewDeadLetter {
        digest: ring::digest::digest(&ring::digest::SHA256, &hashed).as_ref().to_vec(),
        reason,
        source_queue,
        routing_key,
        message_id: msg.message_id.clone(),
        submitter: header("x-qyzmet-user-id").or_else(|| msg.user_id.clone()),
        headers: Value::Object(headers),
        body: msg.data.clone(),
        dead_at,
    }
}

/// Publishes an open dead letter back to its source queue and marks it replayed. Only one of two
/// operators acting at once wins; a replay the broker refuses leaves the letter open.
pub async fn replay(c: &Console, who: &Principal, d: &DeadLetter) -> Result<(), ConsoleError> {
    if !pipeline_queues().contains(&d.source_queue) || d.source_queue == crate::broker::QUEUE_DEAD {
        return Err(ConsoleError::BadRequest(format!(
            "dead letter {} came from {:?}, which is not a pipeline queue; discard it instead",
            d.id, d.source_queue
        )));
    }
    if !c.ctx.store.close_dead_letter(d.id, "replayed", &who.name, None).await? {
        return Err(ConsoleError::BadRequest(format!("dead letter {} is no longer open", d.id)));
    }
    let traceparent = d.headers.get("traceparent").and_then(Value::as_str).map(str::to_owned);
    let mut headers = vec![
        ("x-qyzmet-replay-of".to_owned(), d.id.to_string()),
        ("x-qyzmet-replayed-by".to_owned(), who.name.clone()),
    ];
    if let Some(s) = &d.submitter {
        headers.push(("x-qyzmet-replayed-for".to_owned(), s.clone()));
    }
    let message = Message {
        // The default exchange routes by queue name: straight back to where it was refused,
        // not to every queue bound to the original exchange.
        exchange: String::new(),
        routing_key: d.source_queue.clone(),
        message_id: d.message_id.clone().unwrap_or_else(|| format!("replay:{}", d.id)),
        body: d.body.clone(),
        traceparent,
        headers,
        must_route: true,
    };
    if let Err(e) = c.ctx.outbox.publisher().publish_all(std::slice::from_ref(&message)).await {
        c.ctx.store.reopen_dead_letter(d.id).await?;
        return Err(ConsoleError::Broker(format!("replay of dead letter {} not published: {e}", d.id)));
    }
    let detail = json!({ "reason": d.reason, "queue": d.source_queue, "message_id": d.message_id });
    who.record(c, "replay", Some(&format!("dead letter {}", d.id)), None, Some(&detail)).await
}

/// Marks an open dead letter discarded, with the operator's reason.
pub async fn discard(c: &Console, who: &Principal, d: &DeadLetter, why: &str) -> Result<(), ConsoleError> {
    if why.trim().is_empty() {
        return Err(ConsoleError::BadRequest("say why the dead letter is discarded".into()));
    }
    if !c.ctx.store.close_dead_letter(d.id, "discarded", &who.name, Some(why)).await? {
        return Err(ConsoleError::BadRequest(format!("dead letter {} is no longer open", d.id)));
    }
    let detail = json!({ "reason": d.reason, "queue": d.source_queue, "message_id": d.message_id });
    who.record(c, "discard", Some(&format!("dead letter {}", d.id)), Some(why), Some(&detail)).await
}

/// A group replay's progress.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ReplayJob {
    /// Reason of the group.
    pub reason: String,
    /// Source queue of the group.
    pub queue: String,
    /// Letters in the group when it started.
    pub total: usize,
    /// Replayed so far.
    pub replayed: usize,
    /// Failed (left open), with the last error.
    pub failed: usize,
    /// The last failure.
    pub last_error: Option<String>,
    /// Whether it has finished.
    pub finished: bool,
}

/// Most letters one group replay takes on.
pub const GROUP_LIMIT: i64 = 10_000;

/// Starts replaying every open letter of a group in the background; returns the job's id.
pub async fn start_group_replay(
    c: Arc<Console>,
    who: Principal,
    reason: String,
    queue: String,
) -> Result<u64, ConsoleError> {
    let letters = c.ctx.store.dead_letters(Some(&reason), Some(&queue), Some("open"), GROUP_LIMIT).await?;
    let detail = json!({ "reason": reason, "queue": queue, "letters": letters.len() });
    who.record(&c, "replay_group", Some(&format!("{reason} from {queue}")), None, Some(&detail)).await?;
    let id = {
        let mut jobs = c.jobs.lock().await;
        let id = jobs.keys().max().map_or(1, |k| k + 1);
        jobs.insert(id, ReplayJob { reason, queue, total: letters.len(), ..ReplayJob::default() });
        id
    };
    tokio::spawn(async move {
        for d in letters {
            let result = replay(&c, &who, &d).await;
            let mut jobs = c.jobs.lock().await;
            if let Some(job) = jobs.get_mut(&id) {
                match result {
                    Ok(()) => job.replayed += 1,
                    Err(e) => {
                        job.failed += 1;
                        job.last_error = Some(e.to_string());
                    }
                }
            }
        }
        if let Some(job) = c.jobs.lock().await.get_mut(&id) {
            job.finished = true;
        }
    });
    Ok(id)
}

/// A size-limited preview of a body with identifiers and personal fields masked: every run of
/// exactly 12 digits (an IIN or BIN), and the values of name, address, e-mail and phone fields.
pub fn masked_preview(body: &[u8], limit: usize) -> String {
    let text = match serde_json::from_slice::<Value>(body) {
        Ok(mut v) => {
            mask_value(&mut v, false);
            serde_json::to_string_pretty(&v).unwrap_or_default()
        }
        Err(_) => mask_digits(&String::from_utf8_lossy(body)),
    };
    let clean: String = text.chars().map(|c| if c.is_control() && c != '\n' { '\u{FFFD}' } else { c }).collect();
    if clean.chars().count() > limit {
        let cut: String = clean.chars().take(limit).collect();
        format!("{cut}\n… ({} bytes in all)", body.len())
    } else {
        clean
    }
}

fn personal_key(k: &str) -> bool {
    let k = k.to_ascii_lowercase();
    ["name", "surname", "patronymic", "address", "email", "e-mail", "phone", "birth"].iter().any(|p| k.contains(p))
}

fn mask_value(v: &mut Value, personal: bool) {
    match v {
        Value::String(s) if personal => *s = "***".into(),
        Value::String(s) => *s = mask_digits(s),
        Value::Array(items) => items.iter_mut().for_each(|i| mask_value(i, personal)),
        Value::Object(map) => {
            for (k, item) in map.iter_mut() {
                mask_value(item, personal || personal_key(k));
            }
        }
        Value::Number(n) if n.to_string().len() == 12 => *v = Value::String("************".into()),
        _ => {}
    }
}

/// Masks every run of exactly 12 ASCII digits.
pub fn mask_digits(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.len() == 12 {
            out.push_str(&crate::ident::mask(run));
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for ch in s.chars() {
        if ch.is_ascii_digit() {
            run.push(ch);
        } else {
            flush(&mut run, &mut out);
            out.push(ch);
        }
    }
    flush(&mut run, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn previews_mask_identifiers_and_personal_fields_and_stay_short() {
        let body = br#"{"applicant":{"iin":"840317000029"},"form":{"full_name":"Aigerim Nurlanovna","n":12},"x":"id 081140000436."}"#;
        let p = masked_preview(body, 4000);
        assert!(!p.contains("840317000029") && p.contains("8403******29"), "{p}");
        assert!(!p.contains("081140000436"), "{p}");
        assert!(!p.contains("Aigerim"), "{p}");
        assert!(p.contains("\"n\": 12"), "{p}");
        let long = masked_preview(&vec![b'a'; 10_000], 100);
        assert!(long.ends_with("(10000 bytes in all)"), "{long}");
        assert_eq!(mask_digits("a1234567890123b840317000029"), "a1234567890123b8403******29");
    }
}
