//! Who is calling, and what they may do. A request carries an API key (`Authorization: Bearer sk_live_...`
//! or `X-API-Key`) or a Supabase-style JWT (`Authorization: Bearer eyJ...`); [`Authenticator`] turns it into
//! a [`Principal`]: an organization and an actor (a user with a role, or the service role). Every refusal
//! is a 401 with its own `code`.
//!
//! Verified keys (and JWT users) are cached for `auth.key_cache_ttl` in [`moka`] caches bounded to
//! `CACHE_CAPACITY` entries, so the request path reads the database once per key per TTL (concurrent
//! requests with an uncached key wait on one read) and never writes: usage is counted in memory
//! ([`usage`]). A TTL of zero caches nothing. Revoking a key removes it from this instance's cache at
//! once; other instances stop accepting it within the TTL.

mod error;
pub(crate) mod jwt;
mod rate_limit;
pub(crate) mod usage;

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use moka::future::Cache;
use uuid::Uuid;

pub use error::AuthError;
use jwt::{JwtError, JwtVerifier, SERVICE_ROLE};
use rate_limit::RateLimiter;
use usage::UsageRecorder;

use crate::{
    config::Settings,
    domain::{ApiKeyError, ApiKeySecret, Role},
    store::{AccountStore, KeyOwner, StoreError, User},
};

/// Entries each cache (keys, users) holds at most; moka evicts the least used first.
const CACHE_CAPACITY: u64 = 100_000;

/// An authenticated caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Principal {
    pub organization_id: Uuid,
    pub actor: Actor,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    /// A user, by API key or JWT.
    User { id: Uuid, role: Role },
    /// A `service_role` JWT: an admin with no user of its own. It names its organization through the
    /// `user_id` (or `organization_id`) query parameter.
    ServiceRole,
}

impl Principal {
    pub fn is_admin(&self) -> bool {
        matches!(self.actor, Actor::ServiceRole | Actor::User { role: Role::Admin, .. })
    }

    /// The caller's own user, if it has one.
    pub fn user_id(&self) -> Option<Uuid> {
        match self.actor {
            Actor::User { id, .. } => Some(id),
            Actor::ServiceRole => None,
        }
    }

    pub fn require_admin(&self) -> Result<(), AuthError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(AuthError::forbidden("this endpoint requires the admin role"))
        }
    }
}

/// Query parameters through which a service-role token names the user or organization it acts on.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServiceTarget {
    pub user_id: Option<Uuid>,
    pub organization_id: Option<Uuid>,
}

/// What a console session keeps of the credential it was signed in with, to check it on every request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionCredential {
    /// The SHA-256 of an API key (as stored with the key).
    ApiKey(Vec<u8>),
    /// The user a JWT named.
    User(Uuid),
}

/// An API key's text, parsed (its checksum checked) before any lookup.
fn parse_key(text: &str) -> Result<ApiKeySecret, AuthError> {
    ApiKeySecret::parse(text).map_err(|error| match error {
        ApiKeyError::Malformed => unauthorized("api_key_malformed", &error.to_string()),
        ApiKeyError::BadChecksum => unauthorized("api_key_checksum", &error.to_string()),
    })
}

/// A cached JWT subject: the user and whether their organization is active.
type CachedUser = (User, bool);

#[derive(Debug)]
pub struct Authenticator {
    store: Arc<dyn AccountStore>,
    /// Verified keys by hash.
    keys: Cache<Vec<u8>, KeyOwner>,
    users: Cache<Uuid, CachedUser>,
    usage: Arc<UsageRecorder>,
    limiter: RateLimiter,
    jwt: Option<JwtVerifier>,
}

fn unauthorized(code: &'static str, message: &str) -> AuthError {
    AuthError::unauthorized(code, message)
}

impl Authenticator {
    pub fn new(settings: &Settings, store: Arc<dyn AccountStore>) -> Self {
        let auth = &settings.auth;
        Self {
            store,
            keys: cache(auth.key_cache_ttl.get(), CACHE_CAPACITY),
            users: cache(auth.key_cache_ttl.get(), CACHE_CAPACITY),
            usage: Arc::new(UsageRecorder::default()),
            limiter: RateLimiter::new(auth.rate_limit_per_second, auth.rate_limit_burst),
            jwt: auth.jwt_secret.as_ref().map(|secret| JwtVerifier::new(secret.expose(), &auth.jwt_audience)),
        }
    }

