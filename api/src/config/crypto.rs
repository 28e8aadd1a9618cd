//! `[crypto]`: what wraps the tenants' PHI data keys, and how long an unwrapped one is kept.

use serde::{Deserialize, Serialize};

use super::{ConfigError, blank};

/// Which key provider wraps tenant data keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyProviderKind {
    /// A 256-bit master key in `<data-dir>/master.key`.
    Local,
    /// AWS KMS GenerateDataKey/Decrypt under `crypto.kms_key_id`.
    Kms,
}

/// `[crypto]`: the key provider of PHI envelope encryption and its data key cache.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CryptoConfig {
    /// Key provider for PHI envelope encryption.
    pub key_provider: KeyProviderKind,
    /// KMS key id, ARN or alias of `key_provider = "kms"` (a symmetric ENCRYPT_DECRYPT key).
    pub kms_key_id: Option<String>,
    /// How long an unwrapped tenant data key stays in memory, seconds.
    pub data_key_cache_seconds: u64,
}

impl Default for CryptoConfig {
    fn default() -> Self {
        Self {
            key_provider: KeyProviderKind::Local,
            kms_key_id: None,
            data_key_cache_seconds: 300,
        }
    }
}

impl CryptoConfig {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        if self.key_provider == KeyProviderKind::Kms && blank(&self.kms_key_id) {
            return Err(ConfigError::new(
                "crypto.kms_key_id",
                "required when crypto.key_provider = \"kms\"",
            ));
        }
        if !(1..=86_400).contains(&self.data_key_cache_seconds) {
            return Err(ConfigError::new(
                "crypto.data_key_cache_seconds",
                "must be between 1 and 86400",
            ));
        }
        Ok(())
    }
}
