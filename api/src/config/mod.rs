//! Configuration: `bedside.toml` plus `BEDSIDE_<SECTION>__<KEY>` environment overrides.
//! Every key, its default and meaning is listed in docs/config.md; keep the two in step.
//!
//! One file a section (`[http]` in `http.rs`, …), each owning its types, their defaults and
//! the checks of its own keys; this module holds the whole, loading, and the checks that
//! involve several sections.

mod aws;
mod chime;
mod cluster;
mod crypto;
mod database;
mod http;
mod limits;
mod log;
mod media;
mod notify;
mod secret;
mod sfu;
mod shutdown;
mod smtp;
mod tokens;
mod turn;
mod visits;

use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

pub use aws::AwsConfig;
pub use chime::ChimeConfig;
pub use cluster::ClusterConfig;
pub use crypto::{CryptoConfig, KeyProviderKind};
pub use database::{DatabaseConfig, without_password};
pub use http::{HttpConfig, MAX_HTTP_WORKER_THREADS};
pub use limits::LimitsConfig;
pub use log::{LogConfig, LogFormat};
pub use media::{MediaBackend, MediaConfig};
pub use notify::{EmailTransport, NotifyConfig, SmsTransport};
pub use secret::Secret;
pub use sfu::{SfuConfig, SfuTransport};
pub use shutdown::ShutdownConfig;
pub use smtp::{SmtpConfig, SmtpTls};
pub use tokens::{SignerKind, TokensConfig};
pub use turn::{TurnConfig, TurnPolicy};
pub use visits::VisitsConfig;

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

/// Whether an optional value is missing in effect (unset, or only whitespace).
fn blank(value: &Option<String>) -> bool {
    value.as_deref().is_none_or(|v| v.trim().is_empty())
}

/// The check shared by the endpoint overrides of `[aws]` and `[chime]`.
fn check_endpoint_url(key: &str, url: Option<&str>) -> Result<(), ConfigError> {
    if let Some(url) = url
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        return Err(ConfigError::new(key, "must start with http:// or https://"));
    }
    Ok(())
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
    /// TURN servers handed to browsers, and whether media must go through them.
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
    /// Graceful shutdown: how long SIGTERM/SIGINT may take to drain live visits before the
    /// process exits.
    pub shutdown: ShutdownConfig,
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
        // With several faults the first is named: keep this order stable. `[media]` has
        // nothing to check beyond its types.
        self.http.check()?;
        self.database.check()?;
        self.cluster.check()?;
        self.tokens.check()?;
        self.visits.check()?;
        self.limits.check()?;
        self.notify.check()?;
        self.crypto.check()?;
        self.smtp.check()?;
        self.aws.check()?;
        self.chime.check()?;
        self.log.check()?;
        self.shutdown.check()?;
        self.sfu.check()?;
        self.turn.check()?;
        if self.notify.email == EmailTransport::Smtp && self.smtp.host.trim().is_empty() {
            return Err(ConfigError::new(
                "smtp.host",
                "required when notify.email = \"smtp\"",
            ));
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
            let err = Config::load(
                None,
                Figment::from(Serialized::default("turn.policy", "sometimes")),
            )
            .unwrap_err();
            assert_eq!(err.key, "turn.policy");
            assert!(
                err.to_string().contains("`all` or `relay`"),
                "names the values it takes: {err}"
            );
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
            jail.set_env(
                "BEDSIDE_TURN__URLS",
                r#"["turn:127.0.0.1:3478?transport=udp"]"#,
            );
            jail.set_env("BEDSIDE_TURN__SHARED_SECRET", "s3cret");
            jail.set_env("BEDSIDE_TURN__POLICY", "relay");
            let config = Config::load(None, Figment::new()).expect("valid");
            assert_eq!(config.turn.policy, TurnPolicy::Relay);
            assert_eq!(config.turn.urls.len(), 1);
            jail.set_env("BEDSIDE_TURN__SHARED_SECRET", "");
            let err = Config::load(None, Figment::new()).unwrap_err();
            assert_eq!(err.key, "turn.shared_secret");
            jail.set_env("BEDSIDE_TURN__POLICY", "all");
            jail.set_env("BEDSIDE_HTTP__NO_SUCH_KEY", "1");
            let err = Config::load(None, Figment::new()).unwrap_err();
            assert!(err.message.contains("no_such_key"), "{err}");
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
    fn every_key_is_documented() {
        let docs = include_str!("../../../docs/config.md");
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
