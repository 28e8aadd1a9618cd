//! The tokio driver: one UDP socket, one timer and a command channel feeding one
//! [`Core`], and [`Workers`] that run one driver per core with every room pinned to one of
//! them.
//!
//! Each driver runs on its own OS thread (`sfu-worker-N`) with its own current-thread tokio
//! runtime, which owns the socket's readiness and the core's timer. Media therefore never
//! shares threads with the HTTP runtime: that one can be sized for HTTP and the database
//! (`http.worker_threads`) without capping media, and a packet wakes exactly one thread, the
//! one that handles it, instead of a work-stealing pool's cross-thread wakeups.
//!
//! The loop is the crate's run loop: drain the core (send its datagrams, hand out its events),
//! then wait for the first of a datagram, the core's deadline or a command, feed it, repeat.
//!
//! Each worker publishes a [`WorkerStats`] snapshot (the core's [`Stats`] and the time the
//! worker spent busy) a few times a second, for metrics.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::core::{Command, Config, Core, CoreError, Event, RoomId, Stats};

/// Room for commands in flight to one worker before senders wait.
const COMMAND_QUEUE: usize = 256;
/// Larger than any datagram a WebRTC peer sends (MTU-sized); longer ones are truncated and
/// then refused by str0m.
const RECEIVE_BUFFER: usize = 2048;
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

struct Request {
    command: Command,
    reply: oneshot::Sender<Result<(), CoreError>>,
}

/// Sends commands to one running driver. Cheap to clone.
#[derive(Clone)]
pub struct Handle {
    requests: mpsc::Sender<Request>,
    local_addr: SocketAddr,
    stats: watch::Receiver<WorkerStats>,
}

impl Handle {
    /// Applies `command` in the worker and waits for the core's verdict.
    pub async fn command(&self, command: Command) -> Result<(), DriverError> {
        let (reply, verdict) = oneshot::channel();
        self.requests
            .send(Request { command, reply })
            .await
            .map_err(|_| DriverError::Stopped)?;
        Ok(verdict.await.map_err(|_| DriverError::Stopped)??)
    }

