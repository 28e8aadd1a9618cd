//! `/api/visits`: create, list, read, edit, cancel, end.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use super::extract::{ApiJson, ApiQuery, Staff};
use crate::App;
use crate::audit::NewEntry;
use crate::config::MediaBackend;
use crate::crypto::DataKey;
use crate::error::{ApiError, ApiResult, Problem};
use crate::model::{CreateVisit, PatchVisit, Patient, StaffRole, Visit, VisitStatus};
use crate::store::{self, from_ms, ms, visits::VisitFilter, visits::VisitRow};
use crate::visit::lifecycle::{self, Closing};
use crate::visit::{Via, media, rules};

fn crypto(err: crate::crypto::CryptoError) -> ApiError {
    crate::app::crypto_error(err)
}

/// Decrypts a visit row into its API form; PHI only when `with_phi`.
pub fn render(key: &DataKey, row: &VisitRow, with_phi: bool) -> ApiResult<Visit> {
    let open = |field: &str, ct: &Option<Vec<u8>>| -> ApiResult<Option<String>> {
        ct.as_deref()
            .map(|ct| key.decrypt(&row.id, field, ct).map_err(crypto))
            .transpose()
    };
    let (patient, chief_complaint, notes) = if with_phi {
        (
            Some(Patient {
                name: key
                    .decrypt(&row.id, "patient_name", &row.patient_name_ct)
                    .map_err(crypto)?,
                phone: open("patient_phone", &row.patient_phone_ct)?,
                email: open("patient_email", &row.patient_email_ct)?,
            }),
            open("chief_complaint", &row.chief_complaint_ct)?,
            open("notes", &row.notes_ct)?,
        )
    } else {
        (None, None, None)
    };
    Ok(Visit {
        id: row.id.clone(),
        status: row.status(),
        scheduled_at: from_ms(row.scheduled_at),
        duration_minutes: u32::try_from(row.duration_minutes).unwrap_or_default(),
        clinician_id: row.clinician_id.clone(),
        media_backend: if row.media_backend == "chime" {
            MediaBackend::Chime
        } else {
            MediaBackend::Sfu
        },
        waiting_room: row.waiting_room,
        created_at: from_ms(row.created_at),
        started_at: row.started_at.map(from_ms),
        ended_at: row.ended_at.map(from_ms),
        patient,
        chief_complaint,
        notes,
    })
}

fn seal_opt(
    key: &DataKey,
    id: &str,
    field: &str,
    value: Option<&str>,
) -> ApiResult<Option<Vec<u8>>> {
    value
        .map(|v| key.encrypt(id, field, v).map_err(crypto))
        .transpose()
}

fn seal_patient(key: &DataKey, row: &mut VisitRow, patient: &Patient) -> ApiResult<()> {
    row.patient_name_ct = key
        .encrypt(&row.id, "patient_name", &patient.name)
        .map_err(crypto)?;
    row.patient_phone_ct = seal_opt(key, &row.id, "patient_phone", patient.phone.as_deref())?;
    row.patient_email_ct = seal_opt(key, &row.id, "patient_email", patient.email.as_deref())?;
    Ok(())
}

/// A visit of the caller's tenant that the caller may see (a clinician sees only their
/// own). Anything else is `not_found`, so existence is never revealed.
pub async fn visible(app: &App, staff: &Staff, id: &str) -> ApiResult<VisitRow> {
    let row = store::visits::get(&mut app.store.read().await?, &staff.tenant_id, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    if staff.role == StaffRole::Clinician && !staff.is_clinician(&row.clinician_id) {
        return Err(ApiError::NotFound);
    }
    Ok(row)
}

async fn check_clinician(app: &App, tenant_id: &str, clinician_id: &str) -> ApiResult<()> {
    match store::staff::get_staff(&mut app.store.read().await?, tenant_id, clinician_id).await? {
        Some(staff) if staff.role == StaffRole::Clinician.as_str() => Ok(()),
        _ => Err(ApiError::invalid(
            "clinician_id",
            "no clinician with this id",
        )),
    }
}

#[utoipa::path(post, path = "/api/visits", tag = "visits", request_body = CreateVisit,
    responses((status = 201, body = Visit), (status = 400, body = Problem), (status = 429, body = Problem)),
    security(("api_key" = [])))]
