//! Notifications: PHI-free templates (clinician first name, time, link), transports behind
//! the [`Transport`] trait (`log` here, [`smtp`], and SES/SNS in [`crate::aws`]), and the
//! outbox delivery step with retries, exponential backoff and a per-transport circuit
//! [`breaker`].

pub mod breaker;
pub mod smtp;

use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;

use crate::audit::{Actor, NewEntry, Outcome};
use crate::model::Channel;
use crate::store::{self, notifications::NotificationRow};
use crate::{App, error::ApiError};
use breaker::{Breaker, Gate};

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

/// The transport of one channel and its circuit breaker.
pub struct Outlet {
    transport: Box<dyn Transport>,
    breaker: Mutex<Breaker>,
}

impl std::fmt::Debug for Outlet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outlet")
            .field("transport", &self.transport.name())
            .finish_non_exhaustive()
    }
}

impl Outlet {
    /// `transport` behind a breaker opening after `threshold` consecutive failures for
    /// `cooldown`.
    pub fn new(transport: Box<dyn Transport>, threshold: u32, cooldown: Duration) -> Self {
        Self {
            transport,
            breaker: Mutex::new(Breaker::new(threshold, cooldown)),
        }
    }

    /// The transport.
    pub fn transport(&self) -> &dyn Transport {
        self.transport.as_ref()
    }

    /// Whether the breaker holds deliveries back at `now` (Unix ms).
    pub fn is_open(&self, now: i64) -> bool {
        self.breaker.lock().is_ok_and(|b| b.is_open(now))
    }

    fn gate(&self, now: i64) -> Gate {
        // A poisoned lock only means a panic elsewhere; the breaker state is still usable.
        match self.breaker.lock() {
            Ok(breaker) => breaker.gate(now),
            Err(poisoned) => poisoned.into_inner().gate(now),
        }
    }

    fn record(&self, ok: bool, now: i64) -> Option<i64> {
        let mut breaker = match self.breaker.lock() {
            Ok(breaker) => breaker,
            Err(poisoned) => poisoned.into_inner(),
        };
        if ok {
            breaker.succeeded();
            None
        } else {
            breaker.failed(now)
        }
    }
}

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
    // A lease long enough for one attempt's provider timeouts; the outcome replaces it.
    let lease = store::ms(now + chrono::Duration::minutes(2));
    let mut tx = app.store.begin().await?;
    let due = store::notifications::claim_due(&mut tx, store::ms(now), lease, 50).await?;
    tx.commit().await?;
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
    let outlet = app.outlet(channel);
    let now_ms = store::ms(now);
    if let Gate::Hold(until) = outlet.gate(now_ms) {
        // Held back, not attempted: the row keeps its attempts and says why it waits.
        let why = format!(
            "circuit open: {} paused after repeated provider failures",
            outlet.transport().name()
        );
        let mut tx = app.store.begin().await?;
        store::notifications::defer(&mut tx, &row.tenant_id, &row.id, until, &why).await?;
        tx.commit().await?;
        app.metrics
            .notifications
            .with_label_values(&[row.channel.as_str(), "held"])
            .inc();
        return Ok(());
    }
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
    let result = outlet.transport().send(&message).await;
    let opened = outlet.record(result.is_ok(), now_ms);
    let attempts = u32::try_from(row.attempts)
        .unwrap_or(u32::MAX)
        .saturating_add(1);
    let mut tx = app.store.begin().await?;
    let actor = Actor::local("system:outbox");
    let failure = |event: &'static str, err: &TransportError| NewEntry {
        outcome: Outcome::Failure,
        reason: Some(err.0.clone()),
        ..NewEntry::success(&row.tenant_id, &actor, event, Some(&row.visit_id))
    };
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
        Err(err) if attempts < app.config.notify.max_attempts => {
            ("queued", Some(failure("notification.attempt_failed", err)))
        }
        Err(err) => ("failed", Some(failure("notification.failed", err))),
    };
    let next = store::ms(now) + i64::try_from(backoff(attempts).as_millis()).unwrap_or(i64::MAX);
    // An open breaker also holds this row's retry back until its trial.
    let next = opened.map_or(next, |until| next.max(until));
    let error = result.as_ref().err().map(|err| err.0.as_str());
    let sent_at = result.is_ok().then(|| store::ms(now));
    store::notifications::record_attempt(
        &mut tx,
        &row.tenant_id,
        &row.id,
        status,
        next,
        error,
        sent_at,
    )
    .await?;
    if let Some(entry) = entry {
        let entry = entry.with_details(serde_json::json!({
            "notification_id": row.id,
            "channel": row.channel,
            "recipient": row.recipient_masked,
            "attempts": attempts,
        }));
        app.audit(&mut tx, entry).await?;
    }
    if let (Some(until), Err(err)) = (opened, &result) {
        let entry = failure("notification.breaker_opened", err).with_details(serde_json::json!({
            "channel": row.channel,
            "transport": outlet.transport().name(),
            "threshold": app.config.notify.breaker_threshold,
            "open_until": crate::store::from_ms(until),
        }));
        app.audit(&mut tx, entry).await?;
        tracing::warn!(
            channel = row.channel.as_str(),
            transport = outlet.transport().name(),
            "notification circuit breaker opened"
        );
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
