//! The deadline sweeper. Every process runs one, so that a request whose step deadline passes
//! while it sits in a queue, waits for a payment or a staff decision, or waits for a retry, is
//! refused even when no worker of its pool is running. The sweeper also re-queues retries that
//! are due, runs the outbox relay and, about hourly, purges the personal data of requests past
//! their retention period (P-48, [`super::retention`]).
//!
//! These chores are the fleet's, not the process's: each pass is run by the process that takes
//! its turn (`chore_turns`, [`Store::take_turn`]), so the fleet runs each about once per
//! interval however many processes there are. What a pass changes it locks with `FOR UPDATE
//! SKIP LOCKED`, so a pass that overlaps another (a turn taken as the last one ended) changes
//! nothing twice.

use std::sync::Arc;

use sqlx::Acquire;

use crate::shutdown::Shutdown;
use crate::store::Store;

use super::task::{load, refuse_for_deadline};
use super::transition::{self, Pending};
use super::{Ctx, Failure};

const BATCH: i64 = 200;

/// How often the waiting gauges and the heartbeat are refreshed.
const OBSERVE_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// How often the outbox backlog gauge is refreshed. Counting the outbox reads every page of it,
/// and under load most of its pages hold rows published and deleted since autovacuum last came
/// by (up to a minute of them, hundreds of megabytes at full speed): at every 5 s in every
/// process that was about 2 % of a core. Its alerts look at 10 and 15 minutes.
const OUTBOX_GAUGE_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// How often the retention pass runs (its work is days old; once an hour is timely).
const RETENTION_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// A chore the sweeper runs at most once per interval, the first time at once.
struct Every {
    interval: std::time::Duration,
    last: Option<std::time::Instant>,
}

impl Every {
    fn new(interval: std::time::Duration) -> Every {
        Every { interval, last: None }
    }

    /// Whether the chore is due; if so, it counts as run now.
    fn due(&mut self) -> bool {
        let due = self.last.is_none_or(|t| t.elapsed() >= self.interval);
        if due {
            self.last = Some(std::time::Instant::now());
        }
        due
    }
}

/// Runs until shutdown.
pub async fn run(ctx: Arc<Ctx>, shutdown: Shutdown) {
    // The gauges need no sweep-interval freshness; two queries per process every pass would be
    // load on the database for nothing. The relay's rows are old by definition (see
    // `Outbox::relay_interval`).
    let mut relay = Every::new(ctx.outbox.relay_interval());
    let mut observing = Every::new(OBSERVE_EVERY);
    let mut counting_outbox = Every::new(OUTBOX_GAUGE_EVERY);
    let mut retention = Every::new(RETENTION_EVERY);
    let mut busy = 0;
    while !shutdown.is_shutdown() {
        // A pass that changed a whole batch left more behind: it goes on at once, in the turn
        // it took.
        busy = if busy >= BATCH as usize || take_turn(&ctx, SWEEP, ctx.sweep_interval).await {
            match timed(SWEEP, sweep_once(&ctx)).await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, "sweep failed");
                    0
                }
            }
        } else {
            0
        };
        if relay.due()
            && take_turn(&ctx, RELAY, ctx.outbox.relay_interval()).await
            && let Err(e) = timed(RELAY, ctx.outbox.relay_once(500)).await
        {
            tracing::warn!(error = %e, "outbox relay failed");
        }
        if observing.due() {
            observe(&ctx, counting_outbox.due()).await;
        }
        if retention.due()
            && take_turn(&ctx, RETENTION, RETENTION_EVERY).await
            && let Err(e) = timed(RETENTION, super::retention::run_once(&ctx.store, &ctx.regs, false)).await
        {
            tracing::warn!(error = %e, "retention pass failed");
        }
        if busy < BATCH as usize {
            shutdown.sleep(ctx.sweep_interval).await;
        }
    }
}

/// The fleet's chores, by their names in `chore_turns`.
const SWEEP: &str = "sweep";
const RELAY: &str = "relay";
const RETENTION: &str = "retention";

