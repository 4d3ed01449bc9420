//! HS256 JWT verification, Supabase-compatible, on [`jsonwebtoken`]: the algorithm is pinned (a token
//! claiming any other `alg`, including `none`, is refused before its signature is looked at), the
//! signature is checked in constant time, `exp` is required and `nbf` honoured (30 s leeway each, against
//! the clock the caller passes), and `aud` must name the configured audience. Only `service_role` tokens
//! may omit `aud` (Supabase issues them without one).
//!
//! jsonwebtoken's own crypto backends bring RSA, elliptic curves and EdDSA (`rust_crypto`) or a C library
//! (`aws_lc_rs`); Herald needs HMAC-SHA256 alone, so it installs `HS256_ONLY`, a provider on the `hmac`
//! and `sha2` crates it already uses for webhook signatures.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, KeyInit, Mac};
use jsonwebtoken::{
    Algorithm, DecodingKey, EncodingKey, Validation,
    crypto::{CryptoProvider, JwtSigner, KeyUtils},
    errors::{Error, ErrorKind},
    signature,
};
use serde::Deserialize;
use sha2::Sha256;

/// Clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECONDS: i64 = 30;
/// The role claim of an admin token with no user behind it.
pub const SERVICE_ROLE: &str = "service_role";

#[derive(Debug, Clone)]
pub struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
    audience: String,
}

/// The claims Herald reads.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Claims {
    pub sub: Option<String>,
    pub role: Option<String>,
    pub exp: i64,
    pub nbf: Option<i64>,
    #[serde(default)]
    aud: Option<Audience>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error(
        "malformed JWT: expected header.claims.signature in base64url, the claims a JSON object with a numeric exp (expiry, Unix seconds)"
    )]
    Malformed,
    #[error("JWT algorithm must be HS256")]
    Algorithm,
    #[error("JWT signature does not verify")]
    Signature,
    #[error("JWT has expired")]
    Expired,
    #[error("JWT is not valid yet")]
    NotYetValid,
    #[error("JWT audience does not match")]
    Audience,
}

impl JwtVerifier {
    pub fn new(secret: &str, audience: &str) -> Self {
        // Fails only if a provider is installed already: Herald's own, by an earlier verifier.
        let _ = CryptoProvider::install_default(&HS256_ONLY);
        let mut validation = Validation::new(Algorithm::HS256);
        // Times are checked below against the caller's clock, with Herald's leeway, and then the
        // audience (which only user tokens must carry), in that order, so each token gets one reason.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        let key = DecodingKey::from_secret(secret.as_bytes())
            .expect("auth.jwt_secret is validated to hold at least 16 characters");
        Self { key, validation, audience: audience.to_string() }
    }

    /// Verifies `token` at Unix time `now`.
    pub fn verify(&self, token: &str, now: i64) -> Result<Claims, JwtError> {
        let claims = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|error| classify(&error, token))?
            .claims;
        if claims.exp + LEEWAY_SECONDS <= now {
            return Err(JwtError::Expired);
        }
        if claims.nbf.is_some_and(|nbf| nbf - LEEWAY_SECONDS > now) {
            return Err(JwtError::NotYetValid);
        }
        let audience_ok = match &claims.aud {
            Some(Audience::One(aud)) => *aud == self.audience,
            Some(Audience::Many(auds)) => auds.contains(&self.audience),
            None => claims.role.as_deref() == Some(SERVICE_ROLE),
        };
        if !audience_ok {
            return Err(JwtError::Audience);
        }
        Ok(claims)
    }
}

/// Herald's reason for jsonwebtoken's refusal. A header jsonwebtoken cannot read because its `alg` is
/// unknown to it (`none`) is an algorithm error, not a malformed token.
fn classify(error: &Error, token: &str) -> JwtError {
    match error.kind() {
        ErrorKind::InvalidAlgorithm | ErrorKind::UnsupportedAlgorithm => JwtError::Algorithm,
        ErrorKind::InvalidSignature => JwtError::Signature,
        ErrorKind::Json(_) if claims_another_algorithm(token) => JwtError::Algorithm,
        _ => JwtError::Malformed,
    }
}

fn claims_another_algorithm(token: &str) -> bool {
    #[derive(Deserialize)]
    struct Header {
        alg: String,
    }
    let header = token.split('.').next().and_then(|part| URL_SAFE_NO_PAD.decode(part).ok());
    header
        .and_then(|bytes| serde_json::from_slice::<Header>(&bytes).ok())
        .is_some_and(|header| header.alg != "HS256")
}

/// jsonwebtoken's cryptography for HS256 verification alone.
static HS256_ONLY: CryptoProvider = CryptoProvider {
    signer_factory: no_signer,
    verifier_factory: hs256_verifier,
    key_utils: KeyUtils::new_unimplemented(),
};

/// Herald verifies tokens and never issues any.
fn no_signer(_: &Algorithm, _: &EncodingKey) -> jsonwebtoken::errors::Result<Box<dyn JwtSigner>> {
    Err(ErrorKind::UnsupportedAlgorithm.into())
}

