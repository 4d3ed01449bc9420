//! Users (admins): the list, adding a user (email, name, role), changing a role, deactivating and
//! reactivating. Through `crate::http::users` (the last active admin stays, `409 last_admin`).

use axum::{
    extract::{Path, State},
    http::{StatusCode, Uri},
    response::Response,
};
use serde_json::{Value, json};

use super::{Answer, admin, back, notice, path_id, request, shown};
use crate::{
    console::{
        forms::{CsrfForm, query},
        render,
        session::Session,
    },
    http::{
        AppState,
        extract::{Json, Path as ApiPath, Query},
        page::PageQuery,
        users as api,
    },
};

/// `GET /console/users`.
pub(crate) async fn list(State(state): State<AppState>, session: Session, uri: Uri) -> Response {
    let result = async {
        let paging: PageQuery = query(&uri, &[])?;
        let page = api::list(State(state.clone()), admin(&session)?, Query(paging)).await?.json();
        Ok(render::page(
            Some(&session),
            StatusCode::OK,
            "users.html",
            json!({"active": "users", "notice": notice(&uri), "page": page, "me_id": session.principal.user_id()}),
        ))
    }
    .await;
    shown(&session, result)
}

/// `POST /console/users`: `email`, `name`, `role`.
pub(crate) async fn create(
    State(state): State<AppState>,
    session: Session,
    CsrfForm(fields): CsrfForm,
) -> Response {
    let result = async {
        let mut body = fields.object(&["email", "name", "role"]);
        body.insert("email".into(), json!(fields.get("email").unwrap_or_default()));
        body.insert("role".into(), json!(fields.get("role").unwrap_or("member")));
        let _answer =
            api::create(State(state.clone()), admin(&session)?, Json(request(Value::Object(body))?)).await?;
        Ok(back("/console/users", "user_added"))
    }
    .await;
    shown(&session, result)
}

/// `POST /console/users/{id}`: `role` and/or `is_active` (`true`/`false`).
pub(crate) async fn update(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    CsrfForm(fields): CsrfForm,
) -> Response {
    let result = async {
        let id = path_id(&id)?;
        let mut body = fields.object(&["role"]);
        if let Some(active) = fields.get("is_active") {
            body.insert("is_active".into(), json!(active == "true"));
        }
        let _answer = api::update(
            State(state.clone()),
            admin(&session)?,
            ApiPath(id),
            Json(request(Value::Object(body))?),
        )
        .await?;
        Ok(back("/console/users", "user_updated"))
    }
    .await;
    shown(&session, result)
}
