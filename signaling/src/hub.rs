//! The rooms of this node and the bridge to the SFU workers.
//!
//! The hub keeps, per room (one visit), the seats of its participants: role, name, waiting
//! state, the socket currently attached, the resume token and the server offer awaiting an
//! answer. Sockets reach the hub through [`crate::ws`]; the SFU's events reach it through one
//! pump task per worker; the api's [`VisitEvent`]s through one more. One `std` mutex guards the
//! state: it is never held across an `.await`, and everything done under it is a map update or
//! a non-blocking channel send.
//!
//! Audit rows and visit status changes go to the database from spawned tasks, so that a slow
//! disk never delays SDP or events of a call.
//!
//! # Chime visits
//!
//! A visit whose media runs on Amazon Chime SDK (`media_backend = "chime"`) uses the same seats,
//! waiting room, admit, remove, leave, resume, end, audit and visit status, but never reaches
//! the SFU: there is no SDP, ICE or track for it here. What the SFU's events do for an SFU
//! room the hub does itself for a Chime room — `admit` admits at once, `leave`, `remove`, an
//! expired seat and the end of the visit take the seat out at once — and a seat counts as
//! connected as soon as it is seated, so the visit is `in_progress` once an admitted patient
//! and the clinician are both seated. The browser joins the Chime meeting only once it is
//! admitted (docs/signaling.md, "Chime visits"), and Chime enforces that too: a patient held
//! by the waiting room gets its attendee without the `JoinToken` over HTTP, and the hub hands
//! it the full attendee (fetched again with the idempotent [`MediaService::join`]) in its own
//! `participant_admitted` — or in `joined` when an admitted patient comes back. A participant
//! removed, gone for good or whose seat expired has its Chime attendee deleted
//! ([`MediaService::remove`]), audited as `media.attendee_removed`.
//!
//! [`MediaService::join`]: api::media::MediaService::join
//! [`MediaService::remove`]: api::media::MediaService::remove

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use api::App;
use api::audit::{Actor, NewEntry};
use api::config::MediaBackend;
use api::events::VisitEvent;
use api::visit::lifecycle::{self, Closing};
use api::visit::{self, Via, VisitError};
use serde_json::json;
use sfu::core::{Command, CoreError, Event, LeaveReason, ParticipantId, RoomId, TrackId};
use sfu::driver::{Driver, DriverError, Handle, worker_for};
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::media::{MediaKind, Mid};
use tokio::sync::{broadcast, mpsc};

use crate::metrics::{Metrics, MetricsError};
use crate::protocol::{
    CloseCode, ErrorCode, LeftReason, PROTOCOL_VERSION, ParticipantInfo, Role, ServerMessage,
    TrackKind,
};
use crate::session::{Identity, Limits, Request};

/// Frames queued for one socket before it counts as too slow and is detached (it may resume).
const OUTBOUND_QUEUE: usize = 256;
/// Length of resume tokens (base62, ~190 bits).
const SESSION_TOKEN_LEN: usize = 32;
/// How often SFU statistics are folded into the metrics.
const METRICS_PERIOD: Duration = Duration::from_secs(1);

/// What the hub asks a socket to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outbound {
    /// Send this frame.
    Frame(ServerMessage),
    /// Close with this code.
    Close(CloseCode),
}

/// The hub's end of one socket: an id and the queue its task drains.
#[derive(Debug)]
pub struct Conn {
    id: u64,
    tx: mpsc::Sender<Outbound>,
}

impl Conn {
    /// The connection's id (for [`Hub::disconnected`] and [`Hub::request`]).
    pub fn id(&self) -> u64 {
        self.id
    }
}

/// A refused `join` or `resume`: the frame to send and the close code that follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The error frame.
    pub frame: ServerMessage,
    /// The close code.
    pub close: CloseCode,
}

impl Refusal {
    fn new(code: ErrorCode, message: impl Into<String>, close: CloseCode) -> Self {
        Self {
            frame: ServerMessage::error(code, message),
            close,
        }
    }
}

struct Seat {
    role: Role,
    name: String,
    waiting: bool,
    connected: bool,
    conn: Option<Conn>,
    session: String,
    /// The server's offer not yet answered, resent on resume.
    pending_offer: Option<String>,
    joined_at: Instant,
    /// Set while no socket is attached: the generation that the expiry timer checks.
    dropped: Option<u64>,
    /// Why it will leave, once it does.
    leave_reason: LeftReason,
    /// Whether the SFU has seated it yet; until then an `admit` is remembered in
    /// `admit_pending` and applied by the join once the SFU has it.
    in_sfu: bool,
    admit_pending: bool,
    /// Chime visits: the attendee with its `JoinToken` this seat was handed over signaling
    /// (a patient held by the waiting room, once admitted), sent again in `joined` on resume.
    attendee: Option<Box<serde_json::Value>>,
}

impl Seat {
    /// Queues a frame; a socket whose queue is full is detached (it may resume).
    fn send(&mut self, message: ServerMessage) {
        if let Some(conn) = &self.conn
            && conn.tx.try_send(Outbound::Frame(message)).is_err()
        {
            self.conn = None;
        }
    }

    fn close(&mut self, code: CloseCode) {
        if let Some(conn) = self.conn.take() {
            let _ = conn.tx.try_send(Outbound::Close(code));
        }
    }
}

struct Room {
    tenant: String,
    visit: String,
    waiting_room: bool,
    seats: HashMap<ParticipantId, Seat>,
    /// Admitted once: a rejoin after a reload does not wait again.
    admitted: HashSet<ParticipantId>,
    /// Removed by the clinician: their grants no longer seat them.
    removed: HashSet<ParticipantId>,
    kinds: HashMap<TrackId, TrackKind>,
    in_progress: bool,
    /// The visit's media runs on Amazon Chime: no SFU session for any seat.
    chime: bool,
    /// Participants replaced by a new join: the old session's events, up to and including
    /// its `Left`, are dropped (counted, one per replacement).
    replaced: HashMap<ParticipantId, u32>,
}

