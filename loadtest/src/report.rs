//! The result of a run: the JSON document of `--json` and the table printed at the end.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::media::Video;
use crate::peer::{PeerKind, Transport};

/// Visits of a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Visits {
    /// Visits the run was asked for.
    pub requested: usize,
    /// Visits whose two peers both joined and received media.
    pub joined: usize,
    /// Visits with a peer that did not.
    pub failed: usize,
    /// Visits ended over the API at the end.
    pub ended: usize,
}

/// Peers (two per visit) of a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Peers {
    /// Peers that were seated and received remote RTP within the join timeout.
    pub joined: usize,
    /// Peers that were not.
    pub failed: usize,
    /// Why they were not: reason → peers.
    pub failures: BTreeMap<String, usize>,
    /// Joined peers that ended the run without audio, or without video when video was sent.
    pub incomplete_media: usize,
    /// The local candidate each connected peer's ICE selected, by type and protocol
    /// (`host/udp`, `relay/udp`) → peers: which path the media really took.
    pub paths: BTreeMap<String, usize>,
}

/// Percentiles in milliseconds (`null` without samples).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: Option<f64>,
    /// 95th percentile.
    pub p95: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
    /// Largest.
    pub max: Option<f64>,
}

/// What receivers saw of one kind of media, over every received stream of that kind.
#[derive(Debug, Clone, Default, Serialize)]
pub struct KindStats {
    /// Streams received.
    pub streams: usize,
    /// RTP packets received.
    pub packets: u64,
    /// Packets lost (expected from sequence numbers, not received).
    pub lost: u64,
    /// Lost ÷ expected, in percent.
    pub loss_pct: f64,
    /// Mean over streams of the RFC 3550 interarrival jitter at the end, in milliseconds.
    pub jitter_ms: f64,
    /// Mean over streams of the received payload bitrate, in kbit/s.
    pub bitrate_kbps: f64,
    /// Video: packets received by the width of the keyframe before them — the simulcast
    /// layers the SFU forwarded (empty for audio).
    pub layers: BTreeMap<u16, u64>,
}

impl KindStats {
    /// The layer distribution as `320: 12%, 640: 30%, 1280: 58%`, or `None` without one.
    #[must_use]
    pub fn layer_shares(&self) -> Option<String> {
        let total: u64 = self.layers.values().sum();
        (total > 0).then(|| {
            self.layers
                .iter()
                .map(|(width, packets)| {
                    format!("{width}: {:.0}%", *packets as f64 * 100.0 / total as f64)
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
    }
}

/// The patients of a run behind `--impair`: their impaired downlinks and what arrived
/// through them (the clinicians' links are not impaired).
#[derive(Debug, Clone, Serialize)]
pub struct Impaired {
    /// The path every patient ran behind.
    pub impairment: crate::impair::Impairment,
    /// Patients that ran behind it.
    pub peers: usize,
    /// Audio the patients received.
    pub audio: KindStats,
    /// Video the patients received.
    pub video: KindStats,
    /// `track_paused` messages the patients received (video paused for their bandwidth).
    pub paused: u64,
    /// `track_resumed` messages.
    pub resumed: u64,
    /// Datagrams the relays passed to the patients.
    pub relay_delivered: u64,
    /// Datagrams the relays dropped at random (`loss`).
    pub relay_lost: u64,
    /// Datagrams the relays dropped from a full rate-limited queue.
    pub relay_overflowed: u64,
}

/// Round-trip times of the media legs, as the SFU computes them from RTCP receiver reports
/// (LSR/DLSR) and exports them in `bedside_sfu_rtt_seconds`, counted over this run only.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Rtt {
    /// Median, ms.
    pub p50: Option<f64>,
    /// 95th percentile, ms.
    pub p95: Option<f64>,
    /// Measurements counted.
    pub samples: u64,
    /// Where the figures come from.
    pub source: &'static str,
}

/// The server process, when it runs on this host.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Server {
    /// Its pid.
    pub pid: u32,
    /// Mean CPU over the hold window, in percent of one core.
    pub cpu_pct: f64,
    /// Highest CPU over one second of the run, in percent of one core.
    pub cpu_pct_peak: f64,
    /// Highest resident set size sampled during the run, in MiB.
    pub rss_mb_peak: f64,
    /// Its cost once every visit is up (`null` when `/metrics` could not be read or the run
    /// was cut short).
    pub efficiency: Option<Efficiency>,
}

/// The server's cost over the settled part of the hold: from 5 s after the last visit started
/// (half the hold at most) to the end of the hold, joins excluded.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Efficiency {
    /// Length of the window, seconds.
    pub window_s: f64,
    /// Media packets the SFU forwarded in the window
    /// (`bedside_sfu_events_total{counter="forwarded_packets"}`); `None` without Bedside's
    /// `/metrics` (`--target janus`).
    pub forwarded_packets: Option<u64>,
    /// RTP packets the peers received in the window: what the server forwarded, counted
    /// alike for every target.
    pub received_packets: u64,
    /// The server's CPU time in the window, seconds.
    pub cpu_s: f64,
    /// Forwarded packets per second of server CPU: what one core forwards end to end.
    pub egress_pkts_per_core_s: Option<f64>,
    /// Received packets per second of server CPU (the measure `scripts/bench-vs-janus`
    /// compares).
    pub received_pkts_per_core_s: f64,
    /// The server's CPU per joined visit, in percent of one core.
    pub cpu_pct_per_visit: f64,
    /// The server's resident set size before the first visit, MiB.
    pub rss_mb_idle: Option<f64>,
    /// (resident set size at the end of the hold − idle) per joined visit, MiB.
    pub rss_mb_per_visit: Option<f64>,
}

/// The generator itself.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Generator {
    /// Mean CPU over the hold window, in percent of one core.
    pub cpu_pct: f64,
    /// Highest CPU over one second of the run, in percent of one core.
    pub cpu_pct_peak: f64,
    /// Highest resident set size sampled, in MiB.
    pub rss_mb_peak: f64,
    /// Light peers: the share of media frames skipped because a peer fell more than 200 ms
    /// behind its schedule, in percent (the generator was short of CPU and sent less than
    /// the media's rate); `None` for webrtc-rs peers, which do not count.
    pub frames_skipped_pct: Option<f64>,
}

