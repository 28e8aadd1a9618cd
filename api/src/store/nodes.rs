//! The node registry and room placements of several nodes sharing one PostgreSQL. These
//! tables are routing state, not tenant data: every node sees every node (no row-level
//! security), so the queries take the pool directly.

use sqlx::PgPool;

/// A registered node.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct NodeRow {
    /// Node id.
    pub id: String,
    /// WebSocket URL of its signaling.
    pub signaling_url: String,
    /// Its SFU's UDP address.
    pub media_addr: String,
    /// Rooms placed on it at its last heartbeat.
    pub load: i64,
    /// Unix ms it registered.
    pub started_at: Option<i64>,
    /// Unix ms of its last heartbeat.
    pub heartbeat_at: i64,
}

/// Registers `node` or renews its registration, with its current room count as its load.
pub async fn heartbeat(pool: &PgPool, node: &NodeRow, now: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO nodes (id, signaling_url, media_addr, load, started_at, heartbeat_at) \
         VALUES ($1, $2, $3, (SELECT COUNT(*) FROM placements WHERE node_id = $1), $4, $4) \
         ON CONFLICT (id) DO UPDATE SET signaling_url = $2, media_addr = $3, heartbeat_at = $4, \
         load = (SELECT COUNT(*) FROM placements WHERE node_id = $1)",
    )
    .bind(&node.id)
    .bind(&node.signaling_url)
    .bind(&node.media_addr)
    .bind(now)
    .execute(pool)
    .await?;
    Ok(())
}

/// Removes nodes silent since before `dead_before`, and their placements with them.
pub async fn reap(pool: &PgPool, dead_before: i64) -> Result<u64, sqlx::Error> {
    let done = sqlx::query("DELETE FROM nodes WHERE heartbeat_at < $1")
        .bind(dead_before)
        .execute(pool)
        .await?;
    Ok(done.rows_affected())
}

/// Removes a node (a clean shutdown) and its placements.
pub async fn remove(pool: &PgPool, id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM nodes WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

/// How many nodes heartbeated at or after `alive_since`.
pub async fn live_count(pool: &PgPool, alive_since: i64) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM nodes WHERE heartbeat_at >= $1")
        .bind(alive_since)
        .fetch_one(pool)
        .await
}

/// Every registered node, by id.
pub async fn all(pool: &PgPool) -> Result<Vec<NodeRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, signaling_url, media_addr, load, started_at, heartbeat_at FROM nodes ORDER BY id",
    )
    .fetch_all(pool)
    .await
}

/// The node a visit's room is on, when that node is alive (heartbeat at or after
/// `alive_since`).
pub async fn placed(
    pool: &PgPool,
    visit_id: &str,
    alive_since: i64,
) -> Result<Option<NodeRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT n.id, n.signaling_url, n.media_addr, n.load, n.started_at, n.heartbeat_at \
         FROM placements p JOIN nodes n ON n.id = p.node_id \
         WHERE p.visit_id = $1 AND n.heartbeat_at >= $2",
    )
    .bind(visit_id)
    .bind(alive_since)
    .fetch_optional(pool)
    .await
}

/// Places a visit's room on the live node with the fewest rooms (ties by id), replacing a
/// placement on a dead node; when several nodes place the same visit at once, the first
/// insert wins and every caller gets its node. None when no node is alive.
pub async fn place(
    pool: &PgPool,
    tenant_id: &str,
    visit_id: &str,
    alive_since: i64,
    now: i64,
) -> Result<Option<NodeRow>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "DELETE FROM placements p USING nodes n \
         WHERE p.visit_id = $1 AND n.id = p.node_id AND n.heartbeat_at < $2",
    )
    .bind(visit_id)
    .bind(alive_since)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO placements (visit_id, tenant_id, node_id, placed_at) \
         SELECT $1, $2, n.id, $4 FROM nodes n WHERE n.heartbeat_at >= $3 \
         ORDER BY (SELECT COUNT(*) FROM placements q WHERE q.node_id = n.id), n.id LIMIT 1 \
         ON CONFLICT (visit_id) DO NOTHING",
    )
    .bind(visit_id)
    .bind(tenant_id)
    .bind(alive_since)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    placed(pool, visit_id, alive_since).await
}

/// Drops a visit's placement (the visit is over).
pub async fn forget(pool: &PgPool, visit_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM placements WHERE visit_id = $1")
        .bind(visit_id)
        .execute(pool)
        .await?;
    Ok(())
}

/// `(node id, visit id)` of every placement of a tenant's visits.
pub async fn placements_of(
    pool: &PgPool,
    tenant_id: &str,
) -> Result<Vec<(String, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT node_id, visit_id FROM placements WHERE tenant_id = $1 ORDER BY placed_at, visit_id",
    )
    .bind(tenant_id)
    .fetch_all(pool)
    .await
}
