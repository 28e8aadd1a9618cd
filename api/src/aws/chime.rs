//! Amazon Chime SDK Meetings as a [`MediaService`]: one meeting per visit, one attendee per
//! participant (deleted when it is removed or leaves for good), the meeting deleted when the
//! visit ends.

use aws_sdk_chimesdkmeetings::Client;
use aws_sdk_chimesdkmeetings::types::{Attendee, Meeting};
use futures::future::BoxFuture;
use serde_json::{Map, Value};

use super::describe;
use crate::config::MediaBackend;
use crate::media::{Joined, Media, MediaError, MediaService};
use aws_sdk_chimesdkmeetings::error::{ProvideErrorMetadata, SdkError};

/// Chime meetings in `chime.media_region`.
#[derive(Debug, Clone)]
pub struct ChimeMedia {
    client: Client,
    media_region: String,
    signaling_url: String,
}

impl ChimeMedia {
    /// A backend creating meetings in `media_region`, whose participants meet in the waiting
    /// room of the signaling at `signaling_url`.
    pub fn new(
        client: Client,
        media_region: impl Into<String>,
        signaling_url: impl Into<String>,
    ) -> Self {
        Self {
            client,
            media_region: media_region.into(),
            signaling_url: signaling_url.into(),
        }
    }
}

fn put(map: &mut Map<String, Value>, key: &str, value: Option<&str>) {
    if let Some(value) = value {
        map.insert(key.to_owned(), Value::String(value.to_owned()));
    }
}

/// The meeting as the Chime SDK Meetings API's JSON (`Meeting`), for the browser SDK.
fn meeting_json(meeting: &Meeting) -> Value {
    let mut out = Map::new();
    put(&mut out, "MeetingId", meeting.meeting_id());
    put(&mut out, "MeetingHostId", meeting.meeting_host_id());
    put(&mut out, "ExternalMeetingId", meeting.external_meeting_id());
    put(&mut out, "MediaRegion", meeting.media_region());
    put(&mut out, "PrimaryMeetingId", meeting.primary_meeting_id());
    put(&mut out, "MeetingArn", meeting.meeting_arn());
    if let Some(placement) = meeting.media_placement() {
        let mut urls = Map::new();
        put(&mut urls, "AudioHostUrl", placement.audio_host_url());
        put(
            &mut urls,
            "AudioFallbackUrl",
            placement.audio_fallback_url(),
        );
        put(&mut urls, "SignalingUrl", placement.signaling_url());
        put(&mut urls, "TurnControlUrl", placement.turn_control_url());
        put(&mut urls, "ScreenDataUrl", placement.screen_data_url());
        put(
            &mut urls,
            "ScreenViewingUrl",
            placement.screen_viewing_url(),
        );
        put(
            &mut urls,
            "ScreenSharingUrl",
            placement.screen_sharing_url(),
        );
        put(
            &mut urls,
            "EventIngestionUrl",
            placement.event_ingestion_url(),
        );
        out.insert("MediaPlacement".to_owned(), Value::Object(urls));
    }
    Value::Object(out)
}

/// The attendee as the API's JSON (`Attendee`); its JoinToken goes to this participant only.
fn attendee_json(attendee: &Attendee) -> Value {
    let mut out = Map::new();
    put(&mut out, "AttendeeId", attendee.attendee_id());
    put(&mut out, "ExternalUserId", attendee.external_user_id());
    put(&mut out, "JoinToken", attendee.join_token());
    Value::Object(out)
}

impl MediaService for ChimeMedia {
    fn backend(&self) -> MediaBackend {
        MediaBackend::Chime
    }

    fn join<'a>(
        &'a self,
        visit_id: &'a str,
        participant_id: &'a str,
    ) -> BoxFuture<'a, Result<Joined, MediaError>> {
        Box::pin(async move {
            // The visit id is the ClientRequestToken: every participant's start (and any
            // retry) gets the same meeting instead of a new one.
            let meeting = self
                .client
                .create_meeting()
                .client_request_token(visit_id)
                .external_meeting_id(visit_id)
                .media_region(&self.media_region)
                .send()
                .await
                .map_err(|err| MediaError::Unavailable(describe("chime:CreateMeeting", &err)))?
                .meeting
                .ok_or_else(|| MediaError::Unavailable("chime:CreateMeeting: no meeting".into()))?;
            let meeting_id = meeting
                .meeting_id()
                .ok_or_else(|| MediaError::Unavailable("chime:CreateMeeting: no MeetingId".into()))?
                .to_owned();
            let attendee = self
                .client
                .create_attendee()
                .meeting_id(&meeting_id)
                .external_user_id(participant_id)
                .send()
                .await
                .map_err(|err| MediaError::Unavailable(describe("chime:CreateAttendee", &err)))?
                .attendee
                .ok_or_else(|| {
                    MediaError::Unavailable("chime:CreateAttendee: no attendee".into())
                })?;
            Ok(Joined {
                media: Media::Chime {
                    signaling_url: self.signaling_url.clone(),
                    meeting: meeting_json(&meeting),
                    attendee: attendee_json(&attendee),
                },
                session_id: Some(meeting_id),
            })
        })
    }

    fn close<'a>(&'a self, session_id: &'a str) -> BoxFuture<'a, Result<(), MediaError>> {
        Box::pin(async move {
            let done = self
                .client
                .delete_meeting()
                .meeting_id(session_id)
                .send()
                .await;
            deleted(done, "chime:DeleteMeeting", |e| e.is_not_found_exception())
        })
    }

    fn remove<'a>(
        &'a self,
        session_id: &'a str,
        participant_id: &'a str,
    ) -> BoxFuture<'a, Result<(), MediaError>> {
        Box::pin(async move {
            // ExternalUserId is CreateAttendee's idempotency token: the call answers the
            // participant's attendee (the one its JoinToken belongs to) without a listing.
            let attendee = match self
                .client
                .create_attendee()
                .meeting_id(session_id)
                .external_user_id(participant_id)
                .send()
                .await
            {
                Ok(output) => output.attendee,
                // The meeting is gone, and its attendees with it.
                Err(err)
                    if err
                        .as_service_error()
                        .is_some_and(|e| e.is_not_found_exception()) =>
                {
                    return Ok(());
                }
                Err(err) => {
                    return Err(MediaError::Unavailable(describe(
                        "chime:CreateAttendee",
                        &err,
                    )));
                }
            };
            let attendee_id = attendee
                .as_ref()
                .and_then(Attendee::attendee_id)
                .ok_or_else(|| {
                    MediaError::Unavailable("chime:CreateAttendee: no AttendeeId".into())
                })?;
            let done = self
                .client
                .delete_attendee()
                .meeting_id(session_id)
                .attendee_id(attendee_id)
                .send()
                .await;
            deleted(done, "chime:DeleteAttendee", |e| e.is_not_found_exception())
        })
    }
}

/// What a delete came to: done — also when Chime says the target is already gone (Chime ends
/// idle meetings itself, and a gone meeting takes its attendees with it) — or unavailable.
fn deleted<O, E, R>(
    result: Result<O, SdkError<E, R>>,
    operation: &str,
    not_found: impl Fn(&E) -> bool,
) -> Result<(), MediaError>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match result {
        Ok(_) => Ok(()),
        Err(err) if err.as_service_error().is_some_and(&not_found) => Ok(()),
        Err(err) => Err(MediaError::Unavailable(describe(operation, &err))),
    }
}
