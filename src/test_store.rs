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

impl TestStore {
    /// A webhook of the organization subscribed to every type (`*`), created at `at`; its secret is a
    /// placeholder that no key opens.
    pub(crate) async fn webhook_for_everything(
        &self,
        at: chrono::DateTime<chrono::Utc>,
    ) -> crate::store::NewWebhook {
        let webhook = crate::store::NewWebhook {
            id: Uuid::now_v7(),
            organization_id: self.organization_id,
            url: "https://example.com/hook".into(),
            events: "*".into(),
            secret: crate::crypto::Sealed { key_id: "k1".into(), ciphertext: b"sealed".to_vec() },
            description: None,
            created_at: at,
        };
        self.store.create_webhook(&webhook).await.expect("webhook");
        webhook
    }

    /// An `item.created` event of the organization, stored at `at`.
    pub(crate) async fn stored_event(&self, at: chrono::DateTime<chrono::Utc>) -> crate::store::NewEvent {
        let event = crate::store::NewEvent {
            id: Uuid::now_v7(),
            organization_id: self.organization_id,
            event_type: "item.created".into(),
            payload: r#"{"data":{}}"#.into(),
            idempotency_key: None,
            request_hash: None,
            created_at: at,
            only_webhook: None,
        };
        self.store.insert_events(std::slice::from_ref(&event), at).await.expect("event");
        event
    }
}
