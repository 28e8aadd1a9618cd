//! A virtual-time world for scenario tests: one [`Core`], simulated clients that are ordinary
//! (non-lite) str0m peers in RTP mode, an in-memory network with seeded loss and jitter, and
//! lossless signaling that relays offers and answers instantly.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sfu::core::{Command, Config, Core, Event, ParticipantId, RoomId, TrackId, Transport};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{
    Direction, KeyframeRequestKind, MediaKind, Mid, Rid, Simulcast, SimulcastLayer,
};
use str0m::net::{Protocol, Receive, TcpType};
use str0m::rtp::{ExtensionValues, RedEncoder, RedundantBlock, RtpWrite, Vp8Descriptor};
use str0m::{Candidate, Event as RtcEvent, Input, Output, Rtc};

pub const ROOM: RoomId = RoomId(7);
const SERVER: ([u8; 4], u16) = ([10, 0, 0, 1], 3478);
/// The passive ICE-TCP candidate of [`Sim::tcp_only`].
pub const SERVER_TCP: ([u8; 4], u16) = ([10, 0, 0, 1], 3479);
const AUDIO_PERIOD: Duration = Duration::from_millis(20);
const VIDEO_PERIOD: Duration = Duration::from_millis(33);
/// Every this many video frames is a keyframe.
pub const KEYFRAME_EVERY: u32 = 30;
pub const KEYFRAME_PACKETS: u8 = 8;
const DELTA_PACKETS: u8 = 2;
/// RTP payload size of simulated media unless a test sets `Sim::payload_len`.
pub const PAYLOAD_LEN: usize = 200;
/// Guards against a simulation that stops advancing time.
const MAX_STEPS: usize = 5_000_000;

/// The simulcast layers of [`Sim::join_simulcast`], lowest first, with their packets per
/// delta frame (a keyframe has four times as many).
pub const SIMULCAST: [(&str, u8); 3] = [("q", 1), ("h", 3), ("f", 8)];

/// The size each simulcast layer codes, lowest first (the single encoding is the middle one).
pub const LAYER_SIZES: [(u16, u16); 3] = [(320, 180), (640, 360), (1280, 720)];

/// Byte offsets of the tags every test payload carries, after a 16-byte codec header: `A` for
/// audio; for video a VP8 payload descriptor with a 15-bit picture id, TL0PICIDX and KEYIDX,
/// then the VP8 frame tag whose P bit is clear on the first packet of a keyframe, which also
/// has the keyframe start code and the frame size.
pub mod tag {
    pub const PUBLISHER: usize = 16;
    pub const KEYFRAME: usize = 17;
    pub const FRAME: usize = 18;
    pub const PACKET: usize = 22;
    /// The index of the simulcast layer (0 without simulcast).
    pub const LAYER: usize = 23;
}

/// What a client publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Video {
    None,
    Vp8,
    H264,
}

/// One received RTP packet, as the subscribing client saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub payload: Vec<u8>,
    /// The extended sequence number.
    pub seq_no: u64,
    pub timestamp: u32,
    pub ssrc: u32,
    pub marker: bool,
    pub at: Instant,
    /// The RTP payload type.
    pub pt: u8,
}

impl Received {
    /// The simulcast layer the publisher sent it on (0 without simulcast).
    pub fn layer(&self) -> u8 {
        self.payload[tag::LAYER]
    }

    /// The VP8 picture id of a video packet.
    pub fn picture_id(&self) -> Option<u16> {
        Vp8Descriptor::parse(&self.payload).ok()?.picture_id()
    }

    /// Whether it is the first packet of a frame (the VP8 descriptor's S bit).
    pub fn starts_frame(&self) -> bool {
        !self.is_audio() && self.payload[0] & 0x10 != 0
    }

    pub fn publisher(&self) -> u8 {
        self.payload[tag::PUBLISHER]
    }

    pub fn is_audio(&self) -> bool {
        self.payload[0] == b'A'
    }

    /// `(frame, packet)` of a keyframe packet.
    pub fn keyframe_packet(&self) -> Option<(u32, u8)> {
        (!self.is_audio() && self.payload[tag::KEYFRAME] == 1).then(|| {
            let frame = &self.payload[tag::FRAME..tag::FRAME + 4];
            (
                u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]),
                self.payload[tag::PACKET],
            )
        })
    }
}

