//! Group commit: the commonest transitions of many deliveries in one statement.
//!
//! A pool's deliveries run as tasks of their own, up to its concurrency. When their steps end,
//! each would otherwise write its transition in a statement and a commit of its own; most of
//! what PostgreSQL spends on such a statement (the round trip, the executor's start and end, the
//! locks, the commit) does not depend on how many rows it writes. So intake hands each accepted
//! request's [`Registration`] to a [`Commits`], a step that passes its [`Advance`] to another,
//! a request's end its [`Ending`] to a third, and a step that waits its [`Park`] to a fourth
//! (a payment notice that finds its request at the payment step hands over an [`Advance`] too,
//! and a staff approval its [`Decided`], the advance with the decision's record, to a fifth);
//! each writes whatever is waiting in one statement ([`Store::register_all`],
//! [`Store::advance_all`], [`Store::finish_all`], [`Store::park_all`], [`Store::decide_all`])
//! and answers each delivery once that statement committed. A delivery is acknowledged only after
//! its answer, so a crash at any point loses nothing: uncommitted transitions are redelivered and
//! run again, committed ones are found applied (the request moved) and their outbox messages
//! published by the relay.
//!
//! Nothing waits for a batch to fill: a runner takes whatever arrived while the previous
//! statement ran, so under light load a batch is one advance and costs no latency, and under
//! heavy load batches grow by themselves.
//!
//! A batch that the database refuses for its data is split: each transition is tried on its own,
//! so only the one at fault fails (permanently, and its request is refused `invalid_request`).
//! A transient failure (the database unreachable) fails every transition of the batch as
//! transient, and each delivery retries as it would have alone.

use std::collections::HashSet;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use sqlx::PgConnection;
use tokio::sync::{Mutex, mpsc, oneshot};
use uuid::Uuid;

use crate::store::{Advance, Decided, Park, Registration, RequestRow, Store, StoreError};

use super::Failure;
use super::transition::{Ending, Pending};

/// The most transitions in one statement: enough that the statement's fixed cost is spread
/// thin, few enough that a batch's statement stays short (each row holds its request's lock
/// until the commit).
const MAX_BATCH: usize = 64;

/// Statements in flight at once per kind and process: while one commits, the next batch gathers.
/// One did better than two (closed loop on the same services, old and new binary alternately:
/// 5–30 % more requests per second with 7–30 % less database CPU per request, the batches being
/// larger); at a fixed 150 requests per second the latency did not differ beyond the noise.
const RUNNERS: usize = 1;

/// A transition that can be written together with others of its kind.
pub trait Batched: std::fmt::Debug + Send + Sync + Sized + 'static {
    /// What it is, for the metrics.
    const KIND: &'static str;
    /// The request it moves: a statement moves each request once.
    fn request_id(&self) -> Uuid;
    /// Writes them all in one statement; per transition, in order, the ids of its outbox rows
    /// (none when its request had moved).
    fn write_all<'a>(
        conn: &'a mut PgConnection,
        all: &'a [&'a Self],
    ) -> BoxFuture<'a, Result<Vec<Vec<i64>>, StoreError>>;
    /// What it wrote, to publish; `None` when its request had moved.
    fn written(self, ids: Vec<i64>) -> Option<Pending>;
}

impl Batched for Advance {
    const KIND: &'static str = "advance";

    fn request_id(&self) -> Uuid {
        self.request_id
    }

    fn write_all<'a>(
        conn: &'a mut PgConnection,
        all: &'a [&'a Self],
    ) -> BoxFuture<'a, Result<Vec<Vec<i64>>, StoreError>> {
        Box::pin(Store::advance_all(conn, all))
    }

    fn written(self, ids: Vec<i64>) -> Option<Pending> {
        Pending::written(ids, self.messages)
    }
}

impl Batched for Ending {
    const KIND: &'static str = "ending";

    fn request_id(&self) -> Uuid {
        self.finish.request_id
    }

    fn write_all<'a>(
        conn: &'a mut PgConnection,
        all: &'a [&'a Self],
    ) -> BoxFuture<'a, Result<Vec<Vec<i64>>, StoreError>> {
        Box::pin(async move {
            let finishes: Vec<_> = all.iter().map(|e| &e.finish).collect();
            Store::finish_all(conn, &finishes).await
        })
    }

    fn written(self, ids: Vec<i64>) -> Option<Pending> {
        Ending::written(self, ids)
    }
}

impl Batched for Registration {
    const KIND: &'static str = "registration";

    fn request_id(&self) -> Uuid {
        self.request.request_id
    }

