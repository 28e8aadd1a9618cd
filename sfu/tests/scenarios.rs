//! Whole rooms in virtual time: simulated str0m clients talk to the core through an in-memory
//! network. Every assertion is about what a client actually received.

// Each test binary uses part of the simulated world.
#[allow(dead_code)]
mod sim;

use std::net::SocketAddr;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sfu::core::{Command, CoreError, Event, LeaveReason, ParticipantId, Quality};
use sim::{Sim, Video};

#[test]
fn two_participants_exchange_audio_and_video() {
    let mut sim = Sim::new(1);
    let alice = sim.join(Video::Vp8, false);
    let bob = sim.join(Video::H264, false);
    sim.run_until_connected(Duration::from_secs(2));
    sim.run_for(Duration::from_secs(3));

    for (me, other) in [(alice, bob), (bob, alice)] {
        let other_tag = sim.clients[other].tag;
        let received: Vec<_> = sim.clients[me].received_from(other_tag).collect();
        let audio = received.iter().filter(|r| r.is_audio()).count();
        let video = received.len() - audio;
        assert!(
            audio > 100,
            "client {me} got {audio} audio packets from {other}"
        );
        assert!(
            video > 100,
            "client {me} got {video} video packets from {other}"
        );
        assert!(
            received.iter().all(|r| r.payload.len() == 200),
            "payloads arrive intact"
        );
        assert_eq!(
            sim.clients[me].received_from(sim.clients[me].tag).count(),
            0,
            "nobody receives their own media"
        );
    }

    // What metrics are built from: traffic both ways, forwarding, first media, RTT samples.
    let stats = sim.core.stats();
    assert!(stats.datagrams_in > 0 && stats.bytes_in > stats.datagrams_in);
    assert!(stats.datagrams_out > 0 && stats.bytes_out > stats.datagrams_out);
    assert!(stats.forwarded_packets > 400);
    let first_media = sim
        .events
        .iter()
        .filter(|e| matches!(e, Event::FirstMedia { .. }))
        .count();
    assert_eq!(first_media, 2, "one FirstMedia per publisher");
    assert!(
        sim.events.iter().any(|e| matches!(e, Event::Rtt { .. })),
        "RTT is reported once a second"
    );
}

/// The SFU's DTLS is done once it has sent its final flight; when that flight is lost the
/// client has no keys yet and retransmits its own flight to get it again. Media forwarded
/// meanwhile only crowds a weak link (once enough to starve the retransmitted flight and the
/// visit never connected): the SFU waits for the client's own SRTP, proof that it has the keys.
#[test]
fn no_media_goes_to_a_client_whose_final_dtls_flight_was_lost() {
    let mut sim = Sim::new(11);
    let alice = sim.join(Video::Vp8, false);
    let bob = sim.join(Video::Vp8, false);
    let blackout_until = sim.now + Duration::from_millis(600);
    sim.net.final_flight_blackout = Some((sim.clients[bob].addr.ip(), blackout_until));
    sim.run_until_connected(Duration::from_secs(3));
    assert!(
        sim.now > blackout_until,
        "bob got the final flight only when it was sent again"
    );
    sim.run_for(Duration::from_secs(2));

    assert_eq!(
        sim.clients[bob].rtp_before_keys, 0,
        "no RTP reaches bob before it can decrypt it"
    );
    let alice_tag = sim.clients[alice].tag;
    let video = (sim.clients[bob].received_from(alice_tag))
        .filter(|r| !r.is_audio())
        .count();
    assert!(video > 50, "bob gets alice's video once keyed ({video})");
}

