//! Appending to and reading the audit chain.

use std::collections::HashMap;

use super::{Db, DbError, Engine, Sql, Store, query, query_as, query_scalar};
use crate::audit::{Entry, GENESIS, NewEntry};
use futures::{Stream, StreamExt as _};

/// Appends `entry` to its tenant's chain inside the caller's transaction.
pub async fn append(conn: &mut Db, entry: NewEntry, now: i64) -> Result<Entry, DbError> {
    append_all(conn, vec![entry], now)
        .await?
        .pop()
        .ok_or(DbError::RowNotFound)
}

/// Appends `entries` in order inside the caller's transaction, reading each tenant's chain
/// head once (a transaction that records several acts pays for one head read, not one each).
pub async fn append_all(
    conn: &mut Db,
    entries: Vec<NewEntry>,
    now: i64,
) -> Result<Vec<Entry>, DbError> {
    let mut heads: HashMap<String, String> = HashMap::new();
    let mut rows = Vec::with_capacity(entries.len());
    for entry in entries {
        let prev = match heads.get(&entry.tenant_id) {
            Some(hash) => hash.clone(),
            None => head(conn, &entry.tenant_id).await?,
        };
        let row = insert(conn, entry, prev, now).await?;
        heads.insert(row.tenant_id.clone(), row.hash.clone());
        rows.push(row);
    }
    Ok(rows)
}

/// The hash of a tenant's last row ([`GENESIS`] for an empty chain). On PostgreSQL the
/// tenant's chain is first locked until the transaction ends: two nodes appending at once
/// would otherwise both link to the same head and fork the chain (SQLite has one writer).
async fn head(conn: &mut Db, tenant_id: &str) -> Result<String, DbError> {
    conn.scope(tenant_id).await?;
    if conn.engine() == Engine::Postgres {
        query("SELECT pg_advisory_xact_lock(hashtext('bedside.audit:' || $1))")
            .bind(tenant_id)
            .execute(conn)
            .await?;
    }
    let prev: Option<String> =
        query_scalar("SELECT hash FROM audit WHERE tenant_id = $1 ORDER BY seq DESC LIMIT 1")
            .bind(tenant_id)
            .fetch_optional(conn)
            .await?;
    Ok(prev.unwrap_or_else(|| GENESIS.to_owned()))
}

async fn insert(
    conn: &mut Db,
    entry: NewEntry,
    prev_hash: String,
    now: i64,
) -> Result<Entry, DbError> {
    let mut row = Entry {
        seq: 0,
        id: super::new_id(),
        tenant_id: entry.tenant_id,
        at: now,
        actor: entry.actor.actor,
        event: entry.event.to_owned(),
        visit_id: entry.visit_id,
        outcome: entry.outcome.as_str().to_owned(),
        reason: entry.reason,
        ip_masked: entry.actor.ip_masked,
        ua_hash: entry.actor.ua_hash,
        details: entry.details.to_string(),
        prev_hash,
        hash: String::new(),
    };
    row.hash = row.expected_hash();
    conn.scope(&row.tenant_id).await?;
    row.seq = query_scalar(
        "INSERT INTO audit (id, tenant_id, at, actor, event, visit_id, outcome, reason, ip_masked, \
         ua_hash, details, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
         RETURNING seq",
    )
    .bind(&row.id)
    .bind(&row.tenant_id)
    .bind(row.at)
    .bind(&row.actor)
    .bind(&row.event)
    .bind(&row.visit_id)
    .bind(&row.outcome)
    .bind(&row.reason)
    .bind(&row.ip_masked)
    .bind(&row.ua_hash)
    .bind(&row.details)
    .bind(&row.prev_hash)
    .bind(&row.hash)
    .fetch_one(conn)
    .await?;
    Ok(row)
}

/// Filters of an audit query.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Only this visit.
    pub visit_id: Option<String>,
    /// Only this event.
    pub event: Option<String>,
    /// At or after (Unix ms).
    pub from: Option<i64>,
    /// Before (Unix ms).
    pub to: Option<i64>,
    /// Rows after this seq.
    pub after_seq: Option<i64>,
    /// Page size; None = no limit (export).
    pub limit: Option<u32>,
}

macro_rules! audit_columns {
    () => {
        "seq, id, tenant_id, at, actor, event, visit_id, outcome, reason, ip_masked, \
    ua_hash, details, prev_hash, hash"
    };
}

fn select(tenant_id: &str, f: &AuditFilter) -> Sql {
    let mut q = Sql::new(concat!(
        "SELECT ",
        audit_columns!(),
        " FROM audit WHERE tenant_id = "
    ));
    q.bind(tenant_id.to_owned());
    if let Some(visit) = &f.visit_id {
        q.push(" AND visit_id = ").bind(visit.clone());
    }
    if let Some(event) = &f.event {
        q.push(" AND event = ").bind(event.clone());
    }
    if let Some(from) = f.from {
        q.push(" AND at >= ").bind(from);
    }
    if let Some(to) = f.to {
        q.push(" AND at < ").bind(to);
    }
    if let Some(seq) = f.after_seq {
        q.push(" AND seq > ").bind(seq);
    }
    q.push(" ORDER BY seq");
    if let Some(limit) = f.limit {
        q.push(" LIMIT ").bind(i64::from(limit) + 1);
    }
    q
}

/// A page of rows (one extra to tell whether more follow).
pub async fn page(db: &mut Db, tenant_id: &str, f: &AuditFilter) -> Result<Vec<Entry>, DbError> {
    let q = select(tenant_id, f);
    db.scope(tenant_id).await?;
    query_as(&q).fetch_all(db).await
}

/// Every matching row, streamed in batches each read on its own connection (export,
/// verification).
pub fn stream(
    store: Store,
    tenant_id: String,
    f: AuditFilter,
) -> impl Stream<Item = Result<Entry, DbError>> + Send + 'static {
    const BATCH: u32 = 500;
    let start = Some(f.after_seq);
    futures::stream::unfold(start, move |cursor| {
        let (store, tenant_id, f) = (store.clone(), tenant_id.clone(), f.clone());
        async move {
            let after_seq = cursor?;
            let batch = AuditFilter {
                after_seq,
                limit: Some(BATCH),
                ..f
            };
            let rows = match store.read().await {
                Ok(mut db) => page(&mut db, &tenant_id, &batch).await,
                Err(err) => Err(err),
            };
            let (items, next) = match rows {
                Ok(mut rows) => {
                    let more = rows.len() > BATCH as usize;
                    rows.truncate(BATCH as usize);
                    let next = if more {
                        rows.last().map(|r| Some(r.seq))
                    } else {
                        None
                    };
                    (rows.into_iter().map(Ok).collect::<Vec<_>>(), next)
                }
                Err(err) => (vec![Err(err)], None),
            };
            Some((futures::stream::iter(items), next))
        }
    })
    .flatten()
}

/// Audit rows of a visit with this event in the window `[since, ∞)` (resend limit).
pub async fn count_events_since(
    db: &mut Db,
    tenant_id: &str,
    visit_id: &str,
    event: &str,
    since: i64,
) -> Result<i64, DbError> {
    db.scope(tenant_id).await?;
    query_scalar(
        "SELECT COUNT(*) FROM audit WHERE tenant_id = $1 AND visit_id = $2 AND event = $3 AND at >= $4",
    )
    .bind(tenant_id)
    .bind(visit_id)
    .bind(event)
    .bind(since)
    .fetch_one(db)
    .await
}
