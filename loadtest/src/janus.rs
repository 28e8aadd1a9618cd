//! Janus's VideoRoom plugin as the server under load (`--target janus`), for the side-by-side
//! comparison of issue 15 (`scripts/bench-vs-janus`).
//!
//! A visit is a VideoRoom room for two publishers, created and destroyed over one run-wide
//! admin session. Each participant is a Janus session with two handles, as Janus's own
//! clients do: a publisher handle (`joinandconfigure` with a light peer's send-only offer)
//! and a subscriber handle (`join` as subscriber to the other participant's feed once Janus
//! announces it; Janus offers, a second str0m session answers, `start`). Events come by
//! long poll. The media, the pacing and the receiver statistics are the light peer's
//! ([`crate::lite`]), so both servers meet the same load and are measured alike.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use serde_json::{Value, json};
use str0m::Input;
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::media::Direction;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

use crate::lite::{self, RtpMedia, Session};
use crate::peer::{PeerError, Seen};

/// The VideoRoom plugin's package name.
const VIDEOROOM: &str = "janus.plugin.videoroom";
/// Events one long poll may return.
const MAX_EVENTS: u32 = 16;
/// The largest datagram read.
const MAX_DATAGRAM: usize = 2048;

/// A Janus HTTP API call failed.
#[derive(Debug, thiserror::Error)]
pub enum JanusError {
    /// No answer, or an answer that was not JSON.
    #[error("{step}: {source}")]
    Transport {
        /// Which call.
        step: &'static str,
        /// Why.
        source: reqwest::Error,
    },
    /// Janus or the VideoRoom plugin refused it.
    #[error("{step}: error {code}: {reason}")]
    Refused {
        /// Which call.
        step: &'static str,
        /// Janus's error code.
        code: i64,
        /// Its reason.
        reason: String,
    },
    /// An answer without a field it must have.
    #[error("{step}: answer without {field}")]
    Missing {
        /// Which call.
        step: &'static str,
        /// The field.
        field: &'static str,
    },
}

impl JanusError {
    /// A short, low-cardinality reason for the report.
    #[must_use]
    pub fn reason(&self) -> String {
        match self {
            JanusError::Transport { step, .. } => format!("janus {step}: no answer"),
            JanusError::Refused { step, code, .. } => format!("janus {step}: error {code}"),
            JanusError::Missing { step, field } => format!("janus {step}: no {field}"),
        }
    }
}

/// Janus's HTTP API at one base URL (`http://10.77.0.1:8088/janus`).
#[derive(Debug, Clone)]
pub struct Janus {
    base: String,
    http: reqwest::Client,
}

/// A session and a VideoRoom handle in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handle {
    /// The session id.
    pub session: u64,
    /// The handle id.
    pub handle: u64,
}

impl Janus {
    /// A client of the API at `base`.
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(base: &str) -> Result<Janus, reqwest::Error> {
        Ok(Janus {
            base: base.trim_end_matches('/').to_owned(),
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(usize::MAX)
                .build()?,
        })
    }