/// Schedules a visit (admin, scheduler).
pub async fn create(
    State(app): State<Arc<App>>,
    staff: Staff,
    ApiJson(body): ApiJson<CreateVisit>,
) -> ApiResult<(StatusCode, Json<Visit>)> {
    staff.require(&[StaffRole::Admin, StaffRole::Scheduler])?;
    let errors = body.validate();
    if !errors.is_empty() {
        return Err(ApiError::InvalidRequest(errors));
    }
    if body.media_backend == Some(MediaBackend::Chime) && !app.config.chime_enabled() {
        return Err(ApiError::invalid(
            "media_backend",
            "chime is not enabled on this server",
        ));
    }
    check_clinician(&app, &staff.tenant_id, &body.clinician_id).await?;
    let now = Utc::now();
    let midnight = now
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .unwrap_or_default()
        .and_utc();
    let created_today = store::visits::count_created_since(
        &mut app.store.read().await?,
        &staff.tenant_id,
        ms(midnight),
    )
    .await?;
    if created_today >= i64::from(app.config.visits.daily_quota) {
        app.metrics
            .rate_limited
            .with_label_values(&["daily_quota"])
            .inc();
        let tomorrow = midnight + Duration::days(1);
        return Err(ApiError::RateLimited {
            retry_after_secs: u64::try_from((tomorrow - now).num_seconds()).unwrap_or(1),
        });
    }
    let key = app.tenant_key(&staff.tenant_id).await?;
    let id = store::new_id();
    let mut row = VisitRow {
        id: id.clone(),
        tenant_id: staff.tenant_id.clone(),
        clinician_id: body.clinician_id.clone(),
        status: VisitStatus::Scheduled.as_str().to_owned(),
        scheduled_at: ms(body.scheduled_at),
        duration_minutes: i64::from(body.duration_minutes),
        media_backend: body
            .media_backend
            .unwrap_or(app.config.media.backend)
            .as_str()
            .to_owned(),
        waiting_room: body.waiting_room.unwrap_or(true),
        patient_name_ct: Vec::new(),
        patient_phone_ct: None,
        patient_email_ct: None,
        chief_complaint_ct: seal_opt(
            &key,
            &id,
            "chief_complaint",
            body.chief_complaint.as_deref(),
        )?,
        notes_ct: seal_opt(&key, &id, "notes", body.notes.as_deref())?,
        created_at: ms(now),
        updated_at: ms(now),
        started_at: None,
        ended_at: None,
    };
    seal_patient(&key, &mut row, &body.patient)?;
    let mut tx = app.store.begin().await?;
    store::visits::insert(&mut tx, &row).await?;
    let entry = NewEntry::success(&staff.tenant_id, &staff.actor, "visit.created", Some(&id))
        .with_details(json!({"clinician_id": row.clinician_id, "scheduled_at": row.scheduled_at}));
    app.audit(&mut tx, entry).await?;
    tx.commit().await?;
    app.metrics.visits.with_label_values(&["created"]).inc();
    Ok((StatusCode::CREATED, Json(render(&key, &row, true)?)))
}

/// Query of `GET /api/visits`.
#[derive(Debug, Deserialize, IntoParams)]
// Documented as query parameters: utoipa's default place is the path.
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only visits in this status.
    pub status: Option<VisitStatus>,
    /// Scheduled at or after (RFC 3339).
    pub from: Option<DateTime<Utc>>,
    /// Scheduled before (RFC 3339).
    pub to: Option<DateTime<Utc>>,
    /// Only this clinician's visits.
    pub clinician_id: Option<String>,
    /// Page size, 1–100 (default 50).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// A page of visits.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct VisitPage {
    /// Visits ordered by scheduled time.
    pub items: Vec<Visit>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

fn decode_cursor(cursor: &str) -> Option<(i64, String)> {
    let raw = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (at, id) = text.split_once(':')?;
    Some((at.parse().ok()?, id.to_owned()))
}

