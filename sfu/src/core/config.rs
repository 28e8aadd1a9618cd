use std::net::SocketAddr;
use std::time::Duration;

/// Settings of one [`Core`](super::Core).
#[derive(Debug, Clone)]
pub struct Config {
    /// The one ICE host candidate announced to every participant: the address clients send
    /// media to (the `--announce-ip` with the UDP port). It is also the source address of
    /// every datagram the core emits.
    pub host_candidate: SocketAddr,
    /// Joins beyond this many participants in one room are refused.
    pub max_participants_per_room: usize,
    /// Tracks beyond this many per participant are not forwarded.
    pub max_tracks_per_participant: usize,
    /// Keyframe requests reach a publisher at most once per this interval per track; requests
    /// in between are coalesced into one sent when the interval ends.
    pub keyframe_interval: Duration,
    /// How often each session reports its RTP statistics (feeding NACK/PLI counters and
    /// [`Event::Rtt`](super::Event::Rtt)); `None` turns the reports off.
    pub stats_interval: Option<Duration>,
}

impl Config {
    /// Defaults for a telehealth visit: 4 participants per room, 4 tracks each (camera,
    /// microphone, screen share and its audio), keyframe requests at most every 500 ms,
    /// statistics every second.
    pub fn new(host_candidate: SocketAddr) -> Self {
        Config {
            host_candidate,
            max_participants_per_room: 4,
            max_tracks_per_participant: 4,
            keyframe_interval: Duration::from_millis(500),
            stats_interval: Some(Duration::from_secs(1)),
        }
    }
}
