//! The rooms of this node, driven: the hub owns the sockets' queues, each room's state
//! machine (`crate::room`) and media backend (`crate::backend`), and carries out what a room
//! asks — frames and closes on sockets, media commands on its backend, audit rows and status
//! changes through the visit domain (`api::visit`).
//!
//! Sockets reach the hub through [`crate::ws`]; the SFU's events through one pump task per
//! worker; the api's visit events through one more. One `std` mutex guards the state: it is
//! never held across an `.await`, and everything done under it is a room input, a map update
//! or a non-blocking channel send, so every frame leaves in the order its room queued it.
//! Media commands, audit rows and status changes run after the lock is released; audit rows
//! and status changes on tracked background tasks, so that a slow disk never delays SDP or
//! events of a call and [`Hub::shutdown`] can wait for every one of them.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use api::App;
use api::audit::NewEntry;
use api::config::MediaBackend;
use api::visit::lifecycle;
use api::visit::participants::Admission;
use api::visit::{self, VisitError};
use serde_json::json;
use sfu::core::{ParticipantId, RoomId};
use sfu::driver::{Driver, Handle, worker_for};
use str0m::change::SdpOffer;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backend::chime::ChimeRoom;
use crate::backend::sfu::{SfuRoom, refused_join_close};
use crate::backend::{Backend, BackendError};
use crate::metrics::{Metrics, MetricsError};
use crate::protocol::{CloseCode, ErrorCode, Role, ServerMessage};
pub use crate::room::Refusal;
use crate::room::{Act, ConnId, Joining, MediaCommand, Output, Room};
use crate::session::{Identity, Limits};
use crate::wire::{actor, uuid_id, wire_id};

mod events;
mod requests;

/// Frames queued for one socket before it counts as too slow and is detached (it may resume).
const OUTBOUND_QUEUE: usize = 256;
/// Length of resume tokens (base62, ~190 bits).
const SESSION_TOKEN_LEN: usize = 32;
/// How often SFU statistics are folded into the metrics.
const METRICS_PERIOD: Duration = Duration::from_millis(500);

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
    id: ConnId,
    tx: mpsc::Sender<Outbound>,
}

impl Conn {
    /// The connection's id (for [`Hub::disconnected`] and [`Hub::request`]).
    pub fn id(&self) -> ConnId {
        self.id
    }
}

/// One room and the backend its media runs on.
struct Entry {
    room: Room,
    backend: Backend,
}

#[derive(Default)]
struct State {
    rooms: HashMap<RoomId, Entry>,
    index: HashMap<ParticipantId, RoomId>,
    conns: HashMap<ConnId, mpsc::Sender<Outbound>>,
}

/// A room's output that runs after the lock is released.
enum Pending {
    Media(MediaCommand),
    Audit(NewEntry),
    InProgress { tenant: String, visit: String },
}

/// What [`Hub::shutdown`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    /// Seats whose sockets were told and closed, their departures audited.
    pub seats: usize,
    /// Whether every background task (audit rows, Chime calls) and SFU worker finished
    /// before the deadline.
    pub complete: bool,
}

/// Every room of this node. See the [module documentation](self).
pub struct Hub {
    app: Arc<App>,
    /// Emptied by [`Hub::shutdown`], which lets the SFU worker threads end.
    workers: RwLock<Vec<Handle>>,
    drivers: Mutex<Vec<JoinHandle<io::Result<()>>>>,
    state: Mutex<State>,
    metrics: Metrics,
    limits: Limits,
    next_id: AtomicU64,
    closing: AtomicBool,
    tasks: TaskTracker,
    stop: CancellationToken,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("closing", &self.closing)
            .finish_non_exhaustive()
    }
}

/// The participant a request names, or the error frame for a malformed id.
fn target(text: &str) -> Result<ParticipantId, ServerMessage> {
    uuid_id(text)
        .map(ParticipantId)
        .ok_or_else(|| ServerMessage::error(ErrorCode::UnknownParticipant, "not a participant id"))
}

fn stale() -> ServerMessage {
    ServerMessage::error(
        ErrorCode::Unauthorized,
        "this socket no longer holds the seat",
    )
}

