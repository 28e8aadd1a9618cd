//! The load tester's Janus target (`--target janus`, issue 15's side-by-side comparison)
//! against a real Janus: Debian's `janus` started with loadtest/janus/ inside a network
//! namespace of this test's own (Janus gathers no loopback candidates), joined to the host by
//! a veth pair. Two VideoRoom visits of two light peers each must join, receive audio and
//! video, and be counted per server CPU second from Janus's own process; rooms are destroyed
//! at the end; a participant sent to a room Janus does not have is told why. Needs root (`ip netns`); `scripts/test` installs Janus and names it in
//! `BEDSIDE_TEST_JANUS`, so there a missing one fails instead of skipping.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::TestResult;
use loadtest::janus::{Janus, Seat};
use loadtest::lite::RtpMedia;
use loadtest::media::{Media, Video};
use loadtest::peer::{PeerKind, Seen, Transport};
use loadtest::run::{Config, Live, RunError, ServerProcess, Target};

/// How long Janus may take to answer its API.
const START_WAIT: Duration = Duration::from_secs(15);

fn ip(args: &[&str]) -> TestResult {
    let status = Command::new("ip")
        .args(args)
        .stderr(Stdio::null())
        .status()?;
    if !status.success() {
        return Err(format!("ip {}: {status}", args.join(" ")).into());
    }
    Ok(())
}

/// A namespace holding `ns_ip`, reached from the host's `host_ip` over a veth pair; Janus
/// runs in it, stopped (and the namespace deleted) when dropped.
struct JanusInNamespace {
    ns: String,
    ns_ip: String,
    janus: Option<Child>,
    log: tempfile::TempDir,
}

