//! One-time links: every state a code can be in answers with its documented problem
//! (random, expired, replaced, used, cancelled, ended, too early), refusals of known links
//! are audited and consume nothing, a link is bound to the device that started it, and
//! redeem/start are rate limited per client IP.

mod support;

use axum::http::{StatusCode, header};
use chrono::{DateTime, Duration, Utc};
use serde_json::json;
use support::{Req, TestApp, minutes_from_now, rfc3339, start_req};

/// Refusal rows of `link.refused` with `reason`, for `visit_id`.
/// Both of a visit's codes are refused with 410 `code` by redeem and by start.
async fn both_codes_gone(t: &TestApp, visit: &str, links: &support::Links, code: &str) {
    for link in [&links.patient, &links.clinician] {
        t.redeem(link).await.problem(StatusCode::GONE, code);
        t.start(visit, link).await.problem(StatusCode::GONE, code);
    }
}

async fn refusals(t: &TestApp, visit_id: &str, reason: &str) -> usize {
    t.audit_events("link.refused")
        .await
        .iter()
        .filter(|e| e.visit_id.as_deref() == Some(visit_id) && e.reason.as_deref() == Some(reason))
        .count()
}

#[tokio::test]
async fn random_and_malformed_codes_are_link_invalid() {
    let t = TestApp::new().await;
    let cast = t.cast().await;
    let (visit, links) = t.visit_with_links(&cast, minutes_from_now(0)).await;
    let before = t.snapshot().await;
    let random = api::tokens::random_base62(16);
    let mut off_by_one = links.patient.clone();
    let last = off_by_one.pop().expect("a char");
    off_by_one.push(if last == 'a' { 'b' } else { 'a' });
    for code in [
        random.as_str(),
        &off_by_one,
        "short",
        "../../../etc/passwd",
        "' OR 1=1 --aaaaaaa",
        &"A".repeat(65),
        "",
    ] {
        t.redeem(code)
            .await
            .problem(StatusCode::NOT_FOUND, "link_invalid");
        t.start(&visit, code)
            .await
            .problem(StatusCode::NOT_FOUND, "link_invalid");
    }
    assert_eq!(t.snapshot().await, before, "unknown codes change nothing");
    // The real code, presented for the wrong visit, reveals nothing either.
    t.send(start_req(
        "01900000-0000-7000-8000-000000000000",
        &links.patient,
    ))
    .await
    .problem(StatusCode::NOT_FOUND, "link_invalid");
    assert_eq!(t.snapshot().await, before);
    // The genuine codes work.
    t.redeem(&links.patient).await.expect(StatusCode::OK);
    t.start(&visit, &links.patient).await.expect(StatusCode::OK);
}

#[tokio::test]
async fn a_link_whose_window_has_closed_is_link_expired() {
    let t = TestApp::new().await;
    let cast = t.cast().await;
    // 30 minutes two hours ago: the window closed 75 minutes ago.
    let (visit, links) = t.visit_with_links(&cast, minutes_from_now(-120)).await;
    let expires: DateTime<Utc> = links.body["patient"]["expires_at"]
        .as_str()
        .expect("expires_at")
        .parse()
        .expect("RFC 3339");
    assert!(expires < Utc::now());
    let before = t.snapshot().await;
    both_codes_gone(&t, &visit, &links, "link_expired").await;
    let after = t.snapshot().await;
    assert_eq!(
        after.state, before.state,
        "nothing consumed, visit not started"
    );
    assert_eq!(
        after.audit_rows,
        before.audit_rows + 2,
        "only the two start refusals are audited"
    );
    assert_eq!(refusals(&t, &visit, "link_expired").await, 2);
    // The client's network is recorded masked (here the harness's MockConnectInfo peer).
    for row in t.audit_events("link.refused").await {
        assert_eq!(row.ip_masked.as_deref(), Some("127.0.0.0/24"));
        assert_eq!(
            row.ua_hash.as_deref(),
            Some(api::audit::ua_hash("").as_str())
        );
    }
    let status = t
        .send(Req::get(&format!("/api/visits/{visit}")).key(&t.admin_key))
        .await
        .expect(StatusCode::OK);
    assert_eq!(status["status"], "scheduled");
}

