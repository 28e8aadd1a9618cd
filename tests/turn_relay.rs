//! TURN with coturn as the real component: a real `bedside serve` with `turn.policy =
//! "relay"` and a real `turnserver` (docs/turnserver.conf on loopback, tests/common/coturn.rs),
//! two webrtc-rs peers that may only use relay candidates.
//!
//! - Media flows both ways through the relay: each peer's selected local candidate is a
//!   `relay` one in coturn's port range, and coturn logged both allocations.
//! - Credentials expire as `turn.ttl_seconds` says: once a start answer's credential is past
//!   its expiry coturn refuses the allocation (401) and a relay-only peer cannot connect.
//! - Neither the shared secret nor any credential appears in the server's debug log or its
//!   metrics.
//! - A bad `turn.policy`, or `relay` without a TURN server, stops `bedside serve` and
//!   `bedside config check` with the key named.
//!
//! webrtc-rs 0.21 allocates over UDP only (it skips `?transport=tcp` and `turns:` URLs with a
//! warning), so the TCP and TLS transports are tested in Chromium (e2e/tests/relay.test.js).

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::call::{Call, ice_servers};
use common::coturn::Coturn;
use common::process::Serve;
use common::{TestResult, text};
use loadtest::peer::{Options, Seen, Transport, participant};
use serde_json::json;
use tokio::sync::{mpsc, watch};

/// A `bedside serve` relaying through `coturn` with `urls`, credentials living `ttl_seconds`,
/// logging JSON at debug level.
fn serve_relaying(
    data: &std::path::Path,
    coturn: &Coturn,
    urls: &[String],
    ttl_seconds: u64,
) -> TestResult<Serve> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let env = [
        (
            "BEDSIDE_TURN__URLS",
            serde_json::to_string(urls).unwrap_or_default(),
        ),
        ("BEDSIDE_TURN__SHARED_SECRET", coturn.secret.clone()),
        ("BEDSIDE_TURN__TTL_SECONDS", ttl_seconds.to_string()),
        ("BEDSIDE_TURN__POLICY", "relay".to_owned()),
        ("BEDSIDE_LOG__FORMAT", "json".to_owned()),
        ("BEDSIDE_LOG__LEVEL", "debug".to_owned()),
        ("RUST_LOG", "debug".to_owned()),
    ];
    Serve::start(data, &env, None)
}