/// alice publishes to bob while the network loses `loss` of every datagram with `delay`
/// each way, for 10 s; asserts that every keyframe packet alice sent meanwhile reached bob.
fn every_keyframe_arrives(seed: u64, loss: f64, delay: Duration) {
    // Retransmission alone, without bandwidth estimation: under 5% random loss str0m's
    // loss-based estimate falls to about 200 kbit/s, and the allocator may then pause the
    // video for the subscriber (its own scenarios are in tests/simulcast.rs).
    let mut sim = Sim::with_config(seed, |mut config| {
        config.bwe_initial_bps = None;
        config
    });
    let alice = sim.join(Video::Vp8, false);
    let bob = sim.join(Video::None, false);
    sim.run_until_connected(Duration::from_secs(2));
    sim.run_for(Duration::from_millis(500));
    sim.net.loss = loss;
    sim.net.delay = delay;
    let lossy_from = sim.now;
    sim.run_for(Duration::from_secs(10));
    let lossy_until = sim.now;
    sim.net.loss = 0.0;
    sim.run_for(Duration::from_secs(2) + 4 * delay);

    let lost_towards_server = sim.net.lost[&sim.server];
    let lost_towards_bob = sim.net.lost[&sim.clients[bob].addr];
    assert!(
        lost_towards_server > 20 && lost_towards_bob > 20,
        "both legs lose packets ({lost_towards_server} and {lost_towards_bob})"
    );

    let alice_tag = sim.clients[alice].tag;
    let received: std::collections::HashSet<(u32, u8)> = sim.clients[bob]
        .received_from(alice_tag)
        .filter_map(|r| r.keyframe_packet())
        .collect();
    let sent: Vec<(u32, u8)> = sim.clients[alice]
        .sent_keyframe_packets
        .iter()
        .filter(|(_, _, at)| (lossy_from..lossy_until).contains(at))
        .map(|(frame, packet, _)| (*frame, *packet))
        .collect();
    assert!(
        sent.len() >= 9 * usize::from(sim::KEYFRAME_PACKETS),
        "alice sent keyframes while the network was lossy"
    );
    let missing: Vec<_> = sent.iter().filter(|p| !received.contains(p)).collect();
    assert!(
        missing.is_empty(),
        "keyframe packets never arrived: {missing:?}"
    );
}

#[test]
fn every_keyframe_arrives_through_nack_and_rtx_under_five_percent_loss() {
    every_keyframe_arrives(42, 0.05, Duration::ZERO);
}

/// The SFU keeps a leg's sent video for 1 s (str0m's default is 3 s): enough for a subscriber
/// 300 ms away to ask, and to ask again when the retransmission is lost too.
#[test]
fn nack_and_rtx_still_repair_a_link_with_a_300_ms_round_trip() {
    every_keyframe_arrives(43, 0.05, Duration::from_millis(150));
}

#[test]
fn a_subscribers_pli_reaches_the_publisher_throttled() {
    let mut sim = Sim::new(3);
    let alice = sim.join(Video::Vp8, false);
    let bob = sim.join(Video::None, false);
    sim.run_until_connected(Duration::from_secs(2));
    sim.run_for(Duration::from_secs(2));
    let alice_video = sim.clients[alice].video_mid().expect("alice sends video");
    let bob_view_of_alice = sim.routed_video_mid(bob, alice);
    sim.clients[alice].keyframe_requests.clear();

    let asked_at = sim.now;
    for _ in 0..5 {
        let mut direct = sim.clients[bob].rtc.direct_api();
        let stream = direct
            .stream_rx_by_mid(bob_view_of_alice, None)
            .expect("bob receives alice's video");
        stream.request_keyframe(str0m::media::KeyframeRequestKind::Pli);
        sim.run_for(Duration::from_millis(20));
    }
    sim.run_for(Duration::from_secs(2));

    let requests = &sim.clients[alice].keyframe_requests;
    assert_eq!(
        requests.len(),
        2,
        "five PLIs in 100 ms become one at once and one after the interval: {requests:?}"
    );
    assert!(requests.iter().all(|(_, mid, _, _)| *mid == alice_video));
    let first = requests[0].0 - asked_at;
    let second = requests[1].0 - requests[0].0;
    assert!(
        first < Duration::from_millis(100),
        "first PLI after {first:?}"
    );
    // The server sends them the interval apart; the network's jitter (2 ms) moves arrivals.
    assert!(
        second >= Duration::from_millis(498),
        "second PLI only {second:?} after the first"
    );
    let stats = sim.core.stats();
    assert_eq!(stats.keyframe_requests_throttled, 4);
}

