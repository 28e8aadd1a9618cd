//! `[shutdown]`: how a node leaves on SIGTERM/SIGINT.

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// `[shutdown]`: the bound on a graceful shutdown's drain.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// How long the drain of live visits may take before the process stops waiting, seconds.
    pub drain_seconds: u64,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self { drain_seconds: 10 }
    }
}

impl ShutdownConfig {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        // 0 leaves no time to audit the departures and flush the outbox; more than five
        // minutes outlasts a supervisor's usual stop timeout, which would kill it mid-drain.
        if !(1..=300).contains(&self.drain_seconds) {
            return Err(ConfigError::new(
                "shutdown.drain_seconds",
                "must be between 1 and 300",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn drain_seconds_is_bounded() {
        assert_eq!(ShutdownConfig::default().drain_seconds, 10);
        for ok in [1, 10, 300] {
            ShutdownConfig { drain_seconds: ok }
                .check()
                .unwrap_or_else(|err| panic!("{ok}: {err}"));
        }
        let mut config = Config::default();
        for bad in [0, 301] {
            config.shutdown.drain_seconds = bad;
            let err = config.validate().unwrap_err();
            assert_eq!(err.key, "shutdown.drain_seconds", "{bad}");
        }
    }
}
