//! `[turn]`: the TURN servers browsers are told about, how their credentials are made, and
//! whether a visit's media may only go through them.

use serde::{Deserialize, Serialize};

use super::{ConfigError, Secret};

/// The longest credential lifetime accepted: a year. Longer is no safer than a static password.
const MAX_TTL_SECONDS: u64 = 365 * 24 * 3600;

/// Which ICE candidates browsers may use (`RTCIceTransportPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TurnPolicy {
    /// Any candidate: direct UDP to the SFU first, TURN when that fails.
    #[default]
    All,
    /// TURN relay candidates only, so a participant's own address never reaches the SFU (or
    /// whatever sits behind it); needs `turn.urls` and `turn.shared_secret`.
    Relay,
}

/// `[turn]`: TURN URLs, how their credentials are made, and the ICE policy of visits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TurnConfig {
    /// TURN URLs handed to browsers (`turn:host:3478?transport=udp`).
    pub urls: Vec<String>,
    /// Shared secret for TURN REST credentials (coturn's `static-auth-secret`).
    pub shared_secret: Option<Secret>,
    /// Lifetime of TURN credentials, seconds.
    pub ttl_seconds: u64,
    /// Which candidates browsers may use: `all`, or `relay` for TURN only.
    pub policy: TurnPolicy,
}

impl Default for TurnConfig {
    fn default() -> Self {
        Self {
            urls: Vec::new(),
            shared_secret: None,
            ttl_seconds: 3600,
            policy: TurnPolicy::All,
        }
    }
}

/// Whether `url` names a TURN server (as opposed to STUN only).
fn is_turn(url: &str) -> bool {
    url.starts_with("turn:") || url.starts_with("turns:")
}

impl TurnConfig {
    /// The secret credentials are made with, when TURN is configured at all (URLs and a
    /// secret that is not blank).
    pub fn secret(&self) -> Option<&Secret> {
        self.shared_secret
            .as_ref()
            .filter(|secret| !secret.expose().trim().is_empty() && !self.urls.is_empty())
    }

    pub(super) fn check(&self) -> Result<(), ConfigError> {
        if let Some(url) = self
            .urls
            .iter()
            .find(|url| !(is_turn(url) || url.starts_with("stun:")))
        {
            return Err(ConfigError::new(
                "turn.urls",
                format!("{url:?} is not a turn:, turns: or stun: URL"),
            ));
        }
        if !(1..=MAX_TTL_SECONDS).contains(&self.ttl_seconds) {
            return Err(ConfigError::new(
                "turn.ttl_seconds",
                format!("must be 1–{MAX_TTL_SECONDS}"),
            ));
        }
        if self.policy == TurnPolicy::Relay {
            // A relay-only browser with no TURN server gathers no candidate at all: every
            // visit would fail to connect, so refuse to start instead.
            if !self.urls.iter().any(|url| is_turn(url)) {
                return Err(ConfigError::new(
                    "turn.urls",
                    "turn.policy = \"relay\" needs at least one turn: or turns: URL",
                ));
            }
            if self.secret().is_none() {
                return Err(ConfigError::new(
                    "turn.shared_secret",
                    "turn.policy = \"relay\" needs the TURN server's shared secret",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relay() -> TurnConfig {
        TurnConfig {
            urls: vec!["turn:turn.example:3478?transport=udp".into()],
            shared_secret: Some(Secret::new("s3cret")),
            policy: TurnPolicy::Relay,
            ..TurnConfig::default()
        }
    }

    #[test]
    fn relay_needs_a_turn_url_and_a_secret() {
        relay().check().expect("complete");
        let mut config = relay();
        config.urls = vec!["stun:stun.example:3478".into()];
        assert_eq!(config.check().unwrap_err().key, "turn.urls");
        let mut config = relay();
        config.shared_secret = Some(Secret::new("  "));
        let err = config.check().unwrap_err();
        assert_eq!(err.key, "turn.shared_secret");
        assert!(err.message.contains("relay"), "{err}");
        let mut config = relay();
        config.shared_secret = None;
        assert_eq!(config.check().unwrap_err().key, "turn.shared_secret");
        config.policy = TurnPolicy::All;
        config.check().expect("no TURN is fine without relay");
    }

    #[test]
    fn urls_and_ttl_are_checked() {
        let mut config = relay();
        config.urls.push("https://turn.example".into());
        assert_eq!(config.check().unwrap_err().key, "turn.urls");
        let mut config = relay();
        config.ttl_seconds = 0;
        assert_eq!(config.check().unwrap_err().key, "turn.ttl_seconds");
    }

    #[test]
    fn the_secret_is_never_shown() {
        let shown = serde_json::to_string(&relay()).expect("serialises");
        assert!(
            !shown.contains("s3cret") && shown.contains("<redacted>"),
            "{shown}"
        );
        assert!(!format!("{:?}", relay()).contains("s3cret"));
    }
}