    fn write_all<'a>(
        conn: &'a mut PgConnection,
        all: &'a [&'a Self],
    ) -> BoxFuture<'a, Result<Vec<Vec<i64>>, StoreError>> {
        Box::pin(Store::register_all(conn, all))
    }

    fn written(self, ids: Vec<i64>) -> Option<Pending> {
        Pending::written(ids, self.messages)
    }
}

impl Batched for Decided {
    const KIND: &'static str = "decision";

    fn request_id(&self) -> Uuid {
        self.advance.request_id
    }

    fn write_all<'a>(
        conn: &'a mut PgConnection,
        all: &'a [&'a Self],
    ) -> BoxFuture<'a, Result<Vec<Vec<i64>>, StoreError>> {
        Box::pin(Store::decide_all(conn, all))
    }

    fn written(self, ids: Vec<i64>) -> Option<Pending> {
        Pending::written(ids, self.advance.messages)
    }
}

impl Batched for Park {
    const KIND: &'static str = "park";

    fn request_id(&self) -> Uuid {
        self.request_id
    }

    /// A park writes no outbox rows: an empty list for each, applied or not.
    fn write_all<'a>(
        conn: &'a mut PgConnection,
        all: &'a [&'a Self],
    ) -> BoxFuture<'a, Result<Vec<Vec<i64>>, StoreError>> {
        Box::pin(async move { Ok(Store::park_all(conn, all).await?.into_iter().map(|_| Vec::new()).collect()) })
    }

    /// A parked request waits silently (no Outcome): nothing to publish.
    fn written(self, _ids: Vec<i64>) -> Option<Pending> {
        None
    }
}

/// Writes one transition on `conn`, on its own: in the caller's transaction when it has one.
pub async fn write_on<T: Batched>(conn: &mut PgConnection, transition: T) -> Result<Option<Pending>, Failure> {
    let ids = T::write_all(conn, &[&transition]).await?.pop().unwrap_or_default();
    Ok(transition.written(ids))
}

/// A transition waiting for its batch, and where its answer goes.
struct Waiting<T> {
    transition: T,
    answer: oneshot::Sender<(T, Result<Vec<i64>, Failure>)>,
}

/// Writes the transitions of one kind of a process's deliveries in batches. Cheap to clone; the
/// runners stop when every clone is dropped.
pub struct Commits<T> {
    queue: mpsc::UnboundedSender<Waiting<T>>,
}

impl<T> Clone for Commits<T> {
    fn clone(&self) -> Self {
        Commits { queue: self.queue.clone() }
    }
}

impl<T: Batched> Commits<T> {
    /// Starts the runners on `store`.
    pub fn start(store: Store) -> Commits<T> {
        let (queue, waiting) = mpsc::unbounded_channel();
        let waiting = Arc::new(Mutex::new(waiting));
        for _ in 0..RUNNERS {
            tokio::spawn(run(store.clone(), waiting.clone()));
        }
        Commits { queue }
    }

    /// Writes a transition in a batch with other deliveries'; returns once the batch committed.
    /// `None` if its request had moved (a duplicate task).
    pub async fn commit(&self, transition: T) -> Result<Option<Pending>, Failure> {
        let (answer, answered) = oneshot::channel();
        self.queue
            .send(Waiting { transition, answer })
            .map_err(|_| Failure::Transient("the batch writer has stopped".into()))?;
        let (transition, result) =
            answered.await.map_err(|_| Failure::Transient("the batch writer stopped before committing".into()))?;
        Ok(transition.written(result?))
    }
}

/// Whatever is waiting, at least one and at most [`MAX_BATCH`]; `None` once every sender is gone.
async fn gather<T>(waiting: &mut mpsc::UnboundedReceiver<T>) -> Option<Vec<T>> {
    let first = waiting.recv().await?;
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH {
        match waiting.try_recv() {
            Ok(next) => batch.push(next),
            Err(_) => break,
        }
    }
    Some(batch)
}

/// A runner: takes whatever is waiting (at least one), writes it, answers, again.
async fn run<T: Batched>(store: Store, waiting: Arc<Mutex<mpsc::UnboundedReceiver<Waiting<T>>>>) {
    loop {
        let Some(batch) = gather(&mut *waiting.lock().await).await else { return };
        write(&store, batch).await;
    }
}

