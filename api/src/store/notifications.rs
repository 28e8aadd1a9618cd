//! The notification outbox: rows are queued in the transaction that decides to notify and
//! delivered afterwards by the outbox worker, with retries.

use super::{Db, DbError, Engine, query, query_as, record};

record! {
    /// An outbox row.
    #[derive(Debug, Clone)]
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
}

macro_rules! notification_columns {
    () => {
        "id, tenant_id, visit_id, channel, transport, recipient_ct, recipient_masked, \
    body_ct, status, attempts, next_attempt_at, last_error, created_at, sent_at"
    };
}

/// Queues a notification.
pub async fn insert(db: &mut Db, n: &NotificationRow) -> Result<(), DbError> {
    db.scope(&n.tenant_id).await?;
    query(concat!(
        "INSERT INTO notifications (",
        notification_columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
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

/// Claims up to `limit` queued notifications due at `now`, oldest first, by moving their
/// next attempt to `lease_until`: another node's outbox worker (or this one's next pass) then
/// leaves them alone while this one delivers; a crash before the outcome is recorded only
/// delays them to `lease_until`.
pub async fn claim_due(
    db: &mut Db,
    now: i64,
    lease_until: i64,
    limit: i64,
) -> Result<Vec<NotificationRow>, DbError> {
    let sql = match db.engine() {
        Engine::Sqlite => {
            "SELECT tenant_id, id FROM notifications WHERE status = 'queued' AND next_attempt_at <= $1 \
             ORDER BY next_attempt_at LIMIT $2"
        }
        Engine::Postgres => "SELECT tenant_id, id FROM bedside_due_notifications($1, $2)",
    };
    let due: Vec<(String, String)> = query_as(sql).bind(now).bind(limit).fetch_all(db).await?;
    let mut claimed = Vec::with_capacity(due.len());
    for (tenant_id, id) in due {
        db.scope(&tenant_id).await?;
        let row: Option<NotificationRow> = query_as(concat!(
            "UPDATE notifications SET next_attempt_at = $1 WHERE tenant_id = $2 AND id = $3 \
             AND status = 'queued' AND next_attempt_at <= $4 RETURNING ",
            notification_columns!()
        ))
        .bind(lease_until)
        .bind(&tenant_id)
        .bind(&id)
        .bind(now)
        .fetch_optional(db)
        .await?;
        claimed.extend(row);
    }
    Ok(claimed)
}

/// A visit's notifications, oldest first.
pub async fn for_visit(
    db: &mut Db,
    tenant_id: &str,
    visit_id: &str,
) -> Result<Vec<NotificationRow>, DbError> {
    db.scope(tenant_id).await?;
    query_as(concat!(
        "SELECT ",
        notification_columns!(),
        " FROM notifications WHERE tenant_id = $1 AND visit_id = $2 ORDER BY created_at, id"
    ))
    .bind(tenant_id)
    .bind(visit_id)
    .fetch_all(db)
    .await
}

/// Records a delivery attempt's result.
pub async fn record_attempt(
    db: &mut Db,
    tenant_id: &str,
    id: &str,
    status: &str,
    next_attempt_at: i64,
    last_error: Option<&str>,
    sent_at: Option<i64>,
) -> Result<(), DbError> {
    db.scope(tenant_id).await?;
    query(
        "UPDATE notifications SET status = $1, attempts = attempts + 1, next_attempt_at = $2, \
         last_error = $3, sent_at = $4 WHERE tenant_id = $5 AND id = $6",
    )
    .bind(status)
    .bind(next_attempt_at)
    .bind(last_error)
    .bind(sent_at)
    .bind(tenant_id)
    .bind(id)
    .execute(db)
    .await?;
    Ok(())
}

/// Pushes a queued notification back to `next_attempt_at` without counting an attempt
/// (its transport's circuit breaker is open), saying why in `last_error`.
pub async fn defer(
    db: &mut Db,
    tenant_id: &str,
    id: &str,
    next_attempt_at: i64,
    why: &str,
) -> Result<(), DbError> {
    db.scope(tenant_id).await?;
    query(
        "UPDATE notifications SET next_attempt_at = $1, last_error = $2 \
         WHERE tenant_id = $3 AND id = $4 AND status = 'queued'",
    )
    .bind(next_attempt_at)
    .bind(why)
    .bind(tenant_id)
    .bind(id)
    .execute(db)
    .await?;
    Ok(())
}
