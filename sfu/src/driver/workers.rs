//! [`Workers`]: one driver per core, each with its own UDP port, rooms pinned to one of them,
//! and the ICE-TCP listener in front of them all.

use std::io;
use std::net::{IpAddr, SocketAddr};

use tokio::net::{TcpListener, UdpSocket};

use super::tcp::{TcpFront, TcpLimits};
use super::{Driver, Handle, bind_udp};
use crate::core::{Config, RoomId};

/// The worker that hosts `room` among `count` workers: a pure function of the room id, so
/// every caller (and every restart) places a room on the same worker.
pub fn worker_for(room: RoomId, count: usize) -> usize {
    // Room ids are UUIDs; folding both halves keeps v7's random low bits and its timestamp.
    let folded = (room.0 as u64) ^ ((room.0 >> 64) as u64);
    (folded % count.max(1) as u64) as usize
}

/// Where the workers take media and what they announce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen {
    /// The first of the workers' consecutive UDP ports (port 0: an ephemeral port each);
    /// `None` binds and announces no UDP (clients on networks known to block it).
    pub udp: Option<SocketAddr>,
    /// The ICE-TCP listener (port 0: ephemeral); `None` for none.
    pub tcp: Option<SocketAddr>,
    /// The address announced in candidates, with each socket's own port.
    pub announce_ip: IpAddr,
    /// Caps and timeouts of ICE-TCP connections.
    pub tcp_limits: TcpLimits,
}

impl Listen {
    /// UDP only, from `udp`, announcing `announce_ip`.
    pub fn udp(udp: SocketAddr, announce_ip: IpAddr) -> Self {
        Listen {
            udp: Some(udp),
            tcp: None,
            announce_ip,
            tcp_limits: TcpLimits::default(),
        }
    }
}

/// One driver per CPU core, each on its own thread with its own UDP port; a room always lives
/// on the same worker ([`worker_for`]), so one room's participants share one core and one
/// socket. ICE-TCP connections come in on one listener and go to their room's worker.
pub struct Workers {
    workers: Vec<Driver>,
    tcp: Option<TcpFront>,
}

impl Workers {
    /// Binds `count` UDP sockets on `bind_ip` (ephemeral ports) and spawns a driver for each,
    /// announcing `announce_ip` with each socket's port; no TCP. `config` supplies the limits;
    /// its host candidate is replaced per worker.
    pub async fn spawn(
        count: usize,
        bind_ip: IpAddr,
        announce_ip: IpAddr,
        config: Config,
    ) -> io::Result<Workers> {
        Self::bind(
            count,
            Listen::udp(SocketAddr::new(bind_ip, 0), announce_ip),
            config,
        )
        .await
    }

    /// Binds what `listen` names and spawns `count` drivers: worker `i` gets UDP port
    /// `udp.port() + i` (consecutive ports, so a firewall opens one range), or an ephemeral
    /// port each when `udp.port()` is 0; all share the one TCP listener. Each announces
    /// `listen.announce_ip` with its own UDP port and the listener's port; `config` supplies
    /// the limits, and its candidates are replaced per worker.
    ///
    /// # Errors
    /// When a port is taken (the error names it), the range passes 65535, or neither UDP nor
    /// TCP is asked for.
    pub async fn bind(count: usize, listen: Listen, config: Config) -> io::Result<Workers> {
        if listen.udp.is_none() && listen.tcp.is_none() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the SFU needs UDP or TCP",
            ));
        }
        let count = count.max(1);
        let listener = match listen.tcp {
            Some(addr) => Some(TcpListener::bind(addr).await.map_err(|error| {
                io::Error::new(error.kind(), format!("TCP {addr} for ICE-TCP: {error}"))
            })?),
            None => None,
        };
        let tcp_candidate = listener
            .as_ref()
            .map(|l| {
                l.local_addr()
                    .map(|a| SocketAddr::new(listen.announce_ip, a.port()))
            })
            .transpose()?;
        let mut workers = Vec::with_capacity(count);
        for index in 0..count {
            let socket = match listen.udp {
                Some(udp) => Some(bind_worker_udp(udp, index, count)?),
                None => None,
            };
            let port = socket
                .as_ref()
                .map(|s| s.local_addr().map(|a| a.port()))
                .transpose()?
                .unwrap_or(0);
            let mut config = config.clone();
            config.host_candidate = SocketAddr::new(listen.announce_ip, port);
            config.announce_udp = socket.is_some();
            config.tcp_candidate = tcp_candidate;
            workers.push(Driver::spawn_worker(
                index,
                socket,
                config,
                listen.tcp_limits,
            )?);
        }
        let handles: Vec<Handle> = workers.iter().map(|w| w.handle.clone()).collect();
        let tcp = listener
            .map(|l| TcpFront::spawn(l, &handles, listen.tcp_limits))
            .transpose()?;
        Ok(Workers { workers, tcp })
    }

    /// The worker that hosts `room`.
    pub fn index_for(&self, room: RoomId) -> usize {
        worker_for(room, self.workers.len())
    }

    /// The handle of the worker that hosts `room`.
    pub fn handle_for(&self, room: RoomId) -> &Handle {
        &self.workers[self.index_for(room)].handle
    }

    /// The ICE-TCP listener, when TCP is on.
    pub fn tcp(&self) -> Option<&TcpFront> {
        self.tcp.as_ref()
    }

    /// All workers, to take their event streams and tasks (worker `i` at index `i`), and the
    /// ICE-TCP listener; dropping that stops accepting.
    pub fn into_parts(self) -> (Vec<Driver>, Option<TcpFront>) {
        (self.workers, self.tcp)
    }
}

/// Worker `index`'s UDP socket: port `udp.port() + index`, or ephemeral when that is 0.
fn bind_worker_udp(udp: SocketAddr, index: usize, count: usize) -> io::Result<UdpSocket> {
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
    bind_udp(addr).map_err(|error| {
        io::Error::new(
            error.kind(),
            format!("UDP {addr} for SFU worker {index}: {error}"),
        )
    })
}
