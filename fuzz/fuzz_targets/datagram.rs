//! Datagrams into `Core::handle_datagram` for a room with seated participants: from a known
//! or an unknown address, raw or dressed as a STUN binding request that names a participant's
//! ICE username (so it gets past the demultiplexer into str0m's parsers). Nothing may panic,
//! and the core must keep serving afterwards.

#![no_main]

use std::cell::RefCell;
use std::net::SocketAddr;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use sfu::core::{Command, Config, Core, Event, ParticipantId, RoomId};

/// The SFU's address, where every datagram arrives.
const HOST: &str = "127.0.0.1:50000";

/// A core with two seated participants (each joined without an offer, so the core offered),
/// and the server's ICE ufrag of each.
struct Scene {
    core: Core,
    ufrags: Vec<String>,
}

impl Scene {
    fn new() -> Self {
        let now = Instant::now();
        let mut core = Core::new(Config::new(HOST.parse().expect("address")));
        for id in 1..=2 {
            let _ = core.handle_command(
                now,
                Command::Join {
                    room: RoomId(1),
                    participant: ParticipantId(id),
                    offer: None,
                    waiting: false,
                },
            );
        }
        let mut ufrags = Vec::new();
        while let Some(event) = core.poll_event() {
            if let Event::Offer { offer, .. } = event {
                let sdp = offer.to_sdp_string();
                if let Some(ufrag) = sdp
                    .lines()
                    .find_map(|line| line.strip_prefix("a=ice-ufrag:"))
                {
                    ufrags.push(ufrag.trim().to_owned());
                }
            }
        }
        Scene { core, ufrags }
    }
}

thread_local! {
    static SCENE: RefCell<Scene> = RefCell::new(Scene::new());
}

/// A STUN binding request whose USERNAME is `<server ufrag>:<peer ufrag>` and whose other
/// attributes come from `rest` (length-prefixed, so the fuzzer shapes them).
fn stun(ufrag: &str, rest: &[u8]) -> Vec<u8> {
    let (peer, attributes) = rest.split_at(rest.len().min(8));
    let username = format!("{ufrag}:{}", String::from_utf8_lossy(peer));
    let mut body = Vec::new();
    body.extend_from_slice(&0x0006u16.to_be_bytes());
    body.extend_from_slice(&u16::try_from(username.len()).unwrap_or(0).to_be_bytes());
    body.extend_from_slice(username.as_bytes());
    while body.len() % 4 != 0 {
        body.push(0);
    }
    body.extend_from_slice(attributes);
    let mut message = Vec::with_capacity(20 + body.len());
    message.extend_from_slice(&0x0001u16.to_be_bytes());
    message.extend_from_slice(&u16::try_from(body.len()).unwrap_or(0).to_be_bytes());
    message.extend_from_slice(&0x2112_A442u32.to_be_bytes());
    message.extend_from_slice(&[7; 12]);
    message.extend_from_slice(&body);
    message
}

fuzz_target!(|data: &[u8]| {
    let Some((&shape, rest)) = data.split_first() else {
        return;
    };
    SCENE.with(|scene| {
        let mut scene = scene.borrow_mut();
        let source: SocketAddr = match shape & 0b11 {
            0 => "127.0.0.1:40001".parse(),
            1 => "127.0.0.1:40002".parse(),
            _ => "[::1]:40003".parse(),
        }
        .expect("address");
        let datagram = match scene.ufrags.get(usize::from(shape >> 3) % 2) {
            Some(ufrag) if shape & 0b100 != 0 => stun(ufrag, rest),
            _ => rest.to_vec(),
        };
        let now = Instant::now();
        let host = HOST.parse().expect("address");
        let _ = scene.core.handle_datagram(now, source, host, &datagram);
        while scene.core.poll_transmit().is_some() {}
        while scene.core.poll_event().is_some() {}
        scene.core.handle_timeout(now);
    });
});