impl Room {
    fn broadcast(&mut self, except: Option<ParticipantId>, message: &ServerMessage) {
        for (id, seat) in &mut self.seats {
            if Some(*id) != except {
                seat.send(message.clone());
            }
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

    /// Marks `target` removed for good in this room (the database already holds it, see
    /// [`Hub::persist_removal`]).
    fn remove_for_good(&mut self, target: ParticipantId) -> Result<(), ServerMessage> {
        let seat = self.seats.get_mut(&target).ok_or_else(not_in_visit)?;
        seat.leave_reason = LeftReason::Removed;
        self.removed.insert(target);
        self.admitted.remove(&target);
        Ok(())
    }

    /// Whether a clinician and a patient are both admitted with media connected.
    fn call_running(&self) -> bool {
        let live = |role| {
            self.seats
                .values()
                .any(|s| s.role == role && !s.waiting && s.connected)
        };
        live(Role::Clinician) && live(Role::Patient)
    }
}

#[derive(Default)]
struct State {
    rooms: HashMap<RoomId, Room>,
    index: HashMap<ParticipantId, RoomId>,
}

/// Every room of this node. See the [module documentation](self).
pub struct Hub {
    app: Arc<App>,
    workers: Vec<Handle>,
    state: Mutex<State>,
    metrics: Metrics,
    limits: Limits,
    next_id: AtomicU64,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("workers", &self.workers.len())
            .finish_non_exhaustive()
    }
}

/// The participant or room id of a UUID string, as the SFU names it.
pub fn uuid_id(text: &str) -> Option<u128> {
    uuid::Uuid::parse_str(text).ok().map(|id| id.as_u128())
}

fn wire_id(id: ParticipantId) -> String {
    uuid::Uuid::from_u128(id.0).to_string()
}

/// A track's wire id: `<publisher participant id>:<publisher mid>`.
pub fn wire_track(track: TrackId) -> String {
    format!("{}:{}", wire_id(track.participant), track.mid)
}

fn parse_track(text: &str) -> Option<TrackId> {
    let (participant, mid) = text.rsplit_once(':')?;
    if mid.is_empty() || mid.len() > 16 {
        return None;
    }
    Some(TrackId {
        participant: ParticipantId(uuid_id(participant)?),
        mid: Mid::from(mid),
    })
}

fn kind(kind: MediaKind) -> TrackKind {
    if kind.is_audio() {
        TrackKind::Audio
    } else {
        TrackKind::Video
    }
}

/// The participant a request names, or the error frame for a malformed id.
fn target(text: &str) -> Result<ParticipantId, ServerMessage> {
    uuid_id(text)
        .map(ParticipantId)
        .ok_or_else(|| ServerMessage::error(ErrorCode::UnknownParticipant, "not a participant id"))
}

/// The error frame for a participant who is not in the visit.
fn not_in_visit() -> ServerMessage {
    ServerMessage::error(ErrorCode::UnknownParticipant, "not in this visit")
}

/// The error frame for admitting a participant who is not waiting.
fn not_waiting() -> ServerMessage {
    ServerMessage::error(ErrorCode::NotWaiting, "that participant is not waiting")
}

fn actor(participant: ParticipantId) -> Actor {
    Actor::local(&format!("participant:{}", wire_id(participant)))
}

/// The error frame for a command the SFU refused.
fn command_error(error: DriverError) -> ServerMessage {
    let code = match &error {
        DriverError::Stopped => ErrorCode::MediaUnavailable,
        DriverError::Core(core) => match core {
            CoreError::RoomFull { .. } => ErrorCode::RoomFull,
            CoreError::UnknownParticipant(_) => ErrorCode::UnknownParticipant,
            CoreError::UnknownTrack(_) => ErrorCode::UnknownTrack,
            CoreError::TooManyTracks { .. } => ErrorCode::TooManyTracks,
            CoreError::NotWaiting(_) => ErrorCode::NotWaiting,
            CoreError::OfferCollision(_) => ErrorCode::OfferCollision,
            CoreError::NoPendingOffer(_) => ErrorCode::NoPendingOffer,
            CoreError::Rtc(_) => ErrorCode::InvalidSdp,
            CoreError::DuplicateParticipant(_)
            | CoreError::Candidate(_)
            | CoreError::UnknownSource
            | CoreError::Malformed => ErrorCode::MediaUnavailable,
        },
    };
    ServerMessage::error(code, error.to_string())
}

impl Hub {
    /// A hub over the SFU `drivers` (worker `i` at index `i`, rooms placed with
    /// [`worker_for`]). Spawns, on the current runtime, one task per worker that relays its
    /// events, one that disconnects ended visits, and one that folds SFU statistics into the
    /// metrics, which it registers in the api's registry. The tasks hold the hub (and with it
    /// the workers' handles) and run until the runtime shuts down; the SFU workers, on threads
    /// of their own, end once the hub and its handles are gone.
    pub fn start(
        app: Arc<App>,
        drivers: Vec<Driver>,
        limits: Limits,
    ) -> Result<Arc<Self>, MetricsError> {
        let metrics = Metrics::register(app.metrics.registry())?;
        let mut workers = Vec::with_capacity(drivers.len());
        let mut streams = Vec::with_capacity(drivers.len());
        for driver in drivers {
            workers.push(driver.handle);
            streams.push(driver.events);
        }
        let visit_events = app.events.subscribe();
        let hub = Arc::new(Self {
            app,
            workers,
            state: Mutex::new(State::default()),
            metrics,
            limits,
            next_id: AtomicU64::new(1),
        });
        for events in streams {
            tokio::spawn(Arc::clone(&hub).pump(events));
        }
        tokio::spawn(Arc::clone(&hub).watch_visits(visit_events));
        tokio::spawn(Arc::clone(&hub).fold_stats());
        Ok(hub)
    }

