//! The web console over HTTP, without a browser (the browser tests are `console_browser`): sign-in and
//! its cookie, the security headers, CSRF refusals, members kept out of admin pages, sessions ended
//! when idle or when their key is revoked, hostile response bodies shown as text, and the pages that
//! create, replay and revoke doing what the API does.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::{
    in_both_modes,
    support::{
        app::{Mode, TestApp, jwt},
        console::ConsoleClient,
        receiver::Receiver,
    },
};

in_both_modes!(
    sign_in_sets_a_strict_cookie_and_every_answer_the_security_headers,
    forms_without_the_sessions_csrf_token_are_refused,
    members_do_not_get_admin_pages,
    sessions_end_when_idle_signed_out_or_their_key_is_revoked,
    hostile_response_bodies_are_shown_as_text,
    users_sign_in_with_a_jwt_and_service_role_tokens_cannot,
    pages_create_replay_and_revoke_through_the_api,
    every_page_renders_for_an_admin,
    users_are_added_changed_and_deactivated,
);

async fn sign_in_sets_a_strict_cookie_and_every_answer_the_security_headers(mode: Mode) {
    let app = TestApp::spawn(mode).await;
    let anonymous = ConsoleClient::new(&app);
    let page = anonymous.get("/console").await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "no session: to the sign-in page");
    assert_eq!(page.location(), "/console/sign-in");

    let form = anonymous.get("/console/sign-in").await;
    let csp = form.headers["content-security-policy"].to_str().expect("ascii");
    assert!(csp.contains("script-src 'self'") && csp.contains("default-src 'none'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'") && csp.contains("form-action 'self'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(form.headers["x-content-type-options"], "nosniff");
    assert_eq!(form.headers["referrer-policy"], "no-referrer");
    assert!(!form.body.contains("<script>") && !form.body.contains(" style="), "no inline script or style");

    let mut console = ConsoleClient::new(&app);
    let refused = console.sign_in("sk_live_not-a-key").await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{}", refused.body);
    assert!(refused.body.contains("api_key_malformed"), "the API's code is shown");
    assert!(console.session.is_none());

    let answer = console.sign_in(&app.admin_key).await;
    assert_eq!((answer.status, answer.location()), (StatusCode::SEE_OTHER, "/console"));
    let cookie = &console.session_cookie_header;
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/console", "Max-Age=43200"] {
        assert!(cookie.contains(flag), "{flag} in {cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain http: no Secure flag ({cookie})");
    let token = console.session.clone().expect("a session token");
    assert_eq!(token.len(), 43, "256 random bits");
    assert!(!app.store_dump().contains(&token), "only the token's hash is stored");
    assert!(!answer.body.contains(&app.admin_key) && !cookie.contains(&app.admin_key));

    let overview = console.get("/console").await;
    assert_eq!(overview.status, StatusCode::OK, "{}", overview.body);
    assert!(
        overview.headers["content-security-policy"].to_str().expect("ascii").contains("script-src 'self'")
    );
    assert_eq!(overview.headers["cache-control"], "no-store");
    assert!(overview.body.contains("Dead letters") && overview.body.contains("<svg"), "{}", overview.body);
    let css = overview.body.split("href=\"/console/assets/").nth(1).and_then(|rest| rest.split('"').next());
    let asset = console.get(&format!("/console/assets/{}", css.expect("a stylesheet link"))).await;
    assert_eq!(asset.status, StatusCode::OK);
    assert!(asset.headers["cache-control"].to_str().expect("ascii").contains("immutable"));
    assert_eq!(
        console.get("/console/assets/console.css").await.status,
        StatusCode::NOT_FOUND,
        "versioned names only"
    );

    let off = TestApp::spawn_with(mode, |settings| settings.console.enabled = false).await;
    let (status, body) = off.call(Method::GET, "/console/sign-in", None, None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found")),
        "console.enabled = false"
    );
    let behind_tls = TestApp::spawn_with(mode, |settings| settings.console.secure_cookies = true).await;
    let secure = ConsoleClient::signed_in(&behind_tls, &behind_tls.admin_key).await;
    assert!(secure.session_cookie_header.contains("; Secure"), "{}", secure.session_cookie_header);
}

async fn forms_without_the_sessions_csrf_token_are_refused(mode: Mode) {
    let app = TestApp::spawn(mode).await;
    let console = ConsoleClient::signed_in(&app, &app.admin_key).await;
    let fields = [("url", "https://hooks.example.com/in"), ("events", "item.created")];
    let missing = console.post_raw("/console/webhooks", &fields, &[]).await;
    assert_eq!(missing.status, StatusCode::FORBIDDEN, "{}", missing.body);
    assert!(missing.body.contains("csrf_failed"));
    let wrong =
        console.post_raw("/console/webhooks", &[("csrf", "guessed"), fields[0], fields[1]], &[]).await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);
    let csrf = console.get("/console/webhooks").await.csrf().expect("a form");
    let with_token = [("csrf", csrf.as_str()), fields[0], fields[1]];
    let cross_site =
        console.post_raw("/console/webhooks", &with_token, &[("Sec-Fetch-Site", "cross-site")]).await;
    assert_eq!(cross_site.status, StatusCode::FORBIDDEN, "the token alone is not enough from another site");
    let other_origin =
        console.post_raw("/console/webhooks", &with_token, &[("Origin", "https://evil.example")]).await;
    assert_eq!(other_origin.status, StatusCode::FORBIDDEN);
    let sign_out = console.post_raw("/console/sign-out", &[], &[]).await;
    assert_eq!(sign_out.status, StatusCode::FORBIDDEN, "sign-out is a form too");
    let (_, list) = app.admin(Method::GET, "/api/v1/webhooks", None).await;
    assert_eq!(list["total"], 0, "no refused form changed anything: {list}");

    let anonymous = ConsoleClient::new(&app);
    let sign_in =
        anonymous.post_raw("/console/sign-in", &[("credential", app.admin_key.as_str())], &[]).await;
    assert_eq!(sign_in.status, StatusCode::FORBIDDEN, "the sign-in form has its own token");

    let created =
        console.post_raw("/console/webhooks", &with_token, &[("Sec-Fetch-Site", "same-origin")]).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
}

