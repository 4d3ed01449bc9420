//! Webhook subscriptions: CRUD, validation (event types, URLs and the SSRF policy, secrets),
//! authorization (admins only, other organizations' ids are 404), secret rotation and encryption at rest.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    in_both_modes,
    support::app::{Mode, TestApp},
};

in_both_modes!(
    create_read_update_delete,
    events_are_validated_and_normalised,
    urls_are_checked_against_the_ssrf_policy,
    secrets_are_checked_rotated_and_sealed,
    other_organizations_and_members_are_refused,
);

const HOOKS: &str = "/api/v1/webhooks";

pub async fn create_webhook(app: &TestApp, body: Value) -> Value {
    let (status, created) = app.admin(Method::POST, HOOKS, Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    created
}

async fn create_read_update_delete(mode: Mode) {
    let app = TestApp::spawn(mode).await;
    let created = create_webhook(
        &app,
        json!({"url": "https://hooks.example.com/in", "events": ["item.created"], "description": "CRM"}),
    )
    .await;
    assert_eq!(created["url"], "https://hooks.example.com/in");
    assert_eq!(created["events"], json!(["item.created"]));
    assert_eq!((created["is_active"].as_bool(), created["description"].as_str()), (Some(true), Some("CRM")));
    assert_eq!(created["organization_id"], app.organization_id.to_string());
    let id = created["id"].as_str().expect("id");

    let (status, read) = app.admin(Method::GET, &format!("{HOOKS}/{id}"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(read.get("secret").is_none(), "the secret is shown only at creation");
    assert_eq!(read["events"], json!(["item.created"]));
    let (_, list) = app.admin(Method::GET, HOOKS, None).await;
    assert_eq!((list["count"].as_u64(), &list["webhooks"][0]["id"]), (Some(1), &created["id"]));

    let (status, updated) = app
        .admin(
            Method::PATCH,
            &format!("{HOOKS}/{id}"),
            Some(json!({"url": "https://hooks.example.com/v2", "events": "*", "is_active": false, "description": null})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["url"], "https://hooks.example.com/v2");
    assert_eq!(updated["events"], json!(["*"]));
    assert_eq!(updated["is_active"], false);
    assert_eq!(updated["disabled_reason"], "disabled by an admin");
    assert!(updated["description"].is_null());
    let (_, enabled) =
        app.admin(Method::PATCH, &format!("{HOOKS}/{id}"), Some(json!({"is_active": true}))).await;
    assert_eq!((enabled["is_active"].as_bool(), enabled["disabled_reason"].is_null()), (Some(true), true));
    assert_eq!(enabled["url"], "https://hooks.example.com/v2", "absent fields stay");
    let (status, error) = app.admin(Method::PATCH, &format!("{HOOKS}/{id}"), Some(json!({}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");

    let (status, body) = app.admin(Method::DELETE, &format!("{HOOKS}/{id}"), None).await;
    assert_eq!((status, body["message"].as_str()), (StatusCode::OK, Some("webhook deleted")));
    let (status, error) = app.admin(Method::GET, &format!("{HOOKS}/{id}"), None).await;
    assert_eq!((status, error["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
    let (status, _) = app.admin(Method::GET, &format!("{HOOKS}/not-a-uuid"), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

async fn events_are_validated_and_normalised(mode: Mode) {
    let app = TestApp::spawn(mode).await;
    let created = create_webhook(
        &app,
        json!({"url": "https://a.example.com/", "events": "item.created, comment.created"}),
    )
    .await;
    assert_eq!(
        created["events"],
        json!(["comment.created", "item.created"]),
        "a comma-separated string is accepted"
    );
    let all = create_webhook(&app, json!({"url": "https://a.example.com/", "events": ["*"]})).await;
    assert_eq!(all["events"], json!(["*"]));
    for events in [json!(["item.exploded"]), json!("item.created,nope"), json!([]), json!(""), json!(42)] {
        let (status, error) = app
            .admin(Method::POST, HOOKS, Some(json!({"url": "https://a.example.com/", "events": events})))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{events}: {error}");
        if events != json!(42) {
            let message = error["error"].as_str().expect("message");
            assert!(
                message.contains("item.created") && message.contains("user.added"),
                "lists valid types: {message}"
            );
        }
    }
    let (status, _) = app.admin(Method::POST, HOOKS, Some(json!({"events": ["*"]}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "url is required");
}

async fn urls_are_checked_against_the_ssrf_policy(mode: Mode) {
    let app = TestApp::spawn_with(mode, |settings| settings.delivery.allow_private_targets = false).await;
    for url in [
        "http://hooks.example.com/in",
        "https://127.0.0.1/hook",
        "https://[::1]/hook",
        "https://[::ffff:127.0.0.1]/hook",
        "https://169.254.169.254/latest/meta-data/",
        "https://10.1.2.3/",
        "https://192.168.0.10/",
        "ftp://example.com/",
    ] {
        let (status, error) =
            app.admin(Method::POST, HOOKS, Some(json!({"url": url, "events": ["*"]}))).await;
        assert_eq!(
            (status, error["code"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("url_not_allowed")),
            "{url}"
        );
        assert!(error["error"].as_str().expect("message").contains("url"), "{error}");
    }
    for url in ["not a url", "/relative/path", ""] {
        let (status, error) =
            app.admin(Method::POST, HOOKS, Some(json!({"url": url, "events": ["*"]}))).await;
        assert_eq!((status, error["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_url")), "{url}");
    }
    create_webhook(&app, json!({"url": "https://8.8.8.8/hook", "events": ["*"]})).await;
    let created = create_webhook(&app, json!({"url": "https://hooks.example.com/in", "events": ["*"]})).await;
    let id = created["id"].as_str().expect("id");
    let (status, _) =
        app.admin(Method::PATCH, &format!("{HOOKS}/{id}"), Some(json!({"url": "https://127.0.0.1/"}))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "updates are checked too");
}

async fn secrets_are_checked_rotated_and_sealed(mode: Mode) {
    let app = TestApp::spawn(mode).await;
    let generated = create_webhook(&app, json!({"url": "https://a.example.com/", "events": ["*"]})).await;
    let secret = generated["secret"].as_str().expect("secret");
    use base64::Engine;
    let raw =
        base64::engine::general_purpose::STANDARD.decode(secret.strip_prefix("whsec_").expect("whsec_"));
    assert_eq!(raw.expect("base64").len(), 32);
    let given = create_webhook(
        &app,
        json!({"url": "https://a.example.com/", "events": ["*"], "secret": "my-own-secret-0123456789"}),
    )
    .await;
    assert_eq!(given["secret"], "my-own-secret-0123456789");
    for bad in ["short", "has spaces in the secret", "x".repeat(129).as_str()] {
        let (status, error) = app
            .admin(
                Method::POST,
                HOOKS,
                Some(json!({"url": "https://a.example.com/", "events": ["*"], "secret": bad})),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {error}");
        assert!(error["error"].as_str().expect("message").contains("secret"));
    }

    let id = generated["id"].as_str().expect("id");
    let before = chrono::Utc::now();
    let (status, rotated) = app.admin(Method::POST, &format!("{HOOKS}/{id}/rotate-secret"), None).await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let new_secret = rotated["secret"].as_str().expect("secret");
    assert!(new_secret.starts_with("whsec_") && new_secret != secret);
    let expires: chrono::DateTime<chrono::Utc> =
        rotated["previous_secret_expires_at"].as_str().expect("time").parse().expect("RFC 3339");
    let grace = expires - before;
    let day = chrono::Duration::hours(24);
    assert!(
        grace >= day - chrono::Duration::seconds(1) && grace <= day + chrono::Duration::seconds(30),
        "24 h"
    );
    let (status, rotated) = app
        .admin(
            Method::POST,
            &format!("{HOOKS}/{id}/rotate-secret"),
            Some(json!({"grace_period_seconds": 60})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let expires: chrono::DateTime<chrono::Utc> =
        rotated["previous_secret_expires_at"].as_str().expect("time").parse().expect("RFC 3339");
    assert!(expires - chrono::Utc::now() <= chrono::Duration::seconds(60));
    let (status, _) = app
        .admin(
            Method::POST,
            &format!("{HOOKS}/{id}/rotate-secret"),
            Some(json!({"grace_period_seconds": 999_999_999})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let stored = app.state.store.get_webhook(id.parse().expect("uuid")).await.expect("read").expect("exists");
    let previous = app
        .state
        .secrets
        .open(
            stored.previous_secret_key_id.as_deref().expect("key id"),
            stored.previous_secret_ciphertext.as_deref().expect("previous"),
            stored.id.as_bytes(),
        )
        .expect("opens");
    assert_eq!(previous, new_secret, "the secret before the last rotation keeps signing");

    let dump = app.store_dump();
    assert!(!dump.contains("whsec_"), "no webhook secret is stored in clear");
    assert!(!dump.contains("my-own-secret-0123456789"));
}

async fn other_organizations_and_members_are_refused(mode: Mode) {
    let app = TestApp::spawn(mode).await;
    let created = create_webhook(&app, json!({"url": "https://a.example.com/", "events": ["*"]})).await;
    let id = created["id"].as_str().expect("id");
    let (_, other) = herald::app::bootstrap(&app.state.store, "other", "boss@other.example", false)
        .await
        .expect("bootstrap")
        .expect("created");
    let other = other.expose().to_string();
    for (method, path, body) in [
        (Method::GET, format!("{HOOKS}/{id}"), None),
        (Method::PATCH, format!("{HOOKS}/{id}"), Some(json!({"is_active": false}))),
        (Method::DELETE, format!("{HOOKS}/{id}"), None),
        (Method::POST, format!("{HOOKS}/{id}/rotate-secret"), None),
    ] {
        let (status, _) = app.call(method.clone(), &path, Some(&other), body).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path} from another organization");
    }
    let (_, list) = app.call(Method::GET, HOOKS, Some(&other), None).await;
    assert_eq!(list["count"], 0);
    let (_, member) = app.user_with_key("member@test.example", "member").await;
    let (status, error) = app.call(Method::GET, HOOKS, Some(&member), None).await;
    assert_eq!((status, error["code"].as_str()), (StatusCode::FORBIDDEN, Some("forbidden")));
    let (status, _) = app
        .call(
            Method::POST,
            HOOKS,
            Some(&member),
            Some(json!({"url": "https://a.example.com/", "events": ["*"]})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) =
        app.call(Method::GET, &format!("{HOOKS}/{}", Uuid::now_v7()), Some(&member), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "members are refused before any lookup");
    let (status, _) = app.call(Method::GET, HOOKS, None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
