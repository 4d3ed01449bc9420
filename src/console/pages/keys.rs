//! API keys (every user, their own; admins may list the organization's): the list with prefix,
//! purpose, last use and request count; creating one with name, purpose and expiry (the key shown
//! once); revoking. Through `crate::http::api_keys`, with seed 004's rules.

use axum::{
    extract::{Path, State},
    http::{StatusCode, Uri},
    response::Response,
};
use serde_json::{Value, json};

use super::{Answer, back, notice, param, path_id, request, shown};
use crate::{
    console::{
        forms::{CsrfForm, as_utc, query},
        render,
        session::Session,
    },
    http::{
        AppState, api_keys as api,
        auth::Auth,
        extract::{Json, Path as ApiPath, Query},
        page::PageQuery,
    },
};

/// The purposes seed 004 allows, as the form offers them.
const PURPOSES: [&str; 4] = ["zapier", "n8n", "google sheets", "custom"];

/// `GET /console/api-keys` (`?scope=organization` for an admin: every user's keys).
pub(crate) async fn list(State(state): State<AppState>, session: Session, uri: Uri) -> Response {
    let result = async {
        let organization = param(&uri, "scope").as_deref() == Some("organization");
        let filter = if organization { json!({"scope": "organization"}) } else { json!({}) };
        let paging: PageQuery = query(&uri, &[])?;
        let page = api::list(State(state.clone()), Auth(session.principal), Query(request(filter)?), Query(paging))
            .await?
            .json();
        Ok(render::page(
            Some(&session),
            StatusCode::OK,
            "keys.html",
            json!({"active": "keys", "notice": notice(&uri), "page": page, "organization": organization, "purposes": PURPOSES}),
        ))
    }
    .await;
    shown(&session, result)
}

/// `POST /console/api-keys`: `name`, `purpose`, `expires_at` (optional, UTC).
pub(crate) async fn create(
    State(state): State<AppState>,
    session: Session,
    CsrfForm(fields): CsrfForm,
) -> Response {
    let result = async {
        let mut body = fields.object(&["name", "purpose"]);
        body.insert("name".into(), json!(fields.get("name").unwrap_or_default()));
        if let Some(expires) = fields.get("expires_at") {
            body.insert("expires_at".into(), json!(as_utc(expires)));
        }
        let created = api::create(
            State(state.clone()),
            Auth(session.principal),
            Query(request(json!({}))?),
            Json(request(Value::Object(body))?),
        )
        .await?
        .json();
        Ok(render::page(
            Some(&session),
            StatusCode::CREATED,
            "key_created.html",
            json!({"active": "keys", "key": created}),
        ))
    }
    .await;
    shown(&session, result)
}

/// `POST /console/api-keys/{id}/revoke`.
pub(crate) async fn revoke(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    CsrfForm(_): CsrfForm,
) -> Response {
    let result = async {
        let id = path_id(&id)?;
        let _answer = api::revoke(State(state.clone()), Auth(session.principal), ApiPath(id)).await?;
        Ok(back("/console/api-keys", "revoked"))
    }
    .await;
    shown(&session, result)
}
