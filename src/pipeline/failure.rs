//! One classification of failures, decided here and nowhere else.
//!
//! Whatever goes wrong while a message is handled is one of three things:
//! - a **business answer** — not a failure at all: a step refuses the request with a reasoned
//!   refusal ([`super::StepOutcome::Refuse`]);
//! - **transient** — the database or a registry was unreachable, a statement timed out, a
//!   transaction hit a deadlock: the same work may succeed later, so it is retried with back-off
//!   (a step until its deadline, then `deadline_exceeded`; a delivery a bounded number of times);
//! - **permanent** — retrying cannot help: the database refuses the data itself (a value out of
//!   range, a constraint), a stored request no longer fits its route, a provider has no signing
//!   key. The request is refused `invalid_request` naming the field, or, where there is no
//!   request to refuse, the message is dead-lettered with the reason.
//!
//! [`Failure::class`] is the single place where that decision is made.

use crate::broker::BrokerError;
use crate::registry::RegistryError;

/// How a failure is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// May pass: retry with back-off, within bounds.
    Transient,
    /// Will not pass: give up now, with a clear reason.
    Permanent,
}

/// A failure while handling a message or running a step.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The database failed or refused; [`db_class`] tells which.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// The broker failed (publishing after commit is retried by the outbox relay).
    #[error("broker: {0}")]
    Broker(#[from] BrokerError),
    /// A dependency failed in a way that may pass.
    #[error("{0}")]
    Transient(String),
    /// This input can never be processed; `field` names the part of the message (or of
    /// qyzmet's configuration for it) that is the problem.
    #[error("{field}: {problem}")]
    Permanent {
        /// Dotted path of the field (`provider`, `form.kind`), or what the problem concerns.
        field: String,
        /// What is wrong, in plain words.
        problem: String,
    },
}

/// A step's failure: the same classification as every other failure.
pub type StepError = Failure;

impl Failure {
    /// A permanent failure concerning `field`.
    pub fn permanent(field: impl Into<String>, problem: impl Into<String>) -> Failure {
        Failure::Permanent { field: field.into(), problem: problem.into() }
    }

    /// Transient or permanent — decided here once for every kind of failure.
    pub fn class(&self) -> Class {
        match self {
            Failure::Db(e) => db_class(e),
            Failure::Broker(_) | Failure::Transient(_) => Class::Transient,
            Failure::Permanent { .. } => Class::Permanent,
        }
    }

    /// Whether retrying may help.
    pub fn is_transient(&self) -> bool {
        self.class() == Class::Transient
    }

    /// The field a permanent failure concerns, for the refusal; `None` for database refusals,
    /// which do not name one.
    pub fn field(&self) -> Option<&str> {
        match self {
            Failure::Permanent { field, .. } => Some(field),
            _ => None,
        }
    }
}

impl From<RegistryError> for Failure {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::Unavailable(why) => Failure::Transient(format!("registry: {why}")),
            RegistryError::Rejected(why) => Failure::permanent("registry", why),
        }
    }
}

/// Transient or permanent for a database error, by its kind and SQLSTATE class.
///
/// Transient: connection and pool problems, I/O, `08` connection exception, `40` transaction
/// rollback (serialization failure, deadlock), `53` insufficient resources, `55` object not in
/// prerequisite state (lock not available), `57` operator intervention (statement timeout,
/// server shutting down), `25P03` idle-in-transaction timeout, `58` system error, `XX` internal.
/// Permanent: everything that says the data or the statement is wrong — `22` data exception
/// (NUL byte, value out of range, string too long), `23` integrity constraint, `42` syntax or
/// access rule, `54` program limit (index row too large), and values qyzmet cannot decode.
pub fn db_class(e: &sqlx::Error) -> Class {
    use sqlx::Error as E;
    match e {
        E::Database(db) => {
            let code = db.code();
            let code = code.as_deref().unwrap_or("");
            if code == "25P03" {
                return Class::Transient;
            }
            match code.get(..2).unwrap_or("") {
                "08" | "40" | "53" | "55" | "57" | "58" | "XX" => Class::Transient,
                _ => Class::Permanent,
            }
        }
        E::Io(_) | E::Tls(_) | E::PoolTimedOut | E::PoolClosed | E::WorkerCrashed | E::Protocol(_) => Class::Transient,
        E::Configuration(_)
        | E::RowNotFound
        | E::TypeNotFound { .. }
        | E::ColumnIndexOutOfBounds { .. }
        | E::ColumnNotFound(_)
        | E::ColumnDecode { .. }
        | E::Encode(_)
        | E::Decode(_)
        | E::InvalidArgument(_) => Class::Permanent,
        _ => Class::Transient,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_connections_are_transient_and_bad_data_is_permanent() {
        assert_eq!(db_class(&sqlx::Error::PoolTimedOut), Class::Transient);
        assert_eq!(db_class(&sqlx::Error::Io(std::io::Error::other("reset"))), Class::Transient);
        assert_eq!(db_class(&sqlx::Error::RowNotFound), Class::Permanent);
        assert_eq!(db_class(&sqlx::Error::Decode("bad".into())), Class::Permanent);
    }

    #[test]
    fn registry_outages_are_transient_and_its_refusals_permanent() {
        assert!(Failure::from(RegistryError::Unavailable("timeout".into())).is_transient());
        assert!(!Failure::from(RegistryError::Rejected("bad key".into())).is_transient());
    }

    #[test]
    fn a_permanent_failure_names_its_field() {
        let f = Failure::permanent("provider", "no signing key");
        assert_eq!(f.class(), Class::Permanent);
        assert_eq!(f.field(), Some("provider"));
        assert_eq!(f.to_string(), "provider: no signing key");
    }
}
