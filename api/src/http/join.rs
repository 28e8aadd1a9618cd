//! Joining a visit: check a code (redeem), consume it (start), the clinician's
//! start-authenticated, and grant refresh. Every refusal of a known link is audited.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum_extra::extract::CookieJar;
use axum_extra::extract::cookie::{Cookie, SameSite};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::extract::{ApiJson, ClientInfo, Staff, body_rejection, parse_json};
use super::visits::visible;
use crate::App;
use crate::audit::{Actor, NewEntry};
use crate::config::MediaBackend;
use crate::error::{ApiError, ApiResult, Problem};
pub use crate::media::{IceServer, Media};
use crate::media::{Joined, MediaError};
use crate::model::{ParticipantRole, StaffRole, VisitStatus, first_name};
use crate::store::{
    self, Db, from_ms, links::DeviceBinding, links::LinkRow, links::LinkWithVisit, ms,
    visits::VisitRow,
};
use crate::tokens::{
    GRANT_AUDIENCE, GrantClaims, TokenError, is_plausible_code, random_base62, secret_hash,
};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;

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

fn check_display_name(name: Option<&str>) -> ApiResult<Option<String>> {
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

struct Seat<'a> {
    visit: &'a VisitRow,
    participant_id: String,
    role: ParticipantRole,
    name: String,
}

/// Seats the participant in the visit's media backend. Called before anything is
/// committed, so a backend that is down (503) leaves the link unconsumed.
async fn join_media(app: &App, seat: &Seat<'_>) -> ApiResult<Joined> {
    let backend = if seat.visit.media_backend == MediaBackend::Chime.as_str() {
        MediaBackend::Chime
    } else {
        MediaBackend::Sfu
    };
    let mut joined = app
        .media(backend)?
        .join(&seat.visit.id, &seat.participant_id)
        .await
        .map_err(|MediaError::Unavailable(why)| ApiError::Unavailable(why));
    if let Ok(Joined {
        media: Media::Sfu { signaling_url, .. } | Media::Chime { signaling_url, .. },
        ..
    }) = &mut joined
    {
        // The room (a Chime visit's too: its waiting room) lives on one node; every
        // participant is sent there.
        *signaling_url = app
            .cluster
            .place(
                &app.store,
                &app.metrics,
                &seat.visit.tenant_id,
                &seat.visit.id,
            )
            .await?;
    }
    if let Ok(joined) = &mut joined
        && seat.visit.waiting_room
        && seat.role == ParticipantRole::Patient
    {
        // This start, rejoin or refresh must not let the patient into the Chime meeting
        // before it is admitted: the room's node hands the JoinToken over on admission.
        joined.media.withhold_join_token();
    }
    app.metrics
        .media_joins
        .with_label_values(&[
            backend.as_str(),
            if joined.is_ok() { "ok" } else { "unavailable" },
        ])
        .inc();
    joined
}

/// Records the backend session of a visit inside `tx`, when the backend has one.
async fn record_session(tx: &mut Db, visit: &VisitRow, joined: &Joined) -> ApiResult<()> {
    if let Some(session) = &joined.session_id {
        store::visits::set_media_session(tx, &visit.tenant_id, &visit.id, session).await?;
    }
    Ok(())
}

/// Joins the media backend and records its session in a transaction of its own (rejoins
/// and refreshes, which commit nothing else).
async fn join_media_alone(app: &App, seat: &Seat<'_>) -> ApiResult<Joined> {
    let joined = join_media(app, seat).await?;
    if joined.session_id.is_some() {
        let mut tx = app.store.begin().await?;
        record_session(&mut tx, seat.visit, &joined).await?;
        tx.commit().await?;
    }
    Ok(joined)
}