fn encode_cursor(row: &VisitRow) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}:{}", row.scheduled_at, row.id))
}

#[utoipa::path(get, path = "/api/visits", tag = "visits", params(ListQuery),
    responses((status = 200, body = VisitPage), (status = 400, body = Problem)),
    security(("api_key" = [])))]
/// Lists visits with cursor pagination (a clinician sees only their own).
pub async fn list(
    State(app): State<Arc<App>>,
    staff: Staff,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<VisitPage>> {
    let limit = q.limit.unwrap_or(50);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be between 1 and 100"));
    }
    let after = match &q.cursor {
        Some(cursor) => Some(
            decode_cursor(cursor)
                .ok_or_else(|| ApiError::invalid("cursor", "not a cursor from this API"))?,
        ),
        None => None,
    };
    let clinician_id = if staff.role == StaffRole::Clinician {
        match (&q.clinician_id, &staff.staff_id) {
            (Some(asked), Some(own)) if asked != own => {
                return Ok(Json(VisitPage {
                    items: Vec::new(),
                    next_cursor: None,
                }));
            }
            (_, own) => own.clone(),
        }
    } else {
        q.clinician_id.clone()
    };
    let filter = VisitFilter {
        status: q.status,
        from: q.from.map(ms),
        to: q.to.map(ms),
        clinician_id,
        after,
        limit,
    };
    let mut rows =
        store::visits::list(&mut app.store.read().await?, &staff.tenant_id, &filter).await?;
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next_cursor = if more {
        rows.last().map(encode_cursor)
    } else {
        None
    };
    let key = app.tenant_key(&staff.tenant_id).await?;
    let items = rows
        .iter()
        .map(|row| render(&key, row, true))
        .collect::<ApiResult<Vec<_>>>()?;
    if !items.is_empty() {
        let ids: Vec<&str> = items.iter().map(|v| v.id.as_str()).collect();
        let entry = NewEntry::success(&staff.tenant_id, &staff.actor, "visit.phi_read", None)
            .with_details(json!({"visit_ids": ids}));
        app.audit_alone(entry).await?;
    }
    Ok(Json(VisitPage { items, next_cursor }))
}

#[utoipa::path(get, path = "/api/visits/{id}", tag = "visits", params(("id" = String, Path)),
    responses((status = 200, body = Visit), (status = 404, body = Problem)),
    security(("api_key" = [])))]
/// Reads one visit with its PHI (audited).
pub async fn get(
    State(app): State<Arc<App>>,
    staff: Staff,
    Path(id): Path<String>,
) -> ApiResult<Json<Visit>> {
    let row = visible(&app, &staff, &id).await?;
    let key = app.tenant_key(&staff.tenant_id).await?;
    let visit = render(&key, &row, true)?;
    app.audit_alone(NewEntry::success(
        &staff.tenant_id,
        &staff.actor,
        "visit.phi_read",
        Some(&id),
    ))
    .await?;
    Ok(Json(visit))
}

#[utoipa::path(patch, path = "/api/visits/{id}", tag = "visits", params(("id" = String, Path)),
    request_body = PatchVisit,
    responses((status = 200, body = Visit), (status = 400, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)),
    security(("api_key" = [])))]
