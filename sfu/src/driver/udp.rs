//! A worker's UDP socket with batched I/O: many datagrams per system call both ways.
//!
//! Ingress goes through `quinn-udp`: one `recvmmsg` fills up to [`quinn_udp::BATCH_SIZE`]
//! reused buffers, and where the kernel supports UDP GRO a buffer may hold several datagrams of
//! one flow, `stride` bytes apart. Egress is our own `sendmmsg` (quinn-udp sends one `sendmsg`
//! per transmit, which for an SFU, whose consecutive packets mostly go to different peers,
//! would leave one system call per packet): the core's transmits of one drain are grouped by
//! destination (each destination keeps its own order), consecutive ones of one size become one
//! UDP GSO message (`UDP_SEGMENT`, the last segment may be shorter), and up to
//! [`SEND_MESSAGES`] messages leave in one call. Segments are gathered with one iovec each
//! straight from the core's buffers, so nothing is copied on the way out.
//!
//! Without kernel support (detected by quinn-udp when the socket is set up) GRO is off and every
//! message carries one datagram; a GSO send the kernel or the device refuses (EIO or EINVAL)
//! turns GSO off for the socket and the refused datagrams go out one by one.

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;

use quinn_udp::{RecvMeta, UdpSockRef, UdpSocketState};
use socket2::SockAddr;
use tokio::io::Interest;
use tokio::net::UdpSocket;

use crate::core::Transmit;

/// Larger than any datagram a WebRTC peer sends (MTU-sized); longer ones are truncated and
/// then refused by str0m.
const RECEIVE_BUFFER: usize = 2048;
/// A receive buffer when GRO is on: the kernel coalesces at most 64 KiB of one flow.
const GRO_BUFFER: usize = 64 * 1024;
/// Messages per `sendmmsg` call.
const SEND_MESSAGES: usize = 32;
/// Datagrams per `sendmmsg` call, across its messages (one iovec each).
const SEND_SEGMENTS: usize = 128;
/// Largest payload of one GSO message: what fits one IPv4 or IPv6 UDP datagram with headers.
const MAX_GSO_BYTES: usize = 65_000;

/// What a worker's UDP socket has done since it started, for metrics: datagrams per system
/// call in each direction shows how much batching the load allows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UdpStats {
    /// `recvmmsg` calls that returned datagrams.
    pub recv_calls: u64,
    /// Datagrams received (a GRO buffer counts each datagram in it).
    pub datagrams_received: u64,
    /// `sendmmsg` calls that sent at least one message.
    pub send_calls: u64,
    /// Datagrams handed to the kernel (a GSO message counts each segment).
    pub datagrams_sent: u64,
    /// Messages that carried more than one datagram (UDP GSO).
    pub gso_messages: u64,
    /// Datagrams the kernel refused (an unreachable destination, say); they are dropped.
    pub send_errors: u64,
}

/// One `sendmmsg` entry: `count` datagrams for `address`, the transmits at
/// `order[first..first + count]`, segmented at `segment` bytes when there are several.
struct Message {
    address: SockAddr,
    first: usize,
    count: usize,
    segment: usize,
}

/// A worker's UDP socket, its receive buffers and its send batch, all reused from one batch to
/// the next.
pub(crate) struct UdpIo {
    socket: UdpSocket,
    state: UdpSocketState,
    /// [`quinn_udp::BATCH_SIZE`] receive buffers of `slot` bytes each, back to back.
    buffers: Box<[u8]>,
    slot: usize,
    metas: [RecvMeta; quinn_udp::BATCH_SIZE],
    /// How many of `metas` the last receive filled.
    received: usize,
    /// Transmits waiting for [`UdpIo::flush`].
    pending: Vec<Transmit>,
    /// Indices into `pending`, grouped by destination.
    order: Vec<(SocketAddr, usize)>,
    messages: Vec<Message>,
    /// Most datagrams in one GSO message; 1 when GSO is unavailable or was refused.
    gso_segments: usize,
    pub(crate) stats: UdpStats,
}