async fn grant(app: &App, seat: &Seat<'_>, joined: Joined, via: &str) -> ApiResult<GrantResponse> {
    let now = Utc::now().timestamp().max(0).unsigned_abs();
    let exp = now + app.config.tokens.grant_ttl_seconds;
    let claims = GrantClaims {
        iss: app.grants.issuer().to_owned(),
        aud: GRANT_AUDIENCE.to_owned(),
        sub: seat.participant_id.clone(),
        visit: seat.visit.id.clone(),
        room: seat.visit.id.clone(),
        tenant: seat.visit.tenant_id.clone(),
        role: seat.role,
        name: seat.name.clone(),
        jti: random_base62(22),
        iat: now,
        nbf: now,
        exp,
    };
    let grant = app.grants.issue(&claims).await.map_err(token_error)?;
    app.metrics.grants.with_label_values(&[via]).inc();
    Ok(GrantResponse {
        grant,
        grant_expires_at: from_ms(i64::try_from(exp).unwrap_or(i64::MAX).saturating_mul(1000)),
        participant_id: seat.participant_id.clone(),
        role: seat.role,
        media: joined.media,
    })
}

/// The link, visit and clinician a code names (one statement), or `link_invalid` (which
/// reveals nothing).
async fn lookup(app: &App, code: &str) -> ApiResult<LinkWithVisit> {
    if !is_plausible_code(code) {
        return Err(ApiError::LinkInvalid);
    }
    store::links::by_code_hash(&mut app.store.read().await?, &secret_hash(code))
        .await?
        .ok_or(ApiError::LinkInvalid)
}

/// Whether a link may be used now: fresh, a rejoin by the device it is bound to, or why not.
enum Usable {
    Fresh,
    Rejoin(String),
}

fn available_at(app: &App, visit: &VisitRow) -> i64 {
    visit.scheduled_at - app.config.visits.join_before_minutes * 60_000
}

fn usable(
    app: &App,
    link: &LinkRow,
    visit: &VisitRow,
    device: &DeviceBinding,
    known_device: bool,
    now: i64,
) -> ApiResult<Usable> {
    visit.refuse_final()?;
    if now >= link.expires_at {
        return Err(ApiError::LinkExpired);
    }
    if link.redeemed_at.is_some() {
        let bound = known_device
            && link.device_hash.as_deref() == Some(device.device_hash.as_slice())
            && link.ua_hash.as_deref() == Some(device.ua_hash.as_slice())
            && link.ip_prefix.as_deref() == Some(device.ip_prefix.as_str());
        return match (&link.participant_id, bound) {
            (Some(participant), true) => Ok(Usable::Rejoin(participant.clone())),
            _ => Err(ApiError::LinkUsed),
        };
    }
    if link.revoked_at.is_some() {
        return Err(ApiError::LinkExpired);
    }
    let opens = available_at(app, visit);
    if now < opens {
        return Err(ApiError::TooEarly {
            available_at: from_ms(opens),
        });
    }
    Ok(Usable::Fresh)
}

