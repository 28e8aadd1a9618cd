//! Persistence on SQLite (WAL, the embedded default) or PostgreSQL (several nodes).
//!
//! Every query runs on a [`Db`]: a read connection or a write transaction of either engine.
//! The queries are written once, with `$n` placeholders that both engines read (see `query`),
//! and rows decode through one [`FromRecord`] per row type.
//!
//! SQLite ([`sqlite`]): rusqlite connections used on the calling thread — one writer
//! connection, a pool of readers and a checkpointer thread. sqlx still applies the SQLite
//! migrations, so a data directory keeps the same migration ledger.
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
mod query;
pub mod sqlite;
pub mod staff;
pub mod tenants;
pub mod visits;

use std::str::FromStr as _;
use std::time::Duration;

use chrono::{DateTime, TimeZone as _, Utc};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};
use sqlx::{ConnectOptions as _, Connection as _, PgPool, Postgres, Transaction};

pub(crate) use query::{Bind, Sql, query, query_as, query_scalar, record};
pub use query::{FromRecord, Record};

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Connecting or querying failed.
    #[error("database: {0}")]
    Database(#[from] DbError),
    /// Applying migrations failed.
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The URL names no engine this build knows.
    #[error("database.url: {0}")]
    Url(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        Self::Database(DbError::Postgres(err))
    }
}

/// Why a query failed.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// SQLite refused or failed.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL (or its connection) refused or failed.
    #[error("postgres: {0}")]
    Postgres(#[from] sqlx::Error),
    /// No connection became free in time.
    #[error("no database connection became free in time")]
    Timeout,
    /// The store was closed.
    #[error("the database is closed")]
    Closed,
    /// A statement expected a row and got none.
    #[error("no row")]
    RowNotFound,
    /// A placeholder of a statement had no value (a bug in the statement, not in input).
    #[error("placeholder {index} of the statement has no value ({bound} bound)")]
    Placeholder {
        /// SQLite's index of the placeholder.
        index: usize,
        /// How many values were bound.
        bound: usize,
    },
    /// A PostgreSQL statement was run on SQLite (a bug, not input).
    #[error("a PostgreSQL-only statement ran on SQLite")]
    Engine,
    /// The store's metrics could not be made (a bug in their names).
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// A thread of the store could not start.
    #[error("starting a database thread: {0}")]
    Thread(std::io::Error),
}

impl DbError {
    /// Whether the database is unavailable for now (busy, closed, unreachable) rather than
    /// refusing the statement.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Timeout | Self::Closed => true,
            Self::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => matches!(
                e.code,
                rusqlite::ErrorCode::DatabaseBusy
                    | rusqlite::ErrorCode::DatabaseLocked
                    | rusqlite::ErrorCode::CannotOpen
                    | rusqlite::ErrorCode::SystemIoFailure
                    | rusqlite::ErrorCode::DiskFull
            ),
            Self::Postgres(
                sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_),
            ) => true,
            _ => false,
        }
    }
}

/// The database of this deployment.
#[derive(Debug, Clone)]
pub enum Store {
    /// Embedded SQLite: one writer, several readers, used on the calling thread.
    Sqlite(sqlite::Sqlite),
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
            .busy_timeout(sqlite::WAIT)
            .foreign_keys(true);
        // sqlx applies the migrations (and keeps its ledger of them, as before); the store
        // itself then works through rusqlite (see `sqlite`).
        let mut migrator = options.connect().await?;
        sqlx::migrate!("../migrations/sqlite")
            .run(&mut migrator)
            .await?;
        migrator.close().await?;
        Ok(Self::Sqlite(sqlite::Sqlite::open(
            options.get_filename(),
            connections,
        )?))
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

    /// Registers the engine's own metrics in `registry` (SQLite's checkpointer; PostgreSQL
    /// has none of its own here).
    pub fn register_metrics(&self, registry: &prometheus::Registry) -> Result<(), DbError> {
        match self {
            Self::Sqlite(db) => Ok(db.register_metrics(registry)?),
            Self::Postgres { .. } => Ok(()),
        }
    }

    /// Which engine this is.
    pub fn engine(&self) -> Engine {
        match self {
            Self::Sqlite(_) => Engine::Sqlite,
            Self::Postgres { .. } => Engine::Postgres,
        }
    }

    /// Starts a write transaction.
    pub async fn begin(&self) -> Result<Db, DbError> {
        Ok(Db::new(match self {
            Self::Sqlite(db) => Inner::SqliteTx(db.begin().await?),
            Self::Postgres { pool } => Inner::Pg(pool.begin().await?),
        }))
    }