    pub fn usage(&self) -> &Arc<UsageRecorder> {
        &self.usage
    }

    /// Forgets a revoked key at once on this instance.
    pub fn forget_key(&self, key_id: Uuid) {
        forget_key(&self.keys, key_id);
    }

    /// Forgets a changed user (role, activity) and their keys at once on this instance.
    pub async fn forget_user(&self, user_id: Uuid) {
        self.users.invalidate(&user_id).await;
        if self.keys.invalidate_entries_if(move |_, owner| owner.key.user_id == user_id).is_err() {
            self.keys.invalidate_all();
        }
    }

    /// Authenticates a bearer token (API key or JWT) or an `X-API-Key` value.
    pub async fn authenticate(
        &self,
        credential: &str,
        target: ServiceTarget,
    ) -> Result<Principal, AuthError> {
        if credential.starts_with("sk_") {
            self.authenticate_key(credential).await
        } else if credential.matches('.').count() == 2 {
            self.authenticate_jwt(credential, target).await
        } else {
            Err(unauthorized("api_key_malformed", "malformed API key (expected sk_live_...) or JWT"))
        }
    }

    /// Signs a console session in: the principal of a credential, and what the session keeps of it to
    /// check it again on each request (and, for a JWT, when the token expires). A service-role token,
    /// which maps to no user, cannot sign in.
    pub async fn sign_in(
        &self,
        credential: &str,
    ) -> Result<(Principal, SessionCredential, Option<i64>), AuthError> {
        if credential.starts_with("sk_") {
            let hash = parse_key(credential)?.hash();
            let principal = self.authenticate_key_hash(&hash).await?;
            return Ok((principal, SessionCredential::ApiKey(hash), None));
        }
        let claims = self.verify_jwt(credential)?;
        if claims.role.as_deref() == Some(SERVICE_ROLE) {
            return Err(AuthError::bad_request(
                "service_role_not_allowed",
                "a service-role token maps to no user and cannot sign in; use a user's API key or JWT",
            ));
        }
        let principal = self.jwt_principal(&claims).await?;
        let user_id = principal.user_id().unwrap_or_default();
        Ok((principal, SessionCredential::User(user_id), Some(claims.exp)))
    }

    /// Checks a console session's credential again, with the same rules as a request's (a revoked or
    /// expired key, a deactivated user or organization: refused).
    pub async fn authenticate_session(&self, credential: &SessionCredential) -> Result<Principal, AuthError> {
        match credential {
            SessionCredential::ApiKey(hash) => self.authenticate_key_hash(hash).await,
            SessionCredential::User(user_id) => self.user_principal(*user_id).await,
        }
    }

    async fn authenticate_key(&self, text: &str) -> Result<Principal, AuthError> {
        let hash = parse_key(text)?.hash();
        self.authenticate_key_hash(&hash).await
    }

    async fn authenticate_key_hash(&self, hash: &[u8]) -> Result<Principal, AuthError> {
        // An unknown key is not cached (`NotFound` is an error, and errors are not).
        let load = async { self.store.find_key_by_hash(hash).await?.ok_or(StoreError::NotFound) };
        let owner =
            self.keys.try_get_with_by_ref(hash, load).await.map_err(|error| {
                match StoreError::from(error) {
                    StoreError::NotFound => unauthorized("api_key_invalid", "unknown API key"),
                    other => other.into(),
                }
            })?;
        let now = Utc::now();
        if owner.key.revoked_at.is_some() {
            return Err(unauthorized("api_key_revoked", "API key revoked"));
        }
        if !owner.key.is_active {
            return Err(unauthorized("api_key_inactive", "API key is deactivated"));
        }
        if owner.key.expires_at.is_some_and(|expires| expires <= now) {
            return Err(unauthorized("api_key_expired", "API key expired"));
        }
        if !owner.user_is_active {
            return Err(unauthorized("user_inactive", "the key's user is deactivated"));
        }
        if !owner.organization_is_active {
            return Err(unauthorized("organization_inactive", "the key's organization is deactivated"));
        }
        self.limiter.check(owner.key.id).map_err(AuthError::too_many_requests)?;
        self.usage.record(owner.key.id, crate::domain::now());
        Ok(Principal {
            organization_id: owner.key.organization_id,
            actor: Actor::User { id: owner.key.user_id, role: owner.user_role },
        })
    }

