//! Tenants and their wrapped data keys.

use super::{Db, DbError, Engine, query, query_as, query_scalar, record};

record! {
    /// A tenant row.
    #[derive(Debug, Clone)]
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
}

/// Inserts a tenant.
pub async fn insert(db: &mut Db, row: &TenantRow, now: i64) -> Result<(), DbError> {
    db.scope(&row.id).await?;
    query(
        "INSERT INTO tenants (id, name, wrapped_data_key, key_provider, created_at) VALUES ($1, $2, $3, $4, $5)",
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
pub async fn get(db: &mut Db, id: &str) -> Result<Option<TenantRow>, DbError> {
    db.scope(id).await?;
    query_as("SELECT id, name, wrapped_data_key, key_provider FROM tenants WHERE id = $1")
        .bind(id)
        .fetch_optional(db)
        .await
}

/// Every tenant id, oldest first (on PostgreSQL through a `SECURITY DEFINER` function: no
/// tenant scope sees them all).
pub async fn ids(db: &mut Db) -> Result<Vec<String>, DbError> {
    let sql = match db.engine() {
        Engine::Sqlite => "SELECT id FROM tenants ORDER BY created_at, id",
        Engine::Postgres => "SELECT bedside_tenant_ids()",
    };
    query_scalar(sql).fetch_all(db).await
}
