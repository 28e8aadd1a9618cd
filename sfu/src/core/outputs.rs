use std::collections::VecDeque;

use str0m::RtcError;
use str0m::media::{KeyframeRequestKind, MediaKind, Mid, Rid};
use str0m::rtp::RtpPacket;

use super::event::{Event, Transmit};
use super::ids::{ParticipantId, TrackId};
use super::timers::Timers;

/// Follow-up work found while draining one `Rtc` that needs other participants. It is queued
/// instead of done on the spot so that each `Rtc` is drained completely before another one is
/// touched (str0m's drain invariant) and so that no two participants are borrowed at once.
// Forwarding is the hot path; boxing its packet would cost an allocation per packet, while the
// queue holds only the few items of one input at a time.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum Work {
    Forward {
        track: TrackId,
        /// The simulcast layer the packet belongs to, if the track has layers.
        rid: Option<Rid>,
        packet: RtpPacket,
    },
    Publish {
        participant: ParticipantId,
        mid: Mid,
        kind: MediaKind,
    },
    Unpublish {
        track: TrackId,
    },
    /// A subscriber asked for a keyframe on its leg of `track`.
    Keyframe {
        track: TrackId,
        subscriber: ParticipantId,
        kind: KeyframeRequestKind,
    },
    /// The subscriber's bandwidth estimate changed: decide its layers again.
    Allocate {
        participant: ParticipantId,
    },
    /// The publisher stopped or resumed sending one layer of `track`.
    LayerPaused {
        track: TrackId,
        rid: Option<Rid>,
        paused: bool,
    },
    Fail {
        participant: ParticipantId,
        error: RtcError,
    },
}

/// Everything the core has produced and not yet handed out or processed.
#[derive(Debug, Default)]
pub(crate) struct Outputs {
    pub(crate) transmits: VecDeque<Transmit>,
    pub(crate) events: VecDeque<Event>,
    pub(crate) work: VecDeque<Work>,
    pub(crate) timers: Timers,
    /// NACKs received from subscribers, summed over every session's statistics.
    pub(crate) nacks_received: u64,
    /// PLIs received from subscribers, summed over every session's statistics.
    pub(crate) plis_received: u64,
}
