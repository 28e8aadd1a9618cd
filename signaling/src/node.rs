//! Starting the media side of a node from the api's configuration: the SFU workers on
//! `sfu.udp`, the hub, and the router that serves the api and `/ws` together. `bedside serve`
//! and the interop tests share this, so what the tests run is what the binary runs.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;

use api::App;
use axum::Router;
use sfu::driver::Workers;

use crate::hub::Hub;
use crate::metrics::MetricsError;
use crate::session::Limits;

/// Why the media side could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A UDP port could not be bound.
    #[error("binding the SFU's UDP ports from {addr} (sfu.udp)")]
    Bind {
        /// The configured base address.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// The metrics clashed with others in the registry.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
}

/// The running media side of a node.
#[derive(Debug)]
pub struct Media {
    /// The rooms.
    pub hub: Arc<Hub>,
    /// The UDP address each SFU worker is bound to, worker `i` at index `i`.
    pub udp: Vec<SocketAddr>,
    /// The address announced in ICE candidates.
    pub announce_ip: IpAddr,
}

/// The address to announce when `sfu.announce_ip` is unset: the IPv4 address of the interface
/// that routes to the Internet, or 127.0.0.1 when there is none. Connecting a UDP socket sends
/// nothing; it only asks the kernel for a route.
pub fn default_announce_ip() -> IpAddr {
    let routed = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).and_then(|socket| {
        // 192.0.2.1 is TEST-NET-1: never answered, only routed.
        socket.connect((Ipv4Addr::new(192, 0, 2, 1), 9))?;
        socket.local_addr()
    });
    match routed.map(|addr| addr.ip()) {
        Ok(ip) if !ip.is_loopback() && !ip.is_unspecified() => ip,
        _ => IpAddr::V4(Ipv4Addr::LOCALHOST),
    }
}

/// Binds the SFU workers as `app.config.sfu` says — `sfu.workers` sockets (0 = one per core)
/// on consecutive ports from `sfu.udp`, or ephemeral ports when its port is 0 — and starts the
/// hub over them with `limits`.
pub async fn start(app: &Arc<App>, limits: Limits) -> Result<Media, StartError> {
    let sfu = &app.config.sfu;
    let count = match sfu.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let announce_ip = sfu.announce_ip.unwrap_or_else(default_announce_ip);
    let mut config = sfu::core::Config::new(SocketAddr::new(announce_ip, 0));
    config.max_participants_per_room = limits.max_participants;
    let bind_error = |source| StartError::Bind {
        addr: sfu.udp,
        source,
    };
    let workers = Workers::bind(count, sfu.udp, announce_ip, config)
        .await
        .map_err(bind_error)?;
    let drivers = workers.into_drivers();
    let udp = drivers.iter().map(|d| d.handle.local_addr()).collect();
    let hub = Hub::start(Arc::clone(app), drivers, limits)?;
    Ok(Media {
        hub,
        udp,
        announce_ip,
    })
}

/// The api's routes and `/ws` in one router.
pub fn router(app: Arc<App>, hub: Arc<Hub>) -> Router {
    api::http::router(app).merge(crate::ws::router(hub))
}
