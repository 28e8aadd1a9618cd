//! Several `bedside serve` nodes sharing one PostgreSQL: each node registers itself and
//! heartbeats, a visit's room is placed on one live node when first started (every
//! participant's start answer then names that node's signaling URL), a node that stops
//! heartbeating loses its placements after `cluster.node_timeout_ms`, and visit events made on
//! any node reach the others through `LISTEN/NOTIFY`.
//!
//! On SQLite there is exactly one node, this one: every room is here and nothing is shared.

use std::path::Path;
use std::time::Duration;

use chrono::Utc;
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgListener;
use tokio::sync::watch;
use utoipa::ToSchema;

use crate::config::Config;
use crate::events::{EventBus, VisitEvent};
use crate::metrics::Metrics;
use crate::store::{self, DbError, Store, nodes::NodeRow};

/// The PostgreSQL notification channel of visit events.
const CHANNEL: &str = "bedside_visit_events";

/// This node's identity and the cluster's timing.
#[derive(Debug, Clone)]
pub struct Cluster {
    node: NodeRow,
    heartbeat: Duration,
    timeout_ms: i64,
}

/// A node as `GET /api/nodes` shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct NodeView {
    /// Node id.
    pub id: String,
    /// WebSocket URL of its signaling.
    pub signaling_url: String,
    /// Its SFU's UDP address.
    pub media_addr: String,
    /// Whether it heartbeated within `cluster.node_timeout_ms`.
    pub live: bool,
    /// Rooms on it, every tenant's (on PostgreSQL as of its last heartbeat).
    pub rooms_total: i64,
    /// The caller's tenant's visits whose room is on it.
    pub rooms: Vec<String>,
    /// Last heartbeat, RFC 3339.
    pub heartbeat_at: String,
    /// This node (the one answering).
    pub this_node: bool,
}

/// A visit event on the wire between nodes.
#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    origin: String,
    event: VisitEvent,
}

impl Cluster {
    /// This node from `config`; its id is `cluster.node_id` or, when that is empty, the one
    /// kept in `<data-dir>/node-id` (created on first start, so a restart keeps its rooms).
    pub fn new(config: &Config, data_dir: &Path) -> std::io::Result<Self> {
        let id = if config.cluster.node_id.is_empty() {
            let path = data_dir.join("node-id");
            match std::fs::read_to_string(&path) {
                Ok(id) if !id.trim().is_empty() => id.trim().to_owned(),
                _ => {
                    let id = store::new_id();
                    std::fs::write(&path, &id)?;
                    id
                }
            }
        } else {
            config.cluster.node_id.clone()
        };
        let udp = config.sfu.udp;
        let ip = config.sfu.announce_ip.unwrap_or(udp.ip());
        Ok(Self {
            node: NodeRow {
                id,
                signaling_url: config.signaling_url(),
                media_addr: std::net::SocketAddr::new(ip, udp.port()).to_string(),
                load: 0,
                started_at: Some(store::ms(Utc::now())),
                heartbeat_at: 0,
            },
            heartbeat: Duration::from_millis(config.cluster.heartbeat_ms),
            timeout_ms: i64::try_from(config.cluster.node_timeout_ms).unwrap_or(i64::MAX),
        })
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.node.id
    }

    /// Heartbeats older than this (Unix ms) mean a dead node.
    fn alive_since(&self) -> i64 {
        store::ms(Utc::now()).saturating_sub(self.timeout_ms)
    }

    /// The signaling URL of the node the visit's room is on, placing the room on the live
    /// node with the fewest rooms if it has none yet (or its node died). On SQLite, and when
    /// no node is registered yet, this node.
    pub async fn place(
        &self,
        store: &Store,
        metrics: &Metrics,
        tenant_id: &str,
        visit_id: &str,
    ) -> Result<String, DbError> {
        let Store::Postgres { pool } = store else {
            return Ok(self.node.signaling_url.clone());
        };
        let alive_since = self.alive_since();
        let (node, outcome) = match store::nodes::placed(pool, visit_id, alive_since).await? {
            Some(node) => (Some(node), "existing"),
            None => {
                let now = store::ms(Utc::now());
                let placed =
                    store::nodes::place(pool, tenant_id, visit_id, alive_since, now).await?;
                let outcome = if placed.is_some() {
                    "placed"
                } else {
                    "this_node"
                };
                (placed, outcome)
            }
        };
        metrics
            .cluster
            .with_label_values(&["placement", outcome])
            .inc();
        Ok(node.map_or_else(|| self.node.signaling_url.clone(), |n| n.signaling_url))
    }

