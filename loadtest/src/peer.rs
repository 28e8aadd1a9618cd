//! One webrtc-rs participant of a visit: it publishes Opus and VP8 from pre-encoded
//! [`Media`], joins on `/ws` with its grant and its offer, answers the server's offers, admits
//! whoever waits when it is the clinician, and keeps receiver statistics of the RTP it gets.
//!
//! It is the project's independent WebRTC client: the root package's interop and robustness
//! tests use it, and the load generator with `--peer webrtc-rs` (capacity runs use the light
//! str0m peer of [`crate::lite`], which shares its [`Options`] and [`Seen`]).

use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures::{SinkExt as _, StreamExt as _};
use rtc::ice::network_type::NetworkType;
use rtc::media::Sample;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::interceptor_registry::{
    configure_rtcp_reports, configure_simulcast_extension_headers, configure_twcc_receiver_only,
};
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_OPUS, MIME_TYPE_VP8};
use rtc::peer_connection::configuration::setting_engine::{SettingEngine, SettingEngineBuilder};
use rtc::peer_connection::configuration::{
    RTCConfiguration, RTCConfigurationBuilder, RTCIceServer, RTCIceTransportPolicy,
};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::RTCIceCandidateInit;
use rtc::rtp::extension::HeaderExtension;
use rtc::rtp_transceiver::PayloadType;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::sdp::extmap::{SDES_MID_URI, SDES_RTP_STREAM_ID_URI};
use rtc::shared::marshal::{Marshal, MarshalSize};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use webrtc::media_stream::Track as _;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCIceGatheringState, RTCPeerConnectionState, Registry,
};
use webrtc::rtp_transceiver::RtpSender;

use crate::impair::{Impairment, Relay};
use crate::media::{Media, Stream, vp8_keyframe_width};
use crate::stats::RxStream;

/// How long ICE gathering of the local offer may take (host candidates on loopback: instant;
/// a TURN allocation on loopback: a few milliseconds).
const GATHER_TIMEOUT: Duration = Duration::from_secs(5);

/// How a peer's media reaches the SFU. Each value is one path whose cost the load tester
/// measures separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// Directly over UDP to the SFU's host candidate; TURN servers are ignored.
    #[default]
    Udp,
    /// Directly over ICE-TCP to the SFU's passive TCP candidate (an active TCP candidate on
    /// 127.0.0.1, no UDP at all); TURN servers are ignored.
    Tcp,
    /// Only through the TURN servers of the start answer (`RTCIceTransportPolicy::Relay`):
    /// the server must have `turn.urls` and `turn.shared_secret` (docs/config.md). webrtc-rs
    /// allocates over UDP only: it skips `?transport=tcp` and `turns:` URLs.
    Relay,
}

impl std::str::FromStr for Transport {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "udp" => Ok(Transport::Udp),
            "tcp" => Ok(Transport::Tcp),
            "relay" => Ok(Transport::Relay),
            other => Err(format!(
                "unknown transport {other:?}: use udp, tcp or relay"
            )),
        }
    }
}

/// A STUN or TURN server of a start answer's `media.ice_servers`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
pub struct IceServer {
    /// Its URLs.
    pub urls: Vec<String>,
    /// TURN REST username.
    #[serde(default)]
    pub username: String,
    /// TURN REST credential.
    #[serde(default)]
    pub credential: String,
}

/// The candidate pair a peer's ICE selected, as `type/protocol address:port` of each side
/// (`relay/udp 127.0.0.1:49160`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectedPair {
    /// The local candidate's type and protocol: `host/udp`, `relay/udp`…
    pub local_path: String,
    /// The local candidate's address and port.
    pub local: String,
    /// The remote (SFU) candidate's address and port.
    pub remote: String,
}

