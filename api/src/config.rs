//! Configuration: `bedside.toml` plus `BEDSIDE_<SECTION>__<KEY>` environment overrides.
//! Every key, its default and meaning is listed in docs/config.md; keep the two in step.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// A configuration problem, naming the key at fault.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {key}: {message}")]
pub struct ConfigError {
    /// Dotted key (`http.addr`), or the file when the file itself is unreadable.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    fn new(key: &str, message: impl Into<String>) -> Self {
        Self {
            key: key.to_owned(),
            message: message.into(),
        }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// HTTP listener, public URL, CORS, TLS.
    pub http: HttpConfig,
    /// Media ports and addresses of the SFU.
    pub sfu: SfuConfig,
    /// Database selection and pool size.
    pub database: DatabaseConfig,
    /// Session grants and link codes.
    pub tokens: TokensConfig,
    /// PHI encryption keys.
    pub crypto: CryptoConfig,
    /// Join window and visit quotas.
    pub visits: VisitsConfig,
    /// Rate limits.
    pub limits: LimitsConfig,
    /// Notification transports.
    pub notify: NotifyConfig,
    /// Media backend selection.
    pub media: MediaConfig,
    /// TURN servers handed to browsers.
    pub turn: TurnConfig,
    /// Log format and level.
    pub log: LogConfig,
    /// AWS region, endpoint, timeouts and retries shared by every AWS client.
    pub aws: AwsConfig,
    /// Amazon Chime SDK meetings.
    pub chime: ChimeConfig,
    /// SMTP relay of `notify.email = "smtp"`.
    pub smtp: SmtpConfig,
    /// This node among several sharing one PostgreSQL.
    pub cluster: ClusterConfig,
}

/// `[cluster]`: node registration and room placement (PostgreSQL; one SQLite node has no
/// peers).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// This node's id; empty = generated on first start and kept in `<data-dir>/node-id`.
    pub node_id: String,
    /// How often the node renews its registration.
    pub heartbeat_ms: u64,
    /// A node whose last heartbeat is older than this is dead: it gets no new rooms and its
    /// placements are dropped.
    pub node_timeout_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            node_id: String::new(),
            heartbeat_ms: 2_000,
            node_timeout_ms: 10_000,
        }
    }
}

/// A secret configuration value (a password). `Debug` and `Serialize` never show it, so
/// `bedside config check` and logs print `<redacted>`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret text, for handing to the client that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("<redacted>")
    }
}

/// `[http]`
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
}

/// Upper bound of `http.worker_threads`: far above any useful value, low enough to catch a
/// typo before it spawns thousands of threads.
pub const MAX_HTTP_WORKER_THREADS: usize = 256;

impl HttpConfig {
    /// The number of HTTP runtime threads `worker_threads` asks for on a machine with `cores`
    /// cores: the value itself, or for 0 one per core.
    pub fn runtime_threads(&self, cores: usize) -> usize {
        match self.worker_threads {
            0 => cores.max(1),
            n => n,
        }
    }
}

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
        }
    }
}

impl HttpConfig {
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
}

/// `[sfu]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SfuConfig {
    /// UDP address for media.
    pub udp: SocketAddr,
    /// Address announced in ICE candidates; unset = first non-loopback IPv4 or 127.0.0.1.
    pub announce_ip: Option<IpAddr>,
    /// Media workers; 0 = one per core.
    pub workers: usize,
}

impl Default for SfuConfig {
    fn default() -> Self {
        Self {
            udp: SocketAddr::from(([0, 0, 0, 0], 50000)),
            announce_ip: None,
            workers: 0,
        }
    }
}

/// `[database]`. `Debug` and `Serialize` hide the URLs' passwords.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://…` or `postgres://…`; empty = `sqlite://<data-dir>/bedside.db`.
    #[serde(serialize_with = "serialize_without_password")]
    pub url: String,
    /// PostgreSQL only: the URL of the tables' owner, used to apply migrations at start. The
    /// role of `url` must not own the tables (row-level security does not bind owners); when
    /// empty, migrations run through `url` (only for a role that owns nothing yet, e.g. tests).
    #[serde(serialize_with = "serialize_without_password")]
    pub migrate_url: String,
    /// Connections in the pool (SQLite: readers; it always has one writer).
    pub max_connections: u32,
}