    /// The base URL.
    #[must_use]
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Posts `body` (a transaction id added) to `path` and returns Janus's answer, or its
    /// `error` as [`JanusError::Refused`].
    async fn post(
        &self,
        step: &'static str,
        path: &str,
        mut body: Value,
    ) -> Result<Value, JanusError> {
        body["transaction"] = json!(format!("{:x}", rand::random::<u64>()));
        let answer: Value = (self
            .http
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send())
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|source| JanusError::Transport { step, source })?
        .json()
        .await
        .map_err(|source| JanusError::Transport { step, source })?;
        if let Some((code, reason)) = refusal(&answer) {
            return Err(JanusError::Refused { step, code, reason });
        }
        Ok(answer)
    }

    /// A new session.
    ///
    /// # Errors
    /// When Janus does not make one.
    pub async fn create_session(&self) -> Result<u64, JanusError> {
        let step = "create";
        let answer = self.post(step, "", json!({"janus": "create"})).await?;
        id(step, &answer["data"]["id"])
    }

    /// A VideoRoom handle in `session`.
    ///
    /// # Errors
    /// When Janus does not attach one.
    pub async fn attach(&self, session: u64) -> Result<Handle, JanusError> {
        let step = "attach";
        let body = json!({"janus": "attach", "plugin": VIDEOROOM});
        let answer = self.post(step, &format!("/{session}"), body).await?;
        Ok(Handle {
            session,
            handle: id(step, &answer["data"]["id"])?,
        })
    }

    /// Sends a VideoRoom request (and a JSEP) on `handle`: the answer is the plugin's data
    /// for synchronous requests, empty for those answered by an event (`ack`); a refusal by
    /// Janus or by the plugin is an error.
    ///
    /// # Errors
    /// When Janus or the plugin refuses it.
    pub async fn message(
        &self,
        step: &'static str,
        handle: Handle,
        body: Value,
        jsep: Option<Value>,
    ) -> Result<Value, JanusError> {
        let mut message = json!({"janus": "message", "body": body});
        if let Some(jsep) = jsep {
            message["jsep"] = jsep;
        }
        let path = format!("/{}/{}", handle.session, handle.handle);
        let answer = self.post(step, &path, message).await?;
        Ok(answer["plugindata"]["data"].clone())
    }

    /// The session's next events (a long poll: Janus answers after 30 s with a keep-alive
    /// when nothing happened).
    ///
    /// # Errors
    /// When the poll fails.
    pub async fn poll(&self, session: u64) -> Result<Vec<Value>, JanusError> {
        let step = "poll";
        let url = format!("{}/{session}?maxev={MAX_EVENTS}", self.base);
        let answer: Value = (self.http.get(url).send().await)
            .and_then(reqwest::Response::error_for_status)
            .map_err(|source| JanusError::Transport { step, source })?
            .json()
            .await
            .map_err(|source| JanusError::Transport { step, source })?;
        Ok(match answer {
            Value::Array(events) => events,
            event => vec![event],
        })
    }

    /// Ends a session and its handles (and with them their peer connections).
    ///
    /// # Errors
    /// When Janus does not answer or refuses.
    pub async fn destroy(&self, session: u64) -> Result<(), JanusError> {
        let body = json!({"janus": "destroy"});
        self.post("destroy", &format!("/{session}"), body)
            .await
            .map(drop)
    }

    /// A room for one visit: two publishers, Opus and VP8, no bitrate cap.
    ///
    /// # Errors
    /// When the plugin does not create it.
    pub async fn create_room(&self, admin: Handle) -> Result<u64, JanusError> {
        let step = "create room";
        let body = json!({
            "request": "create",
            "publishers": 2,
            "audiocodec": "opus",
            "videocodec": "vp8",
            "bitrate": 0,
        });
        let data = self.message(step, admin, body, None).await?;
        id(step, &data["room"])
    }

    /// Destroys a room made by [`Janus::create_room`].
    ///
    /// # Errors
    /// When the plugin refuses.
    pub async fn destroy_room(&self, admin: Handle, room: u64) -> Result<(), JanusError> {
        let body = json!({"request": "destroy", "room": room});
        self.message("destroy room", admin, body, None)
            .await
            .map(drop)
    }
}

/// The (code, reason) of a refusal in an answer or an event: Janus's own `error`, or the
/// VideoRoom plugin's `error_code` in its data.
fn refusal(answer: &Value) -> Option<(i64, String)> {
    let data = &answer["plugindata"]["data"];
    let (code, reason) = if answer["janus"] == "error" {
        (&answer["error"]["code"], &answer["error"]["reason"])
    } else {
        (data.get("error_code")?, &data["error"])
    };
    Some((
        code.as_i64().unwrap_or(0),
        reason.as_str().unwrap_or("").to_owned(),
    ))
}

fn id(step: &'static str, value: &Value) -> Result<u64, JanusError> {
    value
        .as_u64()
        .ok_or(JanusError::Missing { step, field: "id" })
}

/// What one event of a participant's session means to it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Event {
    /// The handle it is about.
    pub sender: Option<u64>,
    /// Its JSEP: (`offer` or `answer`, SDP).
    pub jsep: Option<(String, String)>,
    /// The feeds of the publishers it lists (`joined`, or the announcement of a new one).
    pub publishers: Vec<u64>,
    /// The plugin's or Janus's error: (code, reason).
    pub error: Option<(i64, String)>,
    /// Janus hung the handle's peer connection up.
    pub hangup: bool,
}

