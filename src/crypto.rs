//! Encryption at rest of webhook secrets: XChaCha20-Poly1305 with a random 24-byte nonce, the webhook id
//! as associated data (a ciphertext moved to another row does not open), and a key id stored beside each
//! ciphertext so keys can be rotated: the first configured key encrypts, every configured key decrypts.

use std::{io::Write, path::Path};

use base64::{Engine, engine::general_purpose::STANDARD};
use chacha20poly1305::{
    XChaCha20Poly1305, XNonce,
    aead::{Aead, Generate, KeyInit, Payload},
};

use crate::config::{DatabaseKind, SecretKey, Settings, parse_secret_keys};

const NONCE_LEN: usize = 24;

/// The keys that seal and open webhook secrets.
#[derive(Clone)]
pub struct SecretBox {
    /// `(key id, cipher)`; the first one seals.
    keys: Vec<(String, XChaCha20Poly1305)>,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|(id, _)| id.as_str()).collect();
        f.debug_struct("SecretBox").field("key_ids", &ids).finish()
    }
}

/// A sealed secret as stored: the key id and `nonce || ciphertext`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub key_id: String,
    pub ciphertext: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("webhook secret was sealed with key '{0}', which is not configured in secrets.keys")]
    UnknownKey(String),
    #[error("webhook secret failed to decrypt (wrong key or corrupted data)")]
    Corrupt,
}

impl SecretBox {
    /// The cipher of each key (the key bytes live on in the cipher only).
    pub fn from_keys(keys: &[SecretKey]) -> Self {
        Self {
            keys: keys
                .iter()
                .map(|SecretKey { id, key }| (id.clone(), XChaCha20Poly1305::new(&(*key.expose()).into())))
                .collect(),
        }
    }

    /// The keys from `secrets.keys`, else from `secrets.key_file`, which embedded (SQLite) mode creates
    /// on first start. With PostgreSQL a missing key is an error: every API and worker process must share
    /// the same keys, which a file created on one machine cannot ensure.
    pub fn from_settings(settings: &Settings) -> anyhow::Result<Self> {
        if let Some(keys) = &settings.secrets.keys {
            return Ok(Self::from_keys(&parse_secret_keys(keys.expose()).map_err(anyhow::Error::msg)?));
        }
        let path = &settings.secrets.key_file;
        if !path.exists() {
            if settings.database_kind()? != DatabaseKind::Sqlite {
                anyhow::bail!(
                    "configuration: secrets.keys: required with PostgreSQL (generate one with `herald gen-key` and give the same value to every process), or point secrets.key_file at an existing key file"
                );
            }
            create_key_file(path)?;
            tracing::info!(path = %path.display(), "created the key that encrypts webhook secrets; back it up with the database");
        }
        let text = std::fs::read_to_string(path)
            .map_err(|error| anyhow::anyhow!("reading secrets.key_file {}: {error}", path.display()))?;
        let keys = parse_secret_keys(&text)
            .map_err(|message| anyhow::anyhow!("secrets.key_file {}: {message}", path.display()))?;
        Ok(Self::from_keys(&keys))
    }

    /// A new key written as `ID:BASE64`, for `herald gen-key` and new key files.
    pub fn generate_key_text() -> String {
        let mut key = [0u8; 32];
        rand::fill(&mut key);
        format!("k{}:{}", chrono::Utc::now().format("%Y%m%d%H%M%S"), STANDARD.encode(key))
    }

    /// Encrypts `plaintext`, bound to `context` (the webhook id).
    pub fn seal(&self, plaintext: &str, context: &[u8]) -> Sealed {
        let (key_id, cipher) = &self.keys[0];
        let nonce = XNonce::generate();
        let ciphertext = cipher
            .encrypt(&nonce, Payload { msg: plaintext.as_bytes(), aad: context })
            .expect("XChaCha20-Poly1305 encryption cannot fail for in-memory buffers");
        let mut stored = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        stored.extend_from_slice(&nonce);
        stored.extend_from_slice(&ciphertext);
        Sealed { key_id: key_id.clone(), ciphertext: stored }
    }

    /// Decrypts a stored secret.
    pub fn open(&self, key_id: &str, stored: &[u8], context: &[u8]) -> Result<String, CryptoError> {
        let (_, cipher) = self
            .keys
            .iter()
            .find(|(id, _)| id == key_id)
            .ok_or_else(|| CryptoError::UnknownKey(key_id.to_string()))?;
        if stored.len() < NONCE_LEN {
            return Err(CryptoError::Corrupt);
        }
        let (nonce, ciphertext) = stored.split_at(NONCE_LEN);
        let nonce = XNonce::try_from(nonce).map_err(|_| CryptoError::Corrupt)?;
        let plaintext = cipher
            .decrypt(&nonce, Payload { msg: ciphertext, aad: context })
            .map_err(|_| CryptoError::Corrupt)?;
        String::from_utf8(plaintext).map_err(|_| CryptoError::Corrupt)
    }
}

/// Writes a new key file readable by its owner only.
fn create_key_file(path: &Path) -> anyhow::Result<()> {
    let mut file = crate::private_fs::create_file(path)
        .map_err(|error| anyhow::anyhow!("creating secrets.key_file {}: {error}", path.display()))?;
    writeln!(file, "{}", SecretBox::generate_key_text())?;
    file.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret_box(text: &str) -> SecretBox {
        SecretBox::from_keys(&parse_secret_keys(text).expect("keys"))
    }

    #[test]
    fn seal_and_open_round_trip_and_rotate() {
        let old_key = SecretBox::generate_key_text().replacen('k', "old", 1);
        let new_key = SecretBox::generate_key_text().replacen('k', "new", 1);
        let old = secret_box(&old_key);
        let sealed = old.seal("whsec_abc", b"webhook-1");
        assert!(!sealed.ciphertext.windows(5).any(|w| w == b"whsec"));
        assert_eq!(old.open(&sealed.key_id, &sealed.ciphertext, b"webhook-1").expect("opens"), "whsec_abc");
        assert!(matches!(
            old.open(&sealed.key_id, &sealed.ciphertext, b"webhook-2"),
            Err(CryptoError::Corrupt)
        ));
        let rotated = secret_box(&format!("{new_key},{old_key}"));
        assert_eq!(
            rotated.open(&sealed.key_id, &sealed.ciphertext, b"webhook-1").expect("old key opens"),
            "whsec_abc"
        );
        assert!(rotated.seal("x", b"").key_id.starts_with("new"));
        let new_only = secret_box(&new_key);
        assert!(matches!(
            new_only.open(&sealed.key_id, &sealed.ciphertext, b"webhook-1"),
            Err(CryptoError::UnknownKey(_))
        ));
    }
}
