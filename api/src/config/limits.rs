//! `[limits]`: the rate limits of link calls (per client IP) and writes (per API key).

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// `[limits]`: rates and bursts of the request rate limiters.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Redeem and start calls per client IP per minute.
    pub link_per_ip_per_minute: u32,
    /// Burst allowance for link calls per client IP.
    pub link_burst: u32,
    /// Writes (POST/PATCH) per API key per minute.
    pub writes_per_key_per_minute: u32,
    /// Burst allowance for writes per API key.
    pub writes_burst: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            link_per_ip_per_minute: 60,
            link_burst: 20,
            writes_per_key_per_minute: 600,
            writes_burst: 100,
        }
    }
}

impl LimitsConfig {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        for (key, value) in [
            ("limits.link_per_ip_per_minute", self.link_per_ip_per_minute),
            ("limits.link_burst", self.link_burst),
            (
                "limits.writes_per_key_per_minute",
                self.writes_per_key_per_minute,
            ),
            ("limits.writes_burst", self.writes_burst),
        ] {
            if value == 0 {
                return Err(ConfigError::new(key, "must be > 0"));
            }
        }
        Ok(())
    }
}
