//! Over real HTTP: one code, 50 simultaneous `start` calls from 50 devices. Exactly one
//! wins; the other 49 get 410 `link_used` and each leaves one `link.refused` audit row. The
//! winner's browser, keeping its cookie, rejoins as the same participant, and a real
//! connection's oversized body is a 413 problem as well.

mod support;

use std::sync::Arc;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{Server, TestApp, http_client, minutes_from_now};
use tokio::sync::Barrier;

const CALLERS: usize = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_starts_with_one_code_yield_one_grant() {
    let t = TestApp::new().await; // link limits raised far above 50 per IP
    let cast = t.cast().await;
    let (visit, links) = t.visit_with_links(&cast, minutes_from_now(0)).await;
    let server = Server::start(&t.app).await;
    let url = server.url(&format!("/api/visits/{visit}/start"));

    let barrier = Arc::new(Barrier::new(CALLERS));
    let mut calls = Vec::new();
    for _ in 0..CALLERS {
        // A client each: separate connections, no shared cookies — 50 devices.
        let client = http_client(false);
        let (barrier, url, code) = (barrier.clone(), url.clone(), links.patient.clone());
        calls.push(tokio::spawn(async move {
            barrier.wait().await;
            let resp = client
                .post(&url)
                .json(&json!({"code": code}))
                .send()
                .await
                .expect("the server answers");
            let status = resp.status();
            let body: Value = resp.json().await.expect("a JSON body");
            (status, body)
        }));
    }
    let mut ok = Vec::new();
    let mut used = 0;
    for call in calls {
        let (status, body) = call.await.expect("task");
        match status {
            StatusCode::OK => ok.push(body),
            StatusCode::GONE if body["code"] == "link_used" => used += 1,
            other => panic!("unexpected answer {other}: {body}"),
        }
    }
    assert_eq!(ok.len(), 1, "exactly one start wins");
    assert_eq!(used, CALLERS - 1, "every other start is link_used");

    let refused: Vec<_> = t
        .audit_events("link.refused")
        .await
        .into_iter()
        .filter(|e| e.visit_id.as_deref() == Some(visit.as_str()))
        .collect();
    assert_eq!(refused.len(), CALLERS - 1, "one refusal row per loser");
    assert!(
        refused
            .iter()
            .all(|e| e.outcome == "refused" && e.reason.as_deref() == Some("link_used"))
    );
    assert!(
        refused
            .iter()
            .all(|e| e.ip_masked.as_deref() == Some("127.0.0.0/24"))
    );
    let redeemed = t.audit_events("link.redeemed").await;
    assert_eq!(redeemed.len(), 1);
    assert!(
        redeemed[0]
            .details
            .contains(ok[0]["participant_id"].as_str().expect("id"))
    );
    let participants: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM participants")
        .fetch_one(&t.db)
        .await
        .expect("count");
    assert_eq!(participants, 1, "the losers' participants were rolled back");
    // The chain stays intact under concurrent appends.
    t.app
        .verify_audit(None)
        .await
        .expect("verify")
        .expect("intact chain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_keeps_its_seat_over_real_http() {
    let t = TestApp::new().await;
    let cast = t.cast().await;
    let (visit, links) = t.visit_with_links(&cast, minutes_from_now(0)).await;
    let server = Server::start(&t.app).await;
    let start = server.url(&format!("/api/visits/{visit}/start"));
    let body = json!({"code": links.patient});

    let browser = http_client(true);
    let first = browser
        .post(&start)
        .json(&body)
        .send()
        .await
        .expect("answer");
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(
        first.headers()["referrer-policy"].to_str().expect("header"),
        "no-referrer"
    );
    let first: Value = first.json().await.expect("json");
    let again: Value = browser
        .post(&start)
        .json(&body)
        .send()
        .await
        .expect("answer")
        .json()
        .await
        .expect("json");
    assert_eq!(again["participant_id"], first["participant_id"], "{again}");

    // Over a real connection the body limit answers with a problem too.
    let oversized = browser
        .post(server.url("/api/token/redeem"))
        .header("content-type", "application/json")
        .body(format!("{{\"code\": \"{}\"}}", "a".repeat(70 * 1024)))
        .send()
        .await
        .expect("answer");
    assert_eq!(oversized.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let problem: Value = oversized.json().await.expect("json");
    assert_eq!(problem["code"], "payload_too_large");

    let other = http_client(true);
    let refused = other.post(&start).json(&body).send().await.expect("answer");
    assert_eq!(refused.status(), StatusCode::GONE);
    assert_eq!(
        refused.headers()["content-type"].to_str().expect("header"),
        "application/problem+json"
    );
}
