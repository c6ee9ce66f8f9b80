//! Publishing what a committed transaction wrote to the outbox.
//!
//! The handler that committed publishes its own messages right away (low latency) and the
//! published rows are deleted in batches by a background task (one DELETE for many hops). If the
//! process dies between commit and publish, the relay — run by every process's sweeper — finds
//! rows left unpublished for a while and publishes them. Consumers deduplicate by `message_id`
//! and by request state, so a rare second publication is harmless; a lost one is impossible.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::broker::Publisher;
use crate::store::Store;

use super::Failure;
use super::transition::Pending;

/// Publishes outbox messages.
#[derive(Clone)]
pub struct Outbox {
    /// Rows unpublished for longer than this are the relay's. Long enough that a row already
    /// published by its own handler is marked first (else it would go out twice), short
    /// enough that a crash delays messages only briefly.
    relay_age: Duration,
    store: Store,
    publisher: Arc<Publisher>,
    published: mpsc::UnboundedSender<Vec<i64>>,
}

impl Outbox {
    /// Starts the background marker; it stops when every `Outbox` clone is dropped.
    pub fn new(store: Store, publisher: Arc<Publisher>, relay_age: Duration) -> (Outbox, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let marker = tokio::spawn(mark_published(store.clone(), rx));
        (Outbox { relay_age, store, publisher, published: tx }, marker)
    }

    /// How often a relay pass is worth running: a row is the relay's only once it is
    /// `relay_age` old, so looking four times per age delays a crash's messages by at most a
    /// quarter of it, while a pass (a scan of the outbox) every sweep in every process was a
    /// steady load on the database for nothing.
    pub fn relay_interval(&self) -> Duration {
        self.relay_age / 4
    }

    /// The publisher, for dead-lettering.
    pub fn publisher(&self) -> &Publisher {
        &self.publisher
    }

    /// Publishes messages committed to the outbox (and counts the final outcomes among them,
    /// which are committed now). A failure is logged and left to the relay.
    pub async fn flush(&self, pending: Pending) {
        for f in &pending.finals {
            crate::metrics::final_outcome(f);
        }
        if pending.messages.is_empty() {
            return;
        }
        match self.publisher.publish_all(&pending.messages).await {
            Ok(()) => {
                let _ = self.published.send(pending.ids);
            }
            Err(e) => {
                tracing::warn!(error = %e, count = pending.ids.len(), "publish after commit failed; the relay will retry")
            }
        }
    }

    /// One relay pass: publishes rows left unpublished longer than the relay age. Returns how
    /// many were published.
    ///
    /// Rows are claimed in a statement of their own (a claim lapses after the relay age) and
    /// published with no transaction open, so a broker that blocks publishers (a resource
    /// alarm) holds no row lock and no connection while the confirms are awaited.
    pub async fn relay_once(&self, limit: i64) -> Result<usize, Failure> {
        let rows = self.store.outbox_claim_stale(self.relay_age, limit).await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        let messages: Vec<_> = rows.into_iter().map(|r| r.into_message()).collect();
        self.publisher.publish_all(&messages).await?;
        self.store.outbox_mark_published(&ids).await?;
        tracing::info!(count = ids.len(), "relay published messages left by an earlier failure");
        Ok(ids.len())
    }
}

/// How often published rows are removed from the outbox, at most.
const MARK_INTERVAL: Duration = Duration::from_millis(100);

async fn mark_published(store: Store, mut rx: mpsc::UnboundedReceiver<Vec<i64>>) {
    let mut batch = Vec::new();
    while let Some(ids) = rx.recv().await {
        batch.extend(ids);
        // Gather whatever else arrived meanwhile, to write it in one statement.
        while batch.len() < 2000 {
            match rx.try_recv() {
                Ok(more) => batch.extend(more),
                Err(_) => break,
            }
        }
        if let Err(e) = store.outbox_mark_published(&batch).await {
            // Unmarked rows are re-published by the relay; consumers deduplicate.
            tracing::warn!(error = %e, count = batch.len(), "could not mark outbox rows published");
        }
        batch.clear();
        // One delete for every message published meanwhile: the rows are the relay's only
        // after `relay_age`, so waiting a little costs nothing and saves a commit per hop.
        tokio::time::sleep(MARK_INTERVAL).await;
    }
}