impl Event {
    /// Reads one event of a long poll.
    #[must_use]
    pub fn read(event: &Value) -> Event {
        let data = &event["plugindata"]["data"];
        let jsep = match (
            event["jsep"]["type"].as_str(),
            event["jsep"]["sdp"].as_str(),
        ) {
            (Some(kind), Some(sdp)) => Some((kind.to_owned(), sdp.to_owned())),
            _ => None,
        };
        Event {
            sender: event["sender"].as_u64(),
            jsep,
            publishers: (data["publishers"].as_array().into_iter().flatten())
                .filter_map(|p| p["id"].as_u64())
                .collect(),
            error: refusal(event),
            hangup: event["janus"] == "hangup",
        }
    }
}

/// Who a Janus participant is.
#[derive(Debug, Clone)]
pub struct Seat {
    /// The API.
    pub janus: Janus,
    /// The visit's room.
    pub room: u64,
    /// Its feed id.
    pub me: u64,
    /// The other participant's feed id, which it subscribes to.
    pub other: u64,
    /// It gives up when this passes.
    pub deadline: Instant,
}

/// One participant of a Janus visit: publishes the run's media, subscribes to the other's,
/// fills `seen` as the light peer does, stops sending when `stop` flips and leaves (ending
/// its session) on any frame from `leave`.
///
/// # Errors
/// When Janus refuses a step, str0m or a socket fails, or the deadline passes first.
pub async fn participant(
    seat: Seat,
    rtp: Arc<RtpMedia>,
    seen: Arc<Seen>,
    leave: mpsc::Receiver<Message>,
    stop: watch::Receiver<bool>,
) -> Result<(), PeerError> {
    let janus = seat.janus.clone();
    let session = janus.create_session().await?;
    let (events_tx, events) = mpsc::channel(MAX_EVENTS as usize);
    let poller = tokio::spawn(poll_events(janus.clone(), session, events_tx));
    let result = take_part(&seat, session, &rtp, &seen, events, leave, stop).await;
    if let Err(PeerError::Janus(error)) = &result {
        let _ = seen.failure.set(error.reason());
    }
    poller.abort();
    let _ = janus.destroy(session).await;
    result
}

/// Forwards the session's events until the participant stops reading them.
async fn poll_events(janus: Janus, session: u64, events: mpsc::Sender<Value>) {
    while !events.is_closed() {
        match janus.poll(session).await {
            Ok(batch) => {
                for event in batch {
                    if events.send(event).await.is_err() {
                        return;
                    }
                }
            }
            // Janus is gone or busy: the participant's deadline bounds the wait.
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
        }
    }
}

