//! `[database]`: which database and how many connections. The URLs may carry passwords, so
//! this section prints them redacted.

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// `[database]`: the database URL(s) and pool size. `Debug` and `Serialize` hide the URLs'
/// passwords.
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

impl DatabaseConfig {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        let postgres = |url: &str| url.starts_with("postgres:") || url.starts_with("postgresql:");
        let url = &self.url;
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
        let migrate_url = &self.migrate_url;
        let migrate_ok = migrate_url.is_empty() || (postgres(url) && postgres(migrate_url));
        if !migrate_ok {
            return Err(ConfigError::new(
                "database.migrate_url",
                "is for PostgreSQL: a postgres:// URL, with database.url a postgres:// URL too",
            ));
        }
        if self.max_connections == 0 {
            return Err(ConfigError::new("database.max_connections", "must be > 0"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

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
}
