//! The embedded SQLite engine: rusqlite connections used on the calling thread.
//!
//! One writer connection behind an async mutex (SQLite serialises writers anyway, and a single
//! writer never meets `SQLITE_BUSY` on lock upgrade), a pool of read-only connections, and a
//! checkpointer thread. Statements run synchronously where they are called: in WAL mode with
//! `synchronous = NORMAL` a commit does not wait for the disk, so a statement takes
//! microseconds, less than handing it to a connection thread and back (which is what sqlx's
//! SQLite driver does, and what the redeem + start benchmark found to cost half the server's
//! CPU). The one step that waits for the disk, the WAL checkpoint, runs on its own thread,
//! away from the request threads.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use prometheus::{IntCounterVec, IntGauge, Opts, Registry};
use rusqlite::{Connection, OpenFlags};
use tokio::sync::{OwnedMutexGuard, OwnedSemaphorePermit, Semaphore};

use super::DbError;

/// How long to wait for a connection, or for SQLite's own locks (another process such as the
/// CLI writing at the same time).
pub(crate) const WAIT: Duration = Duration::from_secs(5);

/// Commits between two checkpoints of the WAL into the database file.
const CHECKPOINT_EVERY: u64 = 256;

/// How long a RESTART checkpoint, which holds the writer, waits for the WAL's readers
/// before it gives up until the next one.
const RESTART_WAIT: Duration = Duration::from_millis(25);

/// Prepared statements kept per connection (the store has about fifty).
const STATEMENT_CACHE: usize = 128;

/// An open SQLite database (cheap to clone; clones share the connections).
#[derive(Clone)]
pub struct Sqlite {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Sqlite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sqlite")
            .field("path", &self.shared.path)
            .finish_non_exhaustive()
    }
}

struct Shared {
    path: PathBuf,
    metrics: CheckpointMetrics,
    writer: Arc<tokio::sync::Mutex<Connection>>,
    readers: Mutex<Vec<Connection>>,
    reader_slots: Arc<Semaphore>,
    commits: AtomicU64,
    checkpoint: Mutex<Option<Checkpointer>>,
}

struct Checkpointer {
    wake: mpsc::SyncSender<()>,
    thread: std::thread::JoinHandle<()>,
}

/// What the checkpointer reports, for an operator to see the WAL grow or checkpoints fail.
#[derive(Clone)]
struct CheckpointMetrics {
    /// Checkpoints by mode (passive, restart) and outcome (complete, partial, failed).
    runs: IntCounterVec,
    /// Frames in the WAL at the last checkpoint.
    wal_frames: IntGauge,
}

impl CheckpointMetrics {
    fn new() -> Result<Self, prometheus::Error> {
        Ok(Self {
            runs: IntCounterVec::new(
                Opts::new("sqlite_checkpoints_total", "SQLite WAL checkpoints"),
                &["mode", "outcome"],
            )?,
            wal_frames: IntGauge::new(
                "sqlite_wal_frames",
                "Frames in the SQLite WAL at the last checkpoint",
            )?,
        })
    }
}

impl Sqlite {
    /// Opens the (already migrated) database file at `path` with up to `readers` read
    /// connections.
    pub fn open(path: &Path, readers: u32) -> Result<Self, DbError> {
        let metrics = CheckpointMetrics::new()?;
        let writer = connect(path, false)?;
        // Checkpoints run on the checkpointer thread, never inside a request's commit.
        writer.pragma_update(None, "wal_autocheckpoint", 0)?;
        let writer = Arc::new(tokio::sync::Mutex::new(writer));
        let checkpointer = connect(path, false)?;
        checkpointer.busy_timeout(RESTART_WAIT)?;
        let (wake, asleep) = mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn({
                let (writer, metrics) = (Arc::clone(&writer), metrics.clone());
                move || checkpoint_loop(&checkpointer, &writer, &asleep, &metrics)
            })
            .map_err(DbError::Thread)?;
        Ok(Self {
            shared: Arc::new(Shared {
                path: path.to_owned(),
                metrics,
                writer,
                readers: Mutex::new(Vec::new()),
                reader_slots: Arc::new(Semaphore::new(readers.max(1) as usize)),
                commits: AtomicU64::new(0),
                checkpoint: Mutex::new(Some(Checkpointer { wake, thread })),
            }),
        })
    }

