//! Signing and verifying webhook payloads, for Herald's deliveries and for Rust receivers.
//!
//! Every delivery carries two signatures over the exact raw body:
//! - `X-Signature`: lowercase hex HMAC-SHA256 of the body, keyed with the secret string's UTF-8 bytes
//!   (`hmac.new(secret.encode(), body, sha256).hexdigest()` in Python). During a secret rotation's grace
//!   period it stays with the OLD secret, so that a receiver holding one secret and checking one header
//!   (the seed contract) keeps verifying until the grace period ends, and `X-Signature-Next` carries the
//!   new secret's, for a receiver that switched early; afterwards `X-Signature` is the new secret's.
//!   `X-Signature-Previous` (the old secret's, equal to `X-Signature` meanwhile) is kept for receivers
//!   written to earlier docs. A receiver accepts either of `X-Signature` and `X-Signature-Next` with the
//!   secret it holds ([`verify_x_signature_headers`]).
//! - Standard Webhooks (<https://www.standardwebhooks.com>): `webhook-id`, `webhook-timestamp` and
//!   `webhook-signature: v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`, where the key is the
//!   base64-decoded part of a `whsec_` secret (any other secret is used as its raw bytes, see
//!   [`standard_key`]). During a secret rotation the header holds one space-separated `v1,` signature per
//!   valid secret.
//!
//! ```
//! use herald::signature;
//! let body = br#"{"id":"1","event":"item.created"}"#;
//! let header = signature::x_signature("my-secret", body);
//! assert!(signature::verify_x_signature("my-secret", body, &header));
//! // During a rotation from "old-secret" to "my-secret":
//! let headers = signature::x_signature_headers(&["my-secret", "old-secret"], body);
//! assert_eq!(headers[0], (signature::X_SIGNATURE, signature::x_signature("old-secret", body)));
//! assert!(signature::verify_x_signature_headers("my-secret", body, &headers[0].1, Some(&headers[1].1)));
//! assert!(signature::verify_x_signature_headers("old-secret", body, &headers[0].1, Some(&headers[1].1)));
//! ```

use std::time::Duration;

