//! `[notify]`: which transports carry email and SMS, and how failed deliveries are retried.

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// Email transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmailTransport {
    /// Store in the outbox and log a redacted line; nothing leaves the machine.
    Log,
    /// Amazon SES v2 SendEmail.
    Ses,
    /// An SMTP relay (`[smtp]`).
    Smtp,
}

/// SMS transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmsTransport {
    /// Store in the outbox and log a redacted line; nothing leaves the machine.
    Log,
    /// Amazon SNS Publish to a phone number.
    Sns,
}

/// `[notify]`: the transports, the sender, delivery attempts and the circuit breaker.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// Email transport.
    pub email: EmailTransport,
    /// SMS transport.
    pub sms: SmsTransport,
    /// Sender address of emails.
    pub email_from: String,
    /// Delivery attempts before a notification is `failed`.
    pub max_attempts: u32,
    /// SES configuration set named in every SendEmail (event publishing, dedicated IPs).
    pub ses_configuration_set: Option<String>,
    /// Consecutive provider failures of one transport that open its circuit breaker.
    pub breaker_threshold: u32,
    /// How long an open breaker holds deliveries back before one trial send, seconds.
    pub breaker_cooldown_seconds: u64,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            email: EmailTransport::Log,
            sms: SmsTransport::Log,
            email_from: "no-reply@bedside.invalid".to_owned(),
            max_attempts: 5,
            ses_configuration_set: None,
            breaker_threshold: 5,
            breaker_cooldown_seconds: 60,
        }
    }
}

impl NotifyConfig {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        for (key, value) in [
            ("notify.max_attempts", u64::from(self.max_attempts)),
            (
                "notify.breaker_threshold",
                u64::from(self.breaker_threshold),
            ),
            (
                "notify.breaker_cooldown_seconds",
                self.breaker_cooldown_seconds,
            ),
        ] {
            if value == 0 {
                return Err(ConfigError::new(key, "must be > 0"));
            }
        }
        Ok(())
    }
}
