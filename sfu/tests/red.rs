//! Redundant audio (RFC 2198 RED) in virtual time: a subscriber whose downlink loses packets
//! gets each audio packet again inside the next one, and stops getting it once the link is
//! calm; a publisher's own RED reaches subscribers that take RED and is cut to plain Opus for
//! the others. Every assertion is about what a client actually received.

// Each test binary uses part of the simulated world.
#[allow(dead_code)]
mod sim;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use sim::{Received, Sim, Video, tag};
use str0m::format::Codec;
use str0m::rtp::RedDecoder;

/// The audio frames of `publisher` a packet carries: its own, or every block of a RED one.
fn frames_in(packet: &Received, publisher: u8) -> Vec<u32> {
    let frame = |payload: &[u8]| {
        (payload.len() > tag::FRAME + 4
            && payload[0] == b'A'
            && payload[tag::PUBLISHER] == publisher)
            .then(|| {
                let bytes = &payload[tag::FRAME..tag::FRAME + 4];
                u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
            })
    };
    if let Some(frame) = frame(&packet.payload) {
        return vec![frame];
    }
    RedDecoder::decode(&packet.payload)
        .map(|blocks| blocks.iter().filter_map(|b| frame(b.payload)).collect())
        .unwrap_or_default()
}

/// What `client` received from `from` on.
fn received_since(sim: &Sim, client: usize, from: Instant) -> impl Iterator<Item = &Received> {
    sim.clients[client]
        .received
        .iter()
        .filter(move |r| r.at >= from)
}

/// The share of `publisher`'s audio frames `subscriber` got (as a packet or its redundancy),
/// of those between the first and last it got a packet of after `from`.
fn coverage(sim: &Sim, subscriber: usize, publisher: usize, from: Instant) -> f64 {
    let tag = sim.clients[publisher].tag;
    let mut covered = BTreeSet::new();
    let mut primaries = BTreeSet::new();
    for packet in received_since(sim, subscriber, from) {
        let frames = frames_in(packet, tag);
        if let Some(last) = frames.last() {
            primaries.insert(*last);
        }
        covered.extend(frames);
    }
    let (Some(first), Some(last)) = (primaries.first(), primaries.last()) else {
        return 0.0;
    };
    let span = (last - first + 1) as usize;
    covered.range(*first..=*last).count() as f64 / span as f64
}

/// The payload type `client` numbers RED with, if it negotiated RED.
fn red_pt(sim: &Sim, client: usize) -> Option<u8> {
    sim.clients[client]
        .rtc
        .codec_config()
        .find(|p| p.spec().codec == Codec::Opus)
        .and_then(|p| p.red())
        .map(|pt| *pt)
}

/// A connected room of audio-only clients (100-byte Opus packets): a publisher and a
/// subscriber that offer RED, and a subscriber that does not.
fn room(seed: u64) -> (Sim, [usize; 3]) {
    let mut sim = Sim::new(seed);
    sim.audio_payload_len = Some(100);
    sim.red = true;
    let publisher = sim.join(Video::None, false);
    let with_red = sim.join(Video::None, false);
    sim.red = false;
    let without_red = sim.join(Video::None, false);
    sim.run_until_connected(Duration::from_secs(5));
    (sim, [publisher, with_red, without_red])
}

#[test]
fn a_subscriber_whose_downlink_loses_packets_gets_redundant_audio_until_it_is_calm() {
    let (mut sim, [publisher, with_red, without_red]) = room(41);
    sim.run_for(Duration::from_secs(3));
    let red = red_pt(&sim, with_red).expect("RED negotiated");
    assert_eq!(red_pt(&sim, without_red), None);
    let clean = sim.now;
    assert!(
        received_since(&sim, with_red, clean - Duration::from_secs(2)).all(|r| r.pt != red),
        "no redundancy on a clean link"
    );
    assert_eq!(sim.core.stats().red_subscribers, 0);

    for subscriber in [with_red, without_red] {
        let ip = sim.clients[subscriber].addr.ip();
        sim.net.loss_to.insert(ip, 0.05);
    }
    sim.run_for(Duration::from_secs(3));
    assert_eq!(sim.core.stats().red_subscribers, 1, "on within 3 s of loss");
    let lossy = sim.now;
    sim.run_for(Duration::from_secs(20));
    let red_share = coverage(&sim, with_red, publisher, lossy);
    let plain_share = coverage(&sim, without_red, publisher, lossy);
    println!("5% downlink loss, 20 s: with RED {red_share:.4}, without {plain_share:.4} of frames");
    assert!(red_share >= 0.99, "with RED {red_share}");
    assert!(plain_share < 0.98, "without RED {plain_share}");
    let stats = sim.core.stats();
    assert!(stats.red_built > 900, "{stats:?}");
    assert!(
        sim.clients[without_red]
            .received
            .iter()
            .all(|r| r.pt != red),
        "a subscriber without RED never gets it"
    );

    sim.net.loss_to.clear();
    sim.run_for(Duration::from_secs(8));
    assert_eq!(
        sim.core.stats().red_subscribers,
        1,
        "still on, calm for 8 s"
    );
    sim.run_for(Duration::from_secs(5));
    assert_eq!(sim.core.stats().red_subscribers, 0, "off after 10 s calm");
    let calm = sim.now;
    sim.run_for(Duration::from_secs(2));
    let after: Vec<&Received> = received_since(&sim, with_red, calm).collect();
    assert!(after.len() > 50 && after.iter().all(|r| r.pt != red));
}

#[test]
fn a_publishers_red_is_cut_to_opus_unless_the_subscribers_link_wants_it() {
    let (mut sim, [publisher, with_red, without_red]) = room(42);
    assert!(
        red_pt(&sim, publisher).is_some(),
        "the publisher negotiated RED"
    );
    sim.clients[publisher].sends_red = true;
    let tag = sim.clients[publisher].tag;
    let red = red_pt(&sim, with_red).expect("RED negotiated");
    // Packets already on their way when it started sending RED are plain.
    let clean = sim.now + Duration::from_millis(200);
    sim.run_for(Duration::from_secs(5));
    for subscriber in [with_red, without_red] {
        let got: Vec<&Received> = received_since(&sim, subscriber, clean).collect();
        assert!(
            got.iter().all(|r| r.pt != red && r.is_audio()),
            "plain Opus on a clean link"
        );
        let cut = got.iter().filter(|r| r.publisher() == tag).count();
        assert!(cut > 200, "{cut}");
    }
    assert!(sim.core.stats().red_cut > 400, "{:?}", sim.core.stats());

    let ip = sim.clients[with_red].addr.ip();
    sim.net.loss_to.insert(ip, 0.05);
    sim.run_for(Duration::from_secs(3));
    let lossy = sim.now;
    sim.run_for(Duration::from_secs(5));
    let got: Vec<&Received> = received_since(&sim, with_red, lossy)
        .filter(|r| !frames_in(r, tag).is_empty())
        .collect();
    assert!(got.len() > 200, "{}", got.len());
    assert!(
        got.iter()
            .all(|r| r.pt == red && frames_in(r, tag).len() == 2),
        "the publisher's RED, as sent"
    );
    // The other publisher sends plain Opus: the server builds RED of it for this subscriber.
    let other = sim.clients[without_red].tag;
    let built = received_since(&sim, with_red, lossy)
        .filter(|r| !frames_in(r, other).is_empty() && r.pt == red)
        .count();
    let stats = sim.core.stats();
    assert!(
        built > 200 && stats.red_built >= built as u64,
        "{built} {stats:?}"
    );
    assert_eq!(stats.red_malformed, 0);
}
