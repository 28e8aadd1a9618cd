//! The light participant for capacity runs (`--peer str0m`, the default): one str0m session
//! in RTP mode on one UDP socket, driven by one task, sending the run's media as RTP packets
//! cut once per run ([`RtpMedia`]) instead of packetizing every frame in every peer. It
//! speaks the same signaling as [`crate::peer`] (join with an offer, answer the server's
//! offers, admit as the clinician) and fills the same [`Seen`], so the report reads both
//! alike. It goes over UDP only, directly or through the impairment relay; ICE-TCP and TURN
//! runs need `--peer webrtc-rs`.
//!
//! What it leaves out, as the webrtc-rs peer does: it ignores keyframe requests (the samples
//! loop with their own keyframes), decodes nothing, and sends transport-wide feedback only
//! behind an impaired path (`--impair`). What it does like a browser: NACK and RTCP reports.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{SinkExt as _, StreamExt as _};
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use serde_json::{Value, json};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid, Pt, Rid, Simulcast, SimulcastLayer};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{Extension, RtpWrite, Ssrc};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

use crate::impair::Relay;
use crate::media::{Media, Stream, vp8_keyframe_width};
use crate::peer::{
    Options, PeerError, RemoteTrack, Seen, SelectedPair, Signal, Transport, read_frame,
};
use crate::stats::RxStream;

/// The largest RTP payload cut from a video frame: with the RTP header, SRTP tag and
/// extensions a packet stays under str0m's 1,150-byte datagram target.
const MAX_PAYLOAD: usize = 1000;
/// The largest datagram read.
const MAX_DATAGRAM: usize = 2048;
/// How late a frame may be before the peer skips ahead to its schedule (and counts it).
const BEHIND: Duration = Duration::from_millis(200);

/// str0m's crypto (aws-lc-rs), made once per process: every peer's DTLS certificate is
/// still its own.
pub(crate) fn crypto() -> Arc<str0m::crypto::CryptoProvider> {
    static CRYPTO: OnceLock<Arc<str0m::crypto::CryptoProvider>> = OnceLock::new();
    Arc::clone(CRYPTO.get_or_init(|| Arc::new(str0m::crypto::from_feature_flags())))
}

/// One frame as RTP payloads: VP8 with its payload descriptor (RFC 7741 §4.2, a 15-bit
/// PictureID that each sender fills in), Opus as it is (RFC 7587).
#[derive(Debug, Clone)]
pub struct RtpFrame {
    /// The payloads, in order; the last one gets the marker bit.
    pub payloads: Arc<[Bytes]>,
    /// RTP clock ticks until the next frame.
    pub ticks: u32,
}

/// A looping stream cut into RTP payloads.
#[derive(Debug, Clone)]
pub struct RtpStream {
    /// The frames in order.
    pub frames: Arc<[RtpFrame]>,
    /// Whether the payloads are VP8 (a PictureID to fill in) rather than Opus.
    pub vp8: bool,
    /// Its RTP clock rate.
    pub clock_rate: u32,
}