impl UdpIo {
    /// Takes `socket` over: quinn-udp enables GRO (and the other options it needs) where the
    /// kernel has them.
    ///
    /// # Errors
    /// When the socket refuses an option quinn-udp requires.
    pub(crate) fn new(socket: UdpSocket) -> io::Result<UdpIo> {
        let state = UdpSocketState::new(UdpSockRef::from(&socket))?;
        let slot = if state.gro_segments() > 1 {
            GRO_BUFFER
        } else {
            RECEIVE_BUFFER
        };
        let gso_segments = state.max_gso_segments();
        tracing::debug!(
            gro = state.gro_segments() > 1,
            gso_segments,
            "SFU worker UDP socket"
        );
        Ok(UdpIo {
            socket,
            state,
            // Zeroed pages are mapped lazily: only what datagrams touch becomes resident.
            buffers: vec![0; slot * quinn_udp::BATCH_SIZE].into_boxed_slice(),
            slot,
            metas: [RecvMeta::default(); quinn_udp::BATCH_SIZE],
            received: 0,
            pending: Vec::new(),
            order: Vec::new(),
            messages: Vec::new(),
            gso_segments,
            stats: UdpStats::default(),
        })
    }

    /// Waits until the socket has datagrams to read.
    pub(crate) async fn readable(&self) -> io::Result<()> {
        self.socket.readable().await
    }

    /// Reads one batch without waiting; afterwards [`UdpIo::datagrams`] yields it. Returns
    /// how many buffers were filled (0 when nothing was waiting after all).
    ///
    /// # Errors
    /// The socket's errors other than `WouldBlock`.
    pub(crate) fn try_recv(&mut self) -> io::Result<usize> {
        let UdpIo {
            socket,
            state,
            buffers,
            slot,
            metas,
            ..
        } = self;
        let mut chunks = buffers.chunks_mut(*slot);
        let mut slices: [IoSliceMut<'_>; quinn_udp::BATCH_SIZE] =
            std::array::from_fn(|_| IoSliceMut::new(chunks.next().unwrap_or_default()));
        let received = match socket.try_io(Interest::READABLE, || {
            state.recv(UdpSockRef::from(&*socket), &mut slices, metas)
        }) {
            Ok(received) => received,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => 0,
            Err(error) => {
                self.received = 0;
                return Err(error);
            }
        };
        self.received = received;
        if received > 0 {
            self.stats.recv_calls += 1;
        }
        Ok(received)
    }

    /// The datagrams of the last [`UdpIo::try_recv`], with their sources, a GRO buffer split
    /// into its datagrams.
    pub(crate) fn datagrams(&mut self) -> impl Iterator<Item = (SocketAddr, &[u8])> + '_ {
        let count: usize = self.metas[..self.received]
            .iter()
            .map(|meta| meta.len.div_ceil(meta.stride.max(1)))
            .sum();
        self.stats.datagrams_received += count as u64;
        let slot = self.slot;
        let buffers: &[u8] = &self.buffers;
        self.metas[..self.received]
            .iter()
            .enumerate()
            .flat_map(move |(index, meta)| {
                let filled = &buffers[index * slot..][..meta.len.min(slot)];
                filled
                    .chunks(meta.stride.max(1))
                    .map(move |datagram| (meta.addr, datagram))
            })
    }

    /// Queues `transmit` (a UDP one) for the next [`UdpIo::flush`].
    pub(crate) fn push(&mut self, transmit: Transmit) {
        self.pending.push(transmit);
    }

    /// Sends every queued transmit, in as few `sendmmsg` calls as GSO and the batch limits
    /// allow, waiting while the kernel's send buffer is full. A datagram the kernel refuses is
    /// logged and dropped: one unreachable peer must not stop the worker, and str0m
    /// retransmits what matters.
    ///
    /// # Errors
    /// When waiting for the socket to become writable fails: the socket is broken.
    pub(crate) async fn flush(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        // Grouped by destination, each destination's transmits in their order (the index
        // breaks ties): an unstable sort that allocates nothing.
        self.order.clear();
        self.order.extend(
            self.pending
                .iter()
                .enumerate()
                .map(|(index, transmit)| (transmit.destination, index)),
        );
        self.order.sort_unstable();
        self.plan(0);
        let mut sent = 0;
        while sent < self.messages.len() {
            let UdpIo {
                socket,
                pending,
                order,
                messages,
                ..
            } = &*self;
            let result = socket.try_io(Interest::WRITABLE, || {
                send_messages(socket, &messages[sent..], order, pending)
            });
            match result {
                Ok(done) => {
                    self.count_sent(sent, done);
                    sent += done;
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    self.socket.writable().await?;
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    let message = &self.messages[sent];
                    let refused_gso = message.count > 1
                        && matches!(error.raw_os_error(), Some(libc::EIO | libc::EINVAL));
                    if refused_gso {
                        // Some devices cannot segment UDP; the kernel only says so on send.
                        tracing::info!(%error, "UDP GSO refused; sending datagrams one by one");
                        self.gso_segments = 1;
                        let first = message.first;
                        self.messages.truncate(sent);
                        self.plan(first);
                    } else {
                        tracing::debug!(
                            %error,
                            destination = ?message.address.as_socket(),
                            "send failed"
                        );
                        self.stats.send_errors += message.count as u64;
                        sent += 1;
                    }
                }
            }
        }
        self.pending.clear();
        Ok(())
    }

