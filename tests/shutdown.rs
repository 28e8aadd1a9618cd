//! SIGTERM to a real `bedside serve` with live visits: every connected client is told
//! (`server_shutdown`, then close 4503), every departure is in the audit chain, and the
//! process exits 0 within `shutdown.drain_seconds`.

use std::time::{Duration, Instant};

use futures::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

mod common;

use common::TestResult;
use common::process::{Serve, audit_verify};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Live visits when the signal comes.
const VISITS: usize = 3;
/// `shutdown.drain_seconds` for this test.
const DRAIN_SECONDS: u64 = 5;
/// How long any single expected frame may take.
const FRAME_WAIT: Duration = Duration::from_secs(10);

/// Joins `grant`'s participant on a new socket; the socket and its `joined`.
async fn join(serve: &Serve, grant: &Value) -> TestResult<(Socket, Value)> {
    let (mut ws, _) = tokio_tungstenite::connect_async(serve.rest.ws_url()).await?;
    ws.send(Message::Text(
        json!({"type": "join", "grant": grant}).to_string().into(),
    ))
    .await?;
    let joined = expect(&mut ws, "joined").await?;
    Ok((ws, joined))
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
    let drain = [("BEDSIDE_SHUTDOWN__DRAIN_SECONDS", DRAIN_SECONDS.to_string())];
    let mut serve = Serve::start(&data, &drain, None)?;
    let mut sockets = Vec::new();
    for _ in 0..VISITS {
        let visit = serve.rest.visit().await?;
        let (mut clinician, _) = join(&serve, &visit.clinician["grant"]).await?;
        let (patient, joined) = join(&serve, &visit.patient["grant"]).await?;
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
    serve.signal("TERM")?;
    for ws in &mut sockets {
        let told = expect(ws, "server_shutdown").await?;
        assert!(told["retry_after_ms"].as_u64().is_some(), "{told}");
        assert_eq!(close_code(ws).await?, 4503);
    }
    let status = serve.exited(Duration::from_secs(DRAIN_SECONDS + 3)).await?;
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
    let (intact, said) = audit_verify(&data)?;
    assert!(intact, "{said}");
    Ok(())
}
