//! `[smtp]`: the relay of `notify.email = "smtp"`. Whether a host is needed depends on
//! `[notify]`, so that check is in the parent module.

use serde::{Deserialize, Serialize};

use super::{ConfigError, Secret};

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS, which must succeed (port 587).
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption: only for a relay on the same host or a trusted private network.
    None,
}

/// `[smtp]`: the relay, its transport security, login and timeout.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpConfig {
    /// Relay host name (also the TLS server name).
    pub host: String,
    /// Relay port.
    pub port: u16,
    /// Transport security.
    pub tls: SmtpTls,
    /// Login user; unset = no authentication.
    pub username: Option<String>,
    /// Login password.
    pub password: Option<Secret>,
    /// Timeout of one SMTP command, milliseconds.
    pub timeout_ms: u64,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        Self {
            host: String::new(),
            port: 587,
            tls: SmtpTls::Starttls,
            username: None,
            password: None,
            timeout_ms: 10_000,
        }
    }
}

impl SmtpConfig {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        if self.password.is_some() && self.username.is_none() {
            return Err(ConfigError::new(
                "smtp.username",
                "required when smtp.password is set",
            ));
        }
        if self.timeout_ms == 0 {
            return Err(ConfigError::new("smtp.timeout_ms", "must be > 0"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn smtp_password_is_never_shown() {
        let mut config = Config::default();
        config.smtp.username = Some("relay".into());
        config.smtp.password = Some(Secret::new("hunter2-relay-password"));
        let shown = serde_json::to_string(&config).expect("serialises");
        assert!(!shown.contains("hunter2") && shown.contains("<redacted>"));
        assert!(!format!("{config:?}").contains("hunter2"));
        let parsed: SmtpConfig =
            serde_json::from_str(r#"{"username": "u", "password": "p4ss"}"#).expect("parses");
        assert_eq!(
            parsed.password.map(|p| p.expose().to_owned()).as_deref(),
            Some("p4ss")
        );
    }
}
