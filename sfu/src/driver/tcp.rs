//! ICE-TCP (RFC 6544) for clients whose networks block UDP: one listener in front of every
//! worker, and each connection's RFC 4571 framing (a 16-bit length before every packet) on
//! the worker that hosts its participant.
//!
//! [`TcpFront`] accepts, holds the total and per-IP caps, reads the first frame within
//! [`TcpLimits::first_frame_timeout`] and offers the connection to each worker in turn; the
//! worker whose core expects that frame (a STUN binding request naming one of its ICE ufrags,
//! [`Core::expects`](crate::core::Core::expects)) adopts it. There, a reader task turns frames
//! into run-loop inputs and a writer task drains a bounded queue. A slow peer whose queue is
//! full loses frames (str0m's NACK/RTX and congestion control cope, as with UDP loss) and is
//! never waited for, so it cannot stall the worker or anybody else. A connection silent for
//! [`TcpLimits::idle_timeout`], whose writes stall for [`TcpLimits::write_timeout`], or that
//! announces a frame longer than [`MAX_FRAME`] is closed and counted.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncReadExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinHandle};
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

use super::{Handle, WeakHandle};

/// The longest frame accepted: an Ethernet MTU. WebRTC packets stay below ~1200 bytes so that
/// they fit any path's MTU; a longer length is garbage or an attack.
pub const MAX_FRAME: usize = 1500;
/// Frames read from all connections of one worker that wait for its run loop; when full, the
/// readers wait (TCP pushes back on their peers) while UDP goes on.
const INBOUND_QUEUE: usize = 1024;
/// Kernel send buffer of each connection. Left to autotuning it grows to megabytes, which for
/// real-time media only means seconds of stale packets queued behind a congested peer; 64 KiB
/// holds ~200 ms of a 2.5 Mbit/s stream, and beyond it frames are dropped in our queue.
const SEND_BUFFER: usize = 64 * 1024;
/// After accept errors (out of file descriptors, say), how long the listener pauses instead
/// of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Caps and timeouts of ICE-TCP connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpLimits {
    /// Open connections, all workers together; more are closed at accept.
    pub max_connections: usize,
    /// Open connections from one IP address; more are closed at accept.
    pub max_connections_per_ip: usize,
    /// The first frame (a STUN binding request) must be complete this soon after accept.
    pub first_frame_timeout: Duration,
    /// A connection with no complete frame for this long is closed. Browsers send ICE
    /// consent checks every few seconds, so only a dead or hostile peer stays this quiet.
    pub idle_timeout: Duration,
    /// A connection whose peer takes no data for this long is closed.
    pub write_timeout: Duration,
    /// Frames queued for one connection before new ones are dropped.
    pub send_queue: usize,
}

impl Default for TcpLimits {
    /// 4,096 connections, 64 per IP (a clinic's NAT), first frame within 5 s, closed after
    /// 30 s of silence or 10 s of stalled writes, 256 frames queued (~300 KB) per connection.
    fn default() -> Self {
        TcpLimits {
            max_connections: 4096,
            max_connections_per_ip: 64,
            first_frame_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(10),
            send_queue: 256,
        }
    }
}

/// What the listener did with the connections it accepted, since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AcceptCounts {
    /// Connections handed to a worker.
    pub adopted: u64,
    /// Closed at once: [`TcpLimits::max_connections`] reached.
    pub refused_total: u64,
    /// Closed at once: [`TcpLimits::max_connections_per_ip`] reached for the peer's IP.
    pub refused_per_ip: u64,
    /// Closed: the first frame was empty, longer than [`MAX_FRAME`], or the peer hung up.
    pub bad_first_frame: u64,
    /// Closed: no complete first frame within [`TcpLimits::first_frame_timeout`].
    pub first_frame_timeout: u64,
    /// Closed: no worker expected the first frame (not STUN, or an unknown ICE ufrag).
    pub unclaimed: u64,
    /// `accept` itself failed (the process out of file descriptors, say).
    pub accept_errors: u64,
}

#[derive(Debug, Default)]
struct AcceptStats {
    adopted: AtomicU64,
    refused_total: AtomicU64,
    refused_per_ip: AtomicU64,
    bad_first_frame: AtomicU64,
    first_frame_timeout: AtomicU64,
    unclaimed: AtomicU64,
    accept_errors: AtomicU64,
}

