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

use crate::config::{MediaBackend, TurnConfig, TurnPolicy};

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

/// The `iceTransportPolicy` a browser must give its RTCPeerConnection. Only `relay` is ever
/// sent: without the field the browser's default (`all`) applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum IceTransportPolicy {
    /// TURN relay candidates only (`turn.policy = "relay"`).
    Relay,
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
        /// `relay` when media must go through TURN only (`turn.policy = "relay"`); absent
        /// otherwise.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schema(nullable = false)]
        ice_transport_policy: Option<IceTransportPolicy>,
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

/// The password of a TURN REST `username`: base64(HMAC-SHA1(secret, username)), what coturn
/// computes with `use-auth-secret` / `static-auth-secret`.
fn rest_credential(secret: &str, username: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret.as_bytes());
    STANDARD.encode(hmac::sign(&key, username.as_bytes()).as_ref())
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
        let Some(secret) = self.turn.secret() else {
            return Vec::new();
        };
        let ttl = i64::try_from(self.turn.ttl_seconds).unwrap_or(i64::MAX);
        let expiry = Utc::now().timestamp().saturating_add(ttl);
        let username = format!("{expiry}:{participant_id}");
        let credential = rest_credential(secret.expose(), &username);
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
                    ice_transport_policy: (self.turn.policy == TurnPolicy::Relay)
                        .then_some(IceTransportPolicy::Relay),
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
    use crate::config::Secret;

    #[test]
    fn credentials_are_coturns_rest_scheme() {
        // `openssl dgst -sha1 -hmac s3cret -binary | base64` of the same username.
        assert_eq!(
            rest_credential("s3cret", "1700000000:participant-1"),
            "TThW3JFqydkPGVm80VeB7O2lbB0="
        );
    }

    #[tokio::test]
    async fn the_answer_carries_credentials_and_the_relay_policy() {
        let turn = TurnConfig {
            urls: vec!["turn:127.0.0.1:3478?transport=udp".into()],
            shared_secret: Some(Secret::new("s3cret")),
            ttl_seconds: 120,
            policy: TurnPolicy::Relay,
        };
        let sfu = SfuMedia::new("ws://node/ws".into(), turn.clone());
        let before = Utc::now().timestamp();
        let joined = sfu.join("visit", "participant-1").await.expect("joins");
        let answer = serde_json::to_value(&joined.media).expect("serialises");
        assert_eq!(answer["ice_transport_policy"], "relay");
        let server = &answer["ice_servers"][0];
        assert_eq!(server["urls"], serde_json::json!(turn.urls));
        let username = server["username"].as_str().expect("a username");
        let (expiry, participant) = username.split_once(':').expect("expiry:participant");
        assert_eq!(participant, "participant-1");
        let expiry: i64 = expiry.parse().expect("a timestamp");
        assert!((before + 120..=Utc::now().timestamp() + 120).contains(&expiry));
        assert_eq!(server["credential"], rest_credential("s3cret", username));

        let all = SfuMedia::new(
            "ws://node/ws".into(),
            TurnConfig {
                policy: TurnPolicy::All,
                ..turn
            },
        );
        let answer = serde_json::to_value(all.join("visit", "p").await.expect("joins").media)
            .expect("serialises");
        assert!(answer.get("ice_transport_policy").is_none(), "{answer}");
        let none = SfuMedia::new("ws://node/ws".into(), TurnConfig::default());
        let answer = serde_json::to_value(none.join("visit", "p").await.expect("joins").media)
            .expect("serialises");
        assert_eq!(answer["ice_servers"], serde_json::json!([]));
    }

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
            ice_transport_policy: None,
        };
        sfu.withhold_join_token();
        assert!(matches!(sfu, Media::Sfu { .. }));
    }
}
