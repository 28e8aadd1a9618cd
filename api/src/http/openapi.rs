//! The OpenAPI 3.1 document, generated from the handlers' annotations.

use axum::Json;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{audit, join, links, nodes, staff, visits};

struct ApiKeyAuth;

impl Modify for ApiKeyAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(title = "Bedside", description = "Telehealth video visits: scheduling, one-time links, grants, audit."),
    paths(
        staff::create,
        visits::create, visits::list, visits::get, visits::patch, visits::cancel, visits::end,
        links::issue, links::notify, links::resend, links::list,
        join::redeem, join::start, join::start_authenticated, join::refresh,
        audit::query, audit::export,
        nodes::list,
    ),
    modifiers(&ApiKeyAuth),
)]
pub struct ApiDoc;

/// `GET /api/openapi.json`.
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
