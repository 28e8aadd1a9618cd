//! The happy paths of API.md, end to end in-process: staff, visits (create, cursor
//! pagination, read, edit, cancel), links, notifications through the `log` transport,
//! resend-link and its hourly cap, redeem, start, rejoin, start-authenticated, grant
//! refresh, end, the audit query and NDJSON export, and the per-tenant daily quota.

mod support;

use std::collections::HashSet;

use api::audit::{ChainVerifier, Entry};
use axum::http::{StatusCode, header};
use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};
use support::{Req, TestApp, minutes_from_now, phi, rfc3339, start_req, visit_body};

#[tokio::test]
async fn staff_are_created_by_admins_with_a_working_key() {
    let t = TestApp::new().await;
    let resp = t
        .send(
            Req::post("/api/staff")
                .key(&t.admin_key)
                .json(json!({"role": "clinician", "display_name": "  Meredith Grey ", "email": "mg@clinic.example"})),
        )
        .await;
    let created = resp.expect(StatusCode::CREATED);
    assert_eq!(created["role"], "clinician");
    assert_eq!(created["display_name"], "Meredith Grey");
    let key = created["api_key"].as_str().expect("key");
    assert!(key.starts_with("bsk_") && key.len() >= 40, "{key}");
    // The new key authenticates as a clinician: it may list (its own) visits, not create staff.
    t.send(Req::get("/api/visits").key(key))
        .await
        .expect(StatusCode::OK);
    t.send(
        Req::post("/api/staff")
            .key(key)
            .json(json!({"role": "admin", "display_name": "Eve"})),
    )
    .await
    .problem(StatusCode::FORBIDDEN, "forbidden");
    // Schedulers may not create staff either.
    let sched = t.staff_with(&t.admin_key, "scheduler", "Sam").await;
    let before = t.snapshot().await;
    t.send(
        Req::post("/api/staff")
            .key(&sched.key)
            .json(json!({"role": "admin", "display_name": "Eve"})),
    )
    .await
    .problem(StatusCode::FORBIDDEN, "forbidden");
    for body in [
        json!({"role": "nurse", "display_name": "N"}),
        json!({"role": "admin", "display_name": "   "}),
        json!({"role": "admin", "display_name": "A", "email": "nope"}),
    ] {
        t.send(Req::post("/api/staff").key(&t.admin_key).json(body))
            .await
            .problem(StatusCode::BAD_REQUEST, "invalid_request");
    }
    assert_eq!(t.snapshot().await, before);
    // Only the key's hash is stored.
    let hashes: Vec<Vec<u8>> = sqlx::query_scalar("SELECT key_hash FROM api_keys")
        .fetch_all(&t.db)
        .await
        .expect("keys");
    assert!(hashes.contains(&api::tokens::secret_hash(key)));
    assert!(hashes.iter().all(|h| h.len() == 32));
    assert_eq!(t.audit_events("staff.created").await.len(), 2);
}

