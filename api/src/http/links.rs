//! One-time links and notifications: issue, notify, resend, and the admin outbox view.

use std::collections::HashSet;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use super::extract::{ApiJson, ApiQuery, Staff};
use super::visits::visible;
use crate::App;
use crate::audit::{self, NewEntry};
use crate::error::{ApiError, ApiResult, FieldError, Problem};
use crate::model::{Channel, ParticipantRole, StaffRole, first_name};
use crate::notify;
use crate::store::{self, Db, from_ms, ms, notifications::NotificationRow, visits::VisitRow};
use crate::tokens::{random_base62, secret_hash};
use crate::visit::rules;

/// A link as shown once to whoever issued it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct IssuedLink {
    /// `https://HOST/j/{code}`.
    pub url: String,
    /// The one-time code.
    pub code: String,
    /// When the link stops working.
    pub expires_at: DateTime<Utc>,
}

/// `POST /api/visits/{id}/links` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct IssuedLinks {
    /// The patient's link.
    pub patient: IssuedLink,
    /// The clinician's link.
    pub clinician: IssuedLink,
}

/// Creates a link of `role` inside `tx`, killing earlier unredeemed links of that role.
async fn issue_one(
    app: &App,
    tx: &mut Db,
    row: &VisitRow,
    role: ParticipantRole,
) -> ApiResult<IssuedLink> {
    let now = ms(Utc::now());
    store::links::revoke_unredeemed(tx, &row.tenant_id, &row.id, Some(role), now).await?;
    let code = random_base62(app.config.tokens.link_code_length);
    let expires_at = rules::link_expiry(&app.config.visits, row);
    store::links::insert(
        tx,
        &store::new_id(),
        &row.tenant_id,
        &row.id,
        role,
        &secret_hash(&code),
        expires_at,
        now,
    )
    .await?;
    app.metrics.links.with_label_values(&["issued"]).inc();
    Ok(IssuedLink {
        url: format!("{}/j/{code}", app.config.http.base_url()),
        code,
        expires_at: from_ms(expires_at),
    })
}

#[utoipa::path(post, path = "/api/visits/{id}/links", tag = "links", params(("id" = String, Path)),
    responses((status = 201, body = IssuedLinks), (status = 404, body = Problem), (status = 410, body = Problem)),
    security(("api_key" = [])))]
/// Issues a patient link and a clinician link; earlier unredeemed links die (admin, scheduler).
pub async fn issue(
    State(app): State<Arc<App>>,
    staff: Staff,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<IssuedLinks>)> {
    staff.require(&[StaffRole::Admin, StaffRole::Scheduler])?;
    let row = visible(&app, &staff, &id).await?;
    rules::ensure_live(row.status())?;
    let mut tx = app.store.begin().await?;
    let patient = issue_one(&app, &mut tx, &row, ParticipantRole::Patient).await?;
    let clinician = issue_one(&app, &mut tx, &row, ParticipantRole::Clinician).await?;
    let entry = NewEntry::success(&staff.tenant_id, &staff.actor, "link.issued", Some(&id))
        .with_details(json!({"roles": ["patient", "clinician"]}));
    app.audit(&mut tx, entry).await?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(IssuedLinks { patient, clinician }),
    ))
}

/// Body of notify and resend-link.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NotifyRequest {
    /// Where to send the patient's link: `sms`, `email` or both.
    pub channels: Vec<Channel>,
}

/// One queued notification.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NotificationStatus {
    /// Notification id.
    pub id: String,
    /// Channel.
    pub channel: Channel,
    /// `queued`, `sent` or `failed`.
    pub status: String,
}

/// `POST /api/visits/{id}/notify` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct NotifyResponse {
    /// One per channel.
    pub notifications: Vec<NotificationStatus>,
}

/// `POST /api/visits/{id}/resend-link` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ResendResponse {
    /// The new patient link (earlier unredeemed ones died).
    pub patient: IssuedLink,
    /// One per channel.
    pub notifications: Vec<NotificationStatus>,
}