async fn members_do_not_get_admin_pages(mode: Mode) {
    let app = TestApp::spawn(mode).await;
    let (_, member_key) = app.user_with_key("member@test.example", "member").await;
    let member = ConsoleClient::signed_in(&app, &member_key).await;
    let landing = member.get("/console").await;
    assert_eq!((landing.status, landing.location()), (StatusCode::SEE_OTHER, "/console/events"));
    let events = member.get("/console/events").await;
    assert_eq!(events.status, StatusCode::OK, "{}", events.body);
    assert!(
        !events.body.contains("/console/webhooks\"") && !events.body.contains("/console/users\""),
        "no admin links"
    );
    for path in
        ["/console/webhooks", "/console/users", &format!("/console/webhooks/{}", uuid::Uuid::now_v7())]
    {
        let page = member.get(path).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{path}: {}", page.body);
        assert!(page.body.contains("admin role"), "the API's refusal: {}", page.body);
    }
    let created = member.post("/console/api-keys", "/console/users", &[("email", "x@test.example")]).await;
    assert_eq!(created.status, StatusCode::FORBIDDEN, "a member's form post to an admin page");
    let keys = member.get("/console/api-keys").await;
    assert_eq!(keys.status, StatusCode::OK);
    assert!(!keys.body.contains("bootstrap admin key"), "a member sees only their own keys");
    let everyone = member.get("/console/api-keys?scope=organization").await;
    assert_eq!(everyone.status, StatusCode::FORBIDDEN);
}

async fn sessions_end_when_idle_signed_out_or_their_key_is_revoked(mode: Mode) {
    let app = TestApp::spawn_with(mode, |settings| {
        settings.console.idle_timeout = herald::config::HumanDuration(Duration::from_millis(1500));
        settings.auth.key_cache_ttl = herald::config::HumanDuration(Duration::ZERO);
    })
    .await;
    let idle = ConsoleClient::signed_in(&app, &app.admin_key).await;
    assert_eq!(idle.get("/console").await.status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(idle.get("/console").await.status, StatusCode::OK, "use keeps it alive");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        idle.get("/console").await.status,
        StatusCode::OK,
        "still within the idle time of the last use"
    );
    tokio::time::sleep(Duration::from_millis(1700)).await;
    let ended = idle.get("/console").await;
    assert_eq!((ended.status, ended.location()), (StatusCode::SEE_OTHER, "/console/sign-in?ended=expired"));

    let signed_out = ConsoleClient::signed_in(&app, &app.admin_key).await;
    let answer = signed_out.post("/console", "/console/sign-out", &[]).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER);
    assert!(answer.headers["set-cookie"].to_str().expect("ascii").contains("Max-Age=0"));
    assert_eq!(signed_out.get("/console").await.status, StatusCode::SEE_OTHER, "the old cookie is worthless");

    let (_, key) = app.user_with_key("second-admin@test.example", "admin").await;
    let revoked = ConsoleClient::signed_in(&app, &key).await;
    assert_eq!(revoked.get("/console/webhooks").await.status, StatusCode::OK);
    let (_, keys) = app.call(Method::GET, "/api/v1/api-keys", Some(&key), None).await;
    let id = keys["keys"][0]["id"].as_str().expect("the key").to_string();
    let (status, _) = app.admin(Method::DELETE, &format!("/api/v1/api-keys/{id}"), None).await;
    assert_eq!(status, StatusCode::OK);
    let after = revoked.get("/console/webhooks").await;
    assert_eq!((after.status, after.location()), (StatusCode::SEE_OTHER, "/console/sign-in?ended=revoked"));
}