#[tokio::test]
async fn visits_are_created_read_edited_and_cancelled() {
    let t = TestApp::new().await;
    let cast = t.cast().await;
    let at = minutes_from_now(90);
    let created = t
        .create_visit(&cast.scheduler.key, visit_body(&cast.clinician.id, at))
        .await;
    let id = created["id"].as_str().expect("id").to_owned();
    assert_eq!(created["status"], "scheduled");
    assert_eq!(created["duration_minutes"], 30);
    assert_eq!(created["clinician_id"], json!(cast.clinician.id));
    assert_eq!(created["waiting_room"], true, "waiting room defaults on");
    assert_eq!(created["media_backend"], "sfu");
    assert_eq!(created["scheduled_at"], rfc3339(at));
    assert_eq!(
        created["patient"],
        json!({"name": phi::NAME, "phone": phi::PHONE, "email": phi::EMAIL})
    );
    assert_eq!(created["chief_complaint"], phi::COMPLAINT);
    // PHI is stored encrypted: the plaintext is nowhere in the database row.
    let row: Vec<u8> = sqlx::query_scalar("SELECT patient_name_ct FROM visits WHERE id = $1")
        .bind(&id)
        .fetch_one(&t.db)
        .await
        .expect("row");
    assert!(!String::from_utf8_lossy(&row).contains("Zebulon"));

    // Reading PHI is audited.
    let reads_before = t.audit_events("visit.phi_read").await.len();
    let read = t
        .send(Req::get(&format!("/api/visits/{id}")).key(&cast.scheduler.key))
        .await
        .expect(StatusCode::OK);
    assert_eq!(read["patient"]["name"], phi::NAME);
    let reads = t.audit_events("visit.phi_read").await;
    assert_eq!(reads.len(), reads_before + 1);
    assert_eq!(
        reads.last().expect("row").visit_id.as_deref(),
        Some(id.as_str())
    );

    // Edit: reschedule, lengthen, change the complaint, switch the waiting room off.
    let new_at = minutes_from_now(180);
    let patched = t
        .send(
            Req::patch(&format!("/api/visits/{id}"))
                .key(&cast.scheduler.key)
                .json(json!({
                    "scheduled_at": rfc3339(new_at),
                    "duration_minutes": 45,
                    "chief_complaint": "follow-up",
                    "waiting_room": false,
                    "clinician_id": cast.other_clinician.id,
                })),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(patched["scheduled_at"], rfc3339(new_at));
    assert_eq!(patched["duration_minutes"], 45);
    assert_eq!(patched["chief_complaint"], "follow-up");
    assert_eq!(patched["waiting_room"], false);
    assert_eq!(
        patched["patient"]["name"],
        phi::NAME,
        "untouched fields stay"
    );
    let read = t
        .send(Req::get(&format!("/api/visits/{id}")).key(&t.admin_key))
        .await
        .expect(StatusCode::OK);
    assert_eq!(read["duration_minutes"], 45);
    assert_eq!(read["clinician_id"], json!(cast.other_clinician.id));
    let updated = t.audit_events("visit.updated").await;
    assert_eq!(updated.len(), 1);
    assert!(updated[0].details.contains("duration_minutes"));
    assert!(!updated[0].details.contains("follow-up"), "no PHI in audit");
    // The visit moved to the other clinician: the first one no longer sees it.
    t.send(Req::get(&format!("/api/visits/{id}")).key(&cast.clinician.key))
        .await
        .problem(StatusCode::NOT_FOUND, "not_found");

    // Cancel, by its (new) clinician.
    let cancelled = t
        .send(Req::post(&format!("/api/visits/{id}/cancel")).key(&cast.other_clinician.key))
        .await
        .expect(StatusCode::OK);
    assert_eq!(cancelled["status"], "cancelled");
    assert!(cancelled["ended_at"].is_string());
    let before = t.snapshot().await;
    t.send(Req::post(&format!("/api/visits/{id}/cancel")).key(&cast.scheduler.key))
        .await
        .problem(StatusCode::CONFLICT, "conflict");
    t.send(
        Req::patch(&format!("/api/visits/{id}"))
            .key(&cast.scheduler.key)
            .json(json!({"duration_minutes": 20})),
    )
    .await
    .problem(StatusCode::CONFLICT, "conflict");
    assert_eq!(t.snapshot().await, before);
    assert_eq!(t.audit_events("visit.cancelled").await.len(), 1);
}

#[tokio::test]
async fn visit_lists_page_with_cursors_and_filter() {
    let t = TestApp::new().await;
    let cast = t.cast().await;
    let base = minutes_from_now(60);
    let mut expected = Vec::new();
    // Seven visits, two sharing a time (the cursor must break the tie by id).
    for (i, offset) in [0, 10, 10, 20, 30, 40, 50].into_iter().enumerate() {
        let clinician = if i == 3 {
            &cast.other_clinician.id
        } else {
            &cast.clinician.id
        };
        let id = t
            .visit_at(
                &cast.scheduler.key,
                clinician,
                base + Duration::minutes(offset),
            )
            .await;
        expected.push((base + Duration::minutes(offset), id));
    }
    expected.sort_by(|a, b| (a.0.timestamp(), &a.1).cmp(&(b.0.timestamp(), &b.1)));
    let expected: Vec<String> = expected.into_iter().map(|(_, id)| id).collect();

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/visits?limit=3&cursor={c}"),
            None => "/api/visits?limit=3".to_owned(),
        };
        let page = t
            .send(Req::get(&path).key(&cast.scheduler.key))
            .await
            .expect(StatusCode::OK);
        pages += 1;
        let items = page["items"].as_array().expect("items");
        assert!(items.len() <= 3);
        seen.extend(
            items
                .iter()
                .map(|v| v["id"].as_str().expect("id").to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
        assert!(pages < 10, "pagination terminates");
    }
    assert_eq!(pages, 3, "7 visits in pages of 3");
    assert_eq!(seen, expected, "every visit once, in scheduled order");

    // Filters.
    let mine = t
        .send(Req::get("/api/visits").key(&cast.clinician.key))
        .await
        .expect(StatusCode::OK);
    assert_eq!(
        mine["items"].as_array().expect("items").len(),
        6,
        "a clinician sees only their own"
    );
    let by_clinician = t
        .send(
            Req::get(&format!(
                "/api/visits?clinician_id={}",
                cast.other_clinician.id
            ))
            .key(&t.admin_key),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(by_clinician["items"][0]["id"], json!(expected[3]));
    let window = format!(
        "/api/visits?from={}&to={}",
        rfc3339(base + Duration::minutes(10)),
        rfc3339(base + Duration::minutes(30))
    )
    .replace('+', "%2B");
    let windowed = t
        .send(Req::get(&window).key(&t.admin_key))
        .await
        .expect(StatusCode::OK);
    assert_eq!(
        windowed["items"].as_array().expect("items").len(),
        3,
        "from inclusive, to exclusive"
    );
    t.send(Req::post(&format!("/api/visits/{}/cancel", expected[0])).key(&t.admin_key))
        .await
        .expect(StatusCode::OK);
    let cancelled = t
        .send(Req::get("/api/visits?status=cancelled").key(&t.admin_key))
        .await
        .expect(StatusCode::OK);
    assert_eq!(cancelled["items"].as_array().expect("items").len(), 1);
    assert_eq!(cancelled["items"][0]["id"], json!(expected[0]));
    assert!(cancelled["next_cursor"].is_null());
}

#[tokio::test]
async fn notifications_are_queued_logged_and_delivered() {
    let t = TestApp::new().await;
    let cast = t.cast().await;
    let (visit, links) = t.visit_with_links(&cast, minutes_from_now(0)).await;
    let queued = t
        .send(
            Req::post(&format!("/api/visits/{visit}/notify"))
                .key(&cast.scheduler.key)
                .json(json!({"channels": ["sms", "email"]})),
        )
        .await
        .expect(StatusCode::ACCEPTED);
    let notes = queued["notifications"].as_array().expect("notifications");
    assert_eq!(notes.len(), 2);
    assert!(notes.iter().all(|n| n["status"] == "queued"));

    let outbox = |key: &str| Req::get(&format!("/api/notifications?visit_id={visit}")).key(key);
    let listed = t.send(outbox(&t.admin_key)).await.expect(StatusCode::OK);
    let items = listed["items"].as_array().expect("items");
    assert_eq!(items.len(), 2);
    for item in items {
        assert_eq!(item["status"], "queued");
        assert_eq!(item["transport"], "log");
        assert_eq!(item["attempts"], 0);
    }
    let recipients: HashSet<&str> = items
        .iter()
        .filter_map(|i| i["recipient"].as_str())
        .collect();
    assert_eq!(
        recipients,
        HashSet::from(["***-***-4321", "z***@patient-mail.example"])
    );
    // Only admins read the outbox.
    t.send(outbox(&cast.scheduler.key))
        .await
        .problem(StatusCode::FORBIDDEN, "forbidden");

    // The message holds the clinician's first name, the time and a fresh patient link.
    let body = items[0]["body"].as_str().expect("body");
    assert!(
        body.contains("Meredith") && !body.contains("Grey"),
        "{body}"
    );
    let code = body
        .split("/j/")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("a link in the body")
        .to_owned();
    assert_ne!(code, links.patient, "notify issues a new link");
    t.redeem(&links.patient)
        .await
        .problem(StatusCode::GONE, "link_expired");
    t.redeem(&code).await.expect(StatusCode::OK);
    t.redeem(&links.clinician).await.expect(StatusCode::OK);

    // Delivery moves them to `sent` and audits each.
    assert_eq!(
        api::notify::deliver_due(&t.app).await.expect("delivered"),
        2
    );
    assert_eq!(
        api::notify::deliver_due(&t.app).await.expect("nothing due"),
        0
    );
    let listed = t.send(outbox(&t.admin_key)).await.expect(StatusCode::OK);
    for item in listed["items"].as_array().expect("items") {
        assert_eq!(item["status"], "sent", "{item}");
        assert_eq!(item["attempts"], 1);
        assert!(item["sent_at"].is_string());
    }
    assert_eq!(t.audit_events("notification.sent").await.len(), 2);
    assert_eq!(t.audit_events("notification.queued").await.len(), 1);

    // Channels the patient has no address for, empty and repeated channel lists are refused.
    let no_contact = t
        .create_visit(
            &cast.scheduler.key,
            json!({"clinician_id": cast.clinician.id, "scheduled_at": rfc3339(minutes_from_now(0)),
                   "duration_minutes": 15, "patient": {"name": "No Contact"}}),
        )
        .await;
    let before = t.snapshot().await;
    let no_contact = no_contact["id"].as_str().expect("id");
    for (visit_id, channels) in [
        (no_contact, json!(["sms"])),
        (no_contact, json!(["email"])),
        (visit.as_str(), json!([])),
        (visit.as_str(), json!(["sms", "sms"])),
        (visit.as_str(), json!(["fax"])),
    ] {
        t.send(
            Req::post(&format!("/api/visits/{visit_id}/notify"))
                .key(&cast.scheduler.key)
                .json(json!({"channels": channels})),
        )
        .await
        .problem(StatusCode::BAD_REQUEST, "invalid_request");
    }
    assert_eq!(t.snapshot().await, before);
}

#[tokio::test]
async fn resend_link_is_capped_at_three_an_hour() {
    let t = TestApp::new().await;
    let cast = t.cast().await;
    let visit = t
        .visit_at(&cast.scheduler.key, &cast.clinician.id, minutes_from_now(0))
        .await;
    let resend = || {
        Req::post(&format!("/api/visits/{visit}/resend-link"))
            .key(&cast.scheduler.key)
            .json(json!({"channels": ["sms"]}))
    };
    let mut codes = Vec::new();
    for _ in 0..3 {
        let sent = t.send(resend()).await.expect(StatusCode::ACCEPTED);
        assert_eq!(sent["notifications"][0]["channel"], "sms");
        assert_eq!(sent["notifications"][0]["status"], "queued");
        codes.push(sent["patient"]["code"].as_str().expect("code").to_owned());
    }
    let before = t.snapshot().await;
    let refused = t.send(resend()).await;
    refused.problem(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    assert_eq!(refused.header("retry-after"), Some("3600"));
    assert_eq!(t.snapshot().await, before, "no link, no notification");
    // Each resend killed the previous link; the last one still works.
    t.redeem(&codes[0])
        .await
        .problem(StatusCode::GONE, "link_expired");
    t.redeem(&codes[2]).await.expect(StatusCode::OK);
    assert_eq!(t.audit_events("link.resent").await.len(), 3);
    // The cap is per visit.
    let other = t
        .visit_at(&cast.scheduler.key, &cast.clinician.id, minutes_from_now(0))
        .await;
    t.send(
        Req::post(&format!("/api/visits/{other}/resend-link"))
            .key(&cast.scheduler.key)
            .json(json!({"channels": ["email"]})),
    )
    .await
    .expect(StatusCode::ACCEPTED);
}

fn claims_of(t: &TestApp, grant: &Value) -> api::tokens::GrantClaims {
    t.app
        .grants
        .verify(grant["grant"].as_str().expect("grant"))
        .expect("a grant the server accepts")
}

#[tokio::test]
async fn join_flow_redeem_start_rejoin_refresh_and_end() {
    let t = TestApp::new().await;
    let cast = t.cast().await;
    let at = minutes_from_now(5);
    let (visit, links) = t.visit_with_links(&cast, at).await;
    for role in ["patient", "clinician"] {
        let url = links.body[role]["url"].as_str().expect("url");
        let code = links.body[role]["code"].as_str().expect("code");
        assert_eq!(url, format!("http://127.0.0.1:8080/j/{code}"));
        assert!(code.len() >= 12 && code.bytes().all(|b| b.is_ascii_alphanumeric()));
    }
    // Only hashes of the codes are stored.
    let hashes: Vec<Vec<u8>> = sqlx::query_scalar("SELECT code_hash FROM links")
        .fetch_all(&t.db)
        .await
        .expect("links");
    assert!(hashes.contains(&api::tokens::secret_hash(&links.patient)));

    // Redeem: what the join page may show, and nothing else; it consumes nothing.
    let before = t.snapshot().await;
    let redeemed = t.redeem(&links.patient).await.expect(StatusCode::OK);
    assert_eq!(redeemed["role"], "patient");
    assert_eq!(redeemed["visit"]["id"], json!(visit));
    assert_eq!(redeemed["visit"]["status"], "scheduled");
    assert_eq!(redeemed["visit"]["clinician_first_name"], "Meredith");
    assert_eq!(redeemed["visit"]["scheduled_at"], rfc3339(at));
    let text = redeemed.to_string();
    assert!(!text.contains("Zebulon") && !text.contains("xylophonic") && !text.contains("Grey"));
    assert_eq!(t.snapshot().await, before, "redeem consumes nothing");
    let clinician_redeem = t.redeem(&links.clinician).await.expect(StatusCode::OK);
    assert_eq!(clinician_redeem["role"], "clinician");

    // Start: a grant, a participant, a device cookie.
    let ua = "Mozilla/5.0 (Test)";
    let resp = t
        .send(
            Req::post(&format!("/api/visits/{visit}/start"))
                .header(header::USER_AGENT, ua)
                .json(json!({"code": links.patient, "display_name": "Zeb"}))
                .ip("192.0.2.44"),
        )
        .await;
    let started = resp.expect(StatusCode::OK);
    let cookie = resp.device_cookie().expect("cookie");
    assert_eq!(started["role"], "patient");
    assert_eq!(started["media"]["backend"], "sfu");
    assert_eq!(started["media"]["signaling_url"], "ws://127.0.0.1:8080/ws");
    let claims = claims_of(&t, &started);
    assert_eq!(claims.sub, started["participant_id"].as_str().expect("id"));
    assert_eq!(claims.visit, visit);
    assert_eq!(claims.tenant, t.tenant_id);
    assert_eq!(claims.name, "Zeb");
    assert_eq!(claims.aud, "bedside-signaling");
    assert_eq!(claims.exp - claims.iat, 600);
    let expires: DateTime<Utc> = started["grant_expires_at"]
        .as_str()
        .expect("time")
        .parse()
        .expect("RFC 3339");
    assert_eq!(expires.timestamp(), i64::try_from(claims.exp).expect("exp"));
    let status = t
        .send(Req::get(&format!("/api/visits/{visit}")).key(&t.admin_key))
        .await
        .expect(StatusCode::OK);
    assert_eq!(status["status"], "waiting");
    assert!(status["started_at"].is_string());
    let redeemed_rows = t.audit_events("link.redeemed").await;
    assert_eq!(redeemed_rows.len(), 1);
    assert_eq!(redeemed_rows[0].ip_masked.as_deref(), Some("192.0.2.0/24"));
    assert_eq!(t.audit_events("visit.started").await.len(), 1);

    // Reload on the same device: a new grant for the same participant.
    let again = t
        .send(
            start_req(&visit, &links.patient)
                .header(header::USER_AGENT, ua)
                .header(header::COOKIE, &format!("bedside_device={cookie}"))
                .ip("192.0.2.45"),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(again["participant_id"], started["participant_id"]);
    assert_ne!(again["grant"], started["grant"]);
    assert_eq!(t.audit_events("link.rejoined").await.len(), 1);
    let participants: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM participants")
        .fetch_one(&t.db)
        .await
        .expect("count");
    assert_eq!(participants, 1);

    // The clinician joins with their key, twice: one participant.
    let auth = |body: Option<Value>| {
        let req =
            Req::post(&format!("/api/visits/{visit}/start-authenticated")).key(&cast.clinician.key);
        match body {
            Some(b) => req.json(b),
            None => req,
        }
    };
    let clin = t.send(auth(None)).await.expect(StatusCode::OK);
    assert_eq!(clin["role"], "clinician");
    assert_eq!(claims_of(&t, &clin).name, "Meredith Grey");
    let clin_again = t
        .send(auth(Some(json!({"display_name": "Dr Grey"}))))
        .await
        .expect(StatusCode::OK);
    assert_eq!(clin_again["participant_id"], clin["participant_id"]);
    assert_eq!(claims_of(&t, &clin_again).name, "Dr Grey");
    // Only the visit's clinician: not a scheduler, not an admin.
    for key in [&cast.scheduler.key, &t.admin_key] {
        t.send(Req::post(&format!("/api/visits/{visit}/start-authenticated")).key(key))
            .await
            .problem(StatusCode::FORBIDDEN, "forbidden");
    }

    // Refresh: a fresh grant for the same participant while the visit is live.
    let refreshed = t
        .send(Req::post("/api/grants/refresh").json(json!({"grant": started["grant"]})))
        .await
        .expect(StatusCode::OK);
    assert_eq!(refreshed["participant_id"], started["participant_id"]);
    let fresh = claims_of(&t, &refreshed);
    assert_eq!(fresh.sub, claims.sub);
    assert_ne!(fresh.jti, claims.jti);
    assert_eq!(t.audit_events("grant.refreshed").await.len(), 1);

    // End: schedulers may not, the other clinician cannot see it, its clinician does.
    t.send(Req::post(&format!("/api/visits/{visit}/end")).key(&cast.scheduler.key))
        .await
        .problem(StatusCode::FORBIDDEN, "forbidden");
    t.send(Req::post(&format!("/api/visits/{visit}/end")).key(&cast.other_clinician.key))
        .await
        .problem(StatusCode::NOT_FOUND, "not_found");
    let mut events = t.app.events.subscribe();
    let ended = t
        .send(Req::post(&format!("/api/visits/{visit}/end")).key(&cast.clinician.key))
        .await
        .expect(StatusCode::OK);
    assert_eq!(ended["status"], "ended");
    assert!(ended["ended_at"].is_string());
    assert_eq!(
        events.try_recv().expect("signaling is told"),
        api::events::VisitEvent::Closed {
            tenant_id: t.tenant_id.clone(),
            visit_id: visit.clone()
        }
    );
    let end_rows = t.audit_events("visit.ended").await;
    assert_eq!(end_rows.len(), 1);
    assert!(
        end_rows[0].details.contains("\"links_revoked\":2"),
        "{}",
        end_rows[0].details
    );
    // Its links die, redeemed or not; ending twice is a conflict.
    let live: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM links WHERE revoked_at IS NULL")
        .fetch_one(&t.db)
        .await
        .expect("count");
    assert_eq!(live, 0);
    t.send(Req::post(&format!("/api/visits/{visit}/end")).key(&t.admin_key))
        .await
        .problem(StatusCode::CONFLICT, "conflict");
    t.send(Req::post("/api/grants/refresh").json(json!({"grant": refreshed["grant"]})))
        .await
        .problem(StatusCode::GONE, "visit_ended");
    t.send(auth(None))
        .await
        .problem(StatusCode::GONE, "visit_ended");
    // The chain holds over everything that happened.
    let report = t
        .app
        .verify_audit(None)
        .await
        .expect("verify")
        .expect("intact");
    assert!(report.iter().all(|(_, rows)| *rows > 0));
}

#[tokio::test]
async fn admins_query_and_export_the_audit() {
    let t = TestApp::new().await;
    let cast = t.cast().await;
    let (visit, links) = t.visit_with_links(&cast, minutes_from_now(0)).await;
    t.start(&visit, &links.patient).await.expect(StatusCode::OK);
    t.start(&visit, &links.patient)
        .await
        .problem(StatusCode::GONE, "link_used");
    t.send(Req::post(&format!("/api/visits/{visit}/end")).key(&t.admin_key))
        .await
        .expect(StatusCode::OK);

    // Query by visit, paged by cursor.
    let mut rows: Vec<Entry> = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/audit?visit_id={visit}&limit=2&cursor={c}"),
            None => format!("/api/audit?visit_id={visit}&limit=2"),
        };
        let page = t
            .send(Req::get(&path).key(&t.admin_key))
            .await
            .expect(StatusCode::OK);
        let items: Vec<Entry> = serde_json::from_value(page["items"].clone()).expect("entries");
        assert!(items.len() <= 2);
        rows.extend(items);
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let events: Vec<&str> = rows.iter().map(|r| r.event.as_str()).collect();
    assert_eq!(
        events,
        [
            "visit.created",
            "link.issued",
            "visit.started",
            "link.redeemed",
            "link.refused",
            "visit.ended"
        ]
    );
    assert!(rows.windows(2).all(|w| w[0].seq < w[1].seq));
    let refused = &rows[4];
    assert_eq!(
        (refused.outcome.as_str(), refused.reason.as_deref()),
        ("refused", Some("link_used"))
    );

    let by_event = t
        .send(Req::get("/api/audit?event=link.refused").key(&t.admin_key))
        .await
        .expect(StatusCode::OK);
    assert_eq!(by_event["items"].as_array().expect("items").len(), 1);
    let future = rfc3339(minutes_from_now(60)).replace('+', "%2B");
    let none = t
        .send(Req::get(&format!("/api/audit?from={future}")).key(&t.admin_key))
        .await
        .expect(StatusCode::OK);
    assert_eq!(none["items"], json!([]));
    for key in [&cast.scheduler.key, &cast.clinician.key] {
        t.send(Req::get("/api/audit").key(key))
            .await
            .problem(StatusCode::FORBIDDEN, "forbidden");
        t.send(Req::get("/api/audit/export").key(key))
            .await
            .problem(StatusCode::FORBIDDEN, "forbidden");
    }

    // Export: NDJSON of the whole chain, itself audited, verifiable line by line.
    let export = t
        .send(Req::get("/api/audit/export").key(&t.admin_key))
        .await;
    assert_eq!(export.status, StatusCode::OK);
    assert_eq!(export.header("content-type"), Some("application/x-ndjson"));
    let text = export.text();
    assert!(text.ends_with('\n'));
    let exported: Vec<Entry> = text
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON row per line"))
        .collect();
    let stored = t.audit_of(&t.tenant_id).await;
    assert_eq!(exported, stored, "every row of the tenant, in order");
    assert_eq!(exported.last().expect("row").event, "audit.exported");
    let mut verifier = ChainVerifier::default();
    for row in &exported {
        verifier.check(row).expect("the exported chain verifies");
    }
    // Filtered export.
    let filtered = t
        .send(
            Req::get(&format!(
                "/api/audit/export?visit_id={visit}&event=visit.ended"
            ))
            .key(&t.admin_key),
        )
        .await
        .text();
    assert_eq!(filtered.lines().count(), 1);
}

#[tokio::test]
async fn visit_creation_has_a_per_tenant_daily_quota() {
    let t = TestApp::with_config(|c| c.visits.daily_quota = 3).await;
    let cast = t.cast().await;
    for _ in 0..3 {
        t.visit_at(
            &cast.scheduler.key,
            &cast.clinician.id,
            minutes_from_now(30),
        )
        .await;
    }
    let before = t.snapshot().await;
    let refused = t
        .send(
            Req::post("/api/visits")
                .key(&t.admin_key)
                .json(visit_body(&cast.clinician.id, minutes_from_now(30))),
        )
        .await;
    refused.problem(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    let retry: i64 = refused
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    let midnight = (Utc::now() + Duration::days(1))
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .expect("midnight")
        .and_utc();
    let until_midnight = (midnight - Utc::now()).num_seconds();
    assert!(
        (until_midnight - 5..=until_midnight + 1).contains(&retry),
        "{retry} vs {until_midnight}"
    );
    assert_eq!(t.snapshot().await, before);
    assert_eq!(t.visit_count().await, 3);

    // Another tenant has its own quota.
    let (_, other_admin) = t.new_tenant("other").await;
    let other_clinician = t.staff_with(&other_admin, "clinician", "Other Doc").await;
    t.visit_at(&other_admin, &other_clinician.id, minutes_from_now(30))
        .await;
}

#[tokio::test]
async fn roles_are_enforced_on_visits_a_caller_can_see() {
    let t = TestApp::new().await;
    let cast = t.cast().await;
    let visit = t
        .visit_at(&cast.scheduler.key, &cast.clinician.id, minutes_from_now(0))
        .await;
    let before = t.snapshot().await;
    let v = &visit;
    let channels = json!({"channels": ["sms"]});
    // Its own clinician may read, cancel, end and join it, but not schedule or send links.
    for req in [
        Req::post("/api/visits").json(visit_body(&cast.clinician.id, minutes_from_now(0))),
        Req::patch(&format!("/api/visits/{v}")).json(json!({"duration_minutes": 20})),
        Req::post(&format!("/api/visits/{v}/links")),
        Req::post(&format!("/api/visits/{v}/notify")).json(channels.clone()),
        Req::post(&format!("/api/visits/{v}/resend-link")).json(channels.clone()),
        Req::get(&format!("/api/notifications?visit_id={v}")),
        Req::post("/api/staff").json(json!({"role": "admin", "display_name": "Eve"})),
        Req::get("/api/audit"),
    ] {
        t.send(req.key(&cast.clinician.key))
            .await
            .problem(StatusCode::FORBIDDEN, "forbidden");
    }
    // A scheduler may not read the outbox or the audit, nor end a visit.
    for req in [
        Req::get(&format!("/api/notifications?visit_id={v}")),
        Req::get("/api/audit/export"),
        Req::post(&format!("/api/visits/{v}/end")),
    ] {
        t.send(req.key(&cast.scheduler.key))
            .await
            .problem(StatusCode::FORBIDDEN, "forbidden");
    }
    assert_eq!(t.snapshot().await, before, "refused roles changed nothing");
    // Admins may do everything a scheduler may.
    t.links(&t.admin_key, &visit).await;
    t.send(
        Req::post(&format!("/api/visits/{v}/notify"))
            .key(&t.admin_key)
            .json(channels),
    )
    .await
    .expect(StatusCode::ACCEPTED);
}
