//! Redeem + start throughput against a running `bedside serve` on SQLite (issue 2's measure).
//!
//! Starts the real binary as a separate process on loopback, prepares one visit and link per
//! pair, then drives `POST /api/token/redeem` followed by `POST /api/visits/{id}/start` at a
//! fixed concurrency. Reports pairs/s, the server process's CPU time (from /proc), pairs per
//! server CPU-second ("per core"), and pair latency p50/p99.
//!
//! `cargo bench --bench redeem_start -- --bench [PAIRS] [CONCURRENCY] [--postgres]`; without
//! `--bench` (as under `cargo test`) it runs a small smoke pass and checks every pair
//! succeeded. `--postgres` runs the server on a fresh database of the PostgreSQL cluster that
//! `scripts/pg` describes in `BEDSIDE_TEST_PG_*` (run it as `scripts/pg cargo bench …`), and
//! also counts the CPU time of that cluster's processes (`postgres` on this machine).

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

struct Server {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// CPU seconds (user + system) of every process named `postgres` (the cluster's backends,
/// WAL writer, checkpointer…).
fn postgres_cpu_seconds() -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    dir.filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim() == "postgres")
        })
        // A process that exits meanwhile simply stops counting.
        .filter_map(try_cpu_seconds)
        .sum()
}

/// A fresh database in the `scripts/pg` cluster: the app and migration URLs.
async fn postgres_database() -> (String, String) {
    use sqlx::Connection as _;
    let var = |name: &str| {
        std::env::var(name)
            .unwrap_or_else(|_| panic!("--postgres needs {name}: run under scripts/pg"))
    };
    let mut admin = sqlx::PgConnection::connect(&var("BEDSIDE_TEST_PG_ADMIN_URL"))
        .await
        .expect("connect to the cluster");
    let name = format!("bench_{}", std::process::id());
    // The name is a constant and a number.
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .expect("CREATE DATABASE");
    (
        format!("{}/{name}", var("BEDSIDE_TEST_PG_APP_URL_BASE")),
        format!("{}/{name}", var("BEDSIDE_TEST_PG_OWNER_URL_BASE")),
    )
}

fn try_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are 14 and 15 overall.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

fn cpu_seconds(pid: u32) -> f64 {
    try_cpu_seconds(pid).expect("the server's /proc/<pid>/stat")
}

