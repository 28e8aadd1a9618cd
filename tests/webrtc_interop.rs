//! Interop with an independent WebRTC stack: `bedside serve`'s components run in-process on
//! ephemeral ports (HTTP and UDP port 0, ICE candidate 127.0.0.1) and two webrtc-rs peers go
//! through the real visit flow — clinician staff and a visit over the REST API, links, the
//! patient starts with its link code, the clinician with its API key, both join on `/ws`, the
//! clinician admits the waiting patient — and publish Opus and VP8 from the sample files in
//! `tests/media`. Each must receive the other's audio and video RTP within 10 s. Then the
//! visit is `in_progress`, the audit trail has the participant events, and ending the visit
//! over the API closes both sockets with 4410.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};

mod common;

use common::call::Call;
use common::{Server, TestResult, text};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_webrtc_rs_peers_hold_a_visit_through_bedside() -> TestResult {
    let server = Server::start(signaling::Limits::default()).await?;
    let admin = server.admin_key.clone();
    let visit = server.visit().await?;
    let (visit_id, clinician_key) = (visit.id.clone(), visit.clinician_key.clone());
    let signaling_url = text(&visit.patient["media"]["signaling_url"])?;
    assert_eq!(
        signaling_url,
        server.ws_url(),
        "the start answer names where /ws is served"
    );

    let call = Call::start(&visit, false).await?;

    // The call started: the visit moved on and everything was audited (rows are written by
    // background tasks, so allow them a moment).
    let mut status = Value::Null;
    for _ in 0..40 {
        status = server
            .get(&admin, &format!("/api/visits/{visit_id}"))
            .await?["status"]
            .clone();
        if status == json!("in_progress") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, json!("in_progress"));
    let wanted_all = [
        "participant.joined",
        "participant.waiting",
        "participant.admitted",
        "visit.in_progress",
    ];
    let events = server.audit_events_with(&visit_id, &wanted_all).await?;
    for wanted in wanted_all {
        assert!(
            events.iter().any(|e| e == wanted),
            "no {wanted} in {events:?}"
        );
    }

    // Ending the visit over the API disconnects everyone.
    server.end_visit(&clinician_key, &visit_id).await?;
    let (patient, clinician) = (call.patient.clone(), call.clinician.clone());
    call.finished(Duration::from_secs(5)).await?;
    for seen in [&patient, &clinician] {
        assert!(
            seen.visit_ended.load(Ordering::Relaxed),
            "visit_ended was not sent"
        );
        assert_eq!(seen.close_code.load(Ordering::Relaxed), 4410);
    }
    Ok(())
}
