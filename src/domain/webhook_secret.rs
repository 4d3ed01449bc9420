//! Webhook signing secrets: generated as `whsec_` + base64 of 32 random bytes (the Standard Webhooks
//! form), or given by the admin as 16 to 128 printable ASCII characters.

use std::fmt;

use base64::{Engine, engine::general_purpose::STANDARD};

/// A plaintext signing secret; `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(String);

impl WebhookSecret {
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::fill(&mut bytes);
        Self(format!("whsec_{}", STANDARD.encode(bytes)))
    }

    /// A secret chosen by the admin.
    pub fn parse(text: &str) -> Result<Self, String> {
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
}