/// Why a participant stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// webrtc-rs refused something.
    #[error("webrtc: {0}")]
    WebRtc(#[from] webrtc::error::Error),
    /// str0m refused something (the light peer, [`crate::lite`]).
    #[error("str0m: {0}")]
    Str0m(#[from] str0m::RtcError),
    /// The signaling socket failed.
    #[error("signaling socket: {0}")]
    Socket(#[from] tokio_tungstenite::tungstenite::Error),
    /// A signaling frame was not JSON.
    #[error("signaling frame: {0}")]
    Json(#[from] serde_json::Error),
    /// The server sent `error` and the peer was not told to tolerate it.
    #[error("signaling error {code}: {message}")]
    Signaling {
        /// The error's `code`.
        code: String,
        /// Its `message`.
        message: String,
    },
    /// The server broke the protocol (a message without a field it must have).
    #[error("protocol: {0}")]
    Protocol(&'static str),
    /// ICE gathering did not complete.
    #[error("ICE gathering did not complete within {0:?}")]
    Gathering(Duration),
    /// The peer's deadline passed before its socket closed.
    #[error("deadline passed")]
    Deadline,
    /// The impairment relay could not start.
    #[error("impairment relay: {0}")]
    Relay(#[from] std::io::Error),
    /// Janus's HTTP API refused a step (`--target janus`, [`crate::janus`]).
    #[error(transparent)]
    Janus(#[from] crate::janus::JanusError),
}

/// Receiver statistics of one remote track.
#[derive(Debug)]
pub struct RemoteTrack {
    /// Audio or video.
    pub kind: RtpCodecKind,
    /// What arrived on it.
    pub rx: Mutex<RxStream>,
}

/// What one peer observed; shared with whoever watches it while it runs.
#[derive(Debug, Default)]
pub struct Seen {
    /// RTP packets received on audio tracks.
    pub audio: AtomicU32,
    /// RTP packets received on video tracks.
    pub video: AtomicU32,
    /// `error` frames received (only tolerated when the peer was told to expect them).
    pub errors: AtomicU32,
    /// Whether `joined` arrived.
    pub joined: AtomicBool,
    /// Whether `visit_ended` arrived.
    pub visit_ended: AtomicBool,
    /// The close code of the signaling socket.
    pub close_code: AtomicU16,
    /// When the first remote RTP packet arrived.
    pub first_media: OnceLock<Instant>,
    /// The server's ICE ufrag for this peer, from its SDP.
    pub server_ufrag: Mutex<Option<String>>,
    /// Every remote track received, in arrival order.
    pub tracks: Mutex<Vec<Arc<RemoteTrack>>>,
    /// The first `error` code received, if any.
    pub first_error: Mutex<Option<String>>,
    /// Why the peer stopped, when it knows better than a signaling code (a Janus step that
    /// was refused: `janus publish: error 428`).
    pub failure: OnceLock<String>,
    /// The candidate pair selected when the connection first came up.
    pub selected: OnceLock<SelectedPair>,
    /// `track_paused` messages received (a video paused for this peer's bandwidth).
    pub paused: AtomicU32,
    /// `track_resumed` messages received.
    pub resumed: AtomicU32,
    /// The impairment relay's counters, when the peer runs behind one.
    pub relay: OnceLock<Arc<crate::impair::RelayStats>>,
    /// Media frames a light peer sent (webrtc-rs peers do not count theirs).
    pub frames_sent: AtomicU64,
    /// Media frames a light peer skipped because it was more than 200 ms behind its
    /// schedule: a generator short of CPU sends less than the media's rate, and says so.
    pub frames_skipped: AtomicU64,
}

impl Seen {
    /// (audio, video) packets received so far.
    #[must_use]
    pub fn counts(&self) -> (u32, u32) {
        (
            self.audio.load(Ordering::Relaxed),
            self.video.load(Ordering::Relaxed),
        )
    }

    /// A copy of the receiver statistics of every remote track so far.
    #[must_use]
    pub fn streams(&self) -> Vec<(RtpCodecKind, RxStream)> {
        let tracks = match self.tracks.lock() {
            Ok(tracks) => tracks.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        tracks
            .iter()
            .map(|t| {
                let rx = match t.rx.lock() {
                    Ok(rx) => rx.clone(),
                    Err(poisoned) => poisoned.into_inner().clone(),
                };
                (t.kind, rx)
            })
            .collect()
    }
}

/// Which WebRTC stack the load generator's peers run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub enum PeerKind {
    /// The light peer ([`crate::lite`]): str0m, RTP cut once per run, UDP only.
    #[default]
    #[serde(rename = "str0m")]
    Str0m,
    /// webrtc-rs ([`participant`]): an independent stack, every transport.
    #[serde(rename = "webrtc-rs")]
    WebrtcRs,
}

impl std::str::FromStr for PeerKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "str0m" => Ok(PeerKind::Str0m),
            "webrtc-rs" => Ok(PeerKind::WebrtcRs),
            other => Err(format!("unknown peer {other:?}: use str0m or webrtc-rs")),
        }
    }
}

impl std::fmt::Display for PeerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PeerKind::Str0m => "str0m",
            PeerKind::WebrtcRs => "webrtc-rs",
        })
    }
}