    /// Every node with its rooms; `rooms` lists only `tenant_id`'s visits.
    pub async fn nodes(&self, store: &Store, tenant_id: &str) -> Result<Vec<NodeView>, DbError> {
        let now = store::ms(Utc::now());
        let Store::Postgres { pool } = store else {
            let mut db = store.read().await?;
            let rooms = store::visits::open_rooms(&mut db, tenant_id).await?;
            let rooms_total = store::visits::open_rooms_of_every_tenant(&mut db).await?;
            return Ok(vec![NodeView {
                id: self.node.id.clone(),
                signaling_url: self.node.signaling_url.clone(),
                media_addr: self.node.media_addr.clone(),
                live: true,
                rooms_total,
                rooms,
                heartbeat_at: rfc3339(now),
                this_node: true,
            }]);
        };
        let placements = store::nodes::placements_of(pool, tenant_id).await?;
        let alive_since = self.alive_since();
        Ok(store::nodes::all(pool)
            .await?
            .into_iter()
            .map(|n| NodeView {
                live: n.heartbeat_at >= alive_since,
                rooms_total: n.load,
                rooms: placements
                    .iter()
                    .filter(|(node, _)| *node == n.id)
                    .map(|(_, visit)| visit.clone())
                    .collect(),
                heartbeat_at: rfc3339(n.heartbeat_at),
                this_node: n.id == self.node.id,
                id: n.id,
                signaling_url: n.signaling_url,
                media_addr: n.media_addr,
            })
            .collect())
    }

    /// Hands a visit event to this node's signaling and, on PostgreSQL, to every other node
    /// (an ended visit's placement is dropped first). A failure to reach the others is
    /// logged: the visit's state is already committed, only the disconnect is late.
    pub async fn publish(
        &self,
        store: &Store,
        metrics: &Metrics,
        bus: &EventBus,
        event: VisitEvent,
    ) {
        bus.send(event.clone());
        let Store::Postgres { pool } = store else {
            return;
        };
        let VisitEvent::Closed { visit_id, .. } = &event;
        if let Err(error) = store::nodes::forget(pool, visit_id).await {
            tracing::warn!(%error, "dropping a closed visit's placement failed");
        }
        let envelope = Envelope {
            origin: self.node.id.clone(),
            event,
        };
        let payload = match serde_json::to_string(&envelope) {
            Ok(payload) => payload,
            Err(error) => return tracing::error!(%error, "encoding a visit event failed"),
        };
        let sent = sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(payload)
            .execute(pool)
            .await;
        let outcome = match sent {
            Ok(_) => "published",
            Err(error) => {
                tracing::warn!(%error, "notifying other nodes of a visit event failed");
                "failed"
            }
        };
        metrics.cluster.with_label_values(&["event", outcome]).inc();
    }
}

/// Registers this node and keeps it registered until `shutdown` flips (then removes it),
/// reaps dead nodes, and relays other nodes' visit events to `bus`. Returns at once on
/// SQLite.
pub async fn run(
    cluster: Cluster,
    store: Store,
    metrics: Metrics,
    bus: EventBus,
    mut shutdown: watch::Receiver<bool>,
) {
    let Store::Postgres { pool } = store else {
        return;
    };
    cluster.serve(pool, metrics, bus, &mut shutdown).await;
}

impl Cluster {
    async fn serve(
        self,
        pool: sqlx::PgPool,
        metrics: Metrics,
        bus: EventBus,
        shutdown: &mut watch::Receiver<bool>,
    ) {
        let relay = tokio::spawn(relay(
            pool.clone(),
            metrics.clone(),
            bus,
            self.node.id.clone(),
        ));
        let mut tick = tokio::time::interval(self.heartbeat);
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = tick.tick() => {}
            }
            let now = store::ms(Utc::now());
            let cluster = &metrics.cluster;
            if let Err(error) = store::nodes::heartbeat(&pool, &self.node, now).await {
                tracing::warn!(%error, node = %self.node.id, "node heartbeat failed");
                cluster.with_label_values(&["heartbeat", "failed"]).inc();
                continue;
            }
            cluster.with_label_values(&["heartbeat", "ok"]).inc();
            if let Ok(live) = store::nodes::live_count(&pool, now - self.timeout_ms).await {
                metrics.cluster_nodes.set(live);
            }
            match store::nodes::reap(&pool, now - self.timeout_ms).await {
                Ok(0) => {}
                Ok(reaped) => tracing::info!(reaped, "removed nodes that stopped heartbeating"),
                Err(error) => tracing::warn!(%error, "reaping dead nodes failed"),
            }
        }
        relay.abort();
        if let Err(error) = store::nodes::remove(&pool, &self.node.id).await {
            tracing::warn!(%error, "deregistering this node failed");
        }
    }
}

/// Relays visit events other nodes publish to this node's signaling. The listener reconnects
/// by itself after a lost connection; events published meanwhile are missed (logged).
async fn relay(pool: sqlx::PgPool, metrics: Metrics, bus: EventBus, me: String) {
    let mut listener = loop {
        match PgListener::connect_with(&pool).await {
            Ok(mut listener) => match listener.listen(CHANNEL).await {
                Ok(()) => break listener,
                Err(error) => tracing::warn!(%error, "LISTEN failed; retrying"),
            },
            Err(error) => tracing::warn!(%error, "connecting the event listener failed; retrying"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    loop {
        match listener.try_recv().await {
            Ok(Some(note)) => match serde_json::from_str::<Envelope>(note.payload()) {
                Ok(envelope) if envelope.origin != me => {
                    metrics
                        .cluster
                        .with_label_values(&["event", "relayed"])
                        .inc();
                    bus.send(envelope.event);
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "ignoring an unreadable visit event"),
            },
            Ok(None) => {
                tracing::warn!("the event listener reconnected; events meanwhile were missed")
            }
            Err(error) => {
                tracing::warn!(%error, "the event listener failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

fn rfc3339(ms: i64) -> String {
    store::from_ms(ms).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