impl std::fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &without_password(&self.url))
            .field("migrate_url", &without_password(&self.migrate_url))
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

/// `url` with the password of its user info (`scheme://user:password@host…`) replaced by
/// `<redacted>`.
pub fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    match rest[..at].split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:<redacted>{}", &rest[at..]),
        None => url.to_owned(),
    }
}

fn serialize_without_password<S: serde::Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&without_password(url))
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            migrate_url: String::new(),
            max_connections: 8,
        }
    }
}

/// Which signer makes session grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignerKind {
    /// A P-256 key in `<data-dir>/signing-key.p8`.
    Local,
    /// An AWS KMS key (ECC_NIST_P256, SIGN_VERIFY) named by `tokens.kms_key_id`.
    Kms,
}

/// `[tokens]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokensConfig {
    /// Grant signer.
    pub signer: SignerKind,
    /// `iss` claim of grants.
    pub issuer: String,
    /// Lifetime of a session grant, seconds.
    pub grant_ttl_seconds: u64,
    /// Length of link codes (base62 characters, at least 12).
    pub link_code_length: usize,
    /// KMS key id, ARN or alias of `signer = "kms"`.
    pub kms_key_id: Option<String>,
    /// Further KMS signing keys whose grants are accepted (a previous key during rotation).
    pub kms_trusted_key_ids: Vec<String>,
}

impl Default for TokensConfig {
    fn default() -> Self {
        Self {
            signer: SignerKind::Local,
            issuer: "bedside".to_owned(),
            grant_ttl_seconds: 600,
            link_code_length: 16,
            kms_key_id: None,
            kms_trusted_key_ids: Vec::new(),
        }
    }
}

/// Which key provider wraps tenant data keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyProviderKind {
    /// A 256-bit master key in `<data-dir>/master.key`.
    Local,
    /// AWS KMS GenerateDataKey/Decrypt under `crypto.kms_key_id`.
    Kms,
}

/// `[crypto]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CryptoConfig {
    /// Key provider for PHI envelope encryption.
    pub key_provider: KeyProviderKind,
    /// KMS key id, ARN or alias of `key_provider = "kms"` (a symmetric ENCRYPT_DECRYPT key).
    pub kms_key_id: Option<String>,
    /// How long an unwrapped tenant data key stays in memory, seconds.
    pub data_key_cache_seconds: u64,
}

impl Default for CryptoConfig {
    fn default() -> Self {
        Self {
            key_provider: KeyProviderKind::Local,
            kms_key_id: None,
            data_key_cache_seconds: 300,
        }
    }
}

/// `[visits]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VisitsConfig {
    /// Links open this many minutes before `scheduled_at`.
    pub join_before_minutes: i64,
    /// Links stay usable this many minutes after the scheduled end.
    pub join_after_minutes: i64,
    /// Visits a tenant may create per UTC day.
    pub daily_quota: u32,
    /// Patient link resends allowed per visit per hour.
    pub resends_per_hour: u32,
}

impl Default for VisitsConfig {
    fn default() -> Self {
        Self {
            join_before_minutes: 15,
            join_after_minutes: 15,
            daily_quota: 2000,
            resends_per_hour: 3,
        }
    }
}

/// `[limits]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Redeem and start calls per client IP per minute.
    pub link_per_ip_per_minute: u32,
    /// Burst allowance for link calls per client IP.
    pub link_burst: u32,
    /// Writes (POST/PATCH) per API key per minute.
    pub writes_per_key_per_minute: u32,
    /// Burst allowance for writes per API key.
    pub writes_burst: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            link_per_ip_per_minute: 60,
            link_burst: 20,
            writes_per_key_per_minute: 600,
            writes_burst: 100,
        }
    }
}

