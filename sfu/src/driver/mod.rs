//! The tokio driver: one UDP socket, the ICE-TCP connections handed to it, one timer and a
//! command channel feeding one [`Core`]; [`Workers`] that run one driver per core with every
//! room pinned to one of them; and [`TcpFront`], the ICE-TCP listener that hands each
//! connection to the worker whose core expects it (see [`tcp`]).
//!
//! Each driver runs on its own OS thread (`sfu-worker-N`) with its own current-thread tokio
//! runtime, which owns the socket's readiness and the core's timer. Media therefore never
//! shares threads with the HTTP runtime: that one can be sized for HTTP and the database
//! (`http.worker_threads`) without capping media, and a packet wakes exactly one thread, the
//! one that handles it, instead of a work-stealing pool's cross-thread wakeups.
//!
//! The loop is the crate's run loop: drain the core (send its datagrams and frames, hand out
//! its events), then wait for the first of datagrams, a TCP frame, the core's deadline or a
//! command, feed it, repeat.
//!
//! UDP I/O is batched both ways (`driver/udp.rs`): one `recvmmsg` reads a batch of datagrams,
//! all of which are fed to the core before it is drained, so that the drain sends their
//! forwarded copies together, grouped by destination, as UDP GSO messages in one `sendmmsg`.
//!
//! Each worker publishes a [`WorkerStats`] snapshot (the core's [`Stats`], the time the
//! worker spent busy and its sockets' counts) a few times a second, for metrics.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::core::{Command, Config, Core, CoreError, Event, Stats, Transport};

pub mod tcp;
mod udp;
mod workers;

pub use tcp::{AcceptCounts, MAX_FRAME, TcpFront, TcpLimits, TcpStats};
pub use udp::UdpStats;
pub use workers::{Listen, Workers, worker_for};

use tcp::{Accepted, Connections, Inbound};
use udp::UdpIo;

/// Room for commands in flight to one worker before senders wait.
const COMMAND_QUEUE: usize = 256;
/// Kernel buffer asked for on each worker's socket, both ways. One worker takes every packet of
/// its rooms on one socket: at 100 visits of 360p (≈ 20,000 datagrams/s, 14 MB/s) the default
/// 208 KiB holds 15 ms, so any pause of the worker (a burst of sends, a context switch) drops
/// datagrams in the kernel. 4 MiB holds ~300 ms. Linux caps it at `net.core.rmem_max` /
/// `wmem_max` (raise those for more); the request failing is not an error.
pub const SOCKET_BUFFER: usize = 4 * 1024 * 1024;
/// How long to sleep when the core has no deadline at all (no participants).
const IDLE: Duration = Duration::from_secs(3600);
/// How often a worker refreshes its [`WorkerStats`]; publishing per packet would cost a lock
/// per packet on the hot path.
const STATS_PERIOD: Duration = Duration::from_millis(250);

/// What one worker reports about itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerStats {
    /// The core's counts.
    pub core: Stats,
    /// Total time the worker spent handling inputs and draining the core, as opposed to
    /// waiting for the next input.
    pub busy: Duration,
    /// Its ICE-TCP connections.
    pub tcp: TcpStats,
    /// Its UDP socket's system calls and datagrams.
    pub udp: UdpStats,
}

/// Why a command did not take effect.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The worker has stopped.
    #[error("the SFU worker has stopped")]
    Stopped,
    /// The core refused the command.
    #[error(transparent)]
    Core(#[from] CoreError),
}

enum Request {
    Command {
        command: Command,
        reply: oneshot::Sender<Result<(), CoreError>>,
    },
    /// A new ICE-TCP connection, handed back when this worker's core does not expect it.
    Adopt {
        connection: Accepted,
        reply: oneshot::Sender<Result<(), Accepted>>,
    },
}

/// Sends commands to one running driver. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Handle {
    requests: mpsc::Sender<Request>,
    local_addr: Option<SocketAddr>,
    stats: watch::Receiver<WorkerStats>,
}

impl Handle {
    /// Applies `command` in the worker and waits for the core's verdict.
    pub async fn command(&self, command: Command) -> Result<(), DriverError> {
        let (reply, verdict) = oneshot::channel();
        self.requests
            .send(Request::Command { command, reply })
            .await
            .map_err(|_| DriverError::Stopped)?;
        Ok(verdict.await.map_err(|_| DriverError::Stopped)??)
    }

    /// A reference to the worker that does not keep it running: the worker stops once every
    /// [`Handle`] is gone, whoever still holds one of these.
    pub(crate) fn downgrade(&self) -> WeakHandle {
        WeakHandle(self.requests.downgrade())
    }

    /// The address the worker's UDP socket is bound to; `None` when UDP is off.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// The worker's latest statistics (at most [`STATS_PERIOD`] old while it is busy).
    pub fn stats(&self) -> WorkerStats {
        *self.stats.borrow()
    }
}

