//! One visit's room as a pure state machine: its seats, the waiting room, admission, removal,
//! leaving, replaced and resumed sockets, expired seats, the end of the visit and the
//! server's shutdown — every room rule, in one place, with no sockets, tasks, database or
//! clock (time comes in as an argument), so each rule is unit-tested directly.
//!
//! # Contract
//!
//! A [`Room`] is driven by the hub (`crate::hub`), which owns the sockets, the media backend
//! and the visit domain. The methods fall into four groups:
//!
//! - **Getters** say what the room holds: [`Room::tenant`], [`Room::visit`],
//!   [`Room::is_empty`], [`Room::is_seated`], [`Room::holds`], [`Room::was_admitted`].
//! - **Inputs from participants** (`join`, `resume`, `admit`, `remove`, `leave`, `answered`)
//!   apply a request of a socket; each either refuses with an error frame and changes
//!   nothing, or changes the room and queues outputs.
//! - **Inputs from the outside world**: [`Room::socket_lost`] and [`Room::detach`] from the
//!   sockets, [`Room::seat_expired`] from the resume timer, [`Room::on_media`],
//!   [`Room::media_joined`], [`Room::join_failed`] and [`Room::admit_failed`] from the media
//!   backend, [`Room::end`] when the visit closes, [`Room::shutdown`] when the server stops.
//! - **Outputs**: after every input, drain [`Room::poll_output`] until it answers `None` and
//!   carry out each [`Output`] in order — frames and closes first-come first-served on their
//!   sockets, media commands on the room's backend (feeding their results back as inputs),
//!   audit rows and status changes through the visit domain.
//!
//! The media backend is behind [`MediaCommand`] and [`MediaEvent`] (`crate::backend`): the
//! room never knows
//! whether its media runs on the SFU or on Amazon Chime. A backend that has no media session
//! of its own (Chime) answers a command with the events the SFU would have sent (`Connected`
//! once seated, `Left` once taken out, `Admitted` with the attendee).

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use sfu::core::{LeaveReason, ParticipantId, TrackId};
use str0m::change::SdpOffer;

pub use crate::backend::{MediaCommand, MediaEvent};
use crate::protocol::{
    CloseCode, ErrorCode, LeftReason, PROTOCOL_VERSION, ParticipantInfo, PauseReason, Role,
    ServerMessage, TrackKind,
};
use crate::wire::{wire_id, wire_track};

/// The hub's id of one socket.
pub type ConnId = u64;

/// How long a client told of a shutdown should wait before joining again.
const SHUTDOWN_RETRY_AFTER_MS: u64 = 3_000;

/// A refused `join` or `resume`: the frame to send and the close code that follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The error frame.
    pub frame: ServerMessage,
    /// The close code.
    pub close: CloseCode,
}

impl Refusal {
    /// A refusal with an error frame of `code` and `message`, then `close`.
    pub fn new(code: ErrorCode, message: impl Into<String>, close: CloseCode) -> Self {
        Self {
            frame: ServerMessage::error(code, message),
            close,
        }
    }
}

/// An act of the room that the audit chain records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Act {
    /// `participant.joined`.
    Joined {
        /// Who.
        participant: ParticipantId,
        /// As what.
        role: Role,
    },
    /// `participant.waiting`.
    Waiting {
        /// Who.
        participant: ParticipantId,
        /// As what.
        role: Role,
    },
    /// `participant.resumed`.
    Resumed {
        /// Who.
        participant: ParticipantId,
    },
    /// `participant.admitted`.
    Admitted {
        /// The clinician.
        by: ParticipantId,
        /// Who was admitted.
        participant: ParticipantId,
    },
    /// `participant.left` (a removal is audited by the visit domain when it is stored).
    Left {
        /// Who.
        participant: ParticipantId,
        /// Why: a [`LeftReason`] or `replaced`.
        reason: &'static str,
    },
}

