use str0m::change::{SdpAnswer, SdpOffer};

use super::ids::{ParticipantId, RoomId, TrackId};

/// A request from signaling, fed to [`Core::handle_command`](super::Core::handle_command).
#[derive(Debug)]
pub enum Command {
    /// Add a participant to a room, creating the room if needed.
    ///
    /// With an `offer` the core answers it ([`Event::Answer`](super::Event::Answer)); without,
    /// the core offers one audio and one video m-line for the client to publish on
    /// ([`Event::Offer`](super::Event::Offer)).
    Join {
        /// The room to join.
        room: RoomId,
        /// The new participant's id; must not be in use.
        participant: ParticipantId,
        /// The client's initial offer, if it made one.
        offer: Option<SdpOffer>,
        /// Hold the participant in the waiting room: its media reaches nobody and it receives
        /// nobody's media until [`Command::Admit`].
        waiting: bool,
    },
    /// A renegotiation offer from the client (a new track such as a screen share).
    Offer {
        /// Who offers.
        participant: ParticipantId,
        /// The client's offer.
        offer: SdpOffer,
    },
    /// The client's answer to the last [`Event::Offer`](super::Event::Offer).
    Answer {
        /// Who answers.
        participant: ParticipantId,
        /// The client's answer.
        answer: SdpAnswer,
    },
    /// Let a waiting participant into the room.
    Admit {
        /// The waiting participant.
        participant: ParticipantId,
    },
    /// The participant left on its own.
    Leave {
        /// Who leaves.
        participant: ParticipantId,
    },
    /// Someone with authority removed the participant.
    Remove {
        /// Who is removed.
        participant: ParticipantId,
    },
    /// The size at which a subscriber renders a video track, so it gets no larger simulcast
    /// layer than that needs. Sizes above 8192 count as 8192.
    VideoSize {
        /// Who renders it.
        subscriber: ParticipantId,
        /// The video track.
        track: TrackId,
        /// Width in device pixels; 0 with `height` 0 when the video is not shown.
        width: u32,
        /// Height in device pixels.
        height: u32,
    },
    /// Stop or resume forwarding one published track.
    Mute {
        /// The track.
        track: TrackId,
        /// `true` to stop forwarding, `false` to resume.
        muted: bool,
    },
}
