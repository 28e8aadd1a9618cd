//! Persistence on SQLite (WAL, the embedded default) or PostgreSQL (several nodes).
//!
//! Every query runs on a [`Db`]: a read connection or a write transaction of either engine.
//! The queries are written once, with `$n` placeholders that both engines read, and the
//! [`on!`] macro compiles each against both connection types.
//!
//! SQLite: one writer connection — SQLite serialises writers anyway, and a single writer
//! never meets `SQLITE_BUSY` on lock upgrade — and a pool of readers.
//!
//! PostgreSQL: every [`Db`] is a transaction of a role that does not own the tables, so
//! row-level security applies; a query function scopes the transaction to the tenant it was
//! given (`set_config('bedside.tenant_id', …, true)`, i.e. `SET LOCAL`) before it runs, and
//! the few lookups that start from a secret (an API key, a link code) learn the tenant from a
//! `SECURITY DEFINER` function first. A query that forgets its tenant filter therefore still
//! sees only the tenant it was scoped to.

pub mod audit;
pub mod links;
pub mod nodes;
pub mod notifications;
pub mod staff;
pub mod tenants;
pub mod visits;

use std::str::FromStr as _;
use std::time::Duration;

use chrono::{DateTime, TimeZone as _, Utc};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{ConnectOptions as _, PgPool, Postgres, Sqlite, SqlitePool, Transaction};

/// Runs `$body` with `$c` bound to the connection of `$db` (a `&mut Db`), compiled once per
/// engine so one query text serves both.
macro_rules! on {
    ($db:expr, $c:ident => $body:expr) => {
        match $db.conn() {
            $crate::store::Conn::Sqlite($c) => $body,
            $crate::store::Conn::Pg($c) => $body,
        }
    };
}
pub(crate) use on;

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Connecting or querying failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// Applying migrations failed.
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The URL names no engine this build knows.
    #[error("database.url: {0}")]
    Url(String),
}

/// The database of this deployment.
#[derive(Debug, Clone)]
pub enum Store {
    /// Embedded SQLite: one writer, several readers.
    Sqlite {
        /// The single writer connection.
        write: SqlitePool,
        /// Read-only connections.
        read: SqlitePool,
    },
    /// Shared PostgreSQL.
    Postgres {
        /// Connections of the application role.
        pool: PgPool,
    },
}

/// The engine behind a [`Store`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// SQLite.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

impl Store {
    /// Opens the database at `url` (`sqlite:` or `postgres:`), applies migrations (on
    /// PostgreSQL through `migrate_url`, the tables' owner, when given) and keeps up to
    /// `connections` connections (readers on SQLite).
    pub async fn open(
        url: &str,
        migrate_url: Option<&str>,
        connections: u32,
    ) -> Result<Self, StoreError> {
        if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            return Self::open_postgres(url, migrate_url, connections).await;
        }
        if !url.starts_with("sqlite:") {
            return Err(StoreError::Url(
                "must start with sqlite: or postgres:".into(),
            ));
        }
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("../migrations/sqlite").run(&write).await?;
        let read = SqlitePoolOptions::new()
            .max_connections(connections.max(1))
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options.read_only(true))
            .await?;
        Ok(Self::Sqlite { write, read })
    }

    async fn open_postgres(
        url: &str,
        migrate_url: Option<&str>,
        connections: u32,
    ) -> Result<Self, StoreError> {
        // Statement logging would put bound values (ciphertext, hashes) into debug logs.
        let quiet =
            |url: &str| PgConnectOptions::from_str(url).map(|o| o.disable_statement_logging());
        if let Some(owner) = migrate_url {
            let mut conn = quiet(owner)?.connect().await?;
            sqlx::migrate!("../migrations/postgres")
                .run(&mut conn)
                .await?;
        }
        let pool = PgPoolOptions::new()
            .max_connections(connections.max(1))
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(quiet(url)?)
            .await?;
        if migrate_url.is_none() {
            sqlx::migrate!("../migrations/postgres").run(&pool).await?;
        }
        Ok(Self::Postgres { pool })
    }

    /// Which engine this is.
    pub fn engine(&self) -> Engine {
        match self {
            Self::Sqlite { .. } => Engine::Sqlite,
            Self::Postgres { .. } => Engine::Postgres,
        }
    }

    /// Starts a write transaction.
    pub async fn begin(&self) -> Result<Db, sqlx::Error> {
        Ok(Db::new(match self {
            Self::Sqlite { write, .. } => Inner::SqliteTx(write.begin().await?),
            Self::Postgres { pool } => Inner::Pg(pool.begin().await?),
        }))
    }

    /// A connection for reads (a read-only transaction on PostgreSQL, so that the tenant
    /// scope lives exactly as long as it).
    pub async fn read(&self) -> Result<Db, sqlx::Error> {
        Ok(Db::new(match self {
            Self::Sqlite { read, .. } => Inner::SqliteRead(read.acquire().await?),
            Self::Postgres { pool } => Inner::Pg(pool.begin_with("BEGIN READ ONLY").await?),
        }))
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> bool {
        match self {
            Self::Sqlite { read, .. } => sqlx::query("SELECT 1").execute(read).await.is_ok(),
            Self::Postgres { pool } => sqlx::query("SELECT 1").execute(pool).await.is_ok(),
        }
    }

    /// Closes every connection.
    pub async fn close(&self) {
        match self {
            Self::Sqlite { write, read } => {
                read.close().await;
                write.close().await;
            }
            Self::Postgres { pool } => pool.close().await,
        }
    }
}

