//! The wire protocol, version [`PROTOCOL_VERSION`]: JSON text frames, one message per frame,
//! each an object whose `type` names the message. docs/signaling.md is the reference for
//! integrators; these types are its source of truth.
//!
//! Fields a receiver does not know are ignored, so later versions may add fields without
//! breaking older clients; a new or changed meaning gets a new version number, announced in
//! `join` and confirmed in `joined`.

use serde::{Deserialize, Serialize};

/// The protocol version this server speaks.
pub const PROTOCOL_VERSION: u32 = 1;

fn default_protocol() -> u32 {
    PROTOCOL_VERSION
}

/// A message from a client to the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// The first frame of a new seat: the session grant from `POST /api/visits/{id}/start`.
    Join {
        /// The ES256 session grant.
        grant: String,
        /// The protocol version the client speaks (default 1).
        #[serde(default = "default_protocol")]
        protocol: u32,
        /// The client's initial SDP offer with the tracks it publishes. Without one the
        /// server offers one receive-only audio and video m-line for the client to answer.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        offer: Option<String>,
    },
    /// The first frame of a replacement socket after a dropped one, within 30 s: keeps the
    /// seat and the media session.
    Resume {
        /// A valid session grant for the same participant.
        grant: String,
        /// The `session` token from `joined`.
        session: String,
    },
    /// An SDP offer (renegotiation, e.g. a screen share).
    Offer {
        /// The SDP.
        sdp: String,
    },
    /// The SDP answer to the server's last `offer`.
    Answer {
        /// The SDP.
        sdp: String,
    },
    /// Lets a waiting participant in (the visit's clinician only).
    Admit {
        /// Participant id.
        participant: String,
    },
    /// Removes a participant from the visit (the visit's clinician only).
    Remove {
        /// Participant id.
        participant: String,
    },
    /// Stops or resumes forwarding one of the sender's own tracks.
    Mute {
        /// Track id from `track_published`.
        track: String,
        /// `true` to stop forwarding.
        muted: bool,
    },
    /// The size at which the client shows another participant's video track, so the
    /// server sends no larger simulcast layer than that needs (SFU only).
    VideoSize {
        /// Track id from `track_published`.
        track: String,
        /// Width in device pixels (CSS pixels × `devicePixelRatio`), at most 8192; 0 with
        /// `height` 0 when the video is not shown.
        width: u32,
        /// Height in device pixels, at most 8192.
        height: u32,
    },
    /// Heartbeat; answered with `pong`.
    Ping {
        /// Echoed in the `pong`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
    },
    /// Leaves the visit for good (the seat is freed at once).
    Leave,
    /// Ends the visit for everyone, as `POST /api/visits/{id}/end` does (the visit's
    /// clinician only): for a clinician who joined through a link and holds no API key.
    EndVisit,
}

impl ClientMessage {
    /// The `type` name, for metrics and error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Join { .. } => "join",
            Self::Resume { .. } => "resume",
            Self::Offer { .. } => "offer",
            Self::Answer { .. } => "answer",
            Self::Admit { .. } => "admit",
            Self::Remove { .. } => "remove",
            Self::Mute { .. } => "mute",
            Self::VideoSize { .. } => "video_size",
            Self::Ping { .. } => "ping",
            Self::Leave => "leave",
            Self::EndVisit => "end_visit",
        }
    }
}

/// A participant's role in the visit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The patient.
    Patient,
    /// The visit's clinician.
    Clinician,
}

impl From<api::model::ParticipantRole> for Role {
    fn from(role: api::model::ParticipantRole) -> Self {
        match role {
            api::model::ParticipantRole::Patient => Self::Patient,
            api::model::ParticipantRole::Clinician => Self::Clinician,
        }
    }
}

/// Why a track is paused for a subscriber, in `track_paused`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PauseReason {
    /// The subscriber's link has no room for the video.
    Bandwidth,
}

/// How a participant's connection is, in `connection_quality` (docs/signaling.md §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quality {
    /// Loss under 2% both ways and a round trip under 200 ms.
    Excellent,
    /// Loss under 8% and a round trip under 400 ms.
    Good,
    /// More loss or a longer round trip.
    Poor,
    /// The media connection is gone until it reconnects.
    Lost,
}

impl Quality {
    /// The wire name (`excellent`, `good`, `poor`, `lost`), also the metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Excellent => "excellent",
            Self::Good => "good",
            Self::Poor => "poor",
            Self::Lost => "lost",
        }
    }
}

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrackKind {
    /// Audio.
    Audio,
    /// Video.
    Video,
}