/// Email transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmailTransport {
    /// Store in the outbox and log a redacted line; nothing leaves the machine.
    Log,
    /// Amazon SES v2 SendEmail.
    Ses,
    /// An SMTP relay (`[smtp]`).
    Smtp,
}

/// SMS transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmsTransport {
    /// Store in the outbox and log a redacted line; nothing leaves the machine.
    Log,
    /// Amazon SNS Publish to a phone number.
    Sns,
}

/// `[notify]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// Email transport.
    pub email: EmailTransport,
    /// SMS transport.
    pub sms: SmsTransport,
    /// Sender address of emails.
    pub email_from: String,
    /// Delivery attempts before a notification is `failed`.
    pub max_attempts: u32,
    /// SES configuration set named in every SendEmail (event publishing, dedicated IPs).
    pub ses_configuration_set: Option<String>,
    /// Consecutive provider failures of one transport that open its circuit breaker.
    pub breaker_threshold: u32,
    /// How long an open breaker holds deliveries back before one trial send, seconds.
    pub breaker_cooldown_seconds: u64,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            email: EmailTransport::Log,
            sms: SmsTransport::Log,
            email_from: "no-reply@bedside.invalid".to_owned(),
            max_attempts: 5,
            ses_configuration_set: None,
            breaker_threshold: 5,
            breaker_cooldown_seconds: 60,
        }
    }
}

/// Media backend of a visit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum MediaBackend {
    /// Bedside's own SFU.
    #[default]
    Sfu,
    /// Amazon Chime SDK.
    Chime,
}

impl MediaBackend {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sfu => "sfu",
            Self::Chime => "chime",
        }
    }
}

/// `[media]`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaConfig {
    /// Default backend of new visits (a visit's `media_backend` overrides it).
    pub backend: MediaBackend,
}

/// `[aws]`: settings every AWS client shares. Credentials come from the standard chain
/// (environment, profile, web identity, container or instance role).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AwsConfig {
    /// Region of KMS, SES, SNS and the Chime control plane; unset = the standard chain.
    pub region: Option<String>,
    /// One endpoint for every AWS client (an emulator); unset = the real service.
    pub endpoint_url: Option<String>,
    /// TCP/TLS connect timeout, milliseconds.
    pub connect_timeout_ms: u64,
    /// Timeout of one attempt of one call, milliseconds.
    pub attempt_timeout_ms: u64,
    /// Timeout of one call including its retries, milliseconds.
    pub operation_timeout_ms: u64,
    /// Attempts per call (1 = no retry), with exponential backoff and jitter between them.
    pub max_attempts: u32,
}

impl Default for AwsConfig {
    fn default() -> Self {
        Self {
            region: None,
            endpoint_url: None,
            connect_timeout_ms: 2_000,
            attempt_timeout_ms: 3_000,
            operation_timeout_ms: 8_000,
            max_attempts: 3,
        }
    }
}

/// `[chime]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChimeConfig {
    /// Whether visits may use Chime when the node default is `sfu` (implied by
    /// `media.backend = "chime"`).
    pub enabled: bool,
    /// MediaRegion of new meetings.
    pub media_region: String,
    /// Endpoint of the Chime SDK Meetings API only, overriding `aws.endpoint_url` (tests).
    pub endpoint_url: Option<String>,
}

impl Default for ChimeConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            media_region: "us-east-1".to_owned(),
            endpoint_url: None,
        }
    }
}

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS, which must succeed (port 587).
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption: only for a relay on the same host or a trusted private network.
    None,
}

/// `[smtp]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpConfig {
    /// Relay host name (also the TLS server name).
    pub host: String,
    /// Relay port.
    pub port: u16,
    /// Transport security.
    pub tls: SmtpTls,
    /// Login user; unset = no authentication.
    pub username: Option<String>,
    /// Login password.
    pub password: Option<Secret>,
    /// Timeout of one SMTP command, milliseconds.
    pub timeout_ms: u64,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        Self {
            host: String::new(),
            port: 587,
            tls: SmtpTls::Starttls,
            username: None,
            password: None,
            timeout_ms: 10_000,
        }
    }
}

