//! The store conformance suite: one set of behaviours every [`Store`] must show, run against SQLite
//! always and against PostgreSQL when `HERALD_TEST_DATABASE_URL` is set, each test on a fresh database.

use chrono::{DateTime, Duration, Utc};
use herald::{
    crypto::Sealed,
    domain::{self, KeyPurpose, Role},
    store::*,
};
use uuid::Uuid;

/// Generates `sqlite::NAME` and `postgres::NAME` for each `async fn NAME(store: DynStore)`.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let database = crate::support::db::TestDatabase::sqlite();
                    super::$name(database.store().await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    let Some(database) = crate::support::db::TestDatabase::postgres().await else { return };
                    super::$name(database.store().await).await;
                }
            )*
        }
    };
}

conformance!(
    bootstrap_happens_once,
    users_are_unique_per_organization_and_announced,
    api_keys_are_found_by_hash_filtered_and_revoked,
    key_usage_accumulates,
    webhooks_are_created_updated_rotated_and_deleted,
    events_are_written_in_batches_with_idempotency,
    events_are_listed_newest_first_with_a_cursor,
    unpublished_events_are_found_and_marked,
    a_relay_claim_keeps_other_relays_off_until_it_ends,
    the_outbox_backlog_counts_unpublished_events,
    an_event_for_one_webhook_keeps_its_webhook,
    deliveries_are_created_once_and_claimed_when_due,
    outcomes_are_recorded_and_disable_failing_webhooks,
    deliveries_can_be_redriven_and_replayed,
    a_claim_is_extended_only_while_it_holds,
    timestamps_round_trip_exactly,
    a_reused_idempotency_key_is_told_apart_from_a_repeat,
    outcomes_are_timed_at_the_end_of_the_attempt,
    outcomes_keep_statistics_and_announce_operational_events,
    an_outcome_writes_the_delivery_it_creates_once,
);

fn at(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000 + seconds, 123_456_000).expect("valid time")
}

struct Fixture {
    organization: Uuid,
    admin: Uuid,
}

async fn fixture(store: &DynStore) -> Fixture {
    // A fresh name each time: bootstrap refuses a second organization of one name (issue 11).
    let name = format!("acme-{}", Uuid::now_v7().simple());
    let (bootstrap, _) = herald::app::bootstrap(store, &name, "admin@acme.test", false)
        .await
        .expect("bootstrap")
        .expect("created");
    Fixture { organization: bootstrap.organization.id, admin: bootstrap.admin.id }
}

