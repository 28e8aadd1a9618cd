use std::net::SocketAddr;
use std::time::Duration;

use str0m::change::{SdpAnswer, SdpOffer};
use str0m::media::{KeyframeRequestKind, MediaKind, Mid};

use super::error::CoreError;
use super::ids::{ParticipantId, RoomId, TrackId, Transport};
use super::quality::Quality;

/// A packet the driver must send: a UDP datagram, or a frame on the client's TCP connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// UDP, or the TCP connection from `destination`.
    pub transport: Transport,
    /// The local address to send from (the announced host candidate of `transport`).
    pub source: SocketAddr,
    /// The remote address to send to.
    pub destination: SocketAddr,
    /// The datagram.
    pub contents: Vec<u8>,
}

/// Why a participant is no longer in its room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaveReason {
    /// [`Command::Leave`](super::Command::Leave).
    Left,
    /// [`Command::Remove`](super::Command::Remove).
    Removed,
    /// Its WebRTC session failed irrecoverably inside str0m.
    Failed,
}

/// Something signaling must know or relay, drained with
/// [`Core::poll_event`](super::Core::poll_event).
#[derive(Debug)]
pub enum Event {
    /// Send this answer to the participant.
    Answer {
        /// Recipient.
        participant: ParticipantId,
        /// The server's answer to the client's offer.
        answer: SdpAnswer,
    },
    /// Send this offer to the participant and feed its answer back as
    /// [`Command::Answer`](super::Command::Answer).
    Offer {
        /// Recipient.
        participant: ParticipantId,
        /// The server's offer.
        offer: SdpOffer,
    },
    /// A participant joined a room.
    Joined {
        /// The room.
        room: RoomId,
        /// The new participant.
        participant: ParticipantId,
        /// Whether it is held in the waiting room.
        waiting: bool,
    },
    /// A waiting participant was admitted.
    Admitted {
        /// The room.
        room: RoomId,
        /// The admitted participant.
        participant: ParticipantId,
    },
    /// ICE and DTLS are up: media can flow.
    Connected {
        /// Whose connection.
        participant: ParticipantId,
    },
    /// ICE lost the participant (no consent checks for a while). The participant keeps its
    /// seat until signaling sends [`Command::Leave`](super::Command::Leave) or it reconnects.
    Disconnected {
        /// Whose connection.
        participant: ParticipantId,
    },
    /// A participant started publishing a track.
    TrackPublished {
        /// The room.
        room: RoomId,
        /// The new track.
        track: TrackId,
        /// Audio or video.
        kind: MediaKind,
    },
    /// A track is gone (its m-line stopped or its publisher left).
    TrackUnpublished {
        /// The room.
        room: RoomId,
        /// The track.
        track: TrackId,
    },
    /// A track will reach `subscriber` on the m-line `mid` of the next offer to it; signaling
    /// tells the client which participant that m-line shows.
    TrackRouted {
        /// Who receives the track.
        subscriber: ParticipantId,
        /// The forwarded track.
        track: TrackId,
        /// The m-line in the subscriber's session that carries it.
        mid: Mid,
    },
    /// A track is no longer forwarded.
    TrackMuted {
        /// The room.
        room: RoomId,
        /// The track.
        track: TrackId,
        /// The new state.
        muted: bool,
    },
    /// A track was refused; the publisher's m-line stays negotiated but nothing is forwarded.
    TrackRefused {
        /// The publisher.
        participant: ParticipantId,
        /// The refused m-line.
        mid: Mid,
        /// Why.
        reason: CoreError,
    },
    /// A keyframe request (after throttling) was sent to the publisher of `track`.
    KeyframeRequested {
        /// The track whose publisher was asked.
        track: TrackId,
        /// PLI or FIR.
        kind: KeyframeRequestKind,
    },
    /// The first RTP packet from a participant arrived: its media flows (for join-to-media
    /// latency).
    FirstMedia {
        /// The publisher.
        participant: ParticipantId,
    },
    /// A round-trip time measured on a participant's session, at most once per
    /// [`Config::stats_interval`](super::Config::stats_interval) from its TWCC feedback and
    /// once per interval and outgoing stream from its RTCP receiver reports.
    Rtt {
        /// Whose session.
        participant: ParticipantId,
        /// The measured round trip.
        rtt: Duration,
    },
    /// The send-side bandwidth estimate towards a subscriber (what its video layers are
    /// chosen by), once per [`Config::stats_interval`](super::Config::stats_interval) while
    /// str0m estimates it: only for a client that sends transport-wide feedback.
    Bandwidth {
        /// Whose downlink.
        participant: ParticipantId,
        /// The estimate, in bit/s.
        bps: u64,
    },
    /// The room's active speaker changed (from the audio levels of its admitted members'
    /// packets, decided every half second): who speaks now, or nobody after 1.5 s of silence
    /// or when the speaker left.
    ActiveSpeaker {
        /// The room.
        room: RoomId,
        /// The new active speaker, or `None` for nobody.
        participant: Option<ParticipantId>,
    },
    /// A participant's connection quality changed (graded once per
    /// [`Config::stats_interval`](super::Config::stats_interval) from loss both ways and the
    /// round trip; worse at once, better after it held; `Lost` as soon as ICE loses its path
    /// or restarts).
    ConnectionQuality {
        /// Whose connection.
        participant: ParticipantId,
        /// How it is now.
        quality: Quality,
    },
    /// `subscriber`'s link no longer holds even the lowest layer of a video `track`: the track
    /// is paused for it (audio goes on) until the link recovers.
    TrackPaused {
        /// Whose link.
        subscriber: ParticipantId,
        /// The paused video track.
        track: TrackId,
    },
    /// A track paused for `subscriber` is forwarded again.
    TrackResumed {
        /// Whose link.
        subscriber: ParticipantId,
        /// The resumed video track.
        track: TrackId,
    },
    /// A participant left its room; every resource it held is freed.
    Left {
        /// The room.
        room: RoomId,
        /// Who left.
        participant: ParticipantId,
        /// Why.
        reason: LeaveReason,
    },
}
