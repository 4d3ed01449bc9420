//! For unit tests: a fresh SQLite store in a temporary folder, migrated, with a bootstrapped
//! organization and its admin's key. The folder lives as long as the [`TestStore`].

use uuid::Uuid;

use crate::{
    config::{Secret, Settings},
    domain::ApiKeySecret,
    store::DynStore,
};

pub(crate) struct TestStore {
    /// `sqlite://` URL of the database, for a second connection.
    pub url: String,
    /// The settings the store was opened with (default, but for the database URL and `configure`).
    pub settings: Settings,
    pub store: DynStore,
    pub organization_id: Uuid,
    pub admin_key: ApiKeySecret,
    _dir: tempfile::TempDir,
}

/// A new store; `configure` adjusts the default settings (the database URL is set already).
pub(crate) async fn with_organization(configure: impl FnOnce(&mut Settings)) -> TestStore {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let url = format!("sqlite://{}", dir.path().join("herald.db").display());
    let mut settings = Settings::defaults();
    settings.database.url = Secret::new(url.clone());
    configure(&mut settings);
    let store = crate::store::connect(&settings).await.expect("store");
    let (bootstrap, admin_key) = crate::app::bootstrap(&store, "org", "admin@test.example", false)
        .await
        .expect("bootstrap")
        .expect("a new organization");
    TestStore { url, settings, store, organization_id: bootstrap.organization.id, admin_key, _dir: dir }
}
