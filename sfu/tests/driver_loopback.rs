//! The tokio driver on a real UDP socket: two str0m clients on 127.0.0.1 join through the
//! driver and each receives the other's audio, also after one of them moves to a new address
//! and restarts ICE.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sfu::core::{Command, Config, Event, ParticipantId, RoomId};
use sfu::driver::{Driver, Listen, Workers};
use str0m::change::{SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::RtpWrite;
use str0m::{Candidate, Event as RtcEvent, Input, Output, Rtc};
use tokio::net::UdpSocket;

const WANTED_PACKETS: usize = 25;

struct Client {
    id: ParticipantId,
    rtc: Rtc,
    socket: UdpSocket,
    pending: Option<SdpPendingOffer>,
    audio: Mid,
    seq: u64,
    next_audio: Instant,
    timeout: Instant,
    connected: bool,
    received: usize,
}

impl Client {
    async fn new(id: u128) -> (Client, SdpOffer) {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let addr = socket.local_addr().expect("local addr");
        let now = Instant::now();
        let mut rtc = Rtc::builder().set_rtp_mode(true).build(now);
        rtc.add_local_candidate(Candidate::host(addr, "udp").expect("candidate"));
        let mut api = rtc.sdp_api();
        let audio = api.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
        let (offer, pending) = api.apply().expect("offer");
        let client = Client {
            id: ParticipantId(id),
            rtc,
            socket,
            pending: Some(pending),
            audio,
            seq: 1,
            next_audio: now,
            timeout: now,
            connected: false,
            received: 0,
        };
        (client, offer)
    }

    async fn drain(&mut self) {
        loop {
            match self.rtc.poll_output().expect("poll") {
                Output::Timeout(at) => {
                    self.timeout = at;
                    return;
                }
                Output::Transmit(t) => {
                    let _ = self.socket.send_to(&t.contents, t.destination).await;
                }
                Output::Event(RtcEvent::Connected) => self.connected = true,
                Output::Event(RtcEvent::RtpPacket(_)) => self.received += 1,
                Output::Event(_) => {}
            }
        }
    }

    async fn receive(&mut self, len: usize, source: SocketAddr, buf: &[u8]) {
        let destination = self.socket.local_addr().expect("local addr");
        if let Ok(receive) = Receive::new(Protocol::Udp, source, destination, &buf[..len]) {
            let _ = self
                .rtc
                .handle_input(Input::Receive(Instant::now(), receive));
        }
        self.drain().await;
    }

    async fn tick(&mut self) {
        let now = Instant::now();
        self.rtc.handle_input(Input::Timeout(now)).expect("timeout");
        self.drain().await;
        if self.connected && self.next_audio <= now {
            let pt = self
                .rtc
                .codec_config()
                .find(|p| p.spec().codec == Codec::Opus)
                .map(|p| p.pt())
                .expect("opus");
            let mut direct = self.rtc.direct_api();
            if let Some(tx) = direct.stream_tx_by_mid(self.audio, None) {
                let time = (self.seq * 960) as u32;
                tx.write_rtp(RtpWrite::new(pt, self.seq.into(), time, now, vec![7u8; 80]));
                self.seq += 1;
            }
            self.next_audio = now + Duration::from_millis(20);
            self.drain().await;
        }
    }

    /// Leaves its socket for a new one on another port, as after a network change: the old
    /// candidate is withdrawn and the new one takes its place.
    async fn move_to_new_socket(&mut self) {
        let old = self.socket.local_addr().expect("local addr");
        self.socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let new = self.socket.local_addr().expect("local addr");
        assert_ne!(old, new);
        let old = Candidate::host(old, "udp").expect("candidate");
        self.rtc.direct_api().invalidate_candidate(&old);
        self.rtc
            .add_local_candidate(Candidate::host(new, "udp").expect("candidate"))
            .expect("candidate taken");
    }

    /// An offer with new ICE credentials (what a browser sends after a network change).
    fn ice_restart(&mut self) -> SdpOffer {
        let mut api = self.rtc.sdp_api();
        api.ice_restart(true);
        let (offer, pending) = api.apply().expect("restart offer");
        self.pending = Some(pending);
        offer
    }

    fn next_wakeup(&self) -> Instant {
        if self.connected {
            self.timeout.min(self.next_audio)
        } else {
            self.timeout
        }
    }
}

/// Runs both clients and their signaling with `driver` until each has received `wanted`
/// packets in all, or panics after 10 s.
async fn exchange(driver: &mut Driver, clients: &mut [Client], wanted: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let (mut buf_a, mut buf_b) = (vec![0u8; 2048], vec![0u8; 2048]);
    while clients.iter().any(|c| c.received < wanted) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "received only {:?} packets",
            clients.iter().map(|c| c.received).collect::<Vec<_>>()
        );
        let wakeup = clients
            .iter()
            .map(Client::next_wakeup)
            .min()
            .expect("clients");
        let (a, b) = clients.split_at_mut(1);
        let (a, b) = (&mut a[0], &mut b[0]);
        tokio::select! {
            event = driver.events.recv() => {
                match event.expect("driver runs") {
                    Event::Answer { participant, answer } => {
                        let client = if participant == a.id { &mut *a } else { &mut *b };
                        let pending = client.pending.take().expect("client offered");
                        client.rtc.sdp_api().accept_answer(pending, answer).expect("answer");
                        client.drain().await;
                    }
                    Event::Offer { participant, offer } => {
                        let client = if participant == a.id { &mut *a } else { &mut *b };
                        let answer = client.rtc.sdp_api().accept_offer(offer).expect("offer");
                        client.drain().await;
                        driver
                            .handle
                            .command(Command::Answer { participant, answer })
                            .await
                            .expect("core takes the answer");
                    }
                    _ => {}
                }
            }
            received = a.socket.recv_from(&mut buf_a) => {
                let (len, source) = received.expect("recv");
                a.receive(len, source, &buf_a).await;
            }
            received = b.socket.recv_from(&mut buf_b) => {
                let (len, source) = received.expect("recv");
                b.receive(len, source, &buf_b).await;
            }
            () = tokio::time::sleep_until(tokio::time::Instant::from_std(wakeup)) => {
                a.tick().await;
                b.tick().await;
            }
        }
    }
}