    /// The per-socket limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The metrics (to count frames and errors).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// A new socket's connection and the queue of what the hub sends it.
    pub fn connect(&self) -> (Conn, mpsc::Receiver<Outbound>) {
        let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        (Conn { id, tx }, rx)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that
        // matters more than stopping signaling would, so keep serving.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn worker(&self, room: RoomId) -> &Handle {
        &self.workers[worker_for(room, self.workers.len())]
    }

    /// Audits that `me` admitted or removed (`event`) `participant` of `visit`.
    fn audit_act(
        &self,
        tenant: &str,
        visit: &str,
        me: ParticipantId,
        event: &'static str,
        participant: &str,
    ) {
        self.audit(
            NewEntry::success(tenant, &actor(me), event, Some(visit))
                .with_details(json!({"participant_id": participant})),
        );
    }

    fn audit(&self, entry: NewEntry) {
        let app = Arc::clone(&self.app);
        tokio::spawn(async move {
            if let Err(error) = app.audit_alone(entry).await {
                tracing::error!(%error, "writing a signaling audit row failed");
            }
        });
    }

    fn verify(
        &self,
        grant: &str,
    ) -> Result<(api::tokens::GrantClaims, ParticipantId, RoomId), Refusal> {
        let unauthorized =
            |why: &str| Refusal::new(ErrorCode::Unauthorized, why, CloseCode::Unauthorized);
        let claims = self
            .app
            .grants
            .verify(grant)
            .map_err(|error| unauthorized(&error.to_string()))?;
        let participant = uuid_id(&claims.sub).ok_or_else(|| unauthorized("bad subject"))?;
        let room = uuid_id(&claims.room).ok_or_else(|| unauthorized("bad room"))?;
        Ok((claims, ParticipantId(participant), RoomId(room)))
    }

    /// Seats the holder of `grant` with its socket `conn`: checks the visit is live, answers
    /// `joined`, joins the SFU room (waiting if the visit has a waiting room and this is the
    /// patient), tells the others and audits.
    pub async fn join(
        self: &Arc<Self>,
        conn: Conn,
        grant: &str,
        offer: Option<String>,
    ) -> Result<Identity, Refusal> {
        let (claims, participant, room) = self.verify(grant)?;
        let admission =
            visit::participants::admission(&self.app, &claims.tenant, &claims.visit, &claims.sub)
                .await
                .map_err(|error| match error {
                    VisitError::Removed => Refusal::new(
                        ErrorCode::Forbidden,
                        "the clinician removed you from this visit",
                        CloseCode::Removed,
                    ),
                    VisitError::Store(error) => {
                        tracing::error!(%error, "reading a visit for signaling failed");
                        Refusal::new(
                            ErrorCode::MediaUnavailable,
                            "the visit could not be read; try again",
                            CloseCode::Unavailable,
                        )
                    }
                    _ => Refusal::new(
                        ErrorCode::VisitUnavailable,
                        "the visit is over",
                        CloseCode::VisitOver,
                    ),
                })?;
        let chime = admission.backend == MediaBackend::Chime;
        if chime && offer.is_some() {
            return Err(Refusal::new(
                ErrorCode::InvalidMessage,
                "this visit's media runs on Amazon Chime: join without an offer",
                CloseCode::Protocol,
            ));
        }
        let offer = offer
            .map(|sdp| SdpOffer::from_sdp_string(&sdp))
            .transpose()
            .map_err(|error| {
                Refusal::new(
                    ErrorCode::InvalidSdp,
                    error.to_string(),
                    CloseCode::Protocol,
                )
            })?;
        let role = Role::from(claims.role);
        // An admitted patient of a Chime visit with a waiting room coming back (a reload) is
        // in at once, but its start answer had no JoinToken: fetch its attendee first.
        let attendee = if chime && admission.waiting_room && role == Role::Patient && {
            let state = self.state();
            state.rooms.get(&room).is_some_and(|r| {
                r.admitted.contains(&participant) && !r.removed.contains(&participant)
            })
        } {
            let attendee = visit::media::chime_attendee(&self.app, &claims.visit, &claims.sub)
                .await
                .map_err(|why| {
                    tracing::warn!(error = %why, "fetching a Chime attendee for a rejoin failed");
                    Refusal::new(
                        ErrorCode::MediaUnavailable,
                        "the meeting cannot be reached; try again",
                        CloseCode::Unavailable,
                    )
                })?;
            Some(Box::new(attendee))
        } else {
            None
        };
        let replaced = {
            let mut state = self.state();
            let seat = state.rooms.get_mut(&room).and_then(|r| {
                if r.removed.contains(&participant) {
                    return Some(Err(()));
                }
                let old = r.seats.remove(&participant).map(|mut seat| {
                    seat.close(CloseCode::Replaced);
                    // A Chime room has no SFU session whose `Left` would have to be dropped.
                    if !r.chime {
                        *r.replaced.entry(participant).or_default() += 1;
                    }
                });
                old.map(Ok)
            });
            match seat {
                Some(Err(())) => {
                    return Err(Refusal::new(
                        ErrorCode::Forbidden,
                        "the clinician removed you from this visit",
                        CloseCode::Removed,
                    ));
                }
                Some(Ok(())) => {
                    state.index.remove(&participant);
                    true
                }
                None => false,
            }
        };
        let worker = self.worker(room).clone();
        if replaced {
            if !chime {
                let _ = worker.command(Command::Leave { participant }).await;
            }
            self.audit(
                NewEntry::success(
                    &claims.tenant,
                    &actor(participant),
                    "participant.left",
                    Some(&claims.visit),
                )
                .with_details(json!({"participant_id": claims.sub, "reason": "replaced"})),
            );
        }
        let waiting = {
            let mut state = self.state();
            let room_state = state.rooms.entry(room).or_insert_with(|| Room {
                tenant: claims.tenant.clone(),
                visit: claims.visit.clone(),
                waiting_room: admission.waiting_room,
                seats: HashMap::new(),
                admitted: HashSet::new(),
                removed: HashSet::new(),
                kinds: HashMap::new(),
                in_progress: admission.in_progress,
                chime,
                replaced: HashMap::new(),
            });
            // The SFU counts an SFU room's seats; nothing else counts a Chime room's.
            if room_state.chime && room_state.seats.len() >= self.limits.max_participants {
                return Err(Refusal::new(
                    ErrorCode::RoomFull,
                    format!(
                        "a visit has at most {} participants",
                        self.limits.max_participants
                    ),
                    CloseCode::Unavailable,
                ));
            }
            // A Chime patient admitted only after the attendee was (not) fetched above waits
            // again rather than be let in without a JoinToken; `admit` hands it one.
            let waiting = room_state.waiting_room
                && role == Role::Patient
                && (!room_state.admitted.contains(&participant) || (chime && attendee.is_none()));
            let session = api::tokens::random_base62(SESSION_TOKEN_LEN);
            let mut seat = Seat {
                role,
                name: claims.name.clone(),
                waiting,
                // Chime carries the media: being seated is all the hub can know of it.
                connected: chime,
                conn: Some(conn),
                session: session.clone(),
                pending_offer: None,
                joined_at: Instant::now(),
                dropped: None,
                leave_reason: LeftReason::Left,
                in_sfu: chime,
                admit_pending: false,
                attendee: if waiting { None } else { attendee },
            };
            seat.send(ServerMessage::Joined {
                protocol: PROTOCOL_VERSION,
                participant: claims.sub.clone(),
                role,
                visit: claims.visit.clone(),
                session,
                waiting,
                resumed: false,
                participants: room_state.roster(participant),
                attendee: seat.attendee.clone(),
            });
            // Told under the same lock that builds rosters, so every other participant learns
            // of this one exactly once: from its own roster or from this notice.
            let notice = if waiting {
                ServerMessage::ParticipantWaiting {
                    participant: claims.sub.clone(),
                    name: claims.name.clone(),
                }
            } else {
                ServerMessage::ParticipantJoined {
                    participant: claims.sub.clone(),
                    name: claims.name.clone(),
                    role,
                }
            };
            room_state.broadcast(None, &notice);
            room_state.seats.insert(participant, seat);
            state.index.insert(participant, room);
            waiting
        };
        if chime {
            self.seated_chime(room);
        } else {
            self.join_sfu(&worker, room, participant, offer, waiting, &claims.sub)
                .await?;
        }
        let details = json!({"participant_id": claims.sub, "role": claims.role.as_str()});
        self.audit(
            NewEntry::success(
                &claims.tenant,
                &actor(participant),
                "participant.joined",
                Some(&claims.visit),
            )
            .with_details(details.clone()),
        );
        if waiting {
            self.audit(
                NewEntry::success(
                    &claims.tenant,
                    &actor(participant),
                    "participant.waiting",
                    Some(&claims.visit),
                )
                .with_details(details),
            );
        }
        Ok(Identity {
            participant: claims.sub,
            role,
        })
    }