/// Something the hub must do for the room, in order.
#[derive(Debug)]
pub enum Output {
    /// Queue `message` on socket `conn`.
    Send {
        /// The socket.
        conn: ConnId,
        /// The frame.
        message: ServerMessage,
    },
    /// Close socket `conn` with `code`, after what was queued on it.
    Close {
        /// The socket.
        conn: ConnId,
        /// The close code.
        code: CloseCode,
    },
    /// Ask the media backend.
    Media(MediaCommand),
    /// Write an audit row.
    Audit(Act),
    /// A clinician and a patient are in the call for the first time: the visit is in
    /// progress.
    InProgress,
    /// A participant's first media arrived `after` its join (for the metrics).
    FirstMedia {
        /// Time since its join.
        after: Duration,
    },
}

/// A socket asking for a seat.
#[derive(Debug)]
pub struct Joining {
    /// Role in the visit (from its grant).
    pub role: Role,
    /// Display name (from its grant).
    pub name: String,
    /// Its socket.
    pub conn: ConnId,
    /// The resume token the seat gets.
    pub session: String,
    /// The client's initial offer.
    pub offer: Option<SdpOffer>,
    /// Whether a patient admitted earlier may skip the waiting room now (Chime: only when its
    /// attendee could be fetched for it).
    pub readmit: bool,
    /// Chime: the attendee with its `JoinToken` for a patient let in at once.
    pub attendee: Option<Box<serde_json::Value>>,
}

#[derive(Debug)]
struct Seat {
    role: Role,
    name: String,
    waiting: bool,
    connected: bool,
    conn: Option<ConnId>,
    session: String,
    /// The server's offer not yet answered, resent on resume.
    pending_offer: Option<String>,
    joined_at: Instant,
    /// Set while no socket is attached: the generation that the expiry timer checks.
    dropped: Option<u64>,
    /// Why it will leave, once it does.
    leave_reason: LeftReason,
    /// Whether the media backend has seated it yet; until then an admission waits.
    in_media: bool,
    /// Who asked to admit it, until its media says it is admitted.
    admit_by: Option<ParticipantId>,
    /// Chime: the attendee handed over signaling, sent again on resume.
    attendee: Option<Box<serde_json::Value>>,
}

impl Seat {
    /// The socket that takes this seat's frames: none once it was told the visit ended,
    /// after which only its close follows (the media leaving behind it is not its concern).
    fn listening(&self) -> Option<ConnId> {
        self.conn
            .filter(|_| self.leave_reason != LeftReason::VisitEnded)
    }
}

/// One visit's room. See the [module documentation](self).
#[derive(Debug)]
pub struct Room {
    tenant: String,
    visit: String,
    waiting_room: bool,
    /// Seats allowed, when the media backend does not count them itself.
    max_seats: Option<usize>,
    seats: HashMap<ParticipantId, Seat>,
    /// Admitted once: a rejoin after a reload does not wait again.
    admitted: HashSet<ParticipantId>,
    /// Removed by the clinician while this room existed (the visit domain stores removals
    /// for good; this closes the race with a join that read the database before).
    removed: HashSet<ParticipantId>,
    kinds: HashMap<TrackId, TrackKind>,
    in_progress: bool,
    /// Participants replaced by a new join: the old session's events, up to and including
    /// its `Left`, are dropped (counted, one per replacement).
    replaced: HashMap<ParticipantId, u32>,
    generation: u64,
    out: VecDeque<Output>,
}

/// The error frame for a participant who is not in the visit.
pub fn not_in_visit() -> ServerMessage {
    ServerMessage::error(ErrorCode::UnknownParticipant, "not in this visit")
}

fn not_waiting() -> ServerMessage {
    ServerMessage::error(ErrorCode::NotWaiting, "that participant is not waiting")
}

impl Room {
    /// The room of `visit` of `tenant`; `waiting_room` holds patients until admitted,
    /// `in_progress` says the call already ran, `max_seats` caps the seats when the media
    /// backend does not.
    pub fn new(
        tenant: String,
        visit: String,
        waiting_room: bool,
        in_progress: bool,
        max_seats: Option<usize>,
    ) -> Self {
        Self {
            tenant,
            visit,
            waiting_room,
            max_seats,
            seats: HashMap::new(),
            admitted: HashSet::new(),
            removed: HashSet::new(),
            kinds: HashMap::new(),
            in_progress,
            replaced: HashMap::new(),
            generation: 0,
            out: VecDeque::new(),
        }
    }