struct Stream {
    mid: Mid,
    codec: Codec,
    next: Instant,
    frame: u32,
    /// One encoding, or the simulcast layers lowest first.
    layers: Vec<Encoding>,
}

/// The numbering of one encoding, each layer with its own bases as browsers do.
struct Encoding {
    rid: Option<Rid>,
    seq: u64,
    timestamp_base: u32,
    picture_id: u16,
    tl0_pic_idx: u8,
    key_idx: u8,
    /// Packets per delta frame.
    packets: u8,
    /// Its next frame is a keyframe (simulcast layers send one only when asked).
    keyframe_due: bool,
    /// The publisher stopped sending it (as Chrome stops its top layers on a short uplink).
    pub paused: bool,
}

impl Encoding {
    fn new(rid: Option<Rid>, index: u16, packets: u8) -> Self {
        Encoding {
            rid,
            seq: 1 + 20_000 * u64::from(index),
            timestamp_base: 12_345 * u32::from(index),
            picture_id: 100 + 9_000 * index,
            tl0_pic_idx: 7 * index as u8,
            key_idx: 3 * index as u8,
            packets,
            keyframe_due: true,
            paused: false,
        }
    }
}

impl Stream {
    fn new(mid: Mid, codec: Codec, now: Instant, simulcast: bool) -> Self {
        let layers = if simulcast && codec != Codec::Opus {
            (0u16..)
                .zip(SIMULCAST)
                .map(|(index, (rid, packets))| Encoding::new(Some(Rid::from(rid)), index, packets))
                .collect()
        } else {
            vec![Encoding::new(None, 0, DELTA_PACKETS)]
        };
        Stream {
            mid,
            codec,
            next: now,
            frame: 0,
            layers,
        }
    }
}

pub struct Client {
    pub id: ParticipantId,
    pub tag: u8,
    pub addr: SocketAddr,
    pub rtc: Rtc,
    pub connected: bool,
    pub received: Vec<Received>,
    /// Keyframe requests the server sent this client, as `(at, mid, rid, kind)`.
    pub keyframe_requests: Vec<(Instant, Mid, Option<Rid>, KeyframeRequestKind)>,
    /// Keyframe packets this client sent, as `(frame, packet, sent at)`.
    pub sent_keyframe_packets: Vec<(u32, u8, Instant)>,
    pub publishing: bool,
    /// The level (dBov) its audio packets carry in the RFC 6464 extension; `None`: no level.
    pub audio_level: Option<i8>,
    /// The server's ICE ufrag for this client, from the first SDP the server sent it.
    pub server_ufrag: Option<String>,
    pending: Option<SdpPendingOffer>,
    video_codec: Option<Codec>,
    /// Whether it sends its video as the [`SIMULCAST`] layers.
    simulcast: bool,
    /// Simulcast layers the server asked a keyframe of, not yet sent.
    keyframes_asked: Vec<(Mid, Option<Rid>)>,
    /// How many of the next simulcast keyframe requests it ignores, as a browser whose
    /// encoder merged or missed them.
    pub ignores_keyframe_requests: usize,
    audio: Option<Stream>,
    video: Option<Stream>,
    timeout: Instant,
    /// Whether it sends its audio as RED (RFC 2198) carrying the previous packet, as a
    /// browser does when RED comes first in the answer.
    pub sends_red: bool,
    /// Its previous audio payload and RTP time, for the next RED packet.
    last_audio: Option<(u32, Vec<u8>)>,
    /// RTP datagrams that reached it before its DTLS handshake was done (it cannot decrypt
    /// them).
    pub rtp_before_keys: u64,
}

impl Client {
    pub fn video_mid(&self) -> Option<Mid> {
        self.video.as_ref().map(|s| s.mid)
    }

    pub fn audio_mid(&self) -> Option<Mid> {
        self.audio.as_ref().map(|s| s.mid)
    }

    /// Stops or resumes sending the simulcast layer `index` of its video.
    pub fn pause_layer(&mut self, index: usize, paused: bool) {
        if let Some(layer) = self.video.as_mut().and_then(|v| v.layers.get_mut(index)) {
            layer.paused = paused;
            // A browser resumes a layer with a keyframe.
            layer.keyframe_due |= !paused;
        }
    }