    /// A connection for reads (a read-only transaction on PostgreSQL, so that the tenant
    /// scope lives exactly as long as it).
    pub async fn read(&self) -> Result<Db, DbError> {
        Ok(Db::new(match self {
            Self::Sqlite(db) => Inner::SqliteRead(db.read().await?),
            Self::Postgres { pool } => Inner::Pg(pool.begin_with("BEGIN READ ONLY").await?),
        }))
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> bool {
        match self.read().await {
            Ok(mut db) => query("SELECT 1").execute(&mut db).await.is_ok(),
            Err(_) => false,
        }
    }

    /// Closes every connection.
    pub async fn close(&self) {
        match self {
            Self::Sqlite(db) => db.close().await,
            Self::Postgres { pool } => pool.close().await,
        }
    }
}

enum Inner {
    SqliteRead(sqlite::ReadConn),
    SqliteTx(sqlite::WriteTx),
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

impl Db {
    fn new(inner: Inner) -> Self {
        Self { inner, scope: None }
    }

    /// The SQLite connection, when this is SQLite.
    pub(crate) fn sqlite(&self) -> Result<Option<&rusqlite::Connection>, DbError> {
        match &self.inner {
            Inner::SqliteRead(c) => c.conn().map(Some).ok_or(DbError::Closed),
            Inner::SqliteTx(c) => Ok(Some(c.conn())),
            Inner::Pg(_) => Ok(None),
        }
    }

    /// The PostgreSQL connection (an error on SQLite, which callers ask [`Db::sqlite`] first).
    pub(crate) fn pg(&mut self) -> Result<&mut PgConnection, DbError> {
        match &mut self.inner {
            Inner::Pg(tx) => Ok(tx),
            Inner::SqliteRead(_) | Inner::SqliteTx(_) => Err(DbError::Engine),
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
    pub async fn scope(&mut self, tenant_id: &str) -> Result<(), DbError> {
        if self.scope.as_deref() == Some(tenant_id) || self.engine() == Engine::Sqlite {
            return Ok(());
        }
        query("SELECT set_config('bedside.tenant_id', $1, true)")
            .bind(tenant_id)
            .execute(self)
            .await?;
        self.scope = Some(tenant_id.to_owned());
        Ok(())
    }

    /// On PostgreSQL, scopes the transaction to the tenant that `definer` (a `SECURITY
    /// DEFINER` function of one argument, see migrations/postgres) finds for `arg`, and
    /// answers whether it found one. On SQLite there is nothing to scope: always true.
    pub(crate) async fn scope_by<'a>(
        &mut self,
        definer: Definer,
        arg: impl Bind<'a>,
    ) -> Result<bool, DbError> {
        if self.engine() == Engine::Sqlite {
            return Ok(true);
        }
        let tenant: Option<String> = query_scalar(definer.call())
            .bind(arg)
            .fetch_one(self)
            .await?;
        match tenant {
            Some(tenant) => self.scope(&tenant).await.map(|()| true),
            None => Ok(false),
        }
    }

    /// Rolls a write transaction back (dropping it would too, later).
    pub async fn rollback(self) -> Result<(), DbError> {
        match self.inner {
            Inner::SqliteRead(_) => Ok(()),
            Inner::SqliteTx(tx) => tx.rollback(),
            Inner::Pg(tx) => Ok(tx.rollback().await?),
        }
    }

    /// Commits a write transaction (a read connection just goes back to its pool).
    pub async fn commit(self) -> Result<(), DbError> {
        match self.inner {
            Inner::SqliteRead(_) => Ok(()),
            Inner::SqliteTx(tx) => tx.commit(),
            Inner::Pg(tx) => Ok(tx.commit().await?),
        }
    }
}

/// The `SECURITY DEFINER` functions that find the tenant of a secret on PostgreSQL.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Definer {
    /// By API key hash.
    KeyHash,
    /// By API key id.
    KeyId,
    /// By link code hash.
    LinkCodeHash,
}

impl Definer {
    fn call(self) -> &'static str {
        match self {
            Self::KeyHash => "SELECT bedside_tenant_of_key($1)",
            Self::KeyId => "SELECT bedside_tenant_of_api_key($1)",
            Self::LinkCodeHash => "SELECT bedside_tenant_of_link($1)",
        }
    }
}

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