/// How a participant behaves.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `/ws` URL.
    pub signaling_url: String,
    /// Its session grant.
    pub grant: String,
    /// Admit whoever waits (the clinician).
    pub admits: bool,
    /// Count `error` frames instead of failing on the first.
    pub tolerate_errors: bool,
    /// What it publishes.
    pub media: Arc<Media>,
    /// How its media reaches the SFU.
    pub transport: Transport,
    /// The start answer's `media.ice_servers` (used by [`Transport::Relay`]).
    pub ice_servers: Vec<IceServer>,
    /// It gives up (closing its connection) when this passes, whatever happens.
    pub deadline: Instant,
    /// Runs its UDP media through an impaired path ([`crate::impair`]).
    pub impair: Option<Impairment>,
}

struct Handler {
    seen: Arc<Seen>,
    gathered: mpsc::Sender<()>,
    connected: mpsc::Sender<()>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.gathered.try_send(());
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        if state == RTCPeerConnectionState::Connected {
            let _ = self.connected.try_send(());
        }
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let seen = Arc::clone(&self.seen);
        tokio::spawn(async move {
            let kind = track.kind().await;
            let clock_rate = if kind == RtpCodecKind::Audio {
                48_000
            } else {
                90_000
            };
            let remote = Arc::new(RemoteTrack {
                kind,
                rx: Mutex::new(RxStream::new(clock_rate)),
            });
            if let Ok(mut tracks) = seen.tracks.lock() {
                tracks.push(Arc::clone(&remote));
            }
            let counter = match kind {
                RtpCodecKind::Audio => &seen.audio,
                _ => &seen.video,
            };
            // Ends when the track ends (its transceiver stopped or the connection closed).
            while let Some(event) = track.poll().await {
                if let TrackRemoteEvent::OnRtpPacket(packet) = event {
                    let now = Instant::now();
                    let _ = seen.first_media.set(now);
                    counter.fetch_add(1, Ordering::Relaxed);
                    if let Ok(mut rx) = remote.rx.lock() {
                        rx.on_packet(
                            packet.header.sequence_number,
                            packet.header.timestamp,
                            packet.payload.len(),
                            now,
                        );
                        if kind == RtpCodecKind::Video {
                            rx.on_video_width(vp8_keyframe_width(&packet.payload));
                        }
                    }
                }
            }
        });
    }
}

/// A local track of `kind`: one encoding, or one per simulcast rid in `rids`.
fn local_track(
    kind: RtpCodecKind,
    mime: &str,
    clock_rate: u32,
    channels: u16,
    rids: &[&str],
) -> Result<Arc<TrackLocalStaticSample>, PeerError> {
    let name = format!("bedside-{kind}");
    let rids = if rids.is_empty() { &[""][..] } else { rids };
    let encodings = rids
        .iter()
        .map(|rid| RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                rid: (*rid).to_owned(),
                ssrc: Some(rand::random::<u32>()),
                ..Default::default()
            },
            codec: RTCRtpCodec {
                mime_type: mime.to_owned(),
                clock_rate,
                channels,
                sdp_fmtp_line: String::new(),
                rtcp_feedback: vec![],
            },
            ..Default::default()
        })
        .collect();
    Ok(Arc::new(TrackLocalStaticSample::new(
        Instant::now(),
        MediaStreamTrack::new(
            "bedside-stream".to_owned(),
            name.clone(),
            name,
            kind,
            encodings,
        ),
    )?))
}