/// Validates channels against what the patient has, and returns each channel's recipient.
async fn recipients(
    app: &App,
    row: &VisitRow,
    channels: &[Channel],
) -> ApiResult<Vec<(Channel, String)>> {
    let unique: HashSet<_> = channels.iter().collect();
    if channels.is_empty() || unique.len() != channels.len() {
        return Err(ApiError::invalid(
            "channels",
            "give sms and/or email, each once",
        ));
    }
    let key = app.tenant_key(&row.tenant_id).await?;
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for &channel in channels {
        let (field, ct) = match channel {
            Channel::Sms => ("patient_phone", &row.patient_phone_ct),
            Channel::Email => ("patient_email", &row.patient_email_ct),
        };
        match ct {
            Some(ct) => out.push((
                channel,
                key.decrypt(&row.id, field, ct)
                    .map_err(crate::app::crypto_error)?,
            )),
            None => errors.push(FieldError::new(
                "channels",
                format!(
                    "the patient has no {}",
                    match channel {
                        Channel::Sms => "phone number",
                        Channel::Email => "email address",
                    }
                ),
            )),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(ApiError::InvalidRequest(errors))
    }
}

/// Issues a fresh patient link and queues one invitation per channel, all in one transaction.
async fn send_link(
    app: &App,
    staff: &Staff,
    row: &VisitRow,
    channels: &[Channel],
    event: &'static str,
) -> ApiResult<(IssuedLink, Vec<NotificationStatus>)> {
    let targets = recipients(app, row, channels).await?;
    let clinician = store::staff::get_staff(
        &mut app.store.read().await?,
        &row.tenant_id,
        &row.clinician_id,
    )
    .await?
    .map(|s| first_name(&s.display_name).to_owned())
    .unwrap_or_default();
    let key = app.tenant_key(&row.tenant_id).await?;
    let mut tx = app.store.begin().await?;
    let link = issue_one(app, &mut tx, row, ParticipantRole::Patient).await?;
    let (subject, body) = notify::invitation(&clinician, from_ms(row.scheduled_at), &link.url);
    let now = ms(Utc::now());
    let mut statuses = Vec::new();
    let mut masked = Vec::new();
    for (channel, to) in targets {
        let id = store::new_id();
        let recipient_masked = match channel {
            Channel::Sms => audit::mask_phone(&to),
            Channel::Email => audit::mask_email(&to),
        };
        let seal = |field, text: &str| {
            key.encrypt(&id, field, text)
                .map_err(crate::app::crypto_error)
        };
        store::notifications::insert(
            &mut tx,
            &NotificationRow {
                id: id.clone(),
                tenant_id: row.tenant_id.clone(),
                visit_id: row.id.clone(),
                channel: channel.as_str().to_owned(),
                transport: app.transport(channel).name().to_owned(),
                recipient_ct: seal("recipient", &to)?,
                recipient_masked: recipient_masked.clone(),
                body_ct: seal("body", &format!("{subject}\n{body}"))?,
                status: "queued".to_owned(),
                attempts: 0,
                next_attempt_at: now,
                last_error: None,
                created_at: now,
                sent_at: None,
            },
        )
        .await?;
        masked.push(json!({"notification_id": id, "channel": channel.as_str(), "recipient": recipient_masked}));
        statuses.push(NotificationStatus {
            id,
            channel,
            status: "queued".to_owned(),
        });
    }
    let entry = NewEntry::success(&staff.tenant_id, &staff.actor, event, Some(&row.id))
        .with_details(json!({"notifications": masked}));
    app.audit(&mut tx, entry).await?;
    tx.commit().await?;
    for status in &statuses {
        app.metrics
            .notifications
            .with_label_values(&[status.channel.as_str(), "queued"])
            .inc();
        app.metrics.outbox_depth.inc();
    }
    app.outbox.notify_one();
    Ok((link, statuses))
}

#[utoipa::path(post, path = "/api/visits/{id}/notify", tag = "links", params(("id" = String, Path)),
    request_body = NotifyRequest,
    responses((status = 202, body = NotifyResponse), (status = 400, body = Problem), (status = 404, body = Problem)),
    security(("api_key" = [])))]
/// Sends the patient a fresh link by SMS and/or email (admin, scheduler). Codes are stored
/// only as hashes, so sending a link means issuing a new one; earlier unredeemed patient
/// links die.
pub async fn notify(
    State(app): State<Arc<App>>,
    staff: Staff,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<NotifyRequest>,
) -> ApiResult<(StatusCode, Json<NotifyResponse>)> {
    staff.require(&[StaffRole::Admin, StaffRole::Scheduler])?;
    let row = visible(&app, &staff, &id).await?;
    rules::ensure_live(row.status())?;
    let (_, notifications) =
        send_link(&app, &staff, &row, &body.channels, "notification.queued").await?;
    Ok((StatusCode::ACCEPTED, Json(NotifyResponse { notifications })))
}