    /// Registers the checkpointer's metrics (`bedside_sqlite_checkpoints_total`,
    /// `bedside_sqlite_wal_frames`) in `registry`.
    pub fn register_metrics(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        let metrics = &self.shared.metrics;
        registry.register(Box::new(metrics.runs.clone()))?;
        registry.register(Box::new(metrics.wal_frames.clone()))
    }

    /// Starts a write transaction (`BEGIN IMMEDIATE`), waiting for the writer.
    pub(crate) async fn begin(&self) -> Result<WriteTx, DbError> {
        let shared = &self.shared;
        if shared.reader_slots.is_closed() {
            return Err(DbError::Closed);
        }
        let conn = match Arc::clone(&shared.writer).try_lock_owned() {
            Ok(conn) => conn,
            Err(_) => tokio::time::timeout(WAIT, Arc::clone(&shared.writer).lock_owned())
                .await
                .map_err(|_| DbError::Timeout)?,
        };
        conn.execute_batch("BEGIN IMMEDIATE")?;
        Ok(WriteTx {
            conn,
            shared: Arc::clone(shared),
            open: true,
        })
    }

    /// A read-only connection from the pool, waiting while all are in use.
    pub(crate) async fn read(&self) -> Result<ReadConn, DbError> {
        let shared = &self.shared;
        let slots = Arc::clone(&shared.reader_slots);
        let permit = match Arc::clone(&slots).try_acquire_owned() {
            Ok(permit) => permit,
            Err(tokio::sync::TryAcquireError::Closed) => return Err(DbError::Closed),
            Err(tokio::sync::TryAcquireError::NoPermits) => {
                tokio::time::timeout(WAIT, slots.acquire_owned())
                    .await
                    .map_err(|_| DbError::Timeout)?
                    .map_err(|_| DbError::Closed)?
            }
        };
        let idle = shared.readers.lock().ok().and_then(|mut idle| idle.pop());
        let conn = match idle {
            Some(conn) => conn,
            None => connect(&shared.path, true)?,
        };
        Ok(ReadConn {
            conn: Some(conn),
            shared: Arc::clone(shared),
            _permit: permit,
        })
    }