/// `[turn]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TurnConfig {
    /// TURN URLs handed to browsers (`turn:host:3478?transport=udp`).
    pub urls: Vec<String>,
    /// Shared secret for TURN REST credentials.
    pub shared_secret: Option<String>,
    /// Lifetime of TURN credentials, seconds.
    pub ttl_seconds: u64,
}

impl Default for TurnConfig {
    fn default() -> Self {
        Self {
            urls: Vec::new(),
            shared_secret: None,
            ttl_seconds: 3600,
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable lines.
    Pretty,
}

/// `[log]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Output format.
    pub format: LogFormat,
    /// `tracing` filter directive (`info`, `bedside=debug,info`).
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Json,
            level: "info".to_owned(),
        }
    }
}

impl Config {
    /// Loads defaults, then `file` (when given, or `bedside.toml` in the working directory
    /// when present), then `BEDSIDE_<SECTION>__<KEY>` variables, then validates.
    pub fn load(file: Option<&Path>, overrides: Figment) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        match file {
            Some(path) => {
                if !path.is_file() {
                    return Err(ConfigError::new(
                        &path.display().to_string(),
                        "configuration file not found",
                    ));
                }
                figment = figment.merge(Toml::file_exact(path));
            }
            None if Path::new("bedside.toml").is_file() => {
                figment = figment.merge(Toml::file_exact("bedside.toml"));
            }
            None => {}
        }
        let env = Env::prefixed("BEDSIDE_")
            .filter(|key| key.as_str().contains("__"))
            .split("__");
        let config: Config = figment
            .merge(env)
            .merge(overrides)
            .extract()
            .map_err(|err| {
                let key = err.path.join(".");
                let key = if key.is_empty() {
                    "(root)".to_owned()
                } else {
                    key
                };
                ConfigError::new(&key, err.kind.to_string())
            })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks ranges and combinations serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.http.tls_cert.is_some() != self.http.tls_key.is_some() {
            return Err(ConfigError::new(
                "http.tls_key",
                "tls_cert and tls_key must be set together",
            ));
        }
        let url = &self.http.public_url;
        if !(url.is_empty() || url.starts_with("http://") || url.starts_with("https://")) {
            return Err(ConfigError::new(
                "http.public_url",
                "must start with http:// or https://",
            ));
        }
        for origin in &self.http.cors_origins {
            if axum::http::HeaderValue::from_str(origin).is_err() || !origin.contains("://") {
                return Err(ConfigError::new(
                    "http.cors_origins",
                    format!("not an origin: {origin:?}"),
                ));
            }
        }
        if self.http.request_timeout_ms == 0 {
            return Err(ConfigError::new("http.request_timeout_ms", "must be > 0"));
        }
        if self.http.body_limit_bytes < 1024 {
            return Err(ConfigError::new("http.body_limit_bytes", "must be ≥ 1024"));
        }
        if self.http.worker_threads > MAX_HTTP_WORKER_THREADS {
            return Err(ConfigError::new(
                "http.worker_threads",
                format!("must be ≤ {MAX_HTTP_WORKER_THREADS} (0 = one per core)"),
            ));
        }
        let postgres = |url: &str| url.starts_with("postgres:") || url.starts_with("postgresql:");
        let url = &self.database.url;
        if !url.is_empty() && !url.starts_with("sqlite:") && !postgres(url) {
            return Err(ConfigError::new(
                "database.url",
                "must be a sqlite:// or postgres:// URL",
            ));
        }
        // Every connection of the store is its own: an in-memory database would be a
        // different, empty one on each.
        if url.starts_with("sqlite:") && (url.contains(":memory:") || url.contains("mode=memory")) {
            return Err(ConfigError::new(
                "database.url",
                "an in-memory SQLite database is not supported: name a file (sqlite://path/bedside.db)",
            ));
        }
        let migrate_url = &self.database.migrate_url;
        let migrate_ok = migrate_url.is_empty() || (postgres(url) && postgres(migrate_url));
        if !migrate_ok {
            return Err(ConfigError::new(
                "database.migrate_url",
                "is for PostgreSQL: a postgres:// URL, with database.url a postgres:// URL too",
            ));
        }
        if self.cluster.heartbeat_ms < 100 {
            return Err(ConfigError::new("cluster.heartbeat_ms", "must be ≥ 100"));
        }
        if self.cluster.node_timeout_ms < 2 * self.cluster.heartbeat_ms {
            return Err(ConfigError::new(
                "cluster.node_timeout_ms",
                "must be at least twice cluster.heartbeat_ms",
            ));
        }
        let id = &self.cluster.node_id;
        if id.len() > 64
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(ConfigError::new(
                "cluster.node_id",
                "at most 64 characters of A-Z, a-z, 0-9, '-', '_', '.'",
            ));
        }
        if self.database.max_connections == 0 {
            return Err(ConfigError::new("database.max_connections", "must be > 0"));
        }
        if !(30..=86_400).contains(&self.tokens.grant_ttl_seconds) {
            return Err(ConfigError::new(
                "tokens.grant_ttl_seconds",
                "must be between 30 and 86400",
            ));
        }
        if !(12..=64).contains(&self.tokens.link_code_length) {
            return Err(ConfigError::new(
                "tokens.link_code_length",
                "must be between 12 and 64",
            ));
        }
        if !(0..=1440).contains(&self.visits.join_before_minutes) {
            return Err(ConfigError::new(
                "visits.join_before_minutes",
                "must be between 0 and 1440",
            ));
        }
        if !(0..=1440).contains(&self.visits.join_after_minutes) {
            return Err(ConfigError::new(
                "visits.join_after_minutes",
                "must be between 0 and 1440",
            ));
        }
        for (key, value) in [
            (
                "limits.link_per_ip_per_minute",
                self.limits.link_per_ip_per_minute,
            ),
            ("limits.link_burst", self.limits.link_burst),
            (
                "limits.writes_per_key_per_minute",
                self.limits.writes_per_key_per_minute,
            ),
            ("limits.writes_burst", self.limits.writes_burst),
            ("notify.max_attempts", self.notify.max_attempts),
        ] {
            if value == 0 {
                return Err(ConfigError::new(key, "must be > 0"));
            }
        }
        self.validate_adapters()?;
        if self.log.level.parse::<tracing::Level>().is_err() && !self.log.level.contains('=') {
            return Err(ConfigError::new("log.level", "not a tracing filter"));
        }
        Ok(())
    }

    fn validate_adapters(&self) -> Result<(), ConfigError> {
        let blank = |value: &Option<String>| value.as_deref().is_none_or(|v| v.trim().is_empty());
        if self.tokens.signer == SignerKind::Kms && blank(&self.tokens.kms_key_id) {
            return Err(ConfigError::new(
                "tokens.kms_key_id",
                "required when tokens.signer = \"kms\"",
            ));
        }
        if self.crypto.key_provider == KeyProviderKind::Kms && blank(&self.crypto.kms_key_id) {
            return Err(ConfigError::new(
                "crypto.kms_key_id",
                "required when crypto.key_provider = \"kms\"",
            ));
        }
        if !(1..=86_400).contains(&self.crypto.data_key_cache_seconds) {
            return Err(ConfigError::new(
                "crypto.data_key_cache_seconds",
                "must be between 1 and 86400",
            ));
        }
        if self.notify.email == EmailTransport::Smtp && self.smtp.host.trim().is_empty() {
            return Err(ConfigError::new(
                "smtp.host",
                "required when notify.email = \"smtp\"",
            ));
        }
        if self.smtp.password.is_some() && self.smtp.username.is_none() {
            return Err(ConfigError::new(
                "smtp.username",
                "required when smtp.password is set",
            ));
        }
        for (key, value) in [
            (
                "notify.breaker_threshold",
                u64::from(self.notify.breaker_threshold),
            ),
            (
                "notify.breaker_cooldown_seconds",
                self.notify.breaker_cooldown_seconds,
            ),
            ("aws.connect_timeout_ms", self.aws.connect_timeout_ms),
            ("aws.attempt_timeout_ms", self.aws.attempt_timeout_ms),
            ("aws.operation_timeout_ms", self.aws.operation_timeout_ms),
            ("smtp.timeout_ms", self.smtp.timeout_ms),
        ] {
            if value == 0 {
                return Err(ConfigError::new(key, "must be > 0"));
            }
        }
        if !(1..=10).contains(&self.aws.max_attempts) {
            return Err(ConfigError::new(
                "aws.max_attempts",
                "must be between 1 and 10",
            ));
        }
        for (key, url) in [
            ("aws.endpoint_url", &self.aws.endpoint_url),
            ("chime.endpoint_url", &self.chime.endpoint_url),
        ] {
            if let Some(url) = url
                && !(url.starts_with("http://") || url.starts_with("https://"))
            {
                return Err(ConfigError::new(key, "must start with http:// or https://"));
            }
        }
        if self.chime_enabled() && self.chime.media_region.trim().is_empty() {
            return Err(ConfigError::new(
                "chime.media_region",
                "required when Chime is enabled",
            ));
        }
        Ok(())
    }

    /// Whether visits may use the Chime backend on this node.
    pub fn chime_enabled(&self) -> bool {
        self.chime.enabled || self.media.backend == MediaBackend::Chime
    }

    /// Whether any AWS client is configured, so the SDK configuration (region and
    /// credential chain) is resolved only by nodes that use AWS.
    pub fn uses_aws(&self) -> bool {
        self.tokens.signer == SignerKind::Kms
            || self.crypto.key_provider == KeyProviderKind::Kms
            || self.notify.email == EmailTransport::Ses
            || self.notify.sms == SmsTransport::Sns
            || self.chime_enabled()
            || !self.tokens.kms_trusted_key_ids.is_empty()
    }

    /// The database URL, defaulting to SQLite under `data_dir`.
    pub fn database_url(&self, data_dir: &Path) -> String {
        if self.database.url.is_empty() {
            format!("sqlite://{}", data_dir.join("bedside.db").display())
        } else {
            self.database.url.clone()
        }
    }

    /// The `ws(s)://…/ws` URL browsers use to reach this node's signaling.
    pub fn signaling_url(&self) -> String {
        let base = self.http.base_url();
        let ws = base
            .strip_prefix("https://")
            .map(|rest| format!("wss://{rest}"))
            .or_else(|| {
                base.strip_prefix("http://")
                    .map(|rest| format!("ws://{rest}"))
            })
            .unwrap_or(base);
        format!("{ws}/ws")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        Config::default().validate().expect("defaults are valid");
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's own error type
    fn bad_value_names_its_key() {
        // In a Jail: `load` reads the environment, which the other Jail test changes.
        figment::Jail::expect_with(|_| {
            let err = Config::load(
                None,
                Figment::from(Serialized::default("http.addr", "not-an-address")),
            )
            .unwrap_err();
            assert_eq!(err.key, "http.addr");
            let err = Config::load(
                None,
                Figment::from(Serialized::default("tokens.link_code_length", 8)),
            )
            .unwrap_err();
            assert_eq!(err.key, "tokens.link_code_length");
            let err = Config::load(
                None,
                Figment::from(Serialized::default("media.backend", "pigeon")),
            )
            .unwrap_err();
            assert_eq!(err.key, "media.backend");
            for memory in ["sqlite::memory:", "sqlite://x.db?mode=memory"] {
                let err = Config::load(
                    None,
                    Figment::from(Serialized::default("database.url", memory)),
                )
                .unwrap_err();
                assert_eq!(err.key, "database.url", "{memory}");
            }
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's own error type
    fn environment_overrides_and_unknown_keys() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("BEDSIDE_HTTP__ADDR", "127.0.0.1:9999");
            jail.set_env("BEDSIDE_DATA_DIR", "ignored: no section separator");
            let config = Config::load(None, Figment::new()).expect("valid");
            assert_eq!(config.http.addr.port(), 9999);
            jail.set_env("BEDSIDE_HTTP__NO_SUCH_KEY", "1");
            let err = Config::load(None, Figment::new()).unwrap_err();
            assert!(err.message.contains("no_such_key"), "{err}");
            Ok(())
        });
    }

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

    #[test]
    fn adapters_need_their_keys_and_chime_is_accepted() {
        let mut config = Config::default();
        assert!(!config.uses_aws(), "the embedded defaults never touch AWS");
        config.tokens.signer = SignerKind::Kms;
        assert_eq!(config.validate().unwrap_err().key, "tokens.kms_key_id");
        config.tokens.kms_key_id = Some("alias/bedside-grants".into());
        config.crypto.key_provider = KeyProviderKind::Kms;
        assert_eq!(config.validate().unwrap_err().key, "crypto.kms_key_id");
        config.crypto.kms_key_id = Some("alias/bedside-phi".into());
        config.notify.email = EmailTransport::Smtp;
        assert_eq!(config.validate().unwrap_err().key, "smtp.host");
        config.smtp.host = "smtp.example".into();
        config.media.backend = MediaBackend::Chime;
        config.validate().expect("valid");
        assert!(config.uses_aws() && config.chime_enabled());
        config.aws.max_attempts = 0;
        assert_eq!(config.validate().unwrap_err().key, "aws.max_attempts");
        config.aws.max_attempts = 3;
        config.aws.endpoint_url = Some("localhost:4566".into());
        assert_eq!(config.validate().unwrap_err().key, "aws.endpoint_url");
    }

    #[test]
    fn database_passwords_are_never_shown() {
        let mut config = Config::default();
        config.database.url = "postgres://app:s3cr3t-pw@db.internal:5432/bedside".into();
        config.database.migrate_url =
            "postgres://owner:0wn3r-pw@db.internal/bedside?sslmode=require".into();
        let shown = serde_json::to_string(&config).expect("serialises");
        let debug = format!("{config:?}");
        for text in [&shown, &debug] {
            assert!(
                !text.contains("s3cr3t") && !text.contains("0wn3r"),
                "{text}"
            );
            assert!(text.contains("postgres://app:<redacted>@db.internal:5432/bedside"));
            assert!(
                text.contains("postgres://owner:<redacted>@db.internal/bedside?sslmode=require")
            );
        }
        assert_eq!(
            without_password("sqlite://./data/bedside.db"),
            "sqlite://./data/bedside.db"
        );
        assert_eq!(
            without_password("postgres://app@host/db"),
            "postgres://app@host/db"
        );
    }

    #[test]
    fn smtp_password_is_never_shown() {
        let mut config = Config::default();
        config.smtp.username = Some("relay".into());
        config.smtp.password = Some(Secret::new("hunter2-relay-password"));
        let shown = serde_json::to_string(&config).expect("serialises");
        assert!(!shown.contains("hunter2") && shown.contains("<redacted>"));
        assert!(!format!("{config:?}").contains("hunter2"));
        let parsed: SmtpConfig =
            serde_json::from_str(r#"{"username": "u", "password": "p4ss"}"#).expect("parses");
        assert_eq!(
            parsed.password.map(|p| p.expose().to_owned()).as_deref(),
            Some("p4ss")
        );
    }

    #[test]
    fn every_key_is_documented() {
        let docs = include_str!("../../docs/config.md");
        let config = serde_json::to_value(Config::default()).expect("serialises");
        let sections = config.as_object().expect("sections");
        for (section, keys) in sections {
            for key in keys.as_object().expect("keys").keys() {
                let key = format!("`{section}.{key}`");
                assert!(
                    docs.contains(&key),
                    "docs/config.md does not document {key}"
                );
            }
        }
    }

    #[test]
    fn signaling_url_follows_scheme() {
        let mut config = Config::default();
        config.http.public_url = "https://clinic.example/".to_owned();
        assert_eq!(config.signaling_url(), "wss://clinic.example/ws");
    }
}
