//! The load tester's smoke run, as CI runs it: `bedside serve`'s components in-process, and
//! `loadtest::run` making 5 visits (two webrtc-rs peers each, Opus + 360p VP8) held for 10 s.
//! Every peer must join and receive audio and video, and every visit must be left and ended;
//! timings are not asserted (this machine runs other builds at the same time).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Server, TestResult};
use loadtest::media::Video;
use loadtest::peer::{PeerKind, Transport};
use loadtest::report::Report;
use loadtest::run::{Config, Live, ServerProcess, Target};

/// Held by each run, so they take turns: run side by side on two cores, the impaired run's
/// relay was starved, read its socket in bursts and dropped them as an overflowing queue
/// (once even a patient's ICE checks, and the visit never joined).
static ONE_RUN_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_visits_for_ten_seconds_all_join_and_receive_media() -> TestResult {
    let _turn = ONE_RUN_AT_A_TIME.lock().await;
    let server = Server::start(signaling::Limits::default()).await?;
    let config = Config {
        url: server.base.clone(),
        api_key: server.admin_key.clone(),
        visits: 5,
        duration: Duration::from_secs(10),
        ramp_per_sec: 5.0,
        video: Video::P360,
        transport: Transport::Udp,
        peer: PeerKind::WebrtcRs,
        target: Target::Bedside,
        // The server is this very process: its figures would be the generator's.
        server: ServerProcess::None,
        join_timeout: Duration::from_secs(30),
        impair: None,
        simulcast: false,
    };
    let live = Arc::new(Live::default());
    let (report, summary) = run_printed(&config, Arc::clone(&live)).await?;

    assert_eq!(report.visits.joined, 5, "{summary}");
    assert_eq!(report.peers.joined, 10, "{summary}");
    assert_eq!(report.peers.failed, 0, "{summary}");
    assert!(report.peers.failures.is_empty(), "{summary}");
    assert_eq!(report.peers.incomplete_media, 0, "{summary}");
    assert_eq!(
        report.peers.paths,
        [("host/udp".to_owned(), 10)].into(),
        "every peer reached the SFU directly: {summary}"
    );
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

    // What an operator graphs of that: the UDP socket's batches and every session's grade.
    let metrics = server.get_text("/metrics").await?;
    let udp = |counter: &str| {
        common::metric_sum(
            &metrics,
            "bedside_sfu_events_total{",
            &format!("counter=\"{counter}\""),
        )
    };
    let (sent, calls) = (udp("udp_datagrams_sent"), udp("udp_send_calls"));
    assert!(
        sent > 1000.0 && calls > 0.0 && calls <= sent,
        "{sent} in {calls}"
    );
    assert!(udp("udp_datagrams_received") >= udp("udp_recv_calls"));
    assert!(
        common::metric_sum(&metrics, "bedside_sfu_connection_quality_total{", "") >= 10.0,
        "a grade for each of the ten sessions"
    );
    Ok(())
}

/// The light peers of capacity runs (`--peer str0m`, the default): every peer joins and gets
/// the other's audio and 640-wide video, with RTT from its receiver reports; behind an
/// impaired path the patients send transport-wide feedback, and the SFU estimates their
/// downlinks and pauses their video.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn light_str0m_peers_join_receive_and_adapt_behind_a_weak_link() -> TestResult {
    let _turn = ONE_RUN_AT_A_TIME.lock().await;
    let server = Server::start(signaling::Limits::default()).await?;
    let mut config = run_config(&server, 3, Duration::from_secs(8), Transport::Udp);
    config.peer = PeerKind::Str0m;
    let (report, summary) = run_printed(&config, Arc::new(Live::default())).await?;
    assert!(report.passed(), "{summary}");
    assert_eq!(report.visits.joined, 3, "{summary}");
    assert_eq!(report.visits.ended, 3, "{summary}");
    assert_eq!(report.audio.streams, 6, "{summary}");
    assert_eq!(report.video.streams, 6, "{summary}");
    assert!(report.video.packets > 1000, "{summary}");
    assert_eq!(
        report.video.layers.keys().copied().collect::<Vec<_>>(),
        [640],
        "{summary}"
    );
    assert!(report.rtt_ms.samples > 0, "{summary}");
    assert!(summary.contains("from str0m peers"), "{summary}");
    assert!(
        report.generator.frames_skipped_pct.is_some(),
        "light peers count the frames they send: {summary}"
    );

    config.visits = 2;
    config.impair = Some("rate=300kbit,loss=2%,delay=40ms,jitter=5ms".parse()?);
    let (report, summary) = run_printed(&config, Arc::new(Live::default())).await?;
    assert_eq!(report.visits.joined, 2, "{summary}");
    let behind = report.impaired.as_ref().ok_or("no impaired section")?;
    assert!(behind.audio.packets > 500, "{summary}");
    assert!(behind.paused >= 2, "each patient's video paused: {summary}");
    let metrics = server.get_text("/metrics").await?;
    let estimates = common::metric_sum(&metrics, "bedside_sfu_subscriber_bandwidth_bps_count", "");
    assert!(estimates > 0.0, "the SFU estimated the patients' downlinks");
    Ok(())
}

