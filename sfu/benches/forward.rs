//! The whole forwarding path in memory: SRTP-protected RTP from one publisher goes into the
//! core, is routed, and leaves SRTP-protected to 1, 3 and 10 subscribers.
//!
//! The publisher and subscribers are real str0m peers from the scenario-test world
//! (`tests/sim`). Each batch is one virtual second of the publisher's audio (Opus, 50 pkt/s)
//! and VP8 video (30 fps, a keyframe every 30 frames), every RTP payload [`PAYLOAD`] bytes
//! (a typical video packet; audio packets are smaller in life, so this errs slow): it is
//! generated untimed, then only the
//! core's work is timed — `handle_datagram` for every datagram plus draining every transmit.
//! Criterion's throughput is egress packets (datagrams out), so its "elem/s" is forwarded
//! packets per second on one core.
//!
//! `forward_simulcast` is the same room with the publisher sending its video as three layers
//! (q, h, f: 1, 3 and 8 packets a frame) and each subscriber forwarded the top one, so the
//! two groups side by side give what simulcast costs per subscriber: three layers to receive
//! and decrypt, one to choose, rewrite and send.
//!
//! `cargo bench -p sfu --bench forward`

#[path = "../tests/sim/mod.rs"]
#[allow(dead_code)]
mod sim;

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sim::{Sim, Video};

/// RTP payload bytes of every packet.
const PAYLOAD: usize = 1100;

/// A connected room: client 0 publishes audio and video (as simulcast layers if
/// `simulcast`), the others only subscribe. No bandwidth estimation: the batches' feedback is
/// never delivered, so every leg stays on the top layer.
fn room(subscribers: usize, simulcast: bool) -> Sim {
    let mut sim = Sim::with_config(7, |mut c| {
        c.max_participants_per_room = subscribers + 1;
        c.bwe_initial_bps = None;
        c
    });
    sim.net.jitter = Duration::ZERO;
    sim.payload_len = PAYLOAD;
    if simulcast {
        sim.join_simulcast(Video::Vp8);
    } else {
        sim.join(Video::Vp8, false);
    }
    for _ in 0..subscribers {
        let index = sim.join(Video::None, false);
        sim.clients[index].publishing = false;
    }
    sim.run_until_connected(Duration::from_secs(5));
    sim.run_for(Duration::from_secs(1));
    sim
}

/// One virtual second of traffic towards the server, captured instead of delivered.
fn capture_second(sim: &mut Sim) -> Vec<(std::net::SocketAddr, Vec<u8>)> {
    sim.net.capture_to = Some(sim.server);
    sim.run_for(Duration::from_secs(1));
    sim.net.capture_to = None;
    std::mem::take(&mut sim.net.captured)
}

/// Feeds a batch to the core and drains everything it produces; returns datagrams out.
fn forward(sim: &mut Sim, batch: &[(std::net::SocketAddr, Vec<u8>)]) -> u64 {
    let mut out = 0;
    for (from, bytes) in batch {
        let _ = sim.core.handle_datagram(sim.now, *from, sim.server, bytes);
        while let Some(transmit) = sim.core.poll_transmit() {
            black_box(&transmit);
            out += 1;
        }
        while sim.core.poll_event().is_some() {}
    }
    out
}

fn bench_forwarding(c: &mut Criterion) {
    for (name, simulcast) in [("forward", false), ("forward_simulcast", true)] {
        bench_group(c, name, simulcast);
    }
}

fn bench_group(c: &mut Criterion, name: &str, simulcast: bool) {
    let mut group = c.benchmark_group(name);
    group.sample_size(20);
    for subscribers in [1usize, 3, 10] {
        let mut sim = room(subscribers, simulcast);
        let calibration = capture_second(&mut sim);
        let per_batch = forward(&mut sim, &calibration);
        group.throughput(Throughput::Elements(per_batch));
        group.bench_with_input(
            BenchmarkId::from_parameter(subscribers),
            &subscribers,
            |b, _| {
                b.iter_custom(|iters| {
                    let mut timed = Duration::ZERO;
                    for _ in 0..iters {
                        let batch = capture_second(&mut sim);
                        let started = Instant::now();
                        black_box(forward(&mut sim, &batch));
                        timed += started.elapsed();
                    }
                    timed
                });
            },
        );
    }
    group.finish();
}

criterion_group!(benches, bench_forwarding);
criterion_main!(benches);
