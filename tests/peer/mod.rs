//! A webrtc-rs participant for the media tests: it publishes the sample files in
//! `tests/media` (Opus and VP8), joins on `/ws` with its grant and offer, answers the server's
//! offers, admits whoever waits when it is the clinician, and counts the RTP it receives.

// Every test binary compiles these helpers and each uses a different subset of them.
#![allow(dead_code)]

use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use futures::{SinkExt as _, StreamExt as _};
use rtc::media::Sample;
use rtc::media::io::ivf_reader::IVFReader;
use rtc::media::io::ogg_reader::OggReader;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_OPUS, MIME_TYPE_VP8};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::rtp_transceiver::PayloadType;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;
use webrtc::media_stream::Track as _;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCIceGatheringState, RTCPeerConnectionState,
};
use webrtc::rtp_transceiver::RtpSender;

use crate::common::TestResult;

/// What one peer observed.
#[derive(Default)]
pub struct Seen {
    /// RTP packets received on audio tracks.
    pub audio: AtomicU32,
    /// RTP packets received on video tracks.
    pub video: AtomicU32,
    /// `error` frames received (only tolerated when the peer was told to expect them).
    pub errors: AtomicU32,
    /// Whether `visit_ended` arrived.
    pub visit_ended: AtomicBool,
    /// The close code of the signaling socket.
    pub close_code: AtomicU16,
    /// The server's ICE ufrag for this peer, from its SDP.
    pub server_ufrag: std::sync::Mutex<Option<String>>,
}

impl Seen {
    /// (audio, video) packets received so far.
    pub fn counts(&self) -> (u32, u32) {
        (
            self.audio.load(Ordering::Relaxed),
            self.video.load(Ordering::Relaxed),
        )
    }
}

/// How a participant behaves.
pub struct Options {
    /// The `/ws` URL.
    pub signaling_url: String,
    /// Its session grant.
    pub grant: String,
    /// Admit whoever waits (the clinician).
    pub admits: bool,
    /// Count `error` frames instead of failing on the first.
    pub tolerate_errors: bool,
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
            while let Some(event) = track.poll().await {
                if let TrackRemoteEvent::OnRtpPacket(_) = event {
                    let counter = match kind {
                        RtpCodecKind::Audio => &seen.audio,
                        _ => &seen.video,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
}

fn media_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/media")
        .join(name)
}

fn local_track(
    kind: RtpCodecKind,
    mime: &str,
    clock_rate: u32,
    channels: u16,
) -> TestResult<Arc<TrackLocalStaticSample>> {
    let name = format!("bedside-{kind}");
    Ok(Arc::new(TrackLocalStaticSample::new(
        Instant::now(),
        MediaStreamTrack::new(
            "bedside-stream".to_owned(),
            name.clone(),
            name,
            kind,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
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
            }],
        ),
    )?))
}

async fn payload_type(sender: &Arc<dyn RtpSender>) -> TestResult<PayloadType> {
    Ok(sender
        .get_parameters()
        .await?
        .rtp_parameters
        .codecs
        .first()
        .ok_or("sender has no negotiated codec")?
        .payload_type)
}

/// Sends the IVF file's frames at its frame rate, from the start again at its end, until
/// `stop` flips.
async fn play_video(
    track: Arc<TrackLocalStaticSample>,
    pt: PayloadType,
    stop: watch::Receiver<bool>,
) -> TestResult {
    let ssrc = *track.ssrcs().await.first().ok_or("no video ssrc")?;
    while !*stop.borrow() {
        let (mut ivf, header) =
            IVFReader::new(BufReader::new(File::open(media_file("sample-vp8.ivf"))?))?;
        let frame_time = Duration::from_millis(
            (1000 * u64::from(header.timebase_numerator)) / u64::from(header.timebase_denominator),
        );
        let mut tick = tokio::time::interval(frame_time);
        while let Ok((frame, _)) = ivf.parse_next_frame() {
            if *stop.borrow() {
                return Ok(());
            }
            tick.tick().await;
            track
                .sample_writer(ssrc, pt)
                .write_sample(&Sample {
                    data: frame.freeze(),
                    duration: frame_time,
                    ..Sample::new(Instant::now())
                })
                .await?;
        }
    }
    Ok(())
}