/// (username, credential) of a start answer's one TURN server.
fn credentials(answer: &serde_json::Value) -> TestResult<(String, String)> {
    let server = &answer["media"]["ice_servers"][0];
    Ok((text(&server["username"])?, text(&server["credential"])?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_only_peers_hold_a_visit_through_coturn() -> TestResult {
    let Some(coturn) = Coturn::start()? else {
        return Ok(());
    };
    let data = tempfile::tempdir()?;
    // Every transport is handed out; webrtc-rs uses the UDP one (see the module's note).
    let urls = [coturn.udp_url(), coturn.tcp_url(), coturn.tls_url()];
    let serve = serve_relaying(data.path(), &coturn, &urls, 3600)?;
    let visit = serve.rest.visit().await?;
    for answer in [&visit.patient, &visit.clinician] {
        assert_eq!(answer["media"]["ice_transport_policy"], json!("relay"));
        assert_eq!(answer["media"]["ice_servers"][0]["urls"], json!(urls));
    }

    let started = Instant::now();
    let call = Call::start_over(&visit, false, Transport::Relay).await?;
    println!(
        "relay: both peers received {} audio and video packets {:?} after the first join",
        common::call::WANTED,
        started.elapsed()
    );
    for (who, seen) in [("patient", &call.patient), ("clinician", &call.clinician)] {
        let pair = seen
            .selected
            .get()
            .ok_or_else(|| format!("the {who} has no selected candidate pair"))?;
        assert_eq!(pair.local_path, "relay/udp", "{who}: {pair:?}");
        let port: u16 = pair
            .local
            .strip_prefix("127.0.0.1:")
            .ok_or_else(|| format!("{who}: {pair:?}"))?
            .parse()?;
        assert!(
            coturn.relay_ports.contains(&port),
            "{who}'s relay address is one of coturn's: {pair:?}"
        );
    }
    let log = coturn.log();
    for answer in [&visit.patient, &visit.clinician] {
        let (username, _) = credentials(answer)?;
        assert!(
            log.lines().any(
                |line| line.contains(&username) && line.contains("ALLOCATE processed, success")
            ),
            "coturn allocated a relay for {username}:\n{log}"
        );
    }

    // TURN credentials never reach the log (at debug level) or the metrics.
    let metrics = serve.rest.get_text("/metrics").await?;
    serve
        .rest
        .end_visit(&visit.clinician_key, &visit.id)
        .await?;
    call.finished(Duration::from_secs(5)).await?;
    let server_log = serve.log();
    assert!(
        server_log.lines().count() > 10,
        "a debug log:\n{server_log}"
    );
    let mut secrets = vec![coturn.secret.clone()];
    for answer in [&visit.patient, &visit.clinician] {
        secrets.push(credentials(answer)?.1);
    }
    for secret in &secrets {
        assert!(!server_log.contains(secret.as_str()), "{secret} logged");
        assert!(!metrics.contains(secret.as_str()), "{secret} in /metrics");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_credential_is_refused_and_a_relay_only_peer_cannot_connect() -> TestResult {
    let Some(coturn) = Coturn::start()? else {
        return Ok(());
    };
    let data = tempfile::tempdir()?;
    let serve = serve_relaying(data.path(), &coturn, &[coturn.udp_url()], 1)?;
    let visit = serve.rest.visit().await?;
    let (username, _) = credentials(&visit.patient)?;
    let expiry: i64 = username
        .split_once(':')
        .ok_or("expiry:participant")?
        .0
        .parse()?;
    let now = chrono::Utc::now().timestamp();
    assert!(
        (now..=now + 1).contains(&expiry),
        "the credential lives turn.ttl_seconds = 1: {expiry} at {now}"
    );
    // coturn accepts a credential up to and including its expiry second.
    while chrono::Utc::now().timestamp() <= expiry + 1 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let seen = Arc::new(Seen::default());
    let (_inject, frames) = mpsc::channel(4);
    let (_stop, stopped) = watch::channel(false);
    let media = Arc::new(loadtest::media::Media::builtin(
        loadtest::media::Video::None,
    )?);
    let patient = tokio::spawn(participant(
        Options {
            signaling_url: text(&visit.patient["media"]["signaling_url"])?,
            grant: text(&visit.patient["grant"])?,
            admits: false,
            tolerate_errors: false,
            media,
            transport: Transport::Relay,
            ice_servers: ice_servers(&visit.patient)?,
            deadline: Instant::now() + Duration::from_secs(8),
            impair: None,
        },
        Arc::clone(&seen),
        frames,
        stopped,
    ));
    // coturn answers the allocation 401 (its log names the user); the peer gathers no relay
    // candidate and, allowed no other, never connects.
    let deadline = Instant::now() + Duration::from_secs(10);
    let refused = |log: &str| {
        log.lines()
            .any(|line| line.contains(&username) && line.contains("401"))
    };
    while !refused(&coturn.log()) {
        assert!(
            Instant::now() < deadline,
            "coturn did not refuse {username}:\n{}",
            coturn.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let outcome = tokio::time::timeout(Duration::from_secs(20), patient).await??;
    println!("the relay-only peer with an expired credential: {outcome:?}");
    assert!(outcome.is_err(), "the peer cannot run without a relay");
    assert!(seen.selected.get().is_none(), "{:?}", seen.selected.get());
    assert_eq!(seen.counts(), (0, 0));
    assert!(
        !coturn.log().contains("ALLOCATE processed, success"),
        "{}",
        coturn.log()
    );
    Ok(())
}

/// `bedside config check` with `env`: (success, stdout + stderr).
fn config_check(env: &[(&str, &str)]) -> TestResult<(bool, String)> {
    let data = tempfile::tempdir()?;
    let out = Command::new(env!("CARGO_BIN_EXE_bedside"))
        .arg("--data-dir")
        .arg(data.path())
        .args(["config", "check"])
        .envs(env.iter().copied())
        .output()?;
    Ok((
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ))
}

#[test]
fn a_bad_turn_policy_is_refused_with_the_key_named() -> TestResult {
    let (ok, out) = config_check(&[("BEDSIDE_TURN__POLICY", "sometimes")])?;
    assert!(!ok, "{out}");
    assert!(
        out.contains("turn.policy") && out.contains("`all` or `relay`"),
        "{out}"
    );
    let (ok, out) = config_check(&[("BEDSIDE_TURN__POLICY", "relay")])?;
    assert!(!ok, "{out}");
    assert!(out.contains("turn.urls") && out.contains("relay"), "{out}");
    let (ok, out) = config_check(&[
        ("BEDSIDE_TURN__POLICY", "relay"),
        ("BEDSIDE_TURN__URLS", r#"["turn:127.0.0.1:3478"]"#),
    ])?;
    assert!(!ok, "{out}");
    assert!(out.contains("turn.shared_secret"), "{out}");
    let (ok, out) = config_check(&[
        ("BEDSIDE_TURN__POLICY", "relay"),
        ("BEDSIDE_TURN__URLS", r#"["turn:127.0.0.1:3478"]"#),
        ("BEDSIDE_TURN__SHARED_SECRET", "s3cret-value"),
    ])?;
    assert!(ok, "{out}");
    assert!(out.contains(r#""policy": "relay""#), "{out}");
    assert!(
        !out.contains("s3cret-value"),
        "the secret is redacted: {out}"
    );

    // `serve` refuses to start, with exit status 2 and the same message.
    let data = tempfile::tempdir()?;
    let out = Command::new(env!("CARGO_BIN_EXE_bedside"))
        .arg("--data-dir")
        .arg(data.path())
        .args(["serve", "--http", "127.0.0.1:0", "--udp", "127.0.0.1:0"])
        .env("BEDSIDE_TURN__POLICY", "sometimes")
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("turn.policy"), "{stderr}");
    Ok(())
}
