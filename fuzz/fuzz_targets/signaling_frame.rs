//! Signaling client frames into the per-socket state machine, as `/ws` feeds them: after a
//! first byte of flags, every non-empty line of the input is one frame — a text frame when it
//! is UTF-8, a binary one otherwise — given to `Session::on_text` / `on_binary` with the clock
//! moving on between frames (and `on_timeout` once the join deadline passes). A `join` or
//! `resume` is granted or refused as the flags say (the grant itself is the `grant` target's),
//! and whatever reaches the hub goes through the hub's own parsing: participant and track ids,
//! SDP offers and answers. Every frame the socket would send is encoded.
//!
//! Flags: bit 0 seats the socket as the clinician (else the patient), bit 1 refuses its join,
//! bits 2–4 pick the time between frames. Nothing may panic, a closed session stays closed,
//! and a seated one is never closed by a frame.

#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use signaling::Limits;
use signaling::protocol::{Role, ServerMessage};
use signaling::session::{Identity, Request, Session, Step};
use signaling::wire::{parse_track, uuid_id};
use str0m::change::{SdpAnswer, SdpOffer};

/// The id the seated socket gets (its grant's `sub`).
const ME: &str = "01900000-0000-7000-8000-000000000001";

/// Time between frames, by flags bits 2–4: within the rate limit and beyond it, and past the
/// join deadline.
const STEPS_MS: [u64; 8] = [0, 1, 10, 49, 50, 100, 1_000, 6_000];

/// Encodes a frame as the socket writes it.
fn send(message: &ServerMessage) {
    serde_json::to_string(message).expect("a server frame always encodes");
}

/// What the hub parses of a seated participant's request before its room or media backend
/// sees it (`signaling::hub::Hub::request`).
fn request(request: Request) {
    match request {
        Request::Offer { sdp } => {
            let _ = SdpOffer::from_sdp_string(&sdp);
        }
        Request::Answer { sdp } => {
            let _ = SdpAnswer::from_sdp_string(&sdp);
        }
        Request::Mute { track, .. } | Request::VideoSize { track, .. } => {
            let _ = parse_track(&track);
        }
        Request::Admit { participant } | Request::Remove { participant } => {
            let _ = uuid_id(&participant);
        }
        Request::Leave | Request::EndVisit => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, frames)) = data.split_first() else {
        return;
    };
    let role = if flags & 1 == 1 {
        Role::Clinician
    } else {
        Role::Patient
    };
    let refuse = flags & 0b10 != 0;
    let step = Duration::from_millis(STEPS_MS[usize::from((flags >> 2) & 0b111)]);
    let mut now = Instant::now();
    let mut session = Session::new(Limits::default(), now);
    for frame in frames.split(|&b| b == b'\n').filter(|f| !f.is_empty()) {
        now += step;
        if session.deadline().is_some_and(|deadline| now >= deadline) {
            if let Some(Step::Close(message, _)) = session.on_timeout(now) {
                message.iter().for_each(send);
            }
            assert!(session.is_closed(), "the join deadline closes the socket");
        }
        let was_closed = session.is_closed();
        let was_seated = session.identity().is_some();
        let outcome = match std::str::from_utf8(frame) {
            Ok(text) => session.on_text(now, text),
            Err(_) => session.on_binary(now, frame.len()),
        };
        match outcome {
            None => {}
            Some(Step::Reply(message)) => send(&message),
            Some(Step::Close(message, _)) => {
                assert!(!was_seated, "a frame never closes a seated socket");
                message.iter().for_each(send);
            }
            Some(Step::Join { offer, .. }) => {
                if let Some(sdp) = offer {
                    let _ = SdpOffer::from_sdp_string(&sdp);
                }
                if refuse {
                    session.refused();
                } else {
                    session.seated(Identity {
                        participant: ME.to_owned(),
                        role,
                    });
                }
            }
            Some(Step::Resume { .. }) if refuse => session.refused(),
            Some(Step::Resume { .. }) => session.seated(Identity {
                participant: ME.to_owned(),
                role,
            }),
            Some(Step::Request(asked)) => {
                assert!(was_seated, "only a seated socket reaches the hub");
                request(asked);
            }
        }
        if was_closed {
            assert!(session.is_closed(), "a closed socket stays closed");
        }
    }
});