/// Writes a batch and answers each transition. A request seen twice (a task redelivered while
/// its first delivery waits here) is written after the others, on its own, where it finds the
/// request moved.
async fn write<T: Batched>(store: &Store, batch: Vec<Waiting<T>>) {
    let mut seen = HashSet::new();
    let (first, repeated): (Vec<_>, Vec<_>) = batch.into_iter().partition(|w| seen.insert(w.transition.request_id()));
    let results = write_all(store, &first).await;
    for (w, result) in first.into_iter().zip(results) {
        let _ = w.answer.send((w.transition, result));
    }
    for w in repeated {
        let result = write_one(store, &w.transition).await;
        let _ = w.answer.send((w.transition, result));
    }
}

/// One statement for them all; split when the database refuses it for its data.
async fn write_all<T: Batched>(store: &Store, batch: &[Waiting<T>]) -> Vec<Result<Vec<i64>, Failure>> {
    let transitions: Vec<&T> = batch.iter().map(|w| &w.transition).collect();
    let written = async {
        let mut conn = store.batch_pool().acquire().await?;
        T::write_all(&mut conn, &transitions).await
    };
    match written.await.map_err(Failure::from) {
        Ok(ids) => {
            crate::metrics::batch_written(T::KIND, batch.len());
            ids.into_iter().map(Ok).collect()
        }
        Err(e) if batch.len() == 1 => vec![Err(e)],
        Err(e) if e.is_transient() => {
            let why = e.to_string();
            batch.iter().map(|_| Err(Failure::Transient(why.clone()))).collect()
        }
        Err(e) => {
            tracing::warn!(error = %e, transitions = batch.len(), "a batch was refused; writing its transitions one by one");
            let mut results = Vec::with_capacity(batch.len());
            for w in batch {
                results.push(write_one(store, &w.transition).await);
            }
            results
        }
    }
}

/// One transition on its own.
async fn write_one<T: Batched>(store: &Store, transition: &T) -> Result<Vec<i64>, Failure> {
    let mut conn = store.batch_pool().acquire().await?;
    Ok(T::write_all(&mut conn, &[transition]).await?.pop().unwrap_or_default())
}

/// A read waiting for its batch, and where its answer goes.
type Read = (Uuid, oneshot::Sender<Result<Option<RequestRow>, Failure>>);

/// Reads of the requests a process's deliveries are about to work on, many in one statement
/// ([`Store::get_requests`]): every task begins by reading its request, and under load a pool
/// has dozens of them in flight, each of which would otherwise be a round trip and a statement
/// of its own. As with [`Commits`], nothing waits for a batch to fill: one statement is in
/// flight, and whatever arrived meanwhile goes in the next. Cheap to clone; the reader stops
/// when every clone is dropped.
#[derive(Clone)]
pub struct Reads {
    queue: mpsc::UnboundedSender<Read>,
}

impl Reads {
    /// Starts the reader on `store`.
    pub fn start(store: Store) -> Reads {
        let (queue, waiting) = mpsc::unbounded_channel();
        tokio::spawn(read(store, waiting));
        Reads { queue }
    }

    /// A request as it stands now, read in a batch with other deliveries' (no lock taken);
    /// `None` if there is no such request.
    pub async fn get(&self, id: Uuid) -> Result<Option<RequestRow>, Failure> {
        let (answer, answered) = oneshot::channel();
        self.queue.send((id, answer)).map_err(|_| Failure::Transient("the batch reader has stopped".into()))?;
        answered.await.map_err(|_| Failure::Transient("the batch reader stopped before answering".into()))?
    }
}

/// The reader: takes whatever is waiting, reads it in one statement, answers each, again. A
/// failed statement fails every read of the batch, classified as the failure of one would be.
async fn read(store: Store, mut waiting: mpsc::UnboundedReceiver<Read>) {
    while let Some(batch) = gather(&mut waiting).await {
        let ids: Vec<Uuid> = batch.iter().map(|(id, _)| *id).collect();
        match store.get_requests(&ids).await.map_err(Failure::from) {
            Ok(rows) => {
                let mut rows: std::collections::HashMap<Uuid, RequestRow> =
                    rows.into_iter().map(|r| (r.request_id, r)).collect();
                crate::metrics::batch_written("read", batch.len());
                for (i, (id, answer)) in batch.into_iter().enumerate() {
                    // A request asked for again later in the batch (a redelivered task) keeps its
                    // row for that read.
                    let row = if ids[i + 1..].contains(&id) { rows.get(&id).cloned() } else { rows.remove(&id) };
                    let _ = answer.send(Ok(row));
                }
            }
            Err(e) => {
                let (transient, why) = (e.is_transient(), e.to_string());
                for (_, answer) in batch {
                    let failure = match transient {
                        true => Failure::Transient(why.clone()),
                        false => Failure::permanent("request", why.clone()),
                    };
                    let _ = answer.send(Err(failure));
                }
            }
        }
    }
}
