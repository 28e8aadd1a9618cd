//! Tenants and their wrapped data keys.

use sqlx::SqliteExecutor;

/// A tenant row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TenantRow {
    /// Tenant id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Data key wrapped by the key provider.
    pub wrapped_data_key: Vec<u8>,
    /// Name of the provider that wrapped it.
    pub key_provider: String,
}

/// Inserts a tenant.
pub async fn insert<'e>(
    db: impl SqliteExecutor<'e>,
    row: &TenantRow,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO tenants (id, name, wrapped_data_key, key_provider, created_at) VALUES (?, ?, ?, ?, ?)",
    )
    .bind(&row.id)
    .bind(&row.name)
    .bind(&row.wrapped_data_key)
    .bind(&row.key_provider)
    .bind(now)
    .execute(db)
    .await?;
    Ok(())
}

/// One tenant.
pub async fn get<'e>(
    db: impl SqliteExecutor<'e>,
    id: &str,
) -> Result<Option<TenantRow>, sqlx::Error> {
    sqlx::query_as("SELECT id, name, wrapped_data_key, key_provider FROM tenants WHERE id = ?")
        .bind(id)
        .fetch_optional(db)
        .await
}

/// Every tenant id, oldest first.
pub async fn ids<'e>(db: impl SqliteExecutor<'e>) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT id FROM tenants ORDER BY created_at, id")
        .fetch_all(db)
        .await
}
