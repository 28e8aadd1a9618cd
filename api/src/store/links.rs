//! One-time links (only a hash of each code is stored) and the participants they create.

use super::{Db, DbError, Definer, FromRecord, Record, query, query_as, query_scalar, record};
use crate::model::ParticipantRole;

record! {
    /// A link with what deciding about it needs. Its id and tenant columns are read as
    /// `link_id` / `link_tenant_id` so a link and its visit come out of one JOIN.
    #[derive(Debug, Clone)]
    pub struct LinkRow {
        /// Link id.
        pub id: String = "link_id",
        /// Tenant.
        pub tenant_id: String = "link_tenant_id",
        /// Visit.
        pub visit_id: String,
        /// `patient` or `clinician`.
        pub role: String,
        /// Unix ms.
        pub expires_at: i64,
        /// Unix ms, when superseded or its visit ended.
        pub revoked_at: Option<i64>,
        /// Unix ms, when consumed by `start`.
        pub redeemed_at: Option<i64>,
        /// Participant created by the redemption.
        pub participant_id: Option<String>,
        /// Hash of the device secret it is bound to.
        pub device_hash: Option<Vec<u8>>,
        /// UA hash it is bound to.
        pub ua_hash: Option<Vec<u8>>,
        /// Network prefix it is bound to.
        pub ip_prefix: Option<String>,
    }
}

impl LinkRow {
    /// The parsed role.
    pub fn role(&self) -> ParticipantRole {
        ParticipantRole::parse(&self.role).unwrap_or(ParticipantRole::Patient)
    }
}