async fn payload_type(sender: &Arc<dyn RtpSender>) -> Result<PayloadType, PeerError> {
    Ok(sender
        .get_parameters()
        .await?
        .rtp_parameters
        .codecs
        .first()
        .ok_or(PeerError::Protocol("sender has no negotiated codec"))?
        .payload_type)
}

/// An RFC 8852 SDES header extension's value (a MID or a RID): its text.
struct Sdes(String);

impl MarshalSize for Sdes {
    fn marshal_size(&self) -> usize {
        self.0.len()
    }
}

impl Marshal for Sdes {
    fn marshal_to(&self, buf: &mut [u8]) -> rtc::shared::error::Result<usize> {
        let out = buf
            .get_mut(..self.0.len())
            .ok_or(rtc::shared::error::Error::ErrBufferTooSmall)?;
        out.copy_from_slice(self.0.as_bytes());
        Ok(self.0.len())
    }
}

/// What names a simulcast layer's packets: the video m-line's MID and the layer's RID, as
/// header extensions. webrtc-rs 0.21 writes neither by itself, and without them (or `a=ssrc`
/// lines, which it leaves out for simulcast) the SFU cannot tell which layer an SSRC is.
#[derive(Debug, Clone)]
struct LayerIds {
    mid: String,
    rid: String,
}

/// Sends `stream`'s frames on the track's encoding `ssrc` in real time, from the start again at
/// its end, until `stop` flips, the deadline passes or the track refuses a write (its
/// connection closed).
///
/// Frames go out on an absolute schedule (start + the sum of the frame durations) so that a
/// late wake-up is caught up rather than accumulated, and each carries its exact duration in
/// RTP ticks, so the RTP timestamps run on without a jump where the file starts again.
async fn play(
    track: Arc<TrackLocalStaticSample>,
    (ssrc, layer): (u32, Option<LayerIds>),
    pt: PayloadType,
    stream: Stream,
    mut stop: watch::Receiver<bool>,
    deadline: Instant,
) {
    let started = tokio::time::Instant::now();
    let mut elapsed = Duration::ZERO;
    let deadline = tokio::time::Instant::from_std(deadline);
    for frame in stream.frames.iter().cycle() {
        let due = started + elapsed;
        if due >= deadline || *stop.borrow() {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep_until(due) => {}
            _ = stop.changed() => return,
        }
        let duration = stream.duration(frame.ticks);
        let sample = Sample {
            data: frame.data.clone(),
            duration,
            ..Sample::new(Instant::now())
        };
        let mut writer = track.sample_writer(ssrc, pt);
        if let Some(ids) = &layer {
            for (uri, value) in [(SDES_MID_URI, &ids.mid), (SDES_RTP_STREAM_ID_URI, &ids.rid)] {
                writer = writer.with_extension(HeaderExtension::Custom {
                    uri: uri.into(),
                    extension: Box::new(Sdes(value.clone())),
                });
            }
        }
        if writer.write_sample(&sample).await.is_err() {
            return;
        }
        elapsed += duration;
    }
}

/// Aborts the media players when the participant returns, however it returns.
struct Players(Vec<JoinHandle<()>>);

impl Drop for Players {
    fn drop(&mut self) {
        for player in &self.0 {
            player.abort();
        }
    }
}

