//! `[turn]`: the TURN servers browsers are told about. Serde's types are its only checks.

use serde::{Deserialize, Serialize};

/// `[turn]`: TURN URLs and how their credentials are made.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TurnConfig {
    /// TURN URLs handed to browsers (`turn:host:3478?transport=udp`).
    pub urls: Vec<String>,
    /// Shared secret for TURN REST credentials.
    pub shared_secret: Option<String>,
    /// Lifetime of TURN credentials, seconds.
    pub ttl_seconds: u64,
}

impl Default for TurnConfig {
    fn default() -> Self {
        Self {
            urls: Vec::new(),
            shared_secret: None,
            ttl_seconds: 3600,
        }
    }
}
