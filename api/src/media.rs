//! Media backends: how a participant reaches the audio and video of a visit. Bedside's own
//! SFU ([`SfuMedia`]) and Amazon Chime SDK meetings
//! ([`ChimeMedia`](crate::aws::chime::ChimeMedia)) sit behind one [`MediaService`] trait, so
//! joining, tokens, audit, waiting room and visit status do not depend on the backend.

use aws_lc_rs::hmac;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::Utc;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::config::{MediaBackend, TurnConfig};

/// An ICE server for the browser's RTCPeerConnection.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct IceServer {
    /// STUN/TURN URLs.
    pub urls: Vec<String>,
    /// TURN REST username (`expiry:participant`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// TURN REST credential.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// How the browser reaches the visit's media, tagged by `backend`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(tag = "backend", rename_all = "lowercase")]
pub enum Media {
    /// Bedside's SFU, through this node's signaling.
    Sfu {
        /// WebSocket URL of this node's signaling.
        signaling_url: String,
        /// ICE servers (TURN when configured).
        ice_servers: Vec<IceServer>,
    },
    /// An Amazon Chime SDK meeting; both objects are shaped as the Chime SDK Meetings API
    /// returns them, ready for amazon-chime-sdk-js's `MeetingSessionConfiguration`. The
    /// waiting room, admit, remove and the end of the visit still go through this node's
    /// signaling (without SDP): the browser joins the meeting once it is admitted.
    ///
    /// A participant who waits to be admitted (the patient of a visit with a waiting room)
    /// gets the attendee without its `JoinToken`: signaling hands the full attendee to that
    /// participant only, when it is admitted (docs/signaling.md, "Chime visits").
    Chime {
        /// WebSocket URL of this node's signaling, for the waiting room and the visit's events.
        signaling_url: String,
        /// The `Meeting` of CreateMeeting (MeetingId, MediaRegion, MediaPlacement…).
        #[schema(value_type = Object)]
        meeting: serde_json::Value,
        /// The `Attendee` of CreateAttendee (AttendeeId, ExternalUserId, JoinToken). Without
        /// `JoinToken` for a participant who waits to be admitted: it arrives over signaling
        /// with the admission.
        #[schema(value_type = Object)]
        attendee: serde_json::Value,
    },
}

impl Media {
    /// Takes the Chime attendee's `JoinToken` out, for a participant who may not join the
    /// meeting before it is admitted; the SFU's answer has nothing to withhold.
    pub fn withhold_join_token(&mut self) {
        if let Self::Chime {
            attendee: serde_json::Value::Object(attendee),
            ..
        } = self
        {
            attendee.remove("JoinToken");
        }
    }
}

/// What joining a backend produced.
#[derive(Debug, Clone)]
pub struct Joined {
    /// What the browser needs.
    pub media: Media,
    /// The backend's id of the visit's session (the Chime MeetingId), kept with the visit
    /// so ending the visit can close it.
    pub session_id: Option<String>,
}

/// Why a media backend could not serve a request.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// The backend is down, throttling or refusing; nothing was consumed.
    #[error("media backend unavailable: {0}")]
    Unavailable(String),
}

/// A media backend.
pub trait MediaService: Send + Sync {
    /// Which backend this is.
    fn backend(&self) -> MediaBackend;
    /// Seats `participant_id` in the media session of `visit_id` (creating the session on
    /// first use). Must be idempotent: starts, rejoins and refreshes all call it.
    fn join<'a>(
        &'a self,
        visit_id: &'a str,
        participant_id: &'a str,
    ) -> BoxFuture<'a, Result<Joined, MediaError>>;
    /// Closes the session `session_id` of an ended visit; a session already gone is fine.
    fn close<'a>(&'a self, session_id: &'a str) -> BoxFuture<'a, Result<(), MediaError>>;
    /// Takes `participant_id` out of the session `session_id` for good (removed, left, seat
    /// expired), so that what [`MediaService::join`] gave it stops working; a participant or
    /// session already gone is fine. A later `join` seats it afresh.
    fn remove<'a>(
        &'a self,
        session_id: &'a str,
        participant_id: &'a str,
    ) -> BoxFuture<'a, Result<(), MediaError>>;
}

/// Bedside's own SFU: the browser connects to this node's signaling; no remote call.
#[derive(Debug, Clone)]
pub struct SfuMedia {
    signaling_url: String,
    turn: TurnConfig,
}

impl SfuMedia {
    /// The SFU reached at `signaling_url`, with TURN credentials from `turn`.
    pub fn new(signaling_url: String, turn: TurnConfig) -> Self {
        Self {
            signaling_url,
            turn,
        }
    }

    /// TURN REST credentials (HMAC-SHA1 over `expiry:participant`, the coturn scheme).
    fn ice_servers(&self, participant_id: &str) -> Vec<IceServer> {
        let Some(secret) = &self.turn.shared_secret else {
            return Vec::new();
        };
        if self.turn.urls.is_empty() {
            return Vec::new();
        }
        let expiry = Utc::now().timestamp() + i64::try_from(self.turn.ttl_seconds).unwrap_or(3600);
        let username = format!("{expiry}:{participant_id}");
        let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret.as_bytes());
        let credential = STANDARD.encode(hmac::sign(&key, username.as_bytes()).as_ref());
        vec![IceServer {
            urls: self.turn.urls.clone(),
            username: Some(username),
            credential: Some(credential),
        }]
    }
}

impl MediaService for SfuMedia {
    fn backend(&self) -> MediaBackend {
        MediaBackend::Sfu
    }

    fn join<'a>(
        &'a self,
        _visit_id: &'a str,
        participant_id: &'a str,
    ) -> BoxFuture<'a, Result<Joined, MediaError>> {
        Box::pin(async move {
            Ok(Joined {
                media: Media::Sfu {
                    signaling_url: self.signaling_url.clone(),
                    ice_servers: self.ice_servers(participant_id),
                },
                session_id: None,
            })
        })
    }

    fn close<'a>(&'a self, _session_id: &'a str) -> BoxFuture<'a, Result<(), MediaError>> {
        // Signaling disconnects the room on `VisitEvent::Closed`; nothing remote to close.
        Box::pin(async { Ok(()) })
    }

    fn remove<'a>(
        &'a self,
        _session_id: &'a str,
        _participant_id: &'a str,
    ) -> BoxFuture<'a, Result<(), MediaError>> {
        // Signaling takes the participant out of the SFU itself; nothing remote holds it.
        Box::pin(async { Ok(()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_chime_join_token_is_withheld() {
        let mut chime = Media::Chime {
            signaling_url: "ws://node/ws".into(),
            meeting: serde_json::json!({"MeetingId": "m"}),
            attendee: serde_json::json!({"AttendeeId": "a", "ExternalUserId": "p", "JoinToken": "t"}),
        };
        chime.withhold_join_token();
        let Media::Chime { attendee, .. } = &chime else {
            panic!("still a Chime answer");
        };
        assert_eq!(
            attendee,
            &serde_json::json!({"AttendeeId": "a", "ExternalUserId": "p"})
        );
        let mut sfu = Media::Sfu {
            signaling_url: "ws://node/ws".into(),
            ice_servers: Vec::new(),
        };
        sfu.withhold_join_token();
        assert!(matches!(sfu, Media::Sfu { .. }));
    }
}