/// One webrtc-rs participant: publishes `options.media`, joins on `/ws` with its grant and its
/// offer, answers the server's offers, and (as the clinician) admits whoever waits. Returns
/// when the server closes the socket (after `leave`, an ended visit, a refusal) or at
/// `options.deadline`.
///
/// Frames from `inject` are sent on its signaling socket as they are (`leave`, or garbage to
/// test the server's defences during a call); `stop` ends the media players.
///
/// # Errors
/// When webrtc-rs or the socket fails, the server sends `error` (unless tolerated) or
/// breaks the protocol, or the deadline passes first.
pub async fn participant(
    options: Options,
    seen: Arc<Seen>,
    mut inject: mpsc::Receiver<Message>,
    stop: watch::Receiver<bool>,
) -> Result<(), PeerError> {
    let Options {
        signaling_url,
        grant,
        admits,
        tolerate_errors,
        media,
        transport,
        ice_servers,
        deadline,
        impair,
    } = options;
    let relay = match impair {
        Some(impairment) => {
            let relay = Relay::start(impairment).await?;
            let _ = seen.relay.set(Arc::clone(&relay.stats));
            Some(relay)
        }
        None => None,
    };
    let mut engine = MediaEngine::default();
    engine.register_default_codecs()?;
    if !media.layers.is_empty() {
        // The MID, RID and repaired-RID header extensions that name each layer's SSRC.
        configure_simulcast_extension_headers(&mut engine)?;
    }
    let (gathered_tx, mut gathered) = mpsc::channel(1);
    let (connected_tx, mut connected) = mpsc::channel(1);
    // Sender and receiver reports: the receiver reports let the SFU measure the RTT of every
    // leg from RTCP. NACK and TWCC would add work to the generator for nothing it reports,
    // except behind an impaired path: there transport-wide feedback lets the SFU estimate
    // the peer's downlink and adapt to it, which is what such a run is for.
    let mut registry = configure_rtcp_reports(Registry::new());
    if relay.is_some() {
        registry = configure_twcc_receiver_only(registry, &mut engine)?;
    }
    let builder = PeerConnectionBuilder::new()
        .with_configuration(configuration(transport, ice_servers))
        .with_setting_engine(setting_engine(transport))
        .with_media_engine(engine)
        .with_interceptor_registry(registry)
        .with_handler(Arc::new(Handler {
            seen: Arc::clone(&seen),
            gathered: gathered_tx,
            connected: connected_tx,
        }));
    let loopback = vec!["127.0.0.1:0".to_owned()];
    let pc = match transport {
        Transport::Tcp => builder
            .with_tcp_addrs(loopback)
            .with_udp_addrs(Vec::<String>::new()),
        Transport::Udp | Transport::Relay => builder.with_udp_addrs(loopback),
    }
    .build()
    .await?;
    let result = run_peer(
        &pc,
        relay.as_ref(),
        transport,
        &signaling_url,
        &grant,
        admits,
        tolerate_errors,
        &media,
        deadline,
        &seen,
        (&mut gathered, &mut connected),
        &mut inject,
        stop,
    )
    .await;
    let closed = pc.close().await;
    result?;
    Ok(closed?)
}

/// The `a=mid` of the video m-line of `sdp`.
fn video_mid(sdp: &str) -> Option<String> {
    sdp.split("\nm=")
        .find(|section| section.starts_with("video"))?
        .lines()
        .find_map(|line| line.trim().strip_prefix("a=mid:"))
        .map(str::to_owned)
}

/// Hands the server's passive TCP candidates in `sdp` to ICE as if trickled: webrtc-rs opens
/// an outgoing TCP connection only for a passive candidate given to `add_ice_candidate`, not
/// for one in the remote description (the SFU, ICE-lite, never trickles).
async fn connect_tcp_candidates(pc: &impl PeerConnection, sdp: &str) -> Result<(), PeerError> {
    let mid = sdp
        .lines()
        .find_map(|line| line.trim().strip_prefix("a=mid:"))
        .map(str::to_owned);
    for line in sdp.lines().map(str::trim) {
        let Some(candidate) = line.strip_prefix("a=") else {
            continue;
        };
        if candidate.starts_with("candidate:")
            && candidate.contains(" tcp ")
            && candidate.contains("tcptype passive")
        {
            pc.add_ice_candidate(RTCIceCandidateInit {
                candidate: candidate.to_owned(),
                sdp_mid: mid.clone(),
                sdp_mline_index: Some(0),
                ..RTCIceCandidateInit::default()
            })
            .await?;
        }
    }
    Ok(())
}