fn new_event(organization: Uuid, event_type: &str, key: Option<&str>, created_at: DateTime<Utc>) -> NewEvent {
    let id = Uuid::now_v7();
    NewEvent {
        id,
        organization_id: organization,
        event_type: event_type.into(),
        payload: format!(r#"{{"id":"{id}","event":"{event_type}","data":{{}}}}"#),
        idempotency_key: key.map(String::from),
        request_hash: None,
        created_at,
        only_webhook: None,
    }
}

fn sealed(tag: &str) -> Sealed {
    Sealed { key_id: "k1".into(), ciphertext: tag.as_bytes().to_vec() }
}

async fn webhook(store: &DynStore, organization: Uuid, events: &str) -> Webhook {
    store
        .create_webhook(&NewWebhook {
            id: Uuid::now_v7(),
            organization_id: organization,
            url: "https://example.com/hook".into(),
            events: events.into(),
            secret: sealed("secret"),
            description: Some("test".into()),
            created_at: at(0),
        })
        .await
        .expect("webhook created")
}

async fn bootstrap_happens_once(store: DynStore) {
    let first = herald::app::bootstrap(&store, "default", "admin@localhost", true).await.expect("bootstrap");
    assert!(first.is_some(), "the first bootstrap creates the organization");
    let second = herald::app::bootstrap(&store, "default", "admin@localhost", true).await.expect("bootstrap");
    assert!(second.is_none(), "an existing organization prevents a second automatic bootstrap");
    let (created, key) = first.expect("created");
    let owner = store.find_key_by_hash(&key.hash()).await.expect("lookup").expect("found");
    assert_eq!(owner.key.user_id, created.admin.id);
    assert_eq!(owner.user_role, Role::Admin);
    assert!(owner.organization_is_active && owner.user_is_active);
}

async fn users_are_unique_per_organization_and_announced(store: DynStore) {
    let f = fixture(&store).await;
    let user = NewUser {
        id: Uuid::now_v7(),
        organization_id: f.organization,
        email: "member@acme.test".into(),
        name: Some("Member".into()),
        role: Role::Member,
        created_at: at(1),
    };
    let announcement = new_event(f.organization, "user.added", None, at(1));
    let created = store.create_user(&user, Some(&announcement)).await.expect("created");
    assert_eq!(created.role, Role::Member);
    assert_eq!(created.name.as_deref(), Some("Member"));
    let stored_event =
        store.get_event(announcement.id).await.expect("read").expect("the user.added event exists");
    assert_eq!(stored_event.event_type, "user.added");
    assert!(stored_event.published_at.is_none());

    let duplicate = NewUser { id: Uuid::now_v7(), ..user.clone() };
    let again = new_event(f.organization, "user.added", None, at(2));
    let error = store.create_user(&duplicate, Some(&again)).await.expect_err("same email twice");
    assert!(matches!(error, StoreError::Conflict(_)), "{error:?}");
    assert!(store.get_event(again.id).await.expect("read").is_none(), "the failed user's event rolled back");

    let users = store.list_users(f.organization, Page::ALL).await.expect("list");
    assert_eq!(
        users.iter().map(|u| u.email.as_str()).collect::<Vec<_>>(),
        vec!["admin@acme.test", "member@acme.test"]
    );
    store.set_organization_active(f.organization, false).await.expect("deactivate");
    assert!(!store.get_organization(f.organization).await.expect("read").expect("exists").is_active);
}

async fn api_keys_are_found_by_hash_filtered_and_revoked(store: DynStore) {
    let f = fixture(&store).await;
    let secret = domain::ApiKeySecret::generate();
    let key = store
        .create_api_key(&NewApiKey {
            id: Uuid::now_v7(),
            organization_id: f.organization,
            user_id: f.admin,
            key_hash: secret.hash(),
            prefix: secret.hint(),
            name: "zap".into(),
            purpose: KeyPurpose::GoogleSheets,
            expires_at: Some(at(3600)),
            created_at: at(5),
        })
        .await
        .expect("created");
    assert_eq!(key.purpose, KeyPurpose::GoogleSheets);
    assert_eq!(key.expires_at, Some(at(3600)));
    let owner = store.find_key_by_hash(&secret.hash()).await.expect("lookup").expect("found");
    assert_eq!(owner.key, key);
    assert!(
        store.find_key_by_hash(&domain::ApiKeySecret::generate().hash()).await.expect("lookup").is_none()
    );

    let all = ApiKeyQuery { organization_id: f.organization, ..ApiKeyQuery::default() };
    assert_eq!(store.list_api_keys(&all).await.expect("list").len(), 2, "bootstrap key and the new one");
    store
        .record_key_usage(&[KeyUsage { key_id: key.id, requests: 3, last_used_at: at(100) }])
        .await
        .expect("usage");
    let used_from = ApiKeyQuery { used_from: Some(at(50)), ..all.clone() };
    let listed = store.list_api_keys(&used_from).await.expect("list");
    assert_eq!(listed.iter().map(|k| k.id).collect::<Vec<_>>(), vec![key.id], "only used keys match a bound");
    let used_to = ApiKeyQuery { used_to: Some(at(99)), ..all.clone() };
    assert!(store.list_api_keys(&used_to).await.expect("list").is_empty());
    let other_user = ApiKeyQuery { user_id: Some(Uuid::now_v7()), ..all.clone() };
    assert!(store.list_api_keys(&other_user).await.expect("list").is_empty());

    assert!(store.revoke_api_key(key.id, at(200)).await.expect("revoke"));
    assert!(!store.revoke_api_key(key.id, at(201)).await.expect("revoke twice"), "a key is revoked once");
    let revoked = store.get_api_key(key.id).await.expect("read").expect("still stored");
    assert_eq!(revoked.revoked_at, Some(at(200)));
    assert!(!revoked.is_active);
    assert_eq!(store.list_api_keys(&all).await.expect("list").len(), 1, "revoked keys are not listed");
}

async fn key_usage_accumulates(store: DynStore) {
    let f = fixture(&store).await;
    let keys =
        store.list_api_keys(&ApiKeyQuery { organization_id: f.organization, ..Default::default() }).await;
    let key_id = keys.expect("list")[0].id;
    store.record_key_usage(&[KeyUsage { key_id, requests: 2, last_used_at: at(20) }]).await.expect("usage");
    store.record_key_usage(&[KeyUsage { key_id, requests: 5, last_used_at: at(10) }]).await.expect("usage");
    let key = store.get_api_key(key_id).await.expect("read").expect("exists");
    assert_eq!(key.total_requests, 7);
    assert_eq!(key.last_used_at, Some(at(20)), "last_used_at never moves back");
    store.record_key_usage(&[]).await.expect("an empty batch is fine");
}

async fn webhooks_are_created_updated_rotated_and_deleted(store: DynStore) {
    let f = fixture(&store).await;
    let hook = webhook(&store, f.organization, "item.created").await;
    assert!(hook.is_active);
    assert_eq!(hook.secret_ciphertext, b"secret");
    let other_org = fixture(&store).await;
    webhook(&store, other_org.organization, "*").await;
    assert_eq!(store.list_webhooks(f.organization, Page::ALL).await.expect("list"), vec![hook.clone()]);

    let disabled = WebhookChanges {
        is_active: Some(false),
        disabled_reason: Some("disabled by an admin".into()),
        description: Some(None),
        updated_at: at(10),
        ..WebhookChanges::default()
    };
    let updated = store.update_webhook(hook.id, &disabled).await.expect("update").expect("exists");
    assert!(!updated.is_active);
    assert_eq!(updated.disabled_reason.as_deref(), Some("disabled by an admin"));
    assert_eq!(updated.description, None);
    assert!(store.active_webhooks(f.organization).await.expect("active").is_empty());
    let enabled = WebhookChanges {
        is_active: Some(true),
        url: Some("https://example.org/new".into()),
        events: Some("*".into()),
        updated_at: at(11),
        ..WebhookChanges::default()
    };
    let updated = store.update_webhook(hook.id, &enabled).await.expect("update").expect("exists");
    assert!(updated.is_active && updated.disabled_reason.is_none());
    assert_eq!((updated.url.as_str(), updated.events.as_str()), ("https://example.org/new", "*"));
    assert_eq!(updated.updated_at, at(11));

    let rotation = SecretRotation {
        secret: sealed("new"),
        previous: sealed("secret"),
        previous_expires_at: at(86_400),
        updated_at: at(12),
    };
    let rotated = store.rotate_webhook_secret(hook.id, &rotation).await.expect("rotate").expect("exists");
    assert_eq!(rotated.secret_ciphertext, b"new");
    assert_eq!(rotated.previous_secret_ciphertext.as_deref(), Some(&b"secret"[..]));
    assert_eq!(rotated.previous_secret_expires_at, Some(at(86_400)));

    let event = new_event(f.organization, "item.created", None, at(13));
    store.insert_events(std::slice::from_ref(&event), at(0)).await.expect("event");
    let delivery = new_delivery(&event, hook.id, at(13));
    store.create_deliveries(std::slice::from_ref(&delivery)).await.expect("delivery");
    assert!(store.delete_webhook(hook.id).await.expect("delete"));
    assert!(!store.delete_webhook(hook.id).await.expect("delete twice"));
    assert!(
        store.get_delivery(delivery.id).await.expect("read").is_none(),
        "deliveries go with their webhook"
    );
    assert!(store.update_webhook(hook.id, &enabled).await.expect("update").is_none());
}

async fn events_are_written_in_batches_with_idempotency(store: DynStore) {
    let f = fixture(&store).await;
    let first = new_event(f.organization, "item.created", Some("order-1"), at(0));
    let plain = new_event(f.organization, "item.updated", None, at(0));
    let same_key_in_batch = new_event(f.organization, "item.created", Some("order-1"), at(0));
    let outcomes = store
        .insert_events(&[first.clone(), plain.clone(), same_key_in_batch], at(-86_400))
        .await
        .expect("insert");
    assert_eq!(outcomes.len(), 3);
    assert_eq!((outcomes[0].id, outcomes[0].duplicate), (first.id, false));
    assert_eq!((outcomes[1].id, outcomes[1].duplicate), (plain.id, false));
    assert_eq!((outcomes[2].id, outcomes[2].duplicate), (first.id, true), "the same key in one batch");

    let retry = new_event(f.organization, "item.created", Some("order-1"), at(60));
    let outcome = &store.insert_events(std::slice::from_ref(&retry), at(-86_400)).await.expect("insert")[0];
    assert_eq!((outcome.id, outcome.duplicate, outcome.created_at), (first.id, true, at(0)));
    assert!(store.get_event(retry.id).await.expect("read").is_none(), "a duplicate writes nothing");

    let other_org = fixture(&store).await;
    let elsewhere = new_event(other_org.organization, "item.created", Some("order-1"), at(60));
    let outcome =
        &store.insert_events(std::slice::from_ref(&elsewhere), at(-86_400)).await.expect("insert")[0];
    assert!(!outcome.duplicate, "idempotency keys are per organization");

    let after_window = new_event(f.organization, "item.created", Some("order-1"), at(90_000));
    let outcome = &store.insert_events(std::slice::from_ref(&after_window), at(1)).await.expect("insert")[0];
    assert_eq!((outcome.id, outcome.duplicate), (after_window.id, false), "an expired key is used anew");

    let expiring = new_event(f.organization, "item.deleted", Some("order-2"), at(100));
    store.insert_events(std::slice::from_ref(&expiring), at(0)).await.expect("insert");
    // Keys used before t=200: the other organization's (t=60) and this one (t=100).
    assert_eq!(store.expire_idempotency_keys(at(200)).await.expect("expire"), 2);
    assert!(store.get_event(expiring.id).await.expect("read").expect("kept").idempotency_key.is_none());
    assert_eq!(store.insert_events(&[], at(0)).await.expect("empty batch"), vec![]);
}

async fn events_are_listed_newest_first_with_a_cursor(store: DynStore) {
    let f = fixture(&store).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let event_type = if i % 2 == 0 { "item.created" } else { "comment.created" };
        let event = new_event(f.organization, event_type, None, at(i));
        store.insert_events(std::slice::from_ref(&event), at(0)).await.expect("insert");
        ids.push(event.id);
    }
    let query = |before, event_type: Option<&str>, from, to, limit| EventQuery {
        organization_id: f.organization,
        event_type: event_type.map(String::from),
        from,
        to,
        before,
        limit,
    };
    let page = store.list_events(&query(None, None, None, None, 2)).await.expect("list");
    assert_eq!(page.iter().map(|e| e.id).collect::<Vec<_>>(), vec![ids[4], ids[3]]);
    let next = store.list_events(&query(Some(ids[3]), None, None, None, 10)).await.expect("list");
    assert_eq!(next.iter().map(|e| e.id).collect::<Vec<_>>(), vec![ids[2], ids[1], ids[0]]);
    let typed = store.list_events(&query(None, Some("comment.created"), None, None, 10)).await.expect("list");
    assert_eq!(typed.iter().map(|e| e.id).collect::<Vec<_>>(), vec![ids[3], ids[1]]);
    let ranged = store.list_events(&query(None, None, Some(at(1)), Some(at(3)), 10)).await.expect("list");
    assert_eq!(ranged.iter().map(|e| e.id).collect::<Vec<_>>(), vec![ids[3], ids[2], ids[1]]);
    let other = fixture(&store).await;
    let none = store
        .list_events(&EventQuery { organization_id: other.organization, ..query(None, None, None, None, 10) })
        .await
        .expect("list");
    assert!(none.is_empty(), "events are per organization");
}

