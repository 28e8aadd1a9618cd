//! The media backends of a room behind one interface. The room machine (`crate::room`) asks
//! for [`MediaCommand`]s and learns [`MediaEvent`]s (both defined here); [`Backend::execute`] carries a command
//! out — on this node's SFU workers ([`sfu`]) or, for a visit on Amazon Chime SDK, with the
//! Chime attendee calls that stand in for a media session ([`chime`]) — and answers the events
//! it produced at once (the SFU's arrive later, through the hub's event pump).

pub mod chime;
pub mod sfu;

use ::sfu::core::{LeaveReason, ParticipantId, TrackId};
use ::sfu::driver::DriverError;
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::media::Mid;

use crate::protocol::{ErrorCode, LeftReason, Quality, ServerMessage, TrackKind};

/// What the room asks of its media backend.
#[derive(Debug)]
pub enum MediaCommand {
    /// Seat `participant` in the room's media session (waiting: it sends and receives
    /// nothing until admitted). [`Room::media_joined`](crate::room::Room::media_joined) or
    /// [`Room::join_failed`](crate::room::Room::join_failed) follows.
    Join {
        /// Who.
        participant: ParticipantId,
        /// The client's initial offer.
        offer: Option<SdpOffer>,
        /// Held in the waiting room.
        waiting: bool,
    },
    /// Let a waiting participant's media flow; [`MediaEvent::Admitted`] follows.
    Admit {
        /// Who.
        participant: ParticipantId,
    },
    /// Take `participant` out of the media session; [`MediaEvent::Left`] follows.
    Leave {
        /// Who.
        participant: ParticipantId,
        /// Why (a backend that holds per-participant credentials revokes them for `Left`
        /// and `Dropped`).
        reason: LeftReason,
        /// On whose behalf.
        by: ParticipantId,
    },
    /// Remove `participant` for good; [`MediaEvent::Left`] (removed) follows.
    Remove {
        /// Who.
        participant: ParticipantId,
        /// The clinician who removed it.
        by: ParticipantId,
    },
    /// End the media session of `participant`'s previous seat, which a new socket replaced;
    /// its events up to and including its `Left` are dropped.
    Replace {
        /// Who.
        participant: ParticipantId,
    },
}

/// What the media backend tells the room.
#[derive(Debug, Clone, PartialEq)]
pub enum MediaEvent {
    /// The server's answer to the participant's offer.
    Answer {
        /// Recipient.
        participant: ParticipantId,
        /// SDP.
        sdp: String,
    },
    /// A server offer for the participant (it must answer).
    Offer {
        /// Recipient.
        participant: ParticipantId,
        /// SDP.
        sdp: String,
    },
    /// A waiting participant's media now flows.
    Admitted {
        /// Who.
        participant: ParticipantId,
        /// Chime: the attendee with its `JoinToken`, for the admitted participant only.
        attendee: Option<Box<serde_json::Value>>,
    },
    /// The participant's media is connected.
    Connected {
        /// Whose.
        participant: ParticipantId,
    },
    /// The participant's media lost its connection (it keeps its seat).
    Disconnected {
        /// Whose.
        participant: ParticipantId,
    },
    /// The participant publishes a new track.
    TrackPublished {
        /// The track.
        track: TrackId,
        /// Audio or video.
        kind: TrackKind,
    },
    /// A track reaches `subscriber` on its m-line `mid`.
    TrackRouted {
        /// Who receives it.
        subscriber: ParticipantId,
        /// The track.
        track: TrackId,
        /// The subscriber's m-line.
        mid: Mid,
    },
    /// A track is gone.
    TrackUnpublished {
        /// The track.
        track: TrackId,
    },
    /// A track stopped or resumed being forwarded.
    TrackMuted {
        /// The track.
        track: TrackId,
        /// New state.
        muted: bool,
    },
    /// A video track is paused for `subscriber`: its link holds none of the track's layers.
    TrackPaused {
        /// Whose link.
        subscriber: ParticipantId,
        /// The track.
        track: TrackId,
    },
    /// A track paused for `subscriber` is forwarded again.
    TrackResumed {
        /// Whose link.
        subscriber: ParticipantId,
        /// The track.
        track: TrackId,
    },
    /// A track of `participant` was refused.
    TrackRefused {
        /// The publisher.
        participant: ParticipantId,
        /// Why, for the participant.
        reason: String,
    },
    /// A participant's connection quality changed.
    ConnectionQuality {
        /// Whose.
        participant: ParticipantId,
        /// How it is now.
        quality: Quality,
    },
    /// The room's active speaker changed (`None`: nobody speaks).
    ActiveSpeaker {
        /// Who speaks now.
        participant: Option<ParticipantId>,
    },
    /// The participant's first media packet arrived.
    FirstMedia {
        /// The publisher.
        participant: ParticipantId,
    },
    /// The participant's media session is gone.
    Left {
        /// Who.
        participant: ParticipantId,
        /// Why, as the backend saw it.
        reason: LeaveReason,
    },
}