async fn users_sign_in_with_a_jwt_and_service_role_tokens_cannot(mode: Mode) {
    let app = TestApp::spawn(mode).await;
    let exp = chrono::Utc::now().timestamp() + 600;
    let user = jwt(
        &json!({"sub": app.admin_id.to_string(), "aud": "authenticated", "role": "authenticated", "exp": exp}),
    );
    let console = ConsoleClient::signed_in(&app, &user).await;
    let page = console.get("/console/users").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains("admin@test.example"));
    assert!(console.session_cookie_header.contains("Max-Age=43200"));

    let service = jwt(&json!({"role": "service_role", "exp": exp}));
    let refused = ConsoleClient::new(&app).sign_in(&service).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
    assert!(refused.body.contains("service_role_not_allowed"), "{}", refused.body);
    let expired = jwt(&json!({"sub": app.admin_id.to_string(), "aud": "authenticated", "exp": exp - 1200}));
    let refused = ConsoleClient::new(&app).sign_in(&expired).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert!(refused.body.contains("jwt_expired"), "{}", refused.body);

    // The session ends with the JWT it was made from.
    let short = jwt(
        &json!({"sub": app.admin_id.to_string(), "aud": "authenticated", "exp": chrono::Utc::now().timestamp() + 2}),
    );
    let brief = ConsoleClient::signed_in(&app, &short).await;
    assert_eq!(brief.get("/console").await.status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(3100)).await;
    assert_eq!(brief.get("/console").await.location(), "/console/sign-in?ended=expired");
}

async fn hostile_response_bodies_are_shown_as_text(mode: Mode) {
    let app = TestApp::spawn(mode).await;
    let hostile: &'static [u8] = b"<script>document.title='pwned'</script><img src=x onerror=\"alert(1)\">";
    let receiver = Receiver::answering(hostile, |_| (500, vec![], Duration::ZERO)).await;
    let webhook = app.subscribe(&receiver, json!(["item.created"])).await;
    app.send_event("item.created", json!({"note": "<b>bold</b> & \"quoted\""})).await;
    let delivery = app.wait_deliveries(webhook, 1).await[0]["id"].as_str().expect("id").to_string();
    app.wait_delivery(&delivery, Duration::from_secs(10), |d| d["attempts"].as_i64() >= Some(1)).await;
    let console = ConsoleClient::signed_in(&app, &app.admin_key).await;
    let page = console.get(&format!("/console/deliveries/{delivery}")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains("&lt;script&gt;document.title="), "the body is shown, escaped");
    assert!(!page.body.contains("<script>document"), "and never as markup");
    assert!(!page.body.contains("<img src=x"), "no attribute from the response survives");
    assert!(
        page.body.contains("&lt;b&gt;bold&lt;&#x2f;b&gt;") || page.body.contains("&lt;b&gt;bold&lt;/b&gt;"),
        "payload escaped too"
    );
    assert!(
        page.body.contains("x-signature") && page.body.contains("webhook-signature"),
        "headers are shown"
    );
    assert!(!page.body.contains("whsec_"), "never the secret");

    // What the page shows is the API's: the payload byte for byte, the signature the receiver got.
    let (status, detail) = app.admin(Method::GET, &format!("/api/v1/deliveries/{delivery}"), None).await;
    assert_eq!(status, StatusCode::OK, "{detail}");
    let arrival = &receiver.arrivals()[0];
    assert_eq!(detail["payload"].as_str().expect("payload").as_bytes(), &arrival.body[..]);
    let header = |name: &str| {
        detail["headers"]
            .as_array()
            .expect("headers")
            .iter()
            .find(|h| h["name"] == name)
            .map(|h| h["value"].clone())
    };
    assert_eq!(header("x-signature"), Some(json!(arrival.header("x-signature"))));
    assert_eq!(header("webhook-id"), Some(json!(arrival.header("webhook-id"))));
    assert_eq!(header("content-type"), Some(json!("application/json")));
}

