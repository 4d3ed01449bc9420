//! Secrets in the configuration: [`Secret`] (hidden from `Debug`, zeroed on drop), the keys of
//! `secrets.keys` parsed into plain key material ([`SecretKey`], turned into ciphers by
//! [`crate::crypto`]), and URLs with their password redacted for logs and errors.

use std::fmt;

use base64::{Engine, engine::general_purpose::STANDARD};
use secrecy::{ExposeSecret, SecretBox, zeroize::Zeroize};
use serde::{Deserialize, Deserializer};

/// A value that must never be printed: `Debug` shows `[redacted]`, and the memory is zeroed on drop
/// ([`secrecy::SecretBox`]).
pub struct Secret<T: Zeroize>(SecretBox<T>);

impl<T: Zeroize> Secret<T> {
    pub fn new(value: T) -> Self {
        Self(SecretBox::new(Box::new(value)))
    }
    /// The secret value itself; call sites are easy to audit by this name.
    pub fn expose(&self) -> &T {
        self.0.expose_secret()
    }
}

impl<T: Zeroize + Clone> Clone for Secret<T> {
    fn clone(&self) -> Self {
        Self::new(self.expose().clone())
    }
}

impl<'de, T: Zeroize + Deserialize<'de>> Deserialize<'de> for Secret<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        T::deserialize(deserializer).map(Self::new)
    }
}

impl<T: Zeroize> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Replaces the password of a URL with `***` so that it can be logged. The URL is parsed
/// ([`url::Url`]), so a password holding `@`, `:` or `/` is redacted whole.
pub fn redact_url(text: &str) -> String {
    let Ok(mut url) = url::Url::parse(text) else { return "[unparseable url]".into() };
    if url.password().is_some() && url.set_password(Some("***")).is_err() {
        return "[unparseable url]".into();
    }
    url.to_string()
}

/// One key of `secrets.keys`: its id and its 32 bytes, checked by [`parse_secret_keys`].
#[derive(Debug, Clone)]
pub struct SecretKey {
    pub id: String,
    pub key: Secret<[u8; 32]>,
}

/// Parses `ID:BASE64,ID:BASE64` (each key 32 bytes), the format of `secrets.keys` and of the key file.
pub fn parse_secret_keys(text: &str) -> Result<Vec<SecretKey>, String> {
    let keys = text
        .split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(|part| {
            let (id, encoded) =
                part.split_once(':').ok_or("each key must be written ID:BASE64 (see `herald gen-key`)")?;
            if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                return Err(format!("key id '{id}' must be letters, digits, '-' or '_'"));
            }
            let bytes =
                Secret::new(STANDARD.decode(encoded).map_err(|_| format!("key '{id}' is not valid base64"))?);
            let key = Secret::new(
                <[u8; 32]>::try_from(bytes.expose().as_slice())
                    .map_err(|_| format!("key '{id}' must decode to exactly 32 bytes"))?,
            );
            Ok(SecretKey { id: id.to_string(), key })
        })
        .collect::<Result<Vec<_>, String>>()?;
    if keys.is_empty() {
        return Err("no key given".into());
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_with_at_signs_and_colons_is_redacted_whole() {
        for (url, redacted) in [
            ("postgres://u:p@ss:w@rd@db:5432/herald", "postgres://u:***@db:5432/herald"),
            ("amqp://guest:a:b@c@127.0.0.1:5672/%2f", "amqp://guest:***@127.0.0.1:5672/%2f"),
            ("postgres://u:p%40ss@db/herald?sslmode=disable", "postgres://u:***@db/herald?sslmode=disable"),
        ] {
            assert_eq!(redact_url(url), redacted, "{url}");
        }
        assert_eq!(redact_url("not a url"), "[unparseable url]");
    }

    #[test]
    fn secret_keys_parse_and_bad_ones_are_explained() {
        let keys = parse_secret_keys(" k1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=, k2:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=")
            .expect("two keys");
        assert_eq!(keys.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(), ["k1", "k2"]);
        assert_eq!(keys[1].key.expose(), &[1u8; 32]);
        assert!(!format!("{keys:?}").contains("AQEB"), "key bytes are not printed");
        assert!(parse_secret_keys("nocolon").is_err());
        assert!(parse_secret_keys("k1:short").is_err());
        assert!(parse_secret_keys("k1:AAAA").expect_err("too short").contains("32 bytes"));
        assert!(parse_secret_keys("bad id:AAAA").expect_err("bad id").contains("key id"));
        assert!(parse_secret_keys("").is_err());
    }
}
