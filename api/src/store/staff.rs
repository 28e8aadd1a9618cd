//! Staff members and their API keys (only SHA-256 hashes of keys are stored).

use sqlx::SqliteExecutor;

use crate::model::StaffRole;

/// The principal behind an API key.
#[derive(Debug, Clone, sqlx::FromRow)]
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

/// A staff row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StaffRow {
    /// Staff id.
    pub id: String,
    /// Role (stored name).
    pub role: String,
    /// Display name.
    pub display_name: String,
}

/// Inserts a staff member.
pub async fn insert_staff<'e>(
    db: impl SqliteExecutor<'e>,
    tenant_id: &str,
    row: &StaffRow,
    email_ct: Option<&[u8]>,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO staff (id, tenant_id, role, display_name, email_ct, created_at) VALUES (?, ?, ?, ?, ?, ?)",
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
pub async fn get_staff<'e>(
    db: impl SqliteExecutor<'e>,
    tenant_id: &str,
    id: &str,
) -> Result<Option<StaffRow>, sqlx::Error> {
    sqlx::query_as("SELECT id, role, display_name FROM staff WHERE tenant_id = ? AND id = ?")
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(db)
        .await
}

/// Stores a new API key hash.
pub async fn insert_key<'e>(
    db: impl SqliteExecutor<'e>,
    id: &str,
    tenant_id: &str,
    staff_id: Option<&str>,
    role: StaffRole,
    key_hash: &[u8],
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO api_keys (id, tenant_id, staff_id, role, key_hash, created_at) VALUES (?, ?, ?, ?, ?, ?)",
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

/// The key with this hash.
pub async fn key_by_hash<'e>(
    db: impl SqliteExecutor<'e>,
    key_hash: &[u8],
) -> Result<Option<KeyRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, tenant_id, staff_id, role, revoked_at FROM api_keys WHERE key_hash = ?",
    )
    .bind(key_hash)
    .fetch_optional(db)
    .await
}

/// The key with this id.
pub async fn key_by_id<'e>(
    db: impl SqliteExecutor<'e>,
    id: &str,
) -> Result<Option<KeyRow>, sqlx::Error> {
    sqlx::query_as("SELECT id, tenant_id, staff_id, role, revoked_at FROM api_keys WHERE id = ?")
        .bind(id)
        .fetch_optional(db)
        .await
}

/// Revokes a key; false when it did not exist or was already revoked.
pub async fn revoke_key<'e>(
    db: impl SqliteExecutor<'e>,
    id: &str,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let done =
        sqlx::query("UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL")
            .bind(now)
            .bind(id)
            .execute(db)
            .await?;
    Ok(done.rows_affected() == 1)
}