#[tokio::test]
async fn two_clients_exchange_audio_over_loopback_udp_and_one_moves_to_a_new_address() {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let server = socket.local_addr().expect("local addr");
    let mut driver = Driver::spawn(socket, Config::new(server)).expect("driver");
    let room = RoomId(1);

    let mut clients = Vec::new();
    for id in [1, 2] {
        let (mut client, offer) = Client::new(id).await;
        client.drain().await;
        driver
            .handle
            .command(Command::Join {
                room,
                participant: client.id,
                offer: Some(offer),
                waiting: false,
            })
            .await
            .expect("join");
        clients.push(client);
    }

    exchange(&mut driver, &mut clients, WANTED_PACKETS).await;

    // Client 1 moves to a new address (a new socket: another port, as after a network change)
    // and restarts ICE with the same session; media comes back both ways.
    clients[0].move_to_new_socket().await;
    let offer = clients[0].ice_restart();
    driver
        .handle
        .command(Command::Offer {
            participant: clients[0].id,
            offer,
        })
        .await
        .expect("the restart offer is taken");
    let before: Vec<usize> = clients.iter().map(|c| c.received).collect();
    exchange(
        &mut driver,
        &mut clients,
        before.iter().max().copied().unwrap_or(0) + WANTED_PACKETS,
    )
    .await;

    let handle = driver.handle.clone();
    for client in &clients {
        handle
            .command(Command::Leave {
                participant: client.id,
            })
            .await
            .expect("leave");
    }
    drop(handle);
    drop(driver.handle);
    driver
        .task
        .await
        .expect("task")
        .expect("driver ends cleanly once every handle is gone");
}

