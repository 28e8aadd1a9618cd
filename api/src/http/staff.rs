//! `/api/staff`: create staff members with their API key.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::extract::{ApiJson, Staff};
use crate::App;
use crate::audit::NewEntry;
use crate::error::{ApiError, ApiResult, Problem};
use crate::model::{CreateStaff, StaffRole};
use crate::store::{self, ms, staff::StaffRow};

/// A new staff member and their API key (shown once).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreatedStaff {
    /// Staff id (use as `clinician_id`).
    pub id: String,
    /// Role.
    pub role: StaffRole,
    /// Display name.
    pub display_name: String,
    /// API key; store it now, it is not shown again.
    pub api_key: String,
}

#[utoipa::path(post, path = "/api/staff", tag = "staff", request_body = CreateStaff,
    responses((status = 201, body = CreatedStaff), (status = 400, body = Problem), (status = 403, body = Problem)),
    security(("api_key" = [])))]
/// Creates a staff member and their API key (admin).
pub async fn create(
    State(app): State<Arc<App>>,
    staff: Staff,
    ApiJson(body): ApiJson<CreateStaff>,
) -> ApiResult<(StatusCode, Json<CreatedStaff>)> {
    staff.require(&[StaffRole::Admin])?;
    let errors = body.validate();
    if !errors.is_empty() {
        return Err(ApiError::InvalidRequest(errors));
    }
    let key = app.tenant_key(&staff.tenant_id).await?;
    let row = StaffRow {
        id: store::new_id(),
        role: body.role.as_str().to_owned(),
        display_name: body.display_name.trim().to_owned(),
    };
    let email_ct = body
        .email
        .as_deref()
        .map(|email| {
            key.encrypt(&row.id, "staff_email", email)
                .map_err(crate::app::crypto_error)
        })
        .transpose()?;
    let mut tx = app.store.begin().await?;
    store::staff::insert_staff(
        &mut tx,
        &staff.tenant_id,
        &row,
        email_ct.as_deref(),
        ms(Utc::now()),
    )
    .await?;
    let entry = NewEntry::success(&staff.tenant_id, &staff.actor, "staff.created", None)
        .with_details(json!({"staff_id": row.id, "role": row.role}));
    app.audit(&mut tx, entry).await?;
    let (_, api_key) = app
        .insert_api_key(
            &mut tx,
            &staff.tenant_id,
            body.role,
            Some(&row.id),
            &staff.actor,
        )
        .await?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedStaff {
            id: row.id,
            role: body.role,
            display_name: row.display_name,
            api_key: api_key.expose().to_owned(),
        }),
    ))
}
