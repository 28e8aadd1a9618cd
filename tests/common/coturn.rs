//! A real coturn `turnserver` on loopback, configured by docs/turnserver.conf — the file
//! operators are told to use — with its `[site]` lines given loopback values: REST
//! credentials from a random secret, UDP and TCP on one free port, TLS on another with a
//! certificate made for the test, relay ports from a small random range. Stopped with SIGTERM
//! when dropped.

use std::io::Write as _;
use std::net::{TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::TestResult;

/// The realm of every test server.
pub const REALM: &str = "bedside.test";
/// How long coturn may take to listen.
const START_WAIT: Duration = Duration::from_secs(10);
/// How long it may take to exit after SIGTERM before it is killed.
const STOP_WAIT: Duration = Duration::from_secs(5);
/// The keys of docs/turnserver.conf's `[site]` lines, which the tests set themselves.
const SITE_KEYS: [&str; 8] = [
    "static-auth-secret",
    "realm",
    "listening-port",
    "tls-listening-port",
    "cert",
    "pkey",
    "min-port",
    "max-port",
];
/// Relay ports per server: enough for the few allocations of one test.
const RELAY_PORTS: u16 = 200;

/// A running `turnserver`.
pub struct Coturn {
    /// Its shared secret (`turn.shared_secret`).
    pub secret: String,
    /// UDP and TCP listener port.
    pub port: u16,
    /// TLS listener port.
    pub tls_port: u16,
    /// The relay port range.
    pub relay_ports: std::ops::RangeInclusive<u16>,
    child: Child,
    dir: tempfile::TempDir,
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-s", "TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + STOP_WAIT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port free for both TCP and UDP right now.
fn free_port() -> TestResult<u16> {
    for _ in 0..50 {
        let tcp = TcpListener::bind("127.0.0.1:0")?;
        let port = tcp.local_addr()?.port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err("no port free for both TCP and UDP".into())
}

/// docs/turnserver.conf without its `[site]` lines, checking that those are exactly the keys
/// the tests set.
fn documented_config() -> TestResult<String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/turnserver.conf");
    let text = std::fs::read_to_string(&path)?;
    let mut kept = String::new();
    let mut site = false;
    let mut site_keys = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.is_empty() {
            site |= line.starts_with("# [site]");
            continue;
        }
        let key = line.split('=').next().unwrap_or(line);
        if site {
            site_keys.push(key.to_owned());
            site = false;
        } else {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    site_keys.sort();
    let mut expected = SITE_KEYS.map(str::to_owned).to_vec();
    expected.sort();
    if site_keys != expected {
        return Err(format!(
            "docs/turnserver.conf's [site] keys {site_keys:?} are not the ones the tests set {expected:?}"
        )
        .into());
    }
    Ok(kept)
}

impl Coturn {
    /// Starts a server, or `None` (with a note) when coturn is not installed — run the suite
    /// through `./scripts/test`, which installs it.
    pub fn start() -> TestResult<Option<Coturn>> {
        let Some(binary) = super::tool("BEDSIDE_TEST_TURNSERVER", "turnserver") else {
            eprintln!("skipped: needs coturn's turnserver: run through ./scripts/test");
            return Ok(None);
        };
        let dir = tempfile::tempdir()?;
        let certified = rcgen::generate_simple_self_signed(vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
        ])?;
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert, certified.cert.pem())?;
        std::fs::write(&key, certified.key_pair.serialize_pem())?;
        let secret = format!("{:032x}", rand::random::<u128>());
        let port = free_port()?;
        let tls_port = free_port()?;
        // Below Linux's ephemeral range (32768+), where port-0 sockets of other tests land.
        let first = 20_000 + rand::random::<u16>() % 50 * RELAY_PORTS;
        let relay_ports = first..=first + RELAY_PORTS - 1;
        let file = dir.path().join("turnserver.conf");
        let mut conf = std::fs::File::create(&file)?;
        write!(conf, "{}", documented_config()?)?;
        // The [site] values, then what only a loopback test needs: one address for listening
        // and relaying, loopback peers allowed (the SFU is on 127.0.0.1), state and log files
        // in the temporary directory, and a log line per allocation (`verbose`).
        writeln!(
            conf,
            "static-auth-secret={secret}\nrealm={REALM}\nlistening-port={port}\n\
             tls-listening-port={tls_port}\ncert={}\npkey={}\nmin-port={}\nmax-port={}\n\
             listening-ip=127.0.0.1\nrelay-ip=127.0.0.1\nallow-loopback-peers\n\
             userdb={}\npidfile={}\nlog-file={}\nsimple-log\nverbose",
            cert.display(),
            key.display(),
            relay_ports.start(),
            relay_ports.end(),
            dir.path().join("turndb").display(),
            dir.path().join("turnserver.pid").display(),
            dir.path().join("turn.log").display(),
        )?;
        drop(conf);
        let child = Command::new(binary)
            .arg("-c")
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let mut coturn = Coturn {
            secret,
            port,
            tls_port,
            relay_ports,
            child,
            dir,
        };
        coturn.wait_listening()?;
        Ok(Some(coturn))
    }

    fn wait_listening(&mut self) -> TestResult {
        let deadline = Instant::now() + START_WAIT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Err(format!("turnserver exited with {status}:\n{}", self.log()).into());
            }
            let up = |port| std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
            if up(self.port) && up(self.tls_port) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!("turnserver not listening:\n{}", self.log()).into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `turn:` over UDP.
    pub fn udp_url(&self) -> String {
        format!("turn:127.0.0.1:{}?transport=udp", self.port)
    }

    /// `turn:` over TCP.
    pub fn tcp_url(&self) -> String {
        format!("turn:127.0.0.1:{}?transport=tcp", self.port)
    }

    /// `turns:` (TLS over TCP), the certificate naming `localhost` and 127.0.0.1.
    pub fn tls_url(&self) -> String {
        format!("turns:localhost:{}?transport=tcp", self.tls_port)
    }

    /// What it has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("turn.log")).unwrap_or_default()
    }
}