fn invalid_sdp(error: impl std::fmt::Display) -> ServerMessage {
    ServerMessage::error(ErrorCode::InvalidSdp, error.to_string())
}

/// The audit row of a room's act.
fn audit_entry(room: &Room, act: Act) -> NewEntry {
    let (participant, event, details) = match act {
        Act::Joined { participant, role } | Act::Waiting { participant, role } => {
            let event = if matches!(act, Act::Joined { .. }) {
                "participant.joined"
            } else {
                "participant.waiting"
            };
            let details = json!({"participant_id": wire_id(participant), "role": role});
            (participant, event, details)
        }
        Act::Resumed { participant } => (
            participant,
            "participant.resumed",
            json!({"participant_id": wire_id(participant)}),
        ),
        Act::Admitted { by, participant } => (
            by,
            "participant.admitted",
            json!({"participant_id": wire_id(participant)}),
        ),
        Act::Left {
            participant,
            reason,
        } => (
            participant,
            "participant.left",
            json!({"participant_id": wire_id(participant), "reason": reason}),
        ),
    };
    NewEntry::success(
        room.tenant(),
        &actor(participant),
        event,
        Some(room.visit()),
    )
    .with_details(details)
}

/// How signaling refuses a grant holder the visit domain would not seat.
fn admission_refusal(error: VisitError) -> Refusal {
    match error {
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
    }
}

fn shutting_down() -> Refusal {
    Refusal::new(
        ErrorCode::MediaUnavailable,
        "the server is shutting down; join again shortly",
        CloseCode::ShuttingDown,
    )
}

