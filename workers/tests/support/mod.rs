//! Machinery of herald-worker's storm test (beside the root package's `tests/it/support`, which it also
//! uses): private PostgreSQL and RabbitMQ instances it may stop ([`private_services`]), Herald's
//! binaries as separate processes ([`herald_processes`]), the endpoints and what they received
//! ([`endpoints`], one behind a [`failing_endpoint`]), a paced client of `POST /events` ([`loader`]) and
//! the outages and kills ([`chaos`]), and what the database says ([`database`]).

pub mod chaos;
pub mod database;
pub mod endpoints;
pub mod failing_endpoint;
pub mod herald_processes;
pub mod loader;
pub mod private_services;
