//! Robustness during a real call between two webrtc-rs peers: 100,000 random and truncated
//! STUN, DTLS, RTP and RTCP datagrams sprayed at the room's media port from another socket,
//! and garbage, oversized and out-of-order frames on the patient's signaling socket. The call
//! keeps flowing both ways, the server keeps answering, every bad frame gets exactly one error
//! frame, and the dropped datagrams and error frames show in the metrics. Some of the forged
//! STUN requests name the patient's real ICE ufrag: the SFU must not learn the sprayer's
//! address from them, or the garbage that follows would reach the patient's session.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::call::{Call, MEDIA_DEADLINE, WANTED};
use common::{Server, TestResult, metric_sum};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use serde_json::json;
use sfu::core::RoomId;
use tokio_tungstenite::tungstenite::Message;

const DATAGRAMS: usize = 100_000;
/// Datagrams per burst; a pause between bursts lets the worker drain its socket so the test
/// measures the server, not the kernel's receive buffer.
const BURST: usize = 500;
const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];

/// One hostile datagram: the `n`th cycles through the shapes a media port sees. `ufrag` is a
/// real participant's server-side ICE ufrag, used in forged (unauthenticated) binding requests.
fn garbage(rng: &mut StdRng, n: usize, ufrag: &str) -> Vec<u8> {
    let mut datagram = match n % 6 {
        // Random bytes of any length, empty included.
        0 => {
            let len = rng.random_range(0..1500);
            (0..len).map(|_| rng.random()).collect()
        }
        // A STUN binding request header with random attributes, often lying about its length.
        1 | 2 => {
            let mut msg = vec![0x00, 0x01];
            let body: Vec<u8> = if n % 6 == 1 {
                (0..rng.random_range(0..200))
                    .map(|_| rng.random())
                    .collect()
            } else {
                // A USERNAME naming a real participant's ufrag (with no valid integrity) or a
                // ufrag nobody has.
                let local = if rng.random_bool(0.5) {
                    ufrag.to_owned()
                } else {
                    format!("{:08x}", rng.random::<u32>())
                };
                let username = format!("{local}:{:08x}", rng.random::<u32>());
                let mut attr = vec![0x00, 0x06, 0x00, username.len() as u8];
                attr.extend_from_slice(username.as_bytes());
                attr
            };
            let claimed = if rng.random_bool(0.5) {
                body.len() as u16
            } else {
                rng.random()
            };
            msg.extend_from_slice(&claimed.to_be_bytes());
            msg.extend_from_slice(&MAGIC_COOKIE);
            msg.extend((0..12).map(|_| rng.random::<u8>()));
            msg.extend_from_slice(&body);
            msg
        }
        // A DTLS 1.2 handshake record header and random content.
        3 => {
            let mut record = vec![22, 0xFE, 0xFD];
            record.extend((0..rng.random_range(0..400)).map(|_| rng.random::<u8>()));
            record
        }
        // An RTP header (version 2, dynamic payload type) and a random payload.
        4 => {
            let mut packet = vec![0x80, rng.random_range(96..128)];
            packet.extend((0..rng.random_range(10..1200)).map(|_| rng.random::<u8>()));
            packet
        }
        // An RTCP header (SR, RR, SDES, BYE, APP, RTPFB, PSFB) and random content.
        _ => {
            let mut packet = vec![0x80 | rng.random_range(0..32), rng.random_range(200..207)];
            packet.extend((0..rng.random_range(2..300)).map(|_| rng.random::<u8>()));
            packet
        }
    };
    // Every third one is cut short.
    if n.is_multiple_of(3) && !datagram.is_empty() {
        let keep = rng.random_range(0..datagram.len());
        datagram.truncate(keep);
    }
    datagram
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_survives_garbage_datagrams_and_bad_signaling_frames() -> TestResult {
    let server = Server::start(signaling::Limits::default()).await?;
    let visit = server.visit().await?;
    let mut call = Call::start(&visit, true).await?;

    let room = RoomId(signaling::wire::uuid_id(&visit.id).ok_or("visit id is not a UUID")?);
    let target = server.udp[sfu::driver::worker_for(room, server.udp.len())];
    let sprayer = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    let mut rng = StdRng::seed_from_u64(0x0bed_51de);
    let ufrag = call
        .patient
        .server_ufrag
        .lock()
        .map_err(|_| "poisoned")?
        .clone()
        .ok_or("the patient never got the server's answer")?;

    // Bad signaling frames on the patient's own socket, in the middle of the call.
    let oversized = json!({"type": "offer", "sdp": "v".repeat(100_000)}).to_string();
    let bad_frames = vec![
        Message::Text("\u{0}\u{1}garbage".into()),
        Message::Text("[1, 2, 3]".into()),
        Message::Text(r#"{"type":"warp","speed":9}"#.into()),
        Message::Binary(vec![0x16, 0xFE, 0xFD, 0, 0].into()),
        Message::Text(oversized.into()),
        Message::Text(json!({"type": "join", "grant": "again"}).to_string().into()),
        Message::Text(
            json!({"type": "resume", "grant": "g", "session": "s"})
                .to_string()
                .into(),
        ),
        Message::Text(
            json!({"type": "answer", "sdp": "not an answer"})
                .to_string()
                .into(),
        ),
        Message::Text(
            json!({"type": "admit", "participant": "nobody"})
                .to_string()
                .into(),
        ),
        Message::Text(
            json!({"type": "mute", "track": "nobody:9", "muted": true})
                .to_string()
                .into(),
        ),
    ];
    let bad_count = bad_frames.len() as u32;

    let spray_started = Instant::now();
    for (burst, frame) in (0..DATAGRAMS / BURST).zip(
        bad_frames
            .into_iter()
            .map(Some)
            .chain(std::iter::repeat_with(|| None)),
    ) {
        if let Some(frame) = frame {
            call.patient_inject.send(frame).await?;
        }
        for i in 0..BURST {
            let datagram = garbage(&mut rng, burst * BURST + i, &ufrag);
            // A full socket buffer on our side is not the server's problem; skip that one.
            let _ = sprayer.send_to(&datagram, target).await;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let spray_time = spray_started.elapsed();

    // The call goes on: fresh media both ways, well within the issue's budget.
    call.flows(WANTED, MEDIA_DEADLINE).await?;
    assert_eq!(server.get_text("/healthz").await.map(|_| ()).ok(), Some(()));

    // Every bad frame got exactly one error frame, and the socket is still open.
    let deadline = Instant::now() + Duration::from_secs(5);
    while call.patient.errors.load(Ordering::Relaxed) < bad_count && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(call.patient.errors.load(Ordering::Relaxed), bad_count);
    assert!(
        !call.patient_task.is_finished(),
        "the patient's socket must stay open"
    );

    // The metrics count what was refused (they are folded in once a second).
    let deadline = Instant::now() + Duration::from_secs(5);
    let (mut dropped, mut errors) = (0.0, 0.0);
    while Instant::now() < deadline {
        let metrics = server.get_text("/metrics").await?;
        dropped = metric_sum(
            &metrics,
            "bedside_sfu_events_total",
            r#"counter="dropped_datagrams""#,
        );
        errors = metric_sum(&metrics, "bedside_signaling_errors_total", "");
        if dropped >= (DATAGRAMS as f64) * 0.95 && errors >= f64::from(bad_count) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        dropped >= (DATAGRAMS as f64) * 0.95,
        "only {dropped} of {DATAGRAMS} garbage datagrams were counted as dropped (sprayed in {spray_time:?})"
    );
    assert!(
        errors >= f64::from(bad_count),
        "{errors} error frames counted"
    );

    server.end_visit(&visit.clinician_key, &visit.id).await?;
    call.finished(Duration::from_secs(5)).await
}