/// Unpublished events created at or before `created_before`, as a relay of its own whose claim ends at
/// once (so that the next call finds them again).
async fn unpublished<S: EventStore + ?Sized>(
    store: &std::sync::Arc<S>,
    created_before: DateTime<Utc>,
    limit: i64,
) -> StoreResult<Vec<Event>> {
    let claim = RelayClaim { by: Uuid::now_v7(), created_before, now: at(0), until: at(0), limit };
    store.claim_unpublished_events(&claim).await
}

async fn a_relay_claim_keeps_other_relays_off_until_it_ends(store: DynStore) {
    let f = fixture(&store).await;
    let old = new_event(f.organization, "item.created", None, at(0));
    store.insert_events(std::slice::from_ref(&old), at(0)).await.expect("insert");
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    let claim = |by, now: i64, until: i64| RelayClaim {
        by,
        created_before: at(50),
        now: at(now),
        until: at(until),
        limit: 10,
    };
    let ids = |events: Vec<Event>| events.into_iter().map(|e| e.id).collect::<Vec<_>>();
    let claimed = |c: RelayClaim| {
        let store = store.clone();
        async move { ids(store.claim_unpublished_events(&c).await.expect("claim")) }
    };
    assert_eq!(claimed(claim(a, 60, 65)).await, vec![old.id], "relay a claims it");
    assert_eq!(claimed(claim(b, 61, 66)).await, Vec::<Uuid>::new(), "relay b leaves a's claim alone");
    assert_eq!(claimed(claim(a, 62, 67)).await, Vec::<Uuid>::new(), "and so do a's next passes");
    store.release_relay_claims(b, &[old.id]).await.expect("release");
    assert_eq!(claimed(claim(b, 63, 68)).await, Vec::<Uuid>::new(), "only a can release a's claim");
    store.release_relay_claims(a, &[old.id]).await.expect("release");
    assert_eq!(claimed(claim(b, 64, 69)).await, vec![old.id], "released, b takes it");
    assert_eq!(claimed(claim(a, 69, 74)).await, vec![old.id], "and anyone once b's claim has ended");
    store.mark_events_published(&[old.id], at(68)).await.expect("mark");
    assert_eq!(claimed(claim(a, 100, 105)).await, Vec::<Uuid>::new(), "published: no relay takes it");
}

async fn unpublished_events_are_found_and_marked(store: DynStore) {
    let f = fixture(&store).await;
    let old = new_event(f.organization, "item.created", None, at(0));
    let recent = new_event(f.organization, "item.created", None, at(100));
    store.insert_events(&[old.clone(), recent.clone()], at(0)).await.expect("insert");
    let due = unpublished(&store, at(50), 10).await.expect("unpublished");
    assert_eq!(due.iter().map(|e| e.id).collect::<Vec<_>>(), vec![old.id], "only events old enough");
    assert_eq!(due[0].payload, old.payload);
    store.mark_events_published(&[old.id, recent.id], at(101)).await.expect("mark");
    assert!(unpublished(&store, at(1000), 10).await.expect("unpublished").is_empty());
    assert_eq!(store.get_event(old.id).await.expect("read").expect("exists").published_at, Some(at(101)));
    store.mark_events_published(&[], at(0)).await.expect("empty");
}

async fn the_outbox_backlog_counts_unpublished_events(store: DynStore) {
    let f = fixture(&store).await;
    let earlier: Vec<Uuid> = unpublished(&store, at(1_000_000_000), 1000)
        .await
        .expect("unpublished")
        .iter()
        .map(|e| e.id)
        .collect();
    store.mark_events_published(&earlier, at(0)).await.expect("mark");
    assert_eq!(store.outbox_backlog().await.expect("backlog"), (0, None), "nothing unpublished");
    let old = new_event(f.organization, "item.created", None, at(0));
    let recent = new_event(f.organization, "item.created", None, at(100));
    store.insert_events(&[recent.clone(), old.clone()], at(0)).await.expect("insert");
    assert_eq!(store.outbox_backlog().await.expect("backlog"), (2, Some(at(0))));
    store.mark_events_published(&[old.id], at(101)).await.expect("mark");
    assert_eq!(store.outbox_backlog().await.expect("backlog"), (1, Some(at(100))), "the oldest left");
}

