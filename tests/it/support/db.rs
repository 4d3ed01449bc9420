//! A fresh database per test: a SQLite file in a temporary folder, or a new PostgreSQL database created
//! from `HERALD_TEST_DATABASE_URL` and dropped when the test ends.

use herald::{config::Settings, store::DynStore};
use sqlx::{Connection, Executor, PgConnection};

/// A database that exists for one test.
pub struct TestDatabase {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    drop_from: Option<(String, String)>,
}

impl TestDatabase {
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("herald.db").display());
        Self { url, _dir: Some(dir), drop_from: None }
    }

    /// `None` when `HERALD_TEST_DATABASE_URL` is unset (the test is skipped).
    pub async fn postgres() -> Option<Self> {
        let admin_url = super::service_env("HERALD_TEST_DATABASE_URL")?;
        let name = format!("herald_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&admin_url).await.expect("connect to HERALD_TEST_DATABASE_URL");
        admin
            .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .expect("create test database");
        drop(admin.close().await);
        let mut url = url::Url::parse(&admin_url).expect("HERALD_TEST_DATABASE_URL is a URL");
        url.set_path(&name);
        Some(Self { url: url.to_string(), _dir: None, drop_from: Some((admin_url, name)) })
    }

    /// Settings pointing at this database (defaults otherwise).
    pub fn settings(&self) -> Settings {
        let mut settings = Settings::defaults();
        settings.database.url = herald::config::Secret::new(self.url.clone());
        settings.secrets.keys = Some(herald::config::Secret::new(TEST_KEY.to_string()));
        // Never a fixed port: tests run side by side.
        settings.admin.bind = Some("127.0.0.1:0".parse().expect("addr"));
        settings
    }

    /// Drops a PostgreSQL test database at once, under whatever is connected to it.
    pub async fn drop_now(&self) {
        let (admin_url, name) = self.drop_from.as_ref().expect("a PostgreSQL test database");
        let mut admin = PgConnection::connect(admin_url).await.expect("connect");
        let sql = format!("DROP DATABASE {name} WITH (FORCE)");
        admin.execute(sqlx::AssertSqlSafe(sql)).await.expect("drop database");
    }

    pub async fn store(&self) -> DynStore {
        herald::store::connect(&self.settings()).await.expect("connect to the test database")
    }
}

/// A fixed encryption key for webhook secrets in tests.
pub const TEST_KEY: &str = "test:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some((admin_url, name)) = self.drop_from.take() else { return };
        // Drop runs inside the test's runtime; do the async cleanup on a thread of its own.
        let cleanup = std::thread::spawn(move || {
            let runtime =
                tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async {
                if let Ok(mut admin) = PgConnection::connect(&admin_url).await {
                    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    drop(admin.execute(sqlx::AssertSqlSafe(sql)).await);
                }
            });
        });
        drop(cleanup.join());
    }
}