#[tokio::test]
async fn workers_pin_each_room_to_one_worker() {
    let ip = "127.0.0.1".parse().expect("ip");
    let workers = Workers::spawn(3, ip, ip, Config::new("127.0.0.1:9".parse().expect("addr")))
        .await
        .expect("workers");
    let rooms: Vec<RoomId> = (0..60).map(RoomId).collect();
    let first: Vec<usize> = rooms.iter().map(|r| workers.index_for(*r)).collect();
    let again: Vec<usize> = rooms.iter().map(|r| workers.index_for(*r)).collect();
    assert_eq!(first, again, "a room always maps to the same worker");
    for worker in 0..3 {
        assert!(first.contains(&worker), "worker {worker} hosts some room");
    }
    let ports: std::collections::HashSet<u16> = rooms
        .iter()
        .map(|r| workers.handle_for(*r).local_addr().expect("udp").port())
        .collect();
    assert_eq!(ports.len(), 3, "each worker has its own socket");
    // Each worker runs on a named thread of its own, not on the test's runtime. A new thread
    // names itself once it runs, so give the threads a moment.
    let thread_names = || -> Option<std::collections::HashSet<String>> {
        let tasks = std::fs::read_dir("/proc/self/task").ok()?;
        Some(
            tasks
                .filter_map(Result::ok)
                .filter_map(|task| std::fs::read_to_string(task.path().join("comm")).ok())
                .map(|name| name.trim().to_owned())
                .collect(),
        )
    };
    let wanted = ["sfu-worker-0", "sfu-worker-1", "sfu-worker-2"];
    let deadline = Instant::now() + Duration::from_secs(5);
    while let Some(names) = thread_names() {
        if wanted.iter().all(|name| names.contains(*name)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "worker threads missing: {names:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn workers_bind_consecutive_ports_from_a_base_and_report_stats() {
    let ip: std::net::IpAddr = "127.0.0.1".parse().expect("ip");
    // Another process may hold a port of the range meanwhile; a few bases are enough.
    let mut bound = None;
    for _ in 0..10 {
        let probe = UdpSocket::bind("127.0.0.1:0").await.expect("probe");
        let base = probe.local_addr().expect("addr").port();
        drop(probe);
        if base > 65_000 {
            continue;
        }
        let config = Config::new("127.0.0.1:9".parse().expect("addr"));
        let listen = Listen::udp(SocketAddr::new(ip, base), ip);
        if let Ok(workers) = Workers::bind(3, listen, config).await {
            bound = Some((base, workers));
            break;
        }
    }
    let (base, workers) = bound.expect("three consecutive free ports");
    let (drivers, tcp) = workers.into_parts();
    assert!(tcp.is_none(), "no TCP listener unless asked for");
    let ports: Vec<u16> = drivers
        .iter()
        .map(|d| d.handle.local_addr().expect("udp").port())
        .collect();
    let worker_1 = drivers[1].handle.local_addr().expect("udp");
    assert_eq!(ports, vec![base, base + 1, base + 2]);

    let garbage = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    garbage
        .send_to(&[0x80, 0x60, 0, 1], worker_1)
        .await
        .expect("send");
    let deadline = Instant::now() + Duration::from_secs(5);
    while drivers[1].handle.stats().core.dropped_datagrams == 0 {
        assert!(Instant::now() < deadline, "stats never showed the datagram");
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Stats are published after the next input once their period has passed.
        let _ = garbage.send_to(&[0x80, 0x60, 0, 2], worker_1).await;
    }
    let stats = drivers[1].handle.stats();
    assert!(stats.core.datagrams_in >= 1 && stats.core.bytes_in >= 4);
    assert_eq!(drivers[0].handle.stats().core.datagrams_in, 0);

    let config = Config::new("127.0.0.1:9".parse().expect("addr"));
    let taken = SocketAddr::new(ip, base);
    let refused = Workers::bind(1, Listen::udp(taken, ip), config).await;
    assert!(
        refused.is_err(),
        "a port in use is an error, not a silent fallback"
    );
    // A range whose second port is taken names that port (or the first, should another
    // process hold it).
    let config = Config::new("127.0.0.1:9".parse().expect("addr"));
    let below = SocketAddr::new(ip, base - 1);
    let error = Workers::bind(2, Listen::udp(below, ip), config)
        .await
        .err()
        .expect("the second port is taken");
    let said = error.to_string();
    assert!(
        said.contains(&format!("UDP {taken} for SFU worker 1"))
            || said.contains(&format!("UDP {below} for SFU worker 0")),
        "{said}"
    );
}

/// A worker's socket gets a kernel buffer far above the 208 KiB default (within what
/// `net.core.rmem_max` allows), so that a pause of the worker does not drop datagrams: at 200
/// visits on two workers the default buffer overflowed and receivers lost ~30% of packets.
#[tokio::test]
async fn worker_sockets_get_large_kernel_buffers() -> std::io::Result<()> {
    let socket = sfu::driver::bind_udp("127.0.0.1:0".parse().map_err(std::io::Error::other)?)?;
    assert!(socket.local_addr()?.port() != 0);
    let cap = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(sfu::driver::SOCKET_BUFFER);
    let wanted = sfu::driver::SOCKET_BUFFER.min(cap);
    // Linux reports twice the size set (its bookkeeping overhead).
    let got = socket2::SockRef::from(&socket).recv_buffer_size()?;
    assert!(got >= wanted, "receive buffer {got} < {wanted}");
    Ok(())
}

/// Waits up to `within` until `driver`'s published participant count is `wanted`, sending it
/// nothing: statistics must follow a change by themselves, not at the next datagram.
async fn participants_become(driver: &Driver, wanted: usize, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if driver.handle.stats().core.participants == wanted {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn an_idle_worker_publishes_its_stats_after_the_last_participant_leaves() {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let driver =
        Driver::spawn(socket, Config::new("127.0.0.1:9".parse().expect("addr"))).expect("driver");
    let participant = ParticipantId(7);
    driver
        .handle
        .command(Command::Join {
            room: RoomId(1),
            participant,
            offer: None,
            waiting: false,
        })
        .await
        .expect("join");
    assert!(participants_become(&driver, 1, Duration::from_secs(1)).await);
    // Right after a publication: the next one is due a period later, with no input to wake
    // the worker.
    driver
        .handle
        .command(Command::Leave { participant })
        .await
        .expect("leave");
    assert!(
        participants_become(&driver, 0, Duration::from_secs(1)).await,
        "the gauge still shows {:?}",
        driver.handle.stats().core
    );
    assert_eq!(driver.handle.stats().core.rooms, 0);
}

/// A burst of datagrams several receive batches long reaches the core whole.
#[tokio::test]
async fn a_burst_longer_than_one_receive_batch_reaches_the_core() -> std::io::Result<()> {
    let socket = sfu::driver::bind_udp("127.0.0.1:0".parse().map_err(std::io::Error::other)?)?;
    let server = socket.local_addr()?;
    let driver = Driver::spawn(socket, Config::new(server))?;
    let sender = UdpSocket::bind("127.0.0.1:0").await?;
    const BURST: u64 = 200;
    for seq in 0..BURST {
        // Not STUN, DTLS or RTP from a known peer: each one is counted in, then dropped.
        sender
            .send_to(&[0x80, 0x60, 0, seq as u8, 0, 0, 0, 0], server)
            .await?;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while driver.handle.stats().core.datagrams_in < BURST {
        assert!(
            Instant::now() < deadline,
            "the core saw {:?}",
            driver.handle.stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stats = driver.handle.stats();
    assert_eq!(stats.core.datagrams_in, BURST);
    // How many calls it took depends on how fast the worker is against this sender; the
    // unit tests of the driver's UDP module show the batching itself.
    assert_eq!(stats.udp.datagrams_received, BURST);
    assert!(stats.udp.recv_calls >= 1 && stats.udp.recv_calls <= BURST);
    Ok(())
}