    async fn authenticate_jwt(&self, token: &str, target: ServiceTarget) -> Result<Principal, AuthError> {
        let claims = self.verify_jwt(token)?;
        if claims.role.as_deref() == Some(SERVICE_ROLE) {
            return self.service_principal(target).await;
        }
        self.jwt_principal(&claims).await
    }

    fn verify_jwt(&self, token: &str) -> Result<jwt::Claims, AuthError> {
        if token.matches('.').count() != 2 {
            return Err(unauthorized("api_key_malformed", "malformed API key (expected sk_live_...) or JWT"));
        }
        let verifier = self.jwt.as_ref().ok_or_else(|| {
            unauthorized(
                "jwt_disabled",
                "JWT authentication is not configured (auth.jwt_secret); use an API key",
            )
        })?;
        verifier.verify(token, Utc::now().timestamp()).map_err(|error| match error {
            JwtError::Expired => unauthorized("jwt_expired", &error.to_string()),
            other => unauthorized("jwt_invalid", &other.to_string()),
        })
    }

    /// The user a (verified, non-service-role) JWT names.
    async fn jwt_principal(&self, claims: &jwt::Claims) -> Result<Principal, AuthError> {
        let user_id = claims
            .sub
            .as_deref()
            .and_then(|sub| Uuid::parse_str(sub).ok())
            .ok_or_else(|| unauthorized("jwt_unknown_user", "the JWT's subject is not a Herald user"))?;
        self.user_principal(user_id).await
    }

    /// A user as a principal, if they and their organization are active.
    async fn user_principal(&self, user_id: Uuid) -> Result<Principal, AuthError> {
        let (user, organization_active) = self.jwt_user(user_id).await?;
        if !user.is_active {
            return Err(unauthorized("user_inactive", "this user is deactivated"));
        }
        if !organization_active {
            return Err(unauthorized("organization_inactive", "the user's organization is deactivated"));
        }
        Ok(Principal {
            organization_id: user.organization_id,
            actor: Actor::User { id: user.id, role: user.role },
        })
    }

    async fn jwt_user(&self, user_id: Uuid) -> Result<CachedUser, AuthError> {
        let load = async {
            let user = self.store.get_user(user_id).await?.ok_or(StoreError::NotFound)?;
            let organization = self.store.get_organization(user.organization_id).await?;
            Ok::<_, StoreError>((user, organization.is_some_and(|org| org.is_active)))
        };
        self.users.try_get_with(user_id, load).await.map_err(|error| match StoreError::from(error) {
            StoreError::NotFound => {
                unauthorized("jwt_unknown_user", "the JWT's subject is not a Herald user")
            }
            other => other.into(),
        })
    }

    /// A service-role token acts as an admin of the organization its `user_id` (or `organization_id`)
    /// parameter names.
    async fn service_principal(&self, target: ServiceTarget) -> Result<Principal, AuthError> {
        let organization_id = match (target.user_id, target.organization_id) {
            (Some(user_id), _) => {
                self.store
                    .get_user(user_id)
                    .await?
                    .ok_or_else(|| AuthError::not_found("user not found"))?
                    .organization_id
            }
            (None, Some(organization_id)) => {
                self.store
                    .get_organization(organization_id)
                    .await?
                    .ok_or_else(|| AuthError::not_found("organization not found"))?
                    .id
            }
            (None, None) => {
                return Err(AuthError::bad_request(
                    "user_id_required",
                    "user_id is required: service-role tokens map to no user (or pass organization_id)",
                ));
            }
        };
        Ok(Principal { organization_id, actor: Actor::ServiceRole })
    }
}

