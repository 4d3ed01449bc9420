//! API keys: `sk_live_` + base62 of 32 random bytes (43 characters) + a 6-character base62 CRC32 of
//! everything before it. The checksum lets a malformed or mistyped key be refused before any lookup;
//! only the SHA-256 of a key is ever stored.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const PREFIX: &str = "sk_live_";
const BODY_LEN: usize = 43;
const CHECKSUM_LEN: usize = 6;
/// Characters of the key after `sk_live_` kept beside the hash, to tell keys apart.
const HINT_LEN: usize = 8;
const DISPLAY_LEN: usize = PREFIX.len() + HINT_LEN;
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Why a presented key was refused before any lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ApiKeyError {
    #[error("malformed API key (expected sk_live_ followed by 49 letters and digits)")]
    Malformed,
    #[error("API key checksum mismatch (the key was mistyped or truncated)")]
    BadChecksum,
}

/// A plaintext API key. It exists only between generation and the creation response, and while a
/// request is being authenticated; `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKeySecret(String);

impl ApiKeySecret {
    /// A new random key.
    pub fn generate() -> Self {
        let mut entropy = [0u8; 32];
        rand::fill(&mut entropy);
        let mut key = String::with_capacity(PREFIX.len() + BODY_LEN + CHECKSUM_LEN);
        key.push_str(PREFIX);
        key.push_str(&base62_fixed(&entropy, BODY_LEN));
        let checksum = crc32fast::hash(key.as_bytes());
        key.push_str(&base62_fixed(&checksum.to_be_bytes(), CHECKSUM_LEN));
        Self(key)
    }

    /// Checks the format and the checksum.
    pub fn parse(text: &str) -> Result<Self, ApiKeyError> {
        let body = text.strip_prefix(PREFIX).ok_or(ApiKeyError::Malformed)?;
        if body.len() != BODY_LEN + CHECKSUM_LEN || !body.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(ApiKeyError::Malformed);
        }
        let (signed, checksum) = text.split_at(text.len() - CHECKSUM_LEN);
        let expected = base62_fixed(&crc32fast::hash(signed.as_bytes()).to_be_bytes(), CHECKSUM_LEN);
        if checksum != expected {
            return Err(ApiKeyError::BadChecksum);
        }
        Ok(Self(text.to_string()))
    }

    /// The SHA-256 digest that is stored and looked up.
    pub fn hash(&self) -> Vec<u8> {
        Sha256::digest(self.0.as_bytes()).to_vec()
    }

    /// The 8 characters after `sk_live_`, stored so that a user can tell their keys apart. The store
    /// never holds `sk_live_` itself, so a search of it for that string finds nothing.
    pub fn hint(&self) -> String {
        self.0[PREFIX.len()..DISPLAY_LEN].to_string()
    }

    /// How a stored hint is shown: `sk_live_` and the hint.
    pub fn display_prefix(hint: &str) -> String {
        format!("{PREFIX}{hint}")
    }

    /// The plaintext, for the one response that shows it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKeySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKeySecret({}...)", &self.0[..DISPLAY_LEN])
    }
}

/// Big-endian bytes as a base62 number, left-padded with '0' to exactly `width` characters.
fn base62_fixed(bytes: &[u8], width: usize) -> String {
    let mut number = bytes.to_vec();
    let mut digits = Vec::with_capacity(width);
    while digits.len() < width {
        let mut remainder = 0u32;
        for byte in &mut number {
            let value = (remainder << 8) | u32::from(*byte);
            *byte = (value / 62) as u8;
            remainder = value % 62;
        }
        digits.push(BASE62[remainder as usize]);
    }
    debug_assert!(number.iter().all(|b| *b == 0), "width too small for the value");
    digits.reverse();
    String::from_utf8(digits).unwrap_or_default()
}

/// What a key is for, as seed 004 lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum KeyPurpose {
    #[serde(rename = "zapier")]
    Zapier,
    #[serde(rename = "n8n")]
    N8n,
    #[serde(rename = "google sheets")]
    GoogleSheets,
    #[serde(rename = "custom")]
    Custom,
}

impl KeyPurpose {
    pub const ALL: [KeyPurpose; 4] =
        [KeyPurpose::Zapier, KeyPurpose::N8n, KeyPurpose::GoogleSheets, KeyPurpose::Custom];

    pub fn as_str(self) -> &'static str {
        match self {
            KeyPurpose::Zapier => "zapier",
            KeyPurpose::N8n => "n8n",
            KeyPurpose::GoogleSheets => "google sheets",
            KeyPurpose::Custom => "custom",
        }
    }
}

impl TryFrom<String> for KeyPurpose {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::ALL
            .into_iter()
            .find(|purpose| purpose.as_str() == value)
            .ok_or_else(|| format!("unknown purpose '{value}'"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_and_differ() {
        let a = ApiKeySecret::generate();
        let b = ApiKeySecret::generate();
        assert_ne!(a, b);
        assert_eq!(a.expose().len(), 57);
        assert!(a.expose().starts_with("sk_live_"));
        assert_eq!(ApiKeySecret::parse(a.expose()), Ok(a.clone()));
        assert_eq!(a.hint().len(), 8);
        assert!(a.expose().starts_with(&ApiKeySecret::display_prefix(&a.hint())));
        assert_eq!(a.hash().len(), 32);
    }

    #[test]
    fn altered_keys_are_refused() {
        let key = ApiKeySecret::generate();
        let text = key.expose();
        let mut typo = text.to_string();
        let position = 20;
        let replacement = if &typo[position..=position] == "A" { "B" } else { "A" };
        typo.replace_range(position..=position, replacement);
        assert_eq!(ApiKeySecret::parse(&typo), Err(ApiKeyError::BadChecksum));
        assert_eq!(ApiKeySecret::parse(&text[..56]), Err(ApiKeyError::Malformed));
        assert_eq!(ApiKeySecret::parse(&text.replace("sk_live_", "sk_test_")), Err(ApiKeyError::Malformed));
        assert_eq!(ApiKeySecret::parse(""), Err(ApiKeyError::Malformed));
        let mut non_ascii = text[..56].to_string();
        non_ascii.push('é');
        assert_eq!(ApiKeySecret::parse(&non_ascii), Err(ApiKeyError::Malformed));
    }

    #[test]
    fn base62_is_fixed_width_and_exact() {
        assert_eq!(base62_fixed(&[0, 0, 0, 61], 6), "00000z");
        assert_eq!(base62_fixed(&[0, 0, 0, 62], 6), "000010");
        assert_eq!(base62_fixed(&u32::MAX.to_be_bytes(), 6), "4gfFC3");
        assert_eq!(base62_fixed(&[0xff; 32], 43).len(), 43);
    }

    #[test]
    fn debug_hides_the_key() {
        let key = ApiKeySecret::generate();
        assert!(!format!("{key:?}").contains(&key.expose()[16..]));
    }

    #[test]
    fn purposes_round_trip() {
        for purpose in KeyPurpose::ALL {
            assert_eq!(KeyPurpose::try_from(purpose.as_str().to_string()), Ok(purpose));
        }
        assert!(KeyPurpose::try_from("slack".to_string()).is_err());
    }
}