    pub fn received_from(&self, publisher: u8) -> impl Iterator<Item = &Received> {
        self.received
            .iter()
            .filter(move |r| r.publisher() == publisher)
    }
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct InFlight {
    at: Instant,
    order: u64,
    transport: Transport,
    from: SocketAddr,
    to: SocketAddr,
    bytes: Vec<u8>,
}

/// A rate-limited link towards one address, shaped like the kernel's `tbf`: datagrams leave
/// one after another at `rate_bps`, and one that would wait in the queue longer than `queue`
/// is dropped.
#[derive(Debug, Clone, Copy)]
pub struct Link {
    pub rate_bps: u64,
    pub queue: Duration,
    busy_until: Option<Instant>,
}

/// Bytes of IPv4 and UDP headers each datagram costs on a link.
const DATAGRAM_OVERHEAD: usize = 28;

/// The network between clients and the server.
pub struct Net {
    rng: StdRng,
    pub loss: f64,
    /// Loss towards one address instead of [`Net::loss`].
    pub loss_to: HashMap<IpAddr, f64>,
    pub delay: Duration,
    pub jitter: Duration,
    queue: BinaryHeap<Reverse<InFlight>>,
    order: u64,
    /// Datagrams dropped by simulated loss, per destination.
    pub lost: HashMap<SocketAddr, u64>,
    /// Rate-limited links, by destination address.
    links: HashMap<IpAddr, Link>,
    /// When the last datagram on each path arrives, so none overtakes another.
    last_arrival: HashMap<(SocketAddr, SocketAddr), Instant>,
    /// Datagrams a link's queue had no room for, by destination address.
    pub queue_drops: HashMap<IpAddr, u64>,
    /// When set, datagrams to this address are kept in `captured` instead of delivered, so a
    /// benchmark can feed them to the core itself and time only that.
    pub capture_to: Option<SocketAddr>,
    /// Datagrams held back by `capture_to`, as `(source, bytes)`.
    pub captured: Vec<(SocketAddr, Vec<u8>)>,
    /// DTLS datagrams that start with a ChangeCipherSpec record (the server's final flight)
    /// are lost towards this address until this time.
    pub final_flight_blackout: Option<(IpAddr, Instant)>,
}

impl Net {
    fn send(
        &mut self,
        now: Instant,
        transport: Transport,
        from: SocketAddr,
        to: SocketAddr,
        bytes: Vec<u8>,
    ) {
        if self.capture_to == Some(to) {
            self.captured.push((from, bytes));
            return;
        }
        // Content type 20: a DTLS ChangeCipherSpec record.
        if let Some((ip, until)) = self.final_flight_blackout
            && to.ip() == ip
            && now < until
            && bytes.first() == Some(&20)
        {
            *self.lost.entry(to).or_default() += 1;
            return;
        }
        // TCP retransmits below ICE: what the loss takes, it delivers late; modelled as no loss.
        let loss = self.loss_to.get(&to.ip()).copied().unwrap_or(self.loss);
        if transport == Transport::Udp && loss > 0.0 && self.rng.random_bool(loss) {
            *self.lost.entry(to).or_default() += 1;
            return;
        }
        let jitter = if self.jitter.is_zero() {
            Duration::ZERO
        } else {
            self.jitter.mul_f64(self.rng.random::<f64>())
        };
        let mut leaves = now;
        if let Some(link) = self.links.get_mut(&to.ip()) {
            let start = link.busy_until.map_or(now, |busy| busy.max(now));
            if start - now > link.queue {
                *self.queue_drops.entry(to.ip()).or_default() += 1;
                return;
            }
            let bits = 8 * (bytes.len() + DATAGRAM_OVERHEAD) as u64;
            leaves = start + Duration::from_nanos(bits * 1_000_000_000 / link.rate_bps);
            link.busy_until = Some(leaves);
        }
        // Jitter varies the delay, but a path keeps its order: real networks seldom reorder,
        // while independent jitter per datagram would shuffle every burst a frame makes.
        let last = self.last_arrival.entry((from, to)).or_insert(now);
        let at = (leaves + self.delay + jitter).max(*last);
        *last = at;
        self.order += 1;
        self.queue.push(Reverse(InFlight {
            at,
            order: self.order,
            transport,
            from,
            to,
            bytes,
        }));
    }

    fn next(&self) -> Option<Instant> {
        self.queue.peek().map(|Reverse(p)| p.at)
    }

