//! `bedside serve`: logging, the node (`bedside::node`), HTTP(S), and the one shutdown: on
//! SIGINT/SIGTERM signaling drains (no new joins, clients told, departures audited, SFU
//! workers stopped), the HTTP server stops gracefully, the outbox finishes the delivery in
//! flight and the node leaves the cluster — all within `shutdown.drain_seconds` — and the
//! process exits 0.
//!
//! The HTTP listener is bound before the app opens, so that with `http.addr` on port 0 (tests)
//! the signaling URL in start answers names the port actually served. The SFU binds
//! `sfu.workers` UDP sockets on consecutive ports from `sfu.udp` (`--udp`), one per worker,
//! and one ICE-TCP listener on `sfu.tcp` (`--tcp`, default: `sfu.udp`'s address), as
//! `sfu.transports` says.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use api::config::{Config, LogFormat};
use bedside::node::Node;
use signaling::Hub;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing_subscriber::EnvFilter;

fn init_logging(config: &Config) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    let _ = match config.log.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Runs the node until SIGINT/SIGTERM.
pub async fn run(mut config: Config, data_dir: &Path) -> anyhow::Result<()> {
    init_logging(&config);
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    match bedside::http::raise_fd_limit() {
        Ok(limit) => tracing::info!(
            before = limit.before,
            now = limit.now,
            hard = limit.hard,
            "file-descriptor limit (soft) raised to the hard limit"
        ),
        Err(error) => tracing::warn!(%error, "could not raise the file-descriptor limit"),
    }
    let listener = std::net::TcpListener::bind(config.http.addr)
        .with_context(|| format!("binding http.addr {}", config.http.addr))?;
    listener.set_nonblocking(true)?;
    config.http.addr = listener.local_addr()?;
    let node = Node::start(config.clone(), data_dir, signaling::Limits::default())
        .await
        .with_context(|| format!("starting the node on {}", data_dir.display()))?;
    if let Some((tenant_id, key)) = &node.created {
        // Printed, never logged: the one time this key is shown.
        println!(
            "Created the default tenant {tenant_id}.\nIts admin API key (shown once, keep it safe): {}",
            key.expose()
        );
    }
    tracing::info!(
        udp = ?node.udp,
        tcp = ?node.tcp,
        announce_ip = %node.announce_ip,
        "SFU listening"
    );
    let handle = axum_server::Handle::new();
    let (drained_tx, drained_rx) = oneshot::channel();
    tokio::spawn(drain_on_signal(
        node.hub.clone(),
        handle.clone(),
        Duration::from_secs(config.shutdown.drain_seconds),
        drained_tx,
    ));
    let addr = config.http.addr;
    let scheme = if config.http.tls() { "https" } else { "http" };
    let tls = match (&config.http.tls_cert, &config.http.tls_key) {
        (Some(cert), Some(key)) => Some(
            axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
                .await
                .context("loading http.tls_cert / http.tls_key")?,
        ),
        _ => None,
    };
    let listening = announce(handle.clone(), scheme);
    let served = tokio::join!(node.http().serve(listener, tls, handle.clone()), listening).0;
    // The server ends cleanly only through the drain; when it failed instead, the outbox and
    // cluster still get the full bound.
    let bound = Duration::from_secs(config.shutdown.drain_seconds);
    let deadline = match &served {
        Ok(()) => drained_rx.await.unwrap_or_else(|_| Instant::now() + bound),
        Err(_) => Instant::now() + bound,
    };
    if tokio::time::timeout_at(deadline, node.stop())
        .await
        .is_err()
    {
        tracing::warn!("the outbox and cluster did not stop within shutdown.drain_seconds");
    }
    served.with_context(|| format!("serving on {addr}"))
}

/// On SIGINT/SIGTERM: drains signaling (no new joins, every client told, every departure
/// audited, the SFU workers stopped), then stops the HTTP server gracefully, all before one
/// deadline `bound` away, which it hands on through `drained` for the rest of the shutdown.
async fn drain_on_signal(
    hub: Arc<Hub>,
    http: axum_server::Handle,
    bound: Duration,
    drained: oneshot::Sender<Instant>,
) {
    shutdown_signal().await;
    let started = Instant::now();
    let deadline = started + bound;
    tracing::info!(drain_seconds = bound.as_secs(), "shutting down");
    let signaling = hub.shutdown(deadline).await;
    tracing::info!(
        seats = signaling.seats,
        complete = signaling.complete,
        elapsed_ms = started.elapsed().as_millis(),
        "signaling drained"
    );
    http.graceful_shutdown(Some(deadline.saturating_duration_since(Instant::now())));
    let _ = drained.send(deadline);
}

async fn announce(handle: axum_server::Handle, scheme: &str) {
    if let Some(addr) = handle.listening().await {
        tracing::info!("listening on {scheme}://{addr}");
    }
}
