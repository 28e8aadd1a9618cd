//! A real `bedside serve` child process on loopback, for tests of what only a process shows:
//! signals, exit status, a crash and a restart on the same data directory.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Rest, TestResult};

/// How long a start may take before the test gives up.
const START_WAIT: Duration = Duration::from_secs(30);

/// A `bedside serve` child and its API; killed if the test ends first.
pub struct Serve {
    /// The process.
    pub child: Child,
    /// Its API as one client sees it.
    pub rest: Rest,
    /// Everything it has written to stderr (its log), line by line.
    stderr: Arc<Mutex<String>>,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    /// Starts the binary on `data` with the environment `env` (SFU on ephemeral loopback
    /// ports) and waits until it listens. `admin_key` is the key of an existing data
    /// directory; without one, the key the first start prints is read.
    pub fn start(
        data: &Path,
        env: &[(&str, String)],
        admin_key: Option<String>,
    ) -> TestResult<Serve> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_bedside"))
            .arg("--data-dir")
            .arg(data)
            .args([
                "serve",
                "--udp",
                "127.0.0.1:0",
                "--announce-ip",
                "127.0.0.1",
                "--http",
                &format!("127.0.0.1:{port}"),
            ])
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let mut serve = Serve {
            child,
            rest: Rest::new(format!("http://127.0.0.1:{port}"), String::new())?,
            stderr: Arc::default(),
        };
        // Both pipes are drained to the end, so the child never blocks on (or loses) one.
        let (key_tx, key_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(key) = line.split_whitespace().find(|w| w.starts_with("bsk_")) {
                    let _ = key_tx.send(key.to_owned());
                }
            }
        });
        let (listening_tx, listening_rx) = std::sync::mpsc::channel();
        let log = Arc::clone(&serve.stderr);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("listening on") {
                    let _ = listening_tx.send(());
                }
                if let Ok(mut log) = log.lock() {
                    log.push_str(&line);
                    log.push('\n');
                }
            }
        });
        serve.rest.admin_key = match admin_key {
            Some(key) => key,
            None => key_rx.recv_timeout(START_WAIT)?,
        };
        listening_rx.recv_timeout(START_WAIT)?;
        Ok(serve)
    }

    /// What the process has written to stderr so far: its log.
    pub fn log(&self) -> String {
        match self.stderr.lock() {
            Ok(log) => log.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Sends the process signal `name` (`TERM`, `KILL`…).
    pub fn signal(&self, name: &str) -> TestResult {
        let sent = Command::new("kill")
            .args(["-s", name, &self.child.id().to_string()])
            .status()?;
        if !sent.success() {
            return Err(format!("kill -s {name} failed").into());
        }
        Ok(())
    }

    /// Waits up to `within` for the process to exit; its status.
    pub async fn exited(&mut self, within: Duration) -> TestResult<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                return Err(format!("still running after {within:?}").into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// `bedside audit verify` on `data`: whether every chain holds, and what it printed.
pub fn audit_verify(data: &Path) -> TestResult<(bool, String)> {
    let verified = Command::new(env!("CARGO_BIN_EXE_bedside"))
        .arg("--data-dir")
        .arg(data)
        .args(["audit", "verify"])
        .output()?;
    Ok((
        verified.status.success(),
        String::from_utf8_lossy(&verified.stdout).into_owned(),
    ))
}