    /// Limits the link towards `ip` to `rate_bps` with a queue of `queue`; `None` lifts the
    /// limit (what is queued still arrives).
    pub fn limit(&mut self, ip: IpAddr, limit: Option<(u64, Duration)>) {
        match limit {
            Some((rate_bps, queue)) => {
                let busy_until = self.links.get(&ip).and_then(|link| link.busy_until);
                self.links.insert(
                    ip,
                    Link {
                        rate_bps: rate_bps.max(1),
                        queue,
                        busy_until,
                    },
                );
            }
            None => {
                self.links.remove(&ip);
            }
        }
    }
}

pub struct Sim {
    pub start: Instant,
    pub now: Instant,
    pub core: Core,
    pub server: SocketAddr,
    pub clients: Vec<Client>,
    pub net: Net,
    /// Every event the core emitted except offers and answers, in order.
    pub events: Vec<Event>,
    /// Every SDP the core sent, as `(client index, text)`, in order.
    pub server_sdps: Vec<(usize, String)>,
    /// Errors the core returned for datagrams.
    pub datagram_errors: u64,
    /// RTP payload bytes of every media packet clients send.
    pub payload_len: usize,
    /// RTP payload bytes of audio packets, when they differ from [`Sim::payload_len`] (Opus
    /// is about 100 bytes a packet in life).
    pub audio_payload_len: Option<usize>,
    /// The server's new ufrag from the answer to a client's ICE restart.
    restart_ufrag: Option<String>,
    /// Whether clients joining from now on offer RED for their audio.
    pub red: bool,
}

impl Sim {
    pub fn new(seed: u64) -> Self {
        Self::with_config(seed, |c| c)
    }

    pub fn with_config(seed: u64, configure: impl FnOnce(Config) -> Config) -> Self {
        let server = SocketAddr::from(SERVER);
        let start = Instant::now();
        Sim {
            start,
            now: start,
            core: Core::new(configure(Config::new(server))),
            server,
            clients: Vec::new(),
            net: Net {
                rng: StdRng::seed_from_u64(seed),
                loss: 0.0,
                loss_to: HashMap::new(),
                delay: Duration::from_millis(10),
                jitter: Duration::from_millis(2),
                queue: BinaryHeap::new(),
                order: 0,
                lost: HashMap::new(),
                links: HashMap::new(),
                last_arrival: HashMap::new(),
                queue_drops: HashMap::new(),
                capture_to: None,
                captured: Vec::new(),
                final_flight_blackout: None,
            },
            events: Vec::new(),
            server_sdps: Vec::new(),
            datagram_errors: 0,
            payload_len: PAYLOAD_LEN,
            audio_payload_len: None,
            restart_ufrag: None,
            red: false,
        }
    }

    /// A room whose server announces only its passive ICE-TCP candidate ([`SERVER_TCP`]), as
    /// with `sfu.transports = ["tcp"]`; clients also gather an active TCP candidate.
    pub fn tcp_only(seed: u64) -> Self {
        Self::with_config(seed, |mut config| {
            config.announce_udp = false;
            config.tcp_candidate = Some(SocketAddr::from(SERVER_TCP));
            config
        })
    }

    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// Adds a client that offers audio (Opus) and, optionally, video, `sendrecv` as browsers
    /// do, and joins.
    /// Returns its index in `clients`.
    pub fn join(&mut self, video: Video, waiting: bool) -> usize {
        self.add_client(video, waiting, true, false)
    }

    /// Like [`Sim::join`], with the video offered and sent as the [`SIMULCAST`] layers, as the
    /// join page sends its camera.
    pub fn join_simulcast(&mut self, video: Video) -> usize {
        self.add_client(video, false, true, true)
    }

    /// Like [`Sim::join`], but the client does not offer: it answers the core's offer and
    /// publishes on the m-lines the core offered to receive on.
    pub fn join_on_server_offer(&mut self, video: Video) -> usize {
        self.add_client(video, false, false, false)
    }