/// How the run was made.
#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    /// Video sent by every peer.
    pub video: Video,
    /// Whether every peer sent its camera as the q/h/f simulcast layers (`--simulcast`).
    pub simulcast: bool,
    /// How every peer's media was told to reach the SFU.
    pub transport: Transport,
    /// The WebRTC stack of every peer: `str0m` (the light peer) or `webrtc-rs`.
    pub peer: PeerKind,
    /// The server under load: `bedside` or `janus`.
    pub target: crate::run::Target,
    /// How long all visits were held together (from the last start to the end), seconds.
    pub hold_s: f64,
    /// Whole run, seconds.
    pub wall_s: f64,
    /// Visits started per second.
    pub ramp_per_s: f64,
    /// CPU cores of this host.
    pub cores: usize,
    /// Whether Ctrl-C cut the run short.
    pub interrupted: bool,
    /// Busy time of the SFU's workers from the start of the run to the end of the hold, in
    /// percent of one core
    /// (`bedside_sfu_worker_busy_seconds_total`), when `/metrics` was readable.
    pub sfu_workers_busy_pct: Option<f64>,
}

/// Everything a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Visits.
    pub visits: Visits,
    /// Peers.
    pub peers: Peers,
    /// Join latency per peer: its `start` call → its first remote RTP packet.
    pub join_ms: Percentiles,
    /// Audio as receivers saw it.
    pub audio: KindStats,
    /// Video as receivers saw it.
    pub video: KindStats,
    /// The patients behind `--impair`, when the run had one.
    pub impaired: Option<Impaired>,
    /// RTT of media legs.
    pub rtt_ms: Rtt,
    /// The server process (`null` when not on this host).
    pub server: Option<Server>,
    /// The generator process.
    pub generator: Generator,
    /// How the run was made.
    pub run: RunInfo,
}

impl Report {
    /// Whether every peer joined and received every kind of media it should have.
    #[must_use]
    pub fn passed(&self) -> bool {
        self.peers.failed == 0 && self.peers.incomplete_media == 0 && !self.run.interrupted
    }