#[test]
fn leave_and_remove_free_every_resource() {
    let mut sim = Sim::new(4);
    let alice = sim.join(Video::Vp8, false);
    let bob = sim.join(Video::Vp8, false);
    let carol = sim.join(Video::Vp8, false);
    sim.run_until_connected(Duration::from_secs(2));
    sim.run_for(Duration::from_secs(1));
    let stats = sim.core.stats();
    assert_eq!((stats.rooms, stats.participants, stats.tracks), (1, 3, 6));
    assert_eq!(stats.legs, 12, "each of 6 tracks reaches 2 subscribers");
    assert_eq!(stats.ufrags, 3);
    assert!(stats.addresses >= 3);

    let alice_id = sim.clients[alice].id;
    sim.command(Command::Leave {
        participant: alice_id,
    })
    .expect("alice leaves");
    let stats = sim.core.stats();
    assert_eq!((stats.participants, stats.tracks, stats.legs), (2, 4, 4));
    assert_eq!(stats.ufrags, 2);

    // What was already on the wire lands within the network delay, nothing after.
    sim.run_for(Duration::from_millis(100));
    let alice_tag = sim.clients[alice].tag;
    let carol_had = sim.clients[carol].received_from(alice_tag).count();
    sim.run_for(Duration::from_secs(1));
    assert_eq!(
        sim.clients[carol].received_from(alice_tag).count(),
        carol_had
    );
    assert!(
        !sim.clients[alice].rtc.is_alive(),
        "the core closed alice's session (DTLS close_notify)"
    );
    let bob_tag = sim.clients[bob].tag;
    let carol_from_bob = sim.clients[carol].received_from(bob_tag).count();
    sim.run_for(Duration::from_millis(500));
    assert!(
        sim.clients[carol].received_from(bob_tag).count() > carol_from_bob,
        "the rest of the room keeps flowing"
    );

    sim.command(Command::Remove {
        participant: sim.clients[bob].id,
    })
    .expect("bob is removed");
    sim.command(Command::Leave {
        participant: sim.clients[carol].id,
    })
    .expect("carol leaves");
    assert!(matches!(
        sim.command(Command::Leave {
            participant: alice_id
        }),
        Err(CoreError::UnknownParticipant(_))
    ));

    let stats = sim.core.stats();
    assert_eq!(
        (stats.rooms, stats.participants, stats.tracks, stats.legs),
        (0, 0, 0, 0)
    );
    assert_eq!((stats.addresses, stats.ufrags, stats.timers), (0, 0, 0));
    assert_eq!(sim.core.poll_timeout(), None);
    let left: Vec<_> = sim
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Left { reason, .. } => Some(*reason),
            _ => None,
        })
        .collect();
    assert_eq!(
        left,
        [LeaveReason::Left, LeaveReason::Removed, LeaveReason::Left]
    );
}

#[test]
fn the_waiting_room_holds_media_until_admit() {
    let mut sim = Sim::new(5);
    let clinician = sim.join(Video::Vp8, false);
    let patient = sim.join(Video::Vp8, true);
    sim.run_until_connected(Duration::from_secs(2));
    sim.run_for(Duration::from_secs(2));
    let (clinician_tag, patient_tag) = (sim.clients[clinician].tag, sim.clients[patient].tag);
    assert_eq!(sim.clients[clinician].received_from(patient_tag).count(), 0);
    assert_eq!(sim.clients[patient].received_from(clinician_tag).count(), 0);
    assert_eq!(sim.core.stats().legs, 0);
    assert_eq!(sim.tracks_of(patient).len(), 2, "the patient did publish");

    let patient_id = sim.clients[patient].id;
    sim.command(Command::Admit {
        participant: patient_id,
    })
    .expect("admitted");
    assert!(matches!(
        sim.command(Command::Admit {
            participant: patient_id
        }),
        Err(CoreError::NotWaiting(_))
    ));
    sim.run_for(Duration::from_secs(1));
    let clinician_got = sim.clients[clinician].received_from(patient_tag).count();
    let patient_got = sim.clients[patient].received_from(clinician_tag).count();
    assert!(clinician_got > 50, "clinician got {clinician_got} packets");
    assert!(patient_got > 50, "patient got {patient_got} packets");
    assert!(
        sim.clients[patient]
            .received_from(clinician_tag)
            .any(|r| r.keyframe_packet().is_some()),
        "the admitted patient is sent a keyframe"
    );
}