    /// Appends to `messages` the messages for `order[from..]`: runs of one destination whose
    /// datagrams all have the first one's size (the last may be shorter) become one GSO
    /// message, within the kernel's limits.
    fn plan(&mut self, from: usize) {
        if from == 0 {
            self.messages.clear();
        }
        let mut index = from;
        while index < self.order.len() {
            let (destination, first) = self.order[index];
            let segment = self.pending[first].contents.len();
            let mut count = 1;
            let mut bytes = segment;
            while count < self.gso_segments && count < SEND_SEGMENTS {
                let Some(&(next_destination, next)) = self.order.get(index + count) else {
                    break;
                };
                let len = self.pending[next].contents.len();
                if next_destination != destination
                    || len > segment
                    || len == 0
                    || bytes + len > MAX_GSO_BYTES
                {
                    break;
                }
                count += 1;
                bytes += len;
                if len < segment {
                    // A shorter datagram can only end a GSO message.
                    break;
                }
            }
            self.messages.push(Message {
                address: SockAddr::from(destination),
                first: index,
                count,
                segment,
            });
            index += count;
        }
    }

    fn count_sent(&mut self, from: usize, messages: usize) {
        if messages == 0 {
            return;
        }
        self.stats.send_calls += 1;
        for message in &self.messages[from..from + messages] {
            self.stats.datagrams_sent += message.count as u64;
            if message.count > 1 {
                self.stats.gso_messages += 1;
            }
        }
    }

    /// Turns GSO off, as after the kernel refused it.
    #[cfg(test)]
    fn disable_gso(&mut self) {
        self.gso_segments = 1;
    }
}

/// The control message that sets one message's GSO segment size: a `cmsghdr` followed by the
/// `u16` size, laid out as `CMSG_SPACE(2)` bytes.
#[cfg(target_os = "linux")]
#[repr(C)]
struct SegmentSize {
    header: libc::cmsghdr,
    size: u16,
}

#[cfg(target_os = "linux")]
// SAFETY: CMSG_LEN and CMSG_SPACE only compute sizes.
const _: () = unsafe {
    assert!(std::mem::offset_of!(SegmentSize, size) == libc::CMSG_LEN(0) as usize);
    assert!(std::mem::size_of::<SegmentSize>() == libc::CMSG_SPACE(2) as usize);
};

