//! `bedside-loadtest`: N concurrent visits against a Bedside server, a progress bar while it
//! runs, a table at the end, `--json FILE`; exit status 1 when any peer failed to join or
//! received no media, 2 when the run could not be made.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use loadtest::impair::Impairment;
use loadtest::media::Video;
use loadtest::peer::{PeerKind, Transport};
use loadtest::run::{Config, Live, ServerProcess, Target};
use tokio::sync::watch;

/// Load test for Bedside: concurrent visits of two peers each (light str0m peers, or
/// webrtc-rs with `--peer webrtc-rs`), publishing Opus and VP8 through the SFU.
#[derive(Debug, Parser)]
#[command(name = "bedside-loadtest", version)]
struct Cli {
    /// Base URL of the server (with `--target janus`, Janus's HTTP API:
    /// `http://10.77.0.1:8088/janus`).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// An admin API key (it creates one clinician per visit); Bedside only.
    #[arg(
        long,
        env = "BEDSIDE_LOADTEST_API_KEY",
        required_if_eq("target", "bedside")
    )]
    api_key: Option<String>,
    /// The server under load: bedside, or janus (its VideoRoom plugin over the HTTP API at
    /// --url, a room per visit; light str0m peers over UDP only; for
    /// scripts/bench-vs-janus).
    #[arg(long, default_value = "bedside")]
    target: Target,
    /// Concurrent visits (two peers each).
    #[arg(long, default_value_t = 10)]
    visits: usize,
    /// How long all visits are held together once the last has started (60s, 2m).
    #[arg(long, default_value = "60s", value_parser = loadtest::parse_duration)]
    duration: Duration,
    /// Visits started per second (20/s, 600/m).
    #[arg(long, default_value = "20/s", value_parser = loadtest::parse_rate)]
    ramp: f64,
    /// Video every peer sends: 360p (~500 kbit/s), 720p (~1.5 Mbit/s) or none.
    #[arg(long, default_value = "360p")]
    video: Video,
    /// How every peer's media reaches the SFU: udp (directly to the SFU's UDP port), tcp
    /// (directly to its ICE-TCP port, no UDP) or relay (only through the TURN server of the
    /// start answer: the server needs turn.urls and turn.shared_secret; webrtc-rs relays over
    /// UDP only).
    #[arg(long, default_value = "udp")]
    transport: Transport,
    /// The peers' WebRTC stack: str0m (light: one task and one UDP socket per peer, RTP cut
    /// once per run; UDP only, so the generator does not saturate the box before the server)
    /// or webrtc-rs (an independent stack, for interop runs and --transport tcp or relay).
    #[arg(long, default_value = "str0m")]
    peer: PeerKind,
    /// Write the report as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// The server's pid, for its CPU and memory (default: the process listening on the URL's
    /// port, when the URL is on this host's loopback).
    #[arg(long)]
    server_pid: Option<u32>,
    /// A peer without remote media this long after its start call failed to join.
    #[arg(long, default_value = "30s", value_parser = loadtest::parse_duration)]
    join_timeout: Duration,
    /// Run every patient's UDP media through an impaired path, as a weak downlink:
    /// `rate=300kbit,loss=2%,delay=80ms` (also `jitter=10ms`, `queue=200ms`: the rate
    /// limit's queue before it drops). Loss, rate and jitter apply towards the patient, the
    /// delay both ways; clinicians are not impaired.
    #[arg(long)]
    impair: Option<Impairment>,
    /// Send every peer's camera as three simulcast layers, as the join page does: q 320×180
    /// (~180 kbit/s), h 640×360 and f 1280×720 (the 360p and 720p samples); the report then
    /// shows the layers the SFU forwarded. Replaces --video, which must not be none.
    #[arg(long)]
    simulcast: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("bedside-loadtest: cannot start the runtime: {error}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("bedside-loadtest: {error:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<bool> {
    if cli.simulcast && cli.video == Video::None {
        anyhow::bail!("--simulcast sends the camera as layers: it needs video (not --video none)");
    }
    let config = Config {
        url: cli.url,
        api_key: cli.api_key.unwrap_or_default(),
        target: cli.target,
        visits: cli.visits,
        duration: cli.duration,
        ramp_per_sec: cli.ramp,
        video: cli.video,
        simulcast: cli.simulcast,
        transport: cli.transport,
        peer: cli.peer,
        server: cli
            .server_pid
            .map_or(ServerProcess::Detect, ServerProcess::Pid),
        join_timeout: cli.join_timeout,
        impair: cli.impair,
    };
    let (shutdown_tx, shutdown) = watch::channel(false);
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("interrupted: leaving and ending every visit made so far");
            let _ = shutdown_tx.send(true);
        }
    });

    let live = Arc::new(Live::default());
    let bar = ProgressBar::new(config.visits as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} visits {msg}",
        )
        .context("progress template")?,
    );
    let watcher = {
        let (bar, live) = (bar.clone(), Arc::clone(&live));
        let visits = config.visits;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            // Bounded by the run: the task is aborted when it returns.
            loop {
                tick.tick().await;
                let joined = live.joined.load(Ordering::Relaxed);
                let failed = live.failed.load(Ordering::Relaxed);
                let finished = live.finished.load(Ordering::Relaxed);
                bar.set_position((joined + failed) as u64);
                let phase = if finished > 0 {
                    "leaving"
                } else if joined + failed < visits {
                    "joining"
                } else {
                    "holding"
                };
                bar.set_message(format!(
                    "{phase}: {joined} joined, {failed} failed, {finished} ended"
                ));
            }
        })
    };
    let report = loadtest::run::run(&config, Arc::clone(&live), shutdown).await;
    watcher.abort();
    bar.finish_and_clear();
    let report = report?;

    println!("{}", report.table());
    if let Some(path) = &cli.json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(report.passed())
}
