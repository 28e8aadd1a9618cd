//! Emulators for the AWS and SMTP adapter tests: where scripts/test started moto and the
//! SMTP sink, moto helpers (reset, read back sent messages, make keys and identities), a
//! fake of the Amazon Chime SDK Meetings REST API, and a TCP proxy that can be switched off
//! to make a dependency "go down" under a running application.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use api::config::Config;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Addresses of the emulators scripts/test started.
#[derive(Debug, Clone)]
pub struct Emulators {
    /// moto's base URL (KMS, SES v2, SNS).
    pub moto: String,
    /// The SMTP sink, `127.0.0.1:PORT`.
    pub smtp: String,
    /// The Maildir where the SMTP sink stores what it receives.
    pub maildir: PathBuf,
}

/// The emulators, or `None` (with a note) when this run was not started by scripts/test.
/// In CI (`CI` set) a missing emulator is a failure, never a silent skip.
pub fn emulators() -> Option<Emulators> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    match (
        var("BEDSIDE_TEST_MOTO_URL"),
        var("BEDSIDE_TEST_SMTP_ADDR"),
        var("BEDSIDE_TEST_SMTP_MAILDIR"),
    ) {
        (Some(moto), Some(smtp), Some(maildir)) => Some(Emulators {
            moto,
            smtp,
            maildir: PathBuf::from(maildir),
        }),
        _ if std::env::var_os("CI").is_some() => panic!(
            "BEDSIDE_TEST_MOTO_URL / BEDSIDE_TEST_SMTP_* are not set: CI must run ./scripts/test, \
             which starts the emulators"
        ),
        _ => {
            eprintln!("skipped: needs the emulators that ./scripts/test starts");
            None
        }
    }
}

/// Points `config`'s AWS clients at `endpoint` with short timeouts and one retry, so a
/// dependency that is down answers within a couple of seconds.
pub fn use_endpoint(config: &mut Config, endpoint: &str) {
    config.aws.region = Some("us-east-1".to_owned());
    config.aws.endpoint_url = Some(endpoint.to_owned());
    config.aws.connect_timeout_ms = 500;
    config.aws.attempt_timeout_ms = 2_000;
    config.aws.operation_timeout_ms = 5_000;
    config.aws.max_attempts = 2;
}

/// moto keeps one state for every test of a binary: tests that use it hold this lock, and
/// reset moto first.
pub async fn moto_lock(moto: &str) -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let guard = LOCK.lock().await;
    super::http_client(false)
        .post(format!("{moto}/moto-api/reset"))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .expect("moto resets");
    guard
}

/// Everything moto holds (`/moto-api/data.json`): sent emails under `ses.Message`, SMS
/// under `sns.SMS`.
pub async fn moto_data(moto: &str) -> Value {
    super::http_client(false)
        .get(format!("{moto}/moto-api/data.json"))
        .send()
        .await
        .expect("moto answers")
        .json()
        .await
        .expect("moto data is JSON")
}

/// An SDK configuration for the test's own clients (making keys, identities).
pub async fn sdk(endpoint: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .load()
        .await
}

/// A fresh ECC_NIST_P256 signing key; its id.
pub async fn signing_key(endpoint: &str) -> String {
    use aws_sdk_kms::types::{KeySpec, KeyUsageType};
    aws_sdk_kms::Client::new(&sdk(endpoint).await)
        .create_key()
        .key_spec(KeySpec::EccNistP256)
        .key_usage(KeyUsageType::SignVerify)
        .send()
        .await
        .expect("CreateKey")
        .key_metadata
        .expect("metadata")
        .key_id
}

/// A fresh symmetric key (SYMMETRIC_DEFAULT) for data keys; its id.
pub async fn symmetric_key(endpoint: &str) -> String {
    aws_sdk_kms::Client::new(&sdk(endpoint).await)
        .create_key()
        .send()
        .await
        .expect("CreateKey")
        .key_metadata
        .expect("metadata")
        .key_id
}

/// Lets SES send from `address` (moto refuses unverified senders, as SES does).
pub async fn ses_identity(endpoint: &str, address: &str) {
    aws_sdk_sesv2::Client::new(&sdk(endpoint).await)
        .create_email_identity()
        .email_identity(address)
        .send()
        .await
        .expect("CreateEmailIdentity");
}