    /// Seats a new SFU seat in the SFU (`sub` is its wire id), applying an `admit` that came
    /// while the SFU did not have it yet; a refusal takes the seat out again.
    async fn join_sfu(
        &self,
        worker: &Handle,
        room: RoomId,
        participant: ParticipantId,
        offer: Option<SdpOffer>,
        waiting: bool,
        sub: &str,
    ) -> Result<(), Refusal> {
        let joined = worker
            .command(Command::Join {
                room,
                participant,
                offer,
                waiting,
            })
            .await;
        if let Err(error) = joined {
            let close = match &error {
                DriverError::Core(CoreError::Rtc(_)) => CloseCode::Protocol,
                _ => CloseCode::Unavailable,
            };
            let frame = command_error(error);
            let mut state = self.state();
            if let Some(room_state) = state.rooms.get_mut(&room) {
                room_state.seats.remove(&participant);
                room_state.broadcast(
                    None,
                    &ServerMessage::ParticipantLeft {
                        participant: sub.to_owned(),
                        reason: LeftReason::Failed,
                    },
                );
                if room_state.seats.is_empty() {
                    state.rooms.remove(&room);
                }
            }
            state.index.remove(&participant);
            return Err(Refusal { frame, close });
        }
        let admit = {
            let mut state = self.state();
            state
                .rooms
                .get_mut(&room)
                .and_then(|r| r.seats.get_mut(&participant))
                .is_some_and(|seat| {
                    seat.in_sfu = true;
                    std::mem::take(&mut seat.admit_pending)
                })
        };
        if admit {
            let _ = worker.command(Command::Admit { participant }).await;
        }
        Ok(())
    }

    /// A seat was added to the Chime room `room`: the call may now be running.
    fn seated_chime(&self, room: RoomId) {
        let mut state = self.state();
        if let Some(room_state) = state.rooms.get_mut(&room) {
            self.check_running(room_state);
        }
    }