#[test]
fn muting_a_track_stops_forwarding_until_unmuted() {
    let mut sim = Sim::new(6);
    let alice = sim.join(Video::Vp8, false);
    let bob = sim.join(Video::None, false);
    sim.run_until_connected(Duration::from_secs(2));
    sim.run_for(Duration::from_secs(1));
    let alice_tag = sim.clients[alice].tag;
    let video = sim
        .tracks_of(alice)
        .into_iter()
        .find(|t| Some(t.mid) == sim.clients[alice].video_mid())
        .expect("video track");
    sim.command(Command::Mute {
        track: video,
        muted: true,
    })
    .expect("muted");
    sim.run_for(Duration::from_millis(100));
    let video_before = sim.clients[bob]
        .received_from(alice_tag)
        .filter(|r| !r.is_audio())
        .count();
    let audio_before = sim.clients[bob]
        .received_from(alice_tag)
        .filter(|r| r.is_audio())
        .count();
    sim.run_for(Duration::from_secs(1));
    let bob_got = |sim: &Sim, audio: bool| {
        sim.clients[bob]
            .received_from(alice_tag)
            .filter(|r| r.is_audio() == audio)
            .count()
    };
    assert_eq!(bob_got(&sim, false), video_before, "muted video stops");
    assert!(
        bob_got(&sim, true) > audio_before + 40,
        "audio keeps flowing"
    );
    sim.command(Command::Mute {
        track: video,
        muted: false,
    })
    .expect("unmuted");
    sim.run_for(Duration::from_millis(500));
    assert!(bob_got(&sim, false) > video_before, "unmuted video resumes");
}

#[test]
fn limits_are_refused_with_errors() {
    let mut sim = Sim::with_config(7, |mut config| {
        config.max_participants_per_room = 2;
        config.max_tracks_per_participant = 1;
        config
    });
    let alice = sim.join(Video::Vp8, false);
    sim.join(Video::None, false);
    // str0m reports the client's m-lines only once DTLS is up.
    sim.run_until_connected(Duration::from_secs(2));
    sim.run_for(Duration::from_millis(100));
    let refused: Vec<_> = sim
        .events
        .iter()
        .filter_map(|e| match e {
            Event::TrackRefused {
                participant,
                reason: CoreError::TooManyTracks { max: 1, .. },
                ..
            } => Some(*participant),
            _ => None,
        })
        .collect();
    assert_eq!(refused, [sim.clients[alice].id], "alice's second track");
    assert_eq!(sim.core.stats().tracks, 2);

    let result = sim.command(Command::Join {
        room: sim::ROOM,
        participant: ParticipantId(99),
        offer: None,
        waiting: false,
    });
    assert!(matches!(result, Err(CoreError::RoomFull { max: 2, .. })));
    let result = sim.command(Command::Join {
        room: sim::ROOM,
        participant: sim.clients[alice].id,
        offer: None,
        waiting: false,
    });
    assert!(matches!(result, Err(CoreError::DuplicateParticipant(_))));
    assert_eq!(sim.core.stats().participants, 2);
}

#[test]
fn garbage_datagrams_are_dropped_and_the_call_goes_on() {
    let mut sim = Sim::new(8);
    let alice = sim.join(Video::Vp8, false);
    let bob = sim.join(Video::Vp8, false);
    sim.run_until_connected(Duration::from_secs(2));
    sim.run_for(Duration::from_millis(500));
    let alice_addr = sim.clients[alice].addr;
    let stranger: std::net::SocketAddr = "203.0.113.9:4000".parse().expect("address");
    let mut rng = StdRng::seed_from_u64(8);
    let now = sim.now;
    let server = sim.server;
    for i in 0..20_000 {
        let len = rng.random_range(0..300);
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        if let Some(first) = bytes.first_mut() {
            // Aim at each demultiplexing class: STUN, DTLS, RTP/RTCP.
            *first = [0x00, 0x01, 0x16, 0x17, 0x80, 0x90, 0xC8][i % 7];
        }
        let source = if i % 2 == 0 { alice_addr } else { stranger };
        let _ = sim.core.handle_datagram(now, source, server, &bytes);
    }
    while sim.core.poll_transmit().is_some() {}
    let dropped = sim.core.stats().dropped_datagrams;
    assert!(dropped >= 10_000, "only {dropped} counted as dropped");
    let bob_tag = sim.clients[bob].tag;
    let before = sim.clients[alice].received_from(bob_tag).count();
    sim.run_for(Duration::from_secs(1));
    assert!(sim.clients[alice].received_from(bob_tag).count() > before + 50);
}

