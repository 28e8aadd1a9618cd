//! Two `bedside serve` nodes sharing one PostgreSQL (the cluster `scripts/pg` starts): a
//! visit's room is placed on one node and both participants are sent there, ending the visit
//! through the other node disconnects them within a second, and once that node stops
//! heartbeating the next visit is placed on the node that is left.

mod common;

use std::time::{Duration, Instant};

use common::call::Call;
use common::{Server, TestResult, text};
use serde_json::{Value, json};
use sqlx::Connection as _;

const HEARTBEAT_MS: u64 = 200;
const NODE_TIMEOUT_MS: u64 = 1_500;

/// A fresh database in the test cluster: (app URL, owner URL), or None outside
/// `scripts/test` (which always provides the cluster).
async fn database() -> TestResult<Option<(String, String)>> {
    let Ok(admin) = std::env::var("BEDSIDE_TEST_PG_ADMIN_URL") else {
        return Ok(None);
    };
    let owner = std::env::var("BEDSIDE_TEST_PG_OWNER_URL_BASE")?;
    let app = std::env::var("BEDSIDE_TEST_PG_APP_URL_BASE")?;
    let name = format!("cluster_{}", std::process::id());
    let mut conn = sqlx::PgConnection::connect(&admin).await?;
    // The name is made of a constant and a number.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name}"
    )))
    .execute(&mut conn)
    .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await?;
    Ok(Some((format!("{app}/{name}"), format!("{owner}/{name}"))))
}

async fn node(id: &str, urls: &(String, String), data: tempfile::TempDir) -> TestResult<Server> {
    let (app_url, owner_url) = urls.clone();
    let id = id.to_owned();
    Server::start_in(signaling::Limits::default(), data, move |config| {
        config.database.url = app_url;
        config.database.migrate_url = owner_url;
        config.cluster.node_id = id;
        config.cluster.heartbeat_ms = HEARTBEAT_MS;
        config.cluster.node_timeout_ms = NODE_TIMEOUT_MS;
    })
    .await
}

/// `GET /api/nodes` on `server`: node id → (live, rooms of the tenant).
async fn nodes(server: &Server, key: &str) -> TestResult<Vec<(String, bool, Vec<String>)>> {
    let answer = server.get(key, "/api/nodes").await?;
    let mut nodes = Vec::new();
    for node in answer["nodes"].as_array().ok_or("no nodes")? {
        let rooms = node["rooms"]
            .as_array()
            .ok_or("no rooms")?
            .iter()
            .map(text)
            .collect::<TestResult<Vec<_>>>()?;
        nodes.push((text(&node["id"])?, node["live"] == json!(true), rooms));
    }
    Ok(nodes)
}

/// Polls `check` every 50 ms until it holds, up to `within`.
async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F) -> TestResult
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = TestResult<bool>>,
{
    let deadline = Instant::now() + within;
    while !check().await? {
        if Instant::now() >= deadline {
            return Err(format!("not within {within:?}: {what}").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

fn signaling_of(answer: &Value) -> TestResult<String> {
    text(&answer["media"]["signaling_url"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_are_placed_on_one_node_and_follow_the_live_nodes() -> TestResult {
    let Some(urls) = database().await? else {
        eprintln!(
            "no BEDSIDE_TEST_PG_ADMIN_URL: run through ./scripts/test, which starts PostgreSQL"
        );
        return Ok(());
    };
    let a = node("node-a", &urls, tempfile::tempdir()?).await?;
    // Every node must hold the same signing and PHI master keys.
    let b_data = tempfile::tempdir()?;
    for file in ["signing-key.p8", "master.key"] {
        std::fs::copy(a.data.path().join(file), b_data.path().join(file))?;
    }
    let mut b = node("node-b", &urls, b_data).await?;
    assert!(b.admin_key.is_empty(), "the second node finds the tenant");
    b.admin_key = a.admin_key.clone();
    let key = a.admin_key.clone();
    eventually(Duration::from_secs(5), "both nodes registered", || async {
        let nodes = nodes(&a, &key).await?;
        Ok(nodes.len() == 2 && nodes.iter().all(|(_, live, _)| *live))
    })
    .await?;

    // Both nodes are empty: the tie goes to node-a. That room makes node-b the emptier one.
    let first = a.visit().await?;
    assert_eq!(signaling_of(&first.patient)?, a.ws_url());
    assert_eq!(signaling_of(&first.clinician)?, a.ws_url());

    // Started through node A, placed on node B: both participants are sent to B.
    let visit = a.visit().await?;
    assert_eq!(signaling_of(&visit.patient)?, b.ws_url());
    assert_eq!(signaling_of(&visit.clinician)?, b.ws_url());
    let call = Call::start(&visit, false).await?;
    let listed = nodes(&b, &key).await?;
    assert_eq!(
        listed,
        vec![
            ("node-a".to_owned(), true, vec![first.id.clone()]),
            ("node-b".to_owned(), true, vec![visit.id.clone()]),
        ]
    );

    // Ended through node A: node B's signaling disconnects both within a second.
    let ended = Instant::now();
    a.end_visit(&key, &visit.id).await?;
    call.finished(Duration::from_secs(1)).await?;
    let took = ended.elapsed();
    eprintln!("end through node A → both participants disconnected from node B in {took:?}");
    assert!(took < Duration::from_secs(1), "{took:?}");
    let events = b
        .audit_events_with(&visit.id, &["visit.ended", "participant.left"])
        .await?;
    assert!(events.iter().any(|e| e == "participant.left"), "{events:?}");
    let metrics = b.get_text("/metrics").await?;
    assert!(
        metrics.contains(r#"bedside_cluster_total{kind="event",outcome="relayed"} 1"#),
        "node B counts the relayed end"
    );
    assert!(
        metrics.contains("bedside_cluster_nodes_live 2"),
        "both nodes live"
    );

    // Node B stops heartbeating (a crash: no deregistration). After the timeout its node
    // is gone and the next visit goes to node A.
    b.crash();
    eventually(
        Duration::from_millis(NODE_TIMEOUT_MS * 3),
        "node-b is reaped",
        || async {
            Ok(nodes(&a, &key)
                .await?
                .iter()
                .all(|(id, _, _)| id == "node-a"))
        },
    )
    .await?;
    let next = a.visit().await?;
    assert_eq!(signaling_of(&next.patient)?, a.ws_url());
    assert_eq!(signaling_of(&next.clinician)?, a.ws_url());
    a.stop().await;
    Ok(())
}