async fn take_part(
    seat: &Seat,
    session: u64,
    rtp: &RtpMedia,
    seen: &Seen,
    mut events: mpsc::Receiver<Value>,
    mut leave: mpsc::Receiver<Message>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), PeerError> {
    let janus = &seat.janus;
    let target: IpAddr = lite::host_ip(janus.base());
    let mut publisher = Session::new(lite::bind_towards(target).await?, false)?;
    let mut subscriber = Session::new(lite::bind_towards(target).await?, false)?;
    let publishing = janus.attach(session).await?;
    let subscribing = janus.attach(session).await?;

    let (offer, pending, audio_mid, video_mid) =
        lite::publish_offer(&mut publisher.rtc, rtp, Direction::SendOnly)?;
    let mut pending = Some(pending);
    let join = json!({
        "request": "joinandconfigure",
        "room": seat.room,
        "ptype": "publisher",
        "id": seat.me,
        "audio": true,
        "video": true,
    });
    let jsep = json!({"type": "offer", "sdp": offer, "trickle": false});
    janus
        .message("publish", publishing, join, Some(jsep))
        .await?;

    let mut subscribed = false;
    let mut senders = Vec::new();
    let mut stopped = *stop.borrow();
    let deadline = tokio::time::Instant::from_std(seat.deadline);
    let (mut up, mut down) = (vec![0u8; MAX_DATAGRAM], vec![0u8; MAX_DATAGRAM]);
    loop {
        publisher.drain(seen).await?;
        subscriber.drain(seen).await?;
        if publisher.connected && senders.is_empty() && !stopped {
            senders = lite::senders(&publisher.rtc, (audio_mid, video_mid), rtp, Instant::now());
        }
        let media_due = (!stopped)
            .then(|| senders.iter().map(lite::Sender::next).min())
            .flatten();
        let timers = publisher.timeout.min(subscriber.timeout);
        let wake = media_due.map_or(timers, |due| due.min(timers));
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => return Err(PeerError::Deadline),
            () = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {
                let now = Instant::now();
                if !stopped {
                    lite::send_due(&mut publisher, &mut senders, now, seen);
                }
                for session in [&mut publisher, &mut subscriber] {
                    if session.timeout <= now {
                        session.rtc.handle_input(Input::Timeout(now))?;
                    }
                }
            }
            received = publisher.socket.recv_from(&mut up) => {
                let (len, from) = received?;
                publisher.receive(len, from, &up)?;
            }
            received = subscriber.socket.recv_from(&mut down) => {
                let (len, from) = received?;
                subscriber.receive(len, from, &down)?;
            }
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    stopped = true;
                }
            }
            _ = leave.recv() => return Ok(()),
            event = events.recv() => {
                let Some(event) = event else {
                    return Err(PeerError::Protocol("janus: the event poll ended"));
                };
                let event = Event::read(&event);
                if let Some((code, reason)) = event.error {
                    seen.errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    return Err(JanusError::Refused { step: "event", code, reason }.into());
                }
                if event.hangup {
                    return Err(PeerError::Protocol("janus: a peer connection was hung up"));
                }
                match (event.sender, event.jsep) {
                    (Some(sender), Some((kind, sdp)))
                        if sender == publishing.handle && kind == "answer" =>
                    {
                        let answer = SdpAnswer::from_sdp_string(&sdp).map_err(str0m::RtcError::from)?;
                        let pending = pending.take().ok_or(PeerError::Protocol("janus: a second answer"))?;
                        publisher.rtc.sdp_api().accept_answer(pending, answer)?;
                    }
                    (Some(sender), Some((kind, sdp)))
                        if sender == subscribing.handle && kind == "offer" =>
                    {
                        let offer = SdpOffer::from_sdp_string(&sdp).map_err(str0m::RtcError::from)?;
                        let answer = subscriber.rtc.sdp_api().accept_offer(offer)?;
                        let jsep = json!({"type": "answer", "sdp": answer.to_sdp_string(), "trickle": false});
                        let start = json!({"request": "start", "room": seat.room});
                        janus.message("start", subscribing, start, Some(jsep)).await?;
                    }
                    _ => {}
                }
                if !subscribed && event.publishers.contains(&seat.other) {
                    subscribed = true;
                    let join = json!({
                        "request": "join",
                        "ptype": "subscriber",
                        "room": seat.room,
                        "streams": [{"feed": seat.other}],
                    });
                    janus.message("subscribe", subscribing, join, None).await?;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_joined_event_gives_the_answer_and_the_publishers_already_there() {
        let event = json!({
            "janus": "event", "session_id": 1, "sender": 7,
            "plugindata": {"plugin": VIDEOROOM, "data": {
                "videoroom": "joined", "room": 3, "id": 1,
                "publishers": [{"id": 2, "streams": []}],
            }},
            "jsep": {"type": "answer", "sdp": "v=0\r\n"},
        });
        assert_eq!(
            Event::read(&event),
            Event {
                sender: Some(7),
                jsep: Some(("answer".to_owned(), "v=0\r\n".to_owned())),
                publishers: vec![2],
                error: None,
                hangup: false,
            }
        );
    }

    #[test]
    fn plugin_and_janus_errors_are_read_as_errors() {
        let plugin = json!({
            "janus": "event", "sender": 7,
            "plugindata": {"plugin": VIDEOROOM, "data": {
                "videoroom": "event", "error_code": 428, "error": "No such feed (2)",
            }},
        });
        assert_eq!(
            Event::read(&plugin).error,
            Some((428, "No such feed (2)".to_owned()))
        );
        let janus = json!({"janus": "error", "error": {"code": 458, "reason": "No such session"}});
        assert_eq!(
            Event::read(&janus).error,
            Some((458, "No such session".to_owned()))
        );
        assert_eq!(refusal(&json!({"janus": "success"})), None);
    }

    #[test]
    fn keepalives_and_hangups_carry_nothing_to_act_on_but_the_hangup() {
        assert_eq!(
            Event::read(&json!({"janus": "keepalive"})),
            Event::default()
        );
        let hangup = Event::read(&json!({"janus": "hangup", "sender": 9, "reason": "DTLS alert"}));
        assert!(hangup.hangup);
        assert_eq!(hangup.sender, Some(9));
    }
}
