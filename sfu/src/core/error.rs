use str0m::RtcError;

use super::ids::{ParticipantId, RoomId, TrackId};

/// Why the core refused an input.
///
/// None of these leave the core in a broken state: a refused command changes nothing, a refused
/// datagram is dropped.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// The room already holds the configured maximum of participants.
    #[error("room {room} is full ({max} participants)")]
    RoomFull {
        /// The room that was full.
        room: RoomId,
        /// The configured limit.
        max: usize,
    },
    /// A participant with this id is already in some room.
    #[error("participant {0} has already joined")]
    DuplicateParticipant(ParticipantId),
    /// No participant with this id is known.
    #[error("unknown participant {0}")]
    UnknownParticipant(ParticipantId),
    /// No published track with this id is known.
    #[error("unknown track {0}")]
    UnknownTrack(TrackId),
    /// The participant tried to publish more tracks than allowed.
    #[error("participant {participant} may publish at most {max} tracks")]
    TooManyTracks {
        /// The publisher.
        participant: ParticipantId,
        /// The configured limit.
        max: usize,
    },
    /// The participant is not in the waiting room, so it cannot be admitted.
    #[error("participant {0} is not waiting")]
    NotWaiting(ParticipantId),
    /// The client sent an offer while the server's own offer awaits an answer. The server is
    /// the impolite peer: the client must roll back and answer the server's offer.
    #[error("offer collision: participant {0} must answer the pending server offer first")]
    OfferCollision(ParticipantId),
    /// An answer arrived but the server has no offer outstanding.
    #[error("participant {0} has no pending server offer to answer")]
    NoPendingOffer(ParticipantId),
    /// The announced host candidate was rejected.
    #[error("invalid host candidate: {0}")]
    Candidate(String),
    /// A datagram came from an address that no participant uses and carried no known ICE
    /// username.
    #[error("datagram from an unknown source")]
    UnknownSource,
    /// A datagram was not STUN, DTLS, RTP or RTCP.
    #[error("malformed datagram")]
    Malformed,
    /// str0m refused an input (bad SDP, invalid packet for the session state, …).
    #[error(transparent)]
    Rtc(#[from] RtcError),
}