    /// The visit's tenant.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// The visit.
    pub fn visit(&self) -> &str {
        &self.visit
    }

    /// Whether no seat is left (the hub then forgets the room).
    pub fn is_empty(&self) -> bool {
        self.seats.is_empty()
    }

    /// Whether `participant` has a seat.
    pub fn is_seated(&self, participant: ParticipantId) -> bool {
        self.seats.contains_key(&participant)
    }

    /// Whether socket `conn` holds `participant`'s seat.
    pub fn holds(&self, participant: ParticipantId, conn: ConnId) -> bool {
        self.seats
            .get(&participant)
            .is_some_and(|seat| seat.conn == Some(conn))
    }

    /// Whether `participant` was admitted in this room and not removed since.
    pub fn was_admitted(&self, participant: ParticipantId) -> bool {
        self.admitted.contains(&participant) && !self.removed.contains(&participant)
    }

    /// The next thing to do, in order; `None` once everything queued was handed out.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    fn send(&mut self, participant: ParticipantId, message: ServerMessage) {
        if let Some(conn) = self.seats.get(&participant).and_then(Seat::listening) {
            self.out.push_back(Output::Send { conn, message });
        }
    }

    fn broadcast(&mut self, except: Option<ParticipantId>, message: &ServerMessage) {
        let conns: Vec<ConnId> = self
            .seats
            .iter()
            .filter(|(id, _)| Some(**id) != except)
            .filter_map(|(_, seat)| seat.listening())
            .collect();
        for conn in conns {
            self.out.push_back(Output::Send {
                conn,
                message: message.clone(),
            });
        }
    }

    fn close(&mut self, participant: ParticipantId, code: CloseCode) {
        if let Some(conn) = self
            .seats
            .get_mut(&participant)
            .and_then(|seat| seat.conn.take())
        {
            self.out.push_back(Output::Close { conn, code });
        }
    }

    fn roster(&self, except: ParticipantId) -> Vec<ParticipantInfo> {
        self.seats
            .iter()
            .filter(|(id, _)| **id != except)
            .map(|(id, seat)| ParticipantInfo {
                participant: wire_id(*id),
                name: seat.name.clone(),
                role: seat.role,
                waiting: seat.waiting,
            })
            .collect()
    }

    /// Seats `participant` with socket `joining.conn` at `now`: a seat it already had (a
    /// reload, a second tab) is replaced, its socket closed with 4409; the newcomer gets
    /// `joined` with the roster, the others learn of it once, and its media session is
    /// asked for. A patient waits when the visit has a waiting room and it was not admitted
    /// before. Answers whether it waits; refused for a participant removed while the room
    /// existed or a full room.
    pub fn join(
        &mut self,
        now: Instant,
        participant: ParticipantId,
        joining: Joining,
    ) -> Result<bool, Refusal> {
        if self.removed.contains(&participant) {
            return Err(Refusal::new(
                ErrorCode::Forbidden,
                "the clinician removed you from this visit",
                CloseCode::Removed,
            ));
        }
        if self.seats.contains_key(&participant) {
            self.close(participant, CloseCode::Replaced);
            self.seats.remove(&participant);
            *self.replaced.entry(participant).or_default() += 1;
            self.out
                .push_back(Output::Media(MediaCommand::Replace { participant }));
            self.out.push_back(Output::Audit(Act::Left {
                participant,
                reason: "replaced",
            }));
        }
        if let Some(max) = self.max_seats
            && self.seats.len() >= max
        {
            return Err(Refusal::new(
                ErrorCode::RoomFull,
                format!("a visit has at most {max} participants"),
                CloseCode::Unavailable,
            ));
        }
        let waiting = self.waiting_room
            && joining.role == Role::Patient
            && !(self.admitted.contains(&participant) && joining.readmit);
        let seat = Seat {
            role: joining.role,
            name: joining.name,
            waiting,
            connected: false,
            conn: Some(joining.conn),
            session: joining.session,
            pending_offer: None,
            joined_at: now,
            dropped: None,
            leave_reason: LeftReason::Left,
            in_media: false,
            admit_by: None,
            attendee: if waiting { None } else { joining.attendee },
        };
        let me = wire_id(participant);
        self.out.push_back(Output::Send {
            conn: joining.conn,
            message: ServerMessage::Joined {
                protocol: PROTOCOL_VERSION,
                participant: me.clone(),
                role: seat.role,
                visit: self.visit.clone(),
                session: seat.session.clone(),
                waiting,
                resumed: false,
                participants: self.roster(participant),
                attendee: seat.attendee.clone(),
            },
        });
        // Before the seat is in: every other participant learns of this one exactly once,
        // from its own roster or from this notice.
        let notice = if waiting {
            ServerMessage::ParticipantWaiting {
                participant: me,
                name: seat.name.clone(),
            }
        } else {
            ServerMessage::ParticipantJoined {
                participant: me,
                name: seat.name.clone(),
                role: seat.role,
            }
        };
        self.broadcast(None, &notice);
        let role = seat.role;
        self.seats.insert(participant, seat);
        self.out.push_back(Output::Media(MediaCommand::Join {
            participant,
            offer: joining.offer,
            waiting,
        }));
        self.out
            .push_back(Output::Audit(Act::Joined { participant, role }));
        if waiting {
            self.out
                .push_back(Output::Audit(Act::Waiting { participant, role }));
        }
        Ok(waiting)
    }

    /// The media backend seated `participant`: an admission asked for meanwhile goes ahead.
    pub fn media_joined(&mut self, participant: ParticipantId) {
        if let Some(seat) = self.seats.get_mut(&participant) {
            seat.in_media = true;
            if seat.admit_by.is_some() {
                self.out
                    .push_back(Output::Media(MediaCommand::Admit { participant }));
            }
        }
    }

    /// The media backend refused to seat `participant`: its seat goes, the others are told.
    pub fn join_failed(&mut self, participant: ParticipantId) {
        if self.seats.remove(&participant).is_some() {
            self.broadcast(
                None,
                &ServerMessage::ParticipantLeft {
                    participant: wire_id(participant),
                    reason: LeftReason::Failed,
                },
            );
        }
    }

    /// Reattaches `participant`'s seat to socket `conn` if `session` is its resume token (a
    /// socket still attached is closed with 4409): `joined` again, and an unanswered server
    /// offer resent. The media session is untouched. `false` (nothing changed) without such
    /// a seat.
    pub fn resume(&mut self, participant: ParticipantId, session: &str, conn: ConnId) -> bool {
        if self
            .seats
            .get(&participant)
            .is_none_or(|seat| seat.session != session)
        {
            return false;
        }
        self.close(participant, CloseCode::Replaced);
        let roster = self.roster(participant);
        let Some(seat) = self.seats.get_mut(&participant) else {
            return false;
        };
        seat.conn = Some(conn);
        seat.dropped = None;
        self.out.push_back(Output::Send {
            conn,
            message: ServerMessage::Joined {
                protocol: PROTOCOL_VERSION,
                participant: wire_id(participant),
                role: seat.role,
                visit: self.visit.clone(),
                session: seat.session.clone(),
                waiting: seat.waiting,
                resumed: true,
                participants: roster,
                attendee: seat.attendee.clone(),
            },
        });
        if let Some(sdp) = seat.pending_offer.clone() {
            self.out.push_back(Output::Send {
                conn,
                message: ServerMessage::Offer { sdp },
            });
        }
        self.out
            .push_back(Output::Audit(Act::Resumed { participant }));
        true
    }

    /// Socket `conn` of `participant` ended without `leave`. When it held the seat (or the
    /// seat was already detached from an overflowing socket), the seat now waits for a
    /// resume: answers the generation to hand [`Room::seat_expired`] when the resume window
    /// ends.
    pub fn socket_lost(&mut self, participant: ParticipantId, conn: ConnId) -> Option<u64> {
        let seat = self.seats.get_mut(&participant)?;
        let ours = match seat.conn {
            Some(held) => held == conn,
            None => seat.dropped.is_none(),
        };
        if !ours {
            return None;
        }
        self.generation += 1;
        seat.conn = None;
        seat.dropped = Some(self.generation);
        Some(self.generation)
    }

    /// Socket `conn` could not take more frames: it no longer holds its seat, which stays
    /// for a resume.
    pub fn detach(&mut self, conn: ConnId) {
        if let Some(seat) = self.seats.values_mut().find(|s| s.conn == Some(conn)) {
            seat.conn = None;
        }
    }

    /// The resume window of `participant`'s seat, dropped as `generation`, ended: unless it
    /// resumed meanwhile, it leaves (`dropped`).
    pub fn seat_expired(&mut self, participant: ParticipantId, generation: u64) {
        let Some(seat) = self.seats.get_mut(&participant) else {
            return;
        };
        if seat.dropped != Some(generation) {
            return;
        }
        seat.leave_reason = LeftReason::Dropped;
        self.out.push_back(Output::Media(MediaCommand::Leave {
            participant,
            reason: LeftReason::Dropped,
            by: participant,
        }));
    }

    /// `by` admits the waiting `target` (signaling checked `by` is the clinician); its media
    /// is let in once the backend has seated it.
    pub fn admit(&mut self, by: ParticipantId, target: ParticipantId) -> Result<(), ServerMessage> {
        let seat = self.seats.get_mut(&target).ok_or_else(not_in_visit)?;
        if !seat.waiting || seat.admit_by.is_some() {
            return Err(not_waiting());
        }
        seat.admit_by = Some(by);
        let in_media = seat.in_media;
        self.admitted.insert(target);
        if in_media {
            self.out.push_back(Output::Media(MediaCommand::Admit {
                participant: target,
            }));
        }
        Ok(())
    }

    /// The media backend could not admit `target`: it still waits, and may be admitted again.
    pub fn admit_failed(&mut self, target: ParticipantId) {
        if let Some(seat) = self.seats.get_mut(&target) {
            seat.admit_by = None;
        }
        self.admitted.remove(&target);
    }

    /// Refuses a removal of someone without a seat here, before anything is stored.
    pub fn check_removable(&self, target: ParticipantId) -> Result<(), ServerMessage> {
        if self.seats.contains_key(&target) {
            Ok(())
        } else {
            Err(not_in_visit())
        }
    }

    /// `by` removed `target` for good (the visit domain stored it): it leaves its media and
    /// its seat, and may not come back while the room exists.
    pub fn remove(
        &mut self,
        by: ParticipantId,
        target: ParticipantId,
    ) -> Result<(), ServerMessage> {
        let seat = self.seats.get_mut(&target).ok_or_else(not_in_visit)?;
        seat.leave_reason = LeftReason::Removed;
        self.removed.insert(target);
        self.admitted.remove(&target);
        self.out.push_back(Output::Media(MediaCommand::Remove {
            participant: target,
            by,
        }));
        Ok(())
    }

    /// `participant` sent `leave`: its media session ends, then its seat.
    pub fn leave(&mut self, participant: ParticipantId) {
        if let Some(seat) = self.seats.get_mut(&participant) {
            seat.leave_reason = LeftReason::Left;
        }
        self.out.push_back(Output::Media(MediaCommand::Leave {
            participant,
            reason: LeftReason::Left,
            by: participant,
        }));
    }

    /// `participant` answered the server's offer: nothing to resend on resume.
    pub fn answered(&mut self, participant: ParticipantId) {
        if let Some(seat) = self.seats.get_mut(&participant) {
            seat.pending_offer = None;
        }
    }

    /// The visit ended: everyone is told (`visit_ended`, the last frame it gets) and taken
    /// out of the media session; its socket closes with 4410 once it left.
    pub fn end(&mut self) {
        let participants: Vec<ParticipantId> = self.seats.keys().copied().collect();
        for participant in &participants {
            self.send(*participant, ServerMessage::VisitEnded);
            if let Some(seat) = self.seats.get_mut(participant) {
                seat.leave_reason = LeftReason::VisitEnded;
            }
        }
        for participant in participants {
            self.out.push_back(Output::Media(MediaCommand::Leave {
                participant,
                reason: LeftReason::VisitEnded,
                by: participant,
            }));
        }
    }

    /// The server is shutting down: every seat is told (`server_shutdown`), its socket closes
    /// with 4503 and its departure is audited, at once and without the media backend (the
    /// SFU stops with the server; a Chime meeting goes on, and its participants join again
    /// elsewhere). The room is empty afterwards.
    pub fn shutdown(&mut self) {
        let participants: Vec<ParticipantId> = self.seats.keys().copied().collect();
        for participant in participants {
            self.send(
                participant,
                ServerMessage::ServerShutdown {
                    retry_after_ms: SHUTDOWN_RETRY_AFTER_MS,
                },
            );
            self.close(participant, CloseCode::ShuttingDown);
            self.seats.remove(&participant);
            self.out.push_back(Output::Audit(Act::Left {
                participant,
                reason: LeftReason::ServerShutdown.as_str(),
            }));
        }
    }

    /// Applies what the media backend reports at `now`.
    pub fn on_media(&mut self, now: Instant, event: MediaEvent) {
        if let Some(subject) = event.subject()
            && let Some(pending) = self.replaced.get_mut(&subject)
            && *pending > 0
        {
            if matches!(event, MediaEvent::Left { .. }) {
                *pending -= 1;
                if *pending == 0 {
                    self.replaced.remove(&subject);
                }
            }
            return;
        }
        match event {
            MediaEvent::Answer { participant, sdp } => {
                self.send(participant, ServerMessage::Answer { sdp });
            }
            MediaEvent::Offer { participant, sdp } => {
                if let Some(seat) = self.seats.get_mut(&participant) {
                    seat.pending_offer = Some(sdp.clone());
                }
                self.send(participant, ServerMessage::Offer { sdp });
            }
            MediaEvent::Admitted {
                participant,
                attendee,
            } => self.admitted_in_media(participant, attendee),
            MediaEvent::Connected { participant } => {
                if let Some(seat) = self.seats.get_mut(&participant) {
                    seat.connected = true;
                }
                self.check_running();
            }
            MediaEvent::Disconnected { participant } => {
                if let Some(seat) = self.seats.get_mut(&participant) {
                    seat.connected = false;
                }
            }
            MediaEvent::TrackPublished { track, kind } => {
                self.kinds.insert(track, kind);
                self.send(
                    track.participant,
                    ServerMessage::TrackPublished {
                        track: wire_track(track),
                        participant: wire_id(track.participant),
                        kind,
                        mid: track.mid.to_string(),
                    },
                );
            }
            MediaEvent::TrackRouted {
                subscriber,
                track,
                mid,
            } => {
                if let Some(kind) = self.kinds.get(&track).copied() {
                    self.send(
                        subscriber,
                        ServerMessage::TrackPublished {
                            track: wire_track(track),
                            participant: wire_id(track.participant),
                            kind,
                            mid: mid.to_string(),
                        },
                    );
                }
            }
            MediaEvent::TrackUnpublished { track } => {
                self.kinds.remove(&track);
                self.broadcast(
                    None,
                    &ServerMessage::TrackUnpublished {
                        track: wire_track(track),
                        participant: wire_id(track.participant),
                    },
                );
            }
            MediaEvent::TrackMuted { track, muted } => self.broadcast(
                None,
                &ServerMessage::TrackMuted {
                    track: wire_track(track),
                    participant: wire_id(track.participant),
                    muted,
                },
            ),
            MediaEvent::TrackPaused { subscriber, track } => self.send(
                subscriber,
                ServerMessage::TrackPaused {
                    track: wire_track(track),
                    reason: PauseReason::Bandwidth,
                },
            ),
            MediaEvent::TrackResumed { subscriber, track } => self.send(
                subscriber,
                ServerMessage::TrackResumed {
                    track: wire_track(track),
                },
            ),
            MediaEvent::TrackRefused {
                participant,
                reason,
            } => self.send(
                participant,
                ServerMessage::error(ErrorCode::TooManyTracks, reason),
            ),
            MediaEvent::ConnectionQuality {
                participant,
                quality,
            } => {
                // A waiting participant learns only of itself; the others of everyone,
                // the waiting patient included, so the clinician sees a weak link before
                // admitting.
                let message = ServerMessage::ConnectionQuality {
                    participant: wire_id(participant),
                    quality,
                };
                let conns: Vec<ConnId> = self
                    .seats
                    .iter()
                    .filter(|(id, seat)| !seat.waiting || **id == participant)
                    .filter_map(|(_, seat)| seat.listening())
                    .collect();
                for conn in conns {
                    self.out.push_back(Output::Send {
                        conn,
                        message: message.clone(),
                    });
                }
            }
            MediaEvent::ActiveSpeaker { participant } => {
                // The waiting room hears nobody, so it is not told who speaks.
                let message = ServerMessage::ActiveSpeaker {
                    participant: participant.map(wire_id),
                };
                let conns: Vec<ConnId> = self
                    .seats
                    .values()
                    .filter(|seat| !seat.waiting)
                    .filter_map(Seat::listening)
                    .collect();
                for conn in conns {
                    self.out.push_back(Output::Send {
                        conn,
                        message: message.clone(),
                    });
                }
            }
            MediaEvent::FirstMedia { participant } => {
                if let Some(seat) = self.seats.get(&participant) {
                    let after = now.saturating_duration_since(seat.joined_at);
                    self.out.push_back(Output::FirstMedia { after });
                }
            }
            MediaEvent::Left {
                participant,
                reason,
            } => self.depart(participant, reason),
        }
    }

    fn admitted_in_media(
        &mut self,
        participant: ParticipantId,
        attendee: Option<Box<serde_json::Value>>,
    ) {
        let by = self.seats.get_mut(&participant).and_then(|seat| {
            seat.waiting = false;
            if attendee.is_some() {
                seat.attendee.clone_from(&attendee);
            }
            seat.admit_by.take()
        });
        let wire = wire_id(participant);
        self.send(
            participant,
            ServerMessage::ParticipantAdmitted {
                participant: wire.clone(),
                attendee,
            },
        );
        self.broadcast(
            Some(participant),
            &ServerMessage::ParticipantAdmitted {
                participant: wire,
                attendee: None,
            },
        );
        if let Some(by) = by {
            self.out
                .push_back(Output::Audit(Act::Admitted { by, participant }));
        }
        self.check_running();
    }

    /// The first time a clinician and a patient are both admitted with media connected.
    fn check_running(&mut self) {
        let live = |role| {
            self.seats
                .values()
                .any(|s| s.role == role && !s.waiting && s.connected)
        };
        if !self.in_progress && live(Role::Clinician) && live(Role::Patient) {
            self.in_progress = true;
            self.out.push_back(Output::InProgress);
        }
    }

    /// Takes `participant`'s seat out once its media left: closes its socket with the code
    /// for the reason, tells the others and audits (a removal was audited when stored).
    fn depart(&mut self, participant: ParticipantId, reason: LeaveReason) {
        let seat_reason = self.seats.get(&participant).map(|s| s.leave_reason);
        let reason = match (reason, seat_reason) {
            (LeaveReason::Removed, _) => LeftReason::Removed,
            (LeaveReason::Failed, _) => LeftReason::Failed,
            (LeaveReason::Left, Some(reason)) => reason,
            (LeaveReason::Left, None) => LeftReason::Left,
        };
        self.close(
            participant,
            match reason {
                LeftReason::Removed => CloseCode::Removed,
                LeftReason::VisitEnded => CloseCode::VisitOver,
                LeftReason::Failed => CloseCode::Unavailable,
                LeftReason::ServerShutdown => CloseCode::ShuttingDown,
                LeftReason::Left | LeftReason::Dropped => CloseCode::Normal,
            },
        );
        self.seats.remove(&participant);
        self.broadcast(
            None,
            &ServerMessage::ParticipantLeft {
                participant: wire_id(participant),
                reason,
            },
        );
        if reason != LeftReason::Removed {
            self.out.push_back(Output::Audit(Act::Left {
                participant,
                reason: reason.as_str(),
            }));
        }
    }
}

#[cfg(test)]
mod tests;
