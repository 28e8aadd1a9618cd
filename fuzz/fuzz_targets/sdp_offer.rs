//! An SDP offer, as a client sends it in `join` or `offer`, into the SFU core: parsing, the
//! join that answers it and a renegotiation with it. Nothing may panic; a refusal is fine.

#![no_main]

use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use sfu::core::{Command, Config, Core, ParticipantId, RoomId};
use str0m::change::SdpOffer;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Parsed twice: the join and the renegotiation each take an offer.
    let (Ok(first), Ok(again)) = (
        SdpOffer::from_sdp_string(text),
        SdpOffer::from_sdp_string(text),
    ) else {
        return;
    };
    let now = Instant::now();
    let mut core = Core::new(Config::new("127.0.0.1:50000".parse().expect("address")));
    let participant = ParticipantId(1);
    let joined = core.handle_command(
        now,
        Command::Join {
            room: RoomId(1),
            participant,
            offer: Some(first),
            waiting: false,
        },
    );
    if joined.is_ok() {
        let _ = core.handle_command(
            now,
            Command::Offer {
                participant,
                offer: again,
            },
        );
    }
    while core.poll_transmit().is_some() {}
    while core.poll_event().is_some() {}
    core.handle_timeout(now);
});
