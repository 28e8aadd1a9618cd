//! The HTTP server's limits against clients that hold connections: a request whose headers
//! never finish, an idle keep-alive connection, and a flood of idle connections from one
//! address — none of them keeps others from being served.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use common::{Server, TestResult};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};

/// How long a client may take to send its headers in these tests.
const HEADER_TIMEOUT: Duration = Duration::from_millis(400);

async fn server(per_ip: usize) -> TestResult<Server> {
    Server::start_with(signaling::Limits::default(), |config| {
        config.http.header_read_timeout_ms =
            u64::try_from(HEADER_TIMEOUT.as_millis()).unwrap_or(400);
        config.http.max_connections_per_ip = per_ip;
    })
    .await
}

fn address(server: &Server) -> TestResult<SocketAddr> {
    Ok(server.base.trim_start_matches("http://").parse()?)
}

/// A connection to `server` from the loopback address `from` (all of 127.0.0.0/8 is local).
async fn connect_from(server: SocketAddr, from: IpAddr) -> TestResult<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    Ok(socket.connect(server).await?)
}

/// Reads until the server closes the connection (or `within` passes); what it sent.
async fn until_closed(stream: &mut TcpStream, within: Duration) -> TestResult<(String, bool)> {
    let deadline = tokio::time::Instant::now() + within;
    let mut seen = Vec::new();
    let mut buf = [0; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return Ok((String::from_utf8_lossy(&seen).into_owned(), false)),
            Ok(Ok(0) | Err(_)) => return Ok((String::from_utf8_lossy(&seen).into_owned(), true)),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_that_never_finish_and_idle_keep_alives_are_closed() -> TestResult {
    let server = server(256).await?;
    let addr = address(&server)?;

    let mut slow = TcpStream::connect(addr).await?;
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await?;
    let started = Instant::now();
    let (_, closed) = until_closed(&mut slow, HEADER_TIMEOUT * 5).await?;
    assert!(closed, "a request whose headers never finish is closed");
    println!("slow headers closed after {:?}", started.elapsed());

    let mut idle = TcpStream::connect(addr).await?;
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await?;
    let started = Instant::now();
    let (answer, closed) = until_closed(&mut idle, HEADER_TIMEOUT * 5).await?;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(closed, "an idle keep-alive connection is closed");
    assert!(
        started.elapsed() >= HEADER_TIMEOUT / 2,
        "not before its time"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_idle_connections_from_one_address_locks_nobody_else_out() -> TestResult {
    let _ = bedside::http::raise_fd_limit();
    const PER_IP: usize = 50;
    const FLOOD: usize = 1_100;
    let server = server(PER_IP).await?;
    let addr = address(&server)?;
    let flooder: IpAddr = "127.0.0.2".parse()?;
    let mut flood = Vec::with_capacity(FLOOD);
    for _ in 0..FLOOD {
        flood.push(connect_from(addr, flooder).await?);
    }
    // Those over the cap are closed at once; the rest wait for their header timeout.
    let mut refused = 0;
    for stream in &mut flood {
        let mut byte = [0; 1];
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_millis(20), stream.read(&mut byte)).await
        {
            refused += 1;
        }
    }
    assert!(
        refused >= FLOOD - PER_IP,
        "only {refused} of {FLOOD} refused"
    );
    // Meanwhile another address is served at once.
    let healthz = tokio::time::timeout(Duration::from_secs(2), server.get_text("/healthz")).await;
    assert!(matches!(healthz, Ok(Ok(_))), "{healthz:?}");
    let metrics = server.get_text("/metrics").await?;
    let counted = common::metric_sum(
        &metrics,
        "bedside_http_connections_refused_total{",
        "reason=\"per_ip\"",
    );
    assert!(
        counted >= f64::from(u32::try_from(refused)?),
        "{counted} counted, {refused} refused"
    );
    // Given back: once the flood is gone, its address is served again.
    drop(flood);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut again = connect_from(addr, flooder).await?;
    again
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await?;
    let (answer, _) = until_closed(&mut again, HEADER_TIMEOUT * 5).await?;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    Ok(())
}
