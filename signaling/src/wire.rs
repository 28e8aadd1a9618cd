//! How ids look on the wire: participants and rooms are UUID strings to clients and `u128`s
//! to the SFU; a track is `<publisher participant id>:<publisher mid>`; in the audit chain a
//! participant is `participant:<id>`.

use api::audit::Actor;
use sfu::core::{ParticipantId, TrackId};
use str0m::media::{MediaKind, Mid};

use crate::protocol::TrackKind;

/// The participant or room id of a UUID string, as the SFU names it.
pub fn uuid_id(text: &str) -> Option<u128> {
    uuid::Uuid::parse_str(text).ok().map(|id| id.as_u128())
}

/// A participant's wire id (a UUID string).
pub fn wire_id(id: ParticipantId) -> String {
    uuid::Uuid::from_u128(id.0).to_string()
}

/// A participant as the audit chain names it.
pub fn actor(participant: ParticipantId) -> Actor {
    Actor::local(&format!("participant:{}", wire_id(participant)))
}

/// A track's wire id: `<publisher participant id>:<publisher mid>`.
pub fn wire_track(track: TrackId) -> String {
    format!("{}:{}", wire_id(track.participant), track.mid)
}

/// The track a wire id names, or `None` for anything else.
pub fn parse_track(text: &str) -> Option<TrackId> {
    let (participant, mid) = text.rsplit_once(':')?;
    if mid.is_empty() || mid.len() > 16 {
        return None;
    }
    Some(TrackId {
        participant: ParticipantId(uuid_id(participant)?),
        mid: Mid::from(mid),
    })
}

/// Audio or video, as the wire says it.
pub fn track_kind(kind: MediaKind) -> TrackKind {
    if kind.is_audio() {
        TrackKind::Audio
    } else {
        TrackKind::Video
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn track_ids_round_trip_and_refuse_garbage() {
        let track = TrackId {
            participant: ParticipantId(0x0190_0000_0000_7000_8000_0000_0000_0001),
            mid: Mid::from("1"),
        };
        let text = wire_track(track);
        assert_eq!(text, "01900000-0000-7000-8000-000000000001:1");
        assert_eq!(parse_track(&text), Some(track));
        for bad in [
            "",
            "x:1",
            "01900000-0000-7000-8000-000000000001:",
            "nocolon",
        ] {
            assert_eq!(parse_track(bad), None, "{bad}");
        }
    }

    #[test]
    fn participant_ids_round_trip() {
        let text = "01900000-0000-7000-8000-000000000001";
        let id = ParticipantId(uuid_id(text).unwrap_or_default());
        assert_eq!(wire_id(id), text);
        assert_eq!(uuid_id("not a uuid"), None);
    }
}
