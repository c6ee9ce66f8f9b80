//! Integration tests against real RabbitMQ and PostgreSQL (see `common` for how they are found).
//! Test names carry the P-number of the behaviour they check (regulations.md §13).

mod alarm;
mod asyncapi;
mod audit;
mod bench;
mod browser;
mod cluster;
mod common;
mod console;
mod deadlines;
mod drill;
mod golden;
mod intake;
mod operations;
mod poison;
mod resilience;
mod services;
mod signatures;
mod systems;
mod tls;
mod traces;
