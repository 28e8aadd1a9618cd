//! Joining a visit over HTTP: check a code (redeem), use it (start), the clinician's
//! start-authenticated, and grant refresh. The rules — and the audit of every refusal — are
//! the visit domain's (`crate::visit::join`); here the device is read from the request and
//! its cookie set, the rate limit applied, and the grant rendered.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum_extra::extract::CookieJar;
use axum_extra::extract::cookie::{Cookie, SameSite};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;

use super::extract::{ApiJson, ClientInfo, Staff, body_rejection, parse_json};
use super::visits::visible;
use crate::App;
use crate::error::{ApiError, ApiResult, Problem};
pub use crate::media::{IceServer, Media};
use crate::model::{ParticipantRole, StaffRole, VisitStatus, first_name};
use crate::store::{from_ms, links::DeviceBinding, links::LinkWithVisit};
use crate::tokens::{TokenError, random_base62, secret_hash};
use crate::visit::VisitError;
use crate::visit::join::{self, Device, Granted, LinkStart};

/// Name of the HttpOnly cookie that identifies a device to the links it redeemed.
pub const DEVICE_COOKIE: &str = "bedside_device";

/// `POST /api/token/redeem` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedeemRequest {
    /// The code from the link.
    pub code: String,
}

/// What the join page may show about a visit: nothing that is PHI.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RedeemVisit {
    /// Visit id.
    pub id: String,
    /// Lifecycle state.
    pub status: VisitStatus,
    /// Start time.
    pub scheduled_at: DateTime<Utc>,
    /// Planned length.
    pub duration_minutes: u32,
    /// First name (or title and name) of the clinician.
    pub clinician_first_name: String,
}

/// `POST /api/token/redeem` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RedeemResponse {
    /// Role the link admits as.
    pub role: ParticipantRole,
    /// When the link stops working.
    pub expires_at: DateTime<Utc>,
    /// The visit.
    pub visit: RedeemVisit,
}

/// `POST /api/visits/{id}/start` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRequest {
    /// The code from the link.
    pub code: String,
    /// Name shown to the other participants (default: "Patient" or the clinician's name).
    #[serde(default)]
    pub display_name: Option<String>,
}

/// `POST /api/visits/{id}/start-authenticated` body (optional).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartAuthenticatedRequest {
    /// Name shown to the other participants (default: the clinician's display name).
    #[serde(default)]
    pub display_name: Option<String>,
}

/// A session grant and how to use it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct GrantResponse {
    /// ES256 JWT for signaling.
    pub grant: String,
    /// When the grant expires (refresh before).
    pub grant_expires_at: DateTime<Utc>,
    /// This participant.
    pub participant_id: String,
    /// Role in the visit.
    pub role: ParticipantRole,
    /// Media backend join info.
    pub media: Media,
}

/// `POST /api/grants/refresh` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    /// A grant that is still valid.
    pub grant: String,
}

fn token_error(err: TokenError) -> ApiError {
    match err {
        TokenError::Invalid(_) => ApiError::Unauthenticated,
        TokenError::Signer(why) => ApiError::Unavailable(why),
    }
}

/// The `display_name` of a start body, checked before the store is asked: trimmed, 1–60
/// characters and no control characters, or `invalid_request`; `None` when not given.
pub fn check_display_name(name: Option<&str>) -> ApiResult<Option<String>> {
    match name.map(str::trim) {
        None => Ok(None),
        Some(n) if n.is_empty() || n.chars().count() > 60 || n.chars().any(char::is_control) => {
            Err(ApiError::invalid(
                "display_name",
                "1–60 printable characters",
            ))
        }
        Some(n) => Ok(Some(n.to_owned())),
    }
}

/// The grant answer of a seat taken.
fn render(granted: Granted) -> Json<GrantResponse> {
    let Granted {
        grant,
        claims,
        joined,
    } = granted;
    Json(GrantResponse {
        grant,
        grant_expires_at: from_ms(
            i64::try_from(claims.exp)
                .unwrap_or(i64::MAX)
                .saturating_mul(1000),
        ),
        participant_id: claims.sub,
        role: claims.role,
        media: joined.media,
    })
}

/// The device asking (its cookie, User-Agent and address), and the cookie secret to set.
fn device(client: &ClientInfo, jar: &CookieJar) -> (Device, String) {
    let existing = jar
        .get(DEVICE_COOKIE)
        .map(|c| c.value().to_owned())
        .filter(|v| v.len() == 32 && v.bytes().all(|b| b.is_ascii_alphanumeric()));
    let known = existing.is_some();
    let secret = existing.unwrap_or_else(|| random_base62(32));
    let binding = DeviceBinding {
        device_hash: secret_hash(&secret),
        ua_hash: client.ua_digest(),
        ip_prefix: crate::audit::ip_prefix(client.ip),
    };
    (Device { binding, known }, secret)
}

/// A session cookie: it survives reloads, not a browser restart, and is sent only to the API.
fn device_cookie(app: &App, secret: String) -> Cookie<'static> {
    Cookie::build((DEVICE_COOKIE, secret))
        .http_only(true)
        .secure(app.config.http.tls())
        .same_site(SameSite::Strict)
        .path("/api")
        .build()
}