/// The peer connection's ICE configuration for `transport`.
fn configuration(transport: Transport, ice_servers: Vec<IceServer>) -> RTCConfiguration {
    match transport {
        Transport::Udp | Transport::Tcp => RTCConfigurationBuilder::new().build(),
        Transport::Relay => RTCConfigurationBuilder::new()
            .with_ice_servers(
                ice_servers
                    .into_iter()
                    .map(|server| RTCIceServer {
                        urls: server.urls,
                        username: server.username,
                        credential: server.credential,
                    })
                    .collect(),
            )
            .with_ice_transport_policy(RTCIceTransportPolicy::Relay)
            .build(),
    }
}

/// Its ICE timing for `transport`. As the controlling agent webrtc-rs waits 2 s before it
/// nominates a relay pair, in case a better one turns up; relay-only, none can, so it would
/// only add those 2 s to every relayed join (Chromium does not wait).
fn setting_engine(transport: Transport) -> SettingEngine {
    let builder = SettingEngineBuilder::new();
    match transport {
        Transport::Udp => builder,
        Transport::Tcp => builder.with_network_types(vec![NetworkType::Tcp4]),
        Transport::Relay => builder.with_relay_acceptance_min_wait(Some(Duration::ZERO)),
    }
    .build()
}

/// The candidate pair ICE selected for `sender`'s transport (every track shares one: the SFU
/// bundles), if it has one.
async fn selected_pair(sender: &Arc<dyn RtpSender>) -> Result<Option<SelectedPair>, PeerError> {
    let Some(dtls) = sender.transport().await? else {
        return Ok(None);
    };
    let Some(pair) = dtls.ice_transport().get_selected_candidate_pair().await? else {
        return Ok(None);
    };
    let (local, remote) = (pair.local(), pair.remote());
    Ok(Some(SelectedPair {
        local_path: format!("{}/{}", local.typ, local.protocol),
        local: format!("{}:{}", local.address, local.port),
        remote: format!("{}:{}", remote.address, remote.port),
    }))
}