/// A [`Handle`] that does not keep its worker running, for the ICE-TCP listener.
#[derive(Clone, Debug)]
pub(crate) struct WeakHandle(mpsc::WeakSender<Request>);

impl WeakHandle {
    /// Offers a new ICE-TCP connection; it comes back when the worker does not expect it or
    /// has stopped.
    pub(crate) async fn adopt(&self, connection: Accepted) -> Result<(), Accepted> {
        let Some(requests) = self.0.upgrade() else {
            return Err(connection);
        };
        let (reply, verdict) = oneshot::channel();
        if let Err(mpsc::error::SendError(request)) =
            requests.send(Request::Adopt { connection, reply }).await
        {
            return match request {
                Request::Adopt { connection, .. } => Err(connection),
                Request::Command { .. } => Ok(()),
            };
        }
        // A worker that stopped meanwhile dropped the connection with the request.
        verdict.await.unwrap_or(Ok(()))
    }
}

/// A running driver: the handle for commands, the stream of the core's events and the task.
pub struct Driver {
    /// Sends commands.
    pub handle: Handle,
    /// The core's events. Unbounded so that a slow reader never stalls media forwarding; the
    /// reader (signaling) must keep draining it.
    pub events: mpsc::UnboundedReceiver<Event>,
    /// Ends with `Ok` once every [`Handle`] is dropped, or with the socket's fatal error (or an
    /// error if the worker thread panicked). A task on the caller's runtime that waits for the
    /// worker thread; aborting it does not stop the worker (dropping every handle does).
    pub task: JoinHandle<io::Result<()>>,
}

impl Driver {
    /// Starts a driver for `socket` on a thread of its own named `sfu-worker-0` (see
    /// [`Driver::spawn_worker`]), UDP only. Must be called within a tokio runtime, which hosts
    /// only the small task behind [`Driver::task`]. Datagrams are fed to the core as received
    /// on `config.host_candidate`, the announced address clients send to.
    pub fn spawn(socket: UdpSocket, config: Config) -> io::Result<Driver> {
        Self::spawn_worker(0, Some(socket), config, TcpLimits::default())
    }

    /// Starts a driver on a new OS thread named `sfu-worker-{index}`, with its own
    /// current-thread runtime (I/O and timers), for `socket` (none when UDP is off) and the
    /// ICE-TCP connections a [`TcpFront`] hands it, held to `tcp`. The socket is moved out of
    /// the caller's runtime (`into_std`) and registered with the worker's, so its readiness is
    /// driven by the worker's thread. Must be called within a tokio runtime (for
    /// [`Driver::task`]).
    ///
    /// # Errors
    /// When the socket cannot be moved or set up for batched I/O, or the runtime or thread
    /// cannot be created.
    pub fn spawn_worker(
        index: usize,
        socket: Option<UdpSocket>,
        config: Config,
        tcp: TcpLimits,
    ) -> io::Result<Driver> {
        let local_addr = socket.as_ref().map(UdpSocket::local_addr).transpose()?;
        let socket = socket.map(UdpSocket::into_std).transpose()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()?;
        let socket = {
            // Registers the socket with the worker's reactor, not the caller's.
            let _context = runtime.enter();
            socket
                .map(|socket| UdpIo::new(UdpSocket::from_std(socket)?))
                .transpose()?
        };
        let (requests, request_rx) = mpsc::channel(COMMAND_QUEUE);
        let (event_tx, events) = mpsc::unbounded_channel();
        let (stats_tx, stats) = watch::channel(WorkerStats::default());
        let (done_tx, done) = oneshot::channel();
        let core = Core::new(config);
        std::thread::Builder::new()
            .name(format!("sfu-worker-{index}"))
            .spawn(move || {
                let io = Io {
                    udp: socket,
                    tcp: Connections::new(tcp),
                };
                let result = runtime.block_on(run(core, io, request_rx, event_tx, stats_tx));
                // Nobody waiting for the result is fine.
                let _ = done_tx.send(result);
            })?;
        let task = tokio::spawn(async move {
            done.await
                .unwrap_or_else(|_| Err(io::Error::other("the SFU worker thread panicked")))
        });
        Ok(Driver {
            handle: Handle {
                requests,
                local_addr,
                stats,
            },
            events,
            task,
        })
    }
}

/// A worker's sockets: its UDP socket unless UDP is off, and its ICE-TCP connections.
struct Io {
    udp: Option<UdpIo>,
    tcp: Connections,
}

