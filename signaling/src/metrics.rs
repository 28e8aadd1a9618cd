//! Prometheus metrics of signaling and the SFU, registered beside the api's (the registry adds
//! the `bedside_` prefix). Labels are small fixed vocabularies: worker index, frame direction,
//! error code — never ids.

use std::time::Duration;

use std::sync::{Arc, Weak};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use sfu::core::KeyframeReasons;
use sfu::driver::{AcceptCounts, TcpFront, WorkerStats};

/// Why metrics could not be registered: a name clash in the registry.
#[derive(Debug, thiserror::Error)]
#[error("registering signaling metrics: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

/// Every signaling and SFU metric.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// Open signaling sockets.
    pub connections: IntGauge,
    /// Frames by direction (`in`, `out`).
    pub frames: IntCounterVec,
    /// Error frames sent, by code.
    pub errors: IntCounterVec,
    /// Round-trip times measured on media sessions.
    pub rtt: Histogram,
    /// Subscribers' send-side bandwidth estimates, sampled once per stats interval each.
    pub bandwidth: Histogram,
    /// Time from joining to the first RTP packet from the participant.
    pub join_to_first_media: Histogram,
    /// Connection-quality grades reported to rooms, by grade.
    pub connection_quality: IntCounterVec,
    rooms: IntGaugeVec,
    participants: IntGaugeVec,
    tracks: IntGaugeVec,
    paused_tracks: IntGaugeVec,
    red_subscribers: IntGaugeVec,
    tcp_connections: IntGaugeVec,
    sfu_counters: IntCounterVec,
    layer_switches: IntCounterVec,
    keyframe_requests: IntCounterVec,
    busy: prometheus::CounterVec,
}

fn register<C: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    collector: C,
) -> Result<C, MetricsError> {
    registry.register(Box::new(collector.clone()))?;
    Ok(collector)
}

/// The SFU counters exported from [`sfu::core::Stats`], [`sfu::driver::TcpStats`] and
/// [`sfu::driver::UdpStats`], by `counter` label.
const SFU_COUNTERS: [&str; 25] = [
    "packets_in",
    "bytes_in",
    "packets_out",
    "bytes_out",
    "forwarded_packets",
    "nacks_received",
    "plis_received",
    "keyframe_requests_sent",
    "keyframe_requests_throttled",
    "dropped_datagrams",
    "tcp_frames_in",
    "tcp_frames_out",
    "tcp_frames_dropped",
    "tcp_closed_idle",
    "tcp_closed_oversize",
    "tcp_closed_stalled",
    "udp_recv_calls",
    "udp_datagrams_received",
    "udp_send_calls",
    "udp_datagrams_sent",
    "udp_gso_messages",
    "udp_send_errors",
    "red_built",
    "red_cut",
    "red_malformed",
];