/// Someone in the room, as listed in `joined`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantInfo {
    /// Participant id.
    pub participant: String,
    /// Display name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Held in the waiting room.
    pub waiting: bool,
}

/// Why a participant left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeftReason {
    /// It sent `leave`.
    Left,
    /// The clinician removed it.
    Removed,
    /// Its socket dropped and did not resume within 30 s.
    Dropped,
    /// Its media session failed.
    Failed,
    /// The visit ended.
    VisitEnded,
    /// The server shut down (each departure is audited with this reason; nobody is told,
    /// since everyone's socket closes).
    ServerShutdown,
}

impl LeftReason {
    /// The wire name, as in `participant_left` (audit details use it too).
    pub fn as_str(self) -> &'static str {
        match self {
            LeftReason::Left => "left",
            LeftReason::Removed => "removed",
            LeftReason::Dropped => "dropped",
            LeftReason::Failed => "failed",
            LeftReason::VisitEnded => "visit_ended",
            LeftReason::ServerShutdown => "server_shutdown",
        }
    }
}

/// Machine-readable error codes of `error` frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, not an object, an unknown `type`, a missing field or a binary frame.
    InvalidMessage,
    /// The frame is larger than the limit.
    FrameTooLarge,
    /// Too many frames per second; this one was dropped.
    RateLimited,
    /// `join`/`resume` on a socket that already has a seat.
    AlreadyJoined,
    /// The `join` asks for a protocol version the server does not speak.
    UnsupportedProtocol,
    /// The grant is missing, malformed, expired or forged, or the resume token is wrong.
    Unauthorized,
    /// The sender's role may not do this.
    Forbidden,
    /// No such participant in this visit.
    UnknownParticipant,
    /// No such track of the sender.
    UnknownTrack,
    /// `admit` of a participant who is not waiting.
    NotWaiting,
    /// The client offered while the server's offer awaits an answer: roll back and answer.
    OfferCollision,
    /// An `answer` arrived but no server offer is outstanding.
    NoPendingOffer,
    /// The SDP could not be parsed or was refused.
    InvalidSdp,
    /// The room already has the maximum number of participants.
    RoomFull,
    /// A track beyond the per-participant limit is not forwarded.
    TooManyTracks,
    /// The visit is not live (not found, ended or cancelled).
    VisitUnavailable,
    /// The media server cannot take the request now.
    MediaUnavailable,
}

impl ErrorCode {
    /// The wire name, for metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidMessage => "invalid_message",
            Self::FrameTooLarge => "frame_too_large",
            Self::RateLimited => "rate_limited",
            Self::AlreadyJoined => "already_joined",
            Self::UnsupportedProtocol => "unsupported_protocol",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::UnknownParticipant => "unknown_participant",
            Self::UnknownTrack => "unknown_track",
            Self::NotWaiting => "not_waiting",
            Self::OfferCollision => "offer_collision",
            Self::NoPendingOffer => "no_pending_offer",
            Self::InvalidSdp => "invalid_sdp",
            Self::RoomFull => "room_full",
            Self::TooManyTracks => "too_many_tracks",
            Self::VisitUnavailable => "visit_unavailable",
            Self::MediaUnavailable => "media_unavailable",
        }
    }
}