impl Hub {
    /// A hub over the SFU `drivers` (worker `i` at index `i`, rooms placed with
    /// [`worker_for`]). Spawns, on the current runtime, one task per worker that relays its
    /// events, one that disconnects ended visits, and one that folds SFU statistics into the
    /// metrics, which it registers in the api's registry. They run until
    /// [`Hub::shutdown`].
    pub fn start(
        app: Arc<App>,
        drivers: Vec<Driver>,
        limits: Limits,
    ) -> Result<Arc<Self>, MetricsError> {
        let metrics = Metrics::register(app.metrics.registry())?;
        let mut workers = Vec::with_capacity(drivers.len());
        let mut streams = Vec::with_capacity(drivers.len());
        let mut tasks = Vec::with_capacity(drivers.len());
        for driver in drivers {
            workers.push(driver.handle);
            streams.push(driver.events);
            tasks.push(driver.task);
        }
        let visit_events = app.events.subscribe();
        let hub = Arc::new(Self {
            app,
            workers: RwLock::new(workers),
            drivers: Mutex::new(tasks),
            state: Mutex::new(State::default()),
            metrics,
            limits,
            next_id: AtomicU64::new(1),
            closing: AtomicBool::new(false),
            tasks: TaskTracker::new(),
            stop: CancellationToken::new(),
        });
        for events in streams {
            hub.tasks.spawn(Arc::clone(&hub).pump(events));
        }
        hub.tasks.spawn(Arc::clone(&hub).watch_visits(visit_events));
        hub.tasks.spawn(Arc::clone(&hub).fold_stats());
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

    fn worker(&self, room: RoomId) -> Option<Handle> {
        let workers = self.workers.read().unwrap_or_else(|p| p.into_inner());
        workers.get(worker_for(room, workers.len())).cloned()
    }

    fn backend(
        &self,
        room: RoomId,
        admission: &Admission,
        tenant: &str,
        visit: &str,
    ) -> Option<Backend> {
        Some(match admission.backend {
            MediaBackend::Sfu => Backend::Sfu(SfuRoom::new(room, self.worker(room)?)),
            MediaBackend::Chime => Backend::Chime(ChimeRoom::new(
                Arc::clone(&self.app),
                tenant.to_owned(),
                visit.to_owned(),
                self.tasks.clone(),
            )),
        })
    }

    /// Carries out the outputs of room `room_id` that belong under the lock — frames and
    /// closes, queued on their sockets in order (a socket whose queue is full is detached;
    /// its seat waits for a resume) — and answers the rest, for [`Hub::execute`]. A
    /// participant in `touched` no longer seated is unindexed; an empty room is forgotten.
    fn flush(
        &self,
        state: &mut State,
        room_id: RoomId,
        touched: &[ParticipantId],
    ) -> VecDeque<Pending> {
        let mut pending = VecDeque::new();
        let State {
            rooms,
            index,
            conns,
        } = state;
        let Some(entry) = rooms.get_mut(&room_id) else {
            return pending;
        };
        while let Some(output) = entry.room.poll_output() {
            match output {
                Output::Send { conn, message } => {
                    let delivered = conns
                        .get(&conn)
                        .is_some_and(|tx| tx.try_send(Outbound::Frame(message)).is_ok());
                    if !delivered && conns.remove(&conn).is_some() {
                        entry.room.detach(conn);
                    }
                }
                Output::Close { conn, code } => {
                    if let Some(tx) = conns.remove(&conn) {
                        let _ = tx.try_send(Outbound::Close(code));
                    }
                }
                Output::Media(command) => pending.push_back(Pending::Media(command)),
                Output::Audit(act) => {
                    pending.push_back(Pending::Audit(audit_entry(&entry.room, act)))
                }
                Output::InProgress => pending.push_back(Pending::InProgress {
                    tenant: entry.room.tenant().to_owned(),
                    visit: entry.room.visit().to_owned(),
                }),
                Output::FirstMedia { after } => {
                    self.metrics
                        .join_to_first_media
                        .observe(after.as_secs_f64());
                }
            }
        }
        for participant in touched {
            if !entry.room.is_seated(*participant) && index.get(participant) == Some(&room_id) {
                index.remove(participant);
            }
        }
        if entry.room.is_empty() {
            rooms.remove(&room_id);
        }
        pending
    }

    /// Carries out `pending` for room `room_id` in order: audit rows and status changes on
    /// tracked tasks, media commands on the room's backend, whose immediate events go back
    /// into the room (and whose outputs join the queue). A failed `Join` stops the rest (the
    /// seat is refused: its audit rows must not follow) and a failed `Admit` leaves the
    /// patient waiting; the first failure is returned, for the caller to answer.
    async fn execute(
        &self,
        room_id: RoomId,
        mut pending: VecDeque<Pending>,
    ) -> Result<(), BackendError> {
        let mut failure = None;
        while let Some(next) = pending.pop_front() {
            let command = match next {
                Pending::Audit(entry) => {
                    self.audit(entry);
                    continue;
                }
                Pending::InProgress { tenant, visit } => {
                    let app = Arc::clone(&self.app);
                    self.tasks.spawn(async move {
                        if let Err(error) = lifecycle::mark_in_progress(&app, &tenant, &visit).await
                        {
                            tracing::error!(%error, "marking a visit in progress failed");
                        }
                    });
                    continue;
                }
                Pending::Media(command) => command,
            };
            let Some(backend) = self.state().rooms.get(&room_id).map(|e| e.backend.clone()) else {
                continue;
            };
            let (joining, admitting) = match &command {
                MediaCommand::Join { participant, .. } => (Some(*participant), None),
                MediaCommand::Admit { participant } => (None, Some(*participant)),
                _ => (None, None),
            };
            let subject = joining.or(admitting);
            match backend.execute(command).await {
                Ok(events) => {
                    let mut state = self.state();
                    let mut touched: Vec<ParticipantId> = subject.into_iter().collect();
                    if let Some(entry) = state.rooms.get_mut(&room_id) {
                        if let Some(participant) = joining {
                            entry.room.media_joined(participant);
                        }
                        for event in events {
                            touched.extend(event.subject());
                            entry.room.on_media(Instant::now(), event);
                        }
                    }
                    pending.extend(self.flush(&mut state, room_id, &touched));
                }
                Err(error) => {
                    if let Some(participant) = admitting {
                        let mut state = self.state();
                        if let Some(entry) = state.rooms.get_mut(&room_id) {
                            entry.room.admit_failed(participant);
                        }
                    }
                    if joining.is_some() {
                        return Err(error);
                    }
                    tracing::debug!(%error, "a media command failed");
                    failure.get_or_insert(error);
                }
            }
        }
        failure.map_or(Ok(()), Err)
    }

    fn audit(&self, entry: NewEntry) {
        let app = Arc::clone(&self.app);
        self.tasks.spawn(async move {
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

    /// Seats the holder of `grant` with its socket `conn`: the visit domain says whether it
    /// may (the visit is live, it was not removed), its room seats it — waiting when the
    /// visit has a waiting room and this is a patient not admitted before — and the media
    /// backend takes it in.
    pub async fn join(
        self: &Arc<Self>,
        conn: Conn,
        grant: &str,
        offer: Option<String>,
    ) -> Result<Identity, Refusal> {
        if self.closing.load(Ordering::Acquire) {
            return Err(shutting_down());
        }
        let (claims, participant, room_id) = self.verify(grant)?;
        let admission =
            visit::participants::admission(&self.app, &claims.tenant, &claims.visit, &claims.sub)
                .await
                .map_err(admission_refusal)?;
        let role = Role::from(claims.role);
        let backend = self
            .backend(room_id, &admission, &claims.tenant, &claims.visit)
            .ok_or_else(shutting_down)?;
        if offer.is_some() && !backend.takes_sdp() {
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
        // An admitted patient of a Chime visit with a waiting room coming back (a reload) is
        // in at once, but its start answer had no JoinToken: fetch its attendee first.
        let mut attendee = None;
        let mut readmit = true;
        if let Backend::Chime(chime) = &backend
            && admission.waiting_room
            && role == Role::Patient
        {
            let admitted_before = self
                .state()
                .rooms
                .get(&room_id)
                .is_some_and(|entry| entry.room.was_admitted(participant));
            if admitted_before {
                attendee = Some(chime.attendee(participant).await.map_err(|error| {
                    tracing::warn!(%error, "fetching a Chime attendee for a rejoin failed");
                    Refusal::new(
                        ErrorCode::MediaUnavailable,
                        "the meeting cannot be reached; try again",
                        CloseCode::Unavailable,
                    )
                })?);
            }
            // Admitted only after the attendee was (not) fetched: wait again rather than be
            // let in without a JoinToken; `admit` hands it one.
            readmit = attendee.is_some();
        }
        let conn_id = conn.id;
        let joining = Joining {
            role,
            name: claims.name.clone(),
            conn: conn_id,
            session: api::tokens::random_base62(SESSION_TOKEN_LEN),
            offer,
            readmit,
            attendee,
        };
        let (seated, pending) = {
            let mut state = self.state();
            // Checked again under the lock: a shutdown that began meanwhile has emptied
            // every room and must not find a new seat.
            if self.closing.load(Ordering::Acquire) {
                return Err(shutting_down());
            }
            let max_seats = backend.seat_cap(self.limits.max_participants);
            let entry = state.rooms.entry(room_id).or_insert_with(|| Entry {
                room: Room::new(
                    claims.tenant.clone(),
                    claims.visit.clone(),
                    admission.waiting_room,
                    admission.in_progress,
                    max_seats,
                ),
                backend,
            });
            let seated = entry.room.join(Instant::now(), participant, joining);
            if seated.is_ok() {
                state.conns.insert(conn_id, conn.tx);
                state.index.insert(participant, room_id);
            }
            (seated, self.flush(&mut state, room_id, &[participant]))
        };
        if let Err(refusal) = seated {
            // What the room queued before refusing (a replaced seat) still happens.
            let _ = self.execute(room_id, pending).await;
            return Err(refusal);
        }
        if let Err(error) = self.execute(room_id, pending).await {
            let close = refused_join_close(&error);
            let frame = error.frame();
            let pending = {
                let mut state = self.state();
                state.conns.remove(&conn_id);
                if let Some(entry) = state.rooms.get_mut(&room_id) {
                    entry.room.join_failed(participant);
                }
                self.flush(&mut state, room_id, &[participant])
            };
            let _ = self.execute(room_id, pending).await;
            return Err(Refusal { frame, close });
        }
        Ok(Identity {
            participant: claims.sub,
            role,
        })
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
        if self.closing.load(Ordering::Acquire) {
            return Err(shutting_down());
        }
        let (claims, participant, room_id) = self.verify(grant)?;
        let pending = {
            let mut state = self.state();
            let conn_id = conn.id;
            state.conns.insert(conn_id, conn.tx);
            let resumed = state
                .rooms
                .get_mut(&room_id)
                .is_some_and(|entry| entry.room.resume(participant, session, conn_id));
            if !resumed {
                state.conns.remove(&conn_id);
                return Err(Refusal::new(
                    ErrorCode::Unauthorized,
                    "no seat to resume; join again",
                    CloseCode::Unauthorized,
                ));
            }
            self.flush(&mut state, room_id, &[participant])
        };
        let _ = self.execute(room_id, pending).await;
        Ok(Identity {
            participant: claims.sub,
            role: Role::from(claims.role),
        })
    }

    /// The socket `conn_id` of a seated participant ended without `leave`: the seat waits
    /// [`Limits::resume_window`] for a `resume`, then leaves.
    pub fn disconnected(self: &Arc<Self>, conn_id: ConnId, identity: &Identity) {
        let Some(participant) = uuid_id(&identity.participant).map(ParticipantId) else {
            return;
        };
        let expiry = {
            let mut state = self.state();
            state.conns.remove(&conn_id);
            let Some(room_id) = state.index.get(&participant).copied() else {
                return;
            };
            state
                .rooms
                .get_mut(&room_id)
                .and_then(|entry| entry.room.socket_lost(participant, conn_id))
                .map(|generation| (room_id, generation))
        };
        let Some((room_id, generation)) = expiry else {
            return;
        };
        let hub = Arc::clone(self);
        let window = self.limits.resume_window;
        self.tasks.spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(window) => hub.expire(room_id, participant, generation).await,
                () = hub.stop.cancelled() => {}
            }
        });
    }

    async fn expire(&self, room_id: RoomId, participant: ParticipantId, generation: u64) {
        let pending = {
            let mut state = self.state();
            let Some(entry) = state.rooms.get_mut(&room_id) else {
                return;
            };
            entry.room.seat_expired(participant, generation);
            self.flush(&mut state, room_id, &[participant])
        };
        let _ = self.execute(room_id, pending).await;
    }

    /// Drains this node's signaling for a shutdown, bounded by `deadline`: new joins and
    /// resumes are refused from now on; every seat is told (`server_shutdown`), its socket
    /// closed with 4503 and its departure audited (`participant.left`, reason
    /// `server_shutdown`); then the hub's tasks stop, the audit rows and Chime calls in
    /// flight are awaited, and the SFU workers are stopped and awaited.
    pub async fn shutdown(&self, deadline: tokio::time::Instant) -> Drained {
        self.closing.store(true, Ordering::Release);
        let mut seats = 0;
        let mut pending = Vec::new();
        {
            let mut state = self.state();
            let rooms: Vec<RoomId> = state.rooms.keys().copied().collect();
            for room_id in rooms {
                if let Some(entry) = state.rooms.get_mut(&room_id) {
                    entry.room.shutdown();
                }
                let work = self.flush(&mut state, room_id, &[]);
                seats += work
                    .iter()
                    .filter(|p| matches!(p, Pending::Audit(_)))
                    .count();
                pending.push((room_id, work));
            }
            state.rooms.clear();
            state.index.clear();
        }
        for (room_id, work) in pending {
            let _ = self.execute(room_id, work).await;
        }
        // The worker threads end once the last handle is gone.
        self.workers
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.stop.cancel();
        self.tasks.close();
        let mut complete = tokio::time::timeout_at(deadline, self.tasks.wait())
            .await
            .is_ok();
        let drivers = std::mem::take(&mut *self.drivers.lock().unwrap_or_else(|p| p.into_inner()));
        for driver in drivers {
            match tokio::time::timeout_at(deadline, driver).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(error))) => tracing::warn!(%error, "an SFU worker ended with an error"),
                Ok(Err(error)) => tracing::warn!(%error, "an SFU worker's task failed"),
                Err(_) => complete = false,
            }
        }
        Drained { seats, complete }
    }
}
