//! A load run: visits started at the ramp rate, each with a patient and a clinician peer,
//! held together for the duration, then left and ended; the host sampled throughout.
//!
//! Timeline: visit `i` starts at `i / ramp` seconds; every visit is held until the last one
//! started plus `duration` (the hold window), then both peers send `leave` and the visit is
//! ended over the API. Ctrl-C (the `shutdown` channel) cuts the ramp and the hold short and
//! goes straight to leaving and ending every visit made so far.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{Api, ApiError, Key, StartedVisit};
use crate::impair::Impairment;
use crate::janus::{self, Handle, Janus, Seat};
use crate::lite::{self, RtpMedia};
use crate::media::{Media, MediaError, Video};
use crate::peer::{self, PeerError, PeerKind, Seen, Transport};
use crate::prom::{self, Histogram};
use crate::report::{
    Efficiency, Generator, Impaired, KindStats, Peers, Percentiles, Report, Rtt, RunInfo, Server,
    Visits,
};
use crate::stats::{RxStream, percentile};
use crate::sys::{self, ProcSample};

/// After `leave`, how long a peer may take to see its socket closed.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the `end` call may take.
const END_TIMEOUT: Duration = Duration::from_secs(15);
/// Beyond the hold window, the time left for leaving and ending before peers give up.
const CLEANUP_GRACE: Duration = Duration::from_secs(30);
/// How long after the last visit started the server's cost starts to be measured, so that
/// joins are not counted in it (at most half the hold).
const EFFICIENCY_SETTLE: Duration = Duration::from_secs(5);
/// How often the host is sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// Why a relay run's visit failed when the server hands out no TURN server.
const NO_TURN: &str = "no TURN server in the start answer (set turn.urls and turn.shared_secret)";
/// The most visits one run may ask for: each is two peer connections and four RTP streams.
pub const MAX_VISITS: usize = 5000;

/// The server under load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// Bedside: visits over its REST API, peers over its `/ws` signaling.
    #[default]
    Bedside,
    /// Janus's VideoRoom plugin over its HTTP API ([`crate::janus`]): a room per visit,
    /// light peers only, for the side-by-side comparison.
    Janus,
}

impl std::str::FromStr for Target {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "bedside" => Ok(Target::Bedside),
            "janus" => Ok(Target::Janus),
            other => Err(format!("unknown target {other:?}: use bedside or janus")),
        }
    }
}

/// Which process is the server, for CPU and memory figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerProcess {
    /// The process listening on the URL's port, when the URL names this host's loopback.
    Detect,
    /// This pid.
    Pid(u32),
    /// Do not sample a server (e.g. it runs in this very process, as in the smoke test).
    None,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Base URL of the server, `http://127.0.0.1:8080`.
    pub url: String,
    /// An admin API key of a tenant (it creates a clinician per visit).
    pub api_key: String,
    /// Concurrent visits.
    pub visits: usize,
    /// How long they are held together once the last has started.
    pub duration: Duration,
    /// Visits started per second.
    pub ramp_per_sec: f64,
    /// The video every peer sends.
    pub video: Video,
    /// Every peer sends its camera as the q/h/f simulcast layers instead (`--simulcast`).
    pub simulcast: bool,
    /// How every peer's media reaches the SFU.
    pub transport: Transport,
    /// Which WebRTC stack the peers run on (`--peer`).
    pub peer: PeerKind,
    /// The server under load (`--target`); for Janus, `url` is its HTTP API
    /// (`http://10.77.0.1:8088/janus`) and `api_key` is not used.
    pub target: Target,
    /// How to find the server process.
    pub server: ServerProcess,
    /// A peer that has no remote RTP this long after its start call failed to join.
    pub join_timeout: Duration,
    /// Every patient's UDP media runs through this impaired path (`--impair`); clinicians'
    /// does not, so what is measured is one subscriber's link.
    pub impair: Option<Impairment>,
}

