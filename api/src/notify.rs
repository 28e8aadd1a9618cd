//! Notifications: PHI-free templates (clinician first name, time, link), transports behind
//! the [`Transport`] trait, and the outbox delivery step with retries and backoff.

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;

use crate::audit::{Actor, NewEntry, Outcome};
use crate::model::Channel;
use crate::store::{self, notifications::NotificationRow};
use crate::{App, error::ApiError};

/// A message ready for a transport.
#[derive(Clone)]
pub struct Message {
    /// SMS or email.
    pub channel: Channel,
    /// Phone number or email address (PHI: never logged).
    pub to: String,
    /// Subject line (email).
    pub subject: String,
    /// Text body (carries the join link: never logged).
    pub body: String,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message")
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

/// Why a transport could not deliver.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TransportError(pub String);

/// Delivers messages of one channel.
pub trait Transport: Send + Sync {
    /// Stored with each notification (`log`, `ses`, …).
    fn name(&self) -> &'static str;
    /// Delivers one message.
    fn send<'a>(&'a self, message: &'a Message) -> BoxFuture<'a, Result<(), TransportError>>;
}

/// Delivers nothing off the machine: the outbox row is the record, and one redacted log
/// line says it was "sent". The default, so Bedside runs with no external services.
#[derive(Debug, Default)]
pub struct LogTransport;

impl Transport for LogTransport {
    fn name(&self) -> &'static str {
        "log"
    }

    fn send<'a>(&'a self, message: &'a Message) -> BoxFuture<'a, Result<(), TransportError>> {
        Box::pin(async move {
            tracing::info!(
                channel = message.channel.as_str(),
                body_chars = message.body.chars().count(),
                "notification delivered by the log transport"
            );
            Ok(())
        })
    }
}

/// The subject and body of a join invitation. Holds no PHI: the clinician's first name,
/// the time and the link only.
pub fn invitation(clinician_first_name: &str, at: DateTime<Utc>, url: &str) -> (String, String) {
    let when = at.format("%a %d %b %Y at %H:%M UTC");
    let subject = "Your video visit".to_owned();
    let body = format!(
        "Your video visit with {clinician_first_name} is on {when}. \
         Join from your phone or computer: {url} — the link works on one device only."
    );
    (subject, body)
}

/// Delay before retry `attempt` (1-based): 2, 4, 8… seconds, capped at 10 minutes.
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_secs(2u64.saturating_pow(attempt.min(10)).min(600))
}

/// Attempts delivery of every due notification once; returns how many were attempted.
pub async fn deliver_due(app: &App) -> Result<usize, ApiError> {
    let now = Utc::now();
    let due = store::notifications::due(app.store.reader(), store::ms(now), 50).await?;
    for row in &due {
        deliver(app, row, now).await?;
    }
    Ok(due.len())
}

async fn deliver(app: &App, row: &NotificationRow, now: DateTime<Utc>) -> Result<(), ApiError> {
    let channel = if row.channel == "sms" {
        Channel::Sms
    } else {
        Channel::Email
    };
    let key = app.tenant_key(&row.tenant_id).await?;
    let decrypt = |field, ct: &[u8]| {
        key.decrypt(&row.id, field, ct)
            .map_err(|err| ApiError::Internal(format!("notification {}: {err}", row.id)))
    };
    let body = decrypt("body", &row.body_ct)?;
    let (subject, body) = body.split_once('\n').map_or_else(
        || (String::new(), body.clone()),
        |(s, b)| (s.to_owned(), b.to_owned()),
    );
    let message = Message {
        channel,
        to: decrypt("recipient", &row.recipient_ct)?,
        subject,
        body,
    };
    let result = app.transport(channel).send(&message).await;
    let attempts = u32::try_from(row.attempts)
        .unwrap_or(u32::MAX)
        .saturating_add(1);
    let mut tx = app.store.begin().await?;
    let actor = Actor::local("system:outbox");
    let (status, entry) = match &result {
        Ok(()) => (
            "sent",
            Some(NewEntry::success(
                &row.tenant_id,
                &actor,
                "notification.sent",
                Some(&row.visit_id),
            )),
        ),
        Err(_) if attempts < app.config.notify.max_attempts => ("queued", None),
        Err(err) => (
            "failed",
            Some(NewEntry {
                outcome: Outcome::Failure,
                reason: Some(err.0.clone()),
                ..NewEntry::success(
                    &row.tenant_id,
                    &actor,
                    "notification.failed",
                    Some(&row.visit_id),
                )
            }),
        ),
    };
    let next = store::ms(now) + i64::try_from(backoff(attempts).as_millis()).unwrap_or(i64::MAX);
    let error = result.as_ref().err().map(|err| err.0.as_str());
    let sent_at = result.is_ok().then(|| store::ms(now));
    store::notifications::record_attempt(&mut *tx, &row.id, status, next, error, sent_at).await?;
    if let Some(entry) = entry {
        let entry = entry.with_details(serde_json::json!({
            "notification_id": row.id,
            "channel": row.channel,
            "recipient": row.recipient_masked,
            "attempts": attempts,
        }));
        app.audit(&mut tx, entry).await?;
    }
    tx.commit().await?;
    let outcome = match status {
        "queued" => "retry",
        other => other,
    };
    app.metrics
        .notifications
        .with_label_values(&[row.channel.as_str(), outcome])
        .inc();
    if status != "queued" {
        app.metrics.outbox_depth.dec();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invitation_has_only_first_name_time_and_link() {
        let at = DateTime::parse_from_rfc3339("2026-11-24T14:30:00Z")
            .unwrap()
            .to_utc();
        let (_, body) = invitation("Meredith", at, "https://h/j/abc");
        assert!(body.contains("Meredith"));
        assert!(body.contains("14:30 UTC"));
        assert!(body.contains("https://h/j/abc"));
    }

    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(backoff(1), Duration::from_secs(2));
        assert_eq!(backoff(3), Duration::from_secs(8));
        assert_eq!(backoff(30), Duration::from_secs(600));
    }
}
