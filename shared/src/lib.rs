//! What hookline's ingress and worker share.
//!
//! - [`answers`]: every answer the ingress gives, with its code, HTTP status and kind.
//! - [`config`]: settings from `HOOKLINE_*` variables and an optional TOML file.
//! - [`secret`]: secrets with redacted `Debug`, and the master key that seals them at rest.
//! - [`providers`]: one file per provider (its pure verifier, its parser, its options and, with
//!   the `testkit` feature, its request signer), registered in one place.
//! - [`event`]: the normalized event the worker routes, and what every parser shares.
//! - [`source`]: what a provider posts to, and its repository in PostgreSQL.
//! - [`db`]: the pool, embedded migrations, schema, and the dedup claim store.
//! - [`envelope`]: the message hookline puts on the broker (headers, ids).
//! - [`topology`]: exchange and queue names, declared idempotently.
//! - [`amqp`]: the broker connection supervisor and the confirmed publisher.
//! - [`metrics`], [`telemetry`]: Prometheus registry and JSON logs.

pub mod amqp;
pub mod answers;
pub mod config;
pub mod db;
pub mod envelope;
pub mod event;
pub mod ids;
pub mod metrics;
pub mod providers;
pub mod secret;
pub mod source;
pub mod subscription;
pub mod telemetry;
pub mod topology;
