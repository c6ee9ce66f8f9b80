//! The worker pools, one file each. Every pool's business logic is a plain function from the
//! request's state to a [`crate::pipeline::StepOutcome`]; the broker loop, deadlines, retries
//! and outcome publication are shared (`src/pipeline`).

pub mod intake;
pub mod payment;
pub mod registry;
pub mod result;
pub mod review;
#[cfg(test)]
mod test_support;

use std::sync::Arc;

use crate::broker::{QUEUE_DECISIONS, QUEUE_INTAKE, QUEUE_PAYMENT_NOTICES, QUEUE_QUESTIONNAIRE};
use crate::pipeline::Step;
use crate::pipeline::runtime::Handler;
use crate::regulations::PoolName;

/// The step a pool runs for each task of its queue; intake runs none (it reads Requests).
pub fn step_of(pool: PoolName) -> Option<Arc<dyn Step>> {
    match pool {
        PoolName::Intake => None,
        PoolName::Registry => Some(Arc::new(registry::RegistryStep)),
        PoolName::Payment => Some(Arc::new(payment::PaymentStep)),
        PoolName::Review => Some(Arc::new(review::ReviewStep)),
        PoolName::Result => Some(Arc::new(result::ResultStep)),
    }
}

/// The queues of outside messages a pool consumes, with their handlers: intake's Requests,
/// payment's PaymentNotices, review's staff Decisions, result's questionnaire answers (P-51).
pub fn event_consumers(pool: PoolName) -> Vec<(String, Arc<dyn Handler>)> {
    match pool {
        PoolName::Intake => vec![(QUEUE_INTAKE.into(), Arc::new(intake::IntakeHandler))],
        PoolName::Payment => vec![(QUEUE_PAYMENT_NOTICES.into(), Arc::new(payment::NoticeHandler))],
        PoolName::Review => vec![(QUEUE_DECISIONS.into(), Arc::new(review::DecisionHandler))],
        PoolName::Result => vec![(QUEUE_QUESTIONNAIRE.into(), Arc::new(result::QuestionnaireHandler))],
        PoolName::Registry => Vec::new(),
    }
}
