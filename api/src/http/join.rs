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
use crate::error::{ApiError, ApiResult, Problem};
use crate::media::Joined;
pub use crate::media::{IceServer, Media};
use crate::model::{ParticipantRole, StaffRole, VisitStatus, first_name};
use crate::store::{
    self, from_ms, links::DeviceBinding, links::LinkRow, links::LinkWithVisit, ms, visits::VisitRow,
};
use crate::tokens::{TokenError, is_plausible_code, random_base62, secret_hash};
use crate::visit::participants::{self, Seat};
use crate::visit::rules::{self, Usable};
use crate::visit::{VisitError, lifecycle, media};
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

async fn grant(app: &App, seat: &Seat<'_>, joined: Joined, via: &str) -> ApiResult<GrantResponse> {
    let now = Utc::now().timestamp().max(0).unsigned_abs();
    let claims = seat.claims(
        app.grants.issuer(),
        app.config.tokens.grant_ttl_seconds,
        now,
    );
    let grant = app.grants.issue(&claims).await.map_err(token_error)?;
    app.metrics.grants.with_label_values(&[via]).inc();
    Ok(GrantResponse {
        grant,
        grant_expires_at: from_ms(
            i64::try_from(claims.exp)
                .unwrap_or(i64::MAX)
                .saturating_mul(1000),
        ),
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
        Err(audit_err) => audit_err.into(),
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
    rules::usable(&app.config.visits, &link, &visit, &device, known, now)
        .map_err(ApiError::from)
        .inspect_err(|err| {
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
    let response = match rules::usable(&app.config.visits, &link, &visit, &device, known, now) {
        Err(err) => return Err(refuse(&app, &link, &actor, err.into()).await),
        Ok(Usable::Rejoin(participant_id)) => {
            // Removed for good: the device that was bound to the link cannot come back.
            if let Err(err) =
                participants::ensure_not_removed(&app, &link.tenant_id, &visit.id, &participant_id)
                    .await
            {
                return Err(refuse(&app, &link, &actor, err.into()).await);
            }
            let seat = Seat {
                visit: &visit,
                participant_id,
                role,
                name,
            };
            let joined = media::join_alone(&app, &seat).await?;
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
            let joined = media::join(&app, &seat).await?;
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
            let started = lifecycle::mark_started(&mut tx, &visit, &actor, now).await?;
            let entry = NewEntry::success(&link.tenant_id, &actor, "link.redeemed", Some(&visit.id))
                .with_details(json!({"link_id": link.id, "participant_id": participant_id, "role": role.as_str()}));
            app.audit_all(&mut tx, started.into_iter().chain([entry]).collect())
                .await?;
            media::record_session(&mut tx, &visit, &joined).await?;
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
    let refusal = rules::clinician_may_start(&app.config.visits, &visit, now)
        .err()
        .map(ApiError::from);
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
    let joined = media::join(&app, &seat).await?;
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
    let started = lifecycle::mark_started(&mut tx, &visit, &staff.actor, now).await?;
    let entry = NewEntry::success(
        &staff.tenant_id,
        &staff.actor,
        "participant.started",
        Some(&visit_id),
    )
    .with_details(json!({"participant_id": participant_id, "role": "clinician"}));
    app.audit_all(&mut tx, started.into_iter().chain([entry]).collect())
        .await?;
    media::record_session(&mut tx, &visit, &joined).await?;
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
    let (visit, removed) = {
        let mut db = app.store.read().await?;
        let visit = store::visits::get(&mut db, &claims.tenant, &claims.visit)
            .await?
            .ok_or(ApiError::Unauthenticated)?;
        let removed =
            store::links::participant_removed(&mut db, &claims.tenant, &claims.visit, &claims.sub)
                .await?
                .ok_or(ApiError::Unauthenticated)?;
        (visit, removed)
    };
    let actor = client.actor(format!("participant:{}", claims.sub));
    // A participant removed for good gets no grant into the visit again.
    let refusal = rules::ensure_live(visit.status())
        .and_then(|()| match removed {
            true => Err(VisitError::Removed),
            false => Ok(()),
        })
        .map_err(ApiError::from);
    if let Err(err) = refusal {
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
    let joined = media::join_alone(&app, &seat).await?;
    let response = grant(&app, &seat, joined, "refresh").await?;
    app.audit_alone(
        NewEntry::success(&claims.tenant, &actor, "grant.refreshed", Some(&visit.id))
            .with_details(json!({"participant_id": claims.sub})),
    )
    .await?;
    Ok(Json(response))
}
