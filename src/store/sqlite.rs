//! The SQLite backend (embedded mode): one file, WAL journal, `synchronous = FULL` so that an event
//! acknowledged with 202 survives a power cut, foreign keys on. Writes go through a single connection
//! (SQLite has one writer anyway); reads use a pool.

use std::{str::FromStr, time::Duration};

use sqlx::{
    Sqlite,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};

use super::sql::{Backend, SqlStore, delivery_columns};
use crate::config::DatabaseSettings;

pub type SqliteStore = SqlStore<Sqlite>;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

impl Backend for Sqlite {
    // The single write connection serializes claims; no row locks are needed.
    const CLAIM_DUE_SQL: &'static str = concat!(
        "UPDATE deliveries SET status = 'queued', next_attempt_at = $2, updated_at = $1 WHERE id IN \
         (SELECT id FROM deliveries WHERE status IN ('pending', 'queued') AND next_attempt_at <= $1 \
         ORDER BY next_attempt_at LIMIT $3) RETURNING ",
        delivery_columns!()
    );
    const BEGIN_WRITE: &'static str = "BEGIN IMMEDIATE";
    const BOOTSTRAP_LOCK_SQL: Option<&'static str> = None;

    fn rows_affected(result: &Self::QueryResult) -> u64 {
        result.rows_affected()
    }
}

/// Opens (creating if needed) the database file and runs the migrations.
pub async fn connect(url: &str, settings: &DatabaseSettings) -> anyhow::Result<SqliteStore> {
    let options = SqliteConnectOptions::from_str(url)
        .map_err(|error| anyhow::anyhow!("configuration: database.url: {error}"))?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(10));
    let path = options.get_filename().to_path_buf();
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|error| anyhow::anyhow!("creating the database folder {}: {error}", parent.display()))?;
    }
    let open_error =
        |error: sqlx::Error| anyhow::anyhow!("opening SQLite database {}: {error}", path.display());
    let write = SqlitePoolOptions::new()
        .max_connections(1)
        .acquire_timeout(settings.connect_timeout.get().max(Duration::from_secs(30)))
        .connect_with(options.clone())
        .await
        .map_err(open_error)?;
    MIGRATOR.run(&write).await.map_err(|error| anyhow::anyhow!("migrating {}: {error}", path.display()))?;
    let read = SqlitePoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.connect_timeout.get())
        .connect_with(options.read_only(true))
        .await
        .map_err(open_error)?;
    Ok(SqlStore { read, write })
}
