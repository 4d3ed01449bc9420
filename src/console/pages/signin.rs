//! Signing in and out. The sign-in form takes an API key or a JWT, posts it once (it is never put in
//! the browser's storage or in a URL), and the credential is checked by the API's authentication
//! ([`crate::auth::Authenticator::sign_in`]); a session starts and its cookie is set. The form's CSRF
//! token lives in a short-lived cookie of its own, since there is no session yet.

use std::time::Duration;

use axum::{
    extract::{Request, State},
    http::{HeaderMap, StatusCode, Uri, header},
    response::{IntoResponse, Redirect, Response},
};
use serde_json::json;

use super::{param, shown};
use crate::{
    console::{
        forms::{CsrfForm, forbidden_form, read_form, same_origin},
        render,
        session::{self, SIGN_IN_COOKIE, Session},
    },
    http::{ApiError, AppState},
};

/// How long a sign-in form may be left open.
const SIGN_IN_FORM_LIFETIME: Duration = Duration::from_secs(3600);

/// What the sign-in page says about a session that ended (`?ended=`).
fn ended_message(uri: &Uri) -> Option<&'static str> {
    match param(uri, "ended")?.as_str() {
        "expired" => Some("Your session ended. Sign in again."),
        "revoked" => {
            Some("The credential of your session is no longer valid (revoked, expired or deactivated).")
        }
        "signed_out" => Some("You are signed out."),
        _ => None,
    }
}

fn sign_in_page(
    state: &AppState,
    headers: &HeaderMap,
    status: StatusCode,
    message: Option<&str>,
    error: Option<&str>,
) -> Response {
    let token = session::random_token();
    let mut response = render::page(
        None,
        status,
        "sign_in.html",
        json!({"csrf": token, "message": message, "error": error}),
    );
    let cookie = session::set_cookie(
        &state.settings.console,
        headers,
        SIGN_IN_COOKIE,
        &token,
        "/console/sign-in",
        SIGN_IN_FORM_LIFETIME,
    );
    response.headers_mut().insert(header::SET_COOKIE, cookie);
    response
}

/// `GET /console/sign-in`.
pub(crate) async fn form(State(state): State<AppState>, headers: HeaderMap, uri: Uri) -> Response {
    sign_in_page(&state, &headers, StatusCode::OK, ended_message(&uri), None)
}

/// `POST /console/sign-in`: `credential` (an API key or a JWT) and the form's `csrf`.
pub(crate) async fn submit(State(state): State<AppState>, request: Request) -> Response {
    let headers = request.headers().clone();
    let expected = session::cookie(&headers, SIGN_IN_COOKIE).map(str::to_string);
    let fields = match read_form(request, &state).await {
        Ok(fields) => fields,
        Err(error) => return render::error_page(None, &error),
    };
    let csrf_ok = match (fields.get("csrf"), expected.as_deref()) {
        (Some(given), Some(expected)) => session::same_token(given, expected),
        _ => false,
    };
    if !csrf_ok || !same_origin(&headers) {
        return forbidden_form(None);
    }
    let Some(credential) = fields.get("credential").map(str::trim) else {
        return sign_in_page(
            &state,
            &headers,
            StatusCode::BAD_REQUEST,
            None,
            Some("Enter an API key or a JWT."),
        );
    };
    let (principal, kept, expires) = match state.auth.sign_in(credential).await {
        Ok(signed) => signed,
        Err(error) => {
            let error = ApiError::from(error);
            if error.status().is_server_error() {
                return render::error_page(None, &error);
            }
            let text = format!("{} ({})", error.message(), error.code());
            return sign_in_page(&state, &headers, error.status(), None, Some(&text));
        }
    };
    let token = match session::start(&state, &principal, kept, expires).await {
        Ok(token) => token,
        Err(error) => return render::error_page(None, &error),
    };
    let landing = if principal.is_admin() { "/console" } else { "/console/events" };
    let mut response = Redirect::to(landing).into_response();
    let settings = &state.settings.console;
    let cookie = session::set_cookie(
        settings,
        &headers,
        session::COOKIE,
        &token,
        "/console",
        settings.absolute_timeout.get(),
    );
    response.headers_mut().append(header::SET_COOKIE, cookie);
    response.headers_mut().append(
        header::SET_COOKIE,
        session::set_cookie(settings, &headers, SIGN_IN_COOKIE, "", "/console/sign-in", Duration::ZERO),
    );
    response
}

/// `POST /console/sign-out`: ends the session (its row is deleted) and clears the cookie.
pub(crate) async fn sign_out(
    State(state): State<AppState>,
    headers: HeaderMap,
    session: Session,
    CsrfForm(_): CsrfForm,
) -> Response {
    let result = async {
        state.store.delete_console_session(&session.token_hash).await?;
        let mut response = Redirect::to("/console/sign-in?ended=signed_out").into_response();
        response
            .headers_mut()
            .insert(header::SET_COOKIE, session::clear_cookie(&state.settings.console, &headers));
        Ok(response)
    }
    .await;
    shown(&session, result)
}