#[utoipa::path(post, path = "/api/visits/{id}/resend-link", tag = "links", params(("id" = String, Path)),
    request_body = NotifyRequest,
    responses((status = 202, body = ResendResponse), (status = 400, body = Problem), (status = 404, body = Problem), (status = 429, body = Problem)),
    security(("api_key" = [])))]
/// Issues and sends a new patient link; at most `visits.resends_per_hour` per visit.
pub async fn resend(
    State(app): State<Arc<App>>,
    staff: Staff,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<NotifyRequest>,
) -> ApiResult<(StatusCode, Json<ResendResponse>)> {
    staff.require(&[StaffRole::Admin, StaffRole::Scheduler])?;
    let row = visible(&app, &staff, &id).await?;
    rules::ensure_live(row.status())?;
    let hour_ago = ms(Utc::now()) - 3_600_000;
    let recent = store::audit::count_events_since(
        &mut app.store.read().await?,
        &staff.tenant_id,
        &id,
        "link.resent",
        hour_ago,
    )
    .await?;
    if recent >= i64::from(app.config.visits.resends_per_hour) {
        app.metrics
            .rate_limited
            .with_label_values(&["resend"])
            .inc();
        return Err(ApiError::RateLimited {
            retry_after_secs: 3600,
        });
    }
    let (patient, notifications) =
        send_link(&app, &staff, &row, &body.channels, "link.resent").await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(ResendResponse {
            patient,
            notifications,
        }),
    ))
}

/// Query of `GET /api/notifications`.
#[derive(Debug, Deserialize, IntoParams)]
// Documented as query parameters: utoipa's default place is the path.
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct NotificationQuery {
    /// The visit whose notifications to list.
    pub visit_id: String,
}

/// A notification as the outbox holds it (recipient masked).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OutboxItem {
    /// Notification id.
    pub id: String,
    /// Visit.
    pub visit_id: String,
    /// Channel.
    pub channel: String,
    /// Transport (`log`, …).
    pub transport: String,
    /// Masked recipient.
    pub recipient: String,
    /// Subject line.
    pub subject: String,
    /// Message text.
    pub body: String,
    /// `queued`, `sent` or `failed`.
    pub status: String,
    /// Delivery attempts.
    pub attempts: i64,
    /// Last provider error.
    pub last_error: Option<String>,
    /// When queued.
    pub created_at: DateTime<Utc>,
    /// When delivered.
    pub sent_at: Option<DateTime<Utc>>,
}

/// `GET /api/notifications` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OutboxPage {
    /// Oldest first.
    pub items: Vec<OutboxItem>,
}

#[utoipa::path(get, path = "/api/notifications", tag = "links", params(NotificationQuery),
    responses((status = 200, body = OutboxPage), (status = 404, body = Problem)),
    security(("api_key" = [])))]
/// A visit's notifications with their delivery status (admin).
pub async fn list(
    State(app): State<Arc<App>>,
    staff: Staff,
    ApiQuery(q): ApiQuery<NotificationQuery>,
) -> ApiResult<Json<OutboxPage>> {
    staff.require(&[StaffRole::Admin])?;
    visible(&app, &staff, &q.visit_id).await?;
    let key = app.tenant_key(&staff.tenant_id).await?;
    let rows = store::notifications::for_visit(
        &mut app.store.read().await?,
        &staff.tenant_id,
        &q.visit_id,
    )
    .await?;
    let items = rows
        .into_iter()
        .map(|row| {
            let text = key
                .decrypt(&row.id, "body", &row.body_ct)
                .map_err(crate::app::crypto_error)?;
            let (subject, body) = text.split_once('\n').unwrap_or(("", &text));
            Ok(OutboxItem {
                subject: subject.to_owned(),
                body: body.to_owned(),
                id: row.id,
                visit_id: row.visit_id,
                channel: row.channel,
                transport: row.transport,
                recipient: row.recipient_masked,
                status: row.status,
                attempts: row.attempts,
                last_error: row.last_error,
                created_at: from_ms(row.created_at),
                sent_at: row.sent_at.map(from_ms),
            })
        })
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(Json(OutboxPage { items }))
}
