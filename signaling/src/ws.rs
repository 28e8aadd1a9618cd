//! The axum WebSocket endpoint `/ws`: one task per socket that feeds frames and time to its
//! [`Session`], performs the resulting [`Step`]s against the [`Hub`], and writes what the hub
//! queues for it. [`serve`] is generic over the socket so tests can drive it without HTTP.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::get;
use futures::{Sink, SinkExt as _, Stream, StreamExt as _};

use crate::hub::{Hub, Outbound};
use crate::protocol::{CloseCode, ServerMessage};
use crate::session::{Session, Step};

/// axum refuses frames above this multiple of [`crate::Limits::max_frame_bytes`] by dropping
/// the connection; between the two limits the session answers `frame_too_large` and the
/// socket stays open.
const HARD_LIMIT_FACTOR: usize = 4;
/// Bytes read from a socket at a time. Signaling frames are small JSON (an SDP is ~10 KiB and
/// is read in a few chunks); tungstenite's default of 128 KiB, held by every socket from its
/// upgrade on, made 1,000 silent sockets cost ~150 MiB.
const READ_BUFFER: usize = 4 * 1024;
/// Unsent bytes a socket may hold when its peer stops reading, before writes fail: a few
/// dozen of the largest frames signaling sends. Frames are written as they come, with no
/// write buffer to fill first: each is a whole message its client waits for.
const MAX_WRITE_BUFFER: usize = 1024 * 1024;

/// The `/ws` route. Merge it into the api's router.
pub fn router(hub: Arc<Hub>) -> Router {
    Router::new().route("/ws", get(upgrade)).with_state(hub)
}

async fn upgrade(State(hub): State<Arc<Hub>>, upgrade: WebSocketUpgrade) -> Response {
    let hard = hub
        .limits()
        .max_frame_bytes
        .saturating_mul(HARD_LIMIT_FACTOR);
    upgrade
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        .max_message_size(hard)
        .max_frame_size(hard)
        .on_upgrade(move |socket| serve(hub, socket))
}

/// Runs one signaling connection until it closes.
pub async fn serve<S>(hub: Arc<Hub>, socket: S)
where
    S: Stream<Item = Result<Message, axum::Error>> + Sink<Message> + Unpin,
{
    hub.metrics().connections.inc();
    let (conn, mut outbound) = hub.connect();
    let conn_id = conn.id();
    let mut conn = Some(conn);
    let mut session = Session::new(hub.limits(), Instant::now());
    let (mut sink, mut stream) = socket.split();
    loop {
        let deadline = session.deadline();
        let step = tokio::select! {
            frame = stream.next() => match frame {
                Some(Ok(Message::Text(text))) => {
                    hub.metrics().frames.with_label_values(&["in"]).inc();
                    session.on_text(Instant::now(), text.as_str())
                }
                Some(Ok(Message::Binary(bytes))) => {
                    hub.metrics().frames.with_label_values(&["in"]).inc();
                    session.on_binary(Instant::now(), bytes.len())
                }
                // The WebSocket layer answers pings itself.
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => None,
                Some(Ok(Message::Close(_)) | Err(_)) | None => break,
            },
            queued = outbound.recv() => match queued {
                Some(Outbound::Frame(message)) => {
                    if send(&hub, &mut sink, &message).await.is_err() {
                        break;
                    }
                    None
                }
                Some(Outbound::Close(code)) => {
                    session.closed();
                    close(&mut sink, code).await;
                    break;
                }
                // The hub dropped this socket (its queue overflowed): end it, keep the seat
                // for a resume.
                None => break,
            },
            () = sleep_until(deadline) => session.on_timeout(Instant::now()),
        };
        let Some(step) = step else {
            continue;
        };
        match step {
            Step::Reply(message) => {
                if send(&hub, &mut sink, &message).await.is_err() {
                    break;
                }
            }
            Step::Close(message, code) => {
                if let Some(message) = message {
                    let _ = send(&hub, &mut sink, &message).await;
                }
                close(&mut sink, code).await;
                break;
            }
            Step::Join { grant, offer } => {
                let Some(conn) = conn.take() else { continue };
                match hub.join(conn, &grant, offer).await {
                    Ok(identity) => session.seated(identity),
                    Err(refusal) => {
                        session.refused();
                        let _ = send(&hub, &mut sink, &refusal.frame).await;
                        close(&mut sink, refusal.close).await;
                        break;
                    }
                }
            }
            Step::Resume {
                grant,
                session: token,
            } => {
                let Some(conn) = conn.take() else { continue };
                match hub.resume(conn, &grant, &token).await {
                    Ok(identity) => session.seated(identity),
                    Err(refusal) => {
                        session.refused();
                        let _ = send(&hub, &mut sink, &refusal.frame).await;
                        close(&mut sink, refusal.close).await;
                        break;
                    }
                }
            }
            Step::Request(request) => {
                let Some(identity) = session.identity().cloned() else {
                    continue;
                };
                if let Err(message) = hub.request(conn_id, &identity, request).await
                    && send(&hub, &mut sink, &message).await.is_err()
                {
                    break;
                }
            }
        }
    }
    if let Some(identity) = session.identity() {
        hub.disconnected(conn_id, identity);
    }
    hub.metrics().connections.dec();
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

async fn send<S>(hub: &Hub, sink: &mut S, message: &ServerMessage) -> Result<(), ()>
where
    S: Sink<Message> + Unpin,
{
    if let ServerMessage::Error { code, .. } = message {
        hub.metrics()
            .errors
            .with_label_values(&[code.as_str()])
            .inc();
    }
    let text = serde_json::to_string(message).map_err(|_| ())?;
    hub.metrics().frames.with_label_values(&["out"]).inc();
    sink.send(Message::Text(text.into())).await.map_err(|_| ())
}

async fn close<S>(sink: &mut S, code: CloseCode)
where
    S: Sink<Message> + Unpin,
{
    let frame = CloseFrame {
        code: code.code(),
        reason: code.reason().into(),
    };
    let _ = sink.send(Message::Close(Some(frame))).await;
    let _ = sink.close().await;
}
