//! The whole flow under a global `tracing` subscriber that records every event of every
//! crate (sqlx included) at TRACE. Afterwards the patient's name, phone, email and chief
//! complaint must appear nowhere: not in the logs, the metrics text, any audit row (via the
//! NDJSON export), any notification body, or the database files; and no grant, API key or
//! link code may appear in the logs.
//!
//! This file holds one test on purpose: the subscriber is process-global.

mod support;

use axum::http::{StatusCode, header};
use serde_json::json;
use support::{LogBuffer, Req, TestApp, minutes_from_now, phi, start_req, visit_body};
use tracing_subscriber::util::SubscriberInitExt as _;

fn capture_all_logs() -> LogBuffer {
    let buffer = LogBuffer::default();
    let writer = buffer.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish()
        .try_init()
        .expect("the only subscriber of this test binary");
    buffer
}

#[tokio::test]
async fn no_phi_in_logs_metrics_audit_or_notifications() {
    let logs = capture_all_logs();
    let t = TestApp::new().await;
    let cast = t.cast().await;
    let mut secrets = vec![
        t.admin_key.clone(),
        cast.scheduler.key.clone(),
        cast.clinician.key.clone(),
        cast.other_clinician.key.clone(),
    ];
    let sched = cast.scheduler.key.clone();

    // Schedule, read, list, edit.
    let visit = t
        .visit_at(&sched, &cast.clinician.id, minutes_from_now(0))
        .await;
    t.send(Req::get(&format!("/api/visits/{visit}")).key(&cast.clinician.key))
        .await
        .expect(StatusCode::OK);
    t.send(Req::get("/api/visits").key(&t.admin_key))
        .await
        .expect(StatusCode::OK);
    t.send(
        Req::patch(&format!("/api/visits/{visit}"))
            .key(&sched)
            .json(json!({
                "patient": {"name": phi::NAME, "phone": phi::PHONE, "email": phi::EMAIL},
                "chief_complaint": phi::COMPLAINT,
                "duration_minutes": 40,
            })),
    )
    .await
    .expect(StatusCode::OK);

    // Refused inputs that carry PHI.
    let mut wrong_type = visit_body(&cast.clinician.id, minutes_from_now(0));
    wrong_type["duration_minutes"] = json!(phi::NAME);
    let mut bad_phone = visit_body(&cast.clinician.id, minutes_from_now(0));
    bad_phone["patient"]["phone"] = json!(phi::PHONE_DIGITS);
    let mut unknown = visit_body(&cast.clinician.id, minutes_from_now(0));
    unknown["patient"][phi::EMAIL] = json!(phi::COMPLAINT);
    let mut bad_time = visit_body(&cast.clinician.id, minutes_from_now(0));
    bad_time["scheduled_at"] = json!(phi::COMPLAINT);
    for body in [wrong_type, bad_phone, unknown, bad_time] {
        t.send(Req::post("/api/visits").key(&sched).json(body))
            .await
            .problem(StatusCode::BAD_REQUEST, "invalid_request");
    }
    t.send(Req::post("/api/visits").key(&sched).raw(
        "application/json",
        format!("{{\"patient\": {{\"name\": \"{}\"", phi::NAME),
    ))
    .await
    .problem(StatusCode::BAD_REQUEST, "invalid_request");

    // Links, notifications (delivered by the log transport), resend.
    let links = t.links(&sched, &visit).await;
    secrets.push(links.clinician.clone());
    t.send(
        Req::post(&format!("/api/visits/{visit}/notify"))
            .key(&sched)
            .json(json!({"channels": ["sms", "email"]})),
    )
    .await
    .expect(StatusCode::ACCEPTED);
    let resent = t
        .send(
            Req::post(&format!("/api/visits/{visit}/resend-link"))
                .key(&sched)
                .json(json!({"channels": ["sms", "email"]})),
        )
        .await
        .expect(StatusCode::ACCEPTED);
    let patient_code = resent["patient"]["code"].as_str().expect("code").to_owned();
    secrets.push(patient_code.clone());
    assert_eq!(
        api::notify::deliver_due(&t.app).await.expect("delivered"),
        4
    );

    // Join: redeem, start, rejoin, refusal, clinician, refresh.
    t.redeem(&patient_code).await.expect(StatusCode::OK);
    let started = t
        .send(start_req(&visit, &patient_code).header(header::USER_AGENT, "Phone"))
        .await;
    let cookie = started.device_cookie().expect("cookie");
    secrets.push(cookie.clone());
    let started = started.expect(StatusCode::OK);
    let rejoined = t
        .send(
            start_req(&visit, &patient_code)
                .header(header::USER_AGENT, "Phone")
                .header(header::COOKIE, &format!("bedside_device={cookie}")),
        )
        .await
        .expect(StatusCode::OK);
    t.start(&visit, &patient_code)
        .await
        .problem(StatusCode::GONE, "link_used");
    let clinician = t
        .send(
            Req::post(&format!("/api/visits/{visit}/start-authenticated")).key(&cast.clinician.key),
        )
        .await
        .expect(StatusCode::OK);
    let refreshed = t
        .send(Req::post("/api/grants/refresh").json(json!({"grant": started["grant"]})))
        .await
        .expect(StatusCode::OK);
    for grant in [&started, &rejoined, &clinician, &refreshed] {
        secrets.push(grant["grant"].as_str().expect("grant").to_owned());
    }

    // End; a second visit is cancelled; an unknown key is refused.
    t.send(Req::post(&format!("/api/visits/{visit}/end")).key(&cast.clinician.key))
        .await
        .expect(StatusCode::OK);
    let second = t
        .visit_at(&sched, &cast.clinician.id, minutes_from_now(120))
        .await;
    t.send(Req::post(&format!("/api/visits/{second}/cancel")).key(&sched))
        .await
        .expect(StatusCode::OK);
    t.send(Req::get("/api/visits").key(&format!("bsk_{}", "Q".repeat(40))))
        .await
        .problem(StatusCode::UNAUTHORIZED, "unauthenticated");
    t.send(Req::get(&format!("/api/audit?visit_id={visit}")).key(&t.admin_key))
        .await
        .expect(StatusCode::OK);

    // What must not hold PHI.
    let export = t
        .send(Req::get("/api/audit/export").key(&t.admin_key))
        .await;
    assert_eq!(export.status, StatusCode::OK);
    let export = export.text();
    let metrics = t.send(Req::get("/metrics")).await.text();
    let outbox = t
        .send(Req::get(&format!("/api/notifications?visit_id={visit}")).key(&t.admin_key))
        .await
        .expect(StatusCode::OK);
    let bodies: Vec<String> = outbox["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|n| format!("{}\n{}\n{}", n["subject"], n["body"], n["recipient"]))
        .collect();
    let database = t.stored_bytes().await;
    let captured = logs.contents();

    // The captures are real, so their cleanliness means something.
    assert!(captured.contains("sqlx"), "sqlx events are captured");
    assert!(captured.contains("notification delivered by the log transport"));
    assert!(captured.contains("TRACE") || captured.contains("DEBUG"));
    assert!(export.lines().count() > 20 && export.contains("notification.sent"));
    assert!(metrics.contains("bedside_http_requests_total"));
    assert_eq!(bodies.len(), 4);
    assert!(
        bodies
            .iter()
            .all(|b| b.contains("/j/") && b.contains("Meredith"))
    );
    assert!(database.len() > 10_000);

    for (what, text) in [
        ("logs", &captured),
        ("metrics", &metrics),
        ("audit export", &export),
        ("notifications", &bodies.join("\n")),
        ("database files", &database),
    ] {
        for needle in phi::ALL {
            assert!(!text.contains(needle), "{what} contain PHI {needle:?}");
        }
        // Case and spacing variants of the name and complaint.
        let lower = text.to_lowercase();
        assert!(
            !lower.contains("zebulon"),
            "{what} contain the patient's name"
        );
        assert!(
            !lower.contains("xylophonic"),
            "{what} contain the complaint"
        );
    }
    for secret in &secrets {
        assert!(
            !captured.contains(secret.as_str()),
            "logs contain a secret ({}…)",
            &secret[..8]
        );
        assert!(!export.contains(secret.as_str()), "audit contains a secret");
        assert!(
            !metrics.contains(secret.as_str()),
            "metrics contain a secret"
        );
    }
}
