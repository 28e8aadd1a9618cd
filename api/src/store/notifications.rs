//! The notification outbox: rows are queued in the transaction that decides to notify and
//! delivered afterwards by the outbox worker, with retries.

use sqlx::SqliteExecutor;

/// An outbox row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct NotificationRow {
    /// Notification id.
    pub id: String,
    /// Tenant.
    pub tenant_id: String,
    /// Visit.
    pub visit_id: String,
    /// `sms` or `email`.
    pub channel: String,
    /// Transport that delivers it (`log`, …).
    pub transport: String,
    /// Ciphertext of the recipient address.
    pub recipient_ct: Vec<u8>,
    /// Masked recipient, safe to show and log.
    pub recipient_masked: String,
    /// Ciphertext of the message (it carries a join link).
    pub body_ct: Vec<u8>,
    /// `queued`, `sent` or `failed`.
    pub status: String,
    /// Delivery attempts so far.
    pub attempts: i64,
    /// Unix ms of the next attempt.
    pub next_attempt_at: i64,
    /// Last provider error (never PHI).
    pub last_error: Option<String>,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub sent_at: Option<i64>,
}

macro_rules! notification_columns {
    () => {
        "id, tenant_id, visit_id, channel, transport, recipient_ct, recipient_masked, \
    body_ct, status, attempts, next_attempt_at, last_error, created_at, sent_at"
    };
}

/// Queues a notification.
pub async fn insert<'e>(
    db: impl SqliteExecutor<'e>,
    n: &NotificationRow,
) -> Result<(), sqlx::Error> {
    sqlx::query(concat!(
        "INSERT INTO notifications (",
        notification_columns!(),
        ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    ))
    .bind(&n.id)
    .bind(&n.tenant_id)
    .bind(&n.visit_id)
    .bind(&n.channel)
    .bind(&n.transport)
    .bind(&n.recipient_ct)
    .bind(&n.recipient_masked)
    .bind(&n.body_ct)
    .bind(&n.status)
    .bind(n.attempts)
    .bind(n.next_attempt_at)
    .bind(&n.last_error)
    .bind(n.created_at)
    .bind(n.sent_at)
    .execute(db)
    .await?;
    Ok(())
}

/// Queued notifications due at `now`, oldest first.
pub async fn due<'e>(
    db: impl SqliteExecutor<'e>,
    now: i64,
    limit: i64,
) -> Result<Vec<NotificationRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        notification_columns!(),
        " FROM notifications WHERE status = 'queued' AND next_attempt_at <= ? \
         ORDER BY next_attempt_at LIMIT ?"
    ))
    .bind(now)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// A visit's notifications, oldest first.
pub async fn for_visit<'e>(
    db: impl SqliteExecutor<'e>,
    tenant_id: &str,
    visit_id: &str,
) -> Result<Vec<NotificationRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        notification_columns!(),
        " FROM notifications WHERE tenant_id = ? AND visit_id = ? ORDER BY created_at, id"
    ))
    .bind(tenant_id)
    .bind(visit_id)
    .fetch_all(db)
    .await
}

/// Records a delivery attempt's result.
pub async fn record_attempt<'e>(
    db: impl SqliteExecutor<'e>,
    id: &str,
    status: &str,
    next_attempt_at: i64,
    last_error: Option<&str>,
    sent_at: Option<i64>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE notifications SET status = ?, attempts = attempts + 1, next_attempt_at = ?, \
         last_error = ?, sent_at = ? WHERE id = ?",
    )
    .bind(status)
    .bind(next_attempt_at)
    .bind(last_error)
    .bind(sent_at)
    .bind(id)
    .execute(db)
    .await?;
    Ok(())
}

/// Pushes a queued notification back to `next_attempt_at` without counting an attempt
/// (its transport's circuit breaker is open), saying why in `last_error`.
pub async fn defer<'e>(
    db: impl SqliteExecutor<'e>,
    id: &str,
    next_attempt_at: i64,
    why: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE notifications SET next_attempt_at = ?, last_error = ? \
         WHERE id = ? AND status = 'queued'",
    )
    .bind(next_attempt_at)
    .bind(why)
    .bind(id)
    .execute(db)
    .await?;
    Ok(())
}
