//! `[tokens]`: who signs session grants, and the shape of grants and link codes.

use serde::{Deserialize, Serialize};

use super::{ConfigError, blank};

/// Which signer makes session grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignerKind {
    /// A P-256 key in `<data-dir>/signing-key.p8`.
    Local,
    /// An AWS KMS key (ECC_NIST_P256, SIGN_VERIFY) named by `tokens.kms_key_id`.
    Kms,
}

/// `[tokens]`: the grant signer, grant lifetime and link code length.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokensConfig {
    /// Grant signer.
    pub signer: SignerKind,
    /// `iss` claim of grants.
    pub issuer: String,
    /// Lifetime of a session grant, seconds.
    pub grant_ttl_seconds: u64,
    /// Length of link codes (base62 characters, at least 12).
    pub link_code_length: usize,
    /// KMS key id, ARN or alias of `signer = "kms"`.
    pub kms_key_id: Option<String>,
    /// Further KMS signing keys whose grants are accepted (a previous key during rotation).
    pub kms_trusted_key_ids: Vec<String>,
}

impl Default for TokensConfig {
    fn default() -> Self {
        Self {
            signer: SignerKind::Local,
            issuer: "bedside".to_owned(),
            grant_ttl_seconds: 600,
            link_code_length: 16,
            kms_key_id: None,
            kms_trusted_key_ids: Vec::new(),
        }
    }
}

impl TokensConfig {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        if !(30..=86_400).contains(&self.grant_ttl_seconds) {
            return Err(ConfigError::new(
                "tokens.grant_ttl_seconds",
                "must be between 30 and 86400",
            ));
        }
        if !(12..=64).contains(&self.link_code_length) {
            return Err(ConfigError::new(
                "tokens.link_code_length",
                "must be between 12 and 64",
            ));
        }
        if self.signer == SignerKind::Kms && blank(&self.kms_key_id) {
            return Err(ConfigError::new(
                "tokens.kms_key_id",
                "required when tokens.signer = \"kms\"",
            ));
        }
        Ok(())
    }
}
