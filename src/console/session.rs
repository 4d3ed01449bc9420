//! Console sessions: sign-in exchanges a credential for a random 256-bit token in an HttpOnly,
//! SameSite=Strict cookie (`Secure` behind TLS); the store keeps only the token's SHA-256, the
//! organization, what re-checks the credential ([`SessionCredential`]), the session's CSRF token and
//! its times. [`Session`] is the extractor of every signed-in page: it ends a session that was idle
//! for `console.idle_timeout` or reached its absolute end, and checks the credential again through
//! [`crate::auth::Authenticator::authenticate_session`] (a revoked key or a deactivated user is signed
//! out at once), so a page sees the same principal an API request with that credential would.

use std::time::Duration;

use axum::{
    extract::FromRequestParts,
    http::{HeaderMap, HeaderValue, header, request::Parts},
    response::{IntoResponse, Redirect, Response},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use super::render;
use crate::{
    auth::{Principal, SessionCredential},
    config::ConsoleSettings,
    domain,
    http::{ApiError, AppState},
    store::{ConsoleSession, StoreError},
};

/// The session cookie's name.
pub(crate) const COOKIE: &str = "herald_session";
/// The sign-in form's own CSRF cookie (there is no session yet to hold its token).
pub(crate) const SIGN_IN_COOKIE: &str = "herald_sign_in";

/// A signed-in browser, as a page sees it.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub(crate) principal: Principal,
    /// The token every form of this session must carry.
    pub(crate) csrf: String,
    /// The SHA-256 of the cookie's token (the stored session's key).
    pub(crate) token_hash: Vec<u8>,
    /// Who is signed in, to show: the user's email.
    pub(crate) email: String,
}

impl Session {
    pub(crate) fn is_admin(&self) -> bool {
        self.principal.is_admin()
    }
}

/// A fresh random token: 256 bits, URL-safe base64.
pub(crate) fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