/// The run could not be made at all (as opposed to peers failing, which the report counts).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The media samples could not be loaded.
    #[error(transparent)]
    Media(#[from] MediaError),
    /// The HTTP client could not be built.
    #[error("HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    /// Janus did not give the run its admin session and handle.
    #[error(transparent)]
    Janus(#[from] janus::JanusError),
    /// The configuration cannot work.
    #[error("{0}")]
    Config(String),
}

/// Counters a progress display reads while the run goes on.
#[derive(Debug, Default)]
pub struct Live {
    /// Visits whose creation began.
    pub started: AtomicUsize,
    /// Visits with both peers receiving media.
    pub joined: AtomicUsize,
    /// Visits that failed to.
    pub failed: AtomicUsize,
    /// Visits left and ended (or given up on).
    pub finished: AtomicUsize,
}

/// How one peer did.
#[derive(Debug, Default)]
struct PeerOutcome {
    /// Why it did not join; `None` when it joined.
    failure: Option<String>,
    /// Start call → first remote RTP.
    join: Option<Duration>,
    /// Its received streams at the end.
    streams: Vec<(RtpCodecKind, RxStream)>,
    /// The type and protocol of the local candidate ICE selected (`relay/udp`), if it
    /// connected.
    path: Option<String>,
    /// Whether it ran behind the impairment relay.
    impaired: bool,
    /// `track_paused` and `track_resumed` messages it received.
    paused: u64,
    resumed: u64,
    /// Its relay's (delivered, lost, overflowed) downlink datagrams.
    relay: (u64, u64, u64),
    /// Media frames it sent and frames it skipped behind schedule (light peers).
    frames: (u64, u64),
}

/// How one visit did.
#[derive(Debug, Default)]
struct VisitOutcome {
    peers: Vec<PeerOutcome>,
    ended: bool,
}

/// Shared by every visit task.
struct Shared {
    api: Api,
    admin: Key,
    media: Arc<Media>,
    /// The media cut into RTP once, for light peers; `None` for webrtc-rs peers.
    rtp: Option<Arc<RtpMedia>>,
    transport: Transport,
    impair: Option<Impairment>,
    join_timeout: Duration,
    hold_end: Instant,
    deadline: Instant,
    live: Arc<Live>,
    /// Janus and the run's admin handle (rooms are made and destroyed on it), for
    /// `--target janus`.
    janus: Option<(Janus, Handle)>,
    /// What every peer of the run sees, for the packets received in the measured window.
    seen: std::sync::Mutex<Vec<Arc<Seen>>>,
}

impl Shared {
    /// RTP packets every peer of the run has received so far.
    fn received(&self) -> u64 {
        let seen = match self.seen.lock() {
            Ok(seen) => seen,
            Err(poisoned) => poisoned.into_inner(),
        };
        (seen.iter().map(|s| s.counts()))
            .map(|(audio, video)| u64::from(audio) + u64::from(video))
            .sum()
    }

    /// The server's `/metrics`; none for Janus, which has no such page.
    async fn metrics(&self) -> Option<String> {
        match self.janus {
            Some(_) => None,
            None => self.api.metrics().await,
        }
    }

    /// A new peer's [`Seen`], counted in [`Shared::received`].
    fn new_seen(&self) -> Arc<Seen> {
        let seen = Arc::new(Seen::default());
        if let Ok(mut all) = self.seen.lock() {
            all.push(Arc::clone(&seen));
        }
        seen
    }
}

fn peer_reason(error: &PeerError) -> String {
    match error {
        PeerError::WebRtc(_) => "webrtc error".to_owned(),
        PeerError::Str0m(_) => "str0m error".to_owned(),
        PeerError::Socket(_) => "signaling socket error".to_owned(),
        PeerError::Json(_) | PeerError::Protocol(_) => "signaling protocol error".to_owned(),
        PeerError::Signaling { code, .. } => format!("signaling error {code}"),
        PeerError::Gathering(_) => "ice gathering timeout".to_owned(),
        PeerError::Deadline => "deadline".to_owned(),
        PeerError::Relay(_) => "impairment relay error".to_owned(),
        PeerError::Janus(error) => error.reason(),
    }
}

/// A peer being run: its task, what it sees, how to talk to it, when its start call began.
struct Running {
    seen: Arc<Seen>,
    task: tokio::task::JoinHandle<Result<(), PeerError>>,
    inject: mpsc::Sender<Message>,
    started: Instant,
}

impl Running {
    fn spawn(
        shared: &Shared,
        grant: crate::client::Grant,
        admits: bool,
        started: Instant,
        stop: watch::Receiver<bool>,
    ) -> Running {
        let seen = shared.new_seen();
        let (inject, frames) = mpsc::channel(4);
        let options = peer::Options {
            signaling_url: grant.signaling_url,
            grant: grant.grant,
            admits,
            tolerate_errors: false,
            media: Arc::clone(&shared.media),
            transport: shared.transport,
            ice_servers: grant.ice_servers,
            deadline: shared.deadline,
            impair: if admits { None } else { shared.impair },
        };
        let task = match &shared.rtp {
            Some(rtp) => tokio::spawn(lite::participant(
                options,
                Arc::clone(rtp),
                Arc::clone(&seen),
                frames,
                stop,
            )),
            None => tokio::spawn(peer::participant(options, Arc::clone(&seen), frames, stop)),
        };
        Running {
            seen,
            task,
            inject,
            started,
        }
    }

    /// A participant of a Janus visit (`--target janus`).
    fn janus(
        shared: &Shared,
        seat: Seat,
        rtp: Arc<RtpMedia>,
        stop: watch::Receiver<bool>,
    ) -> Running {
        let seen = shared.new_seen();
        let (inject, leave) = mpsc::channel(4);
        let task = tokio::spawn(janus::participant(
            seat,
            rtp,
            Arc::clone(&seen),
            leave,
            stop,
        ));
        Running {
            seen,
            task,
            inject,
            started: Instant::now(),
        }
    }

    /// Its outcome so far: joined (with latency) or why not.
    fn join_state(&self, timeout: Duration) -> Option<Result<Duration, String>> {
        if let Some(first) = self.seen.first_media.get() {
            return Some(Ok(first.duration_since(self.started)));
        }
        if self.task.is_finished() {
            if let Some(failure) = self.seen.failure.get() {
                return Some(Err(failure.clone()));
            }
            let code = self.seen.close_code.load(Ordering::Relaxed);
            let error = self.seen.first_error.lock().ok().and_then(|e| e.clone());
            return Some(Err(match (error, code) {
                (Some(code), _) => format!("signaling error {code}"),
                (None, 0) => "stopped before media".to_owned(),
                (None, code) => format!("closed {code} before media"),
            }));
        }
        (self.started.elapsed() >= timeout).then(|| Err("no media within join timeout".to_owned()))
    }

    /// Sends `leave`, waits for the socket to close, and returns what it saw.
    async fn leave(self) -> (Arc<Seen>, Option<String>) {
        let _ = self
            .inject
            .send(Message::Text(r#"{"type":"leave"}"#.into()))
            .await;
        let mut task = self.task;
        let error = match tokio::time::timeout(LEAVE_TIMEOUT, &mut task).await {
            Ok(Ok(Ok(()))) => None,
            Ok(Ok(Err(error))) => Some(peer_reason(&error)),
            Ok(Err(_)) => Some("peer task panicked".to_owned()),
            Err(_) => {
                task.abort();
                Some("leave timeout".to_owned())
            }
        };
        (self.seen, error)
    }
}

async fn visit(n: usize, shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) -> VisitOutcome {
    shared.live.started.fetch_add(1, Ordering::Relaxed);
    let outcome = visit_inner(n, &shared, &mut shutdown).await;
    shared.live.finished.fetch_add(1, Ordering::Relaxed);
    outcome
}

fn both_failed(live: &Live, reason: &str) -> VisitOutcome {
    live.failed.fetch_add(1, Ordering::Relaxed);
    let peer = || PeerOutcome {
        failure: Some(reason.to_owned()),
        ..PeerOutcome::default()
    };
    VisitOutcome {
        peers: vec![peer(), peer()],
        ended: false,
    }
}

/// A visit as made on the server, to be ended there.
enum Made {
    /// A Bedside visit.
    Bedside(StartedVisit),
    /// A Janus room, destroyed over the run's admin handle.
    Janus {
        /// The API.
        janus: Janus,
        /// The run's admin handle.
        admin: Handle,
        /// The room.
        room: u64,
    },
}

/// Makes a Bedside visit and starts its two peers; a visit that could not be made is its
/// outcome already.
async fn start_bedside(
    n: usize,
    shared: &Shared,
    shutdown: &mut watch::Receiver<bool>,
    stop: &watch::Receiver<bool>,
) -> Result<(Made, Vec<Running>, VisitOutcome), VisitOutcome> {
    let created = tokio::select! {
        created = shared.api.create_visit(&shared.admin, n) => created,
        _ = shutdown.changed() => return Err(both_failed(&shared.live, "interrupted")),
    };
    let (created, code) = match created {
        Ok(created) => created,
        Err(error) => return Err(both_failed(&shared.live, &error.reason())),
    };
    let mut outcome = VisitOutcome::default();
    let patient_started = Instant::now();
    let patient = match shared.api.start_patient(&created, &code).await {
        Ok(grant) if shared.transport == Transport::Relay && grant.ice_servers.is_empty() => {
            let mut failed = both_failed(&shared.live, NO_TURN);
            failed.ended = end(shared, &Made::Bedside(created)).await.is_ok();
            return Err(failed);
        }
        Ok(grant) => Running::spawn(shared, grant, false, patient_started, stop.clone()),
        Err(error) => {
            let mut failed = both_failed(&shared.live, &error.reason());
            failed.ended = end(shared, &Made::Bedside(created)).await.is_ok();
            return Err(failed);
        }
    };
    let clinician_started = Instant::now();
    let clinician = match shared.api.start_clinician(&created).await {
        Ok(grant) => Some(Running::spawn(
            shared,
            grant,
            true,
            clinician_started,
            stop.clone(),
        )),
        Err(error) => {
            outcome.peers.push(PeerOutcome {
                failure: Some(error.reason()),
                ..PeerOutcome::default()
            });
            None
        }
    };
    let running = std::iter::once(patient).chain(clinician).collect();
    Ok((Made::Bedside(created), running, outcome))
}

/// Makes a Janus room and starts its two participants (feeds 1 and 2).
async fn start_janus(
    shared: &Shared,
    (janus, admin): &(Janus, Handle),
    shutdown: &mut watch::Receiver<bool>,
    stop: &watch::Receiver<bool>,
) -> Result<(Made, Vec<Running>, VisitOutcome), VisitOutcome> {
    let room = tokio::select! {
        room = janus.create_room(*admin) => room,
        _ = shutdown.changed() => return Err(both_failed(&shared.live, "interrupted")),
    };
    let room = room.map_err(|error| both_failed(&shared.live, &error.reason()))?;
    let Some(rtp) = shared.rtp.clone() else {
        return Err(both_failed(&shared.live, "janus needs the light peer"));
    };
    let running = [(1, 2), (2, 1)]
        .into_iter()
        .map(|(me, other)| {
            let seat = Seat {
                janus: janus.clone(),
                room,
                me,
                other,
                deadline: shared.deadline,
            };
            Running::janus(shared, seat, Arc::clone(&rtp), stop.clone())
        })
        .collect();
    let made = Made::Janus {
        janus: janus.clone(),
        admin: *admin,
        room,
    };
    Ok((made, running, VisitOutcome::default()))
}

async fn visit_inner(
    n: usize,
    shared: &Shared,
    shutdown: &mut watch::Receiver<bool>,
) -> VisitOutcome {
    let (stop_tx, stop) = watch::channel(false);
    let started = match &shared.janus {
        Some(janus) => start_janus(shared, janus, shutdown, &stop).await,
        None => start_bedside(n, shared, shutdown, &stop).await,
    };
    let (made, mut running, mut outcome) = match started {
        Ok(started) => started,
        Err(failed) => return failed,
    };

    // Joining: until each peer has media, has failed, or its join timeout passed.
    let mut states: Vec<Option<Result<Duration, String>>> = vec![None; running.len()];
    let mut interrupted = false;
    let poll = Duration::from_millis(20);
    while states.iter().any(Option::is_none) {
        for (state, peer) in states.iter_mut().zip(&running) {
            if state.is_none() {
                *state = peer.join_state(shared.join_timeout);
            }
        }
        if *shutdown.borrow() {
            interrupted = true;
            break;
        }
        tokio::time::sleep(poll).await;
    }
    let all_joined = outcome.peers.is_empty() && states.iter().all(|s| matches!(s, Some(Ok(_))));
    let counter = if all_joined {
        &shared.live.joined
    } else {
        &shared.live.failed
    };
    counter.fetch_add(1, Ordering::Relaxed);

    // Holding: until the end of the hold window, Ctrl-C, or a peer stopping on its own.
    let hold_end = tokio::time::Instant::from_std(shared.hold_end);
    while !interrupted && tokio::time::Instant::now() < hold_end {
        if running.iter().any(|p| p.task.is_finished()) {
            break;
        }
        tokio::select! {
            () = tokio::time::sleep_until(hold_end.min(tokio::time::Instant::now() + Duration::from_millis(500))) => {}
            _ = shutdown.changed() => interrupted = true,
        }
    }

    // Leaving: both at once, then the visit is ended as its clinician.
    let _ = stop_tx.send(true);
    let left = futures::future::join_all(running.drain(..).map(Running::leave)).await;
    for ((seen, _leave_error), state) in left.into_iter().zip(states) {
        let (failure, join) = match state {
            Some(Ok(latency)) => (None, Some(latency)),
            Some(Err(reason)) => (Some(reason), None),
            None => (Some("interrupted".to_owned()), None),
        };
        let relay = seen.relay.get().map_or((0, 0, 0), |stats| {
            (
                stats.delivered.load(Ordering::Relaxed),
                stats.lost.load(Ordering::Relaxed),
                stats.overflowed.load(Ordering::Relaxed),
            )
        });
        outcome.peers.push(PeerOutcome {
            failure,
            join,
            streams: seen.streams(),
            path: seen.selected.get().map(|pair| pair.local_path.clone()),
            impaired: seen.relay.get().is_some(),
            frames: (
                seen.frames_sent.load(Ordering::Relaxed),
                seen.frames_skipped.load(Ordering::Relaxed),
            ),
            paused: u64::from(seen.paused.load(Ordering::Relaxed)),
            resumed: u64::from(seen.resumed.load(Ordering::Relaxed)),
            relay,
        });
    }
    outcome.ended = end(shared, &made).await.is_ok();
    outcome
}

/// Ends the visit over the API (Bedside), or destroys its room (Janus).
async fn end(shared: &Shared, made: &Made) -> Result<(), ApiError> {
    let ended = async {
        match made {
            Made::Bedside(visit) => shared.api.end(visit).await,
            Made::Janus { janus, admin, room } => (janus.destroy_room(*admin, *room).await)
                .map_err(|_| ApiError::Missing {
                    step: "end",
                    field: "room destroyed",
                }),
        }
    };
    match tokio::time::timeout(END_TIMEOUT, ended).await {
        Ok(result) => result,
        Err(_) => Err(ApiError::Missing {
            step: "end",
            field: "answer in time",
        }),
    }
}

/// Host samples over time: (when, server, generator).
type Samples = Vec<(Instant, Option<ProcSample>, Option<ProcSample>)>;

async fn sampler(server: Option<u32>, mut stop: watch::Receiver<bool>, max: usize) -> Samples {
    let mut samples = Vec::new();
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    while samples.len() < max {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
        samples.push((
            Instant::now(),
            server.and_then(|pid| sys::sample(Some(pid))),
            sys::sample(None),
        ));
    }
    samples.push((
        Instant::now(),
        server.and_then(|pid| sys::sample(Some(pid))),
        sys::sample(None),
    ));
    samples
}

/// (mean CPU % over [from, to], peak CPU % over one interval, peak RSS MiB) of one process.
fn cpu_figures(
    samples: &Samples,
    pick: impl Fn(&(Instant, Option<ProcSample>, Option<ProcSample>)) -> Option<ProcSample>,
    from: Instant,
    to: Instant,
) -> Option<(f64, f64, f64)> {
    let points: Vec<(Instant, ProcSample)> = samples
        .iter()
        .filter_map(|s| Some((s.0, pick(s)?)))
        .collect();
    let rate = |a: &(Instant, ProcSample), b: &(Instant, ProcSample)| {
        let wall = b.0.duration_since(a.0).as_secs_f64();
        (wall > 0.0).then(|| b.1.cpu.saturating_sub(a.1.cpu).as_secs_f64() / wall * 100.0)
    };
    let peak = points
        .windows(2)
        .filter_map(|w| rate(&w[0], &w[1]))
        .fold(0.0, f64::max);
    let rss = points.iter().map(|p| p.1.rss_bytes).max()? as f64 / (1024.0 * 1024.0);
    let window: Vec<&(Instant, ProcSample)> =
        points.iter().filter(|p| p.0 >= from && p.0 <= to).collect();
    let mean = match (window.first(), window.last()) {
        (Some(a), Some(b)) if b.0 > a.0 => rate(a, b),
        // The window is shorter than a sample: the whole run stands in for it.
        _ => rate(points.first()?, points.last()?),
    }?;
    Some((mean, peak, rss))
}

/// The streams of `kind` that `peers` received.
fn streams_of(peers: &[&PeerOutcome], kind: RtpCodecKind) -> Vec<RxStream> {
    peers
        .iter()
        .flat_map(|p| p.streams.iter())
        .filter(|(k, _)| *k == kind)
        .map(|(_, s)| s.clone())
        .collect()
}

fn kind_stats(streams: &[RxStream]) -> KindStats {
    let packets: u64 = streams.iter().map(|s| s.packets).sum();
    let expected: u64 = streams.iter().map(RxStream::expected).sum();
    let lost: u64 = streams.iter().map(RxStream::lost).sum();
    let mean = |values: Vec<f64>| {
        if values.is_empty() {
            0.0
        } else {
            values.iter().sum::<f64>() / values.len() as f64
        }
    };
    KindStats {
        streams: streams.len(),
        packets,
        lost,
        loss_pct: if expected > 0 {
            lost as f64 * 100.0 / expected as f64
        } else {
            0.0
        },
        jitter_ms: mean(streams.iter().map(RxStream::jitter_ms).collect()),
        bitrate_kbps: mean(streams.iter().filter_map(RxStream::bitrate_kbps).collect()),
        layers: streams.iter().flat_map(|s| &s.widths).fold(
            BTreeMap::new(),
            |mut all, (width, packets)| {
                *all.entry(*width).or_default() += packets;
                all
            },
        ),
    }
}

fn server_pid(config: &Config) -> Option<u32> {
    match config.server {
        ServerProcess::Pid(pid) => Some(pid),
        ServerProcess::None => None,
        ServerProcess::Detect => {
            let url = reqwest::Url::parse(&config.url).ok()?;
            let local = url.host_str() == Some("localhost")
                || lite::ip_of_host(&url).is_some_and(|ip| ip.is_loopback());
            if !local {
                return None;
            }
            sys::pid_listening_on(url.port_or_known_default()?)
        }
    }
}

/// Runs the load test described by `config`, updating `live` as visits progress, until done
/// or `shutdown` flips (then every visit made so far is left and ended).
///
/// # Errors
/// Only when the run cannot start (bad configuration, media, HTTP client); peers that fail
/// are counted in the report.
pub async fn run(
    config: &Config,
    live: Arc<Live>,
    shutdown: watch::Receiver<bool>,
) -> Result<Report, RunError> {
    if config.visits == 0 || config.visits > MAX_VISITS {
        return Err(RunError::Config(format!("visits must be 1–{MAX_VISITS}")));
    }
    if !(config.ramp_per_sec.is_finite() && config.ramp_per_sec > 0.0) {
        return Err(RunError::Config(
            "the ramp must be a positive rate".to_owned(),
        ));
    }
    if config.target == Target::Janus
        && (config.peer != PeerKind::Str0m
            || config.transport != Transport::Udp
            || config.impair.is_some()
            || config.simulcast)
    {
        return Err(RunError::Config(
            "--target janus runs the light str0m peers over UDP, without --impair or --simulcast"
                .to_owned(),
        ));
    }
    if config.peer == PeerKind::Str0m && config.transport != Transport::Udp {
        return Err(RunError::Config(format!(
            "the str0m peer runs over UDP only: use --peer webrtc-rs for --transport {:?}",
            config.transport
        )));
    }
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let api = Api::new(&config.url)?;
    let media = Arc::new(if config.simulcast {
        Media::builtin_simulcast()?
    } else {
        Media::builtin(config.video)?
    });
    let pid = server_pid(config);
    let janus = match config.target {
        Target::Bedside => None,
        Target::Janus => {
            let janus = Janus::new(&config.url)?;
            let session = janus.create_session().await?;
            let admin = janus.attach(session).await?;
            Some((janus, admin))
        }
    };

    let started = Instant::now();
    let ramp = Duration::from_secs_f64((config.visits - 1) as f64 / config.ramp_per_sec);
    let hold_start = started + ramp;
    let hold_end = hold_start + config.duration;
    let deadline = hold_end + config.join_timeout + CLEANUP_GRACE;
    let shared = Arc::new(Shared {
        api,
        admin: Key::new(config.api_key.clone()),
        rtp: (config.peer == PeerKind::Str0m).then(|| Arc::new(RtpMedia::cut(&media))),
        media,
        transport: config.transport,
        impair: config.impair,
        join_timeout: config.join_timeout,
        hold_end,
        deadline,
        live,
        janus,
        seen: std::sync::Mutex::default(),
    });

    let metrics_before = shared.metrics().await;
    let idle = pid.and_then(|pid| sys::sample(Some(pid)));
    let (stop_sampling, sampling) = watch::channel(false);
    let max_samples =
        usize::try_from(deadline.duration_since(started).as_secs() + 60).unwrap_or(usize::MAX);
    let sampler = tokio::spawn(sampler(pid, sampling, max_samples));

    // Ramp: visit i at i / ramp seconds, bounded by the count and by Ctrl-C.
    let mut visits = JoinSet::new();
    let mut shutdown_ramp = shutdown.clone();
    for n in 0..config.visits {
        let due = started + Duration::from_secs_f64(n as f64 / config.ramp_per_sec);
        tokio::select! {
            () = tokio::time::sleep_until(tokio::time::Instant::from_std(due)) => {}
            _ = shutdown_ramp.changed() => break,
        }
        if *shutdown_ramp.borrow() {
            break;
        }
        visits.spawn(visit(n, Arc::clone(&shared), shutdown.clone()));
    }

    // The server's cost is measured once every visit is up, and metrics are read at the end
    // of the hold, before anyone leaves.
    let mut shutdown_hold = shutdown.clone();
    let settled = hold_start + EFFICIENCY_SETTLE.min(config.duration / 2);
    let mut window_start = None;
    tokio::select! {
        () = tokio::time::sleep_until(tokio::time::Instant::from_std(settled)) => {
            window_start = Some(snapshot(pid, &shared).await);
        }
        _ = shutdown_hold.changed() => {}
    }
    if !*shutdown_hold.borrow() {
        tokio::select! {
            () = tokio::time::sleep_until(tokio::time::Instant::from_std(hold_end)) => {}
            _ = shutdown_hold.changed() => {}
        }
    }
    let window_end = snapshot(pid, &shared).await;
    let metrics_after = window_end.metrics.clone();
    let hold_measured = Instant::now();
    let metrics_span = hold_measured.duration_since(started);

    let mut outcomes = Vec::new();
    let collect_by = tokio::time::Instant::from_std(deadline + END_TIMEOUT + LEAVE_TIMEOUT);
    while let Ok(Some(result)) = tokio::time::timeout_at(collect_by, visits.join_next()).await {
        if let Ok(outcome) = result {
            outcomes.push(outcome);
        }
    }
    visits.abort_all();
    if let Some((janus, admin)) = &shared.janus {
        let _ = janus.destroy(admin.session).await;
    }
    let _ = stop_sampling.send(true);
    let samples = sampler.await.unwrap_or_default();
    let interrupted = *shutdown.borrow();

    Ok(build_report(
        config,
        &outcomes,
        &samples,
        pid,
        (hold_start, hold_measured),
        (started.elapsed(), metrics_span),
        interrupted,
        (metrics_before.as_deref(), metrics_after.as_deref()),
        (idle, window_start, window_end),
    ))
}

/// The server at one moment: its process counters and its `/metrics`.
#[derive(Debug, Clone)]
struct Snapshot {
    at: Instant,
    process: Option<ProcSample>,
    metrics: Option<String>,
    /// RTP packets the run's peers had received.
    received: u64,
}

async fn snapshot(pid: Option<u32>, shared: &Shared) -> Snapshot {
    let metrics = shared.metrics().await;
    Snapshot {
        at: Instant::now(),
        process: pid.and_then(|pid| sys::sample(Some(pid))),
        metrics,
        received: shared.received(),
    }
}

/// The server's cost between `start` and `end` (every visit up), per forwarded packet and per
/// visit; `None` without both process samples or without a joined visit. Bedside's own count
/// of forwarded packets needs both metrics; the peers' count of received ones does not.
fn efficiency(
    idle: Option<ProcSample>,
    start: &Snapshot,
    end: &Snapshot,
    visits: usize,
) -> Option<Efficiency> {
    let (a, b) = (start.process?, end.process?);
    let name = "bedside_sfu_events_total";
    let label = "counter=\"forwarded_packets\"";
    let forwarded = match (start.metrics.as_deref(), end.metrics.as_deref()) {
        (Some(before), Some(after)) => Some(
            (prom::counter_labelled(after, name, label)
                - prom::counter_labelled(before, name, label))
            .max(0.0),
        ),
        _ => None,
    };
    let received = end.received.saturating_sub(start.received);
    let window = end.at.duration_since(start.at).as_secs_f64();
    let cpu = b.cpu.saturating_sub(a.cpu).as_secs_f64();
    if visits == 0 || window <= 0.0 {
        return None;
    }
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    let idle_rss = idle.map(|s| s.rss_bytes);
    Some(Efficiency {
        window_s: window,
        forwarded_packets: forwarded.map(|f| f as u64),
        received_packets: received,
        cpu_s: cpu,
        egress_pkts_per_core_s: forwarded.map(|f| if cpu > 0.0 { f / cpu } else { 0.0 }),
        received_pkts_per_core_s: if cpu > 0.0 {
            received as f64 / cpu
        } else {
            0.0
        },
        cpu_pct_per_visit: cpu / window * 100.0 / visits as f64,
        rss_mb_idle: idle_rss.map(mib),
        rss_mb_per_visit: idle_rss
            .map(|idle| mib(b.rss_bytes.saturating_sub(idle)) / visits as f64),
    })
}

#[allow(clippy::too_many_arguments)]
fn build_report(
    config: &Config,
    outcomes: &[VisitOutcome],
    samples: &Samples,
    pid: Option<u32>,
    (hold_start, hold_end): (Instant, Instant),
    (wall, metrics_span): (Duration, Duration),
    interrupted: bool,
    (before, after): (Option<&str>, Option<&str>),
    (idle, window_start, window_end): (Option<ProcSample>, Option<Snapshot>, Snapshot),
) -> Report {
    let peers: Vec<&PeerOutcome> = outcomes.iter().flat_map(|o| &o.peers).collect();
    // Visits never started (Ctrl-C during the ramp) count as failed, both of their peers too.
    let missing = config.visits.saturating_sub(outcomes.len());
    let mut failures: BTreeMap<String, usize> = BTreeMap::new();
    for peer in &peers {
        if let Some(reason) = &peer.failure {
            *failures.entry(reason.clone()).or_default() += 1;
        }
    }
    if missing > 0 {
        *failures.entry("not started".to_owned()).or_default() += 2 * missing;
    }
    let joined_peers = peers.iter().filter(|p| p.failure.is_none()).count();
    let mut paths: BTreeMap<String, usize> = BTreeMap::new();
    for path in peers.iter().filter_map(|p| p.path.as_ref()) {
        *paths.entry(path.clone()).or_default() += 1;
    }
    let video_sent = config.video != Video::None;
    let incomplete_media = peers
        .iter()
        .filter(|p| p.failure.is_none())
        .filter(|p| {
            let has =
                |kind: RtpCodecKind| p.streams.iter().any(|(k, s)| *k == kind && s.packets > 0);
            !has(RtpCodecKind::Audio) || (video_sent && !has(RtpCodecKind::Video))
        })
        .count();
    let visits_joined = outcomes
        .iter()
        .filter(|o| o.peers.len() == 2 && o.peers.iter().all(|p| p.failure.is_none()))
        .count();

    let mut joins: Vec<f64> = peers
        .iter()
        .filter_map(|p| p.join.map(|d| d.as_secs_f64() * 1000.0))
        .collect();
    let join_ms = Percentiles {
        p50: percentile(&mut joins, 50.0),
        p95: percentile(&mut joins, 95.0),
        p99: percentile(&mut joins, 99.0),
        max: percentile(&mut joins, 100.0),
    };
    let of_kind = |kind: RtpCodecKind| streams_of(&peers, kind);
    let impaired = config.impair.map(|impairment| {
        let behind: Vec<&PeerOutcome> = peers.iter().copied().filter(|p| p.impaired).collect();
        Impaired {
            impairment,
            peers: behind.len(),
            audio: kind_stats(&streams_of(&behind, RtpCodecKind::Audio)),
            video: kind_stats(&streams_of(&behind, RtpCodecKind::Video)),
            paused: behind.iter().map(|p| p.paused).sum(),
            resumed: behind.iter().map(|p| p.resumed).sum(),
            relay_delivered: behind.iter().map(|p| p.relay.0).sum(),
            relay_lost: behind.iter().map(|p| p.relay.1).sum(),
            relay_overflowed: behind.iter().map(|p| p.relay.2).sum(),
        }
    });

    let rtt_name = "bedside_sfu_rtt_seconds";
    let rtt = match after {
        Some(after) => {
            let h = Histogram::parse(after, rtt_name).since(
                &before
                    .map(|b| Histogram::parse(b, rtt_name))
                    .unwrap_or_default(),
            );
            Rtt {
                p50: h.quantile(0.5).map(|s| s * 1000.0),
                p95: h.quantile(0.95).map(|s| s * 1000.0),
                samples: h.count() as u64,
                source: "sfu: bedside_sfu_rtt_seconds (RTCP RR LSR/DLSR), this run only",
            }
        }
        None => Rtt {
            source: "unavailable: /metrics not readable",
            ..Rtt::default()
        },
    };
    let busy_name = "bedside_sfu_worker_busy_seconds_total";
    let window = hold_end.duration_since(hold_start).as_secs_f64();
    let span = metrics_span.as_secs_f64();
    let sfu_workers_busy_pct = match (before, after) {
        (Some(b), Some(a)) if span > 0.5 => {
            Some((prom::counter_sum(a, busy_name) - prom::counter_sum(b, busy_name)) / span * 100.0)
        }
        _ => None,
    };

    let server = pid.and_then(|pid| {
        let (cpu_pct, cpu_pct_peak, rss_mb_peak) =
            cpu_figures(samples, |s| s.1, hold_start, hold_end)?;
        Some(Server {
            pid,
            cpu_pct,
            cpu_pct_peak,
            rss_mb_peak,
            efficiency: window_start
                .as_ref()
                .and_then(|start| efficiency(idle, start, &window_end, visits_joined)),
        })
    });
    let (sent, skipped) = outcomes
        .iter()
        .flat_map(|o| &o.peers)
        .fold((0, 0), |(sent, skipped), p| {
            (sent + p.frames.0, skipped + p.frames.1)
        });
    let frames_skipped_pct =
        (sent + skipped > 0).then(|| skipped as f64 / (sent + skipped) as f64 * 100.0);
    let generator = cpu_figures(samples, |s| s.2, hold_start, hold_end)
        .map(|(cpu_pct, cpu_pct_peak, rss_mb_peak)| Generator {
            cpu_pct,
            cpu_pct_peak,
            rss_mb_peak,
            frames_skipped_pct,
        })
        .unwrap_or(Generator {
            frames_skipped_pct,
            ..Generator::default()
        });

    Report {
        visits: Visits {
            requested: config.visits,
            joined: visits_joined,
            failed: config.visits - visits_joined,
            ended: outcomes.iter().filter(|o| o.ended).count(),
        },
        peers: Peers {
            joined: joined_peers,
            failed: 2 * config.visits - joined_peers,
            failures,
            incomplete_media,
            paths,
        },
        join_ms,
        audio: kind_stats(&of_kind(RtpCodecKind::Audio)),
        video: kind_stats(&of_kind(RtpCodecKind::Video)),
        impaired,
        rtt_ms: rtt,
        server,
        generator,
        run: RunInfo {
            video: config.video,
            simulcast: config.simulcast,
            transport: config.transport,
            peer: config.peer,
            target: config.target,
            hold_s: window,
            wall_s: wall.as_secs_f64(),
            ramp_per_s: config.ramp_per_sec,
            cores: std::thread::available_parallelism().map_or(1, usize::from),
            interrupted,
            sfu_workers_busy_pct,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(start: Instant, secs: u64, cpu_ms: u64, rss_mib: u64, forwarded: u64) -> Snapshot {
        let received = forwarded * 9 / 10;
        Snapshot {
            at: start + Duration::from_secs(secs),
            process: Some(ProcSample {
                cpu: Duration::from_millis(cpu_ms),
                rss_bytes: rss_mib << 20,
                hwm_bytes: rss_mib << 20,
            }),
            metrics: Some(format!(
                "bedside_sfu_events_total{{counter=\"forwarded_packets\"}} {forwarded}\n\
                 bedside_sfu_events_total{{counter=\"datagrams_in\"}} 999999\n"
            )),
            received,
        }
    }

    #[test]
    fn the_servers_cost_is_per_cpu_second_and_per_visit() {
        let start = Instant::now();
        let idle = at(start, 0, 0, 20, 0).process;
        // 10 s with 4 CPU seconds (40% of a core) and 400,000 packets forwarded, 10 visits.
        let from = at(start, 5, 1_000, 40, 50_000);
        let to = at(start, 15, 5_000, 50, 450_000);
        let e = efficiency(idle, &from, &to, 10).expect("figures");
        assert_eq!(e.forwarded_packets, Some(400_000));
        assert_eq!(e.egress_pkts_per_core_s, Some(100_000.0));
        assert_eq!(e.received_packets, 360_000);
        assert!((e.received_pkts_per_core_s - 90_000.0).abs() < 1e-6);
        assert!((e.cpu_pct_per_visit - 4.0).abs() < 1e-9);
        assert_eq!(e.rss_mb_idle, Some(20.0));
        assert_eq!(e.rss_mb_per_visit, Some(3.0));
        assert!(efficiency(idle, &from, &to, 0).is_none(), "no visit joined");
        let blind = Snapshot {
            metrics: None,
            ..to.clone()
        };
        let janus = efficiency(idle, &from, &blind, 10).expect("peers counted without metrics");
        assert_eq!(janus.forwarded_packets, None);
        assert_eq!(janus.received_packets, 360_000);
    }
}
