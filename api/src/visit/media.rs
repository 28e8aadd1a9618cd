//! A visit's media backend: where its room is placed, seating a participant in the backend,
//! the Chime attendee handed over on admission, taking a participant out of the backend, and
//! closing the backend's session when the visit closes — each with its audit row.

use serde_json::json;

use crate::App;
use crate::audit::{Actor, NewEntry, Outcome};
use crate::config::MediaBackend;
use crate::media::{Joined, Media, MediaError};
use crate::model::ParticipantRole;
use crate::store::{self, Db, DbError, visits::VisitRow};

use super::participants::Seat;
use super::{Via, VisitError};

/// The backend a stored visit uses.
pub fn backend_of(visit: &VisitRow) -> MediaBackend {
    if visit.media_backend == MediaBackend::Chime.as_str() {
        MediaBackend::Chime
    } else {
        MediaBackend::Sfu
    }
}

fn unavailable(MediaError::Unavailable(why): MediaError) -> VisitError {
    VisitError::Unavailable(why)
}

/// Seats the participant in the visit's media backend and names the node its room is placed
/// on. Called before anything is committed, so a backend that is down leaves the link
/// unconsumed.
pub async fn join(app: &App, seat: &Seat<'_>) -> Result<Joined, VisitError> {
    let backend = backend_of(seat.visit);
    let mut joined = async {
        app.media(backend)?
            .join(&seat.visit.id, &seat.participant_id)
            .await
    }
    .await
    .map_err(unavailable);
    if let Ok(Joined {
        media: Media::Sfu { signaling_url, .. } | Media::Chime { signaling_url, .. },
        ..
    }) = &mut joined
    {
        // The room (a Chime visit's too: its waiting room) lives on one node; every
        // participant is sent there.
        *signaling_url = app
            .cluster
            .place(
                &app.store,
                &app.metrics,
                &seat.visit.tenant_id,
                &seat.visit.id,
            )
            .await?;
    }
    if let Ok(joined) = &mut joined
        && seat.visit.waiting_room
        && seat.role == ParticipantRole::Patient
    {
        // This start, rejoin or refresh must not let the patient into the Chime meeting
        // before it is admitted: the room's node hands the JoinToken over on admission.
        joined.media.withhold_join_token();
    }
    app.metrics
        .media_joins
        .with_label_values(&[
            backend.as_str(),
            if joined.is_ok() { "ok" } else { "unavailable" },
        ])
        .inc();
    joined
}

/// Records the backend session of a visit inside `tx`, when the backend has one.
pub async fn record_session(tx: &mut Db, visit: &VisitRow, joined: &Joined) -> Result<(), DbError> {
    if let Some(session) = &joined.session_id {
        store::visits::set_media_session(tx, &visit.tenant_id, &visit.id, session).await?;
    }
    Ok(())
}

/// [`join`], recording the session in a transaction of its own (rejoins and refreshes,
/// which commit nothing else).
pub async fn join_alone(app: &App, seat: &Seat<'_>) -> Result<Joined, VisitError> {
    let joined = join(app, seat).await?;
    if joined.session_id.is_some() {
        let mut tx = app.store.begin().await?;
        record_session(&mut tx, seat.visit, &joined).await?;
        tx.commit().await?;
    }
    Ok(joined)
}

/// `participant`'s Chime attendee with its `JoinToken`, from the idempotent
/// [`MediaService::join`](crate::media::MediaService::join) (the meeting and attendee its
/// start created), for signaling to hand over on admission. `Err` says why, for the log.
pub async fn chime_attendee(
    app: &App,
    visit: &str,
    participant: &str,
) -> Result<serde_json::Value, String> {
    let media = app
        .media(MediaBackend::Chime)
        .map_err(|error| error.to_string())?;
    match media.join(visit, participant).await {
        Ok(Joined {
            media: Media::Chime { attendee, .. },
            ..
        }) if attendee
            .get("JoinToken")
            .is_some_and(serde_json::Value::is_string) =>
        {
            Ok(attendee)
        }
        Ok(_) => Err("chime:CreateAttendee: no JoinToken".to_owned()),
        Err(error) => Err(error.to_string()),
    }
}

/// The session the visit's backend recorded, if any (a failed read is logged: there is then
/// nothing the caller can close).
async fn session(app: &App, tenant: &str, visit: &str) -> Option<String> {
    let read = async {
        let mut db = app.store.read().await?;
        store::visits::media_session(&mut db, tenant, visit).await
    };
    read.await.unwrap_or_else(|error| {
        tracing::error!(%error, "reading a visit's media session failed");
        None
    })
}

/// `entry` as is when the backend call succeeded; as a failure with the backend's reason
/// (and a warning saying `failed`) when not.
fn outcome(entry: NewEntry, result: Result<(), MediaError>, failed: &str) -> NewEntry {
    match result {
        Ok(()) => entry,
        Err(error) => {
            let why = error.to_string();
            tracing::warn!(error = %why, "{failed}");
            NewEntry {
                outcome: Outcome::Failure,
                reason: Some(why),
                ..entry
            }
        }
    }
}

/// Takes `participant` out of the Chime meeting of a visit it left for good (`reason`:
/// removed, left, dropped), so that its JoinToken stops working, and audits
/// `media.attendee_removed` (actor `by`; a failure too, with outcome `failure`). The seat is
/// gone whatever Chime answers, so nothing is returned; a failed audit write is logged.
pub async fn remove_attendee(
    app: &App,
    tenant: &str,
    visit: &str,
    participant: &str,
    by: &Actor,
    reason: &str,
) {
    let Some(session) = session(app, tenant, visit).await else {
        return;
    };
    let removed = match app.media(MediaBackend::Chime) {
        Ok(media) => media.remove(&session, participant).await,
        Err(error) => Err(error),
    };
    let entry =
        NewEntry::success(tenant, by, "media.attendee_removed", Some(visit)).with_details(json!({
            "backend": "chime",
            "participant_id": participant,
            "reason": reason,
            "via": "signaling",
        }));
    let entry = outcome(entry, removed, "deleting a Chime attendee failed");
    if let Err(error) = app.audit_alone(entry).await {
        tracing::error!(%error, "writing a media audit row failed");
    }
}

/// Closes the backend session of a closed visit (DeleteMeeting for Chime; the SFU has none:
/// signaling disconnects its room on the visit event) and audits `media.closed` with actor
/// `by`. The visit is already over whatever happens here, so a backend failure is audited
/// (outcome `failure`) and logged rather than returned; Chime also ends a meeting by itself
/// once everyone has left. `Err` only when the audit row could not be written.
pub async fn close_session(
    app: &App,
    tenant: &str,
    visit: &str,
    backend: MediaBackend,
    by: &Actor,
    via: Via,
) -> Result<(), DbError> {
    if backend != MediaBackend::Chime {
        return Ok(());
    }
    let Some(session) = session(app, tenant, visit).await else {
        return Ok(());
    };
    let closed = match app.media(backend) {
        Ok(media) => media.close(&session).await,
        Err(error) => Err(error),
    };
    let entry = NewEntry::success(tenant, by, "media.closed", Some(visit))
        .with_details(via.mark(json!({"backend": backend.as_str()})));
    let entry = outcome(entry, closed, "closing the visit's media session failed");
    app.audit_alone(entry).await
}