/// A message from the server to a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// The seat is taken (or resumed).
    Joined {
        /// The protocol version in use.
        protocol: u32,
        /// This participant's id.
        participant: String,
        /// This participant's role.
        role: Role,
        /// The visit id.
        visit: String,
        /// Secret token for `resume` after a dropped socket.
        session: String,
        /// Whether this participant waits for the clinician to admit it.
        waiting: bool,
        /// Whether this socket resumed an existing seat.
        resumed: bool,
        /// The others already in the room.
        participants: Vec<ParticipantInfo>,
        /// Chime visits only: this participant's Chime `Attendee` with its `JoinToken`, when
        /// its start answer had none (a patient held by the waiting room) and it is in —
        /// a rejoin or resume after its admission.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        attendee: Option<Box<serde_json::Value>>,
    },
    /// Someone joined the room (not waiting).
    ParticipantJoined {
        /// Who.
        participant: String,
        /// Display name.
        name: String,
        /// Role.
        role: Role,
    },
    /// A patient is in the waiting room.
    ParticipantWaiting {
        /// Who.
        participant: String,
        /// Display name.
        name: String,
    },
    /// A waiting participant was admitted; media now flows both ways.
    ParticipantAdmitted {
        /// Who.
        participant: String,
        /// Chime visits only, and only in the copy sent to the admitted participant: its
        /// Chime `Attendee` with the `JoinToken` its start answer left out.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        attendee: Option<Box<serde_json::Value>>,
    },
    /// The room's active speaker changed, from the audio levels of the admitted participants'
    /// packets (SFU only; decided every half second): who speaks now, or `null` when nobody
    /// has for 1.5 s or the speaker left. Waiting participants are not told.
    ActiveSpeaker {
        /// Who speaks, or `None` (`null`) for nobody.
        participant: Option<String>,
    },
    /// A participant's connection quality changed, as the server sees its media session
    /// (SFU only): sent about everyone to every admitted participant, and to a waiting one
    /// about itself.
    ConnectionQuality {
        /// Whose connection.
        participant: String,
        /// How it is now.
        quality: Quality,
    },
    /// Someone left the room.
    ParticipantLeft {
        /// Who.
        participant: String,
        /// Why.
        reason: LeftReason,
    },
    /// A track: the recipient's own (`participant` is itself, `mid` is the m-line it sends
    /// on) or another participant's that now reaches the recipient on its m-line `mid`.
    TrackPublished {
        /// Track id (`<participant>:<publisher mid>`).
        track: String,
        /// Publisher.
        participant: String,
        /// Audio or video.
        kind: TrackKind,
        /// The m-line in the recipient's session.
        mid: String,
    },
    /// A track is gone.
    TrackUnpublished {
        /// Track id.
        track: String,
        /// Publisher.
        participant: String,
    },
    /// A track stopped or resumed being forwarded.
    TrackMuted {
        /// Track id.
        track: String,
        /// Publisher.
        participant: String,
        /// New state.
        muted: bool,
    },
    /// Another participant's video track is paused for the recipient alone: its link holds
    /// not even the lowest layer, so only audio is forwarded to it until the link recovers
    /// (`track_resumed`). SFU only.
    TrackPaused {
        /// Track id.
        track: String,
        /// Why: `bandwidth`.
        reason: PauseReason,
    },
    /// A track paused for the recipient is forwarded again.
    TrackResumed {
        /// Track id.
        track: String,
    },
    /// An SDP offer from the server; reply with `answer`.
    Offer {
        /// The SDP.
        sdp: String,
    },
    /// The server's answer to the client's offer.
    Answer {
        /// The SDP.
        sdp: String,
    },
    /// The visit ended; the socket closes next (4410).
    VisitEnded,
    /// This server is shutting down: the seat is gone and the socket closes next (4503).
    /// Join again (on a fresh socket, with a fresh grant if needed) after
    /// `retry_after_ms`; another node, or this one restarted, takes the visit.
    ServerShutdown {
        /// How long to wait before joining again.
        retry_after_ms: u64,
    },
    /// A request was refused or a frame dropped; the connection stays open unless a close
    /// frame follows.
    Error {
        /// Machine-readable code.
        code: ErrorCode,
        /// Human-readable explanation.
        message: String,
    },
    /// Answer to `ping`.
    Pong {
        /// The `id` of the ping.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
    },
}

impl ServerMessage {
    /// An `error` frame.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Error {
            code,
            message: message.into(),
        }
    }
}

/// WebSocket close codes the server uses (RFC 6455 leaves 4000–4999 to applications).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseCode {
    /// 1000: the participant left.
    Normal,
    /// 4400: the first frame was not `join` or `resume`, or the protocol version is unknown.
    Protocol,
    /// 4401: no `join` within 5 s, or the grant or resume token was refused.
    Unauthorized,
    /// 4403: the clinician removed this participant.
    Removed,
    /// 4409: the same participant connected on another socket.
    Replaced,
    /// 4410: the visit is over (ended, cancelled, or not live).
    VisitOver,
    /// 4503: the media server could not seat the participant (room full, server stopping).
    Unavailable,
    /// 4503 too: the server is shutting down (after a `server_shutdown` frame).
    ShuttingDown,
}

impl CloseCode {
    /// The numeric code.
    pub fn code(self) -> u16 {
        match self {
            Self::Normal => 1000,
            Self::Protocol => 4400,
            Self::Unauthorized => 4401,
            Self::Removed => 4403,
            Self::Replaced => 4409,
            Self::VisitOver => 4410,
            Self::Unavailable | Self::ShuttingDown => 4503,
        }
    }