/// Inserts a link.
#[allow(clippy::too_many_arguments)]
pub async fn insert(
    db: &mut Db,
    id: &str,
    tenant_id: &str,
    visit_id: &str,
    role: ParticipantRole,
    code_hash: &[u8],
    expires_at: i64,
    now: i64,
) -> Result<(), DbError> {
    db.scope(tenant_id).await?;
    query(
        "INSERT INTO links (id, tenant_id, visit_id, role, code_hash, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(id)
    .bind(tenant_id)
    .bind(visit_id)
    .bind(role.as_str())
    .bind(code_hash)
    .bind(now)
    .bind(expires_at)
    .execute(db)
    .await?;
    Ok(())
}

/// A link with its visit and the visit's clinician, as one row.
#[derive(Debug, Clone)]
pub struct LinkWithVisit {
    /// The link.
    pub link: LinkRow,
    /// Its visit.
    pub visit: super::visits::VisitRow,
    /// The visit's clinician's display name (None if the staff row is gone).
    pub clinician_display_name: Option<String>,
}

impl FromRecord for LinkWithVisit {
    fn from_record(record: &Record<'_>) -> Result<Self, DbError> {
        Ok(Self {
            link: LinkRow::from_record(record)?,
            visit: super::visits::VisitRow::from_record(record)?,
            clinician_display_name: record.get("clinician_display_name")?,
        })
    }
}

/// The link whose code hashes to `code_hash` (in any tenant), its visit and clinician, in one
/// statement: redeem and start are the hottest routes.
pub async fn by_code_hash(db: &mut Db, code_hash: &[u8]) -> Result<Option<LinkWithVisit>, DbError> {
    if !db.scope_by(Definer::LinkCodeHash, code_hash).await? {
        return Ok(None);
    }
    query_as(
        "SELECT l.*, v.*, s.display_name AS clinician_display_name FROM \
         (SELECT id AS link_id, tenant_id AS link_tenant_id, visit_id, role, expires_at, revoked_at, \
          redeemed_at, participant_id, device_hash, ua_hash, ip_prefix FROM links WHERE code_hash = $1) l \
         JOIN visits v ON v.id = l.visit_id AND v.tenant_id = l.link_tenant_id \
         LEFT JOIN staff s ON s.id = v.clinician_id AND s.tenant_id = v.tenant_id",
    )
    .bind(code_hash)
    .fetch_optional(db)
    .await
}

/// Revokes a visit's unredeemed live links (of one role, or all when `role` is None).
pub async fn revoke_unredeemed(
    db: &mut Db,
    tenant_id: &str,
    visit_id: &str,
    role: Option<ParticipantRole>,
    now: i64,
) -> Result<u64, DbError> {
    db.scope(tenant_id).await?;
    let done = query(
        "UPDATE links SET revoked_at = $1 WHERE tenant_id = $2 AND visit_id = $3 \
         AND ($4 IS NULL OR role = $5) AND revoked_at IS NULL AND redeemed_at IS NULL",
    )
    .bind(now)
    .bind(tenant_id)
    .bind(visit_id)
    .bind(role.map(ParticipantRole::as_str))
    .bind(role.map(ParticipantRole::as_str))
    .execute(db)
    .await?;
    Ok(done)
}

/// Revokes every live link of a visit, redeemed or not (the visit ended or was cancelled).
pub async fn revoke_all(
    db: &mut Db,
    tenant_id: &str,
    visit_id: &str,
    now: i64,
) -> Result<u64, DbError> {
    db.scope(tenant_id).await?;
    let done = query(
        "UPDATE links SET revoked_at = $1 WHERE tenant_id = $2 AND visit_id = $3 AND revoked_at IS NULL",
    )
    .bind(now)
    .bind(tenant_id)
    .bind(visit_id)
    .execute(db)
    .await?;
    Ok(done)
}

/// Moves the expiry of a visit's live links (after a reschedule).
pub async fn reset_expiry(
    db: &mut Db,
    tenant_id: &str,
    visit_id: &str,
    expires_at: i64,
) -> Result<(), DbError> {
    db.scope(tenant_id).await?;
    query(
        "UPDATE links SET expires_at = $1 WHERE tenant_id = $2 AND visit_id = $3 AND revoked_at IS NULL",
    )
    .bind(expires_at)
    .bind(tenant_id)
    .bind(visit_id)
    .execute(db)
    .await?;
    Ok(())
}

/// What binds a redeemed link to one device.
#[derive(Debug, Clone)]
pub struct DeviceBinding {
    /// SHA-256 of the device cookie secret.
    pub device_hash: Vec<u8>,
    /// SHA-256 of the User-Agent.
    pub ua_hash: Vec<u8>,
    /// IPv4 /24 or IPv6 /48 of the client.
    pub ip_prefix: String,
}

/// Consumes the link in one conditional UPDATE: it succeeds for exactly one caller, and only
/// while the link is unredeemed, unrevoked and unexpired.
pub async fn consume(
    db: &mut Db,
    tenant_id: &str,
    link_id: &str,
    participant_id: &str,
    device: &DeviceBinding,
    now: i64,
) -> Result<bool, DbError> {
    db.scope(tenant_id).await?;
    let won: Option<String> = query_scalar(
        "UPDATE links SET redeemed_at = $1, participant_id = $2, device_hash = $3, ua_hash = $4, ip_prefix = $5 \
         WHERE tenant_id = $6 AND id = $7 AND redeemed_at IS NULL AND revoked_at IS NULL AND expires_at > $1 \
         RETURNING id",
    )
    .bind(now)
    .bind(participant_id)
    .bind(&device.device_hash)
    .bind(&device.ua_hash)
    .bind(&device.ip_prefix)
    .bind(tenant_id)
    .bind(link_id)
    .fetch_optional(db)
    .await?;
    Ok(won.is_some())
}

/// Creates a participant of a visit.
pub async fn insert_participant(
    db: &mut Db,
    id: &str,
    tenant_id: &str,
    visit_id: &str,
    role: ParticipantRole,
    staff_id: Option<&str>,
    now: i64,
) -> Result<(), DbError> {
    db.scope(tenant_id).await?;
    query(
        "INSERT INTO participants (id, tenant_id, visit_id, role, staff_id, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id)
    .bind(tenant_id)
    .bind(visit_id)
    .bind(role.as_str())
    .bind(staff_id)
    .bind(now)
    .execute(db)
    .await?;
    Ok(())
}

/// The participant a staff member already has in a visit, if any.
pub async fn staff_participant(
    db: &mut Db,
    tenant_id: &str,
    visit_id: &str,
    staff_id: &str,
) -> Result<Option<String>, DbError> {
    db.scope(tenant_id).await?;
    query_scalar(
        "SELECT id FROM participants WHERE tenant_id = $1 AND visit_id = $2 AND staff_id = $3 ORDER BY created_at LIMIT 1",
    )
    .bind(tenant_id)
    .bind(visit_id)
    .bind(staff_id)
    .fetch_optional(db)
    .await
}

/// Whether `participant_id` of `visit_id` was removed for good: `None` when the visit of
/// `tenant_id` has no such participant.
pub async fn participant_removed(
    db: &mut Db,
    tenant_id: &str,
    visit_id: &str,
    participant_id: &str,
) -> Result<Option<bool>, DbError> {
    db.scope(tenant_id).await?;
    let removed_at: Option<Option<i64>> = query_scalar(
        "SELECT removed_at FROM participants WHERE tenant_id = $1 AND visit_id = $2 AND id = $3",
    )
    .bind(tenant_id)
    .bind(visit_id)
    .bind(participant_id)
    .fetch_optional(db)
    .await?;
    Ok(removed_at.map(|at| at.is_some()))
}

/// Marks `participant_id` of `visit_id` removed for good at `now`; `false` when it already
/// was, or the visit of `tenant_id` has no such participant.
pub async fn remove_participant(
    db: &mut Db,
    tenant_id: &str,
    visit_id: &str,
    participant_id: &str,
    now: i64,
) -> Result<bool, DbError> {
    db.scope(tenant_id).await?;
    let removed: Option<String> = query_scalar(
        "UPDATE participants SET removed_at = $4 WHERE tenant_id = $1 AND visit_id = $2 AND id = $3 AND removed_at IS NULL RETURNING id",
    )
    .bind(tenant_id)
    .bind(visit_id)
    .bind(participant_id)
    .bind(now)
    .fetch_optional(db)
    .await?;
    Ok(removed.is_some())
}
