//! `[log]`: the format and filter of the process's log.

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable lines.
    Pretty,
}

/// `[log]`: how and how much the process logs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Output format.
    pub format: LogFormat,
    /// `tracing` filter directive (`info`, `bedside=debug,info`).
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Json,
            level: "info".to_owned(),
        }
    }
}

impl LogConfig {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        if self.level.parse::<tracing::Level>().is_err() && !self.level.contains('=') {
            return Err(ConfigError::new("log.level", "not a tracing filter"));
        }
        Ok(())
    }
}