    /// The close reason text.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Normal => "left",
            Self::Protocol => "protocol error",
            Self::Unauthorized => "unauthorized",
            Self::Removed => "removed",
            Self::Replaced => "replaced by another connection",
            Self::VisitOver => "visit over",
            Self::Unavailable => "media unavailable",
            Self::ShuttingDown => "server shutting down",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_messages_round_trip_with_their_type_tag() {
        let join: ClientMessage = serde_json::from_str(r#"{"type":"join","grant":"g"}"#)
            .expect("join without protocol or offer");
        assert_eq!(
            join,
            ClientMessage::Join {
                grant: "g".into(),
                protocol: 1,
                offer: None
            }
        );
        let leave: ClientMessage =
            serde_json::from_str(r#"{"type":"leave","extra":1}"#).expect("unknown fields ignored");
        assert_eq!(leave, ClientMessage::Leave);
        let mute = ClientMessage::Mute {
            track: "p:0".into(),
            muted: true,
        };
        let text = serde_json::to_string(&mute).expect("encode");
        assert_eq!(text, r#"{"type":"mute","track":"p:0","muted":true}"#);
        let size: ClientMessage =
            serde_json::from_str(r#"{"type":"video_size","track":"p:1","width":0,"height":0}"#)
                .expect("video_size");
        assert_eq!(size.kind(), "video_size");
        let paused = serde_json::to_string(&ServerMessage::TrackPaused {
            track: "p:1".into(),
            reason: PauseReason::Bandwidth,
        })
        .expect("encode");
        assert_eq!(
            paused,
            r#"{"type":"track_paused","track":"p:1","reason":"bandwidth"}"#
        );
        let resumed = serde_json::to_string(&ServerMessage::TrackResumed {
            track: "p:1".into(),
        })
        .expect("encode");
        assert_eq!(resumed, r#"{"type":"track_resumed","track":"p:1"}"#);
        assert!(serde_json::from_str::<ClientMessage>(r#"{"type":"dance"}"#).is_err());
        assert!(serde_json::from_str::<ClientMessage>(r#"{"type":"offer"}"#).is_err());
    }

    #[test]
    fn server_messages_use_snake_case_names() {
        let text = serde_json::to_string(&ServerMessage::error(ErrorCode::RateLimited, "slow"))
            .expect("encode");
        assert_eq!(
            text,
            r#"{"type":"error","code":"rate_limited","message":"slow"}"#
        );
        let text = serde_json::to_string(&ServerMessage::ActiveSpeaker {
            participant: Some("p".into()),
        })
        .expect("encode");
        assert_eq!(text, r#"{"type":"active_speaker","participant":"p"}"#);
        let text = serde_json::to_string(&ServerMessage::ConnectionQuality {
            participant: "p".into(),
            quality: Quality::Poor,
        })
        .expect("encode");
        assert_eq!(
            text,
            r#"{"type":"connection_quality","participant":"p","quality":"poor"}"#
        );
        let text = serde_json::to_string(&ServerMessage::ActiveSpeaker { participant: None })
            .expect("encode");
        assert_eq!(text, r#"{"type":"active_speaker","participant":null}"#);
        let text = serde_json::to_string(&ServerMessage::ParticipantLeft {
            participant: "p".into(),
            reason: LeftReason::VisitEnded,
        })
        .expect("encode");
        assert_eq!(
            text,
            r#"{"type":"participant_left","participant":"p","reason":"visit_ended"}"#
        );
        assert_eq!(
            serde_json::to_string(&ServerMessage::VisitEnded).expect("encode"),
            r#"{"type":"visit_ended"}"#
        );
    }

    #[test]
    fn the_attendee_is_an_optional_field_older_clients_never_see_otherwise() {
        let plain = ServerMessage::ParticipantAdmitted {
            participant: "p".into(),
            attendee: None,
        };
        let text = serde_json::to_string(&plain).expect("encode");
        assert_eq!(text, r#"{"type":"participant_admitted","participant":"p"}"#);
        assert_eq!(
            serde_json::from_str::<ServerMessage>(&text).expect("decode"),
            plain
        );
        let attendee =
            serde_json::json!({"AttendeeId": "a", "ExternalUserId": "p", "JoinToken": "t"});
        let full = ServerMessage::ParticipantAdmitted {
            participant: "p".into(),
            attendee: Some(Box::new(attendee.clone())),
        };
        let value = serde_json::to_value(&full).expect("encode");
        assert_eq!(value["attendee"], attendee);
    }
}
