//! A small fake of the Amazon Chime SDK Meetings REST API for the signaling tests of Chime
//! visits: `POST /meetings` (idempotent on ClientRequestToken), `POST
//! /meetings/{MeetingId}/attendees` (idempotent on ExternalUserId, as the real API: the same
//! attendee and JoinToken again), `DELETE /meetings/{MeetingId}/attendees/{AttendeeId}` and
//! `DELETE /meetings/{MeetingId}` (204, or 404 `NotFoundException` for an unknown one),
//! answering the shapes the adapter reads. The api crate's tests hold the thorough fake
//! (error codes, validation); this one only has to let a visit start and record what was
//! called.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use serde_json::{Value, json};

#[derive(Default)]
struct Calls {
    /// ClientRequestToken → MeetingId, of the meetings that exist.
    meetings: HashMap<String, String>,
    /// Meetings created so far (names the next one).
    created: usize,
    /// (MeetingId, ExternalUserId) → the attendee, of the attendees that exist.
    attendees: HashMap<(String, String), Value>,
    /// Attendees deleted with DeleteAttendee, in order.
    deleted_attendees: Vec<Value>,
    /// Operation names in order, with the MeetingId they named.
    log: Vec<(&'static str, String)>,
    /// While set, every call answers 503 ServiceUnavailableException (after being logged).
    failing: bool,
}

type Shared = Arc<Mutex<Calls>>;

fn lock(state: &Shared) -> MutexGuard<'_, Calls> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

/// The fake, serving on 127.0.0.1 until dropped.
pub struct ChimeFake {
    /// Base URL for `chime.endpoint_url`.
    pub url: String,
    state: Shared,
    task: tokio::task::JoinHandle<()>,
}

/// Whether AWS credentials are in the environment (scripts/test sets dummy ones): the SDK
/// signs every request, fake or not. Without them a Chime test is skipped with a note, and
/// fails in CI.
pub fn credentials() -> bool {
    if std::env::var_os("AWS_ACCESS_KEY_ID").is_some() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "AWS_ACCESS_KEY_ID is not set: CI must run ./scripts/test, which sets dummy credentials"
    );
    eprintln!(
        "skipped: needs AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (any value), as ./scripts/test sets"
    );
    false
}

/// The service's 404: `x-amzn-ErrorType` and `{Code, Message, RequestId}`.
fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        [("x-amzn-errortype", "NotFoundException")],
        axum::Json(json!({
            "Code": "NotFoundException",
            "Message": "The requested resource does not exist.",
            "RequestId": "00000000-0000-4000-8000-000000000404",
        })),
    )
        .into_response()
}

/// The service's 503, as the API sends it.
fn unavailable() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [("x-amzn-errortype", "ServiceUnavailableException")],
        axum::Json(json!({
            "Code": "ServiceUnavailableException",
            "Message": "The service is currently unavailable.",
            "RequestId": "00000000-0000-4000-8000-000000000503",
        })),
    )
        .into_response()
}

async fn create_meeting(State(state): State<Shared>, body: axum::Json<Value>) -> Response {
    let token = body["ClientRequestToken"].as_str().unwrap_or_default();
    let mut calls = lock(&state);
    if calls.failing {
        calls.log.push(("CreateMeeting", String::new()));
        return unavailable();
    }
    let id = match calls.meetings.get(token) {
        Some(id) => id.clone(),
        None => {
            calls.created += 1;
            let id = format!("{:08x}-0000-4000-8000-000000000000", calls.created);
            calls.meetings.insert(token.to_owned(), id.clone());
            id
        }
    };
    calls.log.push(("CreateMeeting", id.clone()));
    let host = format!("{}.m2.ue1.app.chime.aws", &id[..8]);
    axum::Json(json!({"Meeting": {
        "MeetingId": id,
        "ExternalMeetingId": body["ExternalMeetingId"],
        "MediaRegion": body["MediaRegion"],
        "MediaPlacement": {
            "AudioHostUrl": format!("{host}:3478"),
            "SignalingUrl": format!("wss://signal.{host}/control/{id}"),
            "TurnControlUrl": "https://2713.cell.us-east-1.meetings.chime.aws/v2/turn_sessions",
        },
    }}))
    .into_response()
}