    fn add_client(
        &mut self,
        video: Video,
        waiting: bool,
        client_offers: bool,
        simulcast: bool,
    ) -> usize {
        let index = self.clients.len();
        let tag = u8::try_from(index + 1).expect("few clients");
        let addr = SocketAddr::from(([192, 168, 0, tag], 5000));
        let mut rtc = Rtc::builder()
            .set_rtp_mode(true)
            .enable_opus(true, self.red)
            .build(self.now);
        rtc.add_local_candidate(Candidate::host(addr, "udp").expect("host candidate"))
            .expect("candidate accepted");
        if self.core.config().tcp_candidate.is_some() {
            // An active TCP candidate, as browsers gather them (RFC 6544 port 9).
            let tcp = Candidate::builder()
                .tcp()
                .host(SocketAddr::new(addr.ip(), 9))
                .tcptype(TcpType::Active)
                .build()
                .expect("tcp candidate");
            rtc.add_local_candidate(tcp).expect("candidate accepted");
        }
        let video_codec = match video {
            Video::None => None,
            Video::Vp8 => Some(Codec::Vp8),
            Video::H264 => Some(Codec::H264),
        };
        let mut client = Client {
            id: ParticipantId(u128::from(tag)),
            tag,
            addr,
            rtc,
            connected: false,
            received: Vec::new(),
            keyframe_requests: Vec::new(),
            sent_keyframe_packets: Vec::new(),
            publishing: true,
            audio_level: None,
            server_ufrag: None,
            pending: None,
            video_codec,
            simulcast,
            keyframes_asked: Vec::new(),
            ignores_keyframe_requests: 0,
            audio: None,
            video: None,
            timeout: self.now,
            sends_red: false,
            last_audio: None,
            rtp_before_keys: 0,
        };
        let offer = client_offers.then(|| {
            let mut api = client.rtc.sdp_api();
            let audio = api.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
            let layers = simulcast.then(|| {
                let mut layers = Simulcast::new();
                for (rid, _) in SIMULCAST {
                    layers.add_send_layer(SimulcastLayer::new(rid));
                }
                layers
            });
            let video = video_codec
                .map(|_| api.add_media(MediaKind::Video, Direction::SendRecv, None, None, layers));
            let (offer, pending) = api.apply().expect("offer");
            client.pending = Some(pending);
            client.audio = Some(Stream::new(audio, Codec::Opus, self.now, false));
            client.video = video
                .zip(video_codec)
                .map(|(mid, c)| Stream::new(mid, c, self.now, simulcast));
            offer
        });
        let id = client.id;
        self.clients.push(client);
        self.drain_client(index);
        let result = self.core.handle_command(
            self.now,
            Command::Join {
                room: ROOM,
                participant: id,
                offer,
                waiting,
            },
        );
        self.after_core();
        result.expect("join accepted");
        index
    }

    /// The client restarts ICE with new credentials (as a browser does after a network blip)
    /// and returns the server's new ICE ufrag from its answer.
    pub fn ice_restart(&mut self, index: usize) -> String {
        let client = &mut self.clients[index];
        let mut api = client.rtc.sdp_api();
        api.ice_restart(true);
        let (offer, pending) = api.apply().expect("ice restart offer");
        client.pending = Some(pending);
        let participant = client.id;
        self.drain_client(index);
        self.command(Command::Offer { participant, offer })
            .expect("ice restart accepted");
        self.restart_ufrag
            .take()
            .expect("the answer carries new credentials")
    }

    pub fn command(&mut self, command: Command) -> Result<(), sfu::core::CoreError> {
        let result = self.core.handle_command(self.now, command);
        self.after_core();
        result
    }

    /// Steps the world until `duration` of virtual time has passed.
    pub fn run_for(&mut self, duration: Duration) {
        let end = self.now + duration;
        for _ in 0..MAX_STEPS {
            let next = self.next_deadline().min(end);
            self.now = self.now.max(next);
            self.step();
            if self.now >= end {
                return;
            }
        }
        panic!("simulation stopped advancing at {:?}", self.elapsed());
    }

    /// Steps until every client has connected, or panics after `limit`.
    pub fn run_until_connected(&mut self, limit: Duration) {
        let end = self.now + limit;
        while !self.clients.iter().all(|c| c.connected) {
            assert!(self.now < end, "clients did not connect within {limit:?}");
            self.run_for(Duration::from_millis(10));
        }
    }

    fn next_deadline(&self) -> Instant {
        let clients = self.clients.iter().flat_map(|c| {
            let media = c
                .publishing
                .then_some([&c.audio, &c.video])
                .filter(|_| c.connected)
                .into_iter()
                .flatten()
                .flatten()
                .map(|s| s.next);
            media.chain([c.timeout])
        });
        clients
            .chain(self.core.poll_timeout())
            .chain(self.net.next())
            .min()
            .unwrap_or(self.now + Duration::from_millis(10))
    }