/// Sends a prefix of `messages` with one `sendmmsg` (as many as [`SEND_MESSAGES`] and
/// [`SEND_SEGMENTS`] allow) and returns how many the kernel took. An error concerns the first
/// message; the ones after it were not sent.
#[cfg(target_os = "linux")]
fn send_messages(
    socket: &UdpSocket,
    messages: &[Message],
    order: &[(SocketAddr, usize)],
    pending: &[Transmit],
) -> io::Result<usize> {
    use std::os::fd::AsRawFd;

    // SAFETY: all-zero is a valid value of these plain C structs (null pointers, zero lengths).
    let mut headers: [libc::mmsghdr; SEND_MESSAGES] = unsafe { std::mem::zeroed() };
    let mut iovecs: [libc::iovec; SEND_SEGMENTS] = unsafe { std::mem::zeroed() };
    let mut controls: [SegmentSize; SEND_MESSAGES] = unsafe { std::mem::zeroed() };
    // Where each message's iovecs start; the pointers are taken once every slot is written.
    let mut starts = [0usize; SEND_MESSAGES];
    let mut used = 0;
    let mut count = 0;
    for message in messages.iter().take(SEND_MESSAGES) {
        if used + message.count > SEND_SEGMENTS {
            break;
        }
        starts[count] = used;
        for &(_, item) in &order[message.first..message.first + message.count] {
            let contents = &pending[item].contents;
            iovecs[used] = libc::iovec {
                iov_base: contents.as_ptr().cast_mut().cast(),
                iov_len: contents.len(),
            };
            used += 1;
        }
        if message.count > 1 {
            let control = &mut controls[count];
            // SAFETY: CMSG_LEN only computes a size.
            control.header.cmsg_len = unsafe { libc::CMSG_LEN(2) } as _;
            control.header.cmsg_level = libc::SOL_UDP;
            control.header.cmsg_type = libc::UDP_SEGMENT;
            // Segments are at most MAX_GSO_BYTES.
            control.size = u16::try_from(message.segment).unwrap_or(u16::MAX);
        }
        count += 1;
    }
    let iovecs_base = iovecs.as_mut_ptr();
    let controls_base = controls.as_mut_ptr();
    for (index, message) in messages.iter().take(count).enumerate() {
        let header = &mut headers[index].msg_hdr;
        // sendmmsg only reads the address; the pointer is mutable because recvmmsg shares
        // the struct.
        header.msg_name = message.address.as_ptr().cast_mut().cast();
        header.msg_namelen = message.address.len();
        // SAFETY: starts[index] + message.count <= used <= SEND_SEGMENTS.
        header.msg_iov = unsafe { iovecs_base.add(starts[index]) };
        header.msg_iovlen = message.count as _;
        if message.count > 1 {
            // SAFETY: index < count <= SEND_MESSAGES.
            header.msg_control = unsafe { controls_base.add(index) }.cast();
            header.msg_controllen = std::mem::size_of::<SegmentSize>() as _;
        }
    }
    // SAFETY: the first `count` headers point at addresses, iovecs and control messages that
    // live until the call returns, and each iovec at a transmit's contents, borrowed for the
    // whole call; the kernel only reads them (and writes each header's msg_len).
    let sent = unsafe {
        libc::sendmmsg(
            socket.as_raw_fd(),
            headers.as_mut_ptr(),
            count as libc::c_uint,
            0,
        )
    };
    if sent < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(sent as usize)
    }
}