/// Whether this process has the fleet's turn at `chore` ([`Store::take_turn`]). The turn is
/// taken once four fifths of the interval have passed, so that the process that took it last
/// is not kept out by its own timer's jitter; the fleet then runs the chore at most a quarter
/// more often than once per interval. A database that cannot be asked gives no turn: the pass
/// would have failed too.
async fn take_turn(ctx: &Ctx, chore: &str, every: std::time::Duration) -> bool {
    match ctx.store.take_turn(chore, every.mul_f64(0.8), ctx.process.process_id).await {
        Ok(taken) => taken,
        Err(e) => {
            tracing::warn!(error = %e, chore, "cannot take the chore's turn");
            false
        }
    }
}

/// Runs a chore's pass and records how long it took ([`crate::metrics::chore_duration`]).
async fn timed<T>(chore: &'static str, pass: impl std::future::Future<Output = T>) -> T {
    let started = std::time::Instant::now();
    let done = pass.await;
    crate::metrics::chore_duration(chore, started.elapsed());
    done
}

/// Gauges of what waits: requests waiting for a payment or a decision and, when `outbox`, the
/// outbox backlog; then the heartbeat.
async fn observe(ctx: &Ctx, outbox: bool) {
    if outbox && let Ok(rows) = ctx.store.outbox_backlog().await {
        crate::metrics::outbox_backlog(rows);
    }
    if let Ok(waiting) = ctx.store.waiting_summary().await {
        for step in ["payment", "review"] {
            let (count, oldest) = waiting.iter().find(|w| w.0 == step).map(|w| (w.1, w.2)).unwrap_or((0, 0.0));
            crate::metrics::waiting(step, count, oldest);
        }
    }
    if let Err(e) = ctx.store.beat(&ctx.process).await {
        tracing::debug!(error = %e, "heartbeat row not written");
    }
    crate::metrics::heartbeat();
}

/// One pass: refuse overdue requests, re-queue due retries. Returns how many rows it changed.
///
/// Each row is changed under its own savepoint, so one row the database refuses (a bug, a
/// corrupted row) is logged and skipped instead of failing the whole batch — otherwise it would
/// fail every pass and stop deadlines being enforced for everyone. Publishing what the pass
/// caused is handed to a task of its own: while the broker is blocked (a resource alarm) the
/// sweeper still records refusals, and the outbox relay publishes them once it is unblocked.
pub async fn sweep_once(ctx: &Ctx) -> Result<usize, Failure> {
    let mut changed = 0;
    let mut pending = Pending::default();

    let mut tx = ctx.store.begin().await?;
    let overdue = Store::lock_overdue(&mut tx, BATCH).await?;
    for row in &overdue {
        let why = match row.state.as_str() {
            "waiting" => "no answer arrived before the step deadline",
            "retry" => "the step kept failing until its deadline",
            _ => "the step deadline passed while the request waited in the queue",
        };
        let mut sp = tx.begin().await?;
        match refuse_for_deadline(ctx, &mut sp, row, why).await {
            Ok(refused) => {
                sp.commit().await?;
                if let Some(p) = refused {
                    tracing::info!(request_id = %row.request_id, step = ?row.step, "sweeper refused an overdue request");
                    pending.extend(p);
                    changed += 1;
                }
            }
            Err(e) if e.is_transient() => return Err(e),
            Err(e) => {
                sp.rollback().await?;
                tracing::error!(request_id = %row.request_id, error = %e, "cannot refuse an overdue request; skipped");
            }
        }
    }
    tx.commit().await?;

    let mut tx = ctx.store.begin().await?;
    let due = Store::lock_due_retries(&mut tx, BATCH).await?;
    for row in &due {
        let mut sp = tx.begin().await?;
        let requeued = match load(ctx, row) {
            Ok((_, route)) => transition::requeue(&mut sp, row, &route).await,
            Err(e) => Err(e),
        };
        match requeued {
            Ok(p) => {
                sp.commit().await?;
                pending.extend(p);
                changed += 1;
            }
            Err(e) if e.is_transient() => return Err(e),
            Err(e) => {
                sp.rollback().await?;
                tracing::error!(request_id = %row.request_id, error = %e, "cannot requeue a due retry; skipped");
            }
        }
    }
    tx.commit().await?;

    if !pending.messages.is_empty() {
        let outbox = ctx.outbox.clone();
        tokio::spawn(async move { outbox.flush(pending).await });
    }
    Ok(changed)
}