async fn start_server(postgres: bool) -> (Server, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut command = Command::new(env!("CARGO_BIN_EXE_bedside"));
    if postgres {
        let (url, migrate_url) = postgres_database().await;
        command
            .env("BEDSIDE_DATABASE__URL", url)
            .env("BEDSIDE_DATABASE__MIGRATE_URL", migrate_url);
    }
    let mut child = command
        .args(["serve", "--udp", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .args(["--http", &format!("127.0.0.1:{port}")])
        .env("BEDSIDE_LOG__LEVEL", "warn")
        .env("BEDSIDE_LIMITS__LINK_PER_IP_PER_MINUTE", "100000000")
        .env("BEDSIDE_LIMITS__LINK_BURST", "100000000")
        .env("BEDSIDE_LIMITS__WRITES_PER_KEY_PER_MINUTE", "100000000")
        .env("BEDSIDE_LIMITS__WRITES_BURST", "100000000")
        .env("BEDSIDE_VISITS__DAILY_QUOTA", "100000000")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("bedside serve starts");
    let stdout = child.stdout.take().expect("stdout");
    let key = tokio::task::spawn_blocking(move || {
        use std::io::BufRead as _;
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|line| {
                line.split_whitespace()
                    .find(|w| w.starts_with("bsk_"))
                    .map(str::to_owned)
            })
            .expect("the admin key is printed on first start")
    })
    .await
    .expect("reader");
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    for _ in 0..100 {
        if client.get(format!("{base}/readyz")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (
        Server {
            child,
            base,
            _dir: dir,
        },
        key,
    )
}

async fn post(client: &reqwest::Client, url: String, key: Option<&str>, body: Value) -> Value {
    let mut req = client.post(url).json(&body);
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status();
    let value: Value = resp.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{status}: {value}");
    value
}

async fn prepare(server: &Server, admin: &str, pairs: usize) -> Vec<(String, String)> {
    let client = reqwest::Client::new();
    let clinician = post(
        &client,
        format!("{}/api/staff", server.base),
        Some(admin),
        json!({"role": "clinician", "display_name": "Bench Clinician"}),
    )
    .await;
    let clinician_id = clinician["id"].as_str().expect("staff id").to_owned();
    let now = chrono::Utc::now().to_rfc3339();
    let mut out = Vec::with_capacity(pairs);
    for _ in 0..pairs {
        let visit = post(
            &client,
            format!("{}/api/visits", server.base),
            Some(admin),
            json!({"clinician_id": clinician_id, "scheduled_at": now, "duration_minutes": 30,
                   "patient": {"name": "Bench Patient"}}),
        )
        .await;
        let id = visit["id"].as_str().expect("visit id").to_owned();
        let links = post(
            &client,
            format!("{}/api/visits/{id}/links", server.base),
            Some(admin),
            json!({}),
        )
        .await;
        out.push((
            id,
            links["patient"]["code"].as_str().expect("code").to_owned(),
        ));
    }
    out
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let args: Vec<String> = std::env::args().collect();
    let bench = args.iter().any(|a| a == "--bench");
    let postgres = args.iter().any(|a| a == "--postgres");
    let numbers: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let pairs = numbers
        .first()
        .copied()
        .unwrap_or(if bench { 5000 } else { 40 });
    let concurrency = numbers
        .get(1)
        .copied()
        .unwrap_or(if bench { 32 } else { 4 });

    let (server, admin) = start_server(postgres).await;
    let work = Arc::new(prepare(&server, &admin, pairs).await);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .expect("client");
    let next = Arc::new(AtomicUsize::new(0));
    // A profiler attached to the server (docs/performance.md) starts on this line.
    eprintln!("prepared {pairs} pairs; measuring");
    let cpu_before = cpu_seconds(server.child.id());
    let pg_before = if postgres {
        postgres_cpu_seconds()
    } else {
        0.0
    };
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (work, next, client, base) = (
            work.clone(),
            next.clone(),
            client.clone(),
            server.base.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((visit, code)) = work.get(i) else {
                    break;
                };
                let t = Instant::now();
                let redeem = client
                    .post(format!("{base}/api/token/redeem"))
                    .json(&json!({"code": code}))
                    .send()
                    .await;
                let start = client
                    .post(format!("{base}/api/visits/{visit}/start"))
                    .json(&json!({"code": code}))
                    .send()
                    .await;
                let ok = redeem.is_ok_and(|r| r.status().is_success())
                    && start.is_ok_and(|r| r.status().is_success());
                latencies.push((t.elapsed(), ok));
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("driver task"));
    }
    let elapsed = started.elapsed();
    let server_cpu = cpu_seconds(server.child.id()) - cpu_before;
    let pg_cpu = if postgres {
        postgres_cpu_seconds() - pg_before
    } else {
        0.0
    };
    let failures = latencies.iter().filter(|(_, ok)| !ok).count();
    let mut sorted: Vec<Duration> = latencies.iter().map(|(d, _)| *d).collect();
    sorted.sort();
    let rate = pairs as f64 / elapsed.as_secs_f64();
    println!(
        "redeem+start: {pairs} pairs, concurrency {concurrency}, {:.2}s wall: {rate:.0} pairs/s; \
         server CPU {server_cpu:.2}s = {:.0} pairs per server core-second; \
         pair latency p50 {:.2} ms, p99 {:.2} ms; failures {failures}",
        elapsed.as_secs_f64(),
        pairs as f64 / server_cpu.max(0.001),
        percentile(&sorted, 0.50).as_secs_f64() * 1000.0,
        percentile(&sorted, 0.99).as_secs_f64() * 1000.0,
    );
    if postgres {
        println!(
            "PostgreSQL processes CPU {pg_cpu:.2}s; bedside + PostgreSQL = {:.0} pairs per core-second",
            pairs as f64 / (server_cpu + pg_cpu).max(0.001),
        );
    }
    assert_eq!(failures, 0, "every redeem+start pair succeeds");
}