/// Without `sendmmsg` and GSO ([`UdpIo::new`] finds GSO unavailable there, so every message
/// carries one datagram): the first message alone.
#[cfg(not(target_os = "linux"))]
fn send_messages(
    socket: &UdpSocket,
    messages: &[Message],
    order: &[(SocketAddr, usize)],
    pending: &[Transmit],
) -> io::Result<usize> {
    let Some(message) = messages.first() else {
        return Ok(0);
    };
    let (_, item) = order[message.first];
    socket2::SockRef::from(socket).send_to(&pending[item].contents, &message.address)?;
    Ok(1)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use super::*;
    use crate::core::Transport;
    use crate::driver::bind_udp;

    fn localhost() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 0))
    }

    /// A datagram that names its sender's `stream` and its `seq`, `len` bytes long.
    fn datagram(stream: u8, seq: u16, len: usize) -> Vec<u8> {
        let mut contents = vec![stream; len];
        contents[1..3].copy_from_slice(&seq.to_be_bytes());
        contents
    }

    #[tokio::test]
    async fn a_burst_larger_than_one_batch_is_all_received() -> io::Result<()> {
        let mut io = UdpIo::new(bind_udp(localhost())?)?;
        let address = io.socket.local_addr()?;
        let senders = [
            UdpSocket::bind(localhost()).await?,
            UdpSocket::bind(localhost()).await?,
        ];
        // Five batches' worth, both senders interleaved, sizes from 3 to 1200 bytes.
        let per_sender = quinn_udp::BATCH_SIZE * 5 / 2;
        let mut sent = HashMap::new();
        for seq in 0..per_sender {
            for (stream, sender) in senders.iter().enumerate() {
                let len = 3 + (seq * 97 + stream * 13) % 1198;
                let contents = datagram(stream as u8, seq as u16, len);
                sender.send_to(&contents, address).await?;
                sent.entry(sender.local_addr()?)
                    .or_insert_with(Vec::new)
                    .push(contents);
            }
        }
        let mut received: HashMap<SocketAddr, Vec<Vec<u8>>> = HashMap::new();
        let mut most_in_one_call = 0;
        let total = per_sender * senders.len();
        while received.values().map(Vec::len).sum::<usize>() < total {
            tokio::time::timeout(Duration::from_secs(5), io.readable())
                .await
                .map_err(io::Error::other)??;
            let buffers = io.try_recv()?;
            let mut in_call = 0;
            for (source, contents) in io.datagrams() {
                received.entry(source).or_default().push(contents.to_vec());
                in_call += 1;
            }
            assert!(in_call >= buffers);
            most_in_one_call = most_in_one_call.max(in_call);
        }
        assert_eq!(received, sent, "every datagram, intact and in order");
        assert!(most_in_one_call > 1, "datagrams arrive in batches");
        assert!(io.stats.recv_calls < total as u64);
        assert_eq!(io.stats.datagrams_received, total as u64);
        Ok(())
    }

    /// Queues runs of one size per destination (for GSO), odd sizes in between, shorter last
    /// segments and more than one `sendmmsg` call's worth, for three receivers, and checks
    /// that each receives exactly its own datagrams in order.
    async fn send_mixed(io: &mut UdpIo) -> io::Result<()> {
        let receivers = [
            bind_udp(localhost())?,
            bind_udp(localhost())?,
            bind_udp(localhost())?,
        ];
        let source = io.socket.local_addr()?;
        let mut wanted: HashMap<SocketAddr, Vec<Vec<u8>>> = HashMap::new();
        let mut seq = 0u16;
        for round in 0..20 {
            for (stream, receiver) in receivers.iter().enumerate() {
                let destination = receiver.local_addr()?;
                // A frame of full packets and a shorter last one, then an audio-sized one.
                let full = 1000 + 50 * stream + round;
                let sizes = [full, full, full, full / 2, 120 + round];
                for len in sizes {
                    let contents = datagram(stream as u8, seq, len);
                    seq = seq.wrapping_add(1);
                    wanted
                        .entry(destination)
                        .or_default()
                        .push(contents.clone());
                    io.push(Transmit {
                        transport: Transport::Udp,
                        source,
                        destination,
                        contents,
                    });
                }
            }
        }
        let before = io.stats;
        io.flush().await?;
        let total: usize = wanted.values().map(Vec::len).sum();
        assert_eq!(
            io.stats.datagrams_sent - before.datagrams_sent,
            total as u64
        );
        assert!(
            io.stats.send_calls - before.send_calls < total as u64,
            "several datagrams per call"
        );
        let mut buf = vec![0u8; 2048];
        for receiver in &receivers {
            let address = receiver.local_addr()?;
            let wanted = &wanted[&address];
            let mut got = Vec::new();
            while got.len() < wanted.len() {
                let (len, from) =
                    tokio::time::timeout(Duration::from_secs(5), receiver.recv_from(&mut buf))
                        .await
                        .map_err(io::Error::other)??;
                assert_eq!(from, source);
                got.push(buf[..len].to_vec());
            }
            assert_eq!(
                &got, wanted,
                "every datagram to {address}, intact and in order"
            );
        }
        assert!(io.pending.is_empty());
        Ok(())
    }

    #[tokio::test]
    async fn transmits_to_several_destinations_with_mixed_sizes_arrive_intact() -> io::Result<()> {
        let mut io = UdpIo::new(bind_udp(localhost())?)?;
        let gso = io.gso_segments > 1;
        send_mixed(&mut io).await?;
        // Loopback segments UDP on every Linux kernel with GSO.
        assert_eq!(io.stats.gso_messages > 0, gso);
        // The buffers are reused: a second round goes out the same way.
        send_mixed(&mut io).await
    }

    #[tokio::test]
    async fn without_gso_every_datagram_still_arrives() -> io::Result<()> {
        let mut io = UdpIo::new(bind_udp(localhost())?)?;
        io.disable_gso();
        send_mixed(&mut io).await?;
        assert_eq!(io.stats.gso_messages, 0);
        Ok(())
    }

    #[tokio::test]
    async fn a_refused_destination_does_not_stop_the_others() -> io::Result<()> {
        let mut io = UdpIo::new(bind_udp(localhost())?)?;
        let receiver = bind_udp(localhost())?;
        let source = io.socket.local_addr()?;
        // Port 0 cannot be sent to: the kernel refuses that datagram alone.
        for destination in [
            SocketAddr::from(([127, 0, 0, 1], 0)),
            receiver.local_addr()?,
        ] {
            io.push(Transmit {
                transport: Transport::Udp,
                source,
                destination,
                contents: vec![1; 100],
            });
        }
        io.flush().await?;
        assert_eq!(io.stats.send_errors, 1);
        let mut buf = [0u8; 200];
        let (len, _) = tokio::time::timeout(Duration::from_secs(5), receiver.recv_from(&mut buf))
            .await
            .map_err(io::Error::other)??;
        assert_eq!(len, 100);
        Ok(())
    }
}
