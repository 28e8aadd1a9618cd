//! Staff members and their API keys (only SHA-256 hashes of keys are stored).

use super::{Db, DbError, Definer, query, query_as, record};
use crate::model::StaffRole;

record! {
    /// The principal behind an API key.
    #[derive(Debug, Clone)]
    pub struct KeyRow {
        /// Key id.
        pub id: String,
        /// Tenant.
        pub tenant_id: String,
        /// Staff member the key belongs to, if any.
        pub staff_id: Option<String>,
        /// Role (stored name).
        pub role: String,
        /// When revoked, if revoked.
        pub revoked_at: Option<i64>,
    }
}

record! {
    /// A staff row.
    #[derive(Debug, Clone)]
    pub struct StaffRow {
        /// Staff id.
        pub id: String,
        /// Role (stored name).
        pub role: String,
        /// Display name.
        pub display_name: String,
    }
}

/// Inserts a staff member.
pub async fn insert_staff(
    db: &mut Db,
    tenant_id: &str,
    row: &StaffRow,
    email_ct: Option<&[u8]>,
    now: i64,
) -> Result<(), DbError> {
    db.scope(tenant_id).await?;
    query(
        "INSERT INTO staff (id, tenant_id, role, display_name, email_ct, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&row.id)
    .bind(tenant_id)
    .bind(&row.role)
    .bind(&row.display_name)
    .bind(email_ct)
    .bind(now)
    .execute(db)
    .await?;
    Ok(())
}

/// A staff member of `tenant_id`.
pub async fn get_staff(
    db: &mut Db,
    tenant_id: &str,
    id: &str,
) -> Result<Option<StaffRow>, DbError> {
    db.scope(tenant_id).await?;
    query_as("SELECT id, role, display_name FROM staff WHERE tenant_id = $1 AND id = $2")
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(db)
        .await
}

/// Stores a new API key hash.
pub async fn insert_key(
    db: &mut Db,
    id: &str,
    tenant_id: &str,
    staff_id: Option<&str>,
    role: StaffRole,
    key_hash: &[u8],
    now: i64,
) -> Result<(), DbError> {
    db.scope(tenant_id).await?;
    query(
        "INSERT INTO api_keys (id, tenant_id, staff_id, role, key_hash, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id)
    .bind(tenant_id)
    .bind(staff_id)
    .bind(role.as_str())
    .bind(key_hash)
    .bind(now)
    .execute(db)
    .await?;
    Ok(())
}

/// The key with this hash, in any tenant (the transaction is then scoped to its tenant).
pub async fn key_by_hash(db: &mut Db, key_hash: &[u8]) -> Result<Option<KeyRow>, DbError> {
    if !db.scope_by(Definer::KeyHash, key_hash).await? {
        return Ok(None);
    }
    query_as("SELECT id, tenant_id, staff_id, role, revoked_at FROM api_keys WHERE key_hash = $1")
        .bind(key_hash)
        .fetch_optional(db)
        .await
}

/// The key with this id, in any tenant (the transaction is then scoped to its tenant).
pub async fn key_by_id(db: &mut Db, id: &str) -> Result<Option<KeyRow>, DbError> {
    if !db.scope_by(Definer::KeyId, id).await? {
        return Ok(None);
    }
    query_as("SELECT id, tenant_id, staff_id, role, revoked_at FROM api_keys WHERE id = $1")
        .bind(id)
        .fetch_optional(db)
        .await
}

/// Revokes a key of `tenant_id`; false when it did not exist or was already revoked.
pub async fn revoke_key(db: &mut Db, tenant_id: &str, id: &str, now: i64) -> Result<bool, DbError> {
    db.scope(tenant_id).await?;
    let done = query(
        "UPDATE api_keys SET revoked_at = $1 WHERE tenant_id = $2 AND id = $3 AND revoked_at IS NULL",
    )
    .bind(now)
    .bind(tenant_id)
    .bind(id)
    .execute(db)
    .await?;
    Ok(done == 1)
}