fn hs256_verifier(
    algorithm: &Algorithm,
    key: &DecodingKey,
) -> jsonwebtoken::errors::Result<Box<dyn jsonwebtoken::crypto::JwtVerifier>> {
    if *algorithm != Algorithm::HS256 {
        return Err(ErrorKind::InvalidAlgorithm.into());
    }
    let mac =
        Hmac::<Sha256>::new_from_slice(key.try_get_as_bytes()?).map_err(|_| ErrorKind::InvalidKeyFormat)?;
    Ok(Box::new(Hs256(mac)))
}

/// An HMAC-SHA256 keyed with the JWT secret.
struct Hs256(Hmac<Sha256>);

impl signature::Verifier<Vec<u8>> for Hs256 {
    fn verify(&self, message: &[u8], tag: &Vec<u8>) -> Result<(), signature::Error> {
        let mut mac = self.0.clone();
        mac.update(message);
        // Constant-time comparison.
        mac.verify_slice(tag).map_err(|_| signature::Error::new())
    }
}

impl jsonwebtoken::crypto::JwtVerifier for Hs256 {
    fn algorithm(&self) -> Algorithm {
        Algorithm::HS256
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const SECRET: &str = "super-secret-jwt-token-with-at-least-32-characters-long";

    fn sign(header: serde_json::Value, claims: serde_json::Value, secret: &str) -> String {
        let head = URL_SAFE_NO_PAD.encode(header.to_string());
        let body = URL_SAFE_NO_PAD.encode(claims.to_string());
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("key");
        mac.update(format!("{head}.{body}").as_bytes());
        format!("{head}.{body}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
    }

    fn hs256() -> serde_json::Value {
        json!({"alg": "HS256", "typ": "JWT"})
    }

    fn verifier() -> JwtVerifier {
        JwtVerifier::new(SECRET, "authenticated")
    }

    #[test]
    fn a_supabase_user_token_verifies() {
        let token = sign(
            hs256(),
            json!({"sub": "u1", "role": "authenticated", "aud": "authenticated", "exp": 2000}),
            SECRET,
        );
        let claims = verifier().verify(&token, 1000).expect("valid");
        assert_eq!((claims.sub.as_deref(), claims.role.as_deref()), (Some("u1"), Some("authenticated")));
        let many = sign(hs256(), json!({"sub": "u1", "aud": ["x", "authenticated"], "exp": 2000}), SECRET);
        assert!(verifier().verify(&many, 1000).is_ok());
    }

    #[test]
    fn service_role_tokens_may_omit_the_audience() {
        let token = sign(hs256(), json!({"role": "service_role", "iss": "supabase", "exp": 2000}), SECRET);
        assert!(verifier().verify(&token, 1000).is_ok());
        let user = sign(hs256(), json!({"sub": "u1", "role": "authenticated", "exp": 2000}), SECRET);
        assert_eq!(verifier().verify(&user, 1000), Err(JwtError::Audience));
    }

    #[test]
    fn bad_tokens_are_refused_for_the_right_reason() {
        let claims = json!({"sub": "u1", "aud": "authenticated", "exp": 2000});
        assert_eq!(
            verifier().verify(&sign(hs256(), claims.clone(), "another-secret"), 1000),
            Err(JwtError::Signature)
        );
        assert_eq!(
            verifier().verify(&sign(json!({"alg": "none"}), claims.clone(), SECRET), 1000),
            Err(JwtError::Algorithm)
        );
        assert_eq!(
            verifier().verify(&sign(json!({"alg": "HS512"}), claims.clone(), SECRET), 1000),
            Err(JwtError::Algorithm)
        );
        assert_eq!(verifier().verify(&sign(hs256(), claims.clone(), SECRET), 2030), Err(JwtError::Expired));
        assert!(verifier().verify(&sign(hs256(), claims.clone(), SECRET), 2029).is_ok(), "30 s leeway");
        let early = json!({"sub": "u1", "aud": "authenticated", "exp": 5000, "nbf": 1100});
        assert_eq!(verifier().verify(&sign(hs256(), early, SECRET), 1000), Err(JwtError::NotYetValid));
        let wrong_audience = json!({"sub": "u1", "aud": "anon", "exp": 2000});
        assert_eq!(verifier().verify(&sign(hs256(), wrong_audience, SECRET), 1000), Err(JwtError::Audience));
        let no_expiry = json!({"sub": "u1", "aud": "authenticated"});
        assert_eq!(verifier().verify(&sign(hs256(), no_expiry, SECRET), 1000), Err(JwtError::Malformed));
        for garbage in ["", "a.b", "a.b.c.d", "!!!.???.***"] {
            assert_eq!(verifier().verify(garbage, 1000), Err(JwtError::Malformed), "{garbage}");
        }
        let token = sign(hs256(), claims, SECRET);
        let tampered = token.replacen('.', ".e30", 1);
        assert!(verifier().verify(&tampered, 1000).is_err());
    }
}