async fn an_event_for_one_webhook_keeps_its_webhook(store: DynStore) {
    let f = fixture(&store).await;
    let hook = webhook(&store, f.organization, "*").await;
    // Through the role alone, as a component holding only the events would.
    let events: std::sync::Arc<dyn EventStore> = store.clone();
    let targeted =
        NewEvent { only_webhook: Some(hook.id), ..new_event(f.organization, "webhook.test", None, at(0)) };
    let broadcast = new_event(f.organization, "item.created", None, at(1));
    events.insert_events(&[targeted.clone(), broadcast.clone()], at(0)).await.expect("insert");

    let due = unpublished(&events, at(10), 10).await.expect("unpublished");
    let targets: Vec<_> = due.iter().map(|e| (e.id, e.only_webhook)).collect();
    assert_eq!(targets, vec![(targeted.id, Some(hook.id)), (broadcast.id, None)]);
    let read = events.get_event(targeted.id).await.expect("read").expect("exists");
    assert_eq!(read.only_webhook, Some(hook.id));
    let listed = events
        .list_events(&EventQuery {
            organization_id: f.organization,
            event_type: Some("webhook.test".into()),
            from: None,
            to: None,
            before: None,
            limit: 10,
        })
        .await
        .expect("list");
    assert_eq!(listed.iter().map(|e| e.only_webhook).collect::<Vec<_>>(), vec![Some(hook.id)]);

    // The webhook goes; its events stay readable, and nothing stops one naming it.
    assert!(store.delete_webhook(hook.id).await.expect("delete"));
    let kept = events.get_event(targeted.id).await.expect("read").expect("kept");
    assert_eq!(kept.only_webhook, Some(hook.id));
    let late =
        NewEvent { only_webhook: Some(hook.id), ..new_event(f.organization, "webhook.test", None, at(2)) };
    let outcome = &events.insert_events(std::slice::from_ref(&late), at(0)).await.expect("insert")[0];
    assert!(!outcome.duplicate);
}

fn new_delivery(event: &NewEvent, webhook_id: Uuid, lease_until: DateTime<Utc>) -> NewDelivery {
    NewDelivery {
        id: Uuid::now_v7(),
        event_id: event.id,
        webhook_id,
        organization_id: event.organization_id,
        created_at: event.created_at,
        lease_until,
    }
}

async fn deliveries_are_created_once_and_claimed_when_due(store: DynStore) {
    let f = fixture(&store).await;
    let hook = webhook(&store, f.organization, "*").await;
    let event = new_event(f.organization, "item.created", None, at(0));
    store.insert_events(std::slice::from_ref(&event), at(0)).await.expect("event");
    let delivery = new_delivery(&event, hook.id, at(600));
    assert_eq!(
        store.create_deliveries(std::slice::from_ref(&delivery)).await.expect("create"),
        vec![delivery.id]
    );
    let again = new_delivery(&event, hook.id, at(600));
    assert!(store.create_deliveries(&[again]).await.expect("create").is_empty(), "unique on event + webhook");
    let unstarted = store.unstarted_deliveries(&[event.id]).await.expect("unstarted");
    assert_eq!(unstarted.iter().map(|d| d.id).collect::<Vec<_>>(), vec![delivery.id]);
    assert_eq!(unstarted[0].status, DeliveryStatus::Queued);

    assert!(store.claim_due_deliveries(at(599), at(1200), 10).await.expect("claim").is_empty(), "leased");
    let claimed = store.claim_due_deliveries(at(600), at(1200), 10).await.expect("claim");
    assert_eq!(claimed.len(), 1, "a queued delivery past its lease is handed over again");
    assert_eq!(claimed[0].payload, event.payload);
    assert_eq!((claimed[0].attempts, claimed[0].event_type.as_str()), (0, "item.created"));
    assert!(
        store.claim_due_deliveries(at(601), at(1200), 10).await.expect("claim").is_empty(),
        "claimed once"
    );

    store.release_deliveries(&[delivery.id], at(1100), at(700)).await.expect("release: another claim");
    let kept = store.get_delivery(delivery.id).await.expect("read").expect("exists");
    assert_eq!(
        (kept.status, kept.next_attempt_at),
        (DeliveryStatus::Queued, Some(at(1200))),
        "not this claim"
    );
    store.release_deliveries(&[delivery.id], at(1200), at(700)).await.expect("release");
    let released = store.get_delivery(delivery.id).await.expect("read").expect("exists");
    assert_eq!((released.status, released.next_attempt_at), (DeliveryStatus::Pending, Some(at(700))));
    assert_eq!(store.claim_due_deliveries(at(700), at(1300), 10).await.expect("claim").len(), 1);
    assert_eq!(store.requeue_all_queued(at(800)).await.expect("requeue"), 1);
    assert_eq!(store.claim_due_deliveries(at(800), at(1400), 10).await.expect("claim").len(), 1);
    // A saturated endpoint's delivery goes back to the store, due later, without an attempt counted.
    store.defer_deliveries(&[(delivery.id, at(5000))], at(801)).await.expect("defer");
    let deferred = store.get_delivery(delivery.id).await.expect("read").expect("exists");
    assert_eq!(
        (deferred.status, deferred.next_attempt_at, deferred.attempts),
        (DeliveryStatus::Pending, Some(at(5000)), 0)
    );
    assert!(
        store.claim_due_deliveries(at(4999), at(6000), 10).await.expect("claim").is_empty(),
        "not due yet"
    );
    assert_eq!(store.claim_due_deliveries(at(5000), at(6000), 10).await.expect("claim").len(), 1);
}