async fn pages_create_replay_and_revoke_through_the_api(mode: Mode) {
    let app = TestApp::spawn(mode).await;
    let console = ConsoleClient::signed_in(&app, &app.admin_key).await;
    let refused = console
        .post("/console/webhooks", "/console/webhooks", &[("url", "ftp://x"), ("events", "item.created")])
        .await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "the API's URL policy: {}", refused.body);
    assert!(refused.body.contains("url_not_allowed"), "{}", refused.body);
    let unknown = console
        .post(
            "/console/webhooks",
            "/console/webhooks",
            &[("url", "https://a.example/h"), ("events", "nope.nope")],
        )
        .await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST, "{}", unknown.body);

    let failing = Receiver::start(|_| (503, vec![], Duration::ZERO)).await;
    let created = console
        .post(
            "/console/webhooks",
            "/console/webhooks",
            &[("url", failing.url.as_str()), ("events", "item.created"), ("events", "comment.created")],
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let secret =
        created.body.split("<code id=\"secret\">").nth(1).and_then(|s| s.split('<').next()).expect("secret");
    assert!(secret.starts_with("whsec_"));
    failing.trust(secret);
    let (_, list) = app.admin(Method::GET, "/api/v1/webhooks", None).await;
    let webhook = list["webhooks"][0]["id"].as_str().expect("created").to_string();
    assert_eq!(list["webhooks"][0]["events"], json!(["comment.created", "item.created"]));

    app.send_event("item.created", json!({"n": 1})).await;
    app.send_event("item.created", json!({"n": 2})).await;
    let deliveries = app.wait_deliveries(webhook.parse().expect("uuid"), 2).await;
    for delivery in &deliveries {
        let id = delivery["id"].as_str().expect("id");
        app.wait_delivery(id, Duration::from_secs(20), |d| d["status"] == "dead").await;
    }
    let overview = console.get("/console").await;
    assert!(overview.body.contains(r#"<span id="dead-count">2</span>"#), "{}", overview.body);
    assert!(overview.body.contains("2 deliveries, 0 retrying, 2 dead"), "the hour's chart counts them");
    assert!(
        overview.body.contains("0.0 %") && overview.body.contains("of 8 attempts"),
        "none of 8 succeeded: {}",
        overview.body
    );
    assert!(overview.body.contains(&format!("/console/webhooks/{webhook}")), "listed as failing");
    let health = console.get("/console/webhooks").await;
    assert!(health.body.contains("0 of 8 attempts") && health.body.contains(">failing<"), "{}", health.body);
    let (status, counted) = app
        .admin(Method::POST, &format!("/api/v1/webhooks/{webhook}/replay"), Some(json!({"dry_run": true})))
        .await;
    assert_eq!(
        (status, counted),
        (StatusCode::OK, json!({"replayed": 0, "matching": 2})),
        "a dry run counts"
    );
    let confirm = console.get(&format!("/console/webhooks/{webhook}/replay")).await;
    assert_eq!(confirm.status, StatusCode::OK, "{}", confirm.body);
    assert!(confirm.body.contains("<strong>2</strong> dead deliveries"), "{}", confirm.body);
    let replayed = console
        .post(
            &format!("/console/webhooks/{webhook}/replay"),
            &format!("/console/webhooks/{webhook}/replay"),
            &[],
        )
        .await;
    assert_eq!(replayed.status, StatusCode::SEE_OTHER, "{}", replayed.body);
    let (_, dead) =
        app.admin(Method::GET, &format!("/api/v1/deliveries?webhook_id={webhook}&status=dead"), None).await;
    assert_eq!(dead["deliveries"].as_array().map(Vec::len), Some(0), "replayed: none is dead now: {dead}");

    let key = console
        .post("/console/api-keys", "/console/api-keys", &[("name", "zap"), ("purpose", "zapier")])
        .await;
    assert_eq!(key.status, StatusCode::CREATED, "{}", key.body);
    let plaintext =
        key.body.split("<code id=\"new-key\">").nth(1).and_then(|s| s.split('<').next()).expect("key");
    assert_eq!(app.call(Method::GET, "/api/v1/event-types", Some(plaintext), None).await.0, StatusCode::OK);
    let (_, keys) = app.call(Method::GET, "/api/v1/api-keys", Some(plaintext), None).await;
    let id = keys["keys"][0]["id"].as_str().expect("id").to_string();
    let revoked = console.post("/console/api-keys", &format!("/console/api-keys/{id}/revoke"), &[]).await;
    assert_eq!(revoked.status, StatusCode::SEE_OTHER, "{}", revoked.body);
    let (status, refusal) = app.call(Method::GET, "/api/v1/event-types", Some(plaintext), None).await;
    assert_eq!((status, refusal["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("api_key_revoked")));
}

async fn every_page_renders_for_an_admin(mode: Mode) {
    let app = TestApp::spawn(mode).await;
    let receiver = Receiver::ok().await;
    let webhook = app.subscribe(&receiver, json!(["*"])).await;
    let event = app.send_event("item.created", json!({"a": 1})).await;
    let delivery = app.wait_deliveries(webhook, 1).await[0]["id"].as_str().expect("id").to_string();
    let console = ConsoleClient::signed_in(&app, &app.admin_key).await;
    for path in [
        "/console".to_string(),
        "/console/webhooks".into(),
        format!("/console/webhooks/{webhook}"),
        format!(
            "/console/webhooks/{webhook}/deliveries?status=&event_type=item.created&since=2020-01-01T00%3A00"
        ),
        format!("/console/deliveries/{delivery}"),
        "/console/events?type=item.created".into(),
        format!("/console/events/{event}"),
        "/console/api-keys".into(),
        "/console/api-keys?scope=organization".into(),
        "/console/users".into(),
    ] {
        let page = console.get(&path).await;
        assert_eq!(page.status, StatusCode::OK, "{path}: {}", page.body);
        assert!(page.body.starts_with("<!doctype html>"), "{path}");
    }
    let bad = console.get("/console/events?from=yesterday").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.body);
    assert_eq!(console.get("/console/deliveries/not-a-uuid").await.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        console.get(&format!("/console/deliveries/{}", uuid::Uuid::now_v7())).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(console.get("/console/nowhere").await.status, StatusCode::NOT_FOUND);
}

async fn users_are_added_changed_and_deactivated(mode: Mode) {
    let app = TestApp::spawn(mode).await;
    let console = ConsoleClient::signed_in(&app, &app.admin_key).await;
    let added = console
        .post(
            "/console/users",
            "/console/users",
            &[("email", "Ada@Example.com"), ("name", "Ada"), ("role", "member")],
        )
        .await;
    assert_eq!((added.status, added.location()), (StatusCode::SEE_OTHER, "/console/users?done=user_added"));
    let again = console
        .post("/console/users", "/console/users", &[("email", "ada@example.com"), ("role", "member")])
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT, "the API's user_exists: {}", again.body);
    let (_, users) = app.admin(Method::GET, "/api/v1/users", None).await;
    let ada = users["users"]
        .as_array()
        .expect("users")
        .iter()
        .find(|u| u["email"] == "ada@example.com")
        .expect("added");
    let id = ada["id"].as_str().expect("id").to_string();
    assert_eq!(ada["role"], "member");

    let promoted =
        console.post("/console/users", &format!("/console/users/{id}"), &[("role", "admin")]).await;
    assert_eq!(promoted.status, StatusCode::SEE_OTHER, "{}", promoted.body);
    let deactivated =
        console.post("/console/users", &format!("/console/users/{id}"), &[("is_active", "false")]).await;
    assert_eq!(deactivated.status, StatusCode::SEE_OTHER, "{}", deactivated.body);
    let (_, users) = app.admin(Method::GET, "/api/v1/users", None).await;
    let ada = users["users"]
        .as_array()
        .expect("users")
        .iter()
        .find(|u| u["email"] == "ada@example.com")
        .expect("kept");
    assert_eq!((ada["role"].as_str(), ada["is_active"].as_bool()), (Some("admin"), Some(false)));
    let page = console.get("/console/users").await;
    assert!(page.body.contains("deactivated") && page.body.contains("Reactivate"), "{}", page.body);

    let last_admin = console
        .post("/console/users", &format!("/console/users/{}", app.admin_id), &[("role", "member")])
        .await;
    assert_eq!(last_admin.status, StatusCode::CONFLICT, "the API's last_admin rule: {}", last_admin.body);
    assert!(last_admin.body.contains("last_admin"));
}