pub(crate) fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Compares two tokens in time that does not depend on where they differ.
pub(crate) fn same_token(a: &str, b: &str) -> bool {
    let (a, b) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    a.iter().zip(b.iter()).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// A cookie's value from the request's `Cookie` headers.
pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// Whether cookies get `Secure`: always by setting, or when a trusted proxy says the request came
/// over TLS.
fn secure(settings: &ConsoleSettings, headers: &HeaderMap) -> bool {
    settings.secure_cookies
        || (settings.trust_forwarded_proto
            && headers
                .get("x-forwarded-proto")
                .and_then(|value| value.to_str().ok())
                .is_some_and(|proto| proto.eq_ignore_ascii_case("https")))
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Strict, for `path`, `Secure` when it should be.
pub(crate) fn set_cookie(
    settings: &ConsoleSettings,
    headers: &HeaderMap,
    name: &str,
    value: &str,
    path: &str,
    max_age: Duration,
) -> HeaderValue {
    let secure = if secure(settings, headers) { "; Secure" } else { "" };
    let text = format!(
        "{name}={value}; Path={path}; Max-Age={}; HttpOnly; SameSite=Strict{secure}",
        max_age.as_secs()
    );
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A `Set-Cookie` value that removes the session cookie.
pub(crate) fn clear_cookie(settings: &ConsoleSettings, headers: &HeaderMap) -> HeaderValue {
    set_cookie(settings, headers, COOKIE, "", "/console", Duration::ZERO)
}

/// Starts a session for a credential that signed in; returns the cookie's token.
pub(crate) async fn start(
    state: &AppState,
    principal: &Principal,
    credential: SessionCredential,
    credential_expires: Option<i64>,
) -> Result<String, ApiError> {
    let settings = &state.settings.console;
    let now = domain::now();
    let absolute = now + chrono::Duration::from_std(settings.absolute_timeout.get()).unwrap_or_default();
    let expires_at = credential_expires
        .and_then(|exp| DateTime::<Utc>::from_timestamp(exp, 0))
        .map_or(absolute, |exp| exp.min(absolute));
    let token = random_token();
    let (user_id, api_key_hash) = match credential {
        SessionCredential::User(id) => (Some(id), None),
        SessionCredential::ApiKey(hash) => (None, Some(hash)),
    };
    let session = ConsoleSession {
        token_hash: token_hash(&token),
        organization_id: principal.organization_id,
        user_id,
        api_key_hash,
        csrf_token: random_token(),
        created_at: now,
        last_seen_at: now,
        expires_at,
    };
    state.store.create_console_session(&session).await?;
    Ok(token)
}

/// Where a request without a (valid) session is sent: the sign-in page. A cookie that was sent and
/// is no good (`reason`) is removed; a request that sent none changes no cookie (another site's form
/// gets no cookie with SameSite=Strict, and must not sign the browser out).
fn to_sign_in(state: &AppState, headers: &HeaderMap, reason: Option<&str>) -> Response {
    let Some(reason) = reason else { return Redirect::to("/console/sign-in").into_response() };
    let mut response = Redirect::to(&format!("/console/sign-in?ended={reason}")).into_response();
    response.headers_mut().insert(header::SET_COOKIE, clear_cookie(&state.settings.console, headers));
    response
}

/// How often a session's `last_seen_at` is written at most: a fraction of the idle timeout, at most a
/// minute (the idle end is that much less exact).
fn touch_interval(idle: Duration) -> Duration {
    (idle / 30).min(Duration::from_secs(60))
}

impl FromRequestParts<AppState> for Session {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        if let Some(session) = parts.extensions.get::<Session>() {
            return Ok(session.clone());
        }
        let headers = &parts.headers;
        let Some(token) = cookie(headers, COOKIE).filter(|token| !token.is_empty()) else {
            return Err(to_sign_in(state, headers, None));
        };
        let hash = token_hash(token);
        let unavailable = |error: StoreError| render::error_page(None, &ApiError::from(error));
        let Some(stored) = state.store.find_console_session(&hash).await.map_err(unavailable)? else {
            return Err(to_sign_in(state, headers, Some("expired")));
        };
        let now = domain::now();
        let idle = state.settings.console.idle_timeout.get();
        let idle_since = (now - stored.last_seen_at).to_std().unwrap_or_default();
        if now >= stored.expires_at || idle_since >= idle {
            state.store.delete_console_session(&hash).await.map_err(unavailable)?;
            return Err(to_sign_in(state, headers, Some("expired")));
        }
        let credential = match (stored.user_id, stored.api_key_hash.clone()) {
            (Some(user_id), _) => SessionCredential::User(user_id),
            (None, Some(key_hash)) => SessionCredential::ApiKey(key_hash),
            (None, None) => return Err(to_sign_in(state, headers, Some("expired"))),
        };
        let principal = match state.auth.authenticate_session(&credential).await {
            Ok(principal) if principal.organization_id == stored.organization_id => principal,
            Ok(_) | Err(crate::auth::AuthError::Unauthenticated { .. }) => {
                state.store.delete_console_session(&hash).await.map_err(unavailable)?;
                return Err(to_sign_in(state, headers, Some("revoked")));
            }
            Err(other) => return Err(render::error_page(None, &ApiError::from(other))),
        };
        if idle_since >= touch_interval(idle) {
            state.store.touch_console_session(&hash, now).await.map_err(unavailable)?;
        }
        let email = match principal.user_id() {
            Some(id) => state.store.get_user(id).await.map_err(unavailable)?.map(|user| user.email),
            None => None,
        };
        let session = Session {
            principal,
            csrf: stored.csrf_token,
            token_hash: hash,
            email: email.unwrap_or_default(),
        };
        parts.extensions.insert(session.clone());
        Ok(session)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_among_others_and_tokens_compare_whole() {
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, HeaderValue::from_static("a=1; herald_session=tok; b=2"));
        assert_eq!(cookie(&headers, COOKIE), Some("tok"));
        assert_eq!(cookie(&headers, "herald"), None);
        assert!(same_token("abc", "abc"));
        assert!(!same_token("abc", "abd"));
        assert!(!same_token("abc", ""));
        assert_ne!(random_token(), random_token());
        assert_eq!(random_token().len(), 43, "32 bytes of base64 without padding");
    }

    #[test]
    fn cookies_are_http_only_strict_and_secure_behind_tls() {
        let settings = ConsoleSettings::default();
        let plain = HeaderMap::new();
        let value = set_cookie(&settings, &plain, COOKIE, "t", "/console", Duration::from_secs(60));
        let text = value.to_str().expect("ascii");
        assert!(text.contains("HttpOnly") && text.contains("SameSite=Strict"), "{text}");
        assert!(!text.contains("Secure"), "{text}");
        let mut forwarded = HeaderMap::new();
        forwarded.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        let untrusted = set_cookie(&settings, &forwarded, COOKIE, "t", "/console", Duration::ZERO);
        assert!(
            !untrusted.to_str().expect("ascii").contains("Secure"),
            "the header is not trusted by default"
        );
        let trusting = ConsoleSettings { trust_forwarded_proto: true, ..ConsoleSettings::default() };
        let secure = set_cookie(&trusting, &forwarded, COOKIE, "t", "/console", Duration::ZERO);
        assert!(secure.to_str().expect("ascii").ends_with("; Secure"));
        let always = ConsoleSettings { secure_cookies: true, ..ConsoleSettings::default() };
        assert!(
            set_cookie(&always, &plain, COOKIE, "t", "/", Duration::ZERO)
                .to_str()
                .expect("a")
                .contains("Secure")
        );
    }
}
