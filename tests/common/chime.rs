//! A small fake of the Amazon Chime SDK Meetings REST API for the signaling tests of Chime
//! visits: `POST /meetings` (idempotent on ClientRequestToken), `POST
//! /meetings/{MeetingId}/attendees` and `DELETE /meetings/{MeetingId}`, answering the shapes
//! the adapter reads. The api crate's tests hold the thorough fake (error codes, validation);
//! this one only has to let a visit start and record what was called.

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
    /// ClientRequestToken → MeetingId.
    meetings: HashMap<String, String>,
    /// Operation names in order, with the MeetingId they named.
    log: Vec<(&'static str, String)>,
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

async fn create_meeting(State(state): State<Shared>, body: axum::Json<Value>) -> Response {
    let token = body["ClientRequestToken"].as_str().unwrap_or_default();
    let mut calls = lock(&state);
    let next = calls.meetings.len() + 1;
    let id = calls
        .meetings
        .entry(token.to_owned())
        .or_insert_with(|| format!("{next:08x}-0000-4000-8000-000000000000"))
        .clone();
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
    let mut calls = lock(&state);
    calls.log.push(("CreateAttendee", meeting));
    let attendee = calls.log.len();
    axum::Json(json!({"Attendee": {
        "AttendeeId": format!("{attendee:08x}-1111-4000-8000-000000000000"),
        "ExternalUserId": body["ExternalUserId"],
        "JoinToken": "fake-join-token",
    }}))
    .into_response()
}

async fn delete_meeting(State(state): State<Shared>, Path(meeting): Path<String>) -> Response {
    lock(&state).log.push(("DeleteMeeting", meeting));
    StatusCode::NO_CONTENT.into_response()
}

impl ChimeFake {
    /// Serves the fake on an ephemeral 127.0.0.1 port.
    pub async fn start() -> std::io::Result<Self> {
        let state = Shared::default();
        let router = Router::new()
            .route("/meetings", post(create_meeting))
            .route("/meetings/{meeting}/attendees", post(create_attendee))
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
