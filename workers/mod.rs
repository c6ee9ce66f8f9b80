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
