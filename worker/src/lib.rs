//! hookline-worker: the fleet member that consumes the work queue, and the operator CLI.
//!
//! - [`cli`]: argument parsing and one module per command group (`sources`, `dlq`, …).
//! - [`app`]: wiring for `run` (consumer, archiver, health and metrics server).
//! - [`runner`]: batches, stages, and the one place outcomes become broker actions.
//! - [`routes`]: the routes file and its wildcard matching.
//! - [`handlers`]: store, http, amqp, log.
//! - [`internal_events`]: each observable event's log line and counter, emitted together.
//! - [`archive`]: dead letters from the parking queue into PostgreSQL.
//! - [`store`]: the worker's SQL, every batch through `isolate`.
//! - [`gate`]: pauses the worker while the database is unavailable.
//! - [`subscriptions`]: tenants' HTTP destinations, reloaded while the worker runs.
//! - [`api`]: `hookline-worker api`, the management API.
//! - [`console`]: the operator console it serves at `/`.

pub mod api;
pub mod app;
pub mod archive;
pub mod cli;
pub mod console;
pub mod gate;
pub mod handlers;
pub mod internal_events;
pub mod routes;
pub mod runner;
pub mod store;
pub mod subscriptions;
