//! The REST surface: one router, one file per resource, all middleware in [`router`].

pub mod audit;
pub mod extract;
pub mod health;
pub mod join;
pub mod links;
pub mod nodes;
pub mod openapi;
mod problem;
pub mod staff;
pub mod visits;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::App;
use crate::error::ApiError;

/// Content-Security-Policy of every response: scripts, styles and images from this origin
/// only, no inline script.
///
/// Connections may also go to Amazon Chime (`https://*.chime.aws`, `wss://*.chime.aws`: the
/// meeting's signaling, TURN control and event ingestion), and workers may start from `blob:`
/// (amazon-chime-sdk-js runs its encoded-transform worker from a blob), as the Chime SDK's CSP
/// guide asks. They are allowed on every node, not only those with Chime enabled, so the policy
/// stays one constant whatever the configuration: the allowance lets a page talk to AWS's
/// Chime hosts and nothing else, and no script can come from there. Voice Focus and background
/// filters (scripts and WebAssembly from `*.sdkassets.chime.aws`) are not used and stay
/// blocked; so does `'wasm-unsafe-eval'`, whose only other use in the bundle is the `long`
/// library probing for a WebAssembly multiply at load (it falls back to JavaScript, and the
/// SDK logs the refusal as a "Security Policy Violation").
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; \
    media-src 'self' blob:; connect-src 'self' https://*.chime.aws wss://*.chime.aws; \
    worker-src 'self' blob:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// The whole HTTP API with its middleware. Other crates merge their routes (signaling's
/// `/ws`, the web pages) into it.
pub fn router(app: Arc<App>) -> Router {
    let body_limit = app.config.http.body_limit_bytes;
    let mut router = Router::new()
        .route("/api/staff", post(staff::create))
        .route("/api/visits", post(visits::create).get(visits::list))
        .route("/api/visits/{id}", get(visits::get).patch(visits::patch))
        .route("/api/visits/{id}/cancel", post(visits::cancel))
        .route("/api/visits/{id}/end", post(visits::end))
        .route("/api/visits/{id}/links", post(links::issue))
        .route("/api/visits/{id}/notify", post(links::notify))
        .route("/api/visits/{id}/resend-link", post(links::resend))
        .route("/api/notifications", get(links::list))
        .route("/api/token/redeem", post(join::redeem))
        .route("/api/visits/{id}/start", post(join::start))
        .route(
            "/api/visits/{id}/start-authenticated",
            post(join::start_authenticated),
        )
        .route("/api/grants/refresh", post(join::refresh))
        .route("/api/audit", get(audit::query))
        .route("/api/audit/export", get(audit::export))
        .route("/api/nodes", get(nodes::list))
        .route("/api/openapi.json", get(openapi::document))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .fallback(|| async { ApiError::NotFound })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(
            app.clone(),
            refuse_declared_oversize,
        ))
        .layer(middleware::from_fn_with_state(app.clone(), observe))
        .layer(middleware::from_fn_with_state(
            app.clone(),
            security_headers,
        ));
    if let Some(cors) = cors(&app) {
        router = router.layer(cors);
    }
    router.with_state(app)
}

fn cors(app: &App) -> Option<CorsLayer> {
    let origins: Vec<HeaderValue> = app
        .config
        .http
        .cors_origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    if origins.is_empty() {
        return None;
    }
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([Method::GET, Method::POST, Method::PATCH])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
            .allow_credentials(true)
            .max_age(Duration::from_secs(600)),
    )
}

/// Refuses at once, from its header alone, a request whose `Content-Length` is over
/// `http.body_limit_bytes` (413 `payload_too_large`): the body is never read, so a client
/// cannot hold the request open until the timeout by announcing a body it never sends.
async fn refuse_declared_oversize(
    State(app): State<Arc<App>>,
    req: Request,
    next: Next,
) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    let limit = u64::try_from(app.config.http.body_limit_bytes).unwrap_or(u64::MAX);
    if declared.is_some_and(|length| length > limit) {
        return ApiError::PayloadTooLarge.into_response();
    }
    next.run(req).await
}

/// Times out slow requests (503 `unavailable`) and records count and latency per route.
async fn observe(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().as_str().to_owned();
    let started = Instant::now();
    let timeout = Duration::from_millis(app.config.http.request_timeout_ms);
    let response = match tokio::time::timeout(timeout, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::Unavailable("request timed out".into()).into_response(),
    };
    let status = response.status().as_u16().to_string();
    app.metrics
        .http_requests
        .with_label_values(&[route.as_str(), method.as_str(), status.as_str()])
        .inc();
    app.metrics
        .http_latency
        .with_label_values(&[route.as_str()])
        .observe(started.elapsed().as_secs_f64());
    response
}

/// Security headers on every response; `no-referrer` keeps join URLs out of Referer.
async fn security_headers(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let api = req.uri().path().starts_with("/api/");
    let mut response = next.run(req).await;
    let headers = response.headers_mut();
    let set = |headers: &mut axum::http::HeaderMap, name: HeaderName, value: &'static str| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    set(headers, header::REFERRER_POLICY, "no-referrer");
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(headers, header::X_FRAME_OPTIONS, "DENY");
    set(headers, header::CONTENT_SECURITY_POLICY, CSP);
    set(
        headers,
        HeaderName::from_static("permissions-policy"),
        "camera=(self), microphone=(self), display-capture=(self), geolocation=()",
    );
    set(
        headers,
        HeaderName::from_static("cross-origin-opener-policy"),
        "same-origin",
    );
    if api {
        set(headers, header::CACHE_CONTROL, "no-store");
    }
    if app.config.http.tls() {
        set(
            headers,
            header::STRICT_TRANSPORT_SECURITY,
            "max-age=63072000; includeSubDomains",
        );
    }
    response
}
