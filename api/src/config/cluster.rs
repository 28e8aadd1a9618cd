//! `[cluster]`: this node among several sharing one PostgreSQL.

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// `[cluster]`: node registration and room placement (PostgreSQL; one SQLite node has no
/// peers).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// This node's id; empty = generated on first start and kept in `<data-dir>/node-id`.
    pub node_id: String,
    /// How often the node renews its registration.
    pub heartbeat_ms: u64,
    /// A node whose last heartbeat is older than this is dead: it gets no new rooms and its
    /// placements are dropped.
    pub node_timeout_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            node_id: String::new(),
            heartbeat_ms: 2_000,
            node_timeout_ms: 10_000,
        }
    }
}

impl ClusterConfig {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        if self.heartbeat_ms < 100 {
            return Err(ConfigError::new("cluster.heartbeat_ms", "must be ≥ 100"));
        }
        if self.node_timeout_ms < 2 * self.heartbeat_ms {
            return Err(ConfigError::new(
                "cluster.node_timeout_ms",
                "must be at least twice cluster.heartbeat_ms",
            ));
        }
        let id = &self.node_id;
        if id.len() > 64
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(ConfigError::new(
                "cluster.node_id",
                "at most 64 characters of A-Z, a-z, 0-9, '-', '_', '.'",
            ));
        }
        Ok(())
    }
}
