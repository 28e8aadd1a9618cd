//! The browser pages: `web/` (plain ES modules and CSS, no build step) embedded in the binary
//! with rust-embed and served beside the API.
//!
//! - `GET /j/{code}`: the join page. The code stays in the path; the page reads it there and
//!   calls `/api/token/redeem` and `/api/visits/{id}/start` itself, so this route looks at
//!   nothing and every code gets the same bytes.
//! - `GET /console`: the clinician's and scheduler's console.
//! - `GET /assets/{path}`: scripts, styles and icons under `web/assets/`; `/assets/chime/…`
//!   is the Amazon Chime SDK bundle from `web/chime/dist/` when an operator built it.
//!
//! The API's security headers are a layer on the API router only, so the same headers are set
//! here: the pages must live under the same strict CSP (no inline script, same origin only).
//! Release builds carry the files inside the binary; debug builds read them from `web/` at
//! run time (rust-embed's default), so editing a page needs no rebuild while developing.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rust_embed::RustEmbed;

/// Only what is served: the pages, `assets/` and the Chime bundle — never `web/chime`'s
/// `node_modules` (tens of megabytes once an operator builds the bundle) or READMEs.
#[derive(RustEmbed)]
#[folder = "web/"]
#[include = "*.html"]
#[include = "assets/**"]
#[include = "chime/dist/*.js"]
struct Files;

/// Where a served asset path lives under `web/`.
fn asset_file(path: &str) -> String {
    match path.strip_prefix("chime/") {
        Some(bundle) => format!("chime/dist/{bundle}"),
        None => format!("assets/{path}"),
    }
}

/// The routes of the browser pages, to merge into the API's router.
pub fn router() -> Router {
    Router::new()
        .route("/j/{code}", get(join_page))
        .route("/console", get(console_page))
        .route("/assets/{*path}", get(asset))
}

async fn join_page() -> Response {
    page("join.html")
}

async fn console_page() -> Response {
    page("console.html")
}

/// An HTML page: never cached, so a deployment's new pages are seen at once.
fn page(name: &str) -> Response {
    match Files::get(name) {
        Some(file) => respond(
            StatusCode::OK,
            "text/html; charset=utf-8",
            "no-store",
            None,
            file.data.into_owned(),
        ),
        None => not_found(),
    }
}

/// A static asset, revalidated by ETag on every use: names carry no content hash.
async fn asset(Path(path): Path<String>, request: HeaderMap) -> Response {
    // Debug builds read from disk, where `..` would step out of `assets/`: refuse it outright.
    if path.split(['/', '\\']).any(|segment| segment == "..") {
        return not_found();
    }
    let Some(file) = Files::get(&asset_file(&path)) else {
        return not_found();
    };
    let etag = format!("\"{}\"", hex(&file.metadata.sha256_hash()));
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == etag);
    if fresh {
        return respond(
            StatusCode::NOT_MODIFIED,
            "",
            "no-cache",
            Some(&etag),
            Vec::new(),
        );
    }
    let mime = file.metadata.mimetype();
    // JavaScript modules must be served as JavaScript or the browser refuses them.
    let mime = if path.ends_with(".js") {
        "text/javascript; charset=utf-8"
    } else {
        mime
    };
    respond(
        StatusCode::OK,
        mime,
        "no-cache",
        Some(&etag),
        file.data.into_owned(),
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn not_found() -> Response {
    respond(
        StatusCode::NOT_FOUND,
        "text/plain; charset=utf-8",
        "no-store",
        None,
        b"Not found".to_vec(),
    )
}

fn respond(
    status: StatusCode,
    content_type: &str,
    cache: &'static str,
    etag: Option<&str>,
    body: Vec<u8>,
) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    if !content_type.is_empty()
        && let Ok(value) = HeaderValue::from_str(content_type)
    {
        headers.insert(header::CONTENT_TYPE, value);
    }
    if let Some(value) = etag.and_then(|e| HeaderValue::from_str(e).ok()) {
        headers.insert(header::ETAG, value);
    }
    let fixed: [(HeaderName, &'static str); 8] = [
        (header::CACHE_CONTROL, cache),
        (header::CONTENT_SECURITY_POLICY, api::http::CSP),
        // The join URL holds the one-time code: never send it to anyone in a Referer.
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (
            HeaderName::from_static("permissions-policy"),
            "camera=(self), microphone=(self), display-capture=(self), geolocation=()",
        ),
        (
            HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
        (HeaderName::from_static("x-robots-tag"), "noindex, nofollow"),
    ];
    for (name, value) in fixed {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::{Body, to_bytes};
    use axum::http::Request;
    use tower::ServiceExt as _;

    async fn get(path: &str, headers: &[(&str, &str)]) -> (StatusCode, HeaderMap, Vec<u8>) {
        let mut request = Request::get(path);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = router()
            .oneshot(request.body(Body::empty()).expect("request"))
            .await
            .expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let body = to_bytes(response.into_body(), 1 << 22).await.expect("body");
        (status, headers, body.to_vec())
    }

    #[tokio::test]
    async fn pages_are_served_under_the_strict_csp_and_never_cached() {
        for path in ["/j/AbCdEfGh12345678", "/console"] {
            let (status, headers, body) = get(path, &[]).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert_eq!(headers[header::CONTENT_SECURITY_POLICY], api::http::CSP);
            assert_eq!(headers[header::REFERRER_POLICY], "no-referrer");
            assert_eq!(headers[header::CACHE_CONTROL], "no-store");
            let html = String::from_utf8(body).expect("utf-8");
            assert!(html.starts_with("<!doctype html>"), "{path}");
            let inline = html
                .split("<script")
                .skip(1)
                .any(|tag| !tag.split('>').next().unwrap_or("").contains("src="));
            let handlers = ["onclick=", "onload=", "onerror=", "onsubmit=", "onchange="]
                .iter()
                .any(|h| html.contains(h));
            assert!(!inline && !handlers, "{path} has inline script or handlers");
        }
    }

    #[tokio::test]
    async fn assets_have_their_types_and_revalidate_by_etag() {
        let (status, headers, _) = get("/assets/join.js", &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            headers[header::CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
        let etag = headers[header::ETAG].to_str().expect("ascii").to_owned();
        let (status, _, body) = get("/assets/join.js", &[("if-none-match", &etag)]).await;
        assert_eq!(status, StatusCode::NOT_MODIFIED);
        assert!(body.is_empty());
        let (status, headers, _) = get("/assets/app.css", &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            headers[header::CONTENT_TYPE]
                .to_str()
                .expect("ascii")
                .starts_with("text/css")
        );
    }

    #[test]
    fn only_served_files_are_embedded() {
        assert!(Files::get("join.html").is_some());
        assert!(Files::get("assets/app.css").is_some());
        for private in [
            "README.md",
            "chime/package.json",
            "chime/README.md",
            "chime/src/index.js",
        ] {
            assert!(
                Files::get(private).is_none(),
                "{private} must not be embedded"
            );
        }
        assert_eq!(
            asset_file("chime/amazon-chime-sdk.js"),
            "chime/dist/amazon-chime-sdk.js"
        );
        assert_eq!(asset_file("app.css"), "assets/app.css");
    }

    #[tokio::test]
    async fn unknown_assets_and_traversal_are_not_found() {
        for path in [
            "/assets/nope.js",
            "/assets/../Cargo.toml",
            "/assets/%2e%2e/README.md",
        ] {
            let (status, _, _) = get(path, &[]).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        }
    }
}
