//! `/api/audit`: query and NDJSON export of the tenant's audit chain (admin).

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{ApiQuery, Staff};
use crate::App;
use crate::audit::{Entry, NewEntry};
use crate::error::{ApiError, ApiResult, Problem};
use crate::model::StaffRole;
use crate::store::{self, audit::AuditFilter, ms};

/// Query of the audit routes.
#[derive(Debug, Deserialize, IntoParams)]
// Documented as query parameters: utoipa's default place is the path.
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Only this visit.
    pub visit_id: Option<String>,
    /// Only this event (`link.refused`, …).
    pub event: Option<String>,
    /// At or after (RFC 3339).
    pub from: Option<DateTime<Utc>>,
    /// Before (RFC 3339).
    pub to: Option<DateTime<Utc>>,
    /// Page size, 1–1000 (default 100). Export streams every matching row, but refuses an
    /// out-of-range value alike.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// A page of audit rows.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditPage {
    /// Rows in chain order.
    pub items: Vec<Entry>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// The page size a query asks for (default 100), or `invalid_request` outside 1–1000.
fn page_size(q: &AuditQuery) -> ApiResult<u32> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be between 1 and 1000"));
    }
    Ok(limit)
}

fn filter(q: &AuditQuery, limit: Option<u32>) -> ApiResult<AuditFilter> {
    let after_seq = q
        .cursor
        .as_deref()
        .map(|c| {
            c.parse::<i64>()
                .map_err(|_| ApiError::invalid("cursor", "not a cursor from this API"))
        })
        .transpose()?;
    Ok(AuditFilter {
        visit_id: q.visit_id.clone(),
        event: q.event.clone(),
        from: q.from.map(ms),
        to: q.to.map(ms),
        after_seq,
        limit,
    })
}

#[utoipa::path(get, path = "/api/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, body = AuditPage), (status = 400, body = Problem), (status = 403, body = Problem)),
    security(("api_key" = [])))]
/// Queries the audit chain (admin).
pub async fn query(
    State(app): State<Arc<App>>,
    staff: Staff,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> ApiResult<Json<AuditPage>> {
    staff.require(&[StaffRole::Admin])?;
    let limit = page_size(&q)?;
    let mut items = store::audit::page(
        &mut app.store.read().await?,
        &staff.tenant_id,
        &filter(&q, Some(limit))?,
    )
    .await?;
    let more = items.len() > limit as usize;
    items.truncate(limit as usize);
    let next_cursor = if more {
        items.last().map(|r| r.seq.to_string())
    } else {
        None
    };
    Ok(Json(AuditPage { items, next_cursor }))
}

#[utoipa::path(get, path = "/api/audit/export", tag = "audit", params(AuditQuery),
    responses((status = 200, description = "NDJSON, one audit row per line", content_type = "application/x-ndjson"),
        (status = 403, body = Problem)),
    security(("api_key" = [])))]
/// Streams the matching audit rows as NDJSON (admin). The export itself is audited.
pub async fn export(
    State(app): State<Arc<App>>,
    staff: Staff,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> ApiResult<Response> {
    staff.require(&[StaffRole::Admin])?;
    page_size(&q)?;
    let filter = filter(&q, None)?;
    app.audit_alone(
        NewEntry::success(
            &staff.tenant_id,
            &staff.actor,
            "audit.exported",
            q.visit_id.as_deref(),
        )
        .with_details(serde_json::json!({"event": q.event})),
    )
    .await?;
    let rows = store::audit::stream(app.store.clone(), staff.tenant_id.clone(), filter);
    let lines = rows.map(|row| {
        row.map(|entry| {
            let mut line = serde_json::to_vec(&entry).unwrap_or_default();
            line.push(b'\n');
            line
        })
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response())
}