#[test]
fn a_client_that_does_not_offer_publishes_on_the_servers_offer() {
    let mut sim = Sim::new(9);
    let alice = sim.join_on_server_offer(Video::Vp8);
    let bob = sim.join(Video::Vp8, false);
    sim.run_until_connected(Duration::from_secs(2));
    sim.run_for(Duration::from_secs(2));
    assert_eq!(sim.tracks_of(alice).len(), 2, "audio and video");
    let (alice_tag, bob_tag) = (sim.clients[alice].tag, sim.clients[bob].tag);
    let bob_got = sim.clients[bob].received_from(alice_tag).count();
    let alice_got = sim.clients[alice].received_from(bob_tag).count();
    assert!(bob_got > 100, "bob got {bob_got} packets from alice");
    assert!(alice_got > 100, "alice got {alice_got} packets from bob");
}

#[test]
fn a_room_on_ice_tcp_only_connects_and_forwards_over_tcp() {
    let mut sim = Sim::tcp_only(11);
    let alice = sim.join(Video::Vp8, false);
    let bob = sim.join(Video::Vp8, false);
    let answer = &sim.server_sdps[0].1;
    assert!(
        answer.contains(" tcp ") && answer.contains("typ host tcptype passive"),
        "the answer announces the passive TCP candidate:\n{answer}"
    );
    assert!(!answer.contains(" udp "), "and no UDP one:\n{answer}");
    sim.run_until_connected(Duration::from_secs(2));
    sim.run_for(Duration::from_secs(2));
    let (alice_tag, bob_tag) = (sim.clients[alice].tag, sim.clients[bob].tag);
    assert!(sim.clients[alice].received_from(bob_tag).count() > 100);
    assert!(sim.clients[bob].received_from(alice_tag).count() > 100);
    assert_eq!(sim.datagram_errors, 0);
}

#[test]
fn a_udp_and_tcp_room_announces_both_with_udp_preferred() {
    let mut sim = Sim::with_config(12, |mut config| {
        config.tcp_candidate = Some(SocketAddr::from(sim::SERVER_TCP));
        config
    });
    let alice = sim.join(Video::Vp8, false);
    let bob = sim.join(Video::Vp8, false);
    let answer = sim.server_sdps[0].1.clone();
    let priority = |proto: &str| {
        answer
            .lines()
            .find(|l| l.starts_with("a=candidate:") && l.contains(&format!(" {proto} ")))
            .and_then(|l| l.split(' ').nth(3))
            .and_then(|p| p.parse::<u32>().ok())
            .unwrap_or_else(|| panic!("a {proto} candidate in\n{answer}"))
    };
    assert!(
        priority("udp") > priority("tcp"),
        "UDP is preferred:\n{answer}"
    );
    sim.run_until_connected(Duration::from_secs(2));
    sim.run_for(Duration::from_secs(1));
    let bob_tag = sim.clients[bob].tag;
    assert!(sim.clients[alice].received_from(bob_tag).count() > 50);
}

/// The direction attribute of the m-line with `mid` in `sdp`.
fn direction_of(sdp: &str, mid: &str) -> Option<String> {
    sdp.split("\r\nm=")
        .skip(1)
        .find(|section| section.lines().any(|l| l == format!("a=mid:{mid}")))
        .and_then(|section| {
            section
                .lines()
                .find(|l| ["a=sendrecv", "a=sendonly", "a=recvonly", "a=inactive"].contains(l))
                .map(|l| l[2..].to_owned())
        })
}