/// Reschedules or edits a visit while it is `scheduled` (admin, scheduler).
pub async fn patch(
    State(app): State<Arc<App>>,
    staff: Staff,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<PatchVisit>,
) -> ApiResult<Json<Visit>> {
    staff.require(&[StaffRole::Admin, StaffRole::Scheduler])?;
    let mut row = visible(&app, &staff, &id).await?;
    let errors = body.validate();
    if !errors.is_empty() {
        return Err(ApiError::InvalidRequest(errors));
    }
    if row.status() != VisitStatus::Scheduled {
        return Err(ApiError::Conflict("only a scheduled visit can be edited"));
    }
    if let Some(clinician) = &body.clinician_id {
        check_clinician(&app, &staff.tenant_id, clinician).await?;
        row.clinician_id.clone_from(clinician);
    }
    let key = app.tenant_key(&staff.tenant_id).await?;
    let mut changed = Vec::new();
    if let Some(at) = body.scheduled_at {
        row.scheduled_at = ms(at);
        changed.push("scheduled_at");
    }
    if let Some(minutes) = body.duration_minutes {
        row.duration_minutes = i64::from(minutes);
        changed.push("duration_minutes");
    }
    if let Some(patient) = &body.patient {
        seal_patient(&key, &mut row, patient)?;
        changed.push("patient");
    }
    if let Some(text) = &body.chief_complaint {
        row.chief_complaint_ct = seal_opt(&key, &id, "chief_complaint", Some(text))?;
        changed.push("chief_complaint");
    }
    if let Some(text) = &body.notes {
        row.notes_ct = seal_opt(&key, &id, "notes", Some(text))?;
        changed.push("notes");
    }
    if let Some(on) = body.waiting_room {
        row.waiting_room = on;
        changed.push("waiting_room");
    }
    if body.clinician_id.is_some() {
        changed.push("clinician_id");
    }
    row.updated_at = ms(Utc::now());
    let mut tx = app.store.begin().await?;
    if !store::visits::transition(
        &mut tx,
        &staff.tenant_id,
        &id,
        &[VisitStatus::Scheduled],
        VisitStatus::Scheduled,
        row.updated_at,
    )
    .await?
    {
        return Err(ApiError::Conflict("only a scheduled visit can be edited"));
    }
    store::visits::update(&mut tx, &row).await?;
    store::links::reset_expiry(
        &mut tx,
        &staff.tenant_id,
        &id,
        rules::link_expiry(&app.config.visits, &row),
    )
    .await?;
    let entry = NewEntry::success(&staff.tenant_id, &staff.actor, "visit.updated", Some(&id))
        .with_details(json!({"fields": changed}));
    app.audit(&mut tx, entry).await?;
    tx.commit().await?;
    app.metrics.visits.with_label_values(&["updated"]).inc();
    Ok(Json(render(&key, &row, true)?))
}

/// Closes the visit through the domain (status, links, audit, event), then its media
/// session, and answers the closed visit.
async fn close(app: &App, staff: &Staff, id: &str, closing: Closing) -> ApiResult<Json<Visit>> {
    lifecycle::close(app, &staff.tenant_id, id, &staff.actor, closing, Via::Api).await?;
    let row = store::visits::get(&mut app.store.read().await?, &staff.tenant_id, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    media::close_session(
        app,
        &row.tenant_id,
        &row.id,
        media::backend_of(&row),
        &staff.actor,
        Via::Api,
    )
    .await?;
    let key = app.tenant_key(&staff.tenant_id).await?;
    Ok(Json(render(&key, &row, true)?))
}

#[utoipa::path(post, path = "/api/visits/{id}/cancel", tag = "visits", params(("id" = String, Path)),
    responses((status = 200, body = Visit), (status = 404, body = Problem), (status = 409, body = Problem)),
    security(("api_key" = [])))]
/// Cancels a visit that has not begun; its links die (admin, scheduler, its clinician).
pub async fn cancel(
    State(app): State<Arc<App>>,
    staff: Staff,
    Path(id): Path<String>,
) -> ApiResult<Json<Visit>> {
    visible(&app, &staff, &id).await?;
    close(&app, &staff, &id, Closing::Cancel).await
}

#[utoipa::path(post, path = "/api/visits/{id}/end", tag = "visits", params(("id" = String, Path)),
    responses((status = 200, body = Visit), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)),
    security(("api_key" = [])))]
/// Ends a visit: everyone is disconnected and its links die (its clinician, admin).
pub async fn end(
    State(app): State<Arc<App>>,
    staff: Staff,
    Path(id): Path<String>,
) -> ApiResult<Json<Visit>> {
    let row = visible(&app, &staff, &id).await?;
    if !(staff.role == StaffRole::Admin || staff.is_clinician(&row.clinician_id)) {
        return Err(ApiError::Forbidden);
    }
    close(&app, &staff, &id, Closing::End).await
}