/// What every light peer of a run sends, cut once.
#[derive(Debug, Clone)]
pub struct RtpMedia {
    /// Opus.
    pub audio: RtpStream,
    /// The camera: one stream, or the simulcast layers with their rids (lowest first).
    pub video: Vec<(Option<&'static str>, RtpStream)>,
}

impl RtpMedia {
    /// `media` cut into RTP payloads.
    #[must_use]
    pub fn cut(media: &Media) -> RtpMedia {
        let video = match &media.video {
            Some(stream) => vec![(None, cut_vp8(stream))],
            None => (media.layers.iter())
                .map(|(rid, stream)| (Some(*rid), cut_vp8(stream)))
                .collect(),
        };
        RtpMedia {
            audio: RtpStream {
                frames: (media.audio.frames.iter())
                    .map(|frame| RtpFrame {
                        payloads: Arc::new([frame.data.clone()]),
                        ticks: frame.ticks,
                    })
                    .collect(),
                vp8: false,
                clock_rate: media.audio.clock_rate,
            },
            video,
        }
    }
}

/// VP8 frames cut into payloads of at most [`MAX_PAYLOAD`] bytes, each behind a 4-byte
/// descriptor: X and S (on the first) set, then I with a zero PictureID the sender fills.
fn cut_vp8(stream: &Stream) -> RtpStream {
    let frames = stream.frames.iter().map(|frame| {
        let body = MAX_PAYLOAD - 4;
        let payloads: Vec<Bytes> = (frame.data.chunks(body).enumerate())
            .map(|(index, chunk)| {
                let start = if index == 0 { 0x10 } else { 0 };
                let mut payload = Vec::with_capacity(4 + chunk.len());
                payload.extend_from_slice(&[0x80 | start, 0x80, 0x80, 0]);
                payload.extend_from_slice(chunk);
                Bytes::from(payload)
            })
            .collect();
        RtpFrame {
            payloads: payloads.into(),
            ticks: frame.ticks,
        }
    });
    RtpStream {
        frames: frames.collect(),
        vp8: true,
        clock_rate: stream.clock_rate,
    }
}

/// One stream being sent: where it is in its loop and its RTP numbering.
pub(crate) struct Sender {
    mid: Mid,
    rid: Option<Rid>,
    /// Its codec's payload type in the negotiated session.
    pt: Pt,
    stream: RtpStream,
    frame: usize,
    seq: u64,
    rtp_time: u32,
    picture_id: u16,
    next: Instant,
}

impl Sender {
    /// A sender for `stream` on `mid` (and `rid`), or `None` when the session negotiated
    /// no payload type for its codec.
    fn new(
        rtc: &Rtc,
        (mid, rid): (Mid, Option<&str>),
        stream: RtpStream,
        start: Instant,
    ) -> Option<Sender> {
        let codec = if stream.vp8 { Codec::Vp8 } else { Codec::Opus };
        let pt = rtc.codec_config().find(|p| p.spec().codec == codec)?.pt();
        Some(Sender {
            mid,
            rid: rid.map(Rid::from),
            pt,
            stream,
            frame: 0,
            seq: u64::from(rand::random::<u16>()),
            rtp_time: rand::random(),
            picture_id: rand::random::<u16>() & 0x7fff,
            next: start,
        })
    }

    /// When its next frame is due.
    pub(crate) fn next(&self) -> Instant {
        self.next
    }