#[allow(clippy::too_many_arguments)]
async fn run_peer(
    pc: &impl PeerConnection,
    relay: Option<&Relay>,
    transport: Transport,
    signaling_url: &str,
    grant: &str,
    admits: bool,
    tolerate_errors: bool,
    media: &Media,
    deadline: Instant,
    seen: &Seen,
    (gathered, connected): (&mut mpsc::Receiver<()>, &mut mpsc::Receiver<()>),
    inject: &mut mpsc::Receiver<Message>,
    stop: watch::Receiver<bool>,
) -> Result<(), PeerError> {
    let audio = local_track(RtpCodecKind::Audio, MIME_TYPE_OPUS, 48_000, 2, &[])?;
    let audio_sender = pc
        .add_track(Arc::clone(&audio) as Arc<dyn TrackLocal>)
        .await?;
    // One encoding, or the simulcast layers (each its own SSRC, in the track's order).
    let layers: Vec<(Option<&str>, Stream)> = match &media.video {
        Some(stream) => vec![(None, stream.clone())],
        None => (media.layers.iter())
            .map(|(rid, stream)| (Some(*rid), stream.clone()))
            .collect(),
    };
    let video = if layers.is_empty() {
        None
    } else {
        let rids: Vec<&str> = layers.iter().filter_map(|(rid, _)| *rid).collect();
        let track = local_track(RtpCodecKind::Video, MIME_TYPE_VP8, 90_000, 0, &rids)?;
        let sender = pc
            .add_track(Arc::clone(&track) as Arc<dyn TrackLocal>)
            .await?;
        Some((track, sender, layers))
    };
    let offer = pc.create_offer(None).await?;
    pc.set_local_description(offer).await?;
    tokio::time::timeout(GATHER_TIMEOUT, gathered.recv())
        .await
        .map_err(|_| PeerError::Gathering(GATHER_TIMEOUT))?;
    let offer = pc
        .local_description()
        .await
        .ok_or(PeerError::Protocol("no local offer"))?;

    let (ws, _) = tokio_tungstenite::connect_async(signaling_url).await?;
    let (mut tx, mut rx) = ws.split();
    let send = |value: Value| Message::Text(value.to_string().into());
    tx.send(send(
        json!({"type": "join", "grant": grant, "offer": offer.sdp}),
    ))
    .await?;
    let mut players = Players(Vec::new());
    let give_up = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline));
    tokio::pin!(give_up);
    loop {
        tokio::select! {
            () = &mut give_up => return Err(PeerError::Deadline),
            Some(frame) = inject.recv() => tx.send(frame).await?,
            Some(()) = connected.recv(), if players.0.is_empty() => {
                // What it reports, not what it needs: no pair leaves `selected` empty.
                if let Ok(Some(pair)) = selected_pair(&audio_sender).await {
                    let _ = seen.selected.set(pair);
                }
                let apt = payload_type(&audio_sender).await?;
                if let Some(ssrc) = audio.ssrcs().await.first().copied() {
                    players.0.push(tokio::spawn(play(
                        Arc::clone(&audio), (ssrc, None), apt, media.audio.clone(), stop.clone(),
                        deadline,
                    )));
                }
                if let Some((track, sender, layers)) = &video {
                    let vpt = payload_type(sender).await?;
                    let mid = video_mid(&offer.sdp);
                    for (ssrc, (rid, stream)) in track.ssrcs().await.into_iter().zip(layers) {
                        let ids = rid.zip(mid.clone()).map(|(rid, mid)| LayerIds {
                            mid,
                            rid: rid.to_owned(),
                        });
                        players.0.push(tokio::spawn(play(
                            Arc::clone(track), (ssrc, ids), vpt, stream.clone(), stop.clone(),
                            deadline,
                        )));
                    }
                }
            }
            frame = rx.next() => {
                match read_frame(frame, admits, tolerate_errors, relay, seen)? {
                    Signal::Answer(sdp) => {
                        pc.set_remote_description(RTCSessionDescription::answer(sdp.clone())?).await?;
                        if transport == Transport::Tcp {
                            connect_tcp_candidates(pc, &sdp).await?;
                        }
                    }
                    Signal::Offer(sdp) => {
                        pc.set_remote_description(RTCSessionDescription::offer(sdp)?).await?;
                        let answer = pc.create_answer(None).await?;
                        pc.set_local_description(answer).await?;
                        let answer = pc.local_description().await.ok_or(PeerError::Protocol("no local answer"))?;
                        tx.send(send(json!({"type": "answer", "sdp": answer.sdp}))).await?;
                    }
                    Signal::Reply(frames) => {
                        for frame in frames {
                            tx.send(frame).await?;
                        }
                    }
                    Signal::Closed => return Ok(()),
                    Signal::Nothing => {}
                }
            }
        }
    }
}

/// What a server frame asks of a peer, once what the frame only reports is counted in
/// [`Seen`].
pub(crate) enum Signal {
    /// The server's answer to the peer's offer (pointed at the relay when there is one).
    Answer(String),
    /// A server offer for the peer to answer (likewise).
    Offer(String),
    /// Frames to send back: `admit` for whoever waits, when the peer admits.
    Reply(Vec<Message>),
    /// The server closed the socket (its close code is in [`Seen`]): the peer is done.
    Closed,
    /// Nothing.
    Nothing,
}