impl AcceptStats {
    fn snapshot(&self) -> AcceptCounts {
        let read = |c: &AtomicU64| c.load(Ordering::Relaxed);
        AcceptCounts {
            adopted: read(&self.adopted),
            refused_total: read(&self.refused_total),
            refused_per_ip: read(&self.refused_per_ip),
            bad_first_frame: read(&self.bad_first_frame),
            first_frame_timeout: read(&self.first_frame_timeout),
            unclaimed: read(&self.unclaimed),
            accept_errors: read(&self.accept_errors),
        }
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Open connections, in total and per IP. Each connection holds a [`Permit`] until it closes,
/// wherever it lives by then.
#[derive(Debug, Default)]
struct Book {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

#[derive(Debug)]
enum Refusal {
    Total,
    PerIp,
}

/// One connection's place in the [`Book`]; dropping it frees the place.
#[derive(Debug)]
pub(crate) struct Permit {
    ip: IpAddr,
    book: Arc<Mutex<Book>>,
}

fn admit(book: &Arc<Mutex<Book>>, ip: IpAddr, limits: &TcpLimits) -> Result<Permit, Refusal> {
    let mut open = book.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if open.total >= limits.max_connections {
        return Err(Refusal::Total);
    }
    let from_ip = open.per_ip.entry(ip).or_default();
    if *from_ip >= limits.max_connections_per_ip {
        return Err(Refusal::PerIp);
    }
    *from_ip += 1;
    open.total += 1;
    Ok(Permit {
        ip,
        book: Arc::clone(book),
    })
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut open = self.book.lock().unwrap_or_else(|p| p.into_inner());
        open.total = open.total.saturating_sub(1);
        if let Some(from_ip) = open.per_ip.get_mut(&self.ip) {
            *from_ip = from_ip.saturating_sub(1);
            if *from_ip == 0 {
                open.per_ip.remove(&self.ip);
            }
        }
    }
}

/// A connection past its first frame, on its way to the worker that expects it. The socket is
/// a std one so that the worker registers it with its own runtime.
#[derive(Debug)]
pub(crate) struct Accepted {
    pub(crate) stream: std::net::TcpStream,
    pub(crate) peer: SocketAddr,
    pub(crate) first: Vec<u8>,
    pub(crate) permit: Permit,
}

/// The ICE-TCP listener in front of the workers. Dropping it stops accepting; adopted
/// connections live on in their workers.
#[derive(Debug)]
pub struct TcpFront {
    local_addr: SocketAddr,
    stats: Arc<AcceptStats>,
    task: JoinHandle<()>,
}

impl TcpFront {
    /// Starts accepting on `listener` (on the caller's runtime) for `workers`. It does not
    /// keep them running: once every other [`Handle`] is gone they stop, and connections
    /// find no worker.
    pub fn spawn(listener: TcpListener, workers: &[Handle], limits: TcpLimits) -> io::Result<Self> {
        let local_addr = listener.local_addr()?;
        let workers = workers.iter().map(Handle::downgrade).collect();
        let stats = Arc::new(AcceptStats::default());
        let task = tokio::spawn(accept(listener, workers, limits, Arc::clone(&stats)));
        Ok(TcpFront {
            local_addr,
            stats,
            task,
        })
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// What the listener did so far.
    pub fn counts(&self) -> AcceptCounts {
        self.stats.snapshot()
    }
}

impl Drop for TcpFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept(
    listener: TcpListener,
    workers: Vec<WeakHandle>,
    limits: TcpLimits,
    stats: Arc<AcceptStats>,
) {
    let book = Arc::new(Mutex::new(Book::default()));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                bump(&stats.accept_errors);
                tracing::warn!(%error, "ICE-TCP accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let permit = match admit(&book, peer.ip(), &limits) {
            Ok(permit) => permit,
            Err(Refusal::Total) => {
                bump(&stats.refused_total);
                continue;
            }
            Err(Refusal::PerIp) => {
                bump(&stats.refused_per_ip);
                continue;
            }
        };
        // Media is latency-bound: never hold a small frame back to coalesce it. Both are best
        // effort: a connection works without them.
        let _ = stream.set_nodelay(true);
        let _ = socket2::SockRef::from(&stream).set_send_buffer_size(SEND_BUFFER);
        tokio::spawn(hand_over(
            stream,
            peer,
            permit,
            workers.clone(),
            limits.first_frame_timeout,
            Arc::clone(&stats),
        ));
    }
}

/// Reads the first frame and offers the connection to each worker until one adopts it.
async fn hand_over(
    mut stream: TcpStream,
    peer: SocketAddr,
    permit: Permit,
    workers: Vec<WeakHandle>,
    first_frame_timeout: Duration,
    stats: Arc<AcceptStats>,
) {
    let first = match tokio::time::timeout(first_frame_timeout, read_first(&mut stream)).await {
        Ok(Ok(first)) => first,
        Ok(Err(_)) => return bump(&stats.bad_first_frame),
        Err(_) => return bump(&stats.first_frame_timeout),
    };
    let Ok(stream) = stream.into_std() else {
        return bump(&stats.bad_first_frame);
    };
    let mut connection = Accepted {
        stream,
        peer,
        first,
        permit,
    };
    for worker in &workers {
        match worker.adopt(connection).await {
            Ok(()) => return bump(&stats.adopted),
            Err(refused) => connection = refused,
        }
    }
    bump(&stats.unclaimed);
}

/// One RFC 4571 frame, read byte-exactly so that nothing after it is consumed here.
async fn read_first(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let len = usize::from(stream.read_u16().await?);
    if len == 0 || len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes"),
        ));
    }
    let mut frame = vec![0; len];
    stream.read_exact(&mut frame).await?;
    Ok(frame)
}

fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_type::<u16>()
        .max_frame_length(MAX_FRAME)
        .new_codec()
}

/// Counts of one worker's ICE-TCP connections, part of its
/// [`WorkerStats`](super::WorkerStats).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpStats {
    /// Connections open now.
    pub connections: usize,
    /// Frames received and fed to the core.
    pub frames_in: u64,
    /// Frames queued for sending.
    pub frames_out: u64,
    /// Frames dropped because their connection's queue was full or it had closed.
    pub frames_dropped: u64,
    /// Connections closed because they sent no complete frame for the idle timeout.
    pub closed_idle: u64,
    /// Connections closed because they announced a frame longer than [`MAX_FRAME`].
    pub closed_oversize: u64,
    /// Connections closed because their peer stopped taking data.
    pub closed_stalled: u64,
}

/// Why a connection's task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Closed {
    Peer,
    Idle,
    Oversize,
    Stalled,
}

/// What a connection's tasks tell the run loop.
#[derive(Debug)]
pub(crate) enum Inbound {
    Frame(SocketAddr, BytesMut),
    Closed(SocketAddr, u64, Closed),
}

struct Connection {
    id: u64,
    queue: mpsc::Sender<Bytes>,
    reader: AbortHandle,
    writer: AbortHandle,
    _permit: Permit,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.reader.abort();
        self.writer.abort();
    }
}

/// One worker's ICE-TCP connections, by the peer's address (what the core names as a
/// transmit's destination). Lives on the worker's thread; its tasks run on the worker's
/// runtime.
pub(crate) struct Connections {
    by_peer: HashMap<SocketAddr, Connection>,
    inbound_tx: mpsc::Sender<Inbound>,
    inbound: mpsc::Receiver<Inbound>,
    limits: TcpLimits,
    next_id: u64,
    pub(crate) stats: TcpStats,
}

impl Connections {
    pub(crate) fn new(limits: TcpLimits) -> Self {
        let (inbound_tx, inbound) = mpsc::channel(INBOUND_QUEUE);
        Connections {
            by_peer: HashMap::new(),
            inbound_tx,
            inbound,
            limits,
            next_id: 0,
            stats: TcpStats::default(),
        }
    }

    /// Takes `accepted` onto this worker's runtime; must run on it.
    pub(crate) fn adopt(&mut self, accepted: Accepted) -> io::Result<()> {
        let stream = TcpStream::from_std(accepted.stream)?;
        let (read, write) = stream.into_split();
        let peer = accepted.peer;
        self.next_id += 1;
        let id = self.next_id;
        let (queue, outgoing) = mpsc::channel(self.limits.send_queue.max(1));
        let reader = tokio::spawn(read_frames(
            read,
            peer,
            id,
            self.inbound_tx.clone(),
            self.limits.idle_timeout,
        ))
        .abort_handle();
        let writer = tokio::spawn(write_frames(
            write,
            peer,
            id,
            outgoing,
            self.inbound_tx.clone(),
            self.limits.write_timeout,
        ))
        .abort_handle();
        // A second connection from the same address replaces the first (its tasks end).
        self.by_peer.insert(
            peer,
            Connection {
                id,
                queue,
                reader,
                writer,
                _permit: accepted.permit,
            },
        );
        self.stats.connections = self.by_peer.len();
        Ok(())
    }

