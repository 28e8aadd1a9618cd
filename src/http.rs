//! Serving a node's router over HTTP(S) with the limits a server on the open internet needs:
//! a header-read timeout (which also ends idle keep-alive connections), a cap on open
//! connections in all and per client address — each refusal logged and counted — and the
//! process's file-descriptor limit raised at start, with the cap fitted below it, so that the
//! cap and not a failing `accept` is what turns clients away.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use api::config::HttpConfig;
use axum::Router;
use axum_server::accept::{Accept, DefaultAcceptor};
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use futures::future::BoxFuture;
use hyper_util::rt::TokioTimer;
use prometheus::{IntCounterVec, IntGauge, Opts, Registry};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// File descriptors kept free of HTTP connections: the SFU's sockets, the database, the
/// signing key and other files, the listener itself.
pub const FD_RESERVE: u64 = 256;

/// The soft file-descriptor limit before and after [`raise_fd_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdLimit {
    /// The soft limit the process started with.
    pub before: u64,
    /// The soft limit now (the hard limit, when raising it was allowed).
    pub now: u64,
    /// The hard limit.
    pub hard: u64,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (systemd starts services at 1024, far
/// below what thousands of sockets need).
pub fn raise_fd_limit() -> io::Result<FdLimit> {
    let (before, hard) = rlimit::Resource::NOFILE.get()?;
    let now = rlimit::increase_nofile_limit(hard)?;
    Ok(FdLimit { before, now, hard })
}

/// The HTTP connection cap that fits `configured` below a soft descriptor limit of
/// `fd_limit`, besides [`FD_RESERVE`] and `reserved` descriptors held for others (the SFU's
/// ICE-TCP connections, see [`ice_tcp_cap`]).
pub fn fitted_cap(configured: usize, fd_limit: u64, reserved: usize) -> usize {
    let room = usize::try_from(fd_limit.saturating_sub(FD_RESERVE)).unwrap_or(usize::MAX);
    configured.min(room.saturating_sub(reserved)).max(1)
}

/// The ICE-TCP connection cap that fits `configured` below a soft descriptor limit of
/// `fd_limit`: at most half of what [`FD_RESERVE`] leaves, so HTTP (pages, API, signaling)
/// always keeps the other half.
pub fn ice_tcp_cap(configured: usize, fd_limit: u64) -> usize {
    let room = usize::try_from(fd_limit.saturating_sub(FD_RESERVE)).unwrap_or(usize::MAX);
    configured.min(room / 2).max(1)
}

/// Open HTTP connections and refused ones, for `/metrics`.
#[derive(Debug, Clone)]
pub struct ConnectionMetrics {
    open: IntGauge,
    refused: IntCounterVec,
}

impl ConnectionMetrics {
    /// Registers `bedside_http_connections` and
    /// `bedside_http_connections_refused_total{reason}` in `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let open = IntGauge::new(
            "http_connections",
            "Open HTTP connections, WebSockets included",
        )?;
        let refused = IntCounterVec::new(
            Opts::new(
                "http_connections_refused_total",
                "Connections closed at accept because a cap was reached",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(open.clone()))?;
        registry.register(Box::new(refused.clone()))?;
        Ok(Self { open, refused })
    }
}

/// The open connections, in all and by client address.
#[derive(Debug)]
struct Counts {
    total: usize,
    by_ip: HashMap<IpAddr, usize>,
}

/// The caps, shared by every accepted connection.
#[derive(Debug)]
struct Caps {
    total: usize,
    per_ip: usize,
    counts: Mutex<Counts>,
    metrics: ConnectionMetrics,
}

impl Caps {
    /// A slot for a connection from `ip`, or the cap it would exceed.
    fn acquire(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, &'static str> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if counts.total >= self.total {
            return Err("total");
        }
        let from_ip = counts.by_ip.entry(ip).or_default();
        if *from_ip >= self.per_ip {
            return Err("per_ip");
        }
        *from_ip += 1;
        counts.total += 1;
        self.metrics.open.inc();
        Ok(Slot {
            caps: Arc::clone(self),
            ip,
        })
    }
}

/// One open connection's place under the caps, given back when the connection ends.
#[derive(Debug)]
struct Slot {
    caps: Arc<Caps>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.caps.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.total = counts.total.saturating_sub(1);
        if let Some(from_ip) = counts.by_ip.get_mut(&self.ip) {
            *from_ip -= 1;
            if *from_ip == 0 {
                counts.by_ip.remove(&self.ip);
            }
        }
        self.caps.metrics.open.dec();
    }
}

/// A TCP connection holding its [`Slot`] for as long as it lives (through a WebSocket
/// upgrade too).
#[derive(Debug)]
pub struct Capped {
    stream: TcpStream,
    _slot: Slot,
}