/// [`KeyframeReasons`] by `reason` label.
fn keyframe_reasons(reasons: &KeyframeReasons) -> [(&'static str, u64); 5] {
    [
        ("subscriber", reasons.subscriber),
        ("new_subscriber", reasons.new_subscriber),
        ("layer_switch", reasons.layer_switch),
        ("missed_keyframe", reasons.missed_keyframe),
        ("unmute", reasons.unmute),
    ]
}

fn counter_values(stats: &WorkerStats) -> [u64; 25] {
    let (s, tcp, udp) = (stats.core, stats.tcp, stats.udp);
    [
        s.datagrams_in,
        s.bytes_in,
        s.datagrams_out,
        s.bytes_out,
        s.forwarded_packets,
        s.nacks_received,
        s.plis_received,
        s.keyframe_requests_sent,
        s.keyframe_requests_throttled,
        s.dropped_datagrams,
        tcp.frames_in,
        tcp.frames_out,
        tcp.frames_dropped,
        tcp.closed_idle,
        tcp.closed_oversize,
        tcp.closed_stalled,
        udp.recv_calls,
        udp.datagrams_received,
        udp.send_calls,
        udp.datagrams_sent,
        udp.gso_messages,
        udp.send_errors,
        s.red_built,
        s.red_cut,
        s.red_malformed,
    ]
}

impl Metrics {
    /// Registers every metric in `registry`.
    pub fn register(registry: &Registry) -> Result<Self, MetricsError> {
        let gauge = |name: &str, help: &str| IntGaugeVec::new(Opts::new(name, help), &["worker"]);
        Ok(Self {
            connections: register(
                registry,
                IntGauge::new("signaling_connections", "Open signaling sockets")?,
            )?,
            frames: register(
                registry,
                IntCounterVec::new(
                    Opts::new("signaling_frames_total", "Signaling frames"),
                    &["direction"],
                )?,
            )?,
            errors: register(
                registry,
                IntCounterVec::new(
                    Opts::new("signaling_errors_total", "Error frames sent, by code"),
                    &["code"],
                )?,
            )?,
            rtt: register(
                registry,
                Histogram::with_opts(
                    HistogramOpts::new("sfu_rtt_seconds", "Round-trip time of media sessions")
                        .buckets(vec![
                            0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6,
                        ]),
                )?,
            )?,
            bandwidth: register(
                registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "sfu_subscriber_bandwidth_bps",
                        "Send-side bandwidth estimates towards subscribers (TWCC), sampled once \
                         per second per subscriber",
                    )
                    .buckets(vec![
                        100e3, 200e3, 400e3, 700e3, 1e6, 1.5e6, 2.5e6, 4e6, 8e6, 16e6,
                    ]),
                )?,
            )?,
            join_to_first_media: register(
                registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "sfu_join_to_first_media_seconds",
                        "Time from join to the participant's first RTP packet",
                    )
                    .buckets(vec![0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0]),
                )?,
            )?,
            connection_quality: register(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "sfu_connection_quality_total",
                        "Connection-quality grades of media sessions, as reported to rooms",
                    ),
                    &["quality"],
                )?,
            )?,
            rooms: register(registry, gauge("sfu_rooms", "Rooms with participants")?)?,
            participants: register(
                registry,
                gauge("sfu_participants", "Participants in rooms")?,
            )?,
            tracks: register(registry, gauge("sfu_tracks", "Published tracks")?)?,
            paused_tracks: register(
                registry,
                gauge(
                    "sfu_paused_tracks",
                    "Video tracks paused for a subscriber whose link holds none of their layers",
                )?,
            )?,
            red_subscribers: register(
                registry,
                gauge(
                    "sfu_red_subscribers",
                    "Subscribers getting redundant (RED) audio because their downlink loses packets",
                )?,
            )?,
            tcp_connections: register(
                registry,
                gauge("sfu_tcp_connections", "Open ICE-TCP connections")?,
            )?,
            sfu_counters: register(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "sfu_events_total",
                        "SFU packet, byte, NACK, PLI, forwarding, RED and ICE-TCP counts",
                    ),
                    &["worker", "counter"],
                )?,
            )?,
            layer_switches: register(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "sfu_layer_switches_total",
                        "Simulcast layer switches of subscribers, up or down",
                    ),
                    &["worker", "direction"],
                )?,
            )?,
            keyframe_requests: register(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "sfu_keyframe_requests_total",
                        "Keyframes the SFU wanted from publishers, by reason, before throttling",
                    ),
                    &["worker", "reason"],
                )?,
            )?,
            busy: register(
                registry,
                prometheus::CounterVec::new(
                    Opts::new(
                        "sfu_worker_busy_seconds_total",
                        "Time each SFU worker spent handling input rather than waiting",
                    ),
                    &["worker"],
                )?,
            )?,
        })
    }

    /// Folds one worker's latest snapshot in; `last` is the snapshot folded in before, so
    /// cumulative counters advance by the difference.
    pub fn observe_worker(&self, worker: usize, last: &WorkerStats, now: &WorkerStats) {
        let label = worker.to_string();
        let set = |gauge: &IntGaugeVec, value: usize| {
            gauge
                .with_label_values(&[label.as_str()])
                .set(i64::try_from(value).unwrap_or(i64::MAX));
        };
        set(&self.rooms, now.core.rooms);
        set(&self.participants, now.core.participants);
        set(&self.tracks, now.core.tracks);
        set(&self.paused_tracks, now.core.paused_legs);
        set(&self.red_subscribers, now.core.red_subscribers);
        set(&self.tcp_connections, now.tcp.connections);
        for ((name, before), after) in SFU_COUNTERS
            .iter()
            .zip(counter_values(last))
            .zip(counter_values(now))
        {
            self.sfu_counters
                .with_label_values(&[label.as_str(), name])
                .inc_by(after.saturating_sub(before));
        }
        for (direction, before, after) in [
            (
                "up",
                last.core.layer_switches_up,
                now.core.layer_switches_up,
            ),
            (
                "down",
                last.core.layer_switches_down,
                now.core.layer_switches_down,
            ),
        ] {
            self.layer_switches
                .with_label_values(&[label.as_str(), direction])
                .inc_by(after.saturating_sub(before));
        }
        for ((reason, before), after) in keyframe_reasons(&last.core.keyframe_reasons)
            .into_iter()
            .zip(keyframe_reasons(&now.core.keyframe_reasons).map(|(_, n)| n))
        {
            self.keyframe_requests
                .with_label_values(&[label.as_str(), reason])
                .inc_by(after.saturating_sub(before));
        }
        let busy: Duration = now.busy.saturating_sub(last.busy);
        self.busy
            .with_label_values(&[label.as_str()])
            .inc_by(busy.as_secs_f64());
    }
}