    /// Closes the pool: new work is refused, idle readers close, and the checkpointer copies
    /// the WAL into the database file one last time.
    pub async fn close(&self) {
        let shared = &self.shared;
        shared.reader_slots.close();
        if let Ok(mut idle) = shared.readers.lock() {
            idle.clear();
        }
        let checkpointer = shared.checkpoint.lock().ok().and_then(|mut c| c.take());
        if let Some(Checkpointer { wake, thread }) = checkpointer {
            drop(wake);
            // The last checkpoint waits for the disk: not on a runtime thread.
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

/// Opens one connection with the settings every connection of the store has.
fn connect(path: &Path, read_only: bool) -> Result<Connection, DbError> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(WAIT)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    conn.execute_batch("PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL;")?;
    Ok(conn)
}

/// Checkpoints each time it is woken, and once more when the pool closes.
///
/// A checkpoint copies the WAL's frames into the database file; a later write transaction
/// starts the WAL over from its beginning only if every frame was copied and no reader still
/// reads from the WAL. Under a steady stream of commits and reads, checkpoints alongside them
/// never meet both (the WAL grew to gigabytes in the redeem + start benchmark). So the bulk
/// of the copy runs alongside the writer (PASSIVE), then a RESTART checkpoint holds the writer
/// for the frames appended meanwhile and waits up to [`RESTART_WAIT`] for the readers of the
/// WAL to finish (a read takes microseconds, and new readers read the database file): the
/// next commit starts the WAL over, and it stays bounded. A RESTART that finds a reader still
/// busy after the wait gives up, and the next wake tries again.
fn checkpoint_loop(
    conn: &Connection,
    writer: &tokio::sync::Mutex<Connection>,
    wake: &mpsc::Receiver<()>,
    metrics: &CheckpointMetrics,
) {
    loop {
        let closing = wake.recv().is_err();
        checkpoint(conn, Mode::Passive, metrics);
        {
            let _no_writes = writer.blocking_lock();
            checkpoint(conn, Mode::Restart, metrics);
        }
        if closing {
            return;
        }
    }
}

/// The checkpoint modes the checkpointer uses.
#[derive(Debug, Clone, Copy)]
enum Mode {
    Passive,
    Restart,
}

/// Runs one checkpoint and records how it went.
fn checkpoint(conn: &Connection, mode: Mode, metrics: &CheckpointMetrics) {
    let (pragma, label) = match mode {
        Mode::Passive => ("PRAGMA wal_checkpoint(PASSIVE)", "passive"),
        Mode::Restart => ("PRAGMA wal_checkpoint(RESTART)", "restart"),
    };
    // busy, frames in the WAL, frames copied into the database file
    let done = conn.query_row(pragma, [], |row| {
        Ok((
            row.get::<_, i64>(0)?,
            row.get::<_, i64>(1)?,
            row.get::<_, i64>(2)?,
        ))
    });
    let outcome = match done {
        Ok((busy, frames, copied)) => {
            metrics.wal_frames.set(frames);
            if busy == 0 && frames == copied {
                "complete"
            } else {
                "partial"
            }
        }
        Err(err) => {
            tracing::warn!(error = %err, mode = label, "sqlite checkpoint failed");
            "failed"
        }
    };
    metrics.runs.with_label_values(&[label, outcome]).inc();
}

/// The write transaction: the writer connection, held until commit or drop.
pub(crate) struct WriteTx {
    conn: OwnedMutexGuard<Connection>,
    shared: Arc<Shared>,
    open: bool,
}

impl WriteTx {
    /// The connection.
    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    /// Commits, and every [`CHECKPOINT_EVERY`] commits wakes the checkpointer.
    pub(crate) fn commit(mut self) -> Result<(), DbError> {
        self.open = false;
        if let Err(err) = self.conn.execute_batch("COMMIT") {
            self.rollback_quietly();
            return Err(err.into());
        }
        let done = self.shared.commits.fetch_add(1, Ordering::Relaxed) + 1;
        if done.is_multiple_of(CHECKPOINT_EVERY)
            && let Ok(guard) = self.shared.checkpoint.lock()
            && let Some(checkpointer) = guard.as_ref()
        {
            // Full means a wake is already pending.
            let _ = checkpointer.wake.try_send(());
        }
        Ok(())
    }

    /// Rolls back.
    pub(crate) fn rollback(mut self) -> Result<(), DbError> {
        self.open = false;
        self.conn.execute_batch("ROLLBACK")?;
        Ok(())
    }

    fn rollback_quietly(&self) {
        if !self.conn.is_autocommit()
            && let Err(err) = self.conn.execute_batch("ROLLBACK")
        {
            tracing::warn!(error = %err, "sqlite rollback failed");
        }
    }
}

impl Drop for WriteTx {
    fn drop(&mut self) {
        if self.open {
            self.rollback_quietly();
        }
    }
}

/// A read-only connection, back to the pool on drop.
pub(crate) struct ReadConn {
    conn: Option<Connection>,
    shared: Arc<Shared>,
    _permit: OwnedSemaphorePermit,
}

impl ReadConn {
    /// The connection.
    pub(crate) fn conn(&self) -> Option<&Connection> {
        self.conn.as_ref()
    }
}

impl Drop for ReadConn {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take()
            && !self.shared.reader_slots.is_closed()
            && let Ok(mut idle) = self.shared.readers.lock()
        {
            idle.push(conn);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("t.db");
        let conn = Connection::open(&path).expect("create");
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB);",
        )
        .expect("schema");
        (dir, path)
    }

    async fn count(db: &Sqlite) -> i64 {
        let read = db.read().await.expect("reader");
        let conn = read.conn().expect("open");
        conn.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            .expect("count")
    }