impl AsyncRead for Capped {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Capped {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// An acceptor that takes a slot under the caps before handing the connection to `inner`
/// (plain or TLS); without a slot the connection is closed at once.
#[derive(Debug, Clone)]
struct CappedAcceptor<A> {
    caps: Arc<Caps>,
    inner: A,
}

impl<A, S> Accept<TcpStream, S> for CappedAcceptor<A>
where
    A: Accept<Capped, S> + Clone + Send + Sync + 'static,
    A::Future: Send,
    S: Send + 'static,
{
    type Stream = A::Stream;
    type Service = A::Service;
    type Future = BoxFuture<'static, io::Result<(A::Stream, A::Service)>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        let ip = stream
            .peer_addr()
            .map_or(IpAddr::from([0, 0, 0, 0]), |addr| addr.ip());
        let slot = self.caps.acquire(ip);
        let inner = self.inner.clone();
        let metrics = self.caps.metrics.clone();
        Box::pin(async move {
            match slot {
                Ok(slot) => {
                    inner
                        .accept(
                            Capped {
                                stream,
                                _slot: slot,
                            },
                            service,
                        )
                        .await
                }
                Err(reason) => {
                    metrics.refused.with_label_values(&[reason]).inc();
                    tracing::warn!(reason, "refused a connection: too many open");
                    Err(io::Error::other("connection cap reached"))
                }
            }
        })
    }
}

/// Serves `router` on `listener` until `handle` shuts it down: HTTPS with `tls`, plain HTTP
/// without; headers must arrive within `http.header_read_timeout_ms`; at most `cap`
/// connections in all (see [`fitted_cap`]) and `http.max_connections_per_ip` from one
/// address.
pub async fn serve(
    listener: std::net::TcpListener,
    router: Router,
    http: &HttpConfig,
    cap: usize,
    tls: Option<RustlsConfig>,
    handle: axum_server::Handle,
    metrics: ConnectionMetrics,
) -> io::Result<()> {
    let caps = Arc::new(Caps {
        total: cap,
        per_ip: http.max_connections_per_ip.min(cap),
        counts: Mutex::new(Counts {
            total: 0,
            by_ip: HashMap::new(),
        }),
        metrics,
    });
    let service = router.into_make_service_with_connect_info::<SocketAddr>();
    let mut server = axum_server::from_tcp(listener).handle(handle);
    server
        .http_builder()
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(http.header_read_timeout_ms));
    match tls {
        Some(tls) => {
            let inner = RustlsAcceptor::new(tls);
            let server = server.acceptor(CappedAcceptor { caps, inner });
            server.serve(service).await
        }
        None => {
            let inner = DefaultAcceptor;
            let server = server.acceptor(CappedAcceptor { caps, inner });
            server.serve(service).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(total: usize, per_ip: usize) -> Arc<Caps> {
        let registry = Registry::new();
        Arc::new(Caps {
            total,
            per_ip,
            counts: Mutex::new(Counts {
                total: 0,
                by_ip: HashMap::new(),
            }),
            metrics: ConnectionMetrics::register(&registry).expect("metrics"),
        })
    }

    #[test]
    fn the_caps_count_per_address_and_in_all_and_give_slots_back() {
        let caps = caps(3, 2);
        let a = IpAddr::from([192, 0, 2, 1]);
        let b = IpAddr::from([192, 0, 2, 2]);
        let first = caps.acquire(a).expect("first");
        let _second = caps.acquire(a).expect("second");
        assert_eq!(caps.acquire(a).err(), Some("per_ip"));
        let _third = caps.acquire(b).expect("another address");
        assert_eq!(caps.acquire(b).err(), Some("total"));
        drop(first);
        let _again = caps.acquire(a).expect("a slot given back is free again");
        assert_eq!(caps.metrics.open.get(), 3);
    }

    #[test]
    fn the_caps_fit_below_the_descriptor_limit() {
        assert_eq!(fitted_cap(10_000, 1024, 0), 768);
        assert_eq!(fitted_cap(500, 1_048_576, 0), 500);
        assert_eq!(fitted_cap(500, 100, 0), 1, "never zero");
        // systemd's 1024 with ICE-TCP on: the two share what the reserve leaves.
        let tcp = ice_tcp_cap(4096, 1024);
        assert_eq!(tcp, 384);
        assert_eq!(fitted_cap(10_000, 1024, tcp), 384);
        assert_eq!(ice_tcp_cap(4096, 1_048_576), 4096);
        assert_eq!(fitted_cap(10_000, 1_048_576, 4096), 10_000);
    }

    #[test]
    fn the_soft_descriptor_limit_is_raised_to_the_hard_one() {
        let limit = raise_fd_limit().expect("getrlimit/setrlimit");
        assert!(limit.now >= limit.before);
        assert_eq!(limit.now, limit.hard);
        assert_eq!(
            rlimit::Resource::NOFILE.get().map(|(soft, _)| soft).ok(),
            Some(limit.now)
        );
    }
}
