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
pub async fn document() -> Json<serde_json::Value> {
    let mut document = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    problems_as_served(&mut document);
    Json(document)
}

/// Says of every error response what the server sends: `application/problem+json` (the
/// annotations can only say `application/json`), and adds to every operation a `default`
/// response, a problem, for the statuses every route may answer without listing them (400
/// for a malformed body or query, 401, 413, 429, 503).
fn problems_as_served(document: &mut serde_json::Value) {
    let problem = serde_json::json!({"$ref": "#/components/schemas/Problem"});
    let Some(paths) = document
        .get_mut("paths")
        .and_then(serde_json::Value::as_object_mut)
    else {
        return;
    };
    for operation in paths
        .values_mut()
        .filter_map(serde_json::Value::as_object_mut)
        .flat_map(|item| item.values_mut())
        .filter_map(serde_json::Value::as_object_mut)
    {
        let Some(responses) = operation
            .get_mut("responses")
            .and_then(serde_json::Value::as_object_mut)
        else {
            continue;
        };
        for (status, response) in responses.iter_mut() {
            let error = status.starts_with('4') || status.starts_with('5');
            let content = response
                .get_mut("content")
                .and_then(serde_json::Value::as_object_mut);
            if let (true, Some(content)) = (error, content)
                && let Some(json) = content.remove("application/json")
            {
                content.insert("application/problem+json".into(), json);
            }
        }
        responses.entry("default").or_insert_with(|| {
            serde_json::json!({
                "description": "A problem (RFC 9457) with a stable `code`: docs/api.md lists them",
                "content": {"application/problem+json": {"schema": problem.clone()}},
            })
        });
    }
}