    /// The address the worker's socket is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The worker's latest statistics (at most [`STATS_PERIOD`] old while it is busy).
    pub fn stats(&self) -> WorkerStats {
        *self.stats.borrow()
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
    /// [`Driver::spawn_worker`]). Must be called within a tokio runtime, which hosts only the
    /// small task behind [`Driver::task`]. Datagrams are fed to the core as received on
    /// `config.host_candidate`, the announced address clients send to.
    pub fn spawn(socket: UdpSocket, config: Config) -> io::Result<Driver> {
        Self::spawn_worker(0, socket, config)
    }

    /// Starts a driver for `socket` on a new OS thread named `sfu-worker-{index}`, with its
    /// own current-thread runtime (I/O and timers). The socket is moved out of the caller's
    /// runtime (`into_std`) and registered with the worker's, so its readiness is driven by
    /// the worker's thread. Must be called within a tokio runtime (for [`Driver::task`]).
    ///
    /// # Errors
    /// When the socket cannot be moved or the runtime or thread cannot be created.
    pub fn spawn_worker(index: usize, socket: UdpSocket, config: Config) -> io::Result<Driver> {
        let local_addr = socket.local_addr()?;
        let socket = socket.into_std()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()?;
        let socket = {
            // Registers the socket with the worker's reactor, not the caller's.
            let _context = runtime.enter();
            UdpSocket::from_std(socket)?
        };
        let (requests, request_rx) = mpsc::channel(COMMAND_QUEUE);
        let (event_tx, events) = mpsc::unbounded_channel();
        let (stats_tx, stats) = watch::channel(WorkerStats::default());
        let (done_tx, done) = oneshot::channel();
        let core = Core::new(config);
        std::thread::Builder::new()
            .name(format!("sfu-worker-{index}"))
            .spawn(move || {
                let result = runtime.block_on(run(core, socket, request_rx, event_tx, stats_tx));
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

async fn run(
    mut core: Core,
    socket: UdpSocket,
    mut requests: mpsc::Receiver<Request>,
    events: mpsc::UnboundedSender<Event>,
    stats: watch::Sender<WorkerStats>,
) -> io::Result<()> {
    let announced = core.config().host_candidate;
    let mut buf = vec![0; RECEIVE_BUFFER];
    let mut busy = Duration::ZERO;
    let mut published = Instant::now();
    let mut woke = Instant::now();
    loop {
        while let Some(transmit) = core.poll_transmit() {
            // One unreachable peer must not stop the worker; str0m retransmits what matters.
            if let Err(error) = socket
                .send_to(&transmit.contents, transmit.destination)
                .await
            {
                tracing::debug!(%error, destination = %transmit.destination, "send failed");
            }
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
            received = socket.recv_from(&mut buf) => {
                woke = Instant::now();
                match received {
                    Ok((len, source)) => {
                        let _ = core.handle_datagram(woke, source, announced, &buf[..len]);
                    }
                    Err(error) if is_transient(&error) => {}
                    Err(error) => return Err(error),
                }
            }
            request = requests.recv() => {
                woke = Instant::now();
                match request {
                    Some(Request { command, reply }) => {
                        let _ = reply.send(core.handle_command(woke, command));
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

/// The worker that hosts `room` among `count` workers: a pure function of the room id, so
/// every caller (and every restart) places a room on the same worker.
pub fn worker_for(room: RoomId, count: usize) -> usize {
    // Room ids are UUIDs; folding both halves keeps v7's random low bits and its timestamp.
    let folded = (room.0 as u64) ^ ((room.0 >> 64) as u64);
    (folded % count.max(1) as u64) as usize
}

/// One driver per CPU core, each on its own thread with its own UDP port; a room always lives on the same
/// worker ([`worker_for`]), so one room's participants share one core and one socket.
pub struct Workers {
    workers: Vec<Driver>,
}

impl Workers {
    /// Binds `count` sockets on `bind_ip` (ephemeral ports) and spawns a driver for each,
    /// announcing `announce_ip` with each socket's port. `config` supplies the limits; its
    /// host candidate is replaced per worker.
    pub async fn spawn(
        count: usize,
        bind_ip: IpAddr,
        announce_ip: IpAddr,
        config: Config,
    ) -> io::Result<Workers> {
        Self::bind(count, SocketAddr::new(bind_ip, 0), announce_ip, config).await
    }

    /// Binds `count` sockets starting at `udp` and spawns a driver for each: worker `i` gets
    /// port `udp.port() + i` (consecutive ports, so a firewall opens one range), or an
    /// ephemeral port each when `udp.port()` is 0. Each announces `announce_ip` with its own
    /// port; `config` supplies the limits and its host candidate is replaced per worker.
    pub async fn bind(
        count: usize,
        udp: SocketAddr,
        announce_ip: IpAddr,
        config: Config,
    ) -> io::Result<Workers> {
        let count = count.max(1);
        let mut workers = Vec::with_capacity(count);
        for index in 0..count {
            let port = match udp.port() {
                0 => 0,
                base => u16::try_from(usize::from(base) + index).map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("{count} UDP ports from {base} pass 65535"),
                    )
                })?,
            };
            let addr = SocketAddr::new(udp.ip(), port);
            // Named, so the operator learns which port of the range is taken.
            let socket = bind_udp(addr).map_err(|error| {
                io::Error::new(
                    error.kind(),
                    format!("UDP {addr} for SFU worker {index}: {error}"),
                )
            })?;
            let port = socket.local_addr()?.port();
            let mut config = config.clone();
            config.host_candidate = SocketAddr::new(announce_ip, port);
            workers.push(Driver::spawn_worker(index, socket, config)?);
        }
        Ok(Workers { workers })
    }

    /// The worker that hosts `room`.
    pub fn index_for(&self, room: RoomId) -> usize {
        worker_for(room, self.workers.len())
    }

    /// The handle of the worker that hosts `room`.
    pub fn handle_for(&self, room: RoomId) -> &Handle {
        &self.workers[self.index_for(room)].handle
    }

    /// All workers, to take their event streams and tasks; worker `i` is at index `i`.
    pub fn into_drivers(self) -> Vec<Driver> {
        self.workers
    }
}