/// Reads one frame from the server's socket, the same for both peers' stacks.
///
/// # Errors
/// When the socket fails, a text frame is not JSON, an SDP message has no `sdp`, or the
/// server sent `error` and errors are not tolerated.
pub(crate) fn read_frame(
    frame: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    admits: bool,
    tolerate_errors: bool,
    relay: Option<&Relay>,
    seen: &Seen,
) -> Result<Signal, PeerError> {
    let text = match frame {
        Some(Ok(Message::Text(text))) => text,
        Some(Ok(Message::Close(close))) => {
            let code = close.map_or(1005, |c| u16::from(c.code));
            seen.close_code.store(code, Ordering::Relaxed);
            return Ok(Signal::Closed);
        }
        Some(Ok(_)) => return Ok(Signal::Nothing),
        Some(Err(error)) => return Err(error.into()),
        None => return Ok(Signal::Closed),
    };
    let message: Value = serde_json::from_str(text.as_str())?;
    let admit = |participant: &Value| {
        Message::Text(
            json!({"type": "admit", "participant": participant})
                .to_string()
                .into(),
        )
    };
    let sdp = |missing: &'static str| {
        let sdp = message["sdp"]
            .as_str()
            .ok_or(PeerError::Protocol(missing))?;
        Ok::<_, PeerError>(relay.map_or_else(|| sdp.to_owned(), |relay| relay.rewrite_sdp(sdp)))
    };
    Ok(match message["type"].as_str() {
        Some("joined") => {
            seen.joined.store(true, Ordering::Relaxed);
            let waiting = (message["participants"].as_array().into_iter().flatten())
                .filter(|other| admits && other["waiting"] == json!(true))
                .map(|other| admit(&other["participant"]))
                .collect();
            Signal::Reply(waiting)
        }
        Some("answer") => {
            let sdp = sdp("answer without sdp")?;
            let ufrag = sdp
                .lines()
                .find_map(|line| line.trim().strip_prefix("a=ice-ufrag:"))
                .map(str::to_owned);
            if let Ok(mut slot) = seen.server_ufrag.lock() {
                *slot = ufrag;
            }
            Signal::Answer(sdp)
        }
        Some("offer") => Signal::Offer(sdp("offer without sdp")?),
        Some("participant_waiting") if admits => {
            Signal::Reply(vec![admit(&message["participant"])])
        }
        Some("visit_ended") => {
            seen.visit_ended.store(true, Ordering::Relaxed);
            Signal::Nothing
        }
        Some("track_paused") => {
            seen.paused.fetch_add(1, Ordering::Relaxed);
            Signal::Nothing
        }
        Some("track_resumed") => {
            seen.resumed.fetch_add(1, Ordering::Relaxed);
            Signal::Nothing
        }
        Some("error") => {
            seen.errors.fetch_add(1, Ordering::Relaxed);
            let code = message["code"].as_str().unwrap_or("unknown").to_owned();
            if let Ok(mut first) = seen.first_error.lock() {
                first.get_or_insert_with(|| code.clone());
            }
            if !tolerate_errors {
                return Err(PeerError::Signaling {
                    code,
                    message: message["message"].as_str().unwrap_or_default().to_owned(),
                });
            }
            Signal::Nothing
        }
        _ => Signal::Nothing,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_video_mid_comes_from_the_video_m_line() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=sendrecv\r\n";
        assert_eq!(video_mid(sdp).as_deref(), Some("1"));
        assert_eq!(video_mid("v=0\r\nm=audio 9 RTP/AVP 0\r\na=mid:0\r\n"), None);
        let mut buf = [0u8; 2];
        assert_eq!(Sdes("h".to_owned()).marshal_to(&mut buf).ok(), Some(1));
        assert_eq!(buf[0], b'h');
        assert!(
            Sdes("abc".to_owned()).marshal_to(&mut buf).is_err(),
            "too small a buffer"
        );
    }

    #[test]
    fn transports_parse_as_the_command_line_writes_them() {
        assert_eq!("udp".parse(), Ok(Transport::Udp));
        assert_eq!("relay".parse(), Ok(Transport::Relay));
        assert_eq!("tcp".parse(), Ok(Transport::Tcp));
        assert!("carrier-pigeon".parse::<Transport>().is_err());
        assert_eq!(
            serde_json::to_value(Transport::Relay).ok(),
            Some(serde_json::json!("relay"))
        );
    }
}
