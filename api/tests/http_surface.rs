//! What every client meets regardless of the route: the OpenAPI 3.1 document, health,
//! readiness and metrics endpoints, the security headers on every answer, and CORS only for
//! configured origins.

mod support;

use api::store::Engine;
use axum::http::{Method, StatusCode, header};
use serde_json::json;
use support::{Req, TestApp, minutes_from_now};

#[tokio::test]
async fn openapi_is_3_1_and_lists_every_route() {
    let t = TestApp::new().await;
    let resp = t.send(Req::get("/api/openapi.json")).await;
    let doc = resp.expect(StatusCode::OK);
    assert!(
        resp.header("content-type")
            .is_some_and(|c| c.starts_with("application/json"))
    );
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "version {}",
        doc["openapi"]
    );
    for (path, method) in [
        ("/api/staff", "post"),
        ("/api/visits", "post"),
        ("/api/visits", "get"),
        ("/api/visits/{id}", "get"),
        ("/api/visits/{id}", "patch"),
        ("/api/visits/{id}/cancel", "post"),
        ("/api/visits/{id}/end", "post"),
        ("/api/visits/{id}/links", "post"),
        ("/api/visits/{id}/notify", "post"),
        ("/api/visits/{id}/resend-link", "post"),
        ("/api/notifications", "get"),
        ("/api/token/redeem", "post"),
        ("/api/visits/{id}/start", "post"),
        ("/api/visits/{id}/start-authenticated", "post"),
        ("/api/grants/refresh", "post"),
        ("/api/audit", "get"),
        ("/api/audit/export", "get"),
    ] {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} is documented"
        );
    }
    // Staff routes declare the bearer scheme; the problem schema is there.
    assert_eq!(
        doc["components"]["securitySchemes"]["api_key"]["scheme"],
        "bearer"
    );
    assert!(doc["components"]["schemas"]["Problem"].is_object());
    assert!(doc["paths"]["/api/visits"]["post"]["security"].is_array());
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let t = TestApp::new().await;
    let health = t.send(Req::get("/healthz")).await.expect(StatusCode::OK);
    assert_eq!(health, json!({"status": "ok"}));
    let ready = t.send(Req::get("/readyz")).await.expect(StatusCode::OK);
    assert_eq!(ready, json!({"status": "ready"}));

    // Some traffic, then the exposition shows it by route template (never by id).
    let cast = t.cast().await;
    let visit = t
        .visit_at(&cast.scheduler.key, &cast.clinician.id, minutes_from_now(0))
        .await;
    t.send(Req::get(&format!("/api/visits/{visit}")).key(&t.admin_key))
        .await
        .expect(StatusCode::OK);
    t.redeem("nonexistentcode1").await;
    let resp = t.send(Req::get("/metrics")).await;
    assert_eq!(resp.status, StatusCode::OK);
    assert!(
        resp.header("content-type")
            .is_some_and(|c| c.starts_with("text/plain"))
    );
    let text = resp.text();
    for needle in [
        "bedside_http_requests_total{method=\"GET\",route=\"/api/visits/{id}\",status=\"200\"} 1",
        "bedside_http_requests_total{method=\"POST\",route=\"/api/visits\",status=\"201\"} 1",
        "bedside_http_request_duration_seconds_bucket",
        "bedside_visits_total{event=\"created\"} 1",
        "bedside_links_total{event=\"refused_link_invalid\"} 1",
        "bedside_audit_rows_total{outcome=\"success\"}",
    ] {
        assert!(text.contains(needle), "metrics lack {needle}:\n{text}");
    }
    assert!(!text.contains(&visit), "no ids in metric labels");
    assert_eq!(
        text.contains("bedside_sqlite_wal_frames"),
        t.engine == Engine::Sqlite,
        "the SQLite checkpointer's gauge, on SQLite only"
    );

    // Readiness follows the database.
    t.app.store.close().await;
    t.send(Req::get("/readyz"))
        .await
        .problem(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    t.send(Req::get("/healthz")).await.expect(StatusCode::OK);
}