/// `bedside_sfu_tcp_accepts_total{outcome}`: what the ICE-TCP listener did with the
/// connections it accepted (`adopted`, `refused_total`, `refused_per_ip`, `bad_first_frame`,
/// `first_frame_timeout`, `unclaimed`, `accept_error`), read from it at every scrape. It holds
/// the listener weakly, so it never keeps a stopped node's listener alive.
pub struct TcpAcceptMetrics {
    front: Weak<TcpFront>,
    template: IntCounterVec,
}

fn accept_opts() -> Opts {
    Opts::new(
        "sfu_tcp_accepts_total",
        "ICE-TCP connections accepted, by what became of them",
    )
}

fn outcomes(counts: &AcceptCounts) -> [(&'static str, u64); 7] {
    [
        ("adopted", counts.adopted),
        ("refused_total", counts.refused_total),
        ("refused_per_ip", counts.refused_per_ip),
        ("bad_first_frame", counts.bad_first_frame),
        ("first_frame_timeout", counts.first_frame_timeout),
        ("unclaimed", counts.unclaimed),
        ("accept_error", counts.accept_errors),
    ]
}

impl TcpAcceptMetrics {
    /// Registers the metric for `front` in `registry`.
    pub fn register(registry: &Registry, front: &Arc<TcpFront>) -> Result<(), MetricsError> {
        let template = IntCounterVec::new(accept_opts(), &["outcome"])?;
        registry.register(Box::new(TcpAcceptMetrics {
            front: Arc::downgrade(front),
            template,
        }))?;
        Ok(())
    }
}

impl Collector for TcpAcceptMetrics {
    fn desc(&self) -> Vec<&Desc> {
        self.template.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Some(front) = self.front.upgrade() else {
            return Vec::new();
        };
        let Ok(now) = IntCounterVec::new(accept_opts(), &["outcome"]) else {
            return Vec::new();
        };
        for (outcome, value) in outcomes(&front.counts()) {
            now.with_label_values(&[outcome]).inc_by(value);
        }
        now.collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_snapshots_become_gauges_and_counter_increments() {
        let registry = Registry::new_custom(Some("bedside".into()), None).expect("registry");
        let metrics = Metrics::register(&registry).expect("metrics");
        let mut first = WorkerStats::default();
        first.core.participants = 2;
        first.core.forwarded_packets = 10;
        first.busy = Duration::from_millis(5);
        metrics.observe_worker(0, &WorkerStats::default(), &first);
        let mut second = first;
        second.core.forwarded_packets = 25;
        second.udp.datagrams_sent = 40;
        second.udp.send_calls = 4;
        second.core.layer_switches_down = 3;
        second.core.paused_legs = 1;
        second.core.keyframe_reasons.layer_switch = 4;
        metrics.observe_worker(0, &first, &second);
        let text = {
            let mut out = Vec::new();
            use prometheus::Encoder as _;
            prometheus::TextEncoder::new()
                .encode(&registry.gather(), &mut out)
                .expect("encode");
            String::from_utf8(out).expect("utf8")
        };
        assert!(
            text.contains(r#"bedside_sfu_participants{worker="0"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"bedside_sfu_events_total{counter="forwarded_packets",worker="0"} 25"#),
            "{text}"
        );
        assert!(
            text.contains(r#"bedside_sfu_layer_switches_total{direction="down",worker="0"} 3"#),
            "{text}"
        );
        assert!(
            text.contains(r#"bedside_sfu_paused_tracks{worker="0"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"bedside_sfu_keyframe_requests_total{reason="layer_switch",worker="0"} 4"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"bedside_sfu_events_total{counter="udp_datagrams_sent",worker="0"} 40"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"bedside_sfu_events_total{counter="udp_send_calls",worker="0"} 4"#),
            "{text}"
        );
        assert!(
            text.contains("bedside_sfu_worker_busy_seconds_total"),
            "{text}"
        );
    }
}
