//! `[media]`: which media backend new visits get. Serde's types are its only checks; whether
//! Chime is usable is checked with `[chime]` in the parent module.

use serde::{Deserialize, Serialize};

/// Media backend of a visit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum MediaBackend {
    /// Bedside's own SFU.
    #[default]
    Sfu,
    /// Amazon Chime SDK.
    Chime,
}

impl MediaBackend {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sfu => "sfu",
            Self::Chime => "chime",
        }
    }
}

/// `[media]`: the node's default media backend.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaConfig {
    /// Default backend of new visits (a visit's `media_backend` overrides it).
    pub backend: MediaBackend,
}