    /// The next frame or closed connection; never ends (this holds a sender itself).
    pub(crate) async fn next(&mut self) -> Option<Inbound> {
        self.inbound.recv().await
    }

    /// Forgets connection `id` from `peer`; a later connection from the same address stays.
    pub(crate) fn closed(&mut self, peer: SocketAddr, id: u64, why: Closed) {
        if self.by_peer.get(&peer).is_some_and(|c| c.id == id) {
            self.by_peer.remove(&peer);
            self.stats.connections = self.by_peer.len();
        }
        match why {
            Closed::Peer => {}
            Closed::Idle => self.stats.closed_idle += 1,
            Closed::Oversize => self.stats.closed_oversize += 1,
            Closed::Stalled => self.stats.closed_stalled += 1,
        }
    }

    /// Queues `frame` for `peer`, or drops it when the queue is full or the connection gone.
    pub(crate) fn send(&mut self, peer: SocketAddr, frame: Vec<u8>) {
        let queued = self
            .by_peer
            .get(&peer)
            .is_some_and(|c| c.queue.try_send(Bytes::from(frame)).is_ok());
        if queued {
            self.stats.frames_out += 1;
        } else {
            self.stats.frames_dropped += 1;
        }
    }
}

async fn read_frames(
    read: OwnedReadHalf,
    peer: SocketAddr,
    id: u64,
    inbound: mpsc::Sender<Inbound>,
    idle_timeout: Duration,
) {
    let mut frames = FramedRead::new(read, codec());
    let why = loop {
        match tokio::time::timeout(idle_timeout, frames.next()).await {
            Ok(Some(Ok(frame))) => {
                if inbound.send(Inbound::Frame(peer, frame)).await.is_err() {
                    return;
                }
            }
            Ok(Some(Err(error))) if error.kind() == io::ErrorKind::InvalidData => {
                break Closed::Oversize;
            }
            Ok(Some(Err(_)) | None) => break Closed::Peer,
            Err(_) => break Closed::Idle,
        }
    };
    let _ = inbound.send(Inbound::Closed(peer, id, why)).await;
}

async fn write_frames(
    write: OwnedWriteHalf,
    peer: SocketAddr,
    id: u64,
    mut outgoing: mpsc::Receiver<Bytes>,
    inbound: mpsc::Sender<Inbound>,
    write_timeout: Duration,
) {
    let mut frames = FramedWrite::new(write, codec());
    let why = loop {
        let Some(first) = outgoing.recv().await else {
            return;
        };
        // Everything queued meanwhile goes out in one flush (one syscall for a burst).
        let batch = async {
            frames.feed(first).await?;
            while let Ok(more) = outgoing.try_recv() {
                frames.feed(more).await?;
            }
            SinkExt::<Bytes>::flush(&mut frames).await
        };
        let written: Result<io::Result<()>, _> = tokio::time::timeout(write_timeout, batch).await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(_)) => break Closed::Peer,
            Err(_) => break Closed::Stalled,
        }
    };
    let _ = inbound.send(Inbound::Closed(peer, id, why)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_book_caps_per_ip_and_in_total_and_frees_on_drop() {
        let book = Arc::new(Mutex::new(Book::default()));
        let limits = TcpLimits {
            max_connections: 3,
            max_connections_per_ip: 2,
            ..TcpLimits::default()
        };
        let (a, b) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        let first = admit(&book, a, &limits).expect("first");
        let _second = admit(&book, a, &limits).expect("second");
        assert!(matches!(admit(&book, a, &limits), Err(Refusal::PerIp)));
        let _third = admit(&book, b, &limits).expect("another IP");
        assert!(matches!(admit(&book, b, &limits), Err(Refusal::Total)));
        drop(first);
        assert!(
            admit(&book, a, &limits).is_ok(),
            "a closed connection frees its place"
        );
        assert!(book.lock().expect("book").per_ip.len() <= 2);
    }
}