    fn step(&mut self) {
        let now = self.now;
        while self.net.next().is_some_and(|at| at <= now) {
            let Some(Reverse(packet)) = self.net.queue.pop() else {
                break;
            };
            self.deliver(packet);
        }
        if self.core.poll_timeout().is_some_and(|at| at <= now) {
            self.core.handle_timeout(now);
            self.after_core();
        }
        for index in 0..self.clients.len() {
            if self.clients[index].timeout <= now {
                let result = self.clients[index].rtc.handle_input(Input::Timeout(now));
                result.expect("client timeout");
                self.drain_client(index);
            }
            self.send_media(index);
        }
    }

    fn deliver(&mut self, packet: InFlight) {
        if packet.to == self.server || packet.to == SocketAddr::from(SERVER_TCP) {
            let result = self.core.handle_packet(
                self.now,
                packet.transport,
                packet.from,
                packet.to,
                &packet.bytes,
            );
            if result.is_err() {
                self.datagram_errors += 1;
            }
            self.after_core();
            return;
        }
        // Each client has an address of its own; its UDP and TCP candidates share it.
        let Some(index) = self
            .clients
            .iter()
            .position(|c| c.addr.ip() == packet.to.ip())
        else {
            return;
        };
        let proto = match packet.transport {
            Transport::Udp => Protocol::Udp,
            Transport::Tcp => Protocol::Tcp,
        };
        let receive = Receive::new(proto, packet.from, packet.to, &packet.bytes)
            .expect("server sends valid datagrams");
        let client = &mut self.clients[index];
        if !client.connected && is_rtp(&packet.bytes) {
            client.rtp_before_keys += 1;
        }
        if client.rtc.is_alive() {
            client
                .rtc
                .handle_input(Input::Receive(self.now, receive))
                .expect("client accepts server datagram");
        }
        self.drain_client(index);
    }

    fn send_media(&mut self, index: usize) {
        let now = self.now;
        let client = &mut self.clients[index];
        if !client.publishing || !client.connected {
            return;
        }
        for video in [false, true] {
            let slot = if video {
                &mut client.video
            } else {
                &mut client.audio
            };
            let Some(mut stream) = slot.take() else {
                continue;
            };
            if stream.next <= now {
                let len = match self.audio_payload_len {
                    Some(len) if !video => len,
                    _ => self.payload_len,
                };
                send_frame(client, &mut stream, video, &mut self.net, now, len);
            }
            if video {
                client.video = Some(stream);
            } else {
                client.audio = Some(stream);
            }
        }
    }

    fn drain_client(&mut self, index: usize) {
        drain(&mut self.clients[index], &mut self.net, self.now);
    }

    /// Sends what the core queued and relays its signaling.
    fn after_core(&mut self) {
        loop {
            while let Some(t) = self.core.poll_transmit() {
                let server = match t.transport {
                    Transport::Udp => self.server,
                    Transport::Tcp => SocketAddr::from(SERVER_TCP),
                };
                assert_eq!(t.source, server);
                self.net
                    .send(self.now, t.transport, t.source, t.destination, t.contents);
            }
            let Some(event) = self.core.poll_event() else {
                return;
            };
            match event {
                Event::Answer {
                    participant,
                    answer,
                } => {
                    let index = self.index_of(participant);
                    let sdp = answer.to_sdp_string();
                    self.server_sdps.push((index, sdp.clone()));
                    let answer =
                        SdpAnswer::from_sdp_string(&sdp).expect("answer survives signaling");
                    let client = &mut self.clients[index];
                    let ufrag = ufrag_of(&sdp);
                    if client.server_ufrag.is_some() && ufrag != client.server_ufrag {
                        self.restart_ufrag.clone_from(&ufrag);
                    }
                    client.server_ufrag = client.server_ufrag.take().or(ufrag);
                    let pending = client.pending.take().expect("client offered");
                    client
                        .rtc
                        .sdp_api()
                        .accept_answer(pending, answer)
                        .expect("client accepts answer");
                    self.drain_client(index);
                }
                Event::Offer { participant, offer } => {
                    let index = self.index_of(participant);
                    let sdp = offer.to_sdp_string();
                    self.server_sdps.push((index, sdp.clone()));
                    let offer = SdpOffer::from_sdp_string(&sdp).expect("offer survives signaling");
                    let client = &mut self.clients[index];
                    client.server_ufrag = client.server_ufrag.take().or_else(|| ufrag_of(&sdp));
                    let answer = self.clients[index]
                        .rtc
                        .sdp_api()
                        .accept_offer(offer)
                        .expect("client accepts offer");
                    self.drain_client(index);
                    let result = self.core.handle_command(
                        self.now,
                        Command::Answer {
                            participant,
                            answer,
                        },
                    );
                    result.expect("core accepts answer");
                }
                event => self.events.push(event),
            }
        }
    }

