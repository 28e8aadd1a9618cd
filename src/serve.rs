//! `bedside serve`: logging, the app, background workers, the SFU and signaling, HTTP(S) with
//! graceful shutdown.
//!
//! The HTTP listener is bound before the app opens, so that with `http.addr` on port 0 (tests)
//! the signaling URL in start answers names the port actually served. The SFU binds
//! `sfu.workers` UDP sockets on consecutive ports from `sfu.udp` (`--udp`), one per worker.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use api::config::{Config, LogFormat};
use bedside::node::Node;
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
        announce_ip = %node.announce_ip,
        "SFU listening"
    );
    let router = node
        .router()
        .into_make_service_with_connect_info::<SocketAddr>();
    let handle = axum_server::Handle::new();
    let shutdown_handle = handle.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        shutdown_handle.graceful_shutdown(Some(Duration::from_secs(10)));
    });
    let addr = config.http.addr;
    let scheme = if config.http.tls() { "https" } else { "http" };
    let served = match (&config.http.tls_cert, &config.http.tls_key) {
        (Some(cert), Some(key)) => {
            let tls = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
                .await
                .context("loading http.tls_cert / http.tls_key")?;
            let server = axum_server::from_tcp_rustls(listener, tls).handle(handle.clone());
            let listening = announce(handle.clone(), scheme);
            tokio::join!(server.serve(router), listening).0
        }
        _ => {
            let server = axum_server::from_tcp(listener).handle(handle.clone());
            let listening = announce(handle.clone(), scheme);
            tokio::join!(server.serve(router), listening).0
        }
    };
    node.stop().await;
    served.with_context(|| format!("serving on {addr}"))
}

async fn announce(handle: axum_server::Handle, scheme: &str) {
    if let Some(addr) = handle.listening().await {
        tracing::info!("listening on {scheme}://{addr}");
    }
}