/// One message the SMTP sink stored.
#[derive(Debug, Clone)]
pub struct Mail {
    /// Envelope recipients (the sink's `X-RcptTo`).
    pub rcpt_to: String,
    /// Envelope sender (`X-MailFrom`).
    pub mail_from: String,
    /// The whole message as stored.
    pub raw: String,
}

/// Every message in the sink's Maildir.
pub fn mails(maildir: &std::path::Path) -> Vec<Mail> {
    let mut out = Vec::new();
    for sub in ["new", "cur"] {
        let Ok(entries) = std::fs::read_dir(maildir.join(sub)) else {
            continue;
        };
        for entry in entries.flatten() {
            let raw = std::fs::read_to_string(entry.path()).expect("mail file");
            let header = |name: &str| {
                raw.lines()
                    .find_map(|l| l.strip_prefix(name))
                    .unwrap_or_default()
                    .trim()
                    .to_owned()
            };
            out.push(Mail {
                rcpt_to: header("X-RcptTo:"),
                mail_from: header("X-MailFrom:"),
                raw: raw.clone(),
            });
        }
    }
    out
}

/// A TCP proxy to `upstream` that can be switched off: while down it drops new connections
/// and cuts open ones, as an unreachable service would.
pub struct Proxy {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    down: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Starts forwarding to `upstream` (`http://host:port`).
    pub async fn start(upstream: &str) -> Self {
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let (down, watch) = watch::channel(false);
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if *watch.borrow() {
                    continue;
                }
                let mut watch = watch.clone();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = watch.wait_for(|down| *down) => {}
                    }
                });
            }
        });
        Self { url, down, task }
    }

    /// Takes the service down (`true`) or brings it back.
    pub fn set_down(&self, down: bool) {
        self.down.send_replace(down);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One request the Chime fake received.
#[derive(Debug, Clone)]
pub struct ChimeCall {
    /// `CreateMeeting`, `CreateAttendee`, `DeleteAttendee` or `DeleteMeeting`.
    pub operation: &'static str,
    /// The MeetingId in the path, if any.
    pub meeting_id: Option<String>,
    /// The AttendeeId in the path (DeleteAttendee).
    pub attendee_id: Option<String>,
    /// The JSON body (`Null` for DELETE).
    pub body: Value,
    /// The SigV4 `Authorization` header.
    pub authorization: String,
}

#[derive(Debug, Default)]
struct FakeMeeting {
    token: String,
    external_id: Option<String>,
    region: String,
    attendees: HashMap<String, Value>,
}

#[derive(Debug, Default)]
struct FakeState {
    meetings: HashMap<String, FakeMeeting>,
    by_token: HashMap<String, String>,
    deleted: Vec<String>,
    deleted_attendees: Vec<Value>,
    calls: Vec<ChimeCall>,
    failing: bool,
}

type Shared = Arc<Mutex<FakeState>>;

/// A fake of the Amazon Chime SDK Meetings REST API (restJson1): `POST /meetings`,
/// `POST /meetings/{MeetingId}/attendees`, `DELETE /meetings/{MeetingId}/attendees/{AttendeeId}`,
/// `DELETE /meetings/{MeetingId}`, with the documented shapes, the idempotency of
/// ClientRequestToken and ExternalUserId (a deleted attendee's ExternalUserId gets a new
/// attendee), and errors as the service sends them (`x-amzn-ErrorType` plus
/// `{Code, Message, RequestId}`).
pub struct ChimeFake {
    /// Base URL for `chime.endpoint_url`.
    pub url: String,
    state: Shared,
    task: tokio::task::JoinHandle<()>,
}

/// An error as the service sends it: `x-amzn-ErrorType` and `{Code, Message, RequestId}`.
struct ChimeError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ChimeError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    fn not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NotFoundException",
            "The requested resource does not exist.",
        )
    }
}

impl IntoResponse for ChimeError {
    fn into_response(self) -> Response {
        let request_id = uuid::Uuid::new_v4().to_string();
        (
            self.status,
            [
                ("x-amzn-errortype", self.code.to_owned()),
                ("content-type", "application/json".to_owned()),
                ("x-amzn-requestid", request_id.clone()),
            ],
            json!({"Code": self.code, "Message": self.message, "RequestId": request_id})
                .to_string(),
        )
            .into_response()
    }
}

fn ok_json(value: Value) -> Response {
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        value.to_string(),
    )
        .into_response()
}

