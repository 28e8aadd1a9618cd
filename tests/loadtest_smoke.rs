//! The load tester's smoke run, as CI runs it: `bedside serve`'s components in-process, and
//! `loadtest::run` making 5 visits (two webrtc-rs peers each, Opus + 360p VP8) held for 10 s.
//! Every peer must join and receive audio and video, and every visit must be left and ended;
//! timings are not asserted (this machine runs other builds at the same time).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Server, TestResult};
use loadtest::media::Video;
use loadtest::run::{Config, Live, ServerProcess};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_visits_for_ten_seconds_all_join_and_receive_media() -> TestResult {
    let server = Server::start(signaling::Limits::default()).await?;
    let config = Config {
        url: server.base.clone(),
        api_key: server.admin_key.clone(),
        visits: 5,
        duration: Duration::from_secs(10),
        ramp_per_sec: 5.0,
        video: Video::P360,
        // The server is this very process: its figures would be the generator's.
        server: ServerProcess::None,
        join_timeout: Duration::from_secs(30),
    };
    let (_shutdown, shutdown) = tokio::sync::watch::channel(false);
    let live = Arc::new(Live::default());
    let report = loadtest::run::run(&config, Arc::clone(&live), shutdown).await?;
    let summary = report.table();
    // Shown with --nocapture, and in the log of a failing run.
    println!("{summary}");

    assert_eq!(report.visits.joined, 5, "{summary}");
    assert_eq!(report.peers.joined, 10, "{summary}");
    assert_eq!(report.peers.failed, 0, "{summary}");
    assert!(report.peers.failures.is_empty(), "{summary}");
    assert_eq!(report.peers.incomplete_media, 0, "{summary}");
    assert_eq!(report.visits.ended, 5, "{summary}");
    // Each peer received the other's audio and video: ten streams of each kind.
    assert_eq!(report.audio.streams, 10, "{summary}");
    assert_eq!(report.video.streams, 10, "{summary}");
    assert!(
        report.audio.packets > 0 && report.video.packets > 0,
        "{summary}"
    );
    assert!(report.join_ms.p99.is_some(), "{summary}");
    // webrtc-rs sends RTCP receiver reports but no TWCC feedback: the SFU must measure RTT
    // from the receiver reports (it measured none before it did).
    assert!(report.rtt_ms.samples > 0, "{summary}");
    assert!(report.passed(), "{summary}");
    assert_eq!(live.finished.load(std::sync::atomic::Ordering::Relaxed), 5);

    // The visits are over for the server too.
    let ended = server
        .get(&server.admin_key, "/api/visits?status=ended&limit=50")
        .await?;
    assert_eq!(ended["items"].as_array().map(Vec::len), Some(5), "{ended}");
    Ok(())
}
