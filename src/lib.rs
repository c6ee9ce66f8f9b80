//! qyzmet — asynchronous processing of Kazakhstan e-government service requests.
//!
//! Signed requests arrive on RabbitMQ; worker pools (intake, registry lookup, payment
//! confirmation, provider review, result generation) move each one through the route its
//! regulation prescribes, enforce every step's deadline and end it with exactly one outcome: a
//! result document or a reasoned refusal. PostgreSQL holds the state.
//!
//! Map of the crate:
//! - [`contract`]: the external messages (contract.md, version 1); [`ident`]: IIN/BIN.
//! - [`regulations`]: service data, routes, deadlines, the working-day calendar.
//! - [`store`]: all SQL; [`broker`]: RabbitMQ topology and confirmed publishing.
//! - [`pipeline`]: the runtime written once for every pool; [`workers`]: one file per pool.
//! - [`signature`]: `jcs-x509` verification and signing (the demo PKI is the crate
//!   `qyzmet-demo-pki`, used by the binary's demo commands and the tests).
//! - [`registry`]: the state registries behind one interface.
//! - [`systems`]: which upstream system may do what; the broker definitions derived from it.
//! - [`config`], [`telemetry`], [`metrics`], [`http`], [`startup`]: how a process is configured,
//!   observed and started.

#![deny(missing_docs)]

pub mod broker;
pub mod config;
pub mod console;
pub mod contract;
pub mod http;
pub mod ident;
pub mod metrics;
pub mod pipeline;
pub mod registry;
pub mod regulations;
pub mod report;
pub mod shutdown;
pub mod signature;
pub mod startup;
pub mod store;
pub mod systems;
pub mod telemetry;
pub mod tracecontext;
pub mod watchdog;
#[path = "../workers/mod.rs"]
pub mod workers;
