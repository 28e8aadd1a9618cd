//! Visit rows. PHI columns hold ciphertext; the caller encrypts and decrypts.

use super::{Db, DbError, Sql, query, query_as, query_scalar, record};
use crate::model::VisitStatus;

record! {
    /// A visit row as stored.
    #[derive(Debug, Clone)]
    pub struct VisitRow {
        /// Visit id.
        pub id: String,
        /// Tenant.
        pub tenant_id: String,
        /// Clinician (staff id).
        pub clinician_id: String,
        /// Stored status name.
        pub status: String,
        /// Unix ms.
        pub scheduled_at: i64,
        /// Minutes.
        pub duration_minutes: i64,
        /// `sfu` or `chime`.
        pub media_backend: String,
        /// Waiting room on.
        pub waiting_room: bool,
        /// Ciphertext.
        pub patient_name_ct: Vec<u8>,
        /// Ciphertext.
        pub patient_phone_ct: Option<Vec<u8>>,
        /// Ciphertext.
        pub patient_email_ct: Option<Vec<u8>>,
        /// Ciphertext.
        pub chief_complaint_ct: Option<Vec<u8>>,
        /// Ciphertext.
        pub notes_ct: Option<Vec<u8>>,
        /// Unix ms.
        pub created_at: i64,
        /// Unix ms.
        pub updated_at: i64,
        /// Unix ms.
        pub started_at: Option<i64>,
        /// Unix ms.
        pub ended_at: Option<i64>,
    }
}

impl VisitRow {
    /// The parsed status (`Scheduled` if the column is unreadable, which the CHECK prevents).
    pub fn status(&self) -> VisitStatus {
        VisitStatus::parse(&self.status).unwrap_or(VisitStatus::Scheduled)
    }

    /// End of the scheduled slot, Unix ms.
    pub fn scheduled_end(&self) -> i64 {
        self.scheduled_at + self.duration_minutes * 60_000
    }
}

macro_rules! visit_columns {
    () => {
        "id, tenant_id, clinician_id, status, scheduled_at, duration_minutes, \
    media_backend, waiting_room, patient_name_ct, patient_phone_ct, patient_email_ct, \
    chief_complaint_ct, notes_ct, created_at, updated_at, started_at, ended_at"
    };
}

/// Inserts a visit.
pub async fn insert(db: &mut Db, v: &VisitRow) -> Result<(), DbError> {
    db.scope(&v.tenant_id).await?;
    query(concat!(
        "INSERT INTO visits (",
        visit_columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)"
    ))
    .bind(&v.id)
    .bind(&v.tenant_id)
    .bind(&v.clinician_id)
    .bind(&v.status)
    .bind(v.scheduled_at)
    .bind(v.duration_minutes)
    .bind(&v.media_backend)
    .bind(v.waiting_room)
    .bind(&v.patient_name_ct)
    .bind(&v.patient_phone_ct)
    .bind(&v.patient_email_ct)
    .bind(&v.chief_complaint_ct)
    .bind(&v.notes_ct)
    .bind(v.created_at)
    .bind(v.updated_at)
    .bind(v.started_at)
    .bind(v.ended_at)
    .execute(db)
    .await?;
    Ok(())
}

/// Rewrites every editable column of `v` (used by PATCH while `scheduled`).
pub async fn update(db: &mut Db, v: &VisitRow) -> Result<(), DbError> {
    db.scope(&v.tenant_id).await?;
    query(
        "UPDATE visits SET clinician_id = $1, scheduled_at = $2, duration_minutes = $3, waiting_room = $4, \
         patient_name_ct = $5, patient_phone_ct = $6, patient_email_ct = $7, chief_complaint_ct = $8, \
         notes_ct = $9, updated_at = $10 WHERE tenant_id = $11 AND id = $12",
    )
    .bind(&v.clinician_id)
    .bind(v.scheduled_at)
    .bind(v.duration_minutes)
    .bind(v.waiting_room)
    .bind(&v.patient_name_ct)
    .bind(&v.patient_phone_ct)
    .bind(&v.patient_email_ct)
    .bind(&v.chief_complaint_ct)
    .bind(&v.notes_ct)
    .bind(v.updated_at)
    .bind(&v.tenant_id)
    .bind(&v.id)
    .execute(db)
    .await?;
    Ok(())
}

/// One visit of a tenant.
pub async fn get(db: &mut Db, tenant_id: &str, id: &str) -> Result<Option<VisitRow>, DbError> {
    db.scope(tenant_id).await?;
    query_as(concat!(
        "SELECT ",
        visit_columns!(),
        " FROM visits WHERE tenant_id = $1 AND id = $2"
    ))
    .bind(tenant_id)
    .bind(id)
    .fetch_optional(db)
    .await
}