enum Inner {
    SqliteRead(PoolConnection<Sqlite>),
    SqliteTx(Transaction<'static, Sqlite>),
    Pg(Transaction<'static, Postgres>),
}

/// One connection's worth of work: a read connection or a write transaction. Dropping a
/// write transaction without [`Db::commit`] rolls it back.
pub struct Db {
    inner: Inner,
    /// The tenant the PostgreSQL transaction is scoped to.
    scope: Option<String>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.inner {
            Inner::SqliteRead(_) => "sqlite-read",
            Inner::SqliteTx(_) => "sqlite-tx",
            Inner::Pg(_) => "postgres-tx",
        };
        f.debug_struct("Db").field("kind", &kind).finish()
    }
}

/// The connection of a [`Db`], by engine (see [`on!`]).
pub(crate) enum Conn<'a> {
    /// SQLite.
    Sqlite(&'a mut SqliteConnection),
    /// PostgreSQL.
    Pg(&'a mut PgConnection),
}

impl Db {
    fn new(inner: Inner) -> Self {
        Self { inner, scope: None }
    }

    /// The underlying connection.
    pub(crate) fn conn(&mut self) -> Conn<'_> {
        match &mut self.inner {
            Inner::SqliteRead(c) => Conn::Sqlite(c),
            Inner::SqliteTx(c) => Conn::Sqlite(c),
            Inner::Pg(c) => Conn::Pg(c),
        }
    }

    /// Which engine this runs on.
    pub fn engine(&self) -> Engine {
        match self.inner {
            Inner::SqliteRead(_) | Inner::SqliteTx(_) => Engine::Sqlite,
            Inner::Pg(_) => Engine::Postgres,
        }
    }

    /// Scopes the rest of this transaction to `tenant_id` (PostgreSQL row-level security;
    /// nothing to do on SQLite, which has no roles).
    pub async fn scope(&mut self, tenant_id: &str) -> Result<(), sqlx::Error> {
        if self.scope.as_deref() == Some(tenant_id) {
            return Ok(());
        }
        if let Inner::Pg(tx) = &mut self.inner {
            sqlx::query("SELECT set_config('bedside.tenant_id', $1, true)")
                .bind(tenant_id)
                .execute(&mut **tx)
                .await?;
            self.scope = Some(tenant_id.to_owned());
        }
        Ok(())
    }

    /// On PostgreSQL, scopes the transaction to the tenant that `definer` (a `SECURITY
    /// DEFINER` function of one argument, see migrations/postgres) finds for `arg`, and
    /// answers whether it found one. On SQLite there is nothing to scope: always true.
    pub(crate) async fn scope_by<T>(&mut self, definer: &str, arg: T) -> Result<bool, sqlx::Error>
    where
        T: for<'q> sqlx::Encode<'q, Postgres> + sqlx::Type<Postgres> + Send,
    {
        let Inner::Pg(tx) = &mut self.inner else {
            return Ok(true);
        };
        let tenant: Option<String> =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT {definer}($1)")))
                .bind(arg)
                .fetch_one(&mut **tx)
                .await?;
        match tenant {
            Some(tenant) => self.scope(&tenant).await.map(|()| true),
            None => Ok(false),
        }
    }

    /// Rolls a write transaction back (dropping it would too, later).
    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        match self.inner {
            Inner::SqliteRead(_) => Ok(()),
            Inner::SqliteTx(tx) => tx.rollback().await,
            Inner::Pg(tx) => tx.rollback().await,
        }
    }

    /// Commits a write transaction (a read connection just goes back to its pool).
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        match self.inner {
            Inner::SqliteRead(_) => Ok(()),
            Inner::SqliteTx(tx) => tx.commit().await,
            Inner::Pg(tx) => tx.commit().await,
        }
    }
}

/// A value bound to a [`Sql`] text.
#[derive(Debug, Clone)]
pub(crate) enum Arg {
    /// TEXT.
    Text(String),
    /// BIGINT / INTEGER.
    Int(i64),
}

/// A query text built piece by piece with `$n` placeholders, and the values they stand for
/// (filters that are present or not; one text for both engines).
#[derive(Debug, Clone)]
pub(crate) struct Sql {
    pub(crate) text: String,
    pub(crate) args: Vec<Arg>,
}

impl Sql {
    pub(crate) fn new(text: &str) -> Self {
        Self {
            text: text.to_owned(),
            args: Vec::new(),
        }
    }

    /// Appends literal SQL.
    pub(crate) fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    /// Appends a placeholder for `arg`.
    pub(crate) fn bind(&mut self, arg: Arg) -> &mut Self {
        self.args.push(arg);
        self.text.push('$');
        self.text.push_str(&self.args.len().to_string());
        self
    }
}

/// Binds a [`Sql`]'s values to a query of either engine.
macro_rules! bind_args {
    ($q:expr, $args:expr) => {{
        let mut q = $q;
        for arg in $args {
            q = match arg {
                $crate::store::Arg::Text(s) => q.bind(s.clone()),
                $crate::store::Arg::Int(i) => q.bind(*i),
            };
        }
        q
    }};
}
pub(crate) use bind_args;

/// Unix milliseconds of `at`.
pub fn ms(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

/// The time at Unix milliseconds `ms` (clamped to the epoch if out of range).
pub fn from_ms(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

/// A fresh time-ordered id.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}
