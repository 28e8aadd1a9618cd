//! Simulcast in virtual time: a publisher sends its camera as three layers (`q`, `h`, `f`),
//! and each subscriber gets one of them as one continuous stream. Every assertion is about
//! what a client actually received or was asked.

// Each test binary uses part of the simulated world.
#[allow(dead_code)]
mod sim;

use std::time::Duration;

use sim::{Received, Sim, Video};
use str0m::media::Rid;

/// The video `subscriber` received from `publisher`, in arrival order.
fn video_from(sim: &Sim, subscriber: usize, publisher: usize) -> Vec<Received> {
    let tag = sim.clients[publisher].tag;
    sim.clients[subscriber]
        .received_from(tag)
        .filter(|r| !r.is_audio())
        .cloned()
        .collect()
}

/// Asserts that `video` is one stream as a decoder needs it: one SSRC, sequence numbers
/// without a gap or a repeat, a timestamp that never goes back from frame to frame, and
/// picture ids that grow by one per frame — across every layer switch. Returns the layers
/// in the order they were received.
fn assert_one_continuous_stream(video: &[Received]) -> Vec<u8> {
    assert!(!video.is_empty(), "no video arrived");
    let mut by_seq: Vec<&Received> = video.iter().collect();
    by_seq.sort_by_key(|r| r.seq_no);
    let ssrcs: std::collections::HashSet<u32> = video.iter().map(|r| r.ssrc).collect();
    assert_eq!(ssrcs.len(), 1, "one SSRC");
    for pair in by_seq.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        assert_eq!(
            b.seq_no,
            a.seq_no + 1,
            "sequence gap or repeat between layer {} and layer {}",
            a.layer(),
            b.layer()
        );
        // Within a frame the timestamp repeats; a new frame moves it forward.
        let step = b.timestamp.wrapping_sub(a.timestamp);
        assert!(
            step < u32::MAX / 2,
            "timestamp went back at seq {}",
            b.seq_no
        );
        if b.starts_frame() {
            assert!(
                step > 0,
                "a new frame with the old timestamp at seq {}",
                b.seq_no
            );
            let (pa, pb) = (a.picture_id(), b.picture_id());
            let (pa, pb) = (pa.expect("picture id"), pb.expect("picture id"));
            assert_eq!(pb, (pa + 1) & 0x7fff, "picture id jump at seq {}", b.seq_no);
        } else {
            assert_eq!(
                step, 0,
                "timestamp changed inside a frame at seq {}",
                b.seq_no
            );
            assert_eq!(a.picture_id(), b.picture_id());
        }
    }
    let mut layers: Vec<u8> = Vec::new();
    for r in &by_seq {
        if layers.last() != Some(&r.layer()) {
            layers.push(r.layer());
        }
    }
    layers
}

/// Every layer switch starts on the first packet of a keyframe of the new layer.
fn assert_switches_at_keyframes(video: &[Received]) {
    let mut by_seq: Vec<&Received> = video.iter().collect();
    by_seq.sort_by_key(|r| r.seq_no);
    for pair in by_seq.windows(2) {
        if pair[0].layer() != pair[1].layer() {
            let first = pair[1];
            assert!(
                first.starts_frame() && first.keyframe_packet() == Some((frame_of(first), 0)),
                "switched to layer {} on a packet that does not start a keyframe",
                first.layer()
            );
        }
    }
}

/// The core's counts of layer switches, up and down.
fn switches(sim: &Sim) -> (u64, u64) {
    let stats = sim.core.stats();
    (stats.layer_switches_up, stats.layer_switches_down)
}

fn frame_of(r: &Received) -> u32 {
    let f = &r.payload[sim::tag::FRAME..sim::tag::FRAME + 4];
    u32::from_be_bytes([f[0], f[1], f[2], f[3]])
}

#[test]
fn a_subscriber_gets_the_top_layer_as_one_continuous_stream() {
    let mut sim = Sim::new(11);
    let alice = sim.join_simulcast(Video::Vp8);
    let bob = sim.join(Video::None, false);
    sim.run_until_connected(Duration::from_secs(2));
    sim.run_for(Duration::from_secs(3));

    let video = video_from(&sim, bob, alice);
    let layers = assert_one_continuous_stream(&video);
    assert_switches_at_keyframes(&video);
    assert_eq!(layers.last(), Some(&2), "ends on the top layer: {layers:?}");
    // After the start, only the top layer arrives: one layer per subscriber, not three.
    let settled: Vec<u8> = video
        .iter()
        .filter(|r| r.at > sim.now - Duration::from_secs(2))
        .map(|r| r.layer())
        .collect();
    assert!(!settled.is_empty() && settled.iter().all(|l| *l == 2));
    // The server's answer takes the layers, and so does every later SDP to alice.
    let to_alice: Vec<&String> = sim
        .server_sdps
        .iter()
        .filter(|(to, _)| *to == alice)
        .map(|(_, sdp)| sdp)
        .collect();
    assert!(!to_alice.is_empty());
    for sdp in to_alice {
        for line in [
            "a=simulcast:recv q;h;f",
            "a=rid:q recv",
            "a=rid:h recv",
            "a=rid:f recv",
        ] {
            assert!(sdp.contains(line), "{line} in {sdp}");
        }
    }
    // Every keyframe request names the layer it wants.
    let requests = &sim.clients[alice].keyframe_requests;
    let video_mid = sim.clients[alice].video_mid().expect("video");
    for (_, mid, rid, _) in requests {
        if *mid == video_mid {
            assert!(rid.is_some(), "a PLI without a rid: {requests:?}");
        }
    }
}

