//! SIGTERM to a real `bedside serve` with live visits: every connected client is told
//! (`server_shutdown`, then close 4503), every departure is in the audit chain, and the
//! process exits 0 within `shutdown.drain_seconds`.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

mod common;

use common::{Rest, TestResult};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Live visits when the signal comes.
const VISITS: usize = 3;
/// `shutdown.drain_seconds` for this test.
const DRAIN_SECONDS: u64 = 5;
/// How long any single expected frame may take.
const FRAME_WAIT: Duration = Duration::from_secs(10);

/// A `bedside serve` child on 127.0.0.1 and its API, killed if the test fails first.
struct Serve {
    child: Child,
    rest: Rest,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    /// Starts the binary on `data` and waits until it listens.
    fn start(data: &std::path::Path) -> TestResult<Serve> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_bedside"))
            .arg("--data-dir")
            .arg(data)
            .args([
                "serve",
                "--udp",
                "127.0.0.1:0",
                "--announce-ip",
                "127.0.0.1",
                "--http",
                &format!("127.0.0.1:{port}"),
            ])
            .env("BEDSIDE_SHUTDOWN__DRAIN_SECONDS", DRAIN_SECONDS.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let mut serve = Serve {
            child,
            rest: Rest::new(format!("http://127.0.0.1:{port}"), String::new())?,
        };
        // Both pipes are drained to the end, so the child never blocks on (or loses) one.
        let (key_tx, key_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(key) = line.split_whitespace().find(|w| w.starts_with("bsk_")) {
                    let _ = key_tx.send(key.to_owned());
                }
            }
        });
        let (listening_tx, listening_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("listening on") {
                    let _ = listening_tx.send(());
                }
            }
        });
        serve.rest.admin_key = key_rx.recv_timeout(Duration::from_secs(30))?;
        listening_rx.recv_timeout(Duration::from_secs(30))?;
        Ok(serve)
    }

    async fn join(&self, grant: &Value) -> TestResult<(Socket, Value)> {
        let (mut ws, _) = tokio_tungstenite::connect_async(self.rest.ws_url()).await?;
        ws.send(Message::Text(
            json!({"type": "join", "grant": grant}).to_string().into(),
        ))
        .await?;
        let joined = expect(&mut ws, "joined").await?;
        Ok((ws, joined))
    }
}

/// The next frame of type `kind`, skipping others.
async fn expect(ws: &mut Socket, kind: &str) -> TestResult<Value> {
    loop {
        let frame = tokio::time::timeout(FRAME_WAIT, ws.next())
            .await?
            .ok_or("socket ended")??;
        match frame {
            Message::Text(text) => {
                let value: Value = serde_json::from_str(&text)?;
                if value["type"] == kind {
                    return Ok(value);
                }
            }
            Message::Close(close) => return Err(format!("closed {close:?} before {kind}").into()),
            _ => {}
        }
    }
}

/// The close code, skipping frames before it.
async fn close_code(ws: &mut Socket) -> TestResult<u16> {
    loop {
        let frame = tokio::time::timeout(FRAME_WAIT, ws.next())
            .await?
            .ok_or("socket ended without a close frame")??;
        if let Message::Close(close) = frame {
            return Ok(close.map_or(1005, |c| u16::from(c.code)));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_live_visits_drains_audits_every_departure_and_exits_0() -> TestResult {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let mut serve = Serve::start(&data)?;
    let mut sockets = Vec::new();
    for _ in 0..VISITS {
        let visit = serve.rest.visit().await?;
        let (mut clinician, _) = serve.join(&visit.clinician["grant"]).await?;
        let (patient, joined) = serve.join(&visit.patient["grant"]).await?;
        // Admitted: both are in the call.
        clinician
            .send(Message::Text(
                json!({"type": "admit", "participant": joined["participant"]})
                    .to_string()
                    .into(),
            ))
            .await?;
        expect(&mut clinician, "participant_admitted").await?;
        sockets.push(clinician);
        sockets.push(patient);
    }

    let signalled = Instant::now();
    let killed = Command::new("kill")
        .args(["-TERM", &serve.child.id().to_string()])
        .status()?;
    assert!(killed.success());
    for ws in &mut sockets {
        let told = expect(ws, "server_shutdown").await?;
        assert!(told["retry_after_ms"].as_u64().is_some(), "{told}");
        assert_eq!(close_code(ws).await?, 4503);
    }
    let status = loop {
        if let Some(status) = serve.child.try_wait()? {
            break status;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(DRAIN_SECONDS + 3),
            "still running {:?} after SIGTERM",
            signalled.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let drain = signalled.elapsed();
    println!("SIGTERM to exit with {VISITS} live visits: {drain:?}");
    assert!(status.success(), "exit status {status:?}");
    assert!(
        drain < Duration::from_secs(DRAIN_SECONDS),
        "drained in {drain:?}"
    );

    // Every departure is in the chain, and the chain holds.
    let db = sqlx::SqlitePool::connect(&format!("sqlite://{}/bedside.db", data.display())).await?;
    let departures: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM audit WHERE event = 'participant.left' \
         AND details LIKE '%\"reason\":\"server_shutdown\"%'",
    )
    .fetch_one(&db)
    .await?;
    assert_eq!(departures, i64::try_from(sockets.len())?);
    db.close().await;
    let verified = Command::new(env!("CARGO_BIN_EXE_bedside"))
        .arg("--data-dir")
        .arg(&data)
        .args(["audit", "verify"])
        .output()?;
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stdout)
    );
    Ok(())
}
