//! Finding things: every list endpoint pages through 250 rows with `limit=100` without a gap or a
//! duplicate, invalid limits and cursors are 400s, `GET /deliveries` filters, an event's deliveries
//! across webhooks. Rows are created through the store (the API would be slow for 250 of each).

use chrono::{DateTime, Duration, Utc};
use herald::{
    domain::{self, ApiKeySecret, KeyPurpose, Role},
    store::{NewApiKey, NewDelivery, NewEvent, NewUser},
};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use uuid::Uuid;

use crate::{
    in_both_modes,
    support::app::{Mode, TestApp},
};

in_both_modes!(
    webhooks_page_without_gap_or_duplicate,
    api_keys_page_without_gap_or_duplicate,
    users_page_without_gap_or_duplicate,
    events_page_without_gap_or_duplicate,
    deliveries_page_without_gap_or_duplicate,
    deliveries_are_found_by_filters,
    an_event_lists_its_deliveries_across_webhooks,
);

const ROWS: usize = 250;

/// Pages through `path` (which has a `?`) with `limit=100`; asserts page sizes 100, 100, ..., a final
/// `next_cursor` of null, and no id twice; returns the ids in order.
async fn page_through(app: &TestApp, path: &str, field: &str) -> Vec<String> {
    let (mut ids, mut cursor, mut pages) = (Vec::<String>::new(), None::<String>, 0);
    loop {
        let url = match &cursor {
            None => format!("{path}&limit=100"),
            Some(cursor) => format!("{path}&limit=100&cursor={cursor}"),
        };
        let (status, page) = app.admin(Method::GET, &url, None).await;
        assert_eq!(status, StatusCode::OK, "{url}: {page}");
        let rows = page[field].as_array().unwrap_or_else(|| panic!("{field} in {page}"));
        assert!(rows.len() <= 100, "{url}: {} rows", rows.len());
        ids.extend(rows.iter().map(|row| row["id"].as_str().expect("id").to_string()));
        pages += 1;
        assert!(pages <= 10, "{path} does not end");
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "{path}: an id on two pages");
    ids
}

/// Every list endpoint refuses a limit out of 1..=200 and a cursor that is not a UUID.
async fn refuses_bad_paging(app: &TestApp, path: &str) {
    for query in ["limit=0", "limit=201", "limit=ten", "limit=-1", "cursor=nope", "cursor="] {
        let url = format!("{path}&{query}");
        let (status, body) = app.admin(Method::GET, &url, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{url}: {body}");
        assert!(body["code"].is_string() && body["error"].is_string(), "{url}: {body}");
    }
}

/// Newest first: the ids (UUIDv7, time-ordered) decrease.
fn assert_newest_first(ids: &[String]) {
    assert!(ids.windows(2).all(|pair| pair[0] > pair[1]), "newest first");
}

fn assert_oldest_first(ids: &[String]) {
    assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "oldest first");
}

async fn webhooks_page_without_gap_or_duplicate(mode: Mode) {
    let app = TestApp::spawn(mode).await;
    let mut made = Vec::new();
    for _ in 0..ROWS {
        made.push(app.store_webhook("http://127.0.0.1:9/hook", |sealed| sealed).await.to_string());
    }
    let ids = page_through(&app, "/api/v1/webhooks?", "webhooks").await;
    assert_oldest_first(&ids);
    assert_eq!(ids, made, "every webhook once, oldest first");
    let (_, first) = app.admin(Method::GET, "/api/v1/webhooks?limit=100", None).await;
    assert_eq!((first["count"].as_u64(), first["total"].as_u64()), (Some(100), Some(ROWS as u64)));
    refuses_bad_paging(&app, "/api/v1/webhooks?").await;
}

async fn api_keys_page_without_gap_or_duplicate(mode: Mode) {
    let app = TestApp::spawn(mode).await;
    for _ in 0..ROWS {
        let secret = ApiKeySecret::generate();
        app.state
            .store
            .create_api_key(&NewApiKey {
                id: Uuid::now_v7(),
                organization_id: app.organization_id,
                user_id: app.admin_id,
                key_hash: secret.hash(),
                prefix: secret.hint(),
                name: "k".into(),
                purpose: KeyPurpose::Custom,
                expires_at: None,
                created_at: domain::now(),
            })
            .await
            .expect("key stored");
    }
    for path in ["/api/v1/api-keys?", "/api/v1/api-keys?scope=organization"] {
        let ids = page_through(&app, path, "keys").await;
        assert_eq!(ids.len(), ROWS + 1, "{path}: the 250 keys and the bootstrap key");
        assert_newest_first(&ids);
        let (_, first) = app.admin(Method::GET, &format!("{path}&limit=100"), None).await;
        assert_eq!(
            (first["count"].as_u64(), first["total"].as_u64()),
            (Some(100), Some(ROWS as u64 + 1)),
            "{path}"
        );
    }
    refuses_bad_paging(&app, "/api/v1/api-keys?").await;
}

