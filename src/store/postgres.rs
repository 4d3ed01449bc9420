//! The PostgreSQL backend (production mode). Deliveries are claimed with `FOR UPDATE SKIP LOCKED`, so
//! any number of schedulers can run side by side without taking the same rows.

use std::time::Duration;

use sqlx::{Connection, PgConnection, Postgres, postgres::PgPoolOptions};

use super::sql::{Backend, SqlStore, delivery_columns};
use crate::config::{DatabaseSettings, redact_url};

pub type PostgresStore = SqlStore<Postgres>;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

impl Backend for Postgres {
    const CLAIM_DUE_SQL: &'static str = concat!(
        "UPDATE deliveries SET status = 'queued', next_attempt_at = $2, updated_at = $1 WHERE id IN \
         (SELECT id FROM deliveries WHERE status IN ('pending', 'queued') AND next_attempt_at <= $1 \
         ORDER BY next_attempt_at LIMIT $3 FOR UPDATE SKIP LOCKED) RETURNING ",
        delivery_columns!()
    );
    const BEGIN_WRITE: &'static str = "BEGIN";
    const BOOTSTRAP_LOCK_SQL: Option<&'static str> = Some("SELECT pg_advisory_xact_lock(7236417)");

    fn rows_affected(result: &Self::QueryResult) -> u64 {
        result.rows_affected()
    }
}

/// Connects and runs the migrations (concurrent starts are serialized by sqlx's migration lock).
pub async fn connect(url: &str, settings: &DatabaseSettings) -> anyhow::Result<PostgresStore> {
    let unreachable = |error: &dyn std::fmt::Display| {
        anyhow::anyhow!("connecting to PostgreSQL at {}: {error}", redact_url(url))
    };
    // One plain connection first: a pool only reports "timed out", this reports why.
    let timeout = settings.connect_timeout.get();
    match tokio::time::timeout(timeout, PgConnection::connect(url)).await {
        Ok(Ok(connection)) => drop(connection.close().await),
        Ok(Err(error)) => return Err(unreachable(&error)),
        Err(_) => return Err(unreachable(&format!("no answer within {}s", timeout.as_secs_f64()))),
    }
    let pool = PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.connect_timeout.get())
        .idle_timeout(Duration::from_secs(300))
        .connect(url)
        .await
        .map_err(|error| unreachable(&error))?;
    MIGRATOR.run(&pool).await.map_err(|error| anyhow::anyhow!("migrating PostgreSQL: {error}"))?;
    Ok(SqlStore { read: pool.clone(), write: pool })
}