async fn create_attendee(
    State(state): State<Shared>,
    Path(meeting): Path<String>,
    body: axum::Json<Value>,
) -> Response {
    let user = body["ExternalUserId"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mut calls = lock(&state);
    calls.log.push(("CreateAttendee", meeting.clone()));
    if calls.failing {
        return unavailable();
    }
    if !calls.meetings.values().any(|id| *id == meeting) {
        return not_found();
    }
    let serial = calls.log.len();
    let attendee = calls
        .attendees
        .entry((meeting, user.clone()))
        .or_insert_with(|| {
            json!({
                "AttendeeId": format!("{serial:08x}-1111-4000-8000-000000000000"),
                "ExternalUserId": user,
                "JoinToken": api::tokens::random_base62(48),
            })
        })
        .clone();
    axum::Json(json!({"Attendee": attendee})).into_response()
}

async fn delete_attendee(
    State(state): State<Shared>,
    Path((meeting, attendee)): Path<(String, String)>,
) -> Response {
    let mut calls = lock(&state);
    calls.log.push(("DeleteAttendee", meeting.clone()));
    if calls.failing {
        return unavailable();
    }
    let key = calls
        .attendees
        .iter()
        .find(|((m, _), a)| *m == meeting && a["AttendeeId"] == attendee.as_str())
        .map(|(key, _)| key.clone());
    match key.and_then(|key| calls.attendees.remove(&key)) {
        Some(gone) => {
            calls.deleted_attendees.push(gone);
            StatusCode::NO_CONTENT.into_response()
        }
        None => not_found(),
    }
}

async fn delete_meeting(State(state): State<Shared>, Path(meeting): Path<String>) -> Response {
    let mut calls = lock(&state);
    calls.log.push(("DeleteMeeting", meeting.clone()));
    if calls.failing {
        return unavailable();
    }
    let before = calls.meetings.len();
    calls.meetings.retain(|_, id| *id != meeting);
    if calls.meetings.len() == before {
        return not_found();
    }
    calls.attendees.retain(|(m, _), _| *m != meeting);
    StatusCode::NO_CONTENT.into_response()
}

impl ChimeFake {
    /// Serves the fake on an ephemeral 127.0.0.1 port.
    pub async fn start() -> std::io::Result<Self> {
        let state = Shared::default();
        let router = Router::new()
            .route("/meetings", post(create_meeting))
            .route("/meetings/{meeting}/attendees", post(create_attendee))
            .route(
                "/meetings/{meeting}/attendees/{attendee}",
                delete(delete_attendee),
            )
            .route("/meetings/{meeting}", delete(delete_meeting))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(Self { url, state, task })
    }

    /// Makes `config` a node that can run Chime visits against this fake (SFU visits stay
    /// the default), with short AWS timeouts.
    pub fn configure(&self, config: &mut api::config::Config) {
        config.chime.enabled = true;
        config.chime.endpoint_url = Some(self.url.clone());
        config.aws.region = Some("us-east-1".to_owned());
        config.aws.endpoint_url = Some(self.url.clone());
        config.aws.connect_timeout_ms = 500;
        config.aws.attempt_timeout_ms = 2_000;
        config.aws.operation_timeout_ms = 5_000;
        config.aws.max_attempts = 2;
    }

    /// While `true`, every call answers 503 ServiceUnavailableException.
    pub fn set_failing(&self, failing: bool) {
        lock(&self.state).failing = failing;
    }

    /// The attendees deleted so far (`{AttendeeId, ExternalUserId, JoinToken}`), in order.
    pub fn deleted_attendees(&self) -> Vec<Value> {
        lock(&self.state).deleted_attendees.clone()
    }

    /// The MeetingIds of every call of `operation` so far.
    pub fn calls_of(&self, operation: &str) -> Vec<String> {
        lock(&self.state)
            .log
            .iter()
            .filter(|(op, _)| *op == operation)
            .map(|(_, id)| id.clone())
            .collect()
    }
}

impl Drop for ChimeFake {
    fn drop(&mut self) {
        self.task.abort();
    }
}