async fn users_page_without_gap_or_duplicate(mode: Mode) {
    let app = TestApp::spawn(mode).await;
    for n in 0..ROWS {
        let user = NewUser {
            id: Uuid::now_v7(),
            organization_id: app.organization_id,
            email: format!("user{n}@test.example"),
            name: None,
            role: Role::Member,
            created_at: domain::now(),
        };
        app.state.store.create_user(&user, None).await.expect("user stored");
    }
    let ids = page_through(&app, "/api/v1/users?", "users").await;
    assert_eq!(ids.len(), ROWS + 1, "the 250 users and the bootstrap admin");
    assert_eq!(ids[0], app.admin_id.to_string(), "oldest first");
    assert_oldest_first(&ids);
    let (_, last) = app.admin(Method::GET, "/api/v1/users?limit=200", None).await;
    assert_eq!(last["total"].as_u64(), Some(ROWS as u64 + 1));
    refuses_bad_paging(&app, "/api/v1/users?").await;
}

/// `count` events of `event_type`, created at `created_at`, meant for no webhook (a webhook id that does
/// not exist), so the fan-out makes no delivery of its own.
fn events(app: &TestApp, count: usize, event_type: &str, created_at: DateTime<Utc>) -> Vec<NewEvent> {
    (0..count)
        .map(|_| {
            let id = Uuid::now_v7();
            NewEvent {
                id,
                organization_id: app.organization_id,
                event_type: event_type.into(),
                payload: domain::render_payload(id, event_type, created_at, app.organization_id, "{}"),
                idempotency_key: None,
                request_hash: None,
                created_at,
                only_webhook: Some(Uuid::now_v7()),
            }
        })
        .collect()
}

async fn store_events(app: &TestApp, events: &[NewEvent]) {
    app.state.store.insert_events(events, domain::now() - Duration::days(1)).await.expect("events stored");
}

/// Queued deliveries of `events` to `webhook`, created at `created_at` and leased for a day (no worker
/// touches them). Returns their ids.
async fn store_deliveries(
    app: &TestApp,
    webhook: Uuid,
    events: &[NewEvent],
    created_at: DateTime<Utc>,
) -> Vec<String> {
    let deliveries: Vec<NewDelivery> = events
        .iter()
        .map(|event| NewDelivery {
            id: Uuid::now_v7(),
            event_id: event.id,
            webhook_id: webhook,
            organization_id: app.organization_id,
            created_at,
            lease_until: domain::now() + Duration::days(1),
        })
        .collect();
    let made = app.state.store.create_deliveries(&deliveries).await.expect("deliveries stored");
    assert_eq!(made.len(), deliveries.len());
    deliveries.iter().map(|delivery| delivery.id.to_string()).collect()
}

async fn events_page_without_gap_or_duplicate(mode: Mode) {
    let app = TestApp::spawn(mode).await;
    let made = events(&app, ROWS, "item.created", domain::now());
    store_events(&app, &made).await;
    let ids = page_through(&app, "/api/v1/events?", "events").await;
    assert_eq!(ids.len(), ROWS);
    assert_newest_first(&ids);
    refuses_bad_paging(&app, "/api/v1/events?").await;
}

async fn deliveries_page_without_gap_or_duplicate(mode: Mode) {
    let app = TestApp::spawn(mode).await;
    let webhook = app.store_webhook("http://127.0.0.1:9/hook", |sealed| sealed).await;
    let made = events(&app, ROWS, "item.created", domain::now());
    store_events(&app, &made).await;
    let mut stored = store_deliveries(&app, webhook, &made, domain::now()).await;
    stored.sort();
    stored.reverse();
    for path in [format!("/api/v1/webhooks/{webhook}/deliveries?"), "/api/v1/deliveries?".to_string()] {
        let ids = page_through(&app, &path, "deliveries").await;
        assert_eq!(ids, stored, "{path}: every delivery once, newest first");
        refuses_bad_paging(&app, &path).await;
    }
}