/// The scheduler's short claim, extended once the broker confirmed: only deliveries still in that very
/// claim are extended; an outcome recorded meanwhile, or a later claim, is left as it is.
async fn a_claim_is_extended_only_while_it_holds(store: DynStore) {
    let f = fixture(&store).await;
    let hook = webhook(&store, f.organization, "*").await;
    let (_, answered) = deliver(&store, &hook, f.organization, 0).await;
    let (_, in_flight) = deliver(&store, &hook, f.organization, 0).await;
    let ids = [answered.id, in_flight.id];
    assert_eq!(store.claim_due_deliveries(at(600), at(630), 10).await.expect("claim").len(), 2);
    // A fast worker records an outcome before the confirm arrives.
    let retry = outcome(&answered, 1, Some(500), NextStep::Retry(at(700)));
    store.record_outcomes(&[retry], &disable_after(0)).await.expect("recorded");
    assert_eq!(store.extend_claims(&ids, at(630), at(1200)).await.expect("extend"), 1, "the one in flight");
    let read = |id| {
        let store = store.clone();
        async move {
            let delivery = store.get_delivery(id).await.expect("read").expect("exists");
            (delivery.status, delivery.next_attempt_at)
        }
    };
    assert_eq!(read(answered.id).await, (DeliveryStatus::Pending, Some(at(700))), "the outcome stands");
    assert_eq!(read(in_flight.id).await, (DeliveryStatus::Queued, Some(at(1200))));
    assert_eq!(store.extend_claims(&ids, at(630), at(1800)).await.expect("extend"), 0, "that claim is over");
    let due = store.claim_due_deliveries(at(1199), at(1230), 10).await.expect("claim");
    assert_eq!(
        due.iter().map(|d| d.delivery_id).collect::<Vec<_>>(),
        vec![answered.id],
        "in flight: extended"
    );
}

async fn deliver(store: &DynStore, hook: &Webhook, organization: Uuid, t: i64) -> (NewEvent, NewDelivery) {
    let event = new_event(organization, "item.created", None, at(t));
    store.insert_events(std::slice::from_ref(&event), at(0)).await.expect("event");
    let delivery = new_delivery(&event, hook.id, at(t + 600));
    store.create_deliveries(std::slice::from_ref(&delivery)).await.expect("delivery");
    (event, delivery)
}

fn outcome(delivery: &NewDelivery, number: i64, status: Option<i64>, next: NextStep) -> AttemptOutcome {
    AttemptOutcome {
        attempt: Attempt {
            id: Uuid::now_v7(),
            delivery_id: delivery.id,
            attempt_number: number,
            started_at: at(number * 10),
            duration_ms: 12,
            status_code: status,
            response_body: Some("nope".into()),
            error: status.is_none().then(|| "connection refused".to_string()),
        },
        webhook_id: delivery.webhook_id,
        organization_id: delivery.organization_id,
        event_id: delivery.event_id,
        event_type: "item.created".into(),
        class: status.map_or(AttemptClass::Network, |code| {
            AttemptClass::of_status(u16::try_from(code).expect("a status"))
        }),
        next,
        creates_delivery: false,
    }
}

/// The workers' rules: disabling a webhook after `dead_in_a_row` dead deliveries (0 never), at once on
/// 410; operational events.
fn disable_after(dead_in_a_row: u32) -> herald::worker::RecordingRules {
    herald::worker::RecordingRules { disable: herald::worker::DisableRule::new(dead_in_a_row) }
}

async fn outcomes_are_recorded_and_disable_failing_webhooks(store: DynStore) {
    let f = fixture(&store).await;
    let hook = webhook(&store, f.organization, "*").await;
    let (_, first) = deliver(&store, &hook, f.organization, 0).await;
    let retry = outcome(&first, 1, Some(500), NextStep::Retry(at(30)));
    assert!(
        store
            .record_outcomes(std::slice::from_ref(&retry), &disable_after(2))
            .await
            .expect("record")
            .disabled
            .is_empty()
    );
    let pending = store.get_delivery(first.id).await.expect("read").expect("exists");
    assert_eq!(
        (pending.status, pending.attempts, pending.next_attempt_at),
        (DeliveryStatus::Pending, 1, Some(at(30)))
    );
    assert_eq!(pending.last_status_code, Some(500));
    // A stale duplicate of attempt 1 is logged but changes nothing.
    let stale = outcome(&first, 1, Some(200), NextStep::Succeeded);
    store.record_outcomes(&[stale], &disable_after(2)).await.expect("record");
    assert_eq!(
        store.get_delivery(first.id).await.expect("read").expect("exists").status,
        DeliveryStatus::Pending
    );
    let dead = outcome(&first, 2, None, NextStep::Dead);
    assert!(
        store.record_outcomes(&[dead], &disable_after(2)).await.expect("record").disabled.is_empty(),
        "one dead delivery of two"
    );
    let attempts = store.list_attempts(first.id).await.expect("attempts");
    assert_eq!(attempts.iter().map(|a| a.attempt_number).collect::<Vec<_>>(), vec![1, 1, 2]);
    assert_eq!(attempts[2].error.as_deref(), Some("connection refused"));
    let dead_delivery = store.get_delivery(first.id).await.expect("read").expect("exists");
    // Completed when the attempt ended: it started at t=20 and took 12 ms.
    assert_eq!(
        (dead_delivery.status, dead_delivery.completed_at),
        (DeliveryStatus::Dead, Some(at(20) + Duration::milliseconds(12)))
    );

    let (_, second) = deliver(&store, &hook, f.organization, 100).await;
    let disabled = store
        .record_outcomes(&[outcome(&second, 1, Some(500), NextStep::Dead)], &disable_after(2))
        .await
        .expect("record")
        .disabled;
    assert_eq!(disabled.len(), 1, "the second consecutive dead delivery disables the webhook");
    assert!(disabled[0].reason.contains("2 consecutive dead deliveries"), "{}", disabled[0].reason);
    let hook_now = store.get_webhook(hook.id).await.expect("read").expect("exists");
    assert!(!hook_now.is_active);

    let other = webhook(&store, f.organization, "*").await;
    let (_, third) = deliver(&store, &other, f.organization, 200).await;
    let (_, fourth) = deliver(&store, &other, f.organization, 300).await;
    store
        .record_outcomes(&[outcome(&third, 1, Some(500), NextStep::Dead)], &disable_after(2))
        .await
        .expect("record");
    store
        .record_outcomes(&[outcome(&fourth, 1, Some(200), NextStep::Succeeded)], &disable_after(2))
        .await
        .expect("record");
    assert_eq!(
        store.get_webhook(other.id).await.expect("read").expect("exists").consecutive_dead,
        0,
        "reset"
    );
    let (_, gone) = deliver(&store, &other, f.organization, 400).await;
    let reason = "the endpoint answered 410 Gone".to_string();
    let disabled = store
        .record_outcomes(&[outcome(&gone, 1, Some(410), NextStep::Dead)], &disable_after(0))
        .await
        .expect("record")
        .disabled;
    assert_eq!(disabled, vec![DisabledWebhook { webhook_id: other.id, reason }]);
    let succeeded = store.get_delivery(fourth.id).await.expect("read").expect("exists");
    assert_eq!((succeeded.status, succeeded.next_attempt_at), (DeliveryStatus::Succeeded, None));

    // An attempt finishing after its webhook (and so its delivery) was deleted is dropped, and does not
    // fail the other outcomes of its batch.
    let doomed = webhook(&store, f.organization, "*").await;
    let (_, orphan) = deliver(&store, &doomed, f.organization, 500).await;
    let (_, sibling) = deliver(&store, &other, f.organization, 600).await;
    assert!(store.delete_webhook(doomed.id).await.expect("delete"));
    store
        .record_outcomes(
            &[
                outcome(&orphan, 1, Some(200), NextStep::Succeeded),
                outcome(&sibling, 1, Some(200), NextStep::Succeeded),
            ],
            &disable_after(2),
        )
        .await
        .expect("an orphaned outcome is not an error");
    assert_eq!(
        store.get_delivery(sibling.id).await.expect("read").expect("exists").status,
        DeliveryStatus::Succeeded
    );
    assert!(store.list_attempts(orphan.id).await.expect("attempts").is_empty());
}