/// A cache of at most `capacity` entries, each kept for `ttl` (zero: nothing is kept, though concurrent
/// loads of one key still share one read).
fn cache<K, V>(ttl: Duration, capacity: u64) -> Cache<K, V>
where
    K: std::hash::Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    Cache::builder().max_capacity(capacity).time_to_live(ttl).support_invalidation_closures().build()
}

/// Drops every cached entry of the key `key_id`; later reads never see them.
fn forget_key(keys: &Cache<Vec<u8>, KeyOwner>, key_id: Uuid) {
    if keys.invalidate_entries_if(move |_, owner| owner.key.id == key_id).is_err() {
        // Only without `support_invalidation_closures`, which `cache` always sets.
        keys.invalidate_all();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::{config::HumanDuration, test_store::TestStore};

    /// An authenticator on a fresh SQLite store (kept alive by the first item), its bootstrap admin's key,
    /// and that key's id.
    async fn authenticator(ttl: Duration) -> (TestStore, Authenticator, String, Uuid) {
        let sqlite = crate::test_store::with_organization(|settings| {
            settings.auth.key_cache_ttl = HumanDuration(ttl);
        })
        .await;
        let key = sqlite.admin_key.expose().to_string();
        let owner =
            sqlite.store.find_key_by_hash(&sqlite.admin_key.hash()).await.expect("read").expect("stored");
        let auth = Authenticator::new(&sqlite.settings, sqlite.store.clone());
        (sqlite, auth, key, owner.key.id)
    }

    async fn code(auth: &Authenticator, key: &str) -> Option<&'static str> {
        auth.authenticate(key, ServiceTarget::default()).await.err().map(|error| match error {
            AuthError::Unauthenticated { code, .. } => code,
            other => panic!("expected a refused credential, got {other:?}"),
        })
    }

    #[tokio::test]
    async fn verified_keys_are_cached_for_the_ttl_and_forgotten_at_once() {
        let (_sqlite, auth, key, key_id) = authenticator(Duration::from_millis(300)).await;
        assert_eq!(code(&auth, &key).await, None);
        auth.store.revoke_api_key(key_id, crate::domain::now()).await.expect("revoke");
        assert_eq!(code(&auth, &key).await, None, "cached: the store is not read again within the TTL");
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert_eq!(code(&auth, &key).await, Some("api_key_revoked"), "expired: the store is read again");

        let (_sqlite, auth, key, key_id) = authenticator(Duration::from_secs(600)).await;
        assert_eq!(code(&auth, &key).await, None);
        auth.store.revoke_api_key(key_id, crate::domain::now()).await.expect("revoke");
        auth.forget_key(key_id);
        assert_eq!(
            code(&auth, &key).await,
            Some("api_key_revoked"),
            "revocation on this instance is immediate"
        );
    }

    #[tokio::test]
    async fn a_zero_ttl_caches_nothing() {
        let (_sqlite, auth, key, key_id) = authenticator(Duration::ZERO).await;
        assert_eq!(code(&auth, &key).await, None);
        auth.store.revoke_api_key(key_id, crate::domain::now()).await.expect("revoke");
        assert_eq!(code(&auth, &key).await, Some("api_key_revoked"));
        let unknown = ApiKeySecret::generate();
        assert_eq!(code(&auth, unknown.expose()).await, Some("api_key_invalid"));
    }

    #[tokio::test]
    async fn capacity_is_bounded_and_concurrent_misses_load_once() {
        let bounded = cache::<u32, u32>(Duration::from_secs(60), 3);
        for i in 0..10 {
            bounded.insert(i, i).await;
        }
        bounded.run_pending_tasks().await;
        assert!(bounded.entry_count() <= 3, "{} entries", bounded.entry_count());

        let shared = cache::<u32, u32>(Duration::from_secs(60), 3);
        let loads = AtomicUsize::new(0);
        let load = || async {
            loads.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok::<_, StoreError>(7)
        };
        let results = futures_util::future::join_all((0..8).map(|_| shared.try_get_with(1, load()))).await;
        assert!(results.iter().all(|result| matches!(result, Ok(7))));
        assert_eq!(loads.load(Ordering::SeqCst), 1, "one load for eight concurrent misses");
    }
}
