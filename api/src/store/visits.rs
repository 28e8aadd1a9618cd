//! Visit rows. PHI columns hold ciphertext; the caller encrypts and decrypts.

use sqlx::{QueryBuilder, Sqlite, SqliteExecutor};

use crate::model::VisitStatus;

/// A visit row as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
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

impl VisitRow {
    /// The parsed status (`Scheduled` if the column is unreadable, which the CHECK prevents).
    pub fn status(&self) -> VisitStatus {
        VisitStatus::parse(&self.status).unwrap_or(VisitStatus::Scheduled)
    }

    /// `visit_cancelled` / `visit_ended` when the visit is over for good: nothing may join
    /// it, issue links for it or refresh grants into it.
    pub fn refuse_final(&self) -> Result<(), crate::error::ApiError> {
        match self.status() {
            VisitStatus::Cancelled => Err(crate::error::ApiError::VisitCancelled),
            VisitStatus::Ended => Err(crate::error::ApiError::VisitEnded),
            _ => Ok(()),
        }
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
pub async fn insert<'e>(db: impl SqliteExecutor<'e>, v: &VisitRow) -> Result<(), sqlx::Error> {
    sqlx::query(concat!(
        "INSERT INTO visits (",
        visit_columns!(),
        ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
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
pub async fn update<'e>(db: impl SqliteExecutor<'e>, v: &VisitRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE visits SET clinician_id = ?, scheduled_at = ?, duration_minutes = ?, waiting_room = ?, \
         patient_name_ct = ?, patient_phone_ct = ?, patient_email_ct = ?, chief_complaint_ct = ?, \
         notes_ct = ?, updated_at = ? WHERE tenant_id = ? AND id = ?",
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
pub async fn get<'e>(
    db: impl SqliteExecutor<'e>,
    tenant_id: &str,
    id: &str,
) -> Result<Option<VisitRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        visit_columns!(),
        " FROM visits WHERE tenant_id = ? AND id = ?"
    ))
    .bind(tenant_id)
    .bind(id)
    .fetch_optional(db)
    .await
}

/// Moves a visit from one of `from` to `to`, stamping `started_at`/`ended_at` as fits.
/// Returns false when the visit was not in any of `from` (someone else moved it first).
pub async fn transition<'e>(
    db: impl SqliteExecutor<'e>,
    tenant_id: &str,
    id: &str,
    from: &[VisitStatus],
    to: VisitStatus,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let mut q = QueryBuilder::<Sqlite>::new("UPDATE visits SET status = ");
    q.push_bind(to.as_str())
        .push(", updated_at = ")
        .push_bind(now);
    match to {
        VisitStatus::Waiting | VisitStatus::InProgress => {
            q.push(", started_at = COALESCE(started_at, ")
                .push_bind(now)
                .push(")");
        }
        VisitStatus::Ended | VisitStatus::Cancelled => {
            q.push(", ended_at = ").push_bind(now);
        }
        VisitStatus::Scheduled => {}
    }
    q.push(" WHERE tenant_id = ").push_bind(tenant_id);
    q.push(" AND id = ").push_bind(id);
    q.push(" AND status IN (");
    let mut sep = q.separated(", ");
    for status in from {
        sep.push_bind(status.as_str());
    }
    q.push(")");
    Ok(q.build().execute(db).await?.rows_affected() == 1)
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
pub async fn list<'e>(
    db: impl SqliteExecutor<'e>,
    tenant_id: &str,
    f: &VisitFilter,
) -> Result<Vec<VisitRow>, sqlx::Error> {
    let mut q = QueryBuilder::<Sqlite>::new(concat!(
        "SELECT ",
        visit_columns!(),
        " FROM visits WHERE tenant_id = "
    ));
    q.push_bind(tenant_id.to_owned());
    if let Some(status) = f.status {
        q.push(" AND status = ").push_bind(status.as_str());
    }
    if let Some(from) = f.from {
        q.push(" AND scheduled_at >= ").push_bind(from);
    }
    if let Some(to) = f.to {
        q.push(" AND scheduled_at < ").push_bind(to);
    }
    if let Some(clinician) = &f.clinician_id {
        q.push(" AND clinician_id = ").push_bind(clinician.clone());
    }
    if let Some((at, id)) = &f.after {
        q.push(" AND (scheduled_at > ").push_bind(*at);
        q.push(" OR (scheduled_at = ").push_bind(*at);
        q.push(" AND id > ").push_bind(id.clone()).push("))");
    }
    q.push(" ORDER BY scheduled_at, id LIMIT ")
        .push_bind(i64::from(f.limit) + 1);
    q.build_query_as().fetch_all(db).await
}

/// Visits a tenant created at or after `since` (Unix ms), for the daily quota.
pub async fn count_created_since<'e>(
    db: impl SqliteExecutor<'e>,
    tenant_id: &str,
    since: i64,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM visits WHERE tenant_id = ? AND created_at >= ?")
        .bind(tenant_id)
        .bind(since)
        .fetch_one(db)
        .await
}

/// Records the media backend's session id of a visit (the latest one wins: a backend may
/// replace a session that expired).
pub async fn set_media_session<'e>(
    db: impl SqliteExecutor<'e>,
    tenant_id: &str,
    id: &str,
    session_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE visits SET media_session_id = ? WHERE tenant_id = ? AND id = ?")
        .bind(session_id)
        .bind(tenant_id)
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

/// The media backend's session id of a visit, if one was recorded.
pub async fn media_session<'e>(
    db: impl SqliteExecutor<'e>,
    tenant_id: &str,
    id: &str,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT media_session_id FROM visits WHERE tenant_id = ? AND id = ?")
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(db)
        .await
        .map(Option::flatten)
}
