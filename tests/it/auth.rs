//! Authentication, API keys and users: seed 004's contract word for word, the authorization matrix, one
//! distinct 401 per way a credential can be bad, usage counting, rate limits, and keys stored only as
//! hashes.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    in_both_modes,
    support::{
        app::{Mode, TestApp, jwt, jwt_with},
        json_of,
    },
};

in_both_modes!(
    create_list_and_revoke_follow_seed_004,
    create_rejects_bad_requests,
    list_rejects_bad_queries,
    delete_answers_400_403_404,
    every_bad_credential_has_its_own_401,
    revocation_takes_effect_at_once,
    members_admins_service_role_and_other_organizations,
    users_are_admin_only_and_announced,
    usage_is_counted_and_filtered,
    rate_limit_answers_429_with_retry_after,
    jwt_users_authenticate,
    no_plaintext_key_is_stored,
);

const KEYS: &str = "/api/v1/api-keys";

fn service_jwt() -> String {
    jwt(&json!({"role": "service_role", "iss": "supabase", "exp": chrono::Utc::now().timestamp() + 600}))
}

async fn create_list_and_revoke_follow_seed_004(mode: Mode) {
    let app = TestApp::spawn(mode).await;
    let (status, created) =
        app.admin(Method::POST, KEYS, Some(json!({"name": "My Production Key", "purpose": "zapier"}))).await;
    assert_eq!(status, StatusCode::CREATED);
    for field in ["id", "user_id", "key", "name", "purpose", "created_at"] {
        assert!(created.get(field).is_some(), "{field} in {created}");
    }
    assert_eq!(created["user_id"], app.admin_id.to_string());
    assert_eq!(created["name"], "My Production Key");
    assert_eq!(created["purpose"], "zapier");
    assert!(created["key"].as_str().expect("key").starts_with("sk_live_"));
    assert!(created["expires_at"].is_null());

    let (status, list) = app.admin(Method::GET, KEYS, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["count"], 2, "the bootstrap key and the new one: {list}");
    let listed = &list["keys"].as_array().expect("keys")[0];
    assert_eq!(listed["id"], created["id"]);
    for field in [
        "id",
        "name",
        "purpose",
        "last_used_at",
        "total_requests",
        "created_at",
        "is_active",
        "prefix",
        "expires_at",
    ] {
        assert!(listed.get(field).is_some(), "{field} in {listed}");
    }
    assert!(listed.get("key").is_none(), "the plaintext key is never listed");
    assert_eq!(listed["total_requests"], 0);
    assert_eq!(listed["is_active"], true);
    assert!(created["key"].as_str().expect("key").starts_with(listed["prefix"].as_str().expect("prefix")));

    let id = created["id"].as_str().expect("id");
    let (status, body) = app.admin(Method::DELETE, &format!("{KEYS}/{id}"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"message": "API key revoked successfully"}));
    let (_, list) = app.admin(Method::GET, KEYS, None).await;
    assert_eq!(list["count"], 1, "revoked keys are not listed");

    let expires = (chrono::Utc::now() + chrono::Duration::days(30)).to_rfc3339();
    let (status, created) = app
        .admin(
            Method::POST,
            KEYS,
            Some(json!({"name": "sheet", "purpose": "google sheets", "expires_at": expires})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert!(created["expires_at"].is_string());
}

async fn create_rejects_bad_requests(mode: Mode) {
    let app = TestApp::spawn(mode).await;
    let past = (chrono::Utc::now() - chrono::Duration::minutes(1)).to_rfc3339();
    for (body, needle) in [
        (json!({"name": "k", "purpose": "slack"}), "purpose"),
        (json!({"purpose": "zapier"}), "name"),
        (json!({"name": "  ", "purpose": "zapier"}), "name"),
        (json!({"name": "x".repeat(101), "purpose": "zapier"}), "name"),
        (json!({"name": "k", "purpose": "n8n", "expires_at": past}), "expires_at"),
        (json!({"name": "k", "purpose": "n8n", "expires_at": "tomorrow"}), "expires_at"),
        (json!(["not", "an", "object"]), "invalid request body"),
    ] {
        let (status, error) = app.admin(Method::POST, KEYS, Some(body.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(error["error"].as_str().expect("message").contains(needle), "{body} -> {error}");
        assert!(error["code"].is_string());
    }
    let response = app
        .client
        .post(app.url(KEYS))
        .bearer_auth(&app.admin_key)
        .header("Content-Type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let error = json_of(response).await;
    assert_eq!(error["code"], "malformed_json");
    let (status, error) =
        app.call(Method::POST, KEYS, None, Some(json!({"name": "k", "purpose": "zapier"}))).await;
    assert_eq!((status, error["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("missing_credentials")));
    let (status, error) = app
        .call(Method::POST, KEYS, Some(&service_jwt()), Some(json!({"name": "k", "purpose": "zapier"})))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a service-role token without user_id");
    assert_eq!(error["code"], "user_id_required");
    assert!(error["error"].as_str().expect("message").contains("user_id"));
}

async fn list_rejects_bad_queries(mode: Mode) {
    let app = TestApp::spawn(mode).await;
    for query in [
        "from=yesterday",
        "to=2025-13-01T00:00:00Z",
        "user_id=42",
        "scope=everything",
        "from=2025-02-01T00:00:00Z&to=2025-01-01T00:00:00Z",
    ] {
        let (status, error) = app.admin(Method::GET, &format!("{KEYS}?{query}"), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {error}");
        assert_eq!(error["code"], "invalid_query", "{query}");
    }
    let (status, _) = app.call(Method::GET, KEYS, None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, error) = app.call(Method::GET, KEYS, Some(&service_jwt()), None).await;
    assert_eq!((status, error["code"].as_str()), (StatusCode::BAD_REQUEST, Some("user_id_required")));
}

async fn delete_answers_400_403_404(mode: Mode) {
    let app = TestApp::spawn(mode).await;
    let (_, member_key) = app.user_with_key("member@test.example", "member").await;
    let (_, other_member_key) = app.user_with_key("other@test.example", "member").await;
    let (_, others) = app.call(Method::GET, KEYS, Some(&other_member_key), None).await;
    let other_key_id = others["keys"][0]["id"].as_str().expect("id").to_string();

    let (status, error) = app.admin(Method::DELETE, &format!("{KEYS}/not-a-uuid"), None).await;
    assert_eq!((status, error["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_path")));
    assert!(error["error"].as_str().expect("message").contains("UUID"));
    let (status, error) = app.admin(Method::DELETE, &format!("{KEYS}/{}", Uuid::now_v7()), None).await;
    assert_eq!((status, error["error"].as_str()), (StatusCode::NOT_FOUND, Some("API key not found")));
    let (status, error) =
        app.call(Method::DELETE, &format!("{KEYS}/{other_key_id}"), Some(&member_key), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a member revoking another user's key: {error}");
    let (status, _) = app.call(Method::DELETE, &format!("{KEYS}/{other_key_id}"), None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) =
        app.call(Method::DELETE, &format!("{KEYS}/{other_key_id}"), Some(&other_member_key), None).await;
    assert_eq!(status, StatusCode::OK, "a member revokes their own key");
    let (status, _) = app.admin(Method::DELETE, &format!("{KEYS}/{other_key_id}"), None).await;
    assert_eq!(status, StatusCode::CONFLICT, "a revoked key says so (issue 11: was 404 \"not found\")");
}

async fn every_bad_credential_has_its_own_401(mode: Mode) {
    let app = TestApp::spawn(mode).await;
    let (user_id, key) = app.user_with_key("member@test.example", "member").await;
    let expired = {
        let soon = (chrono::Utc::now() + chrono::Duration::milliseconds(1500)).to_rfc3339();
        let (status, created) = app
            .admin(
                Method::POST,
                &format!("{KEYS}?user_id={user_id}"),
                Some(json!({"name": "short", "purpose": "custom", "expires_at": soon})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        created["key"].as_str().expect("key").to_string()
    };
    let (_, revoked) = app.admin(Method::POST, KEYS, Some(json!({"name": "r", "purpose": "custom"}))).await;
    app.admin(Method::DELETE, &format!("{KEYS}/{}", revoked["id"].as_str().expect("id")), None).await;
    let revoked = revoked["key"].as_str().expect("key").to_string();
    let unknown = herald::domain::ApiKeySecret::generate().expose().to_string();
    let mut bad_checksum = key.clone();
    let last = bad_checksum.pop().expect("char");
    bad_checksum.push(if last == 'A' { 'B' } else { 'A' });
    tokio::time::sleep(Duration::from_millis(1600)).await;

    let cases = [
        (unknown.as_str(), "api_key_invalid"),
        ("sk_live_short", "api_key_malformed"),
        ("garbage", "api_key_malformed"),
        (bad_checksum.as_str(), "api_key_checksum"),
        (revoked.as_str(), "api_key_revoked"),
        (expired.as_str(), "api_key_expired"),
    ];
    for (credential, code) in cases {
        let (status, error) = app.call(Method::GET, KEYS, Some(credential), None).await;
        assert_eq!((status, error["code"].as_str()), (StatusCode::UNAUTHORIZED, Some(code)), "{error}");
        assert!(error["error"].is_string());
    }
    let response = app.client.get(app.url(KEYS)).header("Authorization", format!("Basic {key}")).send().await;
    let error = json_of(response.expect("sent")).await;
    assert_eq!(error["code"], "invalid_authorization");
    let response = app.client.get(app.url(KEYS)).header("X-API-Key", &key).send().await.expect("sent");
    assert_eq!(response.status(), StatusCode::OK, "X-API-Key is accepted");

    app.state.store.set_organization_active(app.organization_id, false).await.expect("deactivate");
    // A fresh key is not cached yet, so the inactive organization is seen at once.
    let (status, error) = app.call(Method::GET, KEYS, Some(&app.admin_key), None).await;
    let expected = (StatusCode::UNAUTHORIZED, Some("organization_inactive"));
    if (status, error["code"].as_str()) != expected {
        // The admin key was cached by earlier requests: wait out the cache bound (auth.key_cache_ttl).
        tokio::time::sleep(app.state.settings.auth.key_cache_ttl.get()).await;
        let (status, error) = app.call(Method::GET, KEYS, Some(&app.admin_key), None).await;
        assert_eq!((status, error["code"].as_str()), expected, "{error}");
    }
}

async fn revocation_takes_effect_at_once(mode: Mode) {
    let app = TestApp::spawn(mode).await;
    let (_, created) = app.admin(Method::POST, KEYS, Some(json!({"name": "r", "purpose": "custom"}))).await;
    let key = created["key"].as_str().expect("key");
    let (status, _) = app.call(Method::GET, KEYS, Some(key), None).await;
    assert_eq!(status, StatusCode::OK, "the key works and is now cached");
    app.admin(Method::DELETE, &format!("{KEYS}/{}", created["id"].as_str().expect("id")), None).await;
    let (status, error) = app.call(Method::GET, KEYS, Some(key), None).await;
    assert_eq!((status, error["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("api_key_revoked")));
}

async fn members_admins_service_role_and_other_organizations(mode: Mode) {
    let app = TestApp::spawn(mode).await;
    let (member_id, member_key) = app.user_with_key("member@test.example", "member").await;
    let (other_admin, other_key) = {
        let (org, key) = herald::app::bootstrap(&app.state.store, "other", "boss@other.example", false)
            .await
            .expect("bootstrap")
            .expect("created");
        (org.admin.id, key.expose().to_string())
    };
    let service = service_jwt();

    // POST /api-keys
    let body = || Some(json!({"name": "k", "purpose": "n8n"}));
    let (status, created) = app.call(Method::POST, KEYS, Some(&member_key), body()).await;
    assert_eq!(
        (status, created["user_id"].as_str()),
        (StatusCode::CREATED, Some(member_id.to_string().as_str()))
    );
    let (status, _) =
        app.call(Method::POST, &format!("{KEYS}?user_id={}", app.admin_id), Some(&member_key), body()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a member cannot act for another user");
    let (status, created) = app.admin(Method::POST, &format!("{KEYS}?user_id={member_id}"), body()).await;
    assert_eq!(
        (status, created["user_id"].as_str()),
        (StatusCode::CREATED, Some(member_id.to_string().as_str()))
    );
    let (status, created) =
        app.call(Method::POST, &format!("{KEYS}?user_id={member_id}"), Some(&service), body()).await;
    assert_eq!(
        (status, created["user_id"].as_str()),
        (StatusCode::CREATED, Some(member_id.to_string().as_str()))
    );
    let (status, _) =
        app.call(Method::POST, &format!("{KEYS}?user_id={member_id}"), Some(&other_key), body()).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "another organization's user does not exist for this admin");

    // GET /api-keys
    let (_, mine) = app.call(Method::GET, KEYS, Some(&member_key), None).await;
    assert_eq!(mine["count"], 4, "the member's own keys only: {mine}");
    let (status, _) =
        app.call(Method::GET, &format!("{KEYS}?scope=organization"), Some(&member_key), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, all) = app.admin(Method::GET, &format!("{KEYS}?scope=organization"), None).await;
    assert_eq!(all["count"], 5, "every key of the organization: {all}");
    let (_, theirs) = app.admin(Method::GET, &format!("{KEYS}?user_id={member_id}"), None).await;
    assert_eq!(theirs["count"], 4);
    let (status, theirs) =
        app.call(Method::GET, &format!("{KEYS}?user_id={member_id}"), Some(&service), None).await;
    assert_eq!((status, theirs["count"].as_u64()), (StatusCode::OK, Some(4)));
    let (status, _) =
        app.call(Method::GET, &format!("{KEYS}?user_id={member_id}"), Some(&other_key), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, own) = app.call(Method::GET, KEYS, Some(&other_key), None).await;
    assert_eq!(own["count"], 1, "the other organization sees only its own");

    // DELETE /api-keys/{id}
    let member_key_id = mine["keys"][0]["id"].as_str().expect("id").to_string();
    let (status, _) =
        app.call(Method::DELETE, &format!("{KEYS}/{member_key_id}"), Some(&other_key), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "404, not 403, for another organization's key");
    let (status, _) = app
        .call(Method::DELETE, &format!("{KEYS}/{member_key_id}?user_id={other_admin}"), Some(&service), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "the service role acting in another organization");
    let (status, _) = app
        .call(Method::DELETE, &format!("{KEYS}/{member_key_id}?user_id={member_id}"), Some(&service), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let second = mine["keys"][1]["id"].as_str().expect("id");
    let (status, _) = app.admin(Method::DELETE, &format!("{KEYS}/{second}"), None).await;
    assert_eq!(status, StatusCode::OK, "an admin revokes a member's key");

    // /users
    let (status, _) = app.call(Method::GET, "/api/v1/users", Some(&member_key), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, users) =
        app.call(Method::GET, &format!("/api/v1/users?user_id={member_id}"), Some(&service), None).await;
    assert_eq!((status, users["count"].as_u64()), (StatusCode::OK, Some(2)));
    let (_, users) = app.call(Method::GET, "/api/v1/users", Some(&other_key), None).await;
    assert_eq!(users["count"], 1);
    let (status, _) = app
        .call(
            Method::POST,
            "/api/v1/users",
            Some(&member_key),
            Some(json!({"email": "x@test.example", "role": "member"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

async fn users_are_admin_only_and_announced(mode: Mode) {
    let app = TestApp::spawn(mode).await;
    let (status, user) = app
        .admin(
            Method::POST,
            "/api/v1/users",
            Some(json!({"email": " Ada@Example.COM ", "name": "Ada", "role": "admin"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{user}");
    assert_eq!((user["email"].as_str(), user["role"].as_str()), (Some("ada@example.com"), Some("admin")));
    let (status, error) = app
        .admin(Method::POST, "/api/v1/users", Some(json!({"email": "ada@example.com", "role": "member"})))
        .await;
    assert_eq!((status, error["code"].as_str()), (StatusCode::CONFLICT, Some("user_exists")));
    for body in [
        json!({"email": "nope", "role": "member"}),
        json!({"email": "a@b.co", "role": "owner"}),
        json!({"role": "member"}),
    ] {
        let (status, _) = app.admin(Method::POST, "/api/v1/users", Some(body.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    }
    let events = app
        .state
        .store
        .list_events(&herald::store::EventQuery {
            organization_id: app.organization_id,
            event_type: Some("user.added".into()),
            from: None,
            to: None,
            before: None,
            limit: 10,
        })
        .await
        .expect("events");
    assert_eq!(events.len(), 1, "one user.added event in the outbox");
    let payload: Value = serde_json::from_str(&events[0].payload).expect("json");
    assert_eq!(payload["event"], "user.added");
    assert_eq!(payload["organization_id"], app.organization_id.to_string());
    assert_eq!(payload["data"]["email"], "ada@example.com");
    assert_eq!(payload["data"]["id"], user["id"]);
}

async fn usage_is_counted_and_filtered(mode: Mode) {
    let app = TestApp::spawn(mode).await;
    let (_, member_key) = app.user_with_key("member@test.example", "member").await;
    let before = chrono::Utc::now();
    for _ in 0..3 {
        let (status, _) = app.call(Method::GET, "/healthz", None, None).await;
        assert_eq!(status, StatusCode::OK);
        app.call(Method::GET, KEYS, Some(&member_key), None).await;
    }
    // Wait for the usage flush (auth.usage_flush_interval is 100 ms in tests), then read the store.
    let mut stored = None;
    for _ in 0..50 {
        let keys = app
            .state
            .store
            .list_api_keys(&herald::store::ApiKeyQuery {
                organization_id: app.organization_id,
                ..Default::default()
            })
            .await
            .expect("keys");
        let member = keys.into_iter().find(|k| k.name == "k").expect("member key");
        if member.total_requests == 3 {
            stored = Some(member);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stored = stored.expect("the three requests were flushed to the store");
    assert!(stored.last_used_at.expect("used") >= before - chrono::Duration::seconds(1));

    let (_, listed) = app.call(Method::GET, KEYS, Some(&member_key), None).await;
    assert!(listed["keys"][0]["total_requests"].as_i64().expect("count") >= 3, "{listed}");
    let from = urlencode(&before.to_rfc3339());
    let (_, used) = app.admin(Method::GET, &format!("{KEYS}?scope=organization&from={from}"), None).await;
    let names: Vec<&str> =
        used["keys"].as_array().expect("keys").iter().filter_map(|k| k["name"].as_str()).collect();
    assert!(names.contains(&"k"), "the member key was used after `from`: {used}");
    let to = urlencode(&(before - chrono::Duration::hours(1)).to_rfc3339());
    let (_, none) = app.admin(Method::GET, &format!("{KEYS}?scope=organization&to={to}"), None).await;
    assert_eq!(none["count"], 0, "no key was used an hour ago: {none}");
}

fn urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

async fn rate_limit_answers_429_with_retry_after(mode: Mode) {
    let app = TestApp::spawn_with(mode, |settings| {
        settings.auth.rate_limit_per_second = 1;
        settings.auth.rate_limit_burst = 3;
    })
    .await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let response = app.client.get(app.url(KEYS)).bearer_auth(&app.admin_key).send().await.expect("sent");
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(response.headers()["retry-after"], "1");
            let error = json_of(response).await;
            assert_eq!(error["code"], "rate_limited");
            statuses.push(429);
        } else {
            statuses.push(response.status().as_u16());
        }
    }
    assert_eq!(statuses, vec![200, 200, 200, 429, 429]);
}

async fn jwt_users_authenticate(mode: Mode) {
    let app = TestApp::spawn(mode).await;
    let exp = chrono::Utc::now().timestamp() + 600;
    let claims =
        |sub: String| json!({"sub": sub, "role": "authenticated", "aud": "authenticated", "exp": exp});
    let (status, list) =
        app.call(Method::GET, KEYS, Some(&jwt(&claims(app.admin_id.to_string()))), None).await;
    assert_eq!((status, list["count"].as_u64()), (StatusCode::OK, Some(1)), "the admin's keys via JWT");
    let cases = [
        (jwt(&claims(Uuid::now_v7().to_string())), "jwt_unknown_user"),
        (jwt(&claims("not-a-uuid".into())), "jwt_unknown_user"),
        (jwt(&json!({"sub": app.admin_id, "aud": "authenticated", "exp": exp - 1200})), "jwt_expired"),
        (jwt(&json!({"sub": app.admin_id, "aud": "anon", "exp": exp})), "jwt_invalid"),
        (jwt_with(&json!({"alg": "none"}), &claims(app.admin_id.to_string()), "x"), "jwt_invalid"),
        (
            jwt_with(&json!({"alg": "HS256"}), &claims(app.admin_id.to_string()), "a-different-secret"),
            "jwt_invalid",
        ),
    ];
    for (token, code) in cases {
        let (status, error) = app.call(Method::GET, KEYS, Some(&token), None).await;
        assert_eq!((status, error["code"].as_str()), (StatusCode::UNAUTHORIZED, Some(code)), "{error}");
    }
}

async fn no_plaintext_key_is_stored(mode: Mode) {
    let app = TestApp::spawn(mode).await;
    let mut keys = vec![app.admin_key.clone()];
    for i in 0..3 {
        let (_, created) =
            app.admin(Method::POST, KEYS, Some(json!({"name": format!("k{i}"), "purpose": "custom"}))).await;
        keys.push(created["key"].as_str().expect("key").to_string());
    }
    let (_, member_key) = app.user_with_key("m@test.example", "member").await;
    keys.push(member_key);
    let text = app.store_dump();
    assert!(!text.contains("sk_live_"), "no key, nor anything that looks like one, is in the store");
    for key in &keys {
        assert!(!text.contains(&key[8..]), "the secret part of a key appears in the store");
    }
    assert!(
        text.contains(&keys[1][8..16]),
        "the 8-character hint is stored (the search reads the right data)"
    );
}