#[test]
fn a_clients_own_sendrecv_lines_are_answered_recvonly_in_every_sdp() {
    let mut sim = Sim::new(10);
    let alice = sim.join(Video::Vp8, false);
    let bob = sim.join(Video::Vp8, false);
    sim.run_until_connected(Duration::from_secs(2));
    sim.run_for(Duration::from_secs(2));
    // An ICE restart is a later client offer of the same sendrecv lines.
    sim.ice_restart(alice);
    sim.run_for(Duration::from_secs(1));

    for me in [alice, bob] {
        let client = &sim.clients[me];
        let own = [client.audio_mid(), client.video_mid()].map(|m| m.expect("offered"));
        let sdps: Vec<_> = sim.server_sdps.iter().filter(|(i, _)| *i == me).collect();
        assert!(
            sdps.len() >= 2,
            "an answer and an offer adding the other's tracks"
        );
        for (_, sdp) in sdps {
            for mid in own {
                assert_eq!(
                    direction_of(sdp, &mid.to_string()).as_deref(),
                    Some("recvonly"),
                    "client {me}'s own m-line {mid} in:\n{sdp}"
                );
            }
        }
        for mid in own {
            let media = client.rtc.media(mid).expect("negotiated");
            assert_eq!(media.direction(), str0m::media::Direction::SendOnly);
        }
        // The lines the server does send on are still sendonly from its side.
        let other = if me == alice { bob } else { alice };
        let routed = sim.routed_video_mid(me, other);
        let last = &sim
            .server_sdps
            .iter()
            .rfind(|(i, _)| *i == me)
            .expect("sdp")
            .1;
        assert_eq!(
            direction_of(last, &routed.to_string()).as_deref(),
            Some("sendonly")
        );
    }
    let (alice_tag, bob_tag) = (sim.clients[alice].tag, sim.clients[bob].tag);
    let before = sim.clients[bob].received_from(alice_tag).count();
    sim.run_for(Duration::from_secs(1));
    assert!(sim.clients[bob].received_from(alice_tag).count() > before + 50);
    assert!(sim.clients[alice].received_from(bob_tag).count() > 100);
}