#[test]
fn a_late_subscriber_starts_on_the_top_layer_with_a_keyframe_of_it() {
    let mut sim = Sim::new(12);
    let alice = sim.join_simulcast(Video::Vp8);
    sim.run_until_connected(Duration::from_secs(2));
    sim.run_for(Duration::from_secs(2));
    sim.clients[alice].keyframe_requests.clear();
    let bob = sim.join(Video::None, false);
    sim.run_until_connected(Duration::from_secs(2));
    sim.run_for(Duration::from_secs(2));

    let video = video_from(&sim, bob, alice);
    let layers = assert_one_continuous_stream(&video);
    assert_eq!(layers, vec![2], "only the top layer");
    let asked: Vec<Option<Rid>> = sim.clients[alice]
        .keyframe_requests
        .iter()
        .map(|(_, _, rid, _)| *rid)
        .collect();
    assert_eq!(asked, vec![Some(Rid::from("f"))], "one PLI, for f");
}

#[test]
fn when_the_publisher_stops_its_top_layer_subscribers_switch_down_and_back() {
    let mut sim = Sim::new(13);
    let alice = sim.join_simulcast(Video::Vp8);
    let bob = sim.join(Video::None, false);
    let carol = sim.join(Video::None, false);
    sim.run_until_connected(Duration::from_secs(2));
    sim.run_for(Duration::from_secs(2));
    let (up_before, down_before) = switches(&sim);

    // Chrome stops its top layer when its uplink is short; str0m notices after 1.5 s.
    sim.clients[alice].pause_layer(2, true);
    let stopped = sim.now;
    sim.run_for(Duration::from_secs(4));
    for subscriber in [bob, carol] {
        let video = video_from(&sim, subscriber, alice);
        let on_h: Vec<&Received> = video
            .iter()
            .filter(|r| r.at > stopped && r.layer() == 1)
            .collect();
        let first = on_h.first().expect("switched to h");
        assert!(
            first.at - stopped < Duration::from_secs(3),
            "switched after {:?}",
            first.at - stopped
        );
    }

    sim.clients[alice].pause_layer(2, false);
    let resumed = sim.now;
    sim.run_for(Duration::from_secs(2));
    for subscriber in [bob, carol] {
        let video = video_from(&sim, subscriber, alice);
        let layers = assert_one_continuous_stream(&video);
        assert_switches_at_keyframes(&video);
        assert_eq!(layers.last(), Some(&2), "back on f: {layers:?}");
        let back = video
            .iter()
            .find(|r| r.at > resumed && r.layer() == 2)
            .expect("f again");
        assert!(back.at - resumed < Duration::from_millis(500));
    }
    let (up, down) = switches(&sim);
    assert_eq!(
        (up - up_before, down - down_before),
        (2, 2),
        "down and up, for each of two subscribers"
    );
    // The keyframe requests for h were one for both subscribers, and named h.
    let for_h = sim.clients[alice]
        .keyframe_requests
        .iter()
        .filter(|(at, _, rid, _)| *at > stopped && *rid == Some(Rid::from("h")))
        .count();
    assert_eq!(for_h, 1);
}

#[test]
fn a_limited_link_queues_and_drops_what_does_not_fit() {
    let mut sim = Sim::new(14);
    sim.payload_len = 1_000;
    sim.join(Video::Vp8, false);
    let bob = sim.join(Video::None, false);
    sim.run_until_connected(Duration::from_secs(2));
    sim.run_for(Duration::from_secs(1));
    // Alice's single encoding is about 0.6 Mbit/s with keyframes; bob's link holds 300 kbit/s.
    let bob_ip = sim.clients[bob].addr.ip();
    sim.net
        .limit(bob_ip, Some((300_000, Duration::from_millis(200))));
    let limited = sim.now;
    sim.run_for(Duration::from_secs(5));
    let drops = sim.net.queue_drops.get(&bob_ip).copied().unwrap_or(0);
    assert!(drops > 50, "the queue overflowed: {drops}");
    let bytes: usize = sim.clients[bob]
        .received
        .iter()
        .filter(|r| r.at > limited + Duration::from_secs(1))
        .map(|r| r.payload.len() + 40)
        .sum();
    let rate = bytes as f64 * 8.0 / 4.0;
    assert!(
        (200_000.0..=330_000.0).contains(&rate),
        "bob receives at most the link's rate: {rate:.0} bit/s"
    );
}