    pub fn index_of(&self, id: ParticipantId) -> usize {
        self.clients
            .iter()
            .position(|c| c.id == id)
            .expect("known client")
    }

    /// The tracks published by client `index`, from the core's events.
    pub fn tracks_of(&self, index: usize) -> Vec<TrackId> {
        let id = self.clients[index].id;
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::TrackPublished { track, .. } if track.participant == id => Some(*track),
                _ => None,
            })
            .collect()
    }

    /// The m-line in `subscriber`'s session that carries `publisher`'s video.
    pub fn routed_video_mid(&self, subscriber: usize, publisher: usize) -> Mid {
        let publisher_video = self.clients[publisher]
            .video_mid()
            .expect("publishes video");
        let subscriber_id = self.clients[subscriber].id;
        self.events
            .iter()
            .find_map(|e| match e {
                Event::TrackRouted {
                    subscriber,
                    track,
                    mid,
                } if *subscriber == subscriber_id && track.mid == publisher_video => Some(*mid),
                _ => None,
            })
            .expect("video routed")
    }
}

fn drain(client: &mut Client, net: &mut Net, now: Instant) {
    loop {
        match client.rtc.poll_output().expect("client poll") {
            Output::Timeout(at) => {
                client.timeout = at;
                return;
            }
            Output::Transmit(t) => {
                let transport = match t.proto {
                    Protocol::Udp => Transport::Udp,
                    _ => Transport::Tcp,
                };
                net.send(now, transport, t.source, t.destination, t.contents.into());
            }
            Output::Event(event) => match event {
                RtcEvent::Connected => client.connected = true,
                RtcEvent::MediaAdded(added) if added.direction.is_sending() => {
                    let stream = match added.kind {
                        MediaKind::Audio if client.audio.is_none() => &mut client.audio,
                        MediaKind::Video if client.video.is_none() => &mut client.video,
                        _ => continue,
                    };
                    let codec = match added.kind {
                        MediaKind::Audio => Some(Codec::Opus),
                        MediaKind::Video => client.video_codec,
                    };
                    *stream = codec.map(|codec| Stream::new(added.mid, codec, now, false));
                }
                RtcEvent::RtpPacket(packet) => client.received.push(Received {
                    payload: packet.payload.to_vec(),
                    seq_no: *packet.seq_no,
                    timestamp: packet.header.timestamp,
                    ssrc: *packet.header.ssrc,
                    marker: packet.header.marker,
                    at: now,
                    pt: *packet.header.payload_type,
                }),
                RtcEvent::KeyframeRequest(request) => {
                    client
                        .keyframe_requests
                        .push((now, request.mid, request.rid, request.kind));
                    // Single-encoding video keeps its own keyframe period, as the tests expect.
                    if request.rid.is_some() {
                        if client.ignores_keyframe_requests > 0 {
                            client.ignores_keyframe_requests -= 1;
                        } else {
                            client.keyframes_asked.push((request.mid, request.rid));
                        }
                    }
                }
                _ => {}
            },
        }
    }
}

