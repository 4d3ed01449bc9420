//! The user lifecycle: `PATCH /users/{id}` (name, role, is_active) and `DELETE /users/{id}`
//! (deactivates), admins only; a deactivated user's keys answer 401 `user_inactive` at once; an
//! organization never loses its last active admin (409 `last_admin`).

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    in_both_modes,
    support::app::{Mode, TestApp},
};

in_both_modes!(users_are_changed_and_deactivated, the_last_admin_stays, user_changes_are_validated);

fn user_path(id: impl std::fmt::Display) -> String {
    format!("/api/v1/users/{id}")
}

async fn patch(app: &TestApp, id: impl std::fmt::Display, body: Value) -> (StatusCode, Value) {
    app.admin(Method::PATCH, &user_path(id), Some(body)).await
}

async fn users_are_changed_and_deactivated(mode: Mode) {
    let app = TestApp::spawn(mode).await;
    let (member, member_key) = app.user_with_key("ada@test.example", "member").await;
    let (status, _) = app.call(Method::GET, "/api/v1/events", Some(&member_key), None).await;
    assert_eq!(status, StatusCode::OK, "the member's key works (and is cached now)");

    let (status, user) = patch(&app, member, json!({"name": "  Ada Lovelace "})).await;
    assert_eq!(status, StatusCode::OK, "{user}");
    assert_eq!(
        (&user["name"], &user["role"], &user["is_active"]),
        (&json!("Ada Lovelace"), &json!("member"), &json!(true))
    );

    let (status, user) = patch(&app, member, json!({"role": "admin"})).await;
    assert_eq!(
        (status, &user["role"], &user["name"]),
        (StatusCode::OK, &json!("admin"), &json!("Ada Lovelace"))
    );
    let (status, _) = app.call(Method::GET, "/api/v1/users", Some(&member_key), None).await;
    assert_eq!(status, StatusCode::OK, "the promotion applies to the cached key at once");
    let (status, _) = patch(&app, member, json!({"role": "member"})).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app.call(Method::GET, "/api/v1/users", Some(&member_key), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "so does the demotion");
    let (status, body) = patch(&app, app.admin_id, json!({"name": "x"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = app
        .call(Method::PATCH, &user_path(app.admin_id), Some(&member_key), Some(json!({"name": "y"})))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "admins only");
    let (status, _) = app.call(Method::DELETE, &user_path(app.admin_id), Some(&member_key), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "admins only");

    let (status, user) = app.admin(Method::DELETE, &user_path(member), None).await;
    assert_eq!((status, &user["is_active"]), (StatusCode::OK, &json!(false)), "{user}");
    let (status, body) = app.call(Method::GET, "/api/v1/events", Some(&member_key), None).await;
    assert_eq!((status, &body["code"]), (StatusCode::UNAUTHORIZED, &json!("user_inactive")), "{body}");
    let (_, users) = app.admin(Method::GET, "/api/v1/users", None).await;
    assert_eq!(users["total"], 2, "a deactivated user is kept: {users}");

    let (status, _) = patch(&app, member, json!({"is_active": true})).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app.call(Method::GET, "/api/v1/events", Some(&member_key), None).await;
    assert_eq!(status, StatusCode::OK, "reactivated: the key works again");

    let (status, body) = app.admin(Method::DELETE, &user_path(Uuid::now_v7()), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (other, other_key) = herald::app::bootstrap(&app.state.store, "other org", "o@test.example", false)
        .await
        .expect("bootstrap")
        .expect("created");
    let (status, _) = patch(&app, other.admin.id, json!({"name": "mine"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "another organization's user");
    let (status, _) = app.call(Method::DELETE, &user_path(member), Some(other_key.expose()), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "another organization's admin");
}

async fn the_last_admin_stays(mode: Mode) {
    let app = TestApp::spawn(mode).await;
    let last_admin = |status: StatusCode, body: &Value| {
        assert_eq!((status, &body["code"]), (StatusCode::CONFLICT, &json!("last_admin")), "{body}");
        assert!(body["error"].as_str().is_some_and(|m| m.contains("admin")), "{body}");
    };
    let (status, body) = patch(&app, app.admin_id, json!({"role": "member"})).await;
    last_admin(status, &body);
    let (status, body) = patch(&app, app.admin_id, json!({"is_active": false})).await;
    last_admin(status, &body);
    let (status, body) = app.admin(Method::DELETE, &user_path(app.admin_id), None).await;
    last_admin(status, &body);
    let (_, users) = app.admin(Method::GET, "/api/v1/users", None).await;
    assert_eq!(
        (&users["users"][0]["role"], &users["users"][0]["is_active"]),
        (&json!("admin"), &json!(true))
    );

    // A deactivated admin does not count: the active one stays the last.
    let (second, second_key) = app.user_with_key("second@test.example", "admin").await;
    let (status, _) = patch(&app, second, json!({"is_active": false})).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = patch(&app, app.admin_id, json!({"role": "member"})).await;
    last_admin(status, &body);

    // With another active admin, the first may go; then the second is the last.
    let (status, _) = patch(&app, second, json!({"is_active": true})).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = app.admin(Method::DELETE, &user_path(app.admin_id), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = app.call(Method::DELETE, &user_path(second), Some(&second_key), None).await;
    last_admin(status, &body);
}

async fn user_changes_are_validated(mode: Mode) {
    let app = TestApp::spawn(mode).await;
    let (member, _) = app.user_with_key("ada@test.example", "member").await;
    for body in [
        json!({"role": "owner"}),
        json!({"name": ""}),
        json!({"name": "   "}),
        json!({"name": "x".repeat(201)}),
        json!({"name": "a\u{0}b"}),
        json!({"is_active": "no"}),
        json!({"email": "new@test.example"}),
        json!([]),
    ] {
        let (status, error) = patch(&app, member, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {error}");
        assert!(error["code"].is_string() && error["error"].is_string(), "{body}: {error}");
    }
    let (status, _) = app.admin(Method::PATCH, &user_path("not-a-uuid"), Some(json!({}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, user) = patch(&app, member, json!({})).await;
    assert_eq!((status, &user["email"]), (StatusCode::OK, &json!("ada@test.example")), "nothing to change");
}
