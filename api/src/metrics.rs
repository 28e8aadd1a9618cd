//! Prometheus metrics of the API. Labels never carry ids, codes or PHI — only route
//! templates, methods, statuses and small fixed vocabularies.

use prometheus::{
    Encoder as _, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

/// Every metric the API exports, registered in one registry.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// HTTP requests by route template, method and status.
    pub http_requests: IntCounterVec,
    /// HTTP latency by route template.
    pub http_latency: HistogramVec,
    /// Link lifecycle events: issued, redeemed (start), rejoined, `refused_<code>`.
    pub links: IntCounterVec,
    /// Session grants issued, by how (start, start_authenticated, refresh).
    pub grants: IntCounterVec,
    /// Visits by transition (created, updated, cancelled, ended).
    pub visits: IntCounterVec,
    /// Notifications by channel and outcome (queued, sent, retry, failed, held by an open
    /// circuit breaker).
    pub notifications: IntCounterVec,
    /// Media backend joins by backend (sfu, chime) and outcome (ok, unavailable).
    pub media_joins: IntCounterVec,
    /// Requests refused by a rate limit or quota, by scope.
    pub rate_limited: IntCounterVec,
    /// Failed authentications, by reason.
    pub auth_failures: IntCounterVec,
    /// Audit rows written.
    pub audit_rows: IntCounterVec,
    /// Notifications waiting in the outbox.
    pub outbox_depth: IntGauge,
    /// Cluster activity: heartbeats (ok, failed), room placements (existing, placed, this_node
    /// when no node is registered), visit events (published, relayed, failed).
    pub cluster: IntCounterVec,
    /// Live nodes sharing the database, as of this node's last heartbeat.
    pub cluster_nodes: IntGauge,
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let counter = IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|err| panic!("metric {name}: {err}"));
    registry
        .register(Box::new(counter.clone()))
        .unwrap_or_else(|err| panic!("metric {name}: {err}"));
    counter
}

impl Metrics {
    /// A fresh registry with every metric registered. Panics only on a programming error
    /// (a duplicate or malformed metric name), never on input.
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("bedside".into()), None)
            .unwrap_or_else(|err| panic!("registry: {err}"));
        let http_latency = HistogramVec::new(
            HistogramOpts::new("http_request_duration_seconds", "HTTP request latency").buckets(
                vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                ],
            ),
            &["route"],
        )
        .unwrap_or_else(|err| panic!("metric: {err}"));
        registry
            .register(Box::new(http_latency.clone()))
            .unwrap_or_else(|err| panic!("metric: {err}"));
        let outbox_depth = IntGauge::new("outbox_queued", "Notifications waiting for delivery")
            .unwrap_or_else(|err| panic!("metric: {err}"));
        registry
            .register(Box::new(outbox_depth.clone()))
            .unwrap_or_else(|err| panic!("metric: {err}"));
        let cluster_nodes = IntGauge::new("cluster_nodes_live", "Live nodes sharing the database")
            .unwrap_or_else(|err| panic!("metric: {err}"));
        registry
            .register(Box::new(cluster_nodes.clone()))
            .unwrap_or_else(|err| panic!("metric: {err}"));
        Self {
            cluster: counter(
                &registry,
                "cluster_total",
                "Heartbeats, room placements and visit events between nodes",
                &["kind", "outcome"],
            ),
            cluster_nodes,
            http_requests: counter(
                &registry,
                "http_requests_total",
                "HTTP requests",
                &["route", "method", "status"],
            ),
            http_latency,
            links: counter(
                &registry,
                "links_total",
                "Link lifecycle events",
                &["event"],
            ),
            grants: counter(
                &registry,
                "grants_issued_total",
                "Session grants issued",
                &["via"],
            ),
            visits: counter(&registry, "visits_total", "Visit transitions", &["event"]),
            notifications: counter(
                &registry,
                "notifications_total",
                "Notification outcomes",
                &["channel", "outcome"],
            ),
            media_joins: counter(
                &registry,
                "media_joins_total",
                "Participants seated in a media backend",
                &["backend", "outcome"],
            ),
            rate_limited: counter(
                &registry,
                "rate_limited_total",
                "Requests refused by a limit",
                &["scope"],
            ),
            auth_failures: counter(
                &registry,
                "auth_failures_total",
                "Failed authentications",
                &["reason"],
            ),
            audit_rows: counter(
                &registry,
                "audit_rows_total",
                "Audit rows written",
                &["outcome"],
            ),
            outbox_depth,
            registry,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .is_err()
        {
            return String::new();
        }
        String::from_utf8(out).unwrap_or_default()
    }

    /// The registry, so other crates (signaling, sfu) register their metrics beside these.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