    /// Reattaches a seat whose socket dropped (or is about to be replaced) to `conn`, if the
    /// grant names the same participant and `session` is its resume token. The media session
    /// is untouched; an unanswered server offer is sent again.
    pub async fn resume(
        self: &Arc<Self>,
        conn: Conn,
        grant: &str,
        session: &str,
    ) -> Result<Identity, Refusal> {
        let (claims, participant, room) = self.verify(grant)?;
        let refused = || {
            Refusal::new(
                ErrorCode::Unauthorized,
                "no seat to resume; join again",
                CloseCode::Unauthorized,
            )
        };
        {
            let mut state = self.state();
            let room_state = state.rooms.get_mut(&room).ok_or_else(refused)?;
            let roster = room_state.roster(participant);
            let seat = room_state
                .seats
                .get_mut(&participant)
                .filter(|seat| seat.session == session)
                .ok_or_else(refused)?;
            seat.close(CloseCode::Replaced);
            seat.conn = Some(conn);
            seat.dropped = None;
            seat.send(ServerMessage::Joined {
                protocol: PROTOCOL_VERSION,
                participant: claims.sub.clone(),
                role: seat.role,
                visit: claims.visit.clone(),
                session: seat.session.clone(),
                waiting: seat.waiting,
                resumed: true,
                participants: roster,
                attendee: seat.attendee.clone(),
            });
            if let Some(sdp) = seat.pending_offer.clone() {
                seat.send(ServerMessage::Offer { sdp });
            }
        }
        self.audit(
            NewEntry::success(
                &claims.tenant,
                &actor(participant),
                "participant.resumed",
                Some(&claims.visit),
            )
            .with_details(json!({"participant_id": claims.sub})),
        );
        Ok(Identity {
            participant: claims.sub,
            role: Role::from(claims.role),
        })
    }

    /// The socket `conn_id` of a seated participant ended without `leave`: the seat waits
    /// [`Limits::resume_window`] for a `resume`, then leaves.
    pub fn disconnected(self: &Arc<Self>, conn_id: u64, identity: &Identity) {
        let Some(participant) = uuid_id(&identity.participant).map(ParticipantId) else {
            return;
        };
        let generation = self.next_id.fetch_add(1, Ordering::Relaxed);
        {
            let mut state = self.state();
            let Some(room) = state.index.get(&participant).copied() else {
                return;
            };
            let Some(seat) = state
                .rooms
                .get_mut(&room)
                .and_then(|r| r.seats.get_mut(&participant))
            else {
                return;
            };
            // Ours, or already detached by the hub because its queue overflowed.
            let ours = match &seat.conn {
                Some(conn) => conn.id == conn_id,
                None => seat.dropped.is_none(),
            };
            if !ours {
                return;
            }
            seat.conn = None;
            seat.dropped = Some(generation);
        }
        let hub = Arc::clone(self);
        let window = self.limits.resume_window;
        tokio::spawn(async move {
            tokio::time::sleep(window).await;
            hub.expire(participant, generation).await;
        });
    }

    async fn expire(&self, participant: ParticipantId, generation: u64) {
        let room = {
            let mut state = self.state();
            let Some(room) = state.index.get(&participant).copied() else {
                return;
            };
            let Some(seat) = state
                .rooms
                .get_mut(&room)
                .and_then(|r| r.seats.get_mut(&participant))
            else {
                return;
            };
            if seat.dropped != Some(generation) {
                return;
            }
            seat.leave_reason = LeftReason::Dropped;
            if let Some(room_state) = state.rooms.get(&room)
                && room_state.chime
            {
                self.remove_attendee(
                    room_state,
                    participant,
                    actor(participant),
                    LeftReason::Dropped,
                );
                self.depart(&mut state, room, participant, LeaveReason::Left);
                return;
            }
            room
        };
        let _ = self
            .worker(room)
            .command(Command::Leave { participant })
            .await;
    }

    /// Carries out a seated participant's request. `Err` is the error frame to send back.
    pub async fn request(
        self: &Arc<Self>,
        conn_id: u64,
        identity: &Identity,
        request: Request,
    ) -> Result<(), ServerMessage> {
        let stale = || {
            ServerMessage::error(
                ErrorCode::Unauthorized,
                "this socket no longer holds the seat",
            )
        };
        let me = uuid_id(&identity.participant)
            .map(ParticipantId)
            .ok_or_else(stale)?;
        let (room, chime) = {
            let state = self.state();
            let room = state.index.get(&me).copied().ok_or_else(stale)?;
            let room_state = state.rooms.get(&room);
            let holds = room_state
                .and_then(|r| r.seats.get(&me))
                .and_then(|s| s.conn.as_ref())
                .is_some_and(|c| c.id == conn_id);
            if !holds {
                return Err(stale());
            }
            (room, room_state.is_some_and(|r| r.chime))
        };
        if chime {
            return self.request_chime(room, me, request).await;
        }
        let worker = self.worker(room).clone();
        match request {
            Request::Offer { sdp } => {
                let offer = SdpOffer::from_sdp_string(&sdp)
                    .map_err(|e| ServerMessage::error(ErrorCode::InvalidSdp, e.to_string()))?;
                worker
                    .command(Command::Offer {
                        participant: me,
                        offer,
                    })
                    .await
                    .map_err(command_error)
            }
            Request::Answer { sdp } => {
                let answer = SdpAnswer::from_sdp_string(&sdp)
                    .map_err(|e| ServerMessage::error(ErrorCode::InvalidSdp, e.to_string()))?;
                self.with_seat(room, me, |seat| seat.pending_offer = None);
                worker
                    .command(Command::Answer {
                        participant: me,
                        answer,
                    })
                    .await
                    .map_err(command_error)
            }
            Request::Admit { participant } => {
                let target = target(&participant)?;
                let (tenant, visit, in_sfu) = {
                    let mut state = self.state();
                    let room_state = state.rooms.get_mut(&room).ok_or_else(stale)?;
                    let seat = room_state.seats.get(&target).ok_or_else(not_in_visit)?;
                    if !seat.waiting || seat.admit_pending {
                        return Err(not_waiting());
                    }
                    let in_sfu = seat.in_sfu;
                    if let Some(seat) = room_state.seats.get_mut(&target)
                        && !in_sfu
                    {
                        seat.admit_pending = true;
                    }
                    room_state.admitted.insert(target);
                    (room_state.tenant.clone(), room_state.visit.clone(), in_sfu)
                };
                if in_sfu {
                    worker
                        .command(Command::Admit {
                            participant: target,
                        })
                        .await
                        .map_err(command_error)?;
                }
                self.audit_act(&tenant, &visit, me, "participant.admitted", &participant);
                Ok(())
            }
            Request::Remove { participant } => {
                let target = target(&participant)?;
                self.persist_removal(room, me, target).await?;
                {
                    let mut state = self.state();
                    let room_state = state.rooms.get_mut(&room).ok_or_else(stale)?;
                    room_state.remove_for_good(target)?;
                }
                worker
                    .command(Command::Remove {
                        participant: target,
                    })
                    .await
                    .map_err(command_error)
            }
            Request::Mute { track, muted } => {
                let track = parse_track(&track)
                    .filter(|t| t.participant == me)
                    .ok_or_else(|| {
                        ServerMessage::error(ErrorCode::UnknownTrack, "not one of your tracks")
                    })?;
                worker
                    .command(Command::Mute { track, muted })
                    .await
                    .map_err(command_error)
            }
            Request::Leave => {
                self.with_seat(room, me, |seat| seat.leave_reason = LeftReason::Left);
                worker
                    .command(Command::Leave { participant: me })
                    .await
                    .map_err(command_error)
            }
            Request::EndVisit => {
                let (tenant, visit) = {
                    let state = self.state();
                    let room_state = state.rooms.get(&room).ok_or_else(stale)?;
                    (room_state.tenant.clone(), room_state.visit.clone())
                };
                self.close_visit(&tenant, &visit, me).await
            }
        }
    }