use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The hex signature: with the secret a receiver written to the seed contract holds (the old one during
/// a rotation's grace period, the current one otherwise).
pub const X_SIGNATURE: &str = "x-signature";
/// The hex signature with the new secret, only during a rotation's grace period.
pub const X_SIGNATURE_NEXT: &str = "x-signature-next";
/// The hex signature with the old secret, only during a rotation's grace period (then equal to
/// `X-Signature`); kept for receivers written to earlier docs.
pub const X_SIGNATURE_PREVIOUS: &str = "x-signature-previous";

/// How far a `webhook-timestamp` may be from the receiver's clock by default.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

fn mac(key: &[u8]) -> HmacSha256 {
    HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length")
}

/// The `X-Signature` value: hex HMAC-SHA256 of `body` keyed with `secret`'s bytes.
pub fn x_signature(secret: &str, body: &[u8]) -> String {
    let mut mac = mac(secret.as_bytes());
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// Checks an `X-Signature` header in constant time.
pub fn verify_x_signature(secret: &str, body: &[u8], header: &str) -> bool {
    let Ok(expected) = hex::decode(header.trim()) else { return false };
    let mut mac = mac(secret.as_bytes());
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

/// The hex signature headers of a delivery signed with `secrets`: the current secret first, then the
/// previous one while its grace period lasts (as `DeliveryTarget::signing_secrets` gives them).
pub fn x_signature_headers<S: AsRef<str>>(secrets: &[S], body: &[u8]) -> Vec<(&'static str, String)> {
    match secrets {
        [] => Vec::new(),
        [current] => vec![(X_SIGNATURE, x_signature(current.as_ref(), body))],
        [current, previous, ..] => {
            let old = x_signature(previous.as_ref(), body);
            vec![
                (X_SIGNATURE, old.clone()),
                (X_SIGNATURE_NEXT, x_signature(current.as_ref(), body)),
                (X_SIGNATURE_PREVIOUS, old),
            ]
        }
    }
}

/// Checks a delivery's `X-Signature` and, when present, `X-Signature-Next` against the one secret a
/// receiver holds: true if either matches, so the receiver verifies before, during and after a
/// rotation whether it still holds the old secret or already the new one.
pub fn verify_x_signature_headers(
    secret: &str,
    body: &[u8],
    x_signature: &str,
    x_signature_next: Option<&str>,
) -> bool {
    verify_x_signature(secret, body, x_signature)
        || x_signature_next.is_some_and(|next| verify_x_signature(secret, body, next))
}

/// The Standard Webhooks key of a secret: the decoded base64 after `whsec_`, else the raw bytes (a
/// `whsec_` secret that is not base64 is refused when given, but may be stored from before that check).
pub fn standard_key(secret: &str) -> Vec<u8> {
    secret
        .strip_prefix("whsec_")
        .and_then(|encoded| STANDARD.decode(encoded).ok())
        .unwrap_or_else(|| secret.as_bytes().to_vec())
}

fn standard_mac(secret: &str, msg_id: &str, timestamp: i64, body: &[u8]) -> HmacSha256 {
    let mut mac = mac(&standard_key(secret));
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// One `v1,<base64>` Standard Webhooks signature.
pub fn standard_signature(secret: &str, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let digest = standard_mac(secret, msg_id, timestamp, body).finalize().into_bytes();
    format!("v1,{}", STANDARD.encode(digest))
}

/// The `webhook-signature` header for every valid secret (the current one first).
pub fn standard_signature_header<S: AsRef<str>>(
    secrets: &[S],
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    secrets
        .iter()
        .map(|secret| standard_signature(secret.as_ref(), msg_id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Why a Standard Webhooks signature was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("webhook-timestamp is not a Unix time in seconds")]
    BadTimestamp,
    #[error("webhook-timestamp is outside the tolerance (replayed or clock skew)")]
    Expired,
    #[error("no signature in webhook-signature matches")]
    NoMatch,
}

/// Verifies Standard Webhooks headers against `secret`, in constant time per signature, refusing
/// timestamps further than `tolerance` from `now_unix`.
pub fn verify_standard(
    secret: &str,
    msg_id: &str,
    timestamp: &str,
    signature_header: &str,
    body: &[u8],
    tolerance: Duration,
    now_unix: i64,
) -> Result<(), VerifyError> {
    let timestamp: i64 = timestamp.trim().parse().map_err(|_| VerifyError::BadTimestamp)?;
    if timestamp.abs_diff(now_unix) > tolerance.as_secs() {
        return Err(VerifyError::Expired);
    }
    let matches = signature_header
        .split_whitespace()
        .filter_map(|candidate| candidate.strip_prefix("v1,"))
        .filter_map(|encoded| STANDARD.decode(encoded).ok())
        .any(|candidate| standard_mac(secret, msg_id, timestamp, body).verify_slice(&candidate).is_ok());
    if matches { Ok(()) } else { Err(VerifyError::NoMatch) }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The Standard Webhooks reference test vector (standard-webhooks/libraries).
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const MSG_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TIMESTAMP: i64 = 1_614_265_330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const EXPECTED: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn standard_webhooks_test_vector() {
        assert_eq!(standard_signature(SECRET, MSG_ID, TIMESTAMP, BODY), EXPECTED);
        assert_eq!(
            verify_standard(SECRET, MSG_ID, "1614265330", EXPECTED, BODY, DEFAULT_TOLERANCE, TIMESTAMP + 10),
            Ok(())
        );
    }

    #[test]
    fn standard_verification_refuses_tampering_and_old_timestamps() {
        let verify = |id: &str, ts: &str, sig: &str, body: &[u8], now: i64| {
            verify_standard(SECRET, id, ts, sig, body, DEFAULT_TOLERANCE, now)
        };
        assert_eq!(
            verify(MSG_ID, "1614265330", EXPECTED, br#"{"test": 1}"#, TIMESTAMP),
            Err(VerifyError::NoMatch)
        );
        assert_eq!(verify("msg_other", "1614265330", EXPECTED, BODY, TIMESTAMP), Err(VerifyError::NoMatch));
        assert_eq!(verify(MSG_ID, "1614265330", EXPECTED, BODY, TIMESTAMP + 301), Err(VerifyError::Expired));
        assert_eq!(verify(MSG_ID, "yesterday", EXPECTED, BODY, TIMESTAMP), Err(VerifyError::BadTimestamp));
        assert_eq!(verify(MSG_ID, "1614265330", "v1,!!!", BODY, TIMESTAMP), Err(VerifyError::NoMatch));
        let rotated = format!("v1,bm90IGl0 {EXPECTED}");
        assert_eq!(verify(MSG_ID, "1614265330", &rotated, BODY, TIMESTAMP), Ok(()));
    }

    #[test]
    fn rotation_header_carries_one_signature_per_secret() {
        let header = standard_signature_header(&["whsec_bmV3LXNlY3JldA==", SECRET], MSG_ID, TIMESTAMP, BODY);
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[1], EXPECTED);
    }

    #[test]
    fn x_signature_stays_with_the_old_secret_during_a_rotation() {
        let body = br#"{"a":1}"#;
        assert_eq!(
            x_signature_headers(&["new-secret"], body),
            [(X_SIGNATURE, x_signature("new-secret", body))]
        );
        let during = x_signature_headers(&["new-secret", "old-secret"], body);
        let old = x_signature("old-secret", body);
        assert_eq!(
            during,
            [
                (X_SIGNATURE, old.clone()),
                (X_SIGNATURE_NEXT, x_signature("new-secret", body)),
                (X_SIGNATURE_PREVIOUS, old.clone())
            ]
        );
        let next = Some(during[1].1.as_str());
        assert!(verify_x_signature_headers("old-secret", body, &old, next));
        assert!(verify_x_signature_headers("new-secret", body, &old, next));
        assert!(!verify_x_signature_headers("other-secret", body, &old, next));
        assert!(!verify_x_signature_headers("new-secret", body, &old, None));
    }

    #[test]
    fn x_signature_matches_a_known_hmac() {
        // printf '%s' '{"a":1}' | openssl dgst -sha256 -hmac secret
        assert_eq!(
            x_signature("secret", br#"{"a":1}"#),
            "aa9e2e3575f5d7098b6caccd790888c36d5fdb63342a73bada2d6a51747a8494"
        );
        let signature = x_signature("secret", b"body");
        assert!(verify_x_signature("secret", b"body", &signature));
        assert!(!verify_x_signature("secret", b"body2", &signature));
        assert!(!verify_x_signature("other", b"body", &signature));
        assert!(!verify_x_signature("secret", b"body", "not hex"));
    }
}
