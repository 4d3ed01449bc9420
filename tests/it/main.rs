//! Herald's integration tests, in one binary so they link once. Each test runs a real Herald (or a
//! real store) on a fresh database: SQLite always, PostgreSQL and RabbitMQ when `HERALD_TEST_DATABASE_URL`
//! and `HERALD_TEST_AMQP_URL` are set (`bash .ci/run` sets them and `HERALD_TEST_REQUIRE_SERVICES=1`).

mod auth;
mod claims;
mod cli;
mod console;
mod console_browser;
mod dead_letters;
mod delivery;
mod deploy_files;
mod docs_names;
mod events;
mod friction;
mod hostile_input;
mod hostile_receivers;
mod lists;
mod metrics;
mod openapi;
mod operational;
mod publishing;
mod receivers_doc;
mod recover;
mod retention;
mod skeleton;
mod stats;
mod store_conformance;
mod supervision;
mod support;
mod user_lifecycle;
mod webhook_changes;
mod webhooks;
