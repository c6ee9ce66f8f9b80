//! The pipeline runtime, written once for every pool.
//!
//! - [`runtime`]: the broker loop — consume with prefetch, hand each delivery to a handler,
//!   catch panics, ack, dead-letter with a reason, reconnect, stop gracefully.
//! - [`task`]: the step loop — load the request, enforce the step deadline, run the pool's step
//!   function, classify its result, apply it.
//! - [`transition`]: state changes with their audit-trail rows and outbox messages, each one
//!   statement guarded by the request's position.
//! - [`batch`]: group commit — the registrations, advances or ends of many deliveries in one
//!   statement.
//! - [`outbox`]: publishing after commit, and the relay for what a crash left behind.
//! - [`failure`]: the one classification of failures — transient (retry within bounds) or
//!   permanent (refuse or dead-letter at once).
//! - [`sweeper`]: refuses requests whose step deadline passed while they waited, even when no
//!   worker of that pool runs; re-queues due retries.
//!
//! A pool's step is a plain function from [`StepInput`] to [`StepOutcome`] behind the [`Step`]
//! trait (see `workers/`), unit-tested without a broker or a database.

pub mod batch;
pub mod failure;
pub mod outbox;
pub mod retention;
pub mod runtime;
pub mod sweeper;
pub mod task;
pub mod transition;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::contract::{Request, StaffReason};
use crate::registry::Registry;
use crate::regulations::{Regulations, Route, StepDef};
use crate::signature::{Signer, Verifier};
use crate::store::{RequestRow, Store};

pub use outbox::Outbox;

/// Everything a handler needs, shared by all pools of a process.
pub struct Ctx {
    /// Database.
    pub store: Store,
    /// Regulation data.
    pub regs: Arc<Regulations>,
    /// Publishing after commit, and the relay.
    pub outbox: Outbox,
    /// The tasks' reads of their requests, many in one statement.
    pub reads: batch::Reads,
    /// Group commit of intake: one statement for the registrations of many accepted requests.
    pub registrations: batch::Commits<crate::store::Registration>,
    /// Group commit of the steps that pass: one statement for the advances of many deliveries.
    pub advances: batch::Commits<crate::store::Advance>,
    /// Group commit of requests' ends (completed, refused) decided by the steps.
    pub endings: batch::Commits<transition::Ending>,
    /// Group commit of the steps that wait for an event (payment notice, staff decision).
    pub parks: batch::Commits<crate::store::Park>,
    /// Group commit of staff approvals: each decision's record with the advance it makes.
    pub decisions: batch::Commits<crate::store::Decided>,
    /// Signature checks (Requests, Decisions).
    pub verifier: Arc<dyn Verifier>,
    /// Result-document signing.
    pub signer: Arc<dyn Signer>,
    /// State registries.
    pub registry: Arc<dyn Registry>,
    /// Size limit for incoming messages.
    pub max_message_bytes: usize,
    /// How often the sweeper looks for overdue requests.
    pub sweep_interval: Duration,
    /// BINs of the centres whose operators may sign centre-channel requests.
    pub centre_bins: Vec<String>,
    /// Which upstream system may submit, pay or decide what. `None`: senders are recorded but
    /// not checked (development; `qyzmet run` warns).
    pub systems: Option<Arc<crate::systems::Systems>>,
    /// A delivery the broker has handed out this many times before is dead-lettered unread:
    /// its earlier deliveries crashed or killed their consumer, and one more may do it again.
    pub max_deliveries: u32,
    /// Consumers of this process now attached to their queues (for `/readyz`).
    pub consuming: std::sync::atomic::AtomicUsize,
    /// How long a delivery whose handling failed transiently (database unreachable) is retried
    /// in this process before it goes back to the broker. Holding it keeps the consumer from
    /// pulling more work during an outage, and a return to the queue counts towards
    /// `max_deliveries`, so a short outage costs nothing and a message never circulates forever.
    pub retry_budget: Duration,
    /// How long a consumer's channel may stay down (lapin recovering it after a broker restart)
    /// before the consumer gives up on it and consumes on a new connection.
    pub recovery_patience: Duration,
    /// Who this process is (pools, host, version), for the heartbeat row its housekeeping pass
    /// refreshes: the console lists live processes from those rows.
    pub process: crate::store::Heartbeat,
}

/// The message a pool queue carries: "run step `step_index` of this request".
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Task {
    /// The request.
    pub request_id: Uuid,
    /// Which step of its route.
    pub step_index: i32,
}

/// What a step sees.
pub struct StepInput<'a> {
    /// The validated request.
    pub request: &'a Request,
    /// Its route.
    pub route: Route<'a>,
    /// The step being run.
    pub step: &'a StepDef,
    /// Findings of earlier steps (registry records).
    pub facts: &'a Value,
    /// The stored row (number, deadlines).
    pub row: &'a RequestRow,
    /// Now.
    pub now: DateTime<Utc>,
}

/// A pool's step, as the step loop ([`task::TaskHandler`]) runs it for every task of the pool's
/// queue. The loop knows nothing else of a pool: each file in `workers/` implements this for its
/// own pool, with the step's logic in a plain function testable without a broker.
pub trait Step: Send + Sync + 'static {
    /// Runs the step for one request.
    fn run<'a>(&'a self, ctx: &'a Ctx, input: &'a StepInput<'a>) -> BoxFuture<'a, Result<StepOutcome, StepError>>;
}

/// A step's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum StepOutcome {
    /// Go on to the next step, adding these findings.
    Pass {
        /// Merged into the request's facts.
        facts: Option<Value>,
        /// What the audit row of the pass records, so that the trail says what let the request
        /// through (the payment that paid it). The trail is kept as long as the law asks and
        /// is not purged of personal data, so no names or identifiers go here: registry
        /// findings stay in the facts.
        detail: Option<Value>,
    },
    /// A business answer: reasoned refusal with this regulation refusal key.
    Refuse {
        /// Key in the service's `[refusals]` (`R4`, `R3/not_attached`).
        refusal: String,
        /// Extra reason given by staff.
        note: Option<StaffReason>,
        /// Specific machine detail for the audit trail.
        detail: Option<String>,
    },
    /// Wait for an external event (payment notice, staff decision).
    Wait,
    /// The result document, ready to be numbered and signed.
    Complete {
        /// Draft (kind, title, content).
        document: DocumentDraft,
    },
}

/// A result document before its number and signature.
#[derive(Debug, Clone, PartialEq)]
pub struct DocumentDraft {
    /// Document kind (regulation data key).
    pub kind: String,
    /// Number prefix.
    pub number_prefix: String,
    /// Content.
    pub content: Value,
}

pub use failure::{Class, Failure, StepError};