    /// Carries out a request of a seat in the Chime room `room`: the waiting room, removal,
    /// leaving and the end of the visit as for an SFU room, done here at once; SDP and track
    /// mutes belong to the Chime meeting and are refused.
    async fn request_chime(
        &self,
        room: RoomId,
        me: ParticipantId,
        request: Request,
    ) -> Result<(), ServerMessage> {
        let gone = || ServerMessage::error(ErrorCode::VisitUnavailable, "the visit is over");
        match request {
            Request::Offer { .. } | Request::Answer { .. } | Request::Mute { .. } => {
                Err(ServerMessage::error(
                    ErrorCode::InvalidMessage,
                    "this visit's media runs on Amazon Chime: no SDP or track mutes here",
                ))
            }
            Request::Admit { participant } => {
                let target = target(&participant)?;
                let visit = {
                    let mut state = self.state();
                    let room_state = state.rooms.get_mut(&room).ok_or_else(gone)?;
                    let seat = room_state.seats.get_mut(&target).ok_or_else(not_in_visit)?;
                    if !seat.waiting || seat.admit_pending {
                        return Err(not_waiting());
                    }
                    seat.admit_pending = true;
                    room_state.visit.clone()
                };
                // Only a waiting patient's start answer lacks the JoinToken: fetch its
                // attendee again (the same one: ExternalUserId is CreateAttendee's
                // idempotency token) and hand it over with the admission.
                let fetched =
                    visit::media::chime_attendee(&self.app, &visit, &wire_id(target)).await;
                let mut state = self.state();
                let room_state = state.rooms.get_mut(&room).ok_or_else(gone)?;
                let seat = room_state.seats.get_mut(&target).ok_or_else(not_in_visit)?;
                seat.admit_pending = false;
                let attendee = fetched.map_err(|why| {
                    tracing::warn!(error = %why, "fetching a Chime attendee to admit failed");
                    ServerMessage::error(
                        ErrorCode::MediaUnavailable,
                        "the meeting cannot be reached; the participant still waits, admit again",
                    )
                })?;
                if !seat.waiting {
                    return Err(not_waiting());
                }
                seat.waiting = false;
                let attendee = Box::new(attendee);
                seat.attendee = Some(attendee.clone());
                seat.send(ServerMessage::ParticipantAdmitted {
                    participant: wire_id(target),
                    attendee: Some(attendee),
                });
                room_state.admitted.insert(target);
                room_state.broadcast(
                    Some(target),
                    &ServerMessage::ParticipantAdmitted {
                        participant: wire_id(target),
                        attendee: None,
                    },
                );
                self.check_running(room_state);
                let tenant = room_state.tenant.clone();
                drop(state);
                self.audit_act(&tenant, &visit, me, "participant.admitted", &participant);
                Ok(())
            }
            Request::Remove { participant } => {
                let target = target(&participant)?;
                self.persist_removal(room, me, target).await?;
                let mut state = self.state();
                let room_state = state.rooms.get_mut(&room).ok_or_else(gone)?;
                room_state.remove_for_good(target)?;
                self.remove_attendee(room_state, target, actor(me), LeftReason::Removed);
                self.depart(&mut state, room, target, LeaveReason::Removed);
                Ok(())
            }
            Request::Leave => {
                let mut state = self.state();
                if let Some(room_state) = state.rooms.get_mut(&room)
                    && let Some(seat) = room_state.seats.get_mut(&me)
                {
                    seat.leave_reason = LeftReason::Left;
                    self.remove_attendee(room_state, me, actor(me), LeftReason::Left);
                }
                self.depart(&mut state, room, me, LeaveReason::Left);
                Ok(())
            }
            Request::EndVisit => {
                let (tenant, visit) = {
                    let state = self.state();
                    let room_state = state.rooms.get(&room).ok_or_else(gone)?;
                    (room_state.tenant.clone(), room_state.visit.clone())
                };
                self.close_visit(&tenant, &visit, me).await?;
                self.close_meeting(tenant, visit, me);
                Ok(())
            }
        }
    }

