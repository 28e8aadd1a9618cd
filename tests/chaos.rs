//! `kill -9` in the middle of API writes, then a restart on the same data directory: every
//! write the server acknowledged is there, and the audit chain holds.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::TestResult;
use common::process::{Serve, audit_verify};
use serde_json::json;

/// Concurrent writers.
const WRITERS: usize = 4;
/// Writes each writer attempts at most (the kill ends them sooner).
const WRITES_EACH: usize = 200;
/// When the kill comes after the writes start.
const KILL_AFTER: Duration = Duration::from_millis(700);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_write_survives_kill_9_and_the_chain_holds() -> TestResult {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let mut serve = Serve::start(&data, &[], None)?;
    let admin = serve.rest.admin_key.clone();
    let clinician = serve
        .rest
        .post(
            Some(&admin),
            "/api/staff",
            json!({"role": "clinician", "display_name": "Dr. Grey"}),
        )
        .await?;
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let mut writers = tokio::task::JoinSet::new();
    for writer in 0..WRITERS {
        let (base, admin, acknowledged) = (
            serve.rest.base.clone(),
            admin.clone(),
            Arc::clone(&acknowledged),
        );
        let clinician_id = clinician["id"].clone();
        writers.spawn(async move {
            let http = reqwest::Client::new();
            for n in 0..WRITES_EACH {
                let body = json!({
                    "clinician_id": clinician_id,
                    "scheduled_at": chrono::Utc::now().to_rfc3339(),
                    "duration_minutes": 30,
                    "patient": {"name": format!("Patient {writer}-{n}")},
                });
                let answer = http
                    .post(format!("{base}/api/visits"))
                    .bearer_auth(&admin)
                    .json(&body)
                    .send()
                    .await;
                let Ok(answer) = answer else { return };
                if answer.status().as_u16() != 201 {
                    continue;
                }
                // Only a complete 201 answer is an acknowledged write.
                let Ok(visit) = answer.json::<serde_json::Value>().await else {
                    return;
                };
                if let (Some(id), Ok(mut ids)) = (visit["id"].as_str(), acknowledged.lock()) {
                    ids.push(id.to_owned());
                }
            }
        });
    }
    let started = Instant::now();
    tokio::time::sleep(KILL_AFTER).await;
    serve.signal("KILL")?;
    let status = serve.exited(Duration::from_secs(5)).await?;
    assert!(!status.success(), "killed, not exited: {status:?}");
    while writers.join_next().await.is_some() {}
    let acknowledged = acknowledged
        .lock()
        .map(|ids| ids.clone())
        .map_err(|_| "poisoned")?;
    println!(
        "{} writes acknowledged in {:?} before kill -9",
        acknowledged.len(),
        started.elapsed()
    );
    assert!(
        !acknowledged.is_empty(),
        "the writers got nothing done before the kill"
    );
    drop(serve);

    let serve = Serve::start(&data, &[], Some(admin))?;
    for id in &acknowledged {
        serve
            .rest
            .get(&serve.rest.admin_key, &format!("/api/visits/{id}"))
            .await
            .map_err(|error| format!("acknowledged visit {id} is gone: {error}"))?;
    }
    drop(serve);
    let (intact, said) = audit_verify(&data)?;
    assert!(intact, "{said}");
    Ok(())
}