async fn deliveries_can_be_redriven_and_replayed(store: DynStore) {
    let f = fixture(&store).await;
    let hook = webhook(&store, f.organization, "*").await;
    let (_, queued) = deliver(&store, &hook, f.organization, 0).await;
    assert!(store.redrive_delivery(queued.id, at(5)).await.expect("redrive").is_none(), "queued already");
    let (_, dead) = deliver(&store, &hook, f.organization, 10).await;
    store
        .record_outcomes(&[outcome(&dead, 1, Some(500), NextStep::Dead)], &disable_after(0))
        .await
        .expect("r");
    let redriven = store.redrive_delivery(dead.id, at(50)).await.expect("redrive").expect("changed");
    assert_eq!(
        (redriven.status, redriven.next_attempt_at, redriven.attempts),
        (DeliveryStatus::Pending, Some(at(50)), 1)
    );

    let (_, old_dead) = deliver(&store, &hook, f.organization, 20).await;
    let (_, new_dead) = deliver(&store, &hook, f.organization, 1000).await;
    let (_, failing) = deliver(&store, &hook, f.organization, 30).await;
    for d in [&old_dead, &new_dead] {
        store
            .record_outcomes(&[outcome(d, 1, Some(500), NextStep::Dead)], &disable_after(0))
            .await
            .expect("r");
    }
    store
        .record_outcomes(&[outcome(&failing, 1, Some(500), NextStep::Retry(at(9999)))], &disable_after(0))
        .await
        .expect("r");
    let filter = ReplayFilter {
        organization_id: Some(f.organization),
        webhook_id: Some(hook.id),
        since: Some(at(15)),
        until: Some(at(500)),
        status: DeliveryStatus::Dead,
    };
    assert_eq!(
        store.replay_deliveries(&filter, at(2000)).await.expect("replay"),
        1,
        "only dead ones in range"
    );
    assert_eq!(store.get_delivery(old_dead.id).await.expect("r").expect("e").status, DeliveryStatus::Pending);
    assert_eq!(store.get_delivery(new_dead.id).await.expect("r").expect("e").status, DeliveryStatus::Dead);
    let dlq = store.list_dead_deliveries(Some(f.organization), None, 10).await.expect("dlq");
    assert_eq!(dlq.iter().map(|d| d.id).collect::<Vec<_>>(), vec![new_dead.id], "the one still dead");
    assert_eq!(store.list_dead_deliveries(None, Some(hook.id), 10).await.expect("dlq").len(), 1);
    assert!(store.list_dead_deliveries(Some(Uuid::now_v7()), None, 10).await.expect("dlq").is_empty());
    let failed = ReplayFilter { status: DeliveryStatus::Pending, since: None, until: None, ..filter };
    assert_eq!(
        store.replay_deliveries(&failed, at(2001)).await.expect("replay"),
        3,
        "failed ones wait no longer"
    );
    assert_eq!(store.get_delivery(failing.id).await.expect("r").expect("e").next_attempt_at, Some(at(2001)));

    let all = DeliveryQuery { organization_id: hook.organization_id, ..DeliveryQuery::default() };
    let page = store
        .list_deliveries(&DeliveryQuery {
            webhook_id: Some(hook.id),
            page: Page { cursor: None, limit: 2 },
            ..all.clone()
        })
        .await
        .expect("list");
    assert_eq!(page.len(), 2);
    assert!(page[0].id > page[1].id, "newest first");
    let rest = store
        .list_deliveries(&DeliveryQuery {
            webhook_id: Some(hook.id),
            page: Page { cursor: Some(page[1].id), limit: 10 },
            ..all.clone()
        })
        .await
        .expect("list");
    assert_eq!(rest.len(), 3);
    let dead_only = store
        .list_deliveries(&DeliveryQuery {
            webhook_id: Some(hook.id),
            status: Some(DeliveryStatus::Dead),
            ..all.clone()
        })
        .await
        .expect("list");
    assert_eq!(dead_only.iter().map(|d| d.id).collect::<Vec<_>>(), vec![new_dead.id]);
}

async fn timestamps_round_trip_exactly(store: DynStore) {
    let f = fixture(&store).await;
    // Whole seconds, milliseconds and microseconds must compare correctly once stored.
    let times = [
        DateTime::from_timestamp(1_800_000_000, 0).expect("t"),
        DateTime::from_timestamp(1_800_000_000, 500_000_000).expect("t"),
        DateTime::from_timestamp(1_800_000_000, 120_000).expect("t"),
        DateTime::from_timestamp(1_800_000_001, 1_000).expect("t"),
    ];
    for (i, created_at) in times.iter().enumerate() {
        let event = new_event(f.organization, "item.created", None, *created_at);
        store.insert_events(std::slice::from_ref(&event), at(0)).await.expect("insert");
        assert_eq!(
            store.get_event(event.id).await.expect("read").expect("exists").created_at,
            *created_at,
            "{i}"
        );
    }
    let ordered = unpublished(&store, times[3], 10).await.expect("list");
    let mut expected = times.to_vec();
    expected.sort();
    assert_eq!(ordered.iter().map(|e| e.created_at).collect::<Vec<_>>(), expected);
    let before_last = unpublished(&store, times[3] - Duration::microseconds(1), 10).await.expect("list");
    assert_eq!(before_last.len(), 3);
    assert_eq!(domain::now().timestamp_subsec_nanos() % 1000, 0, "now() keeps microseconds only");
}

