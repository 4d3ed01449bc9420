//! Webhook signing secrets: generated as `whsec_` + base64 of 32 random bytes (the Standard Webhooks
//! form), or given by the admin as 16 to 128 printable ASCII characters. A given secret starting with
//! `whsec_` must be that form (standard base64, padded, of 24 to 64 bytes), since the official Standard
//! Webhooks libraries decode it so; any other secret signs the Standard Webhooks headers with its raw
//! bytes, which those libraries take as [`WebhookSecret::standard_webhooks_form`].

use std::fmt;

use base64::{Engine, engine::general_purpose::STANDARD};

/// The prefix of the Standard Webhooks form.
const PREFIX: &str = "whsec_";
/// The key lengths a `whsec_` secret may decode to (the Standard Webhooks specification's bounds).
const STANDARD_KEY_BYTES: std::ops::RangeInclusive<usize> = 24..=64;

/// A plaintext signing secret; `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(String);

impl WebhookSecret {
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::fill(&mut bytes);
        Self(format!("{PREFIX}{}", STANDARD.encode(bytes)))
    }

    /// A secret chosen by the admin.
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Some(encoded) = text.strip_prefix(PREFIX) {
            let decoded = STANDARD.decode(encoded).ok().filter(|key| STANDARD_KEY_BYTES.contains(&key.len()));
            if decoded.is_none() {
                return Err(format!(
                    "a secret starting with {PREFIX} must be {PREFIX} followed by standard base64 (padded) of \
                     {} to {} bytes, the form the Standard Webhooks libraries decode; leave the secret out to \
                     have one generated, or give one without the {PREFIX} prefix",
                    STANDARD_KEY_BYTES.start(),
                    STANDARD_KEY_BYTES.end()
                ));
            }
        }
        if !(16..=128).contains(&text.len()) {
            return Err("secret must be 16 to 128 characters".into());
        }
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("secret must be printable ASCII without spaces".into());
        }
        Ok(Self(text.to_string()))
    }

    /// A secret read back from the store.
    pub fn from_stored(text: String) -> Self {
        Self(text)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The secret as the official Standard Webhooks libraries take it: itself for a `whsec_` secret,
    /// else `whsec_` + base64 of its raw bytes (the key Herald signs `webhook-signature` with).
    pub fn standard_webhooks_form(&self) -> String {
        if self.0.starts_with(PREFIX) {
            self.0.clone()
        } else {
            format!("{PREFIX}{}", STANDARD.encode(crate::signature::standard_key(&self.0)))
        }
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_have_the_standard_form() {
        let secret = WebhookSecret::generate();
        let encoded = secret.expose().strip_prefix("whsec_").expect("prefix");
        assert_eq!(STANDARD.decode(encoded).expect("base64").len(), 32);
        assert_ne!(secret, WebhookSecret::generate());
        assert!(!format!("{secret:?}").contains(encoded));
    }

    #[test]
    fn given_secrets_are_checked() {
        assert!(WebhookSecret::parse("0123456789abcdef").is_ok());
        assert!(WebhookSecret::parse("short").is_err());
        assert!(WebhookSecret::parse(&"x".repeat(129)).is_err());
        assert!(WebhookSecret::parse("has a space in it!!").is_err());
        assert!(WebhookSecret::parse("tab\tinside-the-secret").is_err());
    }

    #[test]
    fn whsec_secrets_must_be_the_standard_form() {
        let key = |bytes: usize| format!("whsec_{}", STANDARD.encode(vec![7u8; bytes]));
        for good in [key(24), key(32), key(64)] {
            let secret = WebhookSecret::parse(&good).expect("accepted");
            assert_eq!(secret.standard_webhooks_form(), good);
        }
        let unpadded = key(32).trim_end_matches('=').to_string();
        for bad in ["whsec_notbase64!!".to_string(), key(23), key(65), unpadded, "whsec_".into()] {
            let error = WebhookSecret::parse(&bad).expect_err(&bad);
            assert!(error.contains("base64") && error.contains("24 to 64 bytes"), "{error}");
        }
    }

    #[test]
    fn plain_secrets_have_a_standard_webhooks_form_of_their_raw_bytes() {
        let secret = WebhookSecret::parse("my-own-secret-0123456789").expect("accepted");
        let form = secret.standard_webhooks_form();
        let decoded = STANDARD.decode(form.strip_prefix("whsec_").expect("prefix")).expect("base64");
        assert_eq!(decoded, b"my-own-secret-0123456789");
        assert_eq!(crate::signature::standard_key(&form), crate::signature::standard_key(secret.expose()));
    }
}
