//! A seated participant's requests: its own SDP and mutes passed to the backend, and the
//! room acts — admit, remove (stored for good first), leave, end the visit.

use std::sync::Arc;

use api::visit::lifecycle::{self, Closing};
use api::visit::{self, Via, VisitError};
use sfu::core::{ParticipantId, RoomId};
use str0m::change::{SdpAnswer, SdpOffer};

use super::{Hub, invalid_sdp, stale, target};
use crate::backend::{Backend, BackendError, Relay};
use crate::protocol::{ErrorCode, ServerMessage};
use crate::room::{ConnId, Room, not_in_visit};
use crate::session::{Identity, Request};
use crate::wire::{actor, parse_track, uuid_id, wire_id};

impl Hub {
    /// Carries out a seated participant's request. `Err` is the error frame to send back.
    pub async fn request(
        self: &Arc<Self>,
        conn_id: ConnId,
        identity: &Identity,
        request: Request,
    ) -> Result<(), ServerMessage> {
        let me = uuid_id(&identity.participant)
            .map(ParticipantId)
            .ok_or_else(stale)?;
        let (room_id, backend) = {
            let state = self.state();
            let room_id = state.index.get(&me).copied().ok_or_else(stale)?;
            let entry = state
                .rooms
                .get(&room_id)
                .filter(|entry| entry.room.holds(me, conn_id))
                .ok_or_else(stale)?;
            (room_id, entry.backend.clone())
        };
        match request {
            Request::Offer { sdp } => {
                self.relay(&backend, || {
                    let offer = SdpOffer::from_sdp_string(&sdp).map_err(invalid_sdp)?;
                    Ok(Relay::Offer {
                        participant: me,
                        offer,
                    })
                })
                .await
            }
            Request::Answer { sdp } => {
                self.relay(&backend, || {
                    let answer = SdpAnswer::from_sdp_string(&sdp).map_err(invalid_sdp)?;
                    if let Some(entry) = self.state().rooms.get_mut(&room_id) {
                        entry.room.answered(me);
                    }
                    Ok(Relay::Answer {
                        participant: me,
                        answer,
                    })
                })
                .await
            }
            Request::Mute { track, muted } => {
                self.relay(&backend, || {
                    let track = parse_track(&track)
                        .filter(|t| t.participant == me)
                        .ok_or_else(|| {
                            ServerMessage::error(ErrorCode::UnknownTrack, "not one of your tracks")
                        })?;
                    Ok(Relay::Mute { track, muted })
                })
                .await
            }
            Request::VideoSize {
                track,
                width,
                height,
            } => {
                self.relay(&backend, || {
                    let track = parse_track(&track)
                        .filter(|t| t.participant != me)
                        .ok_or_else(|| {
                            ServerMessage::error(ErrorCode::UnknownTrack, "not a track you receive")
                        })?;
                    Ok(Relay::VideoSize {
                        subscriber: me,
                        track,
                        width,
                        height,
                    })
                })
                .await
            }
            Request::Admit { participant } => {
                let target = target(&participant)?;
                self.act(room_id, &[target], |room| room.admit(me, target))
                    .await
            }
            Request::Remove { participant } => {
                let target = target(&participant)?;
                self.persist_removal(room_id, me, target).await?;
                self.act(room_id, &[target], |room| room.remove(me, target))
                    .await
            }
            Request::Leave => {
                self.act(room_id, &[me], |room| {
                    room.leave(me);
                    Ok(())
                })
                .await
            }
            Request::EndVisit => {
                let (tenant, visit) = {
                    let state = self.state();
                    let entry = state.rooms.get(&room_id).ok_or_else(stale)?;
                    (
                        entry.room.tenant().to_owned(),
                        entry.room.visit().to_owned(),
                    )
                };
                self.close_visit(&tenant, &visit, me).await?;
                if let Backend::Chime(chime) = &backend {
                    chime.close_meeting(me);
                }
                Ok(())
            }
        }
    }

    /// Passes a participant's own media request to a backend that takes SDP; `build` makes
    /// it (or refuses it) only then, so that a Chime visit refuses every such request alike.
    async fn relay(
        &self,
        backend: &Backend,
        build: impl FnOnce() -> Result<Relay, ServerMessage>,
    ) -> Result<(), ServerMessage> {
        if !backend.takes_sdp() {
            return Err(BackendError::NotSupported("no SDP or track mutes here").frame());
        }
        backend.relay(build()?).await.map_err(|error| error.frame())
    }

    /// Applies `input` to room `room_id` and carries out what it asks; the error frame of
    /// the input or of the media command it led to.
    async fn act(
        &self,
        room_id: RoomId,
        touched: &[ParticipantId],
        input: impl FnOnce(&mut Room) -> Result<(), ServerMessage>,
    ) -> Result<(), ServerMessage> {
        let pending = {
            let mut state = self.state();
            let entry = state.rooms.get_mut(&room_id).ok_or_else(stale)?;
            input(&mut entry.room)?;
            self.flush(&mut state, room_id, touched)
        };
        self.execute(room_id, pending)
            .await
            .map_err(|error| error.frame())
    }

    /// Stores and audits that `me` removed `target` from the visit of room `room_id` for
    /// good, before the room lets it go: the removal then holds wherever and whenever its
    /// grant comes back. A target not seated here is refused without writing anything.
    async fn persist_removal(
        &self,
        room_id: RoomId,
        me: ParticipantId,
        target: ParticipantId,
    ) -> Result<(), ServerMessage> {
        let (tenant, visit) = {
            let state = self.state();
            let entry = state.rooms.get(&room_id).ok_or_else(not_in_visit)?;
            entry.room.check_removable(target)?;
            (
                entry.room.tenant().to_owned(),
                entry.room.visit().to_owned(),
            )
        };
        visit::participants::remove_for_good(
            &self.app,
            &tenant,
            &visit,
            &wire_id(target),
            &actor(me),
        )
        .await
        .map_err(|error| {
            tracing::error!(%error, "recording a removal failed");
            ServerMessage::error(
                ErrorCode::MediaUnavailable,
                "the removal could not be recorded; try again",
            )
        })
    }

    /// Ends `visit` through the visit domain, as `POST /api/visits/{id}/end` does; its
    /// visit event then disconnects everyone, here and on any other node.
    async fn close_visit(
        &self,
        tenant: &str,
        visit: &str,
        by: ParticipantId,
    ) -> Result<(), ServerMessage> {
        let closed = lifecycle::close(
            &self.app,
            tenant,
            visit,
            &actor(by),
            Closing::End,
            Via::Signaling,
        )
        .await;
        match closed {
            Ok(()) => Ok(()),
            Err(VisitError::Conflict(_)) => Err(ServerMessage::error(
                ErrorCode::VisitUnavailable,
                "the visit is already over",
            )),
            Err(error) => {
                tracing::error!(%error, "ending a visit from signaling failed");
                Err(ServerMessage::error(
                    ErrorCode::MediaUnavailable,
                    "the visit could not be ended; try again",
                ))
            }
        }
    }
}
