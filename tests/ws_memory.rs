//! A burst of WebSockets that never send `join` costs little while they are open and gives
//! its memory back once the server has closed them (the process's resident set returns near
//! its baseline). Alone in its binary, so that no other test moves the resident set.

mod common;

use std::time::Duration;

use common::{Server, TestResult};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Silent sockets in the burst.
const SOCKETS: usize = 1_000;
/// Growth of the resident set allowed after the burst is over.
const GIVEN_BACK_WITHIN: u64 = 24 * 1024 * 1024;

/// This process's resident set, bytes (Linux `/proc/self/status`).
fn rss() -> TestResult<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .ok_or("no VmRSS in /proc/self/status")?;
    Ok(kib * 1024)
}

/// A socket upgraded to a WebSocket on `/ws` that sends nothing more; the client side is
/// raw TCP, so it holds no WebSocket buffers of its own.
async fn silent_socket(server: &str) -> TestResult<TcpStream> {
    let mut stream = TcpStream::connect(server).await?;
    let upgrade = format!(
        "GET /ws HTTP/1.1\r\nHost: {server}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(upgrade.as_bytes()).await?;
    let mut head = Vec::new();
    let mut byte = [0; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await? == 0 {
            return Err("closed during the upgrade".into());
        }
        head.push(byte[0]);
    }
    if !head.starts_with(b"HTTP/1.1 101") {
        return Err(format!("not upgraded: {}", String::from_utf8_lossy(&head)).into());
    }
    Ok(stream)
}

/// Opens `count` silent sockets at once and waits until the server has closed every one.
async fn burst(server: &str, count: usize) -> TestResult<u64> {
    let mut sockets = Vec::with_capacity(count);
    for _ in 0..count {
        sockets.push(silent_socket(server).await?);
    }
    let open = rss()?;
    let mut closing = tokio::task::JoinSet::new();
    for mut socket in sockets {
        closing.spawn(async move {
            let mut buf = [0; 256];
            // The close frame (4401, no join in time), then EOF.
            while let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_secs(10), socket.read(&mut buf)).await
            {
                if n == 0 {
                    return true;
                }
            }
            false
        });
    }
    while let Some(closed) = closing.join_next().await {
        if !closed? {
            return Err("a silent socket was not closed by the server".into());
        }
    }
    Ok(open)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_websockets_give_their_memory_back() -> TestResult {
    let _ = bedside::http::raise_fd_limit();
    let limits = signaling::Limits {
        join_timeout: Duration::from_millis(500),
        ..signaling::Limits::default()
    };
    let server = Server::start_with(limits, |config| {
        config.http.max_connections_per_ip = 4 * SOCKETS;
    })
    .await?;
    let address = server.base.trim_start_matches("http://").to_owned();
    // A first, smaller burst settles the allocator's arenas and the runtime's buffers.
    burst(&address, SOCKETS / 4).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let baseline = rss()?;
    let open = burst(&address, SOCKETS).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = rss()?;
    let mib = |bytes: u64| bytes as f64 / 1_048_576.0;
    println!(
        "RSS with {SOCKETS} silent sockets: baseline {:.1} MiB, all open {:.1} MiB \
         ({:.1} KiB a socket, both ends), after they closed {:.1} MiB",
        mib(baseline),
        mib(open),
        (open.saturating_sub(baseline)) as f64 / 1024.0 / SOCKETS as f64,
        mib(after)
    );
    assert!(
        after.saturating_sub(baseline) < GIVEN_BACK_WITHIN,
        "the resident set grew by {:.1} MiB and stayed",
        mib(after.saturating_sub(baseline))
    );
    Ok(())
}