impl MediaEvent {
    /// The participant the event is about; `None` for a room-wide event about nobody.
    pub fn subject(&self) -> Option<ParticipantId> {
        Some(match self {
            Self::Answer { participant, .. }
            | Self::Offer { participant, .. }
            | Self::Admitted { participant, .. }
            | Self::Connected { participant }
            | Self::Disconnected { participant }
            | Self::TrackRefused { participant, .. }
            | Self::FirstMedia { participant }
            | Self::ConnectionQuality { participant, .. }
            | Self::Left { participant, .. } => *participant,
            Self::TrackPublished { track, .. }
            | Self::TrackUnpublished { track }
            | Self::TrackMuted { track, .. } => track.participant,
            Self::TrackRouted { subscriber, .. }
            | Self::TrackPaused { subscriber, .. }
            | Self::TrackResumed { subscriber, .. } => *subscriber,
            Self::ActiveSpeaker { participant } => return *participant,
        })
    }
}

/// Why a backend could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The SFU worker refused or is gone.
    #[error(transparent)]
    Sfu(#[from] DriverError),
    /// The backend has no such thing (Chime carries its own SDP and mutes).
    #[error("this visit's media runs on Amazon Chime: {0}")]
    NotSupported(&'static str),
    /// Amazon Chime could not be reached or refused.
    #[error("the meeting cannot be reached: {0}")]
    Unreachable(String),
}

impl BackendError {
    /// The error frame for the participant whose request failed.
    pub fn frame(&self) -> ServerMessage {
        match self {
            Self::Sfu(error) => sfu::error_frame(error),
            Self::NotSupported(what) => ServerMessage::error(
                ErrorCode::InvalidMessage,
                format!("this visit's media runs on Amazon Chime: {what}"),
            ),
            Self::Unreachable(why) => {
                tracing::warn!(error = %why, "a Chime call for signaling failed");
                ServerMessage::error(
                    ErrorCode::MediaUnavailable,
                    "the meeting cannot be reached; the participant still waits, admit again",
                )
            }
        }
    }
}

/// A participant's own media request, passed to the backend as is.
#[derive(Debug)]
pub enum Relay {
    /// A renegotiation offer.
    Offer {
        /// From whom.
        participant: ParticipantId,
        /// The offer.
        offer: SdpOffer,
    },
    /// The answer to the server's offer.
    Answer {
        /// From whom.
        participant: ParticipantId,
        /// The answer.
        answer: SdpAnswer,
    },
    /// Mute or unmute an own track.
    Mute {
        /// The track.
        track: TrackId,
        /// New state.
        muted: bool,
    },
    /// The size a subscriber shows another participant's video at.
    VideoSize {
        /// Who shows it.
        subscriber: ParticipantId,
        /// The video track.
        track: TrackId,
        /// Width in device pixels.
        width: u32,
        /// Height in device pixels.
        height: u32,
    },
}

/// The media backend of one room.
#[derive(Debug, Clone)]
pub enum Backend {
    /// This node's SFU.
    Sfu(sfu::SfuRoom),
    /// Amazon Chime SDK.
    Chime(chime::ChimeRoom),
}

impl Backend {
    /// Whether clients exchange SDP and track mutes with this node (not on Chime).
    pub fn takes_sdp(&self) -> bool {
        matches!(self, Self::Sfu(_))
    }

    /// The cap of `max` seats the room must enforce itself: the SFU refuses a participant
    /// over its own per-room limit, Chime has no such limit of ours.
    pub fn seat_cap(&self, max: usize) -> Option<usize> {
        match self {
            Self::Sfu(_) => None,
            Self::Chime(_) => Some(max),
        }
    }

    /// Carries out a command of the room; the events it produced at once.
    pub async fn execute(&self, command: MediaCommand) -> Result<Vec<MediaEvent>, BackendError> {
        match self {
            Self::Sfu(room) => room.execute(command).await.map(|()| Vec::new()),
            Self::Chime(room) => room.execute(command).await,
        }
    }

    /// Passes a participant's own media request on.
    pub async fn relay(&self, relay: Relay) -> Result<(), BackendError> {
        match self {
            Self::Sfu(room) => room.relay(relay).await,
            Self::Chime(_) => Err(BackendError::NotSupported("no SDP or track mutes here")),
        }
    }
}
