//! This node's SFU as a room's backend: the room's commands go to the worker that hosts it,
//! and the worker's events come back translated for the room (through the hub's pump).

use std::time::Duration;

use sfu::core::{Command, CoreError, Event, Quality, RoomId};
use sfu::driver::{DriverError, Handle};

use super::{BackendError, MediaCommand, MediaEvent, Relay};
use crate::protocol::{self, CloseCode, ErrorCode, ServerMessage};
use crate::wire::track_kind;

/// One room on one SFU worker.
#[derive(Clone)]
pub struct SfuRoom {
    room: RoomId,
    worker: Handle,
}

impl std::fmt::Debug for SfuRoom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SfuRoom")
            .field("room", &self.room)
            .finish_non_exhaustive()
    }
}

impl SfuRoom {
    /// Room `room` on the worker behind `worker`.
    pub fn new(room: RoomId, worker: Handle) -> Self {
        Self { room, worker }
    }

    /// Sends a room command to the worker and waits for the core's verdict.
    pub async fn execute(&self, command: MediaCommand) -> Result<(), BackendError> {
        let command = match command {
            MediaCommand::Join {
                participant,
                offer,
                waiting,
            } => Command::Join {
                room: self.room,
                participant,
                offer,
                waiting,
            },
            MediaCommand::Admit { participant } => Command::Admit { participant },
            MediaCommand::Leave { participant, .. } | MediaCommand::Replace { participant } => {
                Command::Leave { participant }
            }
            MediaCommand::Remove { participant, .. } => Command::Remove { participant },
        };
        Ok(self.worker.command(command).await?)
    }

    /// Sends a participant's SDP or mute to the worker.
    pub async fn relay(&self, relay: Relay) -> Result<(), BackendError> {
        let command = match relay {
            Relay::Offer { participant, offer } => Command::Offer { participant, offer },
            Relay::Answer {
                participant,
                answer,
            } => Command::Answer {
                participant,
                answer,
            },
            Relay::Mute { track, muted } => Command::Mute { track, muted },
            Relay::VideoSize {
                subscriber,
                track,
                width,
                height,
            } => Command::VideoSize {
                subscriber,
                track,
                width,
                height,
            },
        };
        Ok(self.worker.command(command).await?)
    }
}

/// What one SFU event means to signaling.
#[derive(Debug)]
pub enum Translated {
    /// An event for the room of its subject (`room`, when the event names it).
    Room {
        /// The room, when the event carries it (a participant that left is no longer indexed).
        room: Option<RoomId>,
        /// The event.
        event: MediaEvent,
    },
    /// A round-trip time for the metrics.
    Rtt(Duration),
    /// A subscriber's bandwidth estimate for the metrics, in bit/s.
    Bandwidth(u64),
    /// Nothing signaling relays.
    Nothing,
}

/// Translates an SFU event for the room.
pub fn translate(event: Event) -> Translated {
    let event = match event {
        Event::Answer {
            participant,
            answer,
        } => MediaEvent::Answer {
            participant,
            sdp: answer.to_sdp_string(),
        },
        Event::Offer { participant, offer } => MediaEvent::Offer {
            participant,
            sdp: offer.to_sdp_string(),
        },
        Event::Admitted { participant, .. } => MediaEvent::Admitted {
            participant,
            attendee: None,
        },
        Event::Connected { participant } => MediaEvent::Connected { participant },
        Event::Disconnected { participant } => MediaEvent::Disconnected { participant },
        Event::TrackPublished { track, kind, .. } => MediaEvent::TrackPublished {
            track,
            kind: track_kind(kind),
        },
        Event::TrackRouted {
            subscriber,
            track,
            mid,
        } => MediaEvent::TrackRouted {
            subscriber,
            track,
            mid,
        },
        Event::TrackUnpublished { track, .. } => MediaEvent::TrackUnpublished { track },
        Event::TrackMuted { track, muted, .. } => MediaEvent::TrackMuted { track, muted },
        Event::TrackRefused {
            participant,
            reason,
            ..
        } => MediaEvent::TrackRefused {
            participant,
            reason: reason.to_string(),
        },
        Event::FirstMedia { participant } => MediaEvent::FirstMedia { participant },
        Event::Left {
            room,
            participant,
            reason,
        } => {
            return Translated::Room {
                room: Some(room),
                event: MediaEvent::Left {
                    participant,
                    reason,
                },
            };
        }
        Event::ConnectionQuality {
            participant,
            quality,
        } => MediaEvent::ConnectionQuality {
            participant,
            quality: match quality {
                Quality::Excellent => protocol::Quality::Excellent,
                Quality::Good => protocol::Quality::Good,
                Quality::Poor => protocol::Quality::Poor,
                Quality::Lost => protocol::Quality::Lost,
            },
        },
        Event::ActiveSpeaker { room, participant } => {
            return Translated::Room {
                room: Some(room),
                event: MediaEvent::ActiveSpeaker { participant },
            };
        }
        Event::TrackPaused { subscriber, track } => MediaEvent::TrackPaused { subscriber, track },
        Event::TrackResumed { subscriber, track } => MediaEvent::TrackResumed { subscriber, track },
        Event::Rtt { rtt, .. } => return Translated::Rtt(rtt),
        Event::Bandwidth { bps, .. } => return Translated::Bandwidth(bps),
        Event::Joined { .. } | Event::KeyframeRequested { .. } => return Translated::Nothing,
    };
    Translated::Room { room: None, event }
}

/// The error frame for a command the SFU refused.
pub fn error_frame(error: &DriverError) -> ServerMessage {
    let code = match error {
        DriverError::Stopped => ErrorCode::MediaUnavailable,
        DriverError::Core(core) => match core {
            CoreError::RoomFull { .. } => ErrorCode::RoomFull,
            CoreError::UnknownParticipant(_) => ErrorCode::UnknownParticipant,
            CoreError::UnknownTrack(_) => ErrorCode::UnknownTrack,
            CoreError::TooManyTracks { .. } => ErrorCode::TooManyTracks,
            CoreError::NotWaiting(_) => ErrorCode::NotWaiting,
            CoreError::OfferCollision(_) => ErrorCode::OfferCollision,
            CoreError::NoPendingOffer(_) => ErrorCode::NoPendingOffer,
            CoreError::Rtc(_) => ErrorCode::InvalidSdp,
            CoreError::DuplicateParticipant(_)
            | CoreError::Candidate(_)
            | CoreError::UnknownSource
            | CoreError::Malformed => ErrorCode::MediaUnavailable,
        },
    };
    ServerMessage::error(code, error.to_string())
}

/// The close code after the SFU refused to seat a participant: a protocol error for an offer
/// it could not use, unavailable otherwise.
pub fn refused_join_close(error: &BackendError) -> CloseCode {
    match error {
        BackendError::Sfu(DriverError::Core(CoreError::Rtc(_))) => CloseCode::Protocol,
        _ => CloseCode::Unavailable,
    }
}