#[tokio::test]
async fn a_replaced_link_is_link_expired_and_the_new_one_works() {
    let t = TestApp::new().await;
    let cast = t.cast().await;
    let (visit, first) = t.visit_with_links(&cast, minutes_from_now(0)).await;
    let second = t.links(&cast.scheduler.key, &visit).await;
    assert_ne!(first.patient, second.patient);
    t.redeem(&first.patient)
        .await
        .problem(StatusCode::GONE, "link_expired");
    t.start(&visit, &first.clinician)
        .await
        .problem(StatusCode::GONE, "link_expired");
    t.start(&visit, &second.patient)
        .await
        .expect(StatusCode::OK);
}

#[tokio::test]
async fn a_used_link_is_link_used_on_any_other_device() {
    let t = TestApp::new().await;
    let cast = t.cast().await;
    let (visit, links) = t.visit_with_links(&cast, minutes_from_now(0)).await;
    let ua = "Mozilla/5.0 (PatientPhone)";
    let first = t
        .send(start_req(&visit, &links.patient).header(header::USER_AGENT, ua))
        .await;
    let granted = first.expect(StatusCode::OK);
    let cookie = first.device_cookie().expect("device cookie");
    let before = t.snapshot().await;

    // Another device: no cookie; a forged cookie; the right cookie from another browser;
    // the right cookie and browser from another network.
    let forged = "A".repeat(32);
    for req in [
        start_req(&visit, &links.patient).header(header::USER_AGENT, ua),
        start_req(&visit, &links.patient)
            .header(header::USER_AGENT, ua)
            .header(header::COOKIE, &format!("bedside_device={forged}")),
        start_req(&visit, &links.patient)
            .header(header::USER_AGENT, "curl/8.0")
            .header(header::COOKIE, &format!("bedside_device={cookie}")),
        start_req(&visit, &links.patient)
            .header(header::USER_AGENT, ua)
            .header(header::COOKIE, &format!("bedside_device={cookie}"))
            .ip("198.51.100.20"),
    ] {
        let resp = t.send(req).await;
        resp.problem(StatusCode::GONE, "link_used");
        assert!(resp.device_cookie().is_none(), "no cookie for a refusal");
    }
    t.redeem(&links.patient)
        .await
        .problem(StatusCode::GONE, "link_used");
    let after = t.snapshot().await;
    assert_eq!(after.state, before.state, "refusals consumed nothing");
    assert_eq!(
        refusals(&t, &visit, "link_used").await,
        4,
        "each reuse is audited"
    );

    // The device that started it still rejoins as the same participant.
    let again = t
        .send(
            start_req(&visit, &links.patient)
                .header(header::USER_AGENT, ua)
                .header(header::COOKIE, &format!("bedside_device={cookie}")),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(again["participant_id"], granted["participant_id"]);
    assert_ne!(again["grant"], granted["grant"], "a fresh grant");
}

#[tokio::test]
async fn a_cancelled_visit_is_visit_cancelled() {
    let t = TestApp::new().await;
    let cast = t.cast().await;
    let (visit, links) = t.visit_with_links(&cast, minutes_from_now(0)).await;
    t.send(Req::post(&format!("/api/visits/{visit}/cancel")).key(&cast.scheduler.key))
        .await
        .expect(StatusCode::OK);
    let before = t.snapshot().await;
    both_codes_gone(&t, &visit, &links, "visit_cancelled").await;
    t.send(Req::post(&format!("/api/visits/{visit}/start-authenticated")).key(&cast.clinician.key))
        .await
        .problem(StatusCode::GONE, "visit_cancelled");
    // No new links for a cancelled visit.
    t.send(Req::post(&format!("/api/visits/{visit}/links")).key(&cast.scheduler.key))
        .await
        .problem(StatusCode::GONE, "visit_cancelled");
    assert_eq!(t.snapshot().await.state, before.state);
    assert_eq!(refusals(&t, &visit, "visit_cancelled").await, 2);
}

#[tokio::test]
async fn an_ended_visit_is_visit_ended_for_links_and_grants() {
    let t = TestApp::new().await;
    let cast = t.cast().await;
    let (visit, links) = t.visit_with_links(&cast, minutes_from_now(0)).await;
    let resp = t.start(&visit, &links.patient).await;
    let granted = resp.expect(StatusCode::OK);
    let cookie = resp.device_cookie().expect("cookie");
    t.send(Req::post(&format!("/api/visits/{visit}/end")).key(&cast.clinician.key))
        .await
        .expect(StatusCode::OK);
    let before = t.snapshot().await;
    both_codes_gone(&t, &visit, &links, "visit_ended").await;
    // Not even the device that joined may come back.
    t.send(
        start_req(&visit, &links.patient)
            .header(header::COOKIE, &format!("bedside_device={cookie}")),
    )
    .await
    .problem(StatusCode::GONE, "visit_ended");
    t.send(Req::post("/api/grants/refresh").json(json!({"grant": granted["grant"]})))
        .await
        .problem(StatusCode::GONE, "visit_ended");
    assert_eq!(t.snapshot().await.state, before.state);
}

#[tokio::test]
async fn too_early_says_when_and_consumes_nothing() {
    let t = TestApp::new().await;
    let cast = t.cast().await;
    let at = minutes_from_now(120);
    let (visit, links) = t.visit_with_links(&cast, at).await;
    let scheduled: DateTime<Utc> = rfc3339(at).parse().expect("time");
    let opens = scheduled - Duration::minutes(15);
    let before = t.snapshot().await;
    for resp in [
        t.redeem(&links.patient).await,
        t.start(&visit, &links.patient).await,
        t.start(&visit, &links.clinician).await,
        t.send(
            Req::post(&format!("/api/visits/{visit}/start-authenticated")).key(&cast.clinician.key),
        )
        .await,
    ] {
        let problem = resp.problem(StatusCode::FORBIDDEN, "too_early");
        let available: DateTime<Utc> = problem["available_at"]
            .as_str()
            .expect("available_at")
            .parse()
            .expect("RFC 3339");
        assert_eq!(available, opens, "{problem}");
    }
    assert_eq!(t.snapshot().await.state, before.state, "nothing consumed");

    // Moved to now, the same links work: they were not consumed.
    t.send(
        Req::patch(&format!("/api/visits/{visit}"))
            .key(&cast.scheduler.key)
            .json(json!({"scheduled_at": rfc3339(minutes_from_now(0))})),
    )
    .await
    .expect(StatusCode::OK);
    t.start(&visit, &links.patient).await.expect(StatusCode::OK);
    t.start(&visit, &links.clinician)
        .await
        .expect(StatusCode::OK);
}

#[tokio::test]
async fn the_window_opens_fifteen_minutes_early_by_default() {
    let t = TestApp::new().await;
    let cast = t.cast().await;
    let (soon, links) = t.visit_with_links(&cast, minutes_from_now(10)).await;
    t.start(&soon, &links.patient).await.expect(StatusCode::OK);
    // And the window can be configured.
    let t = TestApp::with_config(|c| c.visits.join_before_minutes = 5).await;
    let cast = t.cast().await;
    let (soon, links) = t.visit_with_links(&cast, minutes_from_now(10)).await;
    t.start(&soon, &links.patient)
        .await
        .problem(StatusCode::FORBIDDEN, "too_early");
}

#[tokio::test]
async fn start_binds_the_device_with_a_strict_http_only_cookie() {
    let t = TestApp::new().await;
    let cast = t.cast().await;
    let (visit, links) = t.visit_with_links(&cast, minutes_from_now(0)).await;
    let resp = t.start(&visit, &links.patient).await;
    resp.expect(StatusCode::OK);
    let set_cookie = resp.header("set-cookie").expect("Set-Cookie").to_owned();
    let attributes: Vec<String> = set_cookie
        .split(';')
        .map(|a| a.trim().to_ascii_lowercase())
        .collect();
    assert!(attributes.contains(&"httponly".to_owned()), "{set_cookie}");
    assert!(
        attributes.contains(&"samesite=strict".to_owned()),
        "{set_cookie}"
    );
    assert!(attributes.contains(&"path=/api".to_owned()), "{set_cookie}");
    assert!(
        !attributes.contains(&"secure".to_owned()),
        "no Secure without TLS: {set_cookie}"
    );
    let secret = resp.device_cookie().expect("cookie value");
    assert_eq!(secret.len(), 32);
    // Only a hash of the device secret is stored.
    let stored: Vec<u8> =
        sqlx::query_scalar("SELECT device_hash FROM links WHERE redeemed_at IS NOT NULL")
            .fetch_one(&t.db)
            .await
            .expect("bound link");
    assert_eq!(stored, api::tokens::secret_hash(&secret));
}

#[tokio::test]
async fn redeem_and_start_are_rate_limited_per_ip() {
    let t = TestApp::with_config(|c| {
        c.limits.link_per_ip_per_minute = 1;
        c.limits.link_burst = 3;
    })
    .await;
    let cast = t.cast().await;
    let (visit, links) = t.visit_with_links(&cast, minutes_from_now(0)).await;
    let redeem = |ip: &str| {
        Req::post("/api/token/redeem")
            .json(json!({"code": links.patient}))
            .ip(ip)
    };
    for _ in 0..3 {
        t.send(redeem("203.0.113.9")).await.expect(StatusCode::OK);
    }
    let before = t.snapshot().await;
    let limited = t.send(redeem("203.0.113.9")).await;
    limited.problem(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    let retry: u64 = limited
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    // start from the same IP is limited too, and consumes nothing.
    t.send(start_req(&visit, &links.patient).ip("203.0.113.9"))
        .await
        .problem(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    // Even a random code is refused before it is looked up.
    t.send(
        Req::post("/api/token/redeem")
            .json(json!({"code": "abcdefghijklmnop"}))
            .ip("203.0.113.9"),
    )
    .await
    .problem(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    assert_eq!(t.snapshot().await, before);
    let metrics = t.app.metrics.render();
    assert!(
        metrics.contains("bedside_rate_limited_total{scope=\"link_ip\"} 3"),
        "{metrics}"
    );

    // Another client is not affected, and the link was not consumed.
    t.send(redeem("203.0.113.10")).await.expect(StatusCode::OK);
    t.send(start_req(&visit, &links.patient).ip("203.0.113.10"))
        .await
        .expect(StatusCode::OK);
}

#[tokio::test]
async fn writes_are_rate_limited_per_api_key() {
    let t = TestApp::with_config(|c| {
        c.limits.writes_per_key_per_minute = 1;
        c.limits.writes_burst = 4;
    })
    .await;
    // The admin key spends three writes creating the cast, and one more here.
    let cast = t.cast().await;
    t.visit_at(&t.admin_key, &cast.clinician.id, minutes_from_now(0))
        .await;
    let before = t.snapshot().await;
    let resp = t
        .send(
            Req::post("/api/visits")
                .key(&t.admin_key)
                .json(support::visit_body(&cast.clinician.id, minutes_from_now(0))),
        )
        .await;
    resp.problem(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    assert!(resp.header("retry-after").is_some());
    assert_eq!(t.snapshot().await, before);
    // Reads are not writes; another key has its own budget.
    t.send(Req::get("/api/visits").key(&t.admin_key))
        .await
        .expect(StatusCode::OK);
    t.visit_at(&cast.scheduler.key, &cast.clinician.id, minutes_from_now(0))
        .await;
}

#[tokio::test]
async fn a_participant_removed_for_good_gets_no_grant_and_no_rejoin() {
    let t = TestApp::new().await;
    let cast = t.cast().await;
    let (visit, links) = t.visit_with_links(&cast, minutes_from_now(0)).await;
    let resp = t.start(&visit, &links.patient).await;
    let granted = resp.expect(StatusCode::OK);
    let cookie = resp.device_cookie().expect("cookie");
    let participant = granted["participant_id"].as_str().expect("participant");
    let clinician = api::audit::Actor::local("participant:the-clinician");
    for _ in 0..2 {
        api::visit::participants::remove_for_good(
            &t.app,
            &t.tenant_id,
            &visit,
            participant,
            &clinician,
        )
        .await
        .expect("removed (again: nothing changes)");
    }
    let removed = t.audit_events("participant.removed").await;
    assert_eq!(removed.len(), 1, "a removal is audited once");
    assert!(
        removed[0].details.contains(participant),
        "{}",
        removed[0].details
    );
    let unknown = api::visit::participants::remove_for_good(
        &t.app,
        &t.tenant_id,
        &visit,
        "01900000-0000-7000-8000-000000000001",
        &clinician,
    )
    .await;
    assert!(matches!(unknown, Err(api::visit::VisitError::NotFound)));
    let before = t.snapshot().await;
    t.send(Req::post("/api/grants/refresh").json(json!({"grant": granted["grant"]})))
        .await
        .problem(StatusCode::FORBIDDEN, "forbidden");
    t.send(
        start_req(&visit, &links.patient)
            .header(header::COOKIE, &format!("bedside_device={cookie}")),
    )
    .await
    .problem(StatusCode::FORBIDDEN, "forbidden");
    assert_eq!(t.snapshot().await.state, before.state, "nothing changed");
    assert_eq!(t.audit_events("grant.refresh_refused").await.len(), 1);
    assert_eq!(refusals(&t, &visit, "forbidden").await, 1);
}