/// Makes the run `config` asks for and prints its table (shown with --nocapture, and in the
/// log of a failing run); returns the report and that table for assertion messages.
async fn run_printed(config: &Config, live: Arc<Live>) -> TestResult<(Report, String)> {
    let (_shutdown, shutdown) = tokio::sync::watch::channel(false);
    let report = loadtest::run::run(config, live, shutdown).await?;
    let summary = report.table();
    println!("{summary}");
    Ok((report, summary))
}

/// The run's configuration for `server`: `visits` held `hold` over `transport`.
fn run_config(server: &Server, visits: usize, hold: Duration, transport: Transport) -> Config {
    Config {
        url: server.base.clone(),
        api_key: server.admin_key.clone(),
        visits,
        duration: hold,
        ramp_per_sec: 5.0,
        video: Video::P360,
        transport,
        peer: PeerKind::WebrtcRs,
        target: Target::Bedside,
        server: ServerProcess::None,
        join_timeout: Duration::from_secs(30),
        impair: None,
        simulcast: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_runs_go_through_turn_or_say_why_not() -> TestResult {
    let _turn = ONE_RUN_AT_A_TIME.lock().await;
    let Some(coturn) = common::coturn::Coturn::start()? else {
        return Ok(());
    };
    let (url, secret) = (coturn.udp_url(), coturn.secret.clone());
    let server = Server::start_with(signaling::Limits::default(), move |config| {
        config.turn.urls = vec![url];
        config.turn.shared_secret = Some(api::config::Secret::new(secret));
    })
    .await?;
    let config = run_config(&server, 2, Duration::from_secs(3), Transport::Relay);
    let (report, summary) = run_printed(&config, Arc::new(Live::default())).await?;
    assert!(report.passed(), "{summary}");
    assert_eq!(
        report.peers.paths,
        [("relay/udp".to_owned(), 4)].into(),
        "every peer relayed: {summary}"
    );
    assert!(summary.contains("4 × relay/udp"), "{summary}");

    // A server without TURN: every visit fails, saying why.
    let bare = Server::start(signaling::Limits::default()).await?;
    let config = run_config(&bare, 1, Duration::from_secs(1), Transport::Relay);
    let (report, _) = run_printed(&config, Arc::new(Live::default())).await?;
    assert!(!report.passed());
    let reasons: Vec<&String> = report.peers.failures.keys().collect();
    assert!(
        reasons.len() == 1 && reasons[0].contains("turn.urls"),
        "{reasons:?}"
    );
    assert_eq!(report.visits.ended, 1, "the visit is ended all the same");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_runs_reach_the_sfu_over_ice_tcp() -> TestResult {
    let _turn = ONE_RUN_AT_A_TIME.lock().await;
    // Both transports announced: peers that can only use TCP still get through.
    let server = Server::start(signaling::Limits::default()).await?;
    let config = run_config(&server, 2, Duration::from_secs(3), Transport::Tcp);
    let (report, summary) = run_printed(&config, Arc::new(Live::default())).await?;
    assert!(report.passed(), "{summary}");
    assert_eq!(
        report.peers.paths,
        [("host/tcp".to_owned(), 4)].into(),
        "every peer went over ICE-TCP: {summary}"
    );
    assert!(
        report.audio.streams == 4 && report.video.streams == 4,
        "{summary}"
    );
    let metrics = server.get_text("/metrics").await?;
    assert!(
        common::metric_sum(
            &metrics,
            "bedside_sfu_tcp_accepts_total{",
            "outcome=\"adopted\""
        ) >= 4.0,
        "the SFU adopted their connections"
    );
    Ok(())
}

/// `--impair`: each patient's media goes through its relay, which limits, drops and delays
/// what reaches the patient; the visit still joins, the report counts what the relays did
/// and what the patients received through them. Behind the relay a patient sends
/// transport-wide feedback, so the SFU estimates its link: 360p video (about 500 kbit/s)
/// does not fit 300 kbit/s, and the SFU pauses it for the patient, audio going on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_impaired_run_goes_through_the_relays_and_reports_them() -> TestResult {
    let _turn = ONE_RUN_AT_A_TIME.lock().await;
    let server = Server::start(signaling::Limits::default()).await?;
    let mut config = run_config(&server, 2, Duration::from_secs(8), Transport::Udp);
    config.impair = Some("rate=300kbit,loss=2%,delay=40ms,jitter=5ms".parse()?);
    let (report, summary) = run_printed(&config, Arc::new(Live::default())).await?;
    assert_eq!(report.visits.joined, 2, "{summary}");
    let behind = report.impaired.as_ref().ok_or("no impaired section")?;
    assert_eq!(behind.peers, 2, "{summary}");
    assert!(behind.relay_delivered > 500, "{summary}");
    assert!(behind.relay_lost > 0, "{summary}");
    assert!(behind.relay_overflowed > 0, "{summary}");
    assert!(behind.audio.packets > 500, "{summary}");
    assert!(behind.paused >= 2, "each patient's video paused: {summary}");
    assert!(summary.contains("impaired patients"), "{summary}");
    Ok(())
}

/// `--simulcast`: every peer sends its camera as q, h and f (320, 640 and 1280 wide). Behind
/// a 700 kbit/s downlink the patients get the lower layers (f is about 1.5 Mbit/s), while the
/// clinicians, whose links are not limited, get f; the report shows both distributions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simulcast_run_reports_the_layers_each_side_got() -> TestResult {
    let _turn = ONE_RUN_AT_A_TIME.lock().await;
    let server = Server::start(signaling::Limits::default()).await?;
    let mut config = run_config(&server, 2, Duration::from_secs(10), Transport::Udp);
    config.simulcast = true;
    config.impair = Some("rate=700kbit,delay=20ms".parse()?);
    let (report, summary) = run_printed(&config, Arc::new(Live::default())).await?;
    assert_eq!(report.visits.joined, 2, "{summary}");
    assert_eq!(report.peers.incomplete_media, 0, "{summary}");
    assert!(
        report.run.simulcast && summary.contains("simulcast q/h/f"),
        "{summary}"
    );
    let behind = report.impaired.as_ref().ok_or("no impaired section")?;
    let share = |layers: &std::collections::BTreeMap<u16, u64>, width: u16| {
        let total: u64 = layers.values().sum();
        layers.get(&width).copied().unwrap_or(0) as f64 / total.max(1) as f64
    };
    let all = &report.video.layers;
    let patients = &behind.video.layers;
    assert!(
        all.keys().all(|w| [320, 640, 1280].contains(w)),
        "only the three layers' widths: {summary}"
    );
    assert!(
        share(patients, 320) + share(patients, 640) > 0.75,
        "the patients mostly got q or h: {summary}"
    );
    // The clinicians' packets are what the whole run got beyond the patients'.
    let clinicians_f =
        all.get(&1280).copied().unwrap_or(0) - patients.get(&1280).copied().unwrap_or(0);
    let clinicians: u64 = all.values().sum::<u64>() - patients.values().sum::<u64>();
    assert!(
        clinicians_f as f64 > 0.75 * clinicians as f64,
        "the clinicians mostly got f: {summary}"
    );
    assert!(summary.contains("video by width"), "{summary}");
    Ok(())
}