    /// Deletes the Chime attendee of `participant`, who leaves the Chime room `room` for good
    /// (`reason`: removed, left or dropped), so that its JoinToken stops working, and audits
    /// `media.attendee_removed` (actor `by`; a failure too, with outcome `failure`). Runs in
    /// the background: the seat is gone whatever Chime answers.
    fn remove_attendee(
        &self,
        room: &Room,
        participant: ParticipantId,
        by: Actor,
        reason: LeftReason,
    ) {
        let app = Arc::clone(&self.app);
        let tenant = room.tenant.clone();
        let visit = room.visit.clone();
        let participant = wire_id(participant);
        let reason = reason.as_str();
        tokio::spawn(async move {
            visit::media::remove_attendee(&app, &tenant, &visit, &participant, &by, reason).await;
        });
    }

    /// Deletes the Chime meeting of a visit ended over signaling, as
    /// `POST /api/visits/{id}/end` does for one ended over REST, and audits `media.closed`
    /// (a failure too: the visit is over whatever happens, and Chime ends an empty meeting by
    /// itself).
    fn close_meeting(&self, tenant: String, visit: String, by: ParticipantId) {
        let app = Arc::clone(&self.app);
        tokio::spawn(async move {
            let closed = visit::media::close_session(
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

    /// Ends `visit` in the database as `POST /api/visits/{id}/end` does — status `ended`,
    /// every link revoked, one `visit.ended` audit row, all in one transaction — then
    /// announces it on the api's visit events, which disconnect everyone (here and on any
    /// other node watching them).
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

    /// Stores and audits that `me` removed `target` from the visit of `room` for good, before
    /// the room lets it go: the removal then holds wherever and whenever its grant comes back.
    /// A target not seated here is refused without writing anything.
    async fn persist_removal(
        &self,
        room: RoomId,
        me: ParticipantId,
        target: ParticipantId,
    ) -> Result<(), ServerMessage> {
        let (tenant, visit) = {
            let state = self.state();
            let room_state = state
                .rooms
                .get(&room)
                .filter(|r| r.seats.contains_key(&target))
                .ok_or_else(not_in_visit)?;
            (room_state.tenant.clone(), room_state.visit.clone())
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

    fn with_seat(&self, room: RoomId, participant: ParticipantId, f: impl FnOnce(&mut Seat)) {
        if let Some(seat) = self
            .state()
            .rooms
            .get_mut(&room)
            .and_then(|r| r.seats.get_mut(&participant))
        {
            f(seat);
        }
    }

    async fn pump(self: Arc<Self>, mut events: mpsc::UnboundedReceiver<Event>) {
        while let Some(event) = events.recv().await {
            self.on_event(event);
        }
    }

    /// Relays one SFU event to the sockets it concerns.
    fn on_event(&self, event: Event) {
        let subject = match &event {
            Event::Answer { participant, .. }
            | Event::Offer { participant, .. }
            | Event::Joined { participant, .. }
            | Event::Admitted { participant, .. }
            | Event::Connected { participant }
            | Event::Disconnected { participant }
            | Event::TrackRefused { participant, .. }
            | Event::FirstMedia { participant }
            | Event::Rtt { participant, .. }
            | Event::Left { participant, .. } => *participant,
            Event::TrackPublished { track, .. }
            | Event::TrackUnpublished { track, .. }
            | Event::TrackMuted { track, .. }
            | Event::KeyframeRequested { track, .. } => track.participant,
            Event::TrackRouted { subscriber, .. } => *subscriber,
        };
        if let Event::Rtt { rtt, .. } = &event {
            self.metrics.rtt.observe(rtt.as_secs_f64());
            return;
        }
        let mut state = self.state();
        let Some(room_id) = state.index.get(&subject).copied().or(match &event {
            Event::Left { room, .. } => Some(*room),
            _ => None,
        }) else {
            return;
        };
        let Some(room) = state.rooms.get_mut(&room_id) else {
            return;
        };
        if let Some(pending) = room.replaced.get_mut(&subject)
            && *pending > 0
        {
            if matches!(event, Event::Left { .. }) {
                *pending -= 1;
                if *pending == 0 {
                    room.replaced.remove(&subject);
                }
            }
            return;
        }
        let mut start = false;
        match event {
            Event::Answer {
                participant,
                answer,
            } => {
                if let Some(seat) = room.seats.get_mut(&participant) {
                    seat.send(ServerMessage::Answer {
                        sdp: answer.to_sdp_string(),
                    });
                }
            }
            Event::Offer { participant, offer } => {
                if let Some(seat) = room.seats.get_mut(&participant) {
                    let sdp = offer.to_sdp_string();
                    seat.pending_offer = Some(sdp.clone());
                    seat.send(ServerMessage::Offer { sdp });
                }
            }
            Event::Admitted { participant, .. } => {
                if let Some(seat) = room.seats.get_mut(&participant) {
                    seat.waiting = false;
                }
                room.broadcast(
                    None,
                    &ServerMessage::ParticipantAdmitted {
                        participant: wire_id(participant),
                        attendee: None,
                    },
                );
                start = true;
            }
            Event::Connected { participant } => {
                if let Some(seat) = room.seats.get_mut(&participant) {
                    seat.connected = true;
                }
                start = true;
            }
            Event::Disconnected { participant } => {
                if let Some(seat) = room.seats.get_mut(&participant) {
                    seat.connected = false;
                }
            }
            Event::TrackPublished { track, kind: k, .. } => {
                room.kinds.insert(track, kind(k));
                if let Some(seat) = room.seats.get_mut(&track.participant) {
                    seat.send(ServerMessage::TrackPublished {
                        track: wire_track(track),
                        participant: wire_id(track.participant),
                        kind: kind(k),
                        mid: track.mid.to_string(),
                    });
                }
            }
            Event::TrackRouted {
                subscriber,
                track,
                mid,
            } => {
                let track_kind = room.kinds.get(&track).copied();
                if let (Some(seat), Some(track_kind)) =
                    (room.seats.get_mut(&subscriber), track_kind)
                {
                    seat.send(ServerMessage::TrackPublished {
                        track: wire_track(track),
                        participant: wire_id(track.participant),
                        kind: track_kind,
                        mid: mid.to_string(),
                    });
                }
            }
            Event::TrackUnpublished { track, .. } => {
                room.kinds.remove(&track);
                room.broadcast(
                    None,
                    &ServerMessage::TrackUnpublished {
                        track: wire_track(track),
                        participant: wire_id(track.participant),
                    },
                );
            }
            Event::TrackMuted { track, muted, .. } => room.broadcast(
                None,
                &ServerMessage::TrackMuted {
                    track: wire_track(track),
                    participant: wire_id(track.participant),
                    muted,
                },
            ),
            Event::TrackRefused {
                participant,
                reason,
                ..
            } => {
                if let Some(seat) = room.seats.get_mut(&participant) {
                    seat.send(ServerMessage::error(
                        ErrorCode::TooManyTracks,
                        reason.to_string(),
                    ));
                }
            }
            Event::FirstMedia { participant } => {
                if let Some(seat) = room.seats.get(&participant) {
                    self.metrics
                        .join_to_first_media
                        .observe(seat.joined_at.elapsed().as_secs_f64());
                }
            }
            Event::Left {
                participant,
                reason,
                ..
            } => {
                self.depart(&mut state, room_id, participant, reason);
                return;
            }
            Event::Joined { .. } | Event::KeyframeRequested { .. } | Event::Rtt { .. } => {}
        }
        if start {
            self.check_running(room);
        }
    }

    /// Marks the visit `in_progress` the first time a clinician and a patient are in the call.
    fn check_running(&self, room: &mut Room) {
        if !room.in_progress && room.call_running() {
            room.in_progress = true;
            self.mark_in_progress(room.tenant.clone(), room.visit.clone());
        }
    }

    /// Takes `participant`'s seat out of room `room_id` — for an SFU room once the SFU says it
    /// left, for a Chime room at once: closes its socket with the code for `reason`, tells the
    /// others, audits (the remover already audited a removal) and drops an empty room.
    fn depart(
        &self,
        state: &mut State,
        room_id: RoomId,
        participant: ParticipantId,
        reason: LeaveReason,
    ) {
        let Some(room) = state.rooms.get_mut(&room_id) else {
            return;
        };
        let seat = room.seats.remove(&participant);
        let reason = match (reason, &seat) {
            (LeaveReason::Removed, _) => LeftReason::Removed,
            (LeaveReason::Failed, _) => LeftReason::Failed,
            (LeaveReason::Left, Some(seat)) => seat.leave_reason,
            (LeaveReason::Left, None) => LeftReason::Left,
        };
        if let Some(mut seat) = seat {
            seat.close(match reason {
                LeftReason::Removed => CloseCode::Removed,
                LeftReason::VisitEnded => CloseCode::VisitOver,
                LeftReason::Failed => CloseCode::Unavailable,
                LeftReason::Left | LeftReason::Dropped => CloseCode::Normal,
            });
        }
        room.broadcast(
            None,
            &ServerMessage::ParticipantLeft {
                participant: wire_id(participant),
                reason,
            },
        );
        // The remover already audited `participant.removed`.
        if reason != LeftReason::Removed {
            let reason_name = reason.as_str();
            self.audit(
                NewEntry::success(
                    &room.tenant,
                    &actor(participant),
                    "participant.left",
                    Some(&room.visit),
                )
                .with_details(
                    json!({"participant_id": wire_id(participant), "reason": reason_name}),
                ),
            );
        }
        if room.seats.is_empty() {
            state.rooms.remove(&room_id);
        }
        state.index.remove(&participant);
    }

    /// `waiting → in_progress`, audited, once a clinician and a patient are in the call.
    fn mark_in_progress(&self, tenant: String, visit: String) {
        let app = Arc::clone(&self.app);
        tokio::spawn(async move {
            if let Err(error) = lifecycle::mark_in_progress(&app, &tenant, &visit).await {
                tracing::error!(%error, "marking a visit in progress failed");
            }
        });
    }

    async fn watch_visits(self: Arc<Self>, mut events: broadcast::Receiver<VisitEvent>) {
        loop {
            match events.recv().await {
                Ok(VisitEvent::Closed {
                    tenant_id,
                    visit_id,
                }) => self.end_visit(&tenant_id, &visit_id).await,
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "signaling missed visit events");
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    /// Tells everyone in the visit's room that it ended and takes them out of the SFU; their
    /// sockets close with 4410 as each leaves.
    async fn end_visit(&self, tenant: &str, visit: &str) {
        let Some(room) = uuid_id(visit).map(RoomId) else {
            return;
        };
        let participants: Vec<ParticipantId> = {
            let mut state = self.state();
            let Some(room_state) = state.rooms.get_mut(&room) else {
                return;
            };
            if room_state.tenant != tenant {
                return;
            }
            for seat in room_state.seats.values_mut() {
                seat.leave_reason = LeftReason::VisitEnded;
                seat.send(ServerMessage::VisitEnded);
            }
            let participants: Vec<ParticipantId> = room_state.seats.keys().copied().collect();
            if room_state.chime {
                for participant in participants {
                    self.depart(&mut state, room, participant, LeaveReason::Left);
                }
                return;
            }
            participants
        };
        let worker = self.worker(room);
        for participant in participants {
            let _ = worker.command(Command::Leave { participant }).await;
        }
    }

    async fn fold_stats(self: Arc<Self>) {
        let mut last = vec![sfu::driver::WorkerStats::default(); self.workers.len()];
        let mut tick = tokio::time::interval(METRICS_PERIOD);
        loop {
            tick.tick().await;
            for (index, (worker, last)) in self.workers.iter().zip(&mut last).enumerate() {
                let now = worker.stats();
                self.metrics.observe_worker(index, last, &now);
                *last = now;
            }
        }
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
}