/// Sends the Ogg file's 20 ms Opus pages in real time, looping, until `stop` flips.
async fn play_audio(
    track: Arc<TrackLocalStaticSample>,
    pt: PayloadType,
    stop: watch::Receiver<bool>,
) -> TestResult {
    let ssrc = *track.ssrcs().await.first().ok_or("no audio ssrc")?;
    while !*stop.borrow() {
        let (mut ogg, _) = OggReader::new(
            BufReader::new(File::open(media_file("sample-opus.ogg"))?),
            true,
        )?;
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        let mut last_granule = 0;
        while let Ok((page, header)) = ogg.parse_next_page() {
            if *stop.borrow() {
                return Ok(());
            }
            let samples = header.granule_position.saturating_sub(last_granule);
            last_granule = header.granule_position;
            if samples == 0 {
                // The Opus header pages carry no audio.
                continue;
            }
            tick.tick().await;
            track
                .sample_writer(ssrc, pt)
                .write_sample(&Sample {
                    data: page.freeze(),
                    duration: Duration::from_micros(samples * 1_000_000 / 48_000),
                    ..Sample::new(Instant::now())
                })
                .await?;
        }
    }
    Ok(())
}

/// One webrtc-rs participant: publishes the sample files, joins on `/ws` with its grant and
/// its offer, answers the server's offers, and (as the clinician) admits whoever waits.
///
/// Frames from `inject` are sent on its signaling socket as they are (to test the server's
/// defences during a call); `stop` ends the media players.
pub async fn participant(
    options: Options,
    seen: Arc<Seen>,
    mut inject: mpsc::Receiver<Message>,
    stop: watch::Receiver<bool>,
) -> TestResult {
    let Options {
        signaling_url,
        grant,
        admits,
        tolerate_errors,
    } = options;
    let mut engine = MediaEngine::default();
    engine.register_default_codecs()?;
    let (gathered_tx, mut gathered) = mpsc::channel(1);
    let (connected_tx, mut connected) = mpsc::channel(1);
    let pc = PeerConnectionBuilder::new()
        .with_media_engine(engine)
        .with_handler(Arc::new(Handler {
            seen: Arc::clone(&seen),
            gathered: gathered_tx,
            connected: connected_tx,
        }))
        .with_udp_addrs(vec!["127.0.0.1:0".to_owned()])
        .build()
        .await?;
    let audio = local_track(RtpCodecKind::Audio, MIME_TYPE_OPUS, 48_000, 2)?;
    let video = local_track(RtpCodecKind::Video, MIME_TYPE_VP8, 90_000, 0)?;
    let audio_sender = pc
        .add_track(Arc::clone(&audio) as Arc<dyn TrackLocal>)
        .await?;
    let video_sender = pc
        .add_track(Arc::clone(&video) as Arc<dyn TrackLocal>)
        .await?;
    let offer = pc.create_offer(None).await?;
    pc.set_local_description(offer).await?;
    tokio::time::timeout(Duration::from_secs(5), gathered.recv()).await?;
    let offer = pc.local_description().await.ok_or("no local offer")?;

    let (ws, _) = tokio_tungstenite::connect_async(signaling_url.as_str()).await?;
    let (mut tx, mut rx) = ws.split();
    let send = |value: Value| Message::Text(value.to_string().into());
    tx.send(send(
        json!({"type": "join", "grant": grant, "offer": offer.sdp}),
    ))
    .await?;
    let mut streaming = false;
    loop {
        tokio::select! {
            Some(frame) = inject.recv() => tx.send(frame).await?,
            Some(()) = connected.recv(), if !streaming => {
                streaming = true;
                let (apt, vpt) = (payload_type(&audio_sender).await?, payload_type(&video_sender).await?);
                tokio::spawn(play_audio(Arc::clone(&audio), apt, stop.clone()));
                tokio::spawn(play_video(Arc::clone(&video), vpt, stop.clone()));
            }
            frame = rx.next() => {
                let text = match frame {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(close))) => {
                        let code = close.map_or(1005, |c| u16::from(c.code));
                        seen.close_code.store(code, Ordering::Relaxed);
                        break;
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(error)) => return Err(error.into()),
                    None => break,
                };
                let message: Value = serde_json::from_str(text.as_str())?;
                match message["type"].as_str() {
                    Some("answer") => {
                        let sdp = message["sdp"].as_str().ok_or("answer without sdp")?;
                        let ufrag = sdp
                            .lines()
                            .find_map(|line| line.trim().strip_prefix("a=ice-ufrag:"))
                            .map(str::to_owned);
                        if let Ok(mut slot) = seen.server_ufrag.lock() {
                            *slot = ufrag;
                        }
                        pc.set_remote_description(RTCSessionDescription::answer(sdp.to_owned())?).await?;
                    }
                    Some("offer") => {
                        let sdp = message["sdp"].as_str().ok_or("offer without sdp")?;
                        pc.set_remote_description(RTCSessionDescription::offer(sdp.to_owned())?).await?;
                        let answer = pc.create_answer(None).await?;
                        pc.set_local_description(answer).await?;
                        let answer = pc.local_description().await.ok_or("no local answer")?;
                        tx.send(send(json!({"type": "answer", "sdp": answer.sdp}))).await?;
                    }
                    Some("joined") if admits => {
                        for other in message["participants"].as_array().into_iter().flatten() {
                            if other["waiting"] == json!(true) {
                                tx.send(send(json!({"type": "admit", "participant": other["participant"]}))).await?;
                            }
                        }
                    }
                    Some("participant_waiting") if admits => {
                        tx.send(send(json!({"type": "admit", "participant": message["participant"]}))).await?;
                    }
                    Some("visit_ended") => seen.visit_ended.store(true, Ordering::Relaxed),
                    Some("error") => {
                        seen.errors.fetch_add(1, Ordering::Relaxed);
                        if !tolerate_errors {
                            return Err(format!("signaling error: {message}").into());
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    pc.close().await?;
    Ok(())
}

/// Packets of each kind a peer must receive from the other for media to count as flowing.
pub const WANTED: u32 = 20;
/// The budget the issue sets for media to flow both ways.
pub const MEDIA_DEADLINE: Duration = Duration::from_secs(10);

/// A running call between a patient and a clinician peer.
pub struct Call {
    /// What the patient received.
    pub patient: Arc<Seen>,
    /// What the clinician received.
    pub clinician: Arc<Seen>,
    /// The patient's participant task.
    pub patient_task: tokio::task::JoinHandle<TestResult>,
    /// The clinician's participant task.
    pub clinician_task: tokio::task::JoinHandle<TestResult>,
    /// Raw frames to send on the patient's signaling socket.
    pub patient_inject: mpsc::Sender<Message>,
    /// Stops the media players when set.
    pub stop: watch::Sender<bool>,
}

impl Call {
    /// Starts both peers of `visit` (the patient first), the patient tolerating `error`
    /// frames if asked, and waits until each has received [`WANTED`] audio and video packets
    /// from the other — failing after [`MEDIA_DEADLINE`].
    pub async fn start(
        visit: &crate::common::Visit,
        patient_tolerates_errors: bool,
    ) -> TestResult<Call> {
        let signaling_url = crate::common::text(&visit.patient["media"]["signaling_url"])?;
        let (stop, stopped) = watch::channel(false);
        let patient = Arc::new(Seen::default());
        let clinician = Arc::new(Seen::default());
        let (patient_inject, patient_frames) = mpsc::channel(1024);
        // Nothing is injected on the clinician's socket; the sender must live as long as it.
        let (clinician_inject, clinician_frames) = mpsc::channel(1);
        let started = Instant::now();
        let patient_task = tokio::spawn(participant(
            Options {
                signaling_url: signaling_url.clone(),
                grant: crate::common::text(&visit.patient["grant"])?,
                admits: false,
                tolerate_errors: patient_tolerates_errors,
            },
            Arc::clone(&patient),
            patient_frames,
            stopped.clone(),
        ));
        let clinician_grant = crate::common::text(&visit.clinician["grant"])?;
        let clinician_seen = Arc::clone(&clinician);
        let clinician_task = tokio::spawn(async move {
            let _keep = clinician_inject;
            participant(
                Options {
                    signaling_url,
                    grant: clinician_grant,
                    admits: true,
                    tolerate_errors: false,
                },
                clinician_seen,
                clinician_frames,
                stopped,
            )
            .await
        });
        let mut call = Call {
            patient,
            clinician,
            patient_task,
            clinician_task,
            patient_inject,
            stop,
        };
        call.flows(WANTED, MEDIA_DEADLINE.saturating_sub(started.elapsed()))
            .await?;
        Ok(call)
    }

    /// Waits up to `within` until each peer has received `more` further audio and video
    /// packets than it had when called.
    pub async fn flows(&mut self, more: u32, within: Duration) -> TestResult {
        let base = (self.patient.counts(), self.clinician.counts());
        let started = Instant::now();
        let enough = |seen: &Seen, (audio, video): (u32, u32)| {
            let (a, v) = seen.counts();
            a >= audio + more && v >= video + more
        };
        while !(enough(&self.patient, base.0) && enough(&self.clinician, base.1)) {
            if self.patient_task.is_finished() {
                return Err(
                    format!("the patient stopped: {:?}", (&mut self.patient_task).await?).into(),
                );
            }
            if self.clinician_task.is_finished() {
                return Err(format!(
                    "the clinician stopped: {:?}",
                    (&mut self.clinician_task).await?
                )
                .into());
            }
            if started.elapsed() >= within {
                return Err(format!(
                    "media did not flow both ways within {within:?}: patient has (audio, video) {:?}, clinician {:?}, from {base:?}",
                    self.patient.counts(),
                    self.clinician.counts(),
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Waits for both peers to finish (their sockets closed), up to `within`.
    pub async fn finished(self, within: Duration) -> TestResult {
        let _ = self.stop.send(true);
        for task in [self.patient_task, self.clinician_task] {
            tokio::time::timeout(within, task).await???;
        }
        Ok(())
    }
}