    #[tokio::test]
    async fn a_dropped_transaction_rolls_back_and_frees_the_writer() {
        let (_dir, path) = fresh();
        let db = Sqlite::open(&path, 2).expect("open");
        let tx = db.begin().await.expect("begin");
        tx.conn()
            .execute("INSERT INTO t (b) VALUES (x'00')", [])
            .expect("insert");
        drop(tx);
        assert_eq!(count(&db).await, 0);
        let tx = db.begin().await.expect("the writer is free again");
        tx.conn()
            .execute("INSERT INTO t (b) VALUES (x'01')", [])
            .expect("insert");
        tx.commit().expect("commit");
        assert_eq!(count(&db).await, 1);
        db.close().await;
    }

    #[tokio::test]
    async fn readers_beyond_the_pool_wait_for_a_free_one() {
        let (_dir, path) = fresh();
        let db = Sqlite::open(&path, 1).expect("open");
        let first = db.read().await.expect("reader");
        let waiting = tokio::spawn({
            let db = db.clone();
            async move { count(&db).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "the only reader is in use");
        drop(first);
        assert_eq!(waiting.await.expect("joins"), 0);
        db.close().await;
        assert!(matches!(db.read().await, Err(DbError::Closed)));
        assert!(matches!(db.begin().await, Err(DbError::Closed)));
    }

    #[tokio::test]
    async fn the_checkpointer_moves_the_wal_into_the_database_file() {
        let (_dir, path) = fresh();
        let db = Sqlite::open(&path, 1).expect("open");
        let size = || std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let commit = async || {
            let tx = db.begin().await.expect("begin");
            tx.conn()
                .execute("INSERT INTO t (b) VALUES (zeroblob(4096))", [])
                .expect("insert");
            tx.commit().expect("commit");
        };
        for _ in 1..CHECKPOINT_EVERY {
            commit().await;
        }
        let before = size();
        assert!(before < 64 * 1024, "no checkpoint yet: {before} bytes");
        commit().await;
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while size() < CHECKPOINT_EVERY * 4096 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            size() >= CHECKPOINT_EVERY * 4096,
            "checkpointed into the file: {} bytes",
            size()
        );
        assert_eq!(count(&db).await, CHECKPOINT_EVERY as i64);
        db.close().await;
        let runs = &db.shared.metrics.runs;
        let complete = |mode| runs.with_label_values(&[mode, "complete"]).get();
        // The wake's pair and the closing pair: the restarts copy everything.
        assert_eq!(complete("restart"), 2);
        assert!(db.shared.metrics.wal_frames.get() > 0, "the WAL had frames");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wal_stays_bounded_under_a_steady_stream_of_commits() {
        let (_dir, path) = fresh();
        let db = Sqlite::open(&path, 2).expect("open");
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = tokio::spawn({
            let (db, stop) = (db.clone(), Arc::clone(&stop));
            async move {
                while !stop.load(Ordering::Relaxed) {
                    let read = db.read().await.expect("reader");
                    let conn = read.conn().expect("open");
                    conn.query_row("SELECT MAX(id) FROM t", [], |r| r.get::<_, Option<i64>>(0))
                        .expect("latest");
                    drop(read);
                    tokio::task::yield_now().await;
                }
            }
        });
        let commits = 32 * CHECKPOINT_EVERY;
        for _ in 0..commits {
            let tx = db.begin().await.expect("begin");
            tx.conn()
                .execute("INSERT INTO t (b) VALUES (zeroblob(16384))", [])
                .expect("insert");
            tx.commit().expect("commit");
        }
        stop.store(true, Ordering::Relaxed);
        reader.await.expect("reader");
        let wal = std::fs::metadata(path.with_extension("db-wal")).map_or(0, |m| m.len());
        // Without restarts the WAL would hold every commit: over 16 KiB each. A restart that
        // meets a reader preempted mid-read (a busy CI machine) gives up until the next wake,
        // so the bound leaves room for a run of those: one CI run reached 26%, idle runs 10-11%.
        let unbounded = commits * 16 * 1024;
        assert!(
            wal < unbounded / 2,
            "WAL {wal} bytes after {commits} commits ({unbounded} if never restarted)"
        );
        let restarts = db
            .shared
            .metrics
            .runs
            .with_label_values(&["restart", "complete"]);
        assert!(restarts.get() > 0, "no RESTART checkpoint completed");
        db.close().await;
    }
}
