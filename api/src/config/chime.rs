//! `[chime]`: Amazon Chime SDK meetings as a media backend.

use serde::{Deserialize, Serialize};

use super::{ConfigError, check_endpoint_url};

/// `[chime]`: whether visits may use Chime, and where its meetings and API live.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChimeConfig {
    /// Whether visits may use Chime when the node default is `sfu` (implied by
    /// `media.backend = "chime"`).
    pub enabled: bool,
    /// MediaRegion of new meetings.
    pub media_region: String,
    /// Endpoint of the Chime SDK Meetings API only, overriding `aws.endpoint_url` (tests).
    pub endpoint_url: Option<String>,
}

impl Default for ChimeConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            media_region: "us-east-1".to_owned(),
            endpoint_url: None,
        }
    }
}

impl ChimeConfig {
    // `media_region` is checked in the parent module: whether it is needed depends on
    // `media.backend` too.
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        check_endpoint_url("chime.endpoint_url", self.endpoint_url.as_deref())
    }
}