fn send_frame(
    client: &mut Client,
    stream: &mut Stream,
    video: bool,
    net: &mut Net,
    now: Instant,
    payload_len: usize,
) {
    let Some((pt, red_pt)) = client
        .rtc
        .codec_config()
        .find(|p| p.spec().codec == stream.codec)
        .map(|p| (p.pt(), p.red()))
    else {
        return;
    };
    let (rate, period) = if video {
        (90_000, VIDEO_PERIOD)
    } else {
        (48_000, AUDIO_PERIOD)
    };
    let rtp_time = (u128::from(stream.frame) * rate * period.as_millis() / 1000) as u32;
    let ext_vals = ExtensionValues {
        audio_level: if video { None } else { client.audio_level },
        // str0m writes the extension only with its voice-activity flag.
        voice_activity: if video {
            None
        } else {
            client.audio_level.map(|dbov| dbov >= -50)
        },
        ..ExtensionValues::default()
    };
    let periodic = stream.frame.is_multiple_of(KEYFRAME_EVERY);
    if video {
        for (mid, rid) in std::mem::take(&mut client.keyframes_asked) {
            if let Some(layer) = stream
                .layers
                .iter_mut()
                .find(|layer| mid == stream.mid && layer.rid == rid)
            {
                layer.keyframe_due = true;
            }
        }
    }
    for (index, layer) in stream.layers.iter_mut().enumerate() {
        if layer.paused {
            continue;
        }
        let keyframe = video && (layer.keyframe_due || (layer.rid.is_none() && periodic));
        layer.keyframe_due = false;
        let packets = match (video, keyframe, layer.rid) {
            (false, _, _) => 1,
            (true, true, None) => KEYFRAME_PACKETS,
            (true, true, Some(_)) => 4 * layer.packets,
            (true, false, _) => layer.packets,
        };
        if video {
            layer.picture_id = (layer.picture_id + 1) & 0x7fff;
            layer.tl0_pic_idx = layer.tl0_pic_idx.wrapping_add(1);
            if keyframe {
                layer.key_idx = (layer.key_idx + 1) & 0x1f;
            }
        }
        for packet in 0..packets {
            let mut payload = vec![0u8; payload_len];
            if video {
                let first = packet == 0;
                payload[0] = 0x80 | if first { 0x10 } else { 0 };
                payload[1] = 0xf0;
                payload[2] = 0x80 | (layer.picture_id >> 8) as u8;
                payload[3] = layer.picture_id as u8;
                payload[4] = layer.tl0_pic_idx;
                payload[5] = layer.key_idx;
                payload[6] = u8::from(!(first && keyframe));
                if first && keyframe {
                    let (width, height) = match layer.rid {
                        Some(_) => LAYER_SIZES[index.min(LAYER_SIZES.len() - 1)],
                        None => LAYER_SIZES[1],
                    };
                    payload[9..12].copy_from_slice(&[0x9d, 0x01, 0x2a]);
                    payload[12..14].copy_from_slice(&width.to_le_bytes());
                    payload[14..16].copy_from_slice(&height.to_le_bytes());
                }
            } else {
                payload[0] = b'A';
            }
            payload[tag::PUBLISHER] = client.tag;
            payload[tag::KEYFRAME] = u8::from(keyframe);
            payload[tag::FRAME..tag::FRAME + 4].copy_from_slice(&stream.frame.to_be_bytes());
            payload[tag::PACKET] = packet;
            payload[tag::LAYER] = index as u8;
            let (pt, payload) = match red_pt {
                Some(red_pt) if !video && client.sends_red => {
                    let previous = client.last_audio.replace((rtp_time, payload.clone()));
                    let redundant: Vec<RedundantBlock> = previous
                        .map(|(time, payload)| RedundantBlock {
                            pt: *pt,
                            timestamp_offset: rtp_time.wrapping_sub(time),
                            payload,
                        })
                        .into_iter()
                        .collect();
                    (red_pt, RedEncoder::encode(*pt, &payload, &redundant))
                }
                _ => (pt, payload),
            };
            let mut direct = client.rtc.direct_api();
            let Some(tx) = direct.stream_tx_by_mid(stream.mid, layer.rid) else {
                break;
            };
            tx.write_rtp(
                RtpWrite::new(
                    pt,
                    layer.seq.into(),
                    rtp_time.wrapping_add(layer.timestamp_base),
                    now,
                    payload,
                )
                .marker(packet + 1 == packets)
                .nackable(video)
                .ext_vals(ext_vals.clone()),
            );
            layer.seq += 1;
            if keyframe {
                client
                    .sent_keyframe_packets
                    .push((stream.frame, packet, now));
            }
            drain(client, net, now);
        }
    }
    stream.frame += 1;
    stream.next += period;
}

/// The `a=ice-ufrag` of an SDP.
fn ufrag_of(sdp: &str) -> Option<String> {
    sdp.lines()
        .find_map(|line| line.trim().strip_prefix("a=ice-ufrag:"))
        .map(str::to_owned)
}

/// RFC 7983 and RFC 5761: a first byte of 128 to 191 is RTP or RTCP, and RTCP's packet types
/// are 192 to 223.
fn is_rtp(bytes: &[u8]) -> bool {
    matches!(bytes, [first, second, ..] if (128..=191).contains(first) && !(192..=223).contains(second))
}
