//! The tokio driver: one UDP socket, one timer and a command channel feeding one
//! [`Core`], and [`Workers`] that run one driver per core with every room pinned to one of
//! them.
//!
//! The loop is the crate's run loop: drain the core (send its datagrams, hand out its events),
//! then wait for the first of a datagram, the core's deadline or a command, feed it, repeat.

use std::hash::{BuildHasher, Hash};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::core::{Command, Config, Core, CoreError, Event, RoomId};

/// Room for commands in flight to one worker before senders wait.
const COMMAND_QUEUE: usize = 256;
/// Larger than any datagram a WebRTC peer sends (MTU-sized); longer ones are truncated and
/// then refused by str0m.
const RECEIVE_BUFFER: usize = 2048;
/// How long to sleep when the core has no deadline at all (no participants).
const IDLE: Duration = Duration::from_secs(3600);

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
}

/// A running driver: the handle for commands, the stream of the core's events and the task.
pub struct Driver {
    /// Sends commands.
    pub handle: Handle,
    /// The core's events. Unbounded so that a slow reader never stalls media forwarding; the
    /// reader (signaling) must keep draining it.
    pub events: mpsc::UnboundedReceiver<Event>,
    /// Ends with `Ok` once every [`Handle`] is dropped, or with the socket's fatal error.
    pub task: JoinHandle<io::Result<()>>,
}

impl Driver {
    /// Spawns a driver on the current tokio runtime for `socket`. Datagrams are fed to the core
    /// as received on `config.host_candidate`, the announced address clients send to.
    pub fn spawn(socket: UdpSocket, config: Config) -> io::Result<Driver> {
        let local_addr = socket.local_addr()?;
        let (requests, request_rx) = mpsc::channel(COMMAND_QUEUE);
        let (event_tx, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(Core::new(config), socket, request_rx, event_tx));
        Ok(Driver {
            handle: Handle {
                requests,
                local_addr,
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
) -> io::Result<()> {
    let announced = core.config().host_candidate;
    let mut buf = vec![0; RECEIVE_BUFFER];
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
        let deadline = core
            .poll_timeout()
            .map(tokio::time::Instant::from_std)
            .unwrap_or_else(|| tokio::time::Instant::now() + IDLE);
        tokio::select! {
            received = socket.recv_from(&mut buf) => match received {
                Ok((len, source)) => {
                    let _ = core.handle_datagram(Instant::now(), source, announced, &buf[..len]);
                }
                Err(error) if is_transient(&error) => {}
                Err(error) => return Err(error),
            },
            request = requests.recv() => match request {
                Some(Request { command, reply }) => {
                    let _ = reply.send(core.handle_command(Instant::now(), command));
                }
                None => return Ok(()),
            },
            () = tokio::time::sleep_until(deadline) => core.handle_timeout(Instant::now()),
        }
    }
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

/// One driver per CPU core, each with its own UDP port; a room always lives on the same
/// worker, chosen from a hash of its id, so one room's participants share one core and one
/// socket.
pub struct Workers {
    workers: Vec<Driver>,
    hasher: std::collections::hash_map::RandomState,
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
        let mut workers = Vec::with_capacity(count.max(1));
        for _ in 0..count.max(1) {
            let socket = UdpSocket::bind(SocketAddr::new(bind_ip, 0)).await?;
            let port = socket.local_addr()?.port();
            let mut config = config.clone();
            config.host_candidate = SocketAddr::new(announce_ip, port);
            workers.push(Driver::spawn(socket, config)?);
        }
        Ok(Workers {
            workers,
            hasher: std::collections::hash_map::RandomState::new(),
        })
    }

    /// The worker that hosts `room`.
    pub fn index_for(&self, room: RoomId) -> usize {
        let mut hasher = self.hasher.build_hasher();
        room.hash(&mut hasher);
        (std::hash::Hasher::finish(&hasher) % self.workers.len() as u64) as usize
    }

    /// The handle of the worker that hosts `room`.
    pub fn handle_for(&self, room: RoomId) -> &Handle {
        &self.workers[self.index_for(room)].handle
    }

    /// All workers, to take their event streams and tasks.
    pub fn into_drivers(self) -> Vec<Driver> {
        self.workers
    }
}
