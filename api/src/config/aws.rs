//! `[aws]`: region, endpoint, timeouts and retries shared by every AWS client.

use serde::{Deserialize, Serialize};

use super::{ConfigError, check_endpoint_url};

/// `[aws]`: settings every AWS client shares. Credentials come from the standard chain
/// (environment, profile, web identity, container or instance role).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AwsConfig {
    /// Region of KMS, SES, SNS and the Chime control plane; unset = the standard chain.
    pub region: Option<String>,
    /// One endpoint for every AWS client (an emulator); unset = the real service.
    pub endpoint_url: Option<String>,
    /// TCP/TLS connect timeout, milliseconds.
    pub connect_timeout_ms: u64,
    /// Timeout of one attempt of one call, milliseconds.
    pub attempt_timeout_ms: u64,
    /// Timeout of one call including its retries, milliseconds.
    pub operation_timeout_ms: u64,
    /// Attempts per call (1 = no retry), with exponential backoff and jitter between them.
    pub max_attempts: u32,
}

impl Default for AwsConfig {
    fn default() -> Self {
        Self {
            region: None,
            endpoint_url: None,
            connect_timeout_ms: 2_000,
            attempt_timeout_ms: 3_000,
            operation_timeout_ms: 8_000,
            max_attempts: 3,
        }
    }
}

impl AwsConfig {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        for (key, value) in [
            ("aws.connect_timeout_ms", self.connect_timeout_ms),
            ("aws.attempt_timeout_ms", self.attempt_timeout_ms),
            ("aws.operation_timeout_ms", self.operation_timeout_ms),
        ] {
            if value == 0 {
                return Err(ConfigError::new(key, "must be > 0"));
            }
        }
        if !(1..=10).contains(&self.max_attempts) {
            return Err(ConfigError::new(
                "aws.max_attempts",
                "must be between 1 and 10",
            ));
        }
        check_endpoint_url("aws.endpoint_url", self.endpoint_url.as_deref())
    }
}