impl JanusInNamespace {
    fn start(janus: &Path) -> TestResult<JanusInNamespace> {
        let id = std::process::id() % 10_000;
        let ns = format!("bjt{id}");
        let (host_if, ns_if) = (format!("bjh{id}"), format!("bjn{id}"));
        let subnet = format!("10.232.{}", id % 250);
        let (host_ip, ns_ip) = (format!("{subnet}.2"), format!("{subnet}.1"));
        let _ = ip(&["netns", "del", &ns]);
        ip(&["netns", "add", &ns])?;
        let mut running = JanusInNamespace {
            ns: ns.clone(),
            ns_ip: ns_ip.clone(),
            janus: None,
            log: tempfile::tempdir()?,
        };
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
        ])?;
        ip(&["link", "set", &ns_if, "netns", &ns])?;
        ip(&["addr", "add", &format!("{host_ip}/30"), "dev", &host_if])?;
        ip(&["link", "set", &host_if, "up"])?;
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{ns_ip}/30"),
            "dev",
            &ns_if,
        ])?;
        ip(&["-n", &ns, "link", "set", &ns_if, "up"])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        let conf = Path::new(env!("CARGO_MANIFEST_DIR")).join("loadtest/janus");
        let log = running.log.path().join("janus.log");
        let child = Command::new("ip")
            .args(["netns", "exec", &ns])
            .arg(janus)
            .arg("-F")
            .arg(&conf)
            .arg("-C")
            .arg(conf.join("janus.jcfg"))
            .arg("-L")
            .arg(&log)
            .args(["-N", "-d", "3", "-s", "0", "-r", "20000-20999"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        running.janus = Some(child);
        Ok(running)
    }

    fn url(&self) -> String {
        format!("http://{}:8088/janus", self.ns_ip)
    }

    fn pid(&self) -> Option<u32> {
        self.janus.as_ref().map(Child::id)
    }

    async fn answering(&self) -> TestResult {
        let deadline = Instant::now() + START_WAIT;
        let info = format!("{}/info", self.url());
        while Instant::now() < deadline {
            if let Ok(response) = reqwest::get(&info).await
                && response.status().is_success()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let log = std::fs::read_to_string(self.log.path().join("janus.log")).unwrap_or_default();
        Err(format!("Janus did not answer at {info} within {START_WAIT:?}:\n{log}").into())
    }
}

impl Drop for JanusInNamespace {
    fn drop(&mut self) {
        if let Some(mut child) = self.janus.take() {
            let _ = Command::new("kill")
                .args(["-s", "TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && !matches!(child.try_wait(), Ok(Some(_))) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = ip(&["netns", "del", &self.ns]);
    }
}

fn janus_config(url: String, server: ServerProcess) -> Config {
    Config {
        url,
        api_key: String::new(),
        visits: 2,
        duration: Duration::from_secs(6),
        ramp_per_sec: 10.0,
        video: Video::P360,
        simulcast: false,
        transport: Transport::Udp,
        peer: PeerKind::Str0m,
        target: Target::Janus,
        server,
        join_timeout: Duration::from_secs(20),
        impair: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_tester_runs_videoroom_visits_through_janus_and_counts_them_per_cpu_second()
-> TestResult {
    let Some(binary) = common::tool("BEDSIDE_TEST_JANUS", "janus") else {
        eprintln!("skipped: no janus (install Debian's janus or set BEDSIDE_TEST_JANUS)");
        return Ok(());
    };
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let janus = JanusInNamespace::start(&binary)?;
    janus.answering().await?;
    let pid = janus.pid().ok_or("Janus has no pid")?;
    let config = janus_config(janus.url(), ServerProcess::Pid(pid));
    let (_never, shutdown) = tokio::sync::watch::channel(false);
    let report = loadtest::run::run(&config, Arc::new(Live::default()), shutdown).await?;
    let summary = report.table();
    println!("{summary}");

    assert_eq!(report.visits.joined, 2, "{summary}");
    assert_eq!(report.peers.joined, 4, "{summary}");
    assert_eq!(report.peers.incomplete_media, 0, "{summary}");
    assert_eq!(report.visits.ended, 2, "every room destroyed: {summary}");
    assert_eq!(report.audio.streams, 4, "{summary}");
    assert_eq!(report.video.streams, 4, "{summary}");
    assert!(report.audio.loss_pct < 5.0, "{summary}");
    let efficiency = (report.server.as_ref())
        .and_then(|server| server.efficiency.as_ref())
        .ok_or_else(|| format!("no figures for Janus's process: {summary}"))?;
    assert_eq!(
        efficiency.forwarded_packets, None,
        "Janus has no Bedside metrics"
    );
    assert!(
        efficiency.received_packets > 0 && efficiency.received_pkts_per_core_s > 0.0,
        "{summary}"
    );

    // A participant sent to a room Janus does not have stops at once, saying which step
    // Janus refused (VideoRoom's 426, no such room), and sends nothing.
    let seen = Arc::new(Seen::default());
    let (_leave, leave) = tokio::sync::mpsc::channel(1);
    let (_stop, stop) = tokio::sync::watch::channel(false);
    let seat = Seat {
        janus: Janus::new(&janus.url())?,
        room: 4_000_000_001,
        me: 1,
        other: 2,
        deadline: Instant::now() + Duration::from_secs(10),
    };
    let media = Arc::new(RtpMedia::cut(&Media::builtin(Video::P360)?));
    let result = loadtest::janus::participant(seat, media, Arc::clone(&seen), leave, stop).await;
    assert!(result.is_err(), "joined a room that does not exist");
    assert_eq!(
        seen.failure.get().map(String::as_str),
        Some("janus event: error 426")
    );
    assert_eq!(
        seen.frames_sent.load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    Ok(())
}

#[tokio::test]
async fn what_the_janus_target_cannot_do_is_refused_before_anything_is_made() {
    for refused in [
        Config {
            peer: PeerKind::WebrtcRs,
            ..janus_config("http://127.0.0.1:9/janus".to_owned(), ServerProcess::None)
        },
        Config {
            simulcast: true,
            ..janus_config("http://127.0.0.1:9/janus".to_owned(), ServerProcess::None)
        },
        Config {
            impair: "rate=300kbit".parse().ok(),
            ..janus_config("http://127.0.0.1:9/janus".to_owned(), ServerProcess::None)
        },
    ] {
        let (_never, shutdown) = tokio::sync::watch::channel(false);
        let result = loadtest::run::run(&refused, Arc::new(Live::default()), shutdown).await;
        assert!(
            matches!(result, Err(RunError::Config(ref message)) if message.contains("--target janus")),
            "{:?}",
            result.map(|_| ())
        );
    }
}