async fn a_reused_idempotency_key_is_told_apart_from_a_repeat(store: DynStore) {
    let f = fixture(&store).await;
    let keyed = |event_type: &str, data: &str, t: i64| NewEvent {
        request_hash: Some(format!("{event_type} {data}")),
        ..new_event(f.organization, event_type, Some("order-9"), at(t))
    };
    let first = keyed("item.created", r#"{"n":1}"#, 0);
    // In one batch: the first use, an identical repeat, other data, another type.
    let batch = [
        first.clone(),
        keyed("item.created", r#"{"n":1}"#, 0),
        keyed("item.created", r#"{"n":2}"#, 0),
        keyed("item.updated", r#"{"n":1}"#, 0),
    ];
    let outcomes = store.insert_events(&batch, at(-86_400)).await.expect("insert");
    let seen: Vec<_> = outcomes.iter().map(|o| (o.id, o.duplicate, o.key_reused)).collect();
    assert_eq!(
        seen,
        vec![
            (first.id, false, false),
            (first.id, true, false),
            (first.id, true, true),
            (first.id, true, true)
        ]
    );
    // In a later batch, the same.
    let later = [keyed("item.created", r#"{"n":1}"#, 5), keyed("item.created", r#"{"n":3}"#, 5)];
    let outcomes = store.insert_events(&later, at(-86_400)).await.expect("insert");
    let seen: Vec<_> = outcomes.iter().map(|o| (o.id, o.duplicate, o.key_reused)).collect();
    assert_eq!(seen, vec![(first.id, true, false), (first.id, true, true)]);
    for event in batch.iter().skip(1).chain(&later) {
        assert!(store.get_event(event.id).await.expect("read").is_none(), "nothing else was written");
    }
}

async fn outcomes_are_timed_at_the_end_of_the_attempt(store: DynStore) {
    let f = fixture(&store).await;
    let hook = webhook(&store, f.organization, "*").await;
    let slow = |delivery: &NewDelivery, next: NextStep| {
        let mut outcome = outcome(delivery, 1, Some(200), next);
        outcome.attempt.duration_ms = 8002;
        outcome
    };
    let ended = at(10) + Duration::milliseconds(8002);
    let (_, succeeded) = deliver(&store, &hook, f.organization, 0).await;
    let (_, retried) = deliver(&store, &hook, f.organization, 1).await;
    let (_, dead) = deliver(&store, &hook, f.organization, 2).await;
    let outcomes = [
        slow(&succeeded, NextStep::Succeeded),
        slow(&retried, NextStep::Retry(at(60))),
        slow(&dead, NextStep::Dead),
    ];
    let disabled = store.record_outcomes(&outcomes, &disable_after(1)).await.expect("record").disabled;
    assert_eq!(disabled.len(), 1, "the dead delivery disables the webhook");
    for (delivery, completed) in [(&succeeded, Some(ended)), (&retried, None), (&dead, Some(ended))] {
        let stored = store.get_delivery(delivery.id).await.expect("read").expect("exists");
        assert_eq!((stored.updated_at, stored.completed_at), (ended, completed), "{:?}", stored.status);
        let attempts = store.list_attempts(delivery.id).await.expect("attempts");
        assert_eq!(
            (attempts[0].started_at, attempts[0].duration_ms),
            (at(10), 8002),
            "the attempt keeps its start"
        );
    }
    let dead_list = store.list_dead_deliveries(Some(f.organization), None, 10).await.expect("dead");
    assert_eq!(dead_list[0].updated_at, ended, "the DLQ's died-at is the end of the last attempt");
    assert_eq!(store.get_webhook(hook.id).await.expect("read").expect("exists").updated_at, ended);
}

/// The rollups kept as outcomes are recorded, read back exactly; the operational events committed with
/// them (and none about a delivery of an operational event).
async fn outcomes_keep_statistics_and_announce_operational_events(store: DynStore) {
    let f = fixture(&store).await;
    let hook = webhook(&store, f.organization, "*").await;
    let mut deliveries = Vec::new();
    for t in 0..6 {
        deliveries.push(deliver(&store, &hook, f.organization, t).await.1);
    }
    let timed = |delivery: &NewDelivery, number, status, next, duration_ms| {
        let mut outcome = outcome(delivery, number, status, next);
        outcome.attempt.duration_ms = duration_ms;
        outcome
    };
    let mut timeout = timed(&deliveries[3], 1, None, NextStep::Retry(at(600)), 15_000);
    timeout.class = AttemptClass::Timeout;
    let first = [
        timed(&deliveries[0], 1, Some(200), NextStep::Succeeded, 3),
        timed(&deliveries[1], 1, Some(500), NextStep::Retry(at(600)), 40),
        timed(&deliveries[2], 1, None, NextStep::Retry(at(600)), 120),
        timeout,
    ];
    let recorded = store.record_outcomes(&first, &disable_after(0)).await.expect("record");
    assert!(recorded.announced.is_empty() && recorded.disabled.is_empty());
    let dead = timed(&deliveries[1], 2, Some(500), NextStep::Dead, 40);
    let recorded =
        store.record_outcomes(std::slice::from_ref(&dead), &disable_after(0)).await.expect("record");
    let types: Vec<&str> = recorded.announced.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, vec!["delivery.dead"]);
    let announced = &recorded.announced[0];
    let stored = store.get_event(announced.id).await.expect("read").expect("committed with the outcome");
    assert_eq!(stored.organization_id, f.organization);
    assert!(stored.payload.contains(&deliveries[1].id.to_string()), "{}", stored.payload);
    // A stale duplicate counts nothing.
    let stale = timed(&deliveries[0], 1, Some(200), NextStep::Succeeded, 3);
    store.record_outcomes(&[stale], &disable_after(0)).await.expect("record");

    let stats = |window, now| {
        let store = store.clone();
        async move {
            store.webhook_stats(f.organization, hook.id, window, now).await.expect("stats").expect("exists")
        }
    };
    let figures = stats(StatsWindow::Hour, at(100)).await;
    assert_eq!((figures.attempts, figures.succeeded, figures.success_ratio), (5, 1, Some(0.2)));
    assert_eq!(
        figures.status_classes,
        ClassCounts { status_2xx: 1, status_5xx: 2, network_error: 1, timeout: 1, ..ClassCounts::default() }
    );
    assert_eq!(figures.latency, Some(LatencyPercentiles { p50_ms: 50, p95_ms: 15_000, p99_ms: 15_000 }));
    assert_eq!((figures.consecutive_failures, figures.state), (4, WebhookState::Failing));
    assert_eq!(figures.last_success_at, Some(at(10) + Duration::milliseconds(3)));
    assert_eq!(figures.last_failure_at, Some(at(20) + Duration::milliseconds(40)));
    assert_eq!(figures.last_status_code, Some(500));
    let later = stats(StatsWindow::Hour, at(7200)).await;
    assert_eq!((later.attempts, later.success_ratio, later.latency), (0, None, None), "outside the window");
    assert_eq!(stats(StatsWindow::Day, at(7200)).await.attempts, 5);

    // The webhook's deliveries had died: a success is its recovery.
    let success = timed(&deliveries[4], 1, Some(200), NextStep::Succeeded, 3);
    let recorded = store.record_outcomes(&[success], &disable_after(0)).await.expect("record");
    let types: Vec<&str> = recorded.announced.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, vec!["webhook.recovered"]);
    let figures = stats(StatsWindow::Hour, at(100)).await;
    assert_eq!((figures.consecutive_failures, figures.state), (0, WebhookState::Failing), "2 of 6 succeeded");

    // An operational event's dead delivery announces nothing (the loop rule); a 410 disables.
    let mut about_dead = timed(&deliveries[5], 1, Some(500), NextStep::Dead, 3);
    about_dead.event_type = "delivery.dead".into();
    let recorded = store.record_outcomes(&[about_dead], &disable_after(0)).await.expect("record");
    assert!(recorded.announced.is_empty(), "{:?}", recorded.announced);
    let (_, gone) = deliver(&store, &hook, f.organization, 7).await;
    let recorded = store
        .record_outcomes(&[timed(&gone, 1, Some(410), NextStep::Dead, 3)], &disable_after(0))
        .await
        .expect("r");
    let types: Vec<&str> = recorded.announced.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, vec!["delivery.dead", "webhook.disabled"]);
    let figures = stats(StatsWindow::Week, at(100)).await;
    assert_eq!((figures.attempts, figures.state), (8, WebhookState::Disabled));
    assert!(figures.disabled_reason.as_deref().is_some_and(|r| r.contains("410")), "{figures:?}");
    let series = store.organization_series(f.organization, at(0)).await.expect("series");
    assert_eq!(series.len(), 1, "every attempt ended in the first minute: {series:?}");
    assert_eq!(
        (series[0].minute, series[0].attempts, series[0].succeeded),
        (DateTime::from_timestamp(1_800_000_000, 0).expect("a time"), 8, 2)
    );
    let other = fixture(&store).await;
    assert!(
        store
            .webhook_stats(other.organization, hook.id, StatsWindow::Hour, at(0))
            .await
            .expect("s")
            .is_none()
    );
}

/// A first attempt handed over before its delivery was stored: its outcome writes the delivery with its
/// state (and counts in the statistics); one whose delivery was stored meanwhile moves it on; a repeat
/// changes nothing; one whose webhook is gone writes nothing and fails nothing.
async fn an_outcome_writes_the_delivery_it_creates_once(store: DynStore) {
    let f = fixture(&store).await;
    let hook = webhook(&store, f.organization, "*").await;
    let creating = |event: &NewEvent, webhook_id, status, next| {
        let delivery = NewDelivery {
            id: domain::delivery_id(event.id, webhook_id),
            ..new_delivery(event, webhook_id, at(600))
        };
        let mut outcome = outcome(&delivery, 1, status, next);
        outcome.creates_delivery = true;
        (delivery, outcome)
    };
    let succeeded = new_event(f.organization, "item.created", None, at(0));
    let failed = new_event(f.organization, "item.created", None, at(1));
    let stored_meanwhile = new_event(f.organization, "item.created", None, at(2));
    store
        .insert_events(&[succeeded.clone(), failed.clone(), stored_meanwhile.clone()], at(0))
        .await
        .expect("events");
    let (ok, ok_outcome) = creating(&succeeded, hook.id, Some(200), NextStep::Succeeded);
    let (retried, retried_outcome) = creating(&failed, hook.id, Some(503), NextStep::Retry(at(40)));
    let (twin, twin_outcome) = creating(&stored_meanwhile, hook.id, Some(200), NextStep::Succeeded);
    store.create_deliveries(std::slice::from_ref(&twin)).await.expect("stored meanwhile");
    let outcomes = [ok_outcome.clone(), retried_outcome, twin_outcome];
    store.record_outcomes(&outcomes, &disable_after(0)).await.expect("record");

    let written = store.get_delivery(ok.id).await.expect("read").expect("written with its outcome");
    assert_eq!(
        (written.event_id, written.webhook_id, written.status, written.attempts, written.next_attempt_at),
        (succeeded.id, hook.id, DeliveryStatus::Succeeded, 1, None)
    );
    assert_eq!(written.last_status_code, Some(200));
    assert_eq!(written.completed_at, Some(at(10) + Duration::milliseconds(12)));
    let pending = store.get_delivery(retried.id).await.expect("read").expect("written");
    assert_eq!((pending.status, pending.next_attempt_at), (DeliveryStatus::Pending, Some(at(40))));
    let due = store.claim_due_deliveries(at(41), at(100), 10).await.expect("claim");
    assert_eq!(due.iter().map(|d| d.delivery_id).collect::<Vec<_>>(), vec![retried.id], "its retry is due");
    let moved = store.get_delivery(twin.id).await.expect("read").expect("exists");
    assert_eq!((moved.status, moved.attempts), (DeliveryStatus::Succeeded, 1), "moved on as any other");
    for delivery in [&ok, &retried, &twin] {
        assert_eq!(store.list_attempts(delivery.id).await.expect("attempts").len(), 1, "each attempt logged");
    }
    let figures = store.webhook_stats(f.organization, hook.id, StatsWindow::Hour, at(100)).await;
    let figures = figures.expect("stats").expect("exists");
    assert_eq!((figures.attempts, figures.succeeded), (3, 2), "every outcome counts once");

    // Written again (its answer was lost): the attempt's id conflicts, the delivery stays as it was.
    let again = store.record_outcomes(std::slice::from_ref(&ok_outcome), &disable_after(0)).await;
    assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
    let mut later = ok_outcome.clone();
    later.attempt.id = Uuid::now_v7();
    store.record_outcomes(&[later], &disable_after(0)).await.expect("a repeat is stale");
    assert_eq!(store.list_attempts(ok.id).await.expect("attempts").len(), 2, "logged, as any stale repeat");
    assert_eq!(store.get_delivery(ok.id).await.expect("read").expect("exists"), written, "changed nothing");

    // The webhook was deleted before the outcome was written: nothing is, and nothing fails.
    let doomed = webhook(&store, f.organization, "*").await;
    let orphaned = new_event(f.organization, "item.created", None, at(3));
    store.insert_events(std::slice::from_ref(&orphaned), at(0)).await.expect("event");
    let (orphan, orphan_outcome) = creating(&orphaned, doomed.id, Some(200), NextStep::Succeeded);
    assert!(store.delete_webhook(doomed.id).await.expect("delete"));
    store.record_outcomes(&[orphan_outcome], &disable_after(0)).await.expect("not an error");
    assert!(store.get_delivery(orphan.id).await.expect("read").is_none());
}