#[utoipa::path(post, path = "/api/token/redeem", tag = "join", request_body = RedeemRequest,
    responses((status = 200, body = RedeemResponse), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 410, body = Problem), (status = 429, body = Problem)))]
/// Checks a code without consuming it: what the join page may show, or why it cannot be used.
pub async fn redeem(
    State(app): State<Arc<App>>,
    client: ClientInfo,
    jar: CookieJar,
    ApiJson(body): ApiJson<RedeemRequest>,
) -> ApiResult<Json<RedeemResponse>> {
    limit_link(&app, &client)?;
    let (device, _) = device(&client, &jar);
    let LinkWithVisit {
        link,
        visit,
        clinician_display_name,
    } = join::check_link(&app, &body.code, &device).await?;
    let clinician = clinician_display_name
        .as_deref()
        .map(|name| first_name(name).to_owned())
        .unwrap_or_default();
    Ok(Json(RedeemResponse {
        role: link.role(),
        expires_at: from_ms(link.expires_at),
        visit: RedeemVisit {
            id: visit.id.clone(),
            status: visit.status(),
            scheduled_at: from_ms(visit.scheduled_at),
            duration_minutes: u32::try_from(visit.duration_minutes).unwrap_or_default(),
            clinician_first_name: clinician,
        },
    }))
}

fn limit_link(app: &App, client: &ClientInfo) -> ApiResult<()> {
    app.limits.check_link(client.ip).inspect_err(|_| {
        app.metrics
            .rate_limited
            .with_label_values(&["link_ip"])
            .inc();
    })
}

#[utoipa::path(post, path = "/api/visits/{id}/start", tag = "join", params(("id" = String, Path)),
    request_body = StartRequest,
    responses((status = 200, body = GrantResponse), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 410, body = Problem), (status = 429, body = Problem), (status = 503, body = Problem)))]
/// Consumes a code (one conditional UPDATE), binds it to this device and returns a grant.
/// The same device may call again and gets a fresh grant; any other device gets `link_used`.
pub async fn start(
    State(app): State<Arc<App>>,
    Path(visit_id): Path<String>,
    client: ClientInfo,
    jar: CookieJar,
    ApiJson(body): ApiJson<StartRequest>,
) -> ApiResult<(CookieJar, Json<GrantResponse>)> {
    limit_link(&app, &client)?;
    let display_name = check_display_name(body.display_name.as_deref())?;
    let (device, secret) = device(&client, &jar);
    let granted = join::start_with_link(
        &app,
        LinkStart {
            visit_id: &visit_id,
            code: &body.code,
            device: &device,
            display_name,
            client: &client.actor(String::new()),
        },
    )
    .await?;
    let jar = jar.add(device_cookie(&app, secret));
    Ok((jar, render(granted)))
}

#[utoipa::path(post, path = "/api/visits/{id}/start-authenticated", tag = "join", params(("id" = String, Path)),
    request_body(content = StartAuthenticatedRequest, description = "optional"),
    responses((status = 200, body = GrantResponse), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem), (status = 410, body = Problem)),
    security(("api_key" = [])))]
/// The visit's clinician joins with their API key instead of a link.
pub async fn start_authenticated(
    State(app): State<Arc<App>>,
    staff: Staff,
    Path(visit_id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<GrantResponse>> {
    staff.require(&[StaffRole::Clinician])?;
    let body = body.map_err(body_rejection)?;
    let body: StartAuthenticatedRequest = if body.is_empty() {
        StartAuthenticatedRequest::default()
    } else {
        parse_json(&body)?
    };
    let display_name = check_display_name(body.display_name.as_deref())?;
    let visit = visible(&app, &staff, &visit_id).await?;
    let staff_id = staff.staff_id.clone().unwrap_or_default();
    let granted =
        join::start_as_clinician(&app, &visit, &staff_id, &staff.actor, display_name).await?;
    Ok(render(granted))
}

#[utoipa::path(post, path = "/api/grants/refresh", tag = "join", request_body = RefreshRequest,
    responses((status = 200, body = GrantResponse), (status = 401, body = Problem), (status = 410, body = Problem)))]
/// A fresh grant for the holder of a valid one, while the visit is live.
pub async fn refresh(
    State(app): State<Arc<App>>,
    client: ClientInfo,
    ApiJson(body): ApiJson<RefreshRequest>,
) -> ApiResult<Json<GrantResponse>> {
    limit_link(&app, &client)?;
    let claims = app.grants.verify(&body.grant).map_err(|err| {
        app.metrics
            .auth_failures
            .with_label_values(&["grant"])
            .inc();
        token_error(err)
    })?;
    let actor = client.actor(format!("participant:{}", claims.sub));
    let granted = join::refresh(&app, &claims, &actor)
        .await
        .map_err(|error| match error {
            // A grant whose visit or participant is gone authenticates nobody.
            VisitError::NotFound => ApiError::Unauthenticated,
            error => error.into(),
        })?;
    Ok(render(granted))
}