fn device_binding(client: &ClientInfo, jar: &CookieJar) -> (DeviceBinding, String, bool) {
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
    (binding, secret, known)
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

async fn refuse(app: &App, link: &LinkRow, actor: &Actor, err: ApiError) -> ApiError {
    app.metrics
        .links
        .with_label_values(&[&format!("refused_{}", err.code())])
        .inc();
    let entry = App::refusal(&link.tenant_id, actor, "link.refused", &link.visit_id, &err)
        .with_details(json!({"link_id": link.id, "role": link.role}));
    match app.audit_alone(entry).await {
        Ok(()) => err,
        Err(audit_err) => audit_err,
    }
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
    let LinkWithVisit {
        link,
        visit,
        clinician_display_name,
    } = lookup(&app, &body.code).await.inspect_err(|_| {
        app.metrics
            .links
            .with_label_values(&["refused_link_invalid"])
            .inc();
    })?;
    let (device, _, known) = device_binding(&client, &jar);
    let now = ms(Utc::now());
    usable(&app, &link, &visit, &device, known, now).inspect_err(|err| {
        app.metrics
            .links
            .with_label_values(&[&format!("refused_{}", err.code())])
            .inc();
    })?;
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

async fn clinician_name(app: &App, visit: &VisitRow) -> ApiResult<String> {
    Ok(store::staff::get_staff(
        &mut app.store.read().await?,
        &visit.tenant_id,
        &visit.clinician_id,
    )
    .await?
    .map_or_else(|| "Clinician".to_owned(), |s| s.display_name))
}

/// Marks the visit live (scheduled → waiting) inside `tx`; the audit entry of the first
/// start, for the caller to append with its own. A visit already read as live is left alone
/// (no statement): only `scheduled` can move, and the UPDATE re-checks that.
async fn mark_started(
    tx: &mut Db,
    visit: &VisitRow,
    actor: &Actor,
    now: i64,
) -> ApiResult<Option<NewEntry>> {
    if visit.status() != VisitStatus::Scheduled {
        return Ok(None);
    }
    let moved = store::visits::transition(
        tx,
        &visit.tenant_id,
        &visit.id,
        &[VisitStatus::Scheduled],
        VisitStatus::Waiting,
        now,
    )
    .await?;
    Ok(moved.then(|| NewEntry::success(&visit.tenant_id, actor, "visit.started", Some(&visit.id))))
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
    let LinkWithVisit {
        link,
        visit,
        clinician_display_name,
    } = lookup(&app, &body.code).await.inspect_err(|_| {
        app.metrics
            .links
            .with_label_values(&["refused_link_invalid"])
            .inc();
    })?;
    if link.visit_id != visit_id {
        app.metrics
            .links
            .with_label_values(&["refused_link_invalid"])
            .inc();
        return Err(ApiError::LinkInvalid);
    }
    let actor = client.actor(format!("link:{}", link.id));
    let (device, secret, known) = device_binding(&client, &jar);
    let now = ms(Utc::now());
    let role = link.role();
    let name = match (display_name, role) {
        (Some(name), _) => name,
        (None, ParticipantRole::Patient) => "Patient".to_owned(),
        (None, ParticipantRole::Clinician) => {
            clinician_display_name.unwrap_or_else(|| "Clinician".to_owned())
        }
    };
    let staff_id = (role == ParticipantRole::Clinician).then_some(visit.clinician_id.as_str());
    let response = match usable(&app, &link, &visit, &device, known, now) {
        Err(err) => return Err(refuse(&app, &link, &actor, err).await),
        Ok(Usable::Rejoin(participant_id)) => {
            let seat = Seat {
                visit: &visit,
                participant_id,
                role,
                name,
            };
            let joined = join_media_alone(&app, &seat).await?;
            let response = grant(&app, &seat, joined, "rejoin").await?;
            let entry =
                NewEntry::success(&link.tenant_id, &actor, "link.rejoined", Some(&visit.id))
                    .with_details(
                        json!({"link_id": link.id, "participant_id": seat.participant_id}),
                    );
            app.audit_alone(entry).await?;
            app.metrics.links.with_label_values(&["rejoined"]).inc();
            response
        }
        Ok(Usable::Fresh) => {
            let seat = Seat {
                visit: &visit,
                participant_id: store::new_id(),
                role,
                name,
            };
            // Media first, outside the transaction: if the backend is down nothing has
            // been written and the link stays usable.
            let joined = join_media(&app, &seat).await?;
            let participant_id = seat.participant_id.clone();
            let mut tx = app.store.begin().await?;
            store::links::insert_participant(
                &mut tx,
                &participant_id,
                &link.tenant_id,
                &visit.id,
                role,
                staff_id,
                now,
            )
            .await?;
            if !store::links::consume(
                &mut tx,
                &link.tenant_id,
                &link.id,
                &participant_id,
                &device,
                now,
            )
            .await?
            {
                tx.rollback().await?;
                return Err(refuse(&app, &link, &actor, ApiError::LinkUsed).await);
            }
            let started = mark_started(&mut tx, &visit, &actor, now).await?;
            let entry = NewEntry::success(&link.tenant_id, &actor, "link.redeemed", Some(&visit.id))
                .with_details(json!({"link_id": link.id, "participant_id": participant_id, "role": role.as_str()}));
            app.audit_all(&mut tx, started.into_iter().chain([entry]).collect())
                .await?;
            record_session(&mut tx, &visit, &joined).await?;
            // Signed before commit: if the signer is down, the link stays unconsumed.
            let response = grant(&app, &seat, joined, "start").await?;
            tx.commit().await?;
            app.metrics.links.with_label_values(&["redeemed"]).inc();
            response
        }
    };
    let jar = jar.add(device_cookie(&app, secret));
    Ok((jar, Json(response)))
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
    let now = ms(Utc::now());
    let refusal = visit.refuse_final().err().or_else(|| {
        let opens = available_at(&app, &visit);
        if now < opens {
            Some(ApiError::TooEarly {
                available_at: from_ms(opens),
            })
        } else if now >= super::visits::link_expiry(&app, &visit) {
            Some(ApiError::Conflict("the visit's join window has passed"))
        } else {
            None
        }
    });
    if let Some(err) = refusal {
        app.audit_alone(App::refusal(
            &staff.tenant_id,
            &staff.actor,
            "participant.start_refused",
            &visit_id,
            &err,
        ))
        .await?;
        return Err(err);
    }
    let name = match display_name {
        Some(name) => name,
        None => clinician_name(&app, &visit).await?,
    };
    let staff_id = staff.staff_id.clone().unwrap_or_default();
    let existing = store::links::staff_participant(
        &mut app.store.read().await?,
        &staff.tenant_id,
        &visit_id,
        &staff_id,
    )
    .await?;
    let seat = Seat {
        visit: &visit,
        participant_id: existing.clone().unwrap_or_else(store::new_id),
        role: ParticipantRole::Clinician,
        name,
    };
    let joined = join_media(&app, &seat).await?;
    let mut tx = app.store.begin().await?;
    let participant_id = match existing {
        Some(id) => id,
        None => {
            let id = seat.participant_id.clone();
            store::links::insert_participant(
                &mut tx,
                &id,
                &staff.tenant_id,
                &visit_id,
                ParticipantRole::Clinician,
                Some(&staff_id),
                now,
            )
            .await?;
            id
        }
    };
    let started = mark_started(&mut tx, &visit, &staff.actor, now).await?;
    let entry = NewEntry::success(
        &staff.tenant_id,
        &staff.actor,
        "participant.started",
        Some(&visit_id),
    )
    .with_details(json!({"participant_id": participant_id, "role": "clinician"}));
    app.audit_all(&mut tx, started.into_iter().chain([entry]).collect())
        .await?;
    record_session(&mut tx, &visit, &joined).await?;
    let response = grant(&app, &seat, joined, "start_authenticated").await?;
    tx.commit().await?;
    Ok(Json(response))
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
    // One read for both lookups, released before any media or audit call.
    let visit = {
        let mut db = app.store.read().await?;
        let visit = store::visits::get(&mut db, &claims.tenant, &claims.visit)
            .await?
            .ok_or(ApiError::Unauthenticated)?;
        if !store::links::participant_exists(&mut db, &claims.tenant, &claims.visit, &claims.sub)
            .await?
        {
            return Err(ApiError::Unauthenticated);
        }
        visit
    };
    let actor = client.actor(format!("participant:{}", claims.sub));
    if let Err(err) = visit.refuse_final() {
        app.audit_alone(App::refusal(
            &claims.tenant,
            &actor,
            "grant.refresh_refused",
            &visit.id,
            &err,
        ))
        .await?;
        return Err(err);
    }
    let seat = Seat {
        visit: &visit,
        participant_id: claims.sub.clone(),
        role: claims.role,
        name: claims.name.clone(),
    };
    let joined = join_media_alone(&app, &seat).await?;
    let response = grant(&app, &seat, joined, "refresh").await?;
    app.audit_alone(
        NewEntry::success(&claims.tenant, &actor, "grant.refreshed", Some(&visit.id))
            .with_details(json!({"participant_id": claims.sub})),
    )
    .await?;
    Ok(Json(response))
}