    /// The human-readable summary printed at the end of a run.
    #[must_use]
    pub fn table(&self) -> String {
        let ms = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.0} ms"));
        let mut t = String::new();
        let mut row = |name: &str, value: String| {
            let _ = writeln!(t, "  {name:<22} {value}");
        };
        row(
            "visits",
            format!(
                "{} requested, {} joined, {} failed, {} ended",
                self.visits.requested, self.visits.joined, self.visits.failed, self.visits.ended
            ),
        );
        row(
            "peers",
            format!(
                "{} joined, {} failed, {} with incomplete media",
                self.peers.joined, self.peers.failed, self.peers.incomplete_media
            ),
        );
        for (reason, count) in &self.peers.failures {
            row("  failure", format!("{count} × {reason}"));
        }
        let paths: Vec<String> = self
            .peers
            .paths
            .iter()
            .map(|(path, count)| format!("{count} × {path}"))
            .collect();
        row(
            "selected path",
            if paths.is_empty() {
                "-".to_owned()
            } else {
                paths.join(", ")
            },
        );
        row(
            "join (start→RTP)",
            format!(
                "p50 {}  p95 {}  p99 {}  max {}",
                ms(self.join_ms.p50),
                ms(self.join_ms.p95),
                ms(self.join_ms.p99),
                ms(self.join_ms.max)
            ),
        );
        for (name, kind) in [("audio", &self.audio), ("video", &self.video)] {
            row(
                name,
                format!(
                    "{} streams, {} packets, loss {:.3}%, jitter {:.1} ms, {:.0} kbit/s per stream",
                    kind.streams, kind.packets, kind.loss_pct, kind.jitter_ms, kind.bitrate_kbps
                ),
            );
        }
        if let Some(shares) = self.video.layer_shares() {
            row("video by width", shares);
        }
        if let Some(behind) = &self.impaired {
            let i = &behind.impairment;
            row(
                "impaired patients",
                format!(
                    "{} behind rate {} loss {:.1}% delay {} ms jitter {} ms: relays delivered {}, \
                     dropped {} at random and {} from a full queue",
                    behind.peers,
                    i.rate_bps.map_or_else(
                        || "unlimited".to_owned(),
                        |bps| format!("{} kbit/s", bps / 1000)
                    ),
                    i.loss * 100.0,
                    i.delay.as_millis(),
                    i.jitter.as_millis(),
                    behind.relay_delivered,
                    behind.relay_lost,
                    behind.relay_overflowed
                ),
            );
            for (name, kind) in [
                ("  their audio", &behind.audio),
                ("  their video", &behind.video),
            ] {
                row(
                    name,
                    format!(
                        "{} packets, loss {:.2}%, jitter {:.1} ms, {:.0} kbit/s per stream",
                        kind.packets, kind.loss_pct, kind.jitter_ms, kind.bitrate_kbps
                    ),
                );
            }
            if let Some(shares) = behind.video.layer_shares() {
                row("  their video by width", shares);
            }
            row(
                "  video paused",
                format!("{} times, resumed {}", behind.paused, behind.resumed),
            );
        }
        row(
            "rtt (SFU, RTCP)",
            format!(
                "p50 {}  p95 {}  ({} samples)",
                self.rtt_ms
                    .p50
                    .map_or_else(|| "-".to_owned(), |v| format!("{v:.1} ms")),
                self.rtt_ms
                    .p95
                    .map_or_else(|| "-".to_owned(), |v| format!("{v:.1} ms")),
                self.rtt_ms.samples
            ),
        );
        match &self.server {
            Some(s) => row(
                "server",
                format!(
                    "pid {}: CPU {:.0}% (peak {:.0}%), RSS peak {:.1} MiB",
                    s.pid, s.cpu_pct, s.cpu_pct_peak, s.rss_mb_peak
                ),
            ),
            None => row("server", "not on this host (or not found)".to_owned()),
        }
        if let Some(e) = self.server.as_ref().and_then(|s| s.efficiency.as_ref()) {
            row(
                "server per visit",
                format!(
                    "CPU {:.2}% of a core, RSS {} (idle {})",
                    e.cpu_pct_per_visit,
                    e.rss_mb_per_visit
                        .map_or_else(|| "-".to_owned(), |v| format!("{v:.2} MiB")),
                    e.rss_mb_idle
                        .map_or_else(|| "-".to_owned(), |v| format!("{v:.1} MiB")),
                ),
            );
            if let (Some(rate), Some(forwarded)) = (e.egress_pkts_per_core_s, e.forwarded_packets) {
                row(
                    "server per core",
                    format!(
                        "{rate:.0} forwarded packets per CPU second ({forwarded} in {:.1} s, {:.1} CPU s)",
                        e.window_s, e.cpu_s
                    ),
                );
            }
            row(
                "received per core",
                format!(
                    "{:.0} packets the peers received per server CPU second ({} in {:.1} s)",
                    e.received_pkts_per_core_s, e.received_packets, e.window_s
                ),
            );
        }
        if let Some(busy) = self.run.sfu_workers_busy_pct {
            row("sfu workers busy", format!("{busy:.0}% of one core"));
        }
        row(
            "generator",
            format!(
                "CPU {:.0}% (peak {:.0}%), RSS peak {:.1} MiB{}",
                self.generator.cpu_pct,
                self.generator.cpu_pct_peak,
                self.generator.rss_mb_peak,
                match self.generator.frames_skipped_pct {
                    Some(pct) if pct > 0.0 => {
                        format!(", {pct:.2}% of frames skipped behind schedule (short of CPU)")
                    }
                    _ => String::new(),
                }
            ),
        );
        row(
            "run",
            format!(
                "{} video over {:?} from {} peers to {:?}, held {:.0} s, {:.0} s in all, {} cores{}",
                if self.run.simulcast {
                    "simulcast q/h/f".to_owned()
                } else {
                    format!("{:?}", self.run.video)
                },
                self.run.transport,
                self.run.peer,
                self.run.target,
                self.run.hold_s,
                self.run.wall_s,
                self.run.cores,
                if self.run.interrupted {
                    ", interrupted"
                } else {
                    ""
                }
            ),
        );
        row(
            "result",
            if self.passed() { "PASS" } else { "FAIL" }.to_owned(),
        );
        t
    }
}