async fn run(
    mut core: Core,
    mut io: Io,
    mut requests: mpsc::Receiver<Request>,
    events: mpsc::UnboundedSender<Event>,
    stats: watch::Sender<WorkerStats>,
) -> io::Result<()> {
    let announced = core.config().host_candidate;
    let announced_tcp = core.config().tcp_candidate.unwrap_or(announced);
    let mut busy = Duration::ZERO;
    let mut published = Instant::now();
    let mut woke = Instant::now();
    loop {
        while let Some(transmit) = core.poll_transmit() {
            match (transmit.transport, &mut io.udp) {
                (Transport::Udp, Some(udp)) => udp.push(transmit),
                (Transport::Udp, None) => {}
                (Transport::Tcp, _) => io.tcp.send(transmit.destination, transmit.contents),
            }
        }
        if let Some(udp) = &mut io.udp {
            udp.flush().await?;
        }
        while let Some(event) = core.poll_event() {
            // Nobody listening is not an error for media: keep forwarding.
            let _ = events.send(event);
        }
        let now = Instant::now();
        busy += now.saturating_duration_since(woke);
        if now.saturating_duration_since(published) >= STATS_PERIOD {
            published = now;
            stats.send_replace(WorkerStats {
                core: core.stats(),
                busy,
                tcp: io.tcp.stats,
                udp: io.udp.as_ref().map(|udp| udp.stats).unwrap_or_default(),
            });
        }
        let mut deadline = core
            .poll_timeout()
            .map(tokio::time::Instant::from_std)
            .unwrap_or_else(|| tokio::time::Instant::now() + IDLE);
        // Whatever this input changed (the last participant leaving an idle worker, say) is
        // published when the period ends, not at the next datagram: one wake at most, since
        // that wake publishes and then nothing is left unpublished.
        if published != now {
            deadline = deadline.min(tokio::time::Instant::from_std(published + STATS_PERIOD));
        }
        // Each arm notes when the input arrived, so busy time counts handling and draining
        // but not waiting.
        tokio::select! {
            ready = readable(io.udp.as_ref()) => {
                woke = Instant::now();
                ready?;
                if let Some(udp) = &mut io.udp {
                    // One batch per turn: its forwarded copies leave together in the drain,
                    // and the other inputs are not starved under load.
                    match udp.try_recv() {
                        Ok(_) => {
                            for (source, datagram) in udp.datagrams() {
                                let _ = core.handle_datagram(woke, source, announced, datagram);
                            }
                        }
                        Err(error) if is_transient(&error) => {}
                        Err(error) => return Err(error),
                    }
                }
            }
            Some(inbound) = io.tcp.next() => {
                woke = Instant::now();
                match inbound {
                    Inbound::Frame(peer, frame) => {
                        io.tcp.stats.frames_in += 1;
                        let _ = core.handle_packet(woke, Transport::Tcp, peer, announced_tcp, &frame);
                    }
                    Inbound::Closed(peer, id, why) => io.tcp.closed(peer, id, why),
                }
            }
            request = requests.recv() => {
                woke = Instant::now();
                match request {
                    Some(Request::Command { command, reply }) => {
                        let _ = reply.send(core.handle_command(woke, command));
                    }
                    Some(Request::Adopt { connection, reply }) => {
                        let verdict = adopt(&mut core, &mut io.tcp, woke, announced_tcp, connection);
                        let _ = reply.send(verdict);
                    }
                    None => return Ok(()),
                }
            }
            () = tokio::time::sleep_until(deadline) => {
                woke = Instant::now();
                core.handle_timeout(woke);
            }
        }
    }
}

/// Takes a new ICE-TCP connection when `core` expects its first frame, and feeds that frame;
/// hands it back otherwise.
fn adopt(
    core: &mut Core,
    tcp: &mut Connections,
    now: Instant,
    announced_tcp: SocketAddr,
    mut connection: Accepted,
) -> Result<(), Accepted> {
    if !core.expects(&connection.first) {
        return Err(connection);
    }
    let (peer, first) = (connection.peer, std::mem::take(&mut connection.first));
    match tcp.adopt(connection) {
        Ok(()) => {
            let _ = core.handle_packet(now, Transport::Tcp, peer, announced_tcp, &first);
        }
        Err(error) => tracing::debug!(%error, "ICE-TCP connection lost on hand-over"),
    }
    Ok(())
}

/// Once `udp` has datagrams to read; never, when UDP is off.
async fn readable(udp: Option<&UdpIo>) -> io::Result<()> {
    match udp {
        Some(udp) => udp.readable().await,
        None => std::future::pending().await,
    }
}

/// A non-blocking UDP socket bound to `addr`, with [`SOCKET_BUFFER`] asked for both ways,
/// registered with the current runtime ([`Driver::spawn`] moves it to the worker's).
///
/// # Errors
/// When the socket cannot be created or bound.
pub fn bind_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    // Best effort: a smaller buffer than asked for still works, just drops sooner.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

/// ICMP errors from earlier sends surface on Linux as receive errors on the socket; they
/// concern one peer, not the socket.
fn is_transient(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}