/// Moves a visit from one of `from` to `to`, stamping `started_at`/`ended_at` as fits.
/// Returns false when the visit was not in any of `from` (someone else moved it first).
pub async fn transition(
    db: &mut Db,
    tenant_id: &str,
    id: &str,
    from: &[VisitStatus],
    to: VisitStatus,
    now: i64,
) -> Result<bool, DbError> {
    let stamp = match to {
        VisitStatus::Waiting | VisitStatus::InProgress => ", started_at = COALESCE(started_at, $2)",
        VisitStatus::Ended | VisitStatus::Cancelled => ", ended_at = $2",
        VisitStatus::Scheduled => "",
    };
    let mut q = Sql::new("UPDATE visits SET status = $1, updated_at = $2");
    q.arg(to.as_str()).arg(now);
    q.push(stamp).push(" WHERE tenant_id = ");
    q.bind(tenant_id.to_owned());
    q.push(" AND id = ").bind(id.to_owned());
    q.push(" AND status IN (");
    for (i, status) in from.iter().enumerate() {
        if i > 0 {
            q.push(", ");
        }
        q.bind(status.as_str().to_owned());
    }
    q.push(")");
    db.scope(tenant_id).await?;
    let done = query(&q).execute(db).await?;
    Ok(done == 1)
}

/// Filters of a visit listing.
#[derive(Debug, Clone, Default)]
pub struct VisitFilter {
    /// Only this status.
    pub status: Option<VisitStatus>,
    /// Scheduled at or after (Unix ms).
    pub from: Option<i64>,
    /// Scheduled before (Unix ms).
    pub to: Option<i64>,
    /// Only this clinician.
    pub clinician_id: Option<String>,
    /// Keyset position: after (scheduled_at, id).
    pub after: Option<(i64, String)>,
    /// Page size.
    pub limit: u32,
}

/// A page of visits ordered by (scheduled_at, id); fetches one extra row to tell if more follow.
pub async fn list(db: &mut Db, tenant_id: &str, f: &VisitFilter) -> Result<Vec<VisitRow>, DbError> {
    let mut q = Sql::new(concat!(
        "SELECT ",
        visit_columns!(),
        " FROM visits WHERE tenant_id = "
    ));
    q.bind(tenant_id.to_owned());
    if let Some(status) = f.status {
        q.push(" AND status = ").bind(status.as_str().to_owned());
    }
    if let Some(from) = f.from {
        q.push(" AND scheduled_at >= ").bind(from);
    }
    if let Some(to) = f.to {
        q.push(" AND scheduled_at < ").bind(to);
    }
    if let Some(clinician) = &f.clinician_id {
        q.push(" AND clinician_id = ").bind(clinician.clone());
    }
    if let Some((at, id)) = &f.after {
        q.push(" AND (scheduled_at > ").bind(*at);
        q.push(" OR (scheduled_at = ").bind(*at);
        q.push(" AND id > ").bind(id.clone()).push("))");
    }
    q.push(" ORDER BY scheduled_at, id LIMIT ")
        .bind(i64::from(f.limit) + 1);
    db.scope(tenant_id).await?;
    query_as(&q).fetch_all(db).await
}

/// Visits a tenant created at or after `since` (Unix ms), for the daily quota.
pub async fn count_created_since(db: &mut Db, tenant_id: &str, since: i64) -> Result<i64, DbError> {
    db.scope(tenant_id).await?;
    query_scalar("SELECT COUNT(*) FROM visits WHERE tenant_id = $1 AND created_at >= $2")
        .bind(tenant_id)
        .bind(since)
        .fetch_one(db)
        .await
}

/// Records the media backend's session id of a visit (the latest one wins: a backend may
/// replace a session that expired).
pub async fn set_media_session(
    db: &mut Db,
    tenant_id: &str,
    id: &str,
    session_id: &str,
) -> Result<(), DbError> {
    db.scope(tenant_id).await?;
    query("UPDATE visits SET media_session_id = $1 WHERE tenant_id = $2 AND id = $3")
        .bind(session_id)
        .bind(tenant_id)
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

/// The media backend's session id of a visit, if one was recorded.
pub async fn media_session(
    db: &mut Db,
    tenant_id: &str,
    id: &str,
) -> Result<Option<String>, DbError> {
    db.scope(tenant_id).await?;
    query_scalar("SELECT media_session_id FROM visits WHERE tenant_id = $1 AND id = $2")
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(db)
        .await
        .map(Option::flatten)
}

/// Ids of a tenant's visits whose room is open (waiting or in progress), by start.
pub async fn open_rooms(db: &mut Db, tenant_id: &str) -> Result<Vec<String>, DbError> {
    db.scope(tenant_id).await?;
    query_scalar(
        "SELECT id FROM visits WHERE tenant_id = $1 AND status IN ('waiting', 'in_progress') \
         ORDER BY started_at, id",
    )
    .bind(tenant_id)
    .fetch_all(db)
    .await
}

/// How many visits of every tenant have an open room. SQLite only: it is the one node there,
/// so every open room is its own; on PostgreSQL row-level security confines this to one
/// tenant, and the placements count rooms instead.
pub async fn open_rooms_of_every_tenant(db: &mut Db) -> Result<i64, DbError> {
    query_scalar("SELECT COUNT(*) FROM visits WHERE status IN ('waiting', 'in_progress')")
        .fetch_one(db)
        .await
}