    /// Writes the frame that is due to `rtc` and moves to the next one; returns how many
    /// frames it skipped to catch up with its schedule.
    fn send(&mut self, rtc: &mut Rtc, now: Instant) -> u64 {
        let Some(frame) = self.stream.frames.get(self.frame).cloned() else {
            return 0;
        };
        let last = frame.payloads.len().saturating_sub(1);
        let mut api = rtc.direct_api();
        if let Some(tx) = api.stream_tx_by_mid(self.mid, self.rid) {
            for (index, payload) in frame.payloads.iter().enumerate() {
                let mut bytes = payload.to_vec();
                if self.stream.vp8 && bytes.len() >= 4 {
                    bytes[2] = 0x80 | (self.picture_id >> 8) as u8;
                    bytes[3] = self.picture_id as u8;
                }
                tx.write_rtp(
                    RtpWrite::new(self.pt, self.seq.into(), self.rtp_time, now, bytes)
                        .marker(index == last)
                        .nackable(self.stream.vp8),
                );
                self.seq += 1;
            }
        }
        self.picture_id = (self.picture_id + 1) & 0x7fff;
        self.rtp_time = self.rtp_time.wrapping_add(frame.ticks);
        self.frame = (self.frame + 1) % self.stream.frames.len().max(1);
        let rate = u64::from(self.stream.clock_rate.max(1));
        let period = Duration::from_nanos(u64::from(frame.ticks) * 1_000_000_000 / rate);
        self.next += period;
        // A peer that fell behind (a busy generator) skips ahead instead of bursting.
        if self.next + BEHIND < now {
            let skipped = (now - self.next).as_nanos() / period.as_nanos().max(1);
            self.next = now;
            return u64::try_from(skipped).unwrap_or(u64::MAX);
        }
        0
    }
}

/// The session, its socket and what the peer tracks about it.
pub(crate) struct Session {
    pub(crate) rtc: Rtc,
    pub(crate) socket: UdpSocket,
    local: SocketAddr,
    /// Where the SFU (or the relay in front of it) last spoke from.
    remote: Option<SocketAddr>,
    /// str0m's next deadline.
    pub(crate) timeout: Instant,
    /// Whether ICE and DTLS are up.
    pub(crate) connected: bool,
    tracks: HashMap<Ssrc, Arc<RemoteTrack>>,
}

impl Session {
    /// A str0m session in RTP mode on `socket` (bound to one address), with its host
    /// candidate added. The MID and RID extensions name every stream and simulcast layer;
    /// transport-wide feedback (`twcc`) lets the server estimate this peer's downlink.
    pub(crate) fn new(socket: UdpSocket, twcc: bool) -> Result<Session, PeerError> {
        let local = socket.local_addr()?;
        let mut builder = Rtc::builder()
            .set_rtp_mode(true)
            .clear_codecs()
            .enable_opus(true, false)
            .enable_vp8(true)
            .clear_extension_map()
            .set_extension(4, Extension::RtpMid)
            .set_extension(10, Extension::RtpStreamId)
            .set_extension(11, Extension::RepairedRtpStreamId)
            .set_crypto_provider(crypto());
        if twcc {
            builder = builder.set_extension(3, Extension::TransportSequenceNumber);
        }
        let mut rtc = builder.build(Instant::now());
        let candidate = Candidate::host(local, "udp").map_err(str0m::RtcError::from)?;
        rtc.add_local_candidate(candidate);
        Ok(Session {
            rtc,
            socket,
            local,
            remote: None,
            timeout: Instant::now(),
            connected: false,
            tracks: HashMap::new(),
        })
    }

    /// Sends what str0m queued, records what it reported, and notes its next deadline.
    pub(crate) async fn drain(&mut self, seen: &Seen) -> Result<(), PeerError> {
        loop {
            match self.rtc.poll_output()? {
                Output::Timeout(at) => {
                    self.timeout = at;
                    return Ok(());
                }
                Output::Transmit(transmit) => {
                    // A full socket buffer loses the datagram, as a congested path would.
                    let _ = self
                        .socket
                        .send_to(&transmit.contents, transmit.destination)
                        .await;
                }
                Output::Event(event) => self.on_event(event, seen),
            }
        }
    }

    fn on_event(&mut self, event: Event, seen: &Seen) {
        match event {
            Event::Connected => {
                self.connected = true;
                let _ = seen.selected.set(SelectedPair {
                    local_path: "host/udp".to_owned(),
                    local: self.local.to_string(),
                    remote: self.remote.map(|r| r.to_string()).unwrap_or_default(),
                });
            }
            Event::RtpPacket(packet) => {
                let now = Instant::now();
                let _ = seen.first_media.set(now);
                let ssrc = packet.header.ssrc;
                let track = match self.tracks.get(&ssrc) {
                    Some(track) => Arc::clone(track),
                    None => {
                        let mid = self.rtc.direct_api().stream_rx(&ssrc).map(|s| s.mid());
                        let kind = mid.and_then(|mid| self.rtc.media(mid)).map(|m| m.kind());
                        let (kind, clock_rate) = match kind {
                            Some(MediaKind::Audio) => (RtpCodecKind::Audio, 48_000),
                            Some(MediaKind::Video) => (RtpCodecKind::Video, 90_000),
                            None => return,
                        };
                        let track = Arc::new(RemoteTrack {
                            kind,
                            rx: std::sync::Mutex::new(RxStream::new(clock_rate)),
                        });
                        if let Ok(mut tracks) = seen.tracks.lock() {
                            tracks.push(Arc::clone(&track));
                        }
                        self.tracks.insert(ssrc, Arc::clone(&track));
                        track
                    }
                };
                let counter = match track.kind {
                    RtpCodecKind::Audio => &seen.audio,
                    _ => &seen.video,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut rx) = track.rx.lock() {
                    rx.on_packet(
                        packet.header.sequence_number,
                        packet.header.timestamp,
                        packet.payload.len(),
                        now,
                    );
                    if track.kind == RtpCodecKind::Video {
                        rx.on_video_width(vp8_keyframe_width(&packet.payload));
                    }
                }
            }
            _ => {}
        }
    }