/// Records the call; answers 503 ServiceUnavailableException while failing.
fn record(
    state: &Shared,
    operation: &'static str,
    (meeting_id, attendee_id): (Option<String>, Option<String>),
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Value, ChimeError> {
    let body_json = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(body).map_err(|_| {
            ChimeError::new(
                StatusCode::BAD_REQUEST,
                "BadRequestException",
                "malformed JSON",
            )
        })?
    };
    let mut state = state.lock().expect("fake state");
    state.calls.push(ChimeCall {
        operation,
        meeting_id,
        attendee_id,
        body: body_json.clone(),
        authorization: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
    });
    if state.failing {
        return Err(ChimeError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailableException",
            "The service is currently unavailable.",
        ));
    }
    Ok(body_json)
}

/// A string member of 2–64 characters (the API's limit for tokens and external ids).
fn string_field(body: &Value, field: &str, required: bool) -> Result<Option<String>, ChimeError> {
    match body.get(field) {
        None | Some(Value::Null) if !required => Ok(None),
        Some(Value::String(s)) if (2..=64).contains(&s.chars().count()) => Ok(Some(s.clone())),
        _ => Err(ChimeError::new(
            StatusCode::BAD_REQUEST,
            "BadRequestException",
            format!("{field} is missing or invalid"),
        )),
    }
}

fn meeting_json(id: &str, meeting: &FakeMeeting) -> Value {
    let host = format!("{}.m2.ue1.app.chime.aws", &id[..8]);
    json!({
        "MeetingId": id,
        "ExternalMeetingId": meeting.external_id,
        "MediaRegion": meeting.region,
        "MediaPlacement": {
            "AudioHostUrl": format!("{host}:3478"),
            "AudioFallbackUrl": format!("wss://haxrp.{host}:443/calls/{id}"),
            "SignalingUrl": format!("wss://signal.{host}/control/{id}"),
            "TurnControlUrl": "https://2713.cell.us-east-1.meetings.chime.aws/v2/turn_sessions",
            "ScreenDataUrl": format!("wss://bitpw.{host}:443/v2/screen/{id}"),
            "ScreenViewingUrl": format!("wss://bitpw.{host}:443/ws/connect?passcode=null&viewer_uuid=null&X-BitHub-Call-Id={id}"),
            "ScreenSharingUrl": format!("wss://bitpw.{host}:443/v2/screen/{id}"),
            "EventIngestionUrl": "https://data.svc.ue1.ingest.chime.aws/v1/client-events",
        },
        "MeetingArn": format!("arn:aws:chime:us-east-1:123456789012:meeting/{id}"),
    })
}

