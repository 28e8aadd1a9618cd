//! `[http]`: the listener, the public URL, CORS, TLS and the runtime that serves them.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// `[http]`: where and how the HTTP(S) server listens.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Listen address of the HTTP(S) server.
    pub addr: SocketAddr,
    /// Base URL used in join links and signaling URLs; empty = derived from `addr`.
    pub public_url: String,
    /// Origins allowed by CORS; empty = no cross-origin access.
    pub cors_origins: Vec<String>,
    /// Per-request timeout, milliseconds.
    pub request_timeout_ms: u64,
    /// Maximum request body, bytes.
    pub body_limit_bytes: usize,
    /// PEM certificate chain; with `tls_key`, serve HTTPS.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key.
    pub tls_key: Option<PathBuf>,
    /// Threads of the runtime that serves HTTP, WebSockets and the database; 0 = one per core
    /// (each SFU worker has a thread of its own besides).
    pub worker_threads: usize,
    /// How long a connection may take to send a request's headers, milliseconds. It also
    /// ends an idle keep-alive connection: waiting for the next request is reading headers.
    pub header_read_timeout_ms: u64,
    /// Open connections at most (WebSockets included); more are refused at accept. Lowered
    /// at start to fit the file-descriptor limit.
    pub max_connections: usize,
    /// Open connections at most from one client address.
    pub max_connections_per_ip: usize,
}

/// Upper bound of `http.worker_threads`: far above any useful value, low enough to catch a
/// typo before it spawns thousands of threads.
pub const MAX_HTTP_WORKER_THREADS: usize = 256;

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: String::new(),
            cors_origins: Vec::new(),
            request_timeout_ms: 10_000,
            body_limit_bytes: 64 * 1024,
            tls_cert: None,
            tls_key: None,
            worker_threads: 0,
            header_read_timeout_ms: 10_000,
            max_connections: 10_000,
            max_connections_per_ip: 256,
        }
    }
}

impl HttpConfig {
    /// The number of HTTP runtime threads `worker_threads` asks for on a machine with `cores`
    /// cores: the value itself, or for 0 one per core.
    pub fn runtime_threads(&self, cores: usize) -> usize {
        match self.worker_threads {
            0 => cores.max(1),
            n => n,
        }
    }

    /// Whether HTTPS is configured.
    pub fn tls(&self) -> bool {
        self.tls_cert.is_some() && self.tls_key.is_some()
    }

    /// The public base URL without a trailing slash.
    pub fn base_url(&self) -> String {
        if self.public_url.is_empty() {
            let scheme = if self.tls() { "https" } else { "http" };
            format!("{scheme}://{}", self.addr)
        } else {
            self.public_url.trim_end_matches('/').to_owned()
        }
    }

    pub(super) fn check(&self) -> Result<(), ConfigError> {
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(ConfigError::new(
                "http.tls_key",
                "tls_cert and tls_key must be set together",
            ));
        }
        let url = &self.public_url;
        if !(url.is_empty() || url.starts_with("http://") || url.starts_with("https://")) {
            return Err(ConfigError::new(
                "http.public_url",
                "must start with http:// or https://",
            ));
        }
        for origin in &self.cors_origins {
            if axum::http::HeaderValue::from_str(origin).is_err() || !origin.contains("://") {
                return Err(ConfigError::new(
                    "http.cors_origins",
                    format!("not an origin: {origin:?}"),
                ));
            }
        }
        if self.request_timeout_ms == 0 {
            return Err(ConfigError::new("http.request_timeout_ms", "must be > 0"));
        }
        if self.body_limit_bytes < 1024 {
            return Err(ConfigError::new("http.body_limit_bytes", "must be ≥ 1024"));
        }
        if self.header_read_timeout_ms == 0 {
            return Err(ConfigError::new(
                "http.header_read_timeout_ms",
                "must be > 0",
            ));
        }
        if self.max_connections == 0 {
            return Err(ConfigError::new("http.max_connections", "must be > 0"));
        }
        if self.max_connections_per_ip == 0 || self.max_connections_per_ip > self.max_connections {
            return Err(ConfigError::new(
                "http.max_connections_per_ip",
                "must be > 0 and ≤ http.max_connections",
            ));
        }
        if self.worker_threads > MAX_HTTP_WORKER_THREADS {
            return Err(ConfigError::new(
                "http.worker_threads",
                format!("must be ≤ {MAX_HTTP_WORKER_THREADS} (0 = one per core)"),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use figment::Figment;

    use super::*;
    use crate::config::Config;

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's own error type
    fn http_worker_threads_defaults_to_one_per_core_and_is_bounded() {
        let mut http = HttpConfig::default();
        assert_eq!(http.worker_threads, 0);
        assert_eq!(http.runtime_threads(0), 1);
        assert_eq!(http.runtime_threads(2), 2);
        assert_eq!(http.runtime_threads(8), 8);
        http.worker_threads = 3;
        assert_eq!(http.runtime_threads(2), 3, "an explicit value wins");
        figment::Jail::expect_with(|jail| {
            jail.set_env("BEDSIDE_HTTP__WORKER_THREADS", "2");
            let config = Config::load(None, Figment::new()).expect("valid");
            assert_eq!(config.http.worker_threads, 2);
            jail.set_env("BEDSIDE_HTTP__WORKER_THREADS", "100000");
            let err = Config::load(None, Figment::new()).unwrap_err();
            assert_eq!(err.key, "http.worker_threads");
            jail.set_env("BEDSIDE_HTTP__WORKER_THREADS", "-1");
            let err = Config::load(None, Figment::new()).unwrap_err();
            assert_eq!(err.key, "http.worker_threads");
            Ok(())
        });
    }
}