    /// Feeds one datagram read from the socket to str0m.
    pub(crate) fn receive(
        &mut self,
        len: usize,
        from: SocketAddr,
        buf: &[u8],
    ) -> Result<(), PeerError> {
        let Some(bytes) = buf.get(..len) else {
            return Ok(());
        };
        // What is not STUN, DTLS, RTP or RTCP is dropped, as browsers do.
        let Ok(receive) = Receive::new(Protocol::Udp, from, self.local, bytes) else {
            return Ok(());
        };
        self.remote = Some(from);
        self.rtc
            .handle_input(Input::Receive(Instant::now(), receive))?;
        Ok(())
    }
}

/// A UDP socket bound to the address the route to `target` leaves from (loopback for
/// loopback), on a free port.
///
/// # Errors
/// When no route reaches `target`.
pub(crate) async fn bind_towards(target: IpAddr) -> Result<UdpSocket, std::io::Error> {
    let unspecified = if target.is_ipv4() {
        IpAddr::from([0, 0, 0, 0])
    } else {
        IpAddr::from([0u16; 8])
    };
    let probe = UdpSocket::bind((unspecified, 0)).await?;
    probe.connect((target, 9)).await?;
    let local = probe.local_addr()?.ip();
    UdpSocket::bind((local, 0)).await
}

/// A URL's host when it is an IP address (`[::1]` too); `None` for a name.
pub(crate) fn ip_of_host(url: &reqwest::Url) -> Option<IpAddr> {
    let host = url.host_str()?;
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// The IP address of a URL's host; loopback when it is a name (`localhost`) or unreadable.
pub(crate) fn host_ip(url: &str) -> IpAddr {
    reqwest::Url::parse(url)
        .ok()
        .and_then(|url| ip_of_host(&url))
        .unwrap_or(IpAddr::from([127, 0, 0, 1]))
}

/// An offer that publishes the run's media in `direction`: an audio section, and a video
/// section (with the simulcast layers, if the media has them) unless there is no video.
/// Returns the SDP, the pending offer and the two sections' mids.
pub(crate) fn publish_offer(
    rtc: &mut Rtc,
    rtp: &RtpMedia,
    direction: Direction,
) -> Result<(String, SdpPendingOffer, Mid, Option<Mid>), PeerError> {
    let mut api = rtc.sdp_api();
    let audio_mid = api.add_media(MediaKind::Audio, direction, None, None, None);
    let layered = rtp.video.iter().any(|(rid, _)| rid.is_some());
    let simulcast = layered.then(|| {
        let mut layers = Simulcast::new();
        for (rid, _) in &rtp.video {
            if let Some(rid) = rid {
                layers.add_send_layer(SimulcastLayer::new(rid));
            }
        }
        layers
    });
    let video_mid = (!rtp.video.is_empty())
        .then(|| api.add_media(MediaKind::Video, direction, None, None, simulcast));
    let Some((offer, pending)) = api.apply() else {
        return Err(PeerError::Protocol("str0m made no offer"));
    };
    Ok((offer.to_sdp_string(), pending, audio_mid, video_mid))
}

/// A sender for every stream the run publishes, on the mids of [`publish_offer`].
pub(crate) fn senders(
    rtc: &Rtc,
    (audio_mid, video_mid): (Mid, Option<Mid>),
    rtp: &RtpMedia,
    now: Instant,
) -> Vec<Sender> {
    let video = video_mid
        .into_iter()
        .flat_map(|mid| (rtp.video.iter()).map(move |(rid, stream)| ((mid, *rid), stream)));
    std::iter::once(((audio_mid, None), &rtp.audio))
        .chain(video)
        .filter_map(|(ids, stream)| Sender::new(rtc, ids, stream.clone(), now))
        .collect()
}

/// One light participant; the same contract as [`crate::peer::participant`] (over UDP only).
///
/// # Errors
/// When str0m or the socket fails, the server sends `error` (unless tolerated) or breaks the
/// protocol, the transport is not UDP, or the deadline passes first.
pub async fn participant(
    options: Options,
    rtp: Arc<RtpMedia>,
    seen: Arc<Seen>,
    mut inject: mpsc::Receiver<Message>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), PeerError> {
    if options.transport != Transport::Udp {
        return Err(PeerError::Protocol("the str0m peer runs over UDP only"));
    }
    let relay = match options.impair {
        Some(impairment) => {
            let relay = Relay::start(impairment).await?;
            let _ = seen.relay.set(Arc::clone(&relay.stats));
            Some(relay)
        }
        None => None,
    };
    // Behind a relay the peer talks to it on loopback; else from the address its route to
    // the server leaves by.
    let towards = match &relay {
        Some(_) => IpAddr::from([127, 0, 0, 1]),
        None => host_ip(&options.signaling_url),
    };
    // Transport-wide feedback only behind an impaired path, as the webrtc-rs peer does: there
    // it lets the SFU estimate the peer's downlink, which is what such a run is for;
    // elsewhere it would add feedback, probes and pacing to both sides of a run that
    // measures forwarding.
    let mut session = Session::new(bind_towards(towards).await?, relay.is_some())?;
    let (offer, pending, audio_mid, video_mid) =
        publish_offer(&mut session.rtc, &rtp, Direction::SendRecv)?;
    let result = run(
        &mut session,
        &options,
        relay.as_ref(),
        (offer, pending),
        (audio_mid, video_mid),
        &rtp,
        &seen,
        &mut inject,
        &mut stop,
    )
    .await;
    session.rtc.disconnect();
    let _ = session.drain(&seen).await;
    result
}

#[allow(clippy::too_many_arguments)]
async fn run(
    session: &mut Session,
    options: &Options,
    relay: Option<&Relay>,
    (offer, pending): (String, SdpPendingOffer),
    (audio_mid, video_mid): (Mid, Option<Mid>),
    rtp: &RtpMedia,
    seen: &Seen,
    inject: &mut mpsc::Receiver<Message>,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), PeerError> {
    let (ws, _) = tokio_tungstenite::connect_async(options.signaling_url.as_str()).await?;
    let (mut tx, rx) = ws.split();
    let (mut frames, _reader) = read_in_own_task(rx);
    let send = |value: Value| Message::Text(value.to_string().into());
    tx.send(send(
        json!({"type": "join", "grant": options.grant, "offer": offer}),
    ))
    .await?;
    let mut pending = Some(pending);
    let mut senders: Vec<Sender> = Vec::new();
    let mut stopped = *stop.borrow();
    let deadline = tokio::time::Instant::from_std(options.deadline);
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        session.drain(seen).await?;
        if session.connected && senders.is_empty() && !stopped {
            senders = self::senders(&session.rtc, (audio_mid, video_mid), rtp, Instant::now());
        }
        let media_due = (!stopped)
            .then(|| senders.iter().map(|s| s.next).min())
            .flatten();
        let wake = media_due.map_or(session.timeout, |due| due.min(session.timeout));
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => return Err(PeerError::Deadline),
            () = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {
                let now = Instant::now();
                if !stopped {
                    send_due(session, &mut senders, now, seen);
                }
                if session.timeout <= now {
                    session.rtc.handle_input(Input::Timeout(now))?;
                }
            }
            received = session.socket.recv_from(&mut buf) => {
                let (len, from) = received?;
                session.receive(len, from, &buf)?;
            }
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    stopped = true;
                }
            }
            Some(frame) = inject.recv() => tx.send(frame).await?,
            frame = frames.recv() => {
                match read_frame(frame.flatten(), options.admits, options.tolerate_errors, relay, seen)? {
                    Signal::Answer(sdp) => {
                        let answer = SdpAnswer::from_sdp_string(&sdp).map_err(str0m::RtcError::from)?;
                        let pending = pending.take().ok_or(PeerError::Protocol("answer without an offer"))?;
                        session.rtc.sdp_api().accept_answer(pending, answer)?;
                    }
                    Signal::Offer(sdp) => {
                        let offer = SdpOffer::from_sdp_string(&sdp).map_err(str0m::RtcError::from)?;
                        let answer = session.rtc.sdp_api().accept_offer(offer)?;
                        tx.send(send(json!({"type": "answer", "sdp": answer.to_sdp_string()}))).await?;
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

/// A task, aborted when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What the signaling socket reads, frame by frame (`None` once it ended).
type Frames = mpsc::Receiver<Option<Result<Message, tokio_tungstenite::tungstenite::Error>>>;

/// Reads the signaling socket in a task of its own, which polls it only when it is readable.
/// Polled from the media loop, it was polled at every packet and timer, and each poll of a
/// tungstenite stream zeroes its 128 KiB read buffer: a fifth of the generator's CPU
/// (`memset` under `FrameCodec::read_frame`) before this.
fn read_in_own_task<S>(mut rx: S) -> (Frames, AbortOnDrop)
where
    S: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>>
        + Unpin
        + Send
        + 'static,
{
    let (frames_tx, frames) = mpsc::channel(8);
    let reader = tokio::spawn(async move {
        loop {
            let frame = rx.next().await;
            let ended = frame.is_none();
            if frames_tx.send(frame).await.is_err() || ended {
                return;
            }
        }
    });
    (frames, AbortOnDrop(reader))
}

/// Writes every frame that is due.
pub(crate) fn send_due(session: &mut Session, senders: &mut [Sender], now: Instant, seen: &Seen) {
    for sender in senders.iter_mut().filter(|s| s.next <= now) {
        let skipped = sender.send(&mut session.rtc, now);
        seen.frames_sent.fetch_add(1, Ordering::Relaxed);
        seen.frames_skipped.fetch_add(skipped, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::Video;

    #[test]
    fn vp8_frames_are_cut_behind_a_descriptor_and_keyframes_still_show_their_width() {
        let media = Media::builtin(Video::P360).expect("built-in media");
        let rtp = RtpMedia::cut(&media);
        let (rid, video) = &rtp.video[0];
        assert_eq!(*rid, None);
        let source = media.video.as_ref().expect("video");
        assert_eq!(video.frames.len(), source.frames.len());
        for (cut, frame) in video.frames.iter().zip(source.frames.iter()) {
            assert!(cut.payloads.iter().all(|p| p.len() <= MAX_PAYLOAD));
            let body: usize = cut.payloads.iter().map(|p| p.len() - 4).sum();
            assert_eq!(
                body,
                frame.data.len(),
                "every byte of the frame is sent once"
            );
            assert_eq!(cut.payloads[0][0], 0x90, "X and S on the first packet");
            assert!(cut.payloads[1..].iter().all(|p| p[0] == 0x80));
        }
        assert_eq!(
            vp8_keyframe_width(&video.frames[0].payloads[0]),
            Some(640),
            "the sample starts with a keyframe the receiver can size"
        );
        assert_eq!(rtp.audio.frames.len(), media.audio.frames.len());
        assert!(!rtp.audio.vp8 && video.vp8);
    }

    #[test]
    fn simulcast_media_is_cut_per_layer_with_its_rid() {
        let media = Media::builtin_simulcast().expect("built-in media");
        let rtp = RtpMedia::cut(&media);
        let rids: Vec<_> = rtp.video.iter().map(|(rid, _)| *rid).collect();
        assert_eq!(rids, [Some("q"), Some("h"), Some("f")]);
    }
}
