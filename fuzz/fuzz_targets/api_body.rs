//! API JSON request bodies into the api's strict body parser (`parse_json`, which every
//! route's `ApiJson` uses) and then the checks each route applies before it asks the store;
//! a refusal is rendered as the problem document the client gets. The first byte picks the
//! route (its value modulo 8, so the seeds start with a digit), the rest is the body:
//!
//! | byte | route | body | checks |
//! | --- | --- | --- | --- |
//! | `0` | `POST /api/visits` | `CreateVisit` | `validate`, the stored start time |
//! | `1` | `PATCH /api/visits/{id}` | `PatchVisit` | `validate` |
//! | `2` | `POST /api/staff` | `CreateStaff` | `validate` |
//! | `3` | `POST /api/token/redeem` | `RedeemRequest` | the code's plausibility |
//! | `4` | `POST /api/visits/{id}/start` | `StartRequest` | display name, code |
//! | `5` | `POST /api/visits/{id}/start-authenticated` | optional `StartAuthenticatedRequest` | display name |
//! | `6` | `POST /api/visits/{id}/notify`, `/resend-link` | `NotifyRequest` | — |
//! | `7` | `POST /api/grants/refresh` | `RefreshRequest` | — (the grant is the `grant` target's) |
//!
//! Nothing may panic, and a time a valid visit is scheduled at reads back from the store's
//! milliseconds as the same instant.

#![no_main]

use api::error::{ApiError, ApiResult, FieldError};
use api::http::extract::parse_json;
use api::http::join::{
    RedeemRequest, RefreshRequest, StartAuthenticatedRequest, StartRequest, check_display_name,
};
use api::http::links::NotifyRequest;
use api::model::{CreateStaff, CreateVisit, PatchVisit};
use api::store::{from_ms, ms};
use api::tokens::is_plausible_code;
use axum::response::IntoResponse as _;
use libfuzzer_sys::fuzz_target;

/// Field errors as the route refuses them.
fn refuse_if_any(errors: Vec<FieldError>) -> ApiResult<()> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::InvalidRequest(errors))
    }
}

fn check(route: u8, body: &[u8]) -> ApiResult<()> {
    match route % 8 {
        0 => {
            let visit: CreateVisit = parse_json(body)?;
            refuse_if_any(visit.validate())?;
            let stored = ms(visit.scheduled_at);
            assert_eq!(ms(from_ms(stored)), stored, "the start time reads back");
        }
        1 => refuse_if_any(parse_json::<PatchVisit>(body)?.validate())?,
        2 => {
            let staff: CreateStaff = parse_json(body)?;
            refuse_if_any(staff.validate())?;
        }
        3 => {
            let redeem: RedeemRequest = parse_json(body)?;
            let _ = is_plausible_code(&redeem.code);
        }
        4 => {
            let start: StartRequest = parse_json(body)?;
            check_display_name(start.display_name.as_deref())?;
            let _ = is_plausible_code(&start.code);
        }
        5 => {
            // The body is optional on this route: empty means no display name.
            let start = if body.is_empty() {
                StartAuthenticatedRequest::default()
            } else {
                parse_json(body)?
            };
            check_display_name(start.display_name.as_deref())?;
        }
        6 => {
            parse_json::<NotifyRequest>(body)?;
        }
        _ => {
            parse_json::<RefreshRequest>(body)?;
        }
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let Some((&route, body)) = data.split_first() else {
        return;
    };
    if let Err(error) = check(route, body) {
        let _ = error.into_response();
    }
});