async fn deliveries_are_found_by_filters(mode: Mode) {
    let app = TestApp::spawn(mode).await;
    let (a, b) = (
        app.store_webhook("http://127.0.0.1:9/a", |sealed| sealed).await,
        app.store_webhook("http://127.0.0.1:9/b", |sealed| sealed).await,
    );
    let (early, late) = (domain::now() - Duration::hours(2), domain::now() - Duration::hours(1));
    let created = events(&app, 3, "item.created", early);
    let deleted = events(&app, 2, "item.deleted", late);
    store_events(&app, &[created.clone(), deleted.clone()].concat()).await;
    let a_created = store_deliveries(&app, a, &created, early).await;
    let b_created = store_deliveries(&app, b, &created, early).await;
    let a_deleted = store_deliveries(&app, a, &deleted, late).await;
    // One delivery of b waits for a retry (tomorrow, so no worker takes it).
    let retrying = b_created[0].parse().expect("uuid");
    let tomorrow = domain::now() + Duration::days(1);
    app.state.store.defer_deliveries(&[(retrying, tomorrow)], domain::now()).await.expect("deferred");

    let find = |query: String| {
        let app = &app;
        async move {
            let (status, page) = app.admin(Method::GET, &format!("/api/v1/deliveries?{query}"), None).await;
            assert_eq!(status, StatusCode::OK, "{query}: {page}");
            let mut ids: Vec<String> = page["deliveries"]
                .as_array()
                .expect("deliveries")
                .iter()
                .map(|d| d["id"].as_str().expect("id").to_string())
                .collect();
            ids.sort();
            ids
        }
    };
    let sorted = |ids: Vec<&Vec<String>>| {
        let mut all: Vec<String> = ids.into_iter().flatten().cloned().collect();
        all.sort();
        all
    };
    assert_eq!(find(format!("webhook_id={a}")).await, sorted(vec![&a_created, &a_deleted]));
    assert_eq!(find(format!("webhook_id={b}")).await, sorted(vec![&b_created]));
    assert_eq!(find("event_type=item.deleted".into()).await, sorted(vec![&a_deleted]));
    assert_eq!(find("status=pending".into()).await, vec![retrying.to_string()]);
    assert_eq!(find(format!("status=queued&webhook_id={b}")).await, sorted(vec![&b_created[1..].to_vec()]));
    let middle = early + Duration::minutes(30);
    let until = format!("until={}", domain::format_timestamp(middle));
    let since = format!("since={}", domain::format_timestamp(middle));
    assert_eq!(find(until).await, sorted(vec![&a_created, &b_created]));
    assert_eq!(find(since.clone()).await, sorted(vec![&a_deleted]));
    assert_eq!(find(format!("{since}&event_type=item.created")).await, Vec::<String>::new());
    assert_eq!(find(String::new()).await.len(), 8, "no filter: every delivery of the organization");

    for bad in [
        "status=lost",
        "event_type=no.such.type",
        "since=yesterday",
        "webhook_id=42",
        "since=2030-01-02T00:00:00Z&until=2030-01-01T00:00:00Z",
    ] {
        let (status, body) = app.admin(Method::GET, &format!("/api/v1/deliveries?{bad}"), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert!(body["code"].is_string(), "{bad}: {body}");
    }
    let (_, member_key) = app.user_with_key("member@test.example", "member").await;
    let (status, _) = app.call(Method::GET, "/api/v1/deliveries", Some(&member_key), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "admins only, as every delivery endpoint");
}

async fn an_event_lists_its_deliveries_across_webhooks(mode: Mode) {
    let app = TestApp::spawn(mode).await;
    let (a, b) = (
        app.store_webhook("http://127.0.0.1:9/a", |sealed| sealed).await,
        app.store_webhook("http://127.0.0.1:9/b", |sealed| sealed).await,
    );
    let made = events(&app, 2, "item.created", domain::now());
    store_events(&app, &made).await;
    let to_a = store_deliveries(&app, a, &made[..1], domain::now()).await;
    let to_b = store_deliveries(&app, b, &made, domain::now()).await;
    let event = made[0].id;
    let path = format!("/api/v1/events/{event}/deliveries?");
    let (status, page) = app.admin(Method::GET, &path, None).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let found: Vec<(&str, &str)> = page["deliveries"]
        .as_array()
        .expect("deliveries")
        .iter()
        .map(|d| (d["id"].as_str().expect("id"), d["webhook_id"].as_str().expect("webhook")))
        .collect();
    let (b_id, a_id) = (b.to_string(), a.to_string());
    assert_eq!(
        found,
        vec![(to_b[0].as_str(), b_id.as_str()), (to_a[0].as_str(), a_id.as_str())],
        "newest first"
    );
    assert_eq!(page["next_cursor"], Value::Null);
    refuses_bad_paging(&app, &path).await;

    let (status, body) =
        app.admin(Method::GET, &format!("/api/v1/events/{}/deliveries", Uuid::now_v7()), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (_, other_key) = herald::app::bootstrap(&app.state.store, "other org", "other@test.example", false)
        .await
        .expect("bootstrap")
        .expect("created");
    let (status, body) = app.call(Method::GET, &path, Some(other_key.expose()), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "another organization's event: {body}");
}
