-- Several `bedside serve` nodes sharing this database (PostgreSQL only; SQLite has one node).
-- Each node registers itself and heartbeats; a visit's room is placed on one live node.
-- This is routing state, not tenant data: no row-level security (every node must see every
-- node and every placement), but only the application role may touch it.

CREATE TABLE nodes (
    id            TEXT PRIMARY KEY,
    signaling_url TEXT NOT NULL,
    media_addr    TEXT NOT NULL,
    load          BIGINT NOT NULL,
    started_at    BIGINT,
    heartbeat_at  BIGINT NOT NULL
);
CREATE INDEX nodes_heartbeat ON nodes(heartbeat_at);

-- A node that stops heartbeating is deleted, and its placements with it.
CREATE TABLE placements (
    visit_id  TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    node_id   TEXT NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
    placed_at BIGINT NOT NULL
);
CREATE INDEX placements_node ON placements(node_id);

GRANT SELECT, INSERT, UPDATE, DELETE ON nodes, placements TO bedside_app;
