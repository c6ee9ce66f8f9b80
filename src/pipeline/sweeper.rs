//! The deadline sweeper. Every process runs one (they coordinate through `FOR UPDATE SKIP
//! LOCKED`), so a request whose step deadline passes while it sits in a queue, waits for a
//! payment or a staff decision, or waits for a retry, is refused even when no worker of its pool
//! is running. The sweeper also re-queues retries that are due and runs the outbox relay.

use std::sync::Arc;

use crate::shutdown::Shutdown;
use crate::store::{Store, StoreError};

use super::Ctx;
use super::task::{load, refuse_for_deadline};
use super::transition::{self, Pending};

const BATCH: i64 = 200;

/// Runs until shutdown.
pub async fn run(ctx: Arc<Ctx>, shutdown: Shutdown) {
    while !shutdown.is_shutdown() {
        let busy = match sweep_once(&ctx).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "sweep failed");
                0
            }
        };
        match ctx.outbox.relay_once(500).await {
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "outbox relay failed"),
        }
        if busy < BATCH as usize {
            shutdown.sleep(ctx.sweep_interval).await;
        }
    }
}

/// One pass: refuse overdue requests, re-queue due retries. Returns how many rows it changed.
pub async fn sweep_once(ctx: &Ctx) -> Result<usize, StoreError> {
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
        if let Some(p) = refuse_for_deadline(ctx, &mut tx, row, why).await? {
            tracing::info!(request_id = %row.request_id, step = ?row.step, "sweeper refused an overdue request");
            pending.extend(p);
            changed += 1;
        }
    }
    tx.commit().await?;

    let mut tx = ctx.store.begin().await?;
    let due = Store::lock_due_retries(&mut tx, BATCH).await?;
    for row in &due {
        match load(ctx, row) {
            Ok((_, route)) => {
                pending.extend(transition::requeue(&mut tx, row, &route).await?);
                changed += 1;
            }
            Err(e) => tracing::error!(request_id = %row.request_id, error = %e, "cannot requeue"),
        }
    }
    tx.commit().await?;

    ctx.outbox.flush(pending).await;
    Ok(changed)
}
