use std::net::SocketAddr;
use std::time::Duration;

/// Settings of one [`Core`](super::Core).
#[derive(Debug, Clone)]
pub struct Config {
    /// The UDP ICE host candidate: the address clients send media to (the `--announce-ip`
    /// with the worker's UDP port). It is also the source address of every datagram the core
    /// emits, and the local address datagrams are fed with.
    pub host_candidate: SocketAddr,
    /// Whether [`Config::host_candidate`] is announced. Off when UDP is known blocked, so
    /// clients go straight to TCP.
    pub announce_udp: bool,
    /// The passive ICE-TCP host candidate (`--announce-ip` with the TCP listener's port),
    /// announced beside UDP with a lower priority; `None` announces no TCP candidate.
    pub tcp_candidate: Option<SocketAddr>,
    /// Joins beyond this many participants in one room are refused.
    pub max_participants_per_room: usize,
    /// Tracks beyond this many per participant are not forwarded.
    pub max_tracks_per_participant: usize,
    /// Keyframe requests reach a publisher at most once per this interval per track; requests
    /// in between are coalesced into one sent when the interval ends.
    pub keyframe_interval: Duration,
    /// The bandwidth estimate (bit/s) each subscriber's session starts from before transport
    /// feedback refines it; `None` turns send-side estimation off, and with it choosing
    /// simulcast layers and pausing video by bandwidth.
    pub bwe_initial_bps: Option<u64>,
    /// How often each session reports its RTP statistics (feeding NACK/PLI counters and
    /// [`Event::Rtt`](super::Event::Rtt)); `None` turns the reports off.
    pub stats_interval: Option<Duration>,
}

impl Config {
    /// Defaults for a telehealth visit: UDP only, 4 participants per room, 4 tracks each
    /// (camera, microphone, screen share and its audio), keyframe requests at most every
    /// 500 ms, bandwidth estimation from 1 Mbit/s, statistics every second.
    pub fn new(host_candidate: SocketAddr) -> Self {
        Config {
            host_candidate,
            announce_udp: true,
            tcp_candidate: None,
            max_participants_per_room: 4,
            max_tracks_per_participant: 4,
            keyframe_interval: Duration::from_millis(500),
            bwe_initial_bps: Some(1_000_000),
            stats_interval: Some(Duration::from_secs(1)),
        }
    }
}