#[tokio::test]
async fn every_answer_carries_the_security_headers() {
    let t = TestApp::new().await;
    let cast = t.cast().await;
    let (visit, links) = t.visit_with_links(&cast, minutes_from_now(0)).await;
    let answers = [
        ("healthz", t.send(Req::get("/healthz")).await),
        ("openapi", t.send(Req::get("/api/openapi.json")).await),
        ("redeem", t.redeem(&links.patient).await),
        ("start", t.start(&visit, &links.patient).await),
        ("link_invalid", t.redeem("nonexistentcode1").await),
        ("unauthenticated", t.send(Req::get("/api/visits")).await),
        ("fallback 404", t.send(Req::get("/j/whatever")).await),
        (
            "413",
            t.send(Req::post("/api/token/redeem").raw("application/json", vec![b' '; 70 * 1024]))
                .await,
        ),
    ];
    for (what, resp) in &answers {
        let h = |name: &str| resp.header(name).map(str::to_owned);
        assert_eq!(
            h("referrer-policy").as_deref(),
            Some("no-referrer"),
            "{what}"
        );
        assert_eq!(
            h("x-content-type-options").as_deref(),
            Some("nosniff"),
            "{what}"
        );
        assert_eq!(h("x-frame-options").as_deref(), Some("DENY"), "{what}");
        assert_eq!(
            h("content-security-policy").as_deref(),
            Some(api::http::CSP),
            "{what}"
        );
        assert!(
            h("strict-transport-security").is_none(),
            "{what}: no HSTS without TLS"
        );
    }
    let csp = api::http::CSP;
    assert!(csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"));
    assert!(!csp.contains("unsafe-inline"));
    // API answers are never cached.
    assert_eq!(answers[2].1.header("cache-control"), Some("no-store"));
    assert_eq!(answers[0].1.header("cache-control"), None);
}

#[tokio::test]
async fn cors_is_off_unless_origins_are_configured() {
    let preflight = |origin: &str| {
        Req::new(Method::OPTIONS, "/api/visits")
            .header(header::ORIGIN, origin)
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
            .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "authorization")
    };
    let t = TestApp::new().await;
    let resp = t.send(preflight("https://portal.example")).await;
    assert!(resp.header("access-control-allow-origin").is_none());
    let resp = t
        .send(Req::get("/healthz").header(header::ORIGIN, "https://portal.example"))
        .await;
    assert!(resp.header("access-control-allow-origin").is_none());

    let t =
        TestApp::with_config(|c| c.http.cors_origins = vec!["https://portal.example".into()]).await;
    let resp = t.send(preflight("https://portal.example")).await;
    assert!(resp.status.is_success(), "{}", resp.status);
    assert_eq!(
        resp.header("access-control-allow-origin"),
        Some("https://portal.example")
    );
    let resp = t.send(preflight("https://evil.example")).await;
    assert!(resp.header("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn hsts_is_sent_when_tls_is_configured() {
    let t = TestApp::with_config(|c| {
        c.http.tls_cert = Some("/nonexistent/cert.pem".into());
        c.http.tls_key = Some("/nonexistent/key.pem".into());
    })
    .await;
    let resp = t.send(Req::get("/healthz")).await;
    assert!(
        resp.header("strict-transport-security")
            .is_some_and(|v| v.starts_with("max-age="))
    );
    // And the device cookie becomes Secure.
    let cast = t.cast().await;
    let (visit, links) = t.visit_with_links(&cast, minutes_from_now(0)).await;
    let resp = t.start(&visit, &links.patient).await;
    resp.expect(StatusCode::OK);
    let cookie = resp
        .header("set-cookie")
        .expect("cookie")
        .to_ascii_lowercase();
    assert!(cookie.split(';').any(|a| a.trim() == "secure"), "{cookie}");
    assert!(
        links.body["patient"]["url"]
            .as_str()
            .is_some_and(|u| u.starts_with("https://"))
    );
}

#[tokio::test]
async fn the_start_answer_carries_the_relay_policy_as_documented() {
    let t = TestApp::with_config(|c| {
        c.turn.urls = vec!["turn:turn.example:3478?transport=udp".into()];
        c.turn.shared_secret = Some(api::config::Secret::new("s3cret"));
        c.turn.policy = api::config::TurnPolicy::Relay;
    })
    .await;
    let doc = t
        .send(Req::get("/api/openapi.json"))
        .await
        .expect(StatusCode::OK);
    let sfu = &doc["components"]["schemas"]["Media"]["oneOf"][0];
    assert_eq!(sfu["properties"]["backend"]["enum"], json!(["sfu"]));
    assert_eq!(
        sfu["properties"]["ice_transport_policy"]["$ref"],
        "#/components/schemas/IceTransportPolicy",
        "{sfu}"
    );
    assert!(
        !sfu["required"]
            .as_array()
            .is_some_and(|r| r.contains(&json!("ice_transport_policy"))),
        "absent unless relay: {sfu}"
    );
    assert_eq!(
        doc["components"]["schemas"]["IceTransportPolicy"]["enum"],
        json!(["relay"])
    );

    let cast = t.cast().await;
    let (visit, links) = t.visit_with_links(&cast, minutes_from_now(5)).await;
    let answer = t.start(&visit, &links.patient).await.expect(StatusCode::OK);
    assert_eq!(answer["media"]["ice_transport_policy"], "relay");
    let server = &answer["media"]["ice_servers"][0];
    assert_eq!(
        server["urls"],
        json!(["turn:turn.example:3478?transport=udp"])
    );
    assert!(
        server["username"]
            .as_str()
            .is_some_and(|u| u.ends_with(answer["participant_id"].as_str().expect("participant")))
    );
    assert!(server["credential"].is_string());
}