/// A well-formed STUN binding request whose USERNAME names `ufrag`, with PRIORITY and
/// FINGERPRINT but a
/// MESSAGE-INTEGRITY made without the password: what an attacker who learned a participant's
/// ufrag could send.
fn forged_binding_request(ufrag: &str) -> Vec<u8> {
    fn attribute(msg: &mut Vec<u8>, kind: u16, value: &[u8]) {
        msg.extend_from_slice(&kind.to_be_bytes());
        msg.extend_from_slice(&(value.len() as u16).to_be_bytes());
        msg.extend_from_slice(value);
        msg.resize((msg.len() + 3) & !3, 0);
    }
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &byte in bytes {
            crc ^= u32::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    let mut msg = vec![0x00, 0x01, 0, 0, 0x21, 0x12, 0xA4, 0x42];
    msg.extend_from_slice(&[9; 12]);
    attribute(&mut msg, 0x0006, format!("{ufrag}:intruder").as_bytes());
    attribute(&mut msg, 0x0024, &0x6E00_01FFu32.to_be_bytes());
    attribute(&mut msg, 0x0008, &[0x5A; 20]);
    let body = (msg.len() - 20 + 8) as u16;
    msg[2..4].copy_from_slice(&body.to_be_bytes());
    let fingerprint = crc32(&msg) ^ 0x5354_554E;
    attribute(&mut msg, 0x8028, &fingerprint.to_be_bytes());
    msg
}

#[test]
fn forged_binding_requests_naming_a_real_ufrag_teach_the_demux_nothing() {
    let mut sim = Sim::new(10);
    let alice = sim.join(Video::Vp8, false);
    let bob = sim.join(Video::Vp8, false);
    sim.run_until_connected(Duration::from_secs(2));
    sim.run_for(Duration::from_millis(500));
    let ufrag = sim.clients[alice]
        .server_ufrag
        .clone()
        .expect("the server's SDP carries its ufrag");
    let known = sim.core.stats().addresses;
    let (now, server) = (sim.now, sim.server);
    for port in 0..50 {
        let intruder = std::net::SocketAddr::from(([203, 0, 113, 9], 5000 + port));
        let result =
            sim.core
                .handle_datagram(now, intruder, server, &forged_binding_request(&ufrag));
        assert!(
            matches!(result, Err(CoreError::UnknownSource)),
            "{result:?}"
        );
    }
    while sim.core.poll_transmit().is_some() {}
    assert_eq!(
        sim.core.stats().addresses,
        known,
        "unauthenticated STUN must not add (or evict) addresses"
    );
    let bob_tag = sim.clients[bob].tag;
    let before = sim.clients[alice].received_from(bob_tag).count();
    sim.run_for(Duration::from_millis(500));
    assert!(sim.clients[alice].received_from(bob_tag).count() > before + 20);
}

#[test]
fn a_client_ice_restart_gets_new_credentials_and_media_keeps_flowing() {
    let mut sim = Sim::new(11);
    let alice = sim.join(Video::Vp8, false);
    let bob = sim.join(Video::Vp8, false);
    sim.run_until_connected(Duration::from_secs(2));
    sim.run_for(Duration::from_secs(1));
    let (alice_tag, bob_tag) = (sim.clients[alice].tag, sim.clients[bob].tag);
    let old = sim.clients[alice]
        .server_ufrag
        .clone()
        .expect("server ufrag");

    let new = sim.ice_restart(alice);
    assert_ne!(
        new, old,
        "the answer restarts ICE with new server credentials"
    );
    assert_eq!(
        sim.core.stats().ufrags,
        2,
        "the new ufrag replaced the old one"
    );
    sim.run_for(Duration::from_secs(1));
    let counts = |sim: &Sim| {
        (
            sim.clients[bob].received_from(alice_tag).count(),
            sim.clients[alice].received_from(bob_tag).count(),
        )
    };
    let settled = counts(&sim);
    sim.run_for(Duration::from_secs(2));
    let later = counts(&sim);
    assert!(
        later.0 > settled.0 + 100 && later.1 > settled.1 + 100,
        "media flows both ways after the restart: {settled:?} → {later:?}"
    );
}

/// The active speakers the core reported since event `from`.
fn active_speakers(sim: &sim::Sim, from: usize) -> Vec<Option<ParticipantId>> {
    sim.events[from..]
        .iter()
        .filter_map(|e| match e {
            Event::ActiveSpeaker { participant, .. } => Some(*participant),
            _ => None,
        })
        .collect()
}

/// The RFC 6464 levels on the participants' audio decide the room's active speaker: the one
/// who speaks, then the other who takes over, then nobody after 1.5 s (not 1 s) of silence;
/// a speaker who leaves is cleared at once; a participant in the waiting room, however loud,
/// never counts.
#[test]
fn the_active_speaker_follows_the_audio_levels_of_admitted_participants() {
    let mut sim = Sim::new(11);
    let alice = sim.join(Video::None, false);
    let bob = sim.join(Video::None, false);
    let carol = sim.join(Video::None, true);
    sim.clients[alice].audio_level = Some(-20);
    sim.clients[bob].audio_level = Some(-90);
    sim.clients[carol].audio_level = Some(-5);
    sim.run_until_connected(Duration::from_secs(2));
    let (alice_id, bob_id) = (sim.clients[alice].id, sim.clients[bob].id);

    sim.run_for(Duration::from_secs(2));
    assert_eq!(active_speakers(&sim, 0), vec![Some(alice_id)]);

    let mark = sim.events.len();
    sim.clients[alice].audio_level = Some(-90);
    sim.clients[bob].audio_level = Some(-25);
    sim.run_for(Duration::from_secs(2));
    assert_eq!(active_speakers(&sim, mark), vec![Some(bob_id)]);

    let mark = sim.events.len();
    sim.clients[bob].audio_level = Some(-90);
    sim.run_for(Duration::from_millis(900));
    assert_eq!(
        active_speakers(&sim, mark),
        vec![],
        "not cleared within 1 s"
    );
    sim.run_for(Duration::from_secs(1));
    assert_eq!(
        active_speakers(&sim, mark),
        vec![None],
        "cleared after 1.5 s"
    );

    let mark = sim.events.len();
    sim.clients[bob].audio_level = Some(-30);
    sim.run_for(Duration::from_secs(1));
    sim.command(Command::Leave {
        participant: bob_id,
    })
    .expect("bob leaves");
    assert_eq!(active_speakers(&sim, mark), vec![Some(bob_id), None]);
}

/// The connection qualities the core reported for `participant` since event `from`.
fn qualities(sim: &sim::Sim, from: usize, participant: ParticipantId) -> Vec<Quality> {
    sim.events[from..]
        .iter()
        .filter_map(|e| match e {
            Event::ConnectionQuality {
                participant: p,
                quality,
            } if *p == participant => Some(*quality),
            _ => None,
        })
        .collect()
}

/// Each participant's connection is graded from what its session sees: excellent on a clean
/// network, poor within seconds of 15% loss, better again (not at once) after it clears, and
/// lost when nothing gets through any more.
#[test]
fn connection_quality_follows_loss_and_is_lost_with_the_session() {
    let mut sim = Sim::new(12);
    let alice = sim.join(Video::Vp8, false);
    let bob = sim.join(Video::Vp8, false);
    sim.run_until_connected(Duration::from_secs(2));
    sim.run_for(Duration::from_secs(3));
    let ids = [sim.clients[alice].id, sim.clients[bob].id];
    for id in ids {
        assert_eq!(qualities(&sim, 0, id), [Quality::Excellent], "{id:?}");
    }

    let mark = sim.events.len();
    sim.net.loss = 0.15;
    sim.run_for(Duration::from_secs(4));
    for id in ids {
        assert_eq!(
            qualities(&sim, mark, id),
            [Quality::Poor],
            "{id:?} under loss"
        );
    }

    let mark = sim.events.len();
    sim.net.loss = 0.0;
    sim.run_for(Duration::from_secs(1));
    for id in ids {
        assert_eq!(qualities(&sim, mark, id), [], "{id:?}: not better at once");
    }
    sim.run_for(Duration::from_secs(5));
    for id in ids {
        let after = qualities(&sim, mark, id);
        assert_eq!(after.last(), Some(&Quality::Excellent), "{id:?}: {after:?}");
        assert!(
            after.iter().all(|q| *q < Quality::Poor),
            "{id:?}: {after:?}"
        );
    }

    let mark = sim.events.len();
    sim.net.loss = 1.0;
    sim.run_for(Duration::from_secs(30));
    for id in ids {
        assert_eq!(
            qualities(&sim, mark, id).last(),
            Some(&Quality::Lost),
            "{id:?}"
        );
    }
}

/// The m-sections of an SDP, each as its lines (the first is the `m=` line).
fn m_sections(sdp: &str) -> Vec<Vec<&str>> {
    let mut sections: Vec<Vec<&str>> = Vec::new();
    for line in sdp.lines().map(str::trim) {
        if line.starts_with("m=") {
            sections.push(vec![line]);
        } else if let Some(section) = sections.last_mut() {
            section.push(line);
        }
    }
    sections
}

/// Loss recovery favours audio within what each kind can use: every SDP the server sends
/// offers or answers Opus with in-band FEC (`useinbandfec=1`, so a sender on a lossy link
/// carries each frame's low-rate copy in the next packet) and no NACK for audio (a
/// retransmission would arrive too late to be played); video gets NACK and RTX for every
/// codec.
#[test]
fn audio_is_negotiated_with_opus_fec_and_video_with_nack_and_rtx() {
    let mut sim = Sim::new(5);
    sim.join(Video::Vp8, false);
    sim.join(Video::H264, false);
    sim.run_until_connected(Duration::from_secs(2));
    sim.run_for(Duration::from_secs(1));
    assert!(sim.server_sdps.len() >= 4, "answers and later offers");
    for (to, sdp) in &sim.server_sdps {
        for section in m_sections(sdp) {
            let has = |needle: &str| section.iter().any(|line| line.contains(needle));
            if section[0].starts_with("m=audio") {
                assert!(has("opus/48000/2"), "{to}: {section:?}");
                assert!(has("useinbandfec=1"), "{to}: Opus FEC: {section:?}");
                assert!(!has(" nack"), "{to}: no NACK for audio: {section:?}");
            } else if section[0].starts_with("m=video") {
                let codecs = section
                    .iter()
                    .filter(|line| line.starts_with("a=rtpmap:") && !line.contains("rtx/"))
                    .count();
                let nacked = section
                    .iter()
                    .filter(|line| line.starts_with("a=rtcp-fb:") && line.ends_with(" nack"))
                    .count();
                let repaired = section.iter().filter(|line| line.contains("apt=")).count();
                assert!(codecs > 0 && nacked == codecs, "{to}: NACK: {section:?}");
                assert_eq!(repaired, codecs, "{to}: an RTX per codec: {section:?}");
            }
        }
    }
}