/// `POST /meetings`: idempotent on ClientRequestToken while the meeting exists.
async fn create_meeting(
    State(state): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ChimeError> {
    let body = record(&state, "CreateMeeting", (None, None), &headers, &body)?;
    let token = string_field(&body, "ClientRequestToken", true)?.unwrap_or_default();
    let region = string_field(&body, "MediaRegion", true)?.unwrap_or_default();
    let external_id = string_field(&body, "ExternalMeetingId", false)?;
    let mut state = state.lock().expect("fake state");
    if let Some(id) = state.by_token.get(&token).cloned()
        && let Some(meeting) = state.meetings.get(&id)
    {
        return Ok(ok_json(json!({"Meeting": meeting_json(&id, meeting)})));
    }
    let id = uuid::Uuid::new_v4().to_string();
    let meeting = FakeMeeting {
        token: token.clone(),
        external_id,
        region,
        attendees: HashMap::new(),
    };
    let answer = json!({"Meeting": meeting_json(&id, &meeting)});
    state.by_token.insert(token, id.clone());
    state.meetings.insert(id, meeting);
    Ok(ok_json(answer))
}

/// `POST /meetings/{MeetingId}/attendees`: idempotent on ExternalUserId.
async fn create_attendee(
    State(state): State<Shared>,
    Path(meeting_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ChimeError> {
    let body = record(
        &state,
        "CreateAttendee",
        (Some(meeting_id.clone()), None),
        &headers,
        &body,
    )?;
    let user = string_field(&body, "ExternalUserId", true)?.unwrap_or_default();
    let mut state = state.lock().expect("fake state");
    let meeting = state
        .meetings
        .get_mut(&meeting_id)
        .ok_or_else(ChimeError::not_found)?;
    let attendee = meeting
        .attendees
        .entry(user.clone())
        .or_insert_with(|| {
            json!({
                "ExternalUserId": user,
                "AttendeeId": uuid::Uuid::new_v4().to_string(),
                "JoinToken": api::tokens::random_base62(48),
                "Capabilities": {"Audio": "SendReceive", "Video": "SendReceive", "Content": "SendReceive"},
            })
        })
        .clone();
    Ok(ok_json(json!({"Attendee": attendee})))
}

/// `DELETE /meetings/{MeetingId}/attendees/{AttendeeId}`: 204, or 404 NotFoundException for
/// an unknown meeting or attendee. The attendee's JoinToken stops working.
async fn delete_attendee(
    State(state): State<Shared>,
    Path((meeting_id, attendee_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ChimeError> {
    record(
        &state,
        "DeleteAttendee",
        (Some(meeting_id.clone()), Some(attendee_id.clone())),
        &headers,
        &Bytes::new(),
    )?;
    let mut state = state.lock().expect("fake state");
    let meeting = state
        .meetings
        .get_mut(&meeting_id)
        .ok_or_else(ChimeError::not_found)?;
    let user = meeting
        .attendees
        .iter()
        .find(|(_, a)| a["AttendeeId"] == attendee_id.as_str())
        .map(|(user, _)| user.clone())
        .ok_or_else(ChimeError::not_found)?;
    let attendee = meeting
        .attendees
        .remove(&user)
        .ok_or_else(ChimeError::not_found)?;
    state.deleted_attendees.push(attendee);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `DELETE /meetings/{MeetingId}`: 204, or 404 NotFoundException.
async fn delete_meeting(
    State(state): State<Shared>,
    Path(meeting_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ChimeError> {
    record(
        &state,
        "DeleteMeeting",
        (Some(meeting_id.clone()), None),
        &headers,
        &Bytes::new(),
    )?;
    let mut state = state.lock().expect("fake state");
    let meeting = state
        .meetings
        .remove(&meeting_id)
        .ok_or_else(ChimeError::not_found)?;
    state.by_token.remove(&meeting.token);
    state.deleted.push(meeting_id);
    Ok(StatusCode::NO_CONTENT.into_response())
}

impl ChimeFake {
    /// Serves the fake on an ephemeral 127.0.0.1 port.
    pub async fn start() -> Self {
        let state = Shared::default();
        let router = Router::new()
            .route("/meetings", post(create_meeting))
            .route("/meetings/{meeting_id}/attendees", post(create_attendee))
            .route(
                "/meetings/{meeting_id}/attendees/{attendee_id}",
                delete(delete_attendee),
            )
            .route("/meetings/{meeting_id}", delete(delete_meeting))
            .with_state(state.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.expect("fake serves");
        });
        Self { url, state, task }
    }

    /// While `true`, every call answers 503 ServiceUnavailableException.
    pub fn set_failing(&self, failing: bool) {
        self.state.lock().expect("fake state").failing = failing;
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<ChimeCall> {
        self.state.lock().expect("fake state").calls.clone()
    }

    /// Calls of one operation.
    pub fn calls_of(&self, operation: &str) -> Vec<ChimeCall> {
        self.calls()
            .into_iter()
            .filter(|c| c.operation == operation)
            .collect()
    }

    /// Meetings that exist now.
    pub fn live_meetings(&self) -> Vec<String> {
        self.state
            .lock()
            .expect("fake state")
            .meetings
            .keys()
            .cloned()
            .collect()
    }

    /// Attendees deleted so far (`{ExternalUserId, AttendeeId, JoinToken, Capabilities}`).
    pub fn deleted_attendees(&self) -> Vec<Value> {
        self.state
            .lock()
            .expect("fake state")
            .deleted_attendees
            .clone()
    }

    /// Meetings deleted so far.
    pub fn deleted(&self) -> Vec<String> {
        self.state.lock().expect("fake state").deleted.clone()
    }
}

impl Drop for ChimeFake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Makes `config` a Chime node using `fake`.
pub fn use_chime(config: &mut Config, fake: &ChimeFake) {
    config.media.backend = api::config::MediaBackend::Chime;
    config.chime.media_region = "eu-central-1".to_owned();
    config.chime.endpoint_url = Some(fake.url.clone());
    if config.aws.endpoint_url.is_none() {
        use_endpoint(config, &fake.url);
    }
}
