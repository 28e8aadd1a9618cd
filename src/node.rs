//! One node, wired: the app (`api`), its cluster membership and outbox worker, the SFU workers
//! on `sfu.udp` and the ICE-TCP listener on `sfu.tcp` with the signaling hub over them, and the
//! router that serves the API, `/ws`
//! and the pages. `bedside serve` and the integration tests start nodes only through
//! [`Node::start`], so what the tests run is what the binary runs.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::Arc;

use api::App;
use api::config::Config;
use api::config::SfuTransport;
use api::error::ApiError;
use api::tokens::ApiKeySecret;
use axum::Router;
use axum_server::tls_rustls::RustlsConfig;
use sfu::driver::{Listen, TcpFront, TcpLimits, Workers};
use signaling::Hub;
use signaling::Limits;
use signaling::metrics::{MetricsError, TcpAcceptMetrics};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::http::{self, ConnectionMetrics};

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data directory, keys or database could not be opened.
    #[error(transparent)]
    App(#[from] api::app::StartError),
    /// The first start could not create the default tenant.
    #[error("creating the default tenant: {0}")]
    Bootstrap(#[from] ApiError),
    /// A UDP port or the ICE-TCP listener could not be bound (the error names which).
    #[error("binding the SFU's media sockets (sfu.udp, sfu.tcp): {0}")]
    Bind(#[source] io::Error),
    /// The signaling metrics clashed with others in the registry.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// The connection metrics clashed with others in the registry.
    #[error("registering the HTTP connection metrics: {0}")]
    ConnectionMetrics(#[from] prometheus::Error),
}

/// A running node. Dropping it leaves its tasks running; [`Node::stop`] ends them.
#[derive(Debug)]
pub struct Node {
    /// The app: configuration, store, keys, metrics.
    pub app: Arc<App>,
    /// The rooms of this node.
    pub hub: Arc<Hub>,
    /// The UDP address each SFU worker is bound to, worker `i` at index `i`; empty when
    /// `sfu.transports` leaves UDP out.
    pub udp: Vec<SocketAddr>,
    /// The ICE-TCP listener's address, unless `sfu.transports` leaves TCP out.
    pub tcp: Option<SocketAddr>,
    /// The address announced in ICE candidates.
    pub announce_ip: IpAddr,
    /// The default tenant and its admin API key, when this start created them (the first
    /// start on an empty database): shown once.
    pub created: Option<(String, ApiKeySecret)>,
    connections: ConnectionMetrics,
    /// Descriptors the ICE-TCP connections may take (0 without TCP), kept from HTTP's cap.
    tcp_cap: usize,
    /// Accepting stops when the node is dropped.
    _tcp_front: Option<Arc<TcpFront>>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// A node's HTTP(S) server, ready to serve: its router, the `[http]` section and the
/// connection metrics.
#[derive(Debug)]
pub struct Http {
    router: Router,
    config: api::config::HttpConfig,
    connections: ConnectionMetrics,
    reserved: usize,
}

impl Http {
    /// Serves on `listener` (HTTPS with `tls`) under the `[http]` limits, with the connection
    /// cap fitted below the process's current descriptor limit (less what the ICE-TCP
    /// connections may take), until `handle` shuts the server down.
    pub async fn serve(
        self,
        listener: std::net::TcpListener,
        tls: Option<RustlsConfig>,
        handle: axum_server::Handle,
    ) -> io::Result<()> {
        let fd_limit = rlimit::Resource::NOFILE.get()?.0;
        let cap = http::fitted_cap(self.config.max_connections, fd_limit, self.reserved);
        if cap < self.config.max_connections {
            tracing::warn!(
                configured = self.config.max_connections,
                cap,
                fd_limit,
                "http.max_connections lowered to fit the file-descriptor limit"
            );
        }
        http::serve(
            listener,
            self.router,
            &self.config,
            cap,
            tls,
            handle,
            self.connections,
        )
        .await
    }
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

impl Node {
    /// Opens `data_dir` with `config` (creating the default tenant on the first start), starts
    /// the cluster membership and the outbox worker, binds the SFU workers — `sfu.workers`
    /// sockets (0 = one per core) on consecutive ports from `sfu.udp`, or ephemeral ports
    /// when its port is 0, and the ICE-TCP listener, as `sfu.transports` says — and starts the
    /// hub over them with `limits`.
    pub async fn start(
        config: Config,
        data_dir: &Path,
        limits: Limits,
    ) -> Result<Node, StartError> {
        let app = App::open(config, data_dir).await?;
        let created = app.bootstrap().await?;
        let (stop, stopped) = watch::channel(false);
        let cluster = tokio::spawn(api::cluster::run(
            app.cluster.clone(),
            app.store.clone(),
            app.metrics.clone(),
            app.events.clone(),
            stopped.clone(),
        ));
        let background = tokio::spawn(Arc::clone(&app).run_background(stopped));
        let sfu = &app.config.sfu;
        let count = match sfu.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let announce_ip = sfu.announce_ip.unwrap_or_else(default_announce_ip);
        let mut core = sfu::core::Config::new(SocketAddr::new(announce_ip, 0));
        core.max_participants_per_room = limits.max_participants;
        core.bwe_initial_bps = sfu.bwe_initial_bps();
        let tcp_cap = if sfu.uses(SfuTransport::Tcp) {
            // Unknown limit: nothing to fit below.
            let fd_limit = rlimit::Resource::NOFILE
                .get()
                .map_or(u64::MAX, |(soft, _)| soft);
            let cap = http::ice_tcp_cap(sfu.tcp_max_connections, fd_limit);
            if cap < sfu.tcp_max_connections {
                tracing::warn!(
                    configured = sfu.tcp_max_connections,
                    cap,
                    fd_limit,
                    "sfu.tcp_max_connections lowered to fit the file-descriptor limit"
                );
            }
            cap
        } else {
            0
        };
        let listen = Listen {
            udp: sfu.uses(SfuTransport::Udp).then_some(sfu.udp),
            tcp: sfu.uses(SfuTransport::Tcp).then(|| sfu.tcp_addr()),
            announce_ip,
            tcp_limits: TcpLimits {
                max_connections: tcp_cap.max(1),
                max_connections_per_ip: sfu.tcp_max_connections_per_ip.min(tcp_cap.max(1)),
                ..TcpLimits::default()
            },
        };
        let workers = Workers::bind(count, listen, core)
            .await
            .map_err(StartError::Bind)?;
        let (drivers, tcp_front) = workers.into_parts();
        let udp = drivers
            .iter()
            .filter_map(|d| d.handle.local_addr())
            .collect();
        let tcp_front = tcp_front.map(Arc::new);
        let tcp = tcp_front.as_ref().map(|front| front.local_addr());
        let hub = Hub::start(Arc::clone(&app), drivers, limits)?;
        if let Some(front) = &tcp_front {
            TcpAcceptMetrics::register(app.metrics.registry(), front)?;
        }
        let connections = ConnectionMetrics::register(app.metrics.registry())?;
        Ok(Node {
            app,
            hub,
            udp,
            tcp,
            announce_ip,
            created,
            connections,
            tcp_cap,
            _tcp_front: tcp_front,
            stop,
            tasks: vec![cluster, background],
        })
    }

    /// Everything this node serves over HTTP: the API, `/ws` and the pages.
    pub fn router(&self) -> Router {
        api::http::router(Arc::clone(&self.app))
            .merge(signaling::ws::router(Arc::clone(&self.hub)))
            .merge(crate::web::router())
    }

    /// What serves [`Node::router`] under the `[http]` limits (see [`Http::serve`]).
    pub fn http(&self) -> Http {
        Http {
            router: self.router(),
            config: self.app.config.http.clone(),
            connections: self.connections.clone(),
            reserved: self.tcp_cap,
        }
    }

    /// Stops the node's background tasks the way a crash would: no more heartbeats, no
    /// deregistration, no outbox delivery.
    pub fn abort(&self) {
        for task in &self.tasks {
            task.abort();
        }
    }

    /// Stops the outbox worker (after the delivery pass in flight) and the cluster membership
    /// (deregistering this node, so its rooms are placed elsewhere at once), then closes the
    /// store.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        self.app.store.close().await;
    }
}
