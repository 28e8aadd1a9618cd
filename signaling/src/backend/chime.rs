//! Amazon Chime SDK as a room's backend. The meeting carries the media, so there is no media
//! session here: a seat counts as connected once seated, an admission hands the patient its
//! attendee with the `JoinToken` its start answer left out (fetched again with the idempotent
//! `MediaService::join`), and a participant taken out for good — removed, left, or whose
//! seat expired — has its attendee deleted so its `JoinToken` stops working
//! (`media.attendee_removed`). Each command answers at once the events the SFU would have
//! sent later.

use std::sync::Arc;

use api::App;
use api::config::MediaBackend;
use api::visit::{Via, media};
use sfu::core::{LeaveReason, ParticipantId};
use tokio_util::task::TaskTracker;

use super::{BackendError, MediaCommand, MediaEvent};
use crate::protocol::LeftReason;
use crate::wire::{actor, wire_id};

/// The Chime meeting of one visit.
#[derive(Clone)]
pub struct ChimeRoom {
    app: Arc<App>,
    tenant: String,
    visit: String,
    /// Where the background attendee and meeting calls run, so shutdown waits for them.
    tasks: TaskTracker,
}

impl std::fmt::Debug for ChimeRoom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChimeRoom")
            .field("visit", &self.visit)
            .finish_non_exhaustive()
    }
}

impl ChimeRoom {
    /// The meeting of `visit` of `tenant`; background calls run on `tasks`.
    pub fn new(app: Arc<App>, tenant: String, visit: String, tasks: TaskTracker) -> Self {
        Self {
            app,
            tenant,
            visit,
            tasks,
        }
    }

    /// `participant`'s attendee with its `JoinToken` (for an admitted patient coming back).
    pub async fn attendee(
        &self,
        participant: ParticipantId,
    ) -> Result<Box<serde_json::Value>, BackendError> {
        media::chime_attendee(&self.app, &self.visit, &wire_id(participant))
            .await
            .map(Box::new)
            .map_err(BackendError::Unreachable)
    }

    /// Carries out a room command; the events it stands for.
    pub async fn execute(&self, command: MediaCommand) -> Result<Vec<MediaEvent>, BackendError> {
        Ok(match command {
            MediaCommand::Join { participant, .. } => vec![MediaEvent::Connected { participant }],
            MediaCommand::Admit { participant } => {
                let attendee = self.attendee(participant).await?;
                vec![MediaEvent::Admitted {
                    participant,
                    attendee: Some(attendee),
                }]
            }
            MediaCommand::Leave {
                participant,
                reason,
                by,
            } => {
                // The end of the visit deletes the whole meeting instead.
                if matches!(reason, LeftReason::Left | LeftReason::Dropped) {
                    self.remove_attendee(participant, by, reason);
                }
                vec![MediaEvent::Left {
                    participant,
                    reason: LeaveReason::Left,
                }]
            }
            MediaCommand::Remove { participant, by } => {
                self.remove_attendee(participant, by, LeftReason::Removed);
                vec![MediaEvent::Left {
                    participant,
                    reason: LeaveReason::Removed,
                }]
            }
            // The attendee stays: the same participant is seated again.
            MediaCommand::Replace { participant } => vec![MediaEvent::Left {
                participant,
                reason: LeaveReason::Left,
            }],
        })
    }

    /// Deletes `participant`'s attendee in the background (the seat is gone whatever Chime
    /// answers), audited with actor `by`.
    fn remove_attendee(&self, participant: ParticipantId, by: ParticipantId, reason: LeftReason) {
        let (app, tenant, visit) = (
            Arc::clone(&self.app),
            self.tenant.clone(),
            self.visit.clone(),
        );
        self.tasks.spawn(async move {
            media::remove_attendee(
                &app,
                &tenant,
                &visit,
                &wire_id(participant),
                &actor(by),
                reason.as_str(),
            )
            .await;
        });
    }

    /// Deletes the meeting of a visit `by` ended over signaling, in the background, as
    /// `POST /api/visits/{id}/end` does for one ended over REST (`media.closed`).
    pub fn close_meeting(&self, by: ParticipantId) {
        let (app, tenant, visit) = (
            Arc::clone(&self.app),
            self.tenant.clone(),
            self.visit.clone(),
        );
        self.tasks.spawn(async move {
            let closed = media::close_session(
                &app,
                &tenant,
                &visit,
                MediaBackend::Chime,
                &actor(by),
                Via::Signaling,
            )
            .await;
            if let Err(error) = closed {
                tracing::error!(%error, "writing a signaling audit row failed");
            }
        });
    }
}
