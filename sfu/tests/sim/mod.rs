//! A virtual-time world for scenario tests: one [`Core`], simulated clients that are ordinary
//! (non-lite) str0m peers in RTP mode, an in-memory network with seeded loss and jitter, and
//! lossless signaling that relays offers and answers instantly.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sfu::core::{Command, Config, Core, Event, ParticipantId, RoomId, TrackId, Transport};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, KeyframeRequestKind, MediaKind, Mid};
use str0m::net::{Protocol, Receive, TcpType};
use str0m::rtp::{ExtensionValues, RtpWrite};
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

/// Byte offsets of the tags every test payload carries.
pub mod tag {
    pub const PUBLISHER: usize = 2;
    pub const KEYFRAME: usize = 3;
    pub const FRAME: usize = 4;
    pub const PACKET: usize = 8;
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
}

impl Received {
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
    seq: u64,
    next: Instant,
    frame: u32,
}

impl Stream {
    fn new(mid: Mid, codec: Codec, now: Instant) -> Self {
        Stream {
            mid,
            codec,
            seq: 1,
            next: now,
            frame: 0,
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
    pub keyframe_requests: Vec<(Instant, Mid, KeyframeRequestKind)>,
    /// Keyframe packets this client sent, as `(frame, packet, sent at)`.
    pub sent_keyframe_packets: Vec<(u32, u8, Instant)>,
    pub publishing: bool,
    /// The level (dBov) its audio packets carry in the RFC 6464 extension; `None`: no level.
    pub audio_level: Option<i8>,
    /// The server's ICE ufrag for this client, from the first SDP the server sent it.
    pub server_ufrag: Option<String>,
    pending: Option<SdpPendingOffer>,
    video_codec: Option<Codec>,
    audio: Option<Stream>,
    video: Option<Stream>,
    timeout: Instant,
}

impl Client {
    pub fn video_mid(&self) -> Option<Mid> {
        self.video.as_ref().map(|s| s.mid)
    }

    pub fn audio_mid(&self) -> Option<Mid> {
        self.audio.as_ref().map(|s| s.mid)
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

/// The network between clients and the server.
pub struct Net {
    rng: StdRng,
    pub loss: f64,
    pub delay: Duration,
    pub jitter: Duration,
    queue: BinaryHeap<Reverse<InFlight>>,
    order: u64,
    /// Datagrams dropped by simulated loss, per destination.
    pub lost: HashMap<SocketAddr, u64>,
    /// When set, datagrams to this address are kept in `captured` instead of delivered, so a
    /// benchmark can feed them to the core itself and time only that.
    pub capture_to: Option<SocketAddr>,
    /// Datagrams held back by `capture_to`, as `(source, bytes)`.
    pub captured: Vec<(SocketAddr, Vec<u8>)>,
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
        // TCP retransmits below ICE: what the loss takes, it delivers late; modelled as no loss.
        if transport == Transport::Udp && self.loss > 0.0 && self.rng.random_bool(self.loss) {
            *self.lost.entry(to).or_default() += 1;
            return;
        }
        let jitter = if self.jitter.is_zero() {
            Duration::ZERO
        } else {
            self.jitter.mul_f64(self.rng.random::<f64>())
        };
        self.order += 1;
        self.queue.push(Reverse(InFlight {
            at: now + self.delay + jitter,
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
    /// The server's new ufrag from the answer to a client's ICE restart.
    restart_ufrag: Option<String>,
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
                delay: Duration::from_millis(10),
                jitter: Duration::from_millis(2),
                queue: BinaryHeap::new(),
                order: 0,
                lost: HashMap::new(),
                capture_to: None,
                captured: Vec::new(),
            },
            events: Vec::new(),
            server_sdps: Vec::new(),
            datagram_errors: 0,
            payload_len: PAYLOAD_LEN,
            restart_ufrag: None,
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
        self.add_client(video, waiting, true)
    }

    /// Like [`Sim::join`], but the client does not offer: it answers the core's offer and
    /// publishes on the m-lines the core offered to receive on.
    pub fn join_on_server_offer(&mut self, video: Video) -> usize {
        self.add_client(video, false, false)
    }

    fn add_client(&mut self, video: Video, waiting: bool, client_offers: bool) -> usize {
        let index = self.clients.len();
        let tag = u8::try_from(index + 1).expect("few clients");
        let addr = SocketAddr::from(([192, 168, 0, tag], 5000));
        let mut rtc = Rtc::builder().set_rtp_mode(true).build(self.now);
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
            audio: None,
            video: None,
            timeout: self.now,
        };
        let offer = client_offers.then(|| {
            let mut api = client.rtc.sdp_api();
            let audio = api.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
            let video = video_codec
                .map(|_| api.add_media(MediaKind::Video, Direction::SendRecv, None, None, None));
            let (offer, pending) = api.apply().expect("offer");
            client.pending = Some(pending);
            client.audio = Some(Stream::new(audio, Codec::Opus, self.now));
            client.video = video
                .zip(video_codec)
                .map(|(mid, c)| Stream::new(mid, c, self.now));
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
                send_frame(
                    client,
                    &mut stream,
                    video,
                    &mut self.net,
                    now,
                    self.payload_len,
                );
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
                    *stream = codec.map(|codec| Stream::new(added.mid, codec, now));
                }
                RtcEvent::RtpPacket(packet) => client.received.push(Received {
                    payload: packet.payload.to_vec(),
                }),
                RtcEvent::KeyframeRequest(request) => {
                    client
                        .keyframe_requests
                        .push((now, request.mid, request.kind));
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
    let Some(pt) = client
        .rtc
        .codec_config()
        .find(|p| p.spec().codec == stream.codec)
        .map(|p| p.pt())
    else {
        return;
    };
    let keyframe = video && stream.frame.is_multiple_of(KEYFRAME_EVERY);
    let packets = match (video, keyframe) {
        (false, _) => 1,
        (true, true) => KEYFRAME_PACKETS,
        (true, false) => DELTA_PACKETS,
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
    for packet in 0..packets {
        let mut payload = vec![0u8; payload_len];
        payload[0] = if video { 0x10 } else { b'A' };
        payload[1] = u8::from(!keyframe);
        payload[tag::PUBLISHER] = client.tag;
        payload[tag::KEYFRAME] = u8::from(keyframe);
        payload[tag::FRAME..tag::FRAME + 4].copy_from_slice(&stream.frame.to_be_bytes());
        payload[tag::PACKET] = packet;
        let mut direct = client.rtc.direct_api();
        let Some(tx) = direct.stream_tx_by_mid(stream.mid, None) else {
            return;
        };
        tx.write_rtp(
            RtpWrite::new(pt, stream.seq.into(), rtp_time, now, payload)
                .marker(packet + 1 == packets)
                .nackable(video)
                .ext_vals(ext_vals.clone()),
        );
        stream.seq += 1;
        if keyframe {
            client
                .sent_keyframe_packets
                .push((stream.frame, packet, now));
        }
        drain(client, net, now);
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
