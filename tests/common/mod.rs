//! `bedside serve`'s components in-process on ephemeral ports, and the REST calls that take a
//! visit to the point where its participants hold session grants; [`call`] runs a call
//! between two webrtc-rs peers from the `loadtest` crate; [`coturn`] runs a TURN server.

// Every test binary compiles these helpers and each uses a different subset of them.
#![allow(dead_code)]

pub mod call;
pub mod chime;
pub mod coturn;
pub mod process;

use std::net::SocketAddr;

use serde_json::{Value, json};

/// An external program a test runs: `$env` when set (`scripts/test` names what it installed,
/// so a missing one fails), else the first `name` on `PATH`.
pub fn tool(env: &str, name: &str) -> Option<std::path::PathBuf> {
    if let Some(path) = std::env::var_os(env) {
        return Some(path.into());
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
}

/// Errors of test helpers, with their context in the message.
pub type TestResult<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// A node serving the api and `/ws` on 127.0.0.1 (HTTP port 0), with its SFU workers on
/// UDP port 0 announcing 127.0.0.1 — wired by `bedside::node` exactly as `bedside serve`.
pub struct Server {
    /// Its API, as one client sees it (`base`, `admin_key` and the REST helpers through
    /// `Deref`).
    pub rest: Rest,
    /// The UDP address of each SFU worker, worker `i` at index `i`.
    pub udp: Vec<SocketAddr>,
    /// The node's data directory.
    pub data: tempfile::TempDir,
    node: bedside::node::Node,
    serving: tokio::task::JoinHandle<()>,
}

impl std::ops::Deref for Server {
    type Target = Rest;

    fn deref(&self) -> &Rest {
        &self.rest
    }
}

impl std::ops::DerefMut for Server {
    fn deref_mut(&mut self) -> &mut Rest {
        &mut self.rest
    }
}

/// A scheduled visit and the grants its two participants got from `start`.
pub struct Visit {
    /// Visit id.
    pub id: String,
    /// The clinician's API key.
    pub clinician_key: String,
    /// The patient's link code.
    pub patient_code: String,
    /// The patient's `start` answer (via its link code).
    pub patient: Value,
    /// The clinician's `start-authenticated` answer.
    pub clinician: Value,
}

/// The sum of the samples in Prometheus text `metrics` whose line starts with `name` (a
/// metric name, with `{` to leave out longer names sharing its prefix) and contains `filter`.
pub fn metric_sum(metrics: &str, name: &str, filter: &str) -> f64 {
    metrics
        .lines()
        .filter(|line| line.starts_with(name) && line.contains(filter))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A JSON string value, or an error naming what it was instead.
pub fn text(value: &Value) -> TestResult<String> {
    Ok(value
        .as_str()
        .ok_or_else(|| format!("not a string: {value}"))?
        .to_owned())
}

impl Server {
    /// Starts a node with `limits` for its signaling sockets.
    pub async fn start(limits: signaling::Limits) -> TestResult<Server> {
        Self::start_in(limits, tempfile::tempdir()?, |_| {}).await
    }

    /// Starts a node with `limits`, its configuration adjusted by `configure` (for example
    /// [`chime::ChimeFake::configure`]).
    pub async fn start_with(
        limits: signaling::Limits,
        configure: impl FnOnce(&mut api::config::Config),
    ) -> TestResult<Server> {
        Self::start_in(limits, tempfile::tempdir()?, configure).await
    }

    /// Starts a node on `data` with the configuration adjusted by `adjust`, registered in the
    /// cluster when its database is PostgreSQL. Its `admin_key` is empty when the database
    /// already had a tenant (a second node).
    pub async fn start_in(
        limits: signaling::Limits,
        data: tempfile::TempDir,
        adjust: impl FnOnce(&mut api::config::Config),
    ) -> TestResult<Server> {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let mut config = api::config::Config::default();
        config.sfu.udp = "127.0.0.1:0".parse()?;
        config.sfu.announce_ip = Some("127.0.0.1".parse()?);
        config.sfu.workers = 2;
        // As `bedside serve` does: bind first, so the signaling URL names the real port.
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        config.http.addr = listener.local_addr()?;
        adjust(&mut config);
        config.validate()?;
        let node = bedside::node::Node::start(config, data.path(), limits).await?;
        let admin_key = match &node.created {
            Some((_, key)) => key.expose().to_owned(),
            None => String::new(),
        };
        assert!(
            node.udp
                .iter()
                .all(|a| a.ip().is_loopback() && a.port() != 0)
        );
        let udp = node.udp.clone();
        let base = format!("http://{}", listener.local_addr()?);
        let http = node.http();
        let serving = tokio::spawn(async move {
            let _ = http.serve(listener, None, axum_server::Handle::new()).await;
        });
        Ok(Server {
            rest: Rest::new(base, admin_key)?,
            udp,
            data,
            node,
            serving,
        })
    }

    /// Stops the node the way a crash would: no more heartbeats or HTTP, no deregistration.
    pub fn crash(&self) {
        self.node.abort();
        self.serving.abort();
    }

    /// Stops the node cleanly: it deregisters from the cluster.
    pub async fn stop(self) {
        self.serving.abort();
        self.node.stop().await;
    }

    /// Stops the node cleanly and starts a new one on the same data directory (same database
    /// and signing key, new ports), with `limits`. The HTTP client (and its cookies: the same
    /// device) carries over.
    pub async fn restart(self, limits: signaling::Limits) -> TestResult<Server> {
        self.serving.abort();
        self.node.stop().await;
        let mut next = Server::start_in(limits, self.data, |_| {}).await?;
        next.rest.admin_key = self.rest.admin_key;
        next.rest.http = self.rest.http;
        Ok(next)
    }

    /// The node's signaling hub.
    pub fn hub(&self) -> &std::sync::Arc<signaling::Hub> {
        &self.node.hub
    }
}

/// A node's REST API and `/ws` at `base`, as one HTTP client — one device, by its cookies —
/// with the bootstrap tenant's admin key sees them.
pub struct Rest {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// The bootstrap tenant's admin API key.
    pub admin_key: String,
    http: reqwest::Client,
}

impl Rest {
    /// The API at `base`, with a client of its own.
    pub fn new(base: String, admin_key: String) -> TestResult<Rest> {
        Ok(Rest {
            base,
            admin_key,
            http: reqwest::Client::builder().cookie_store(true).build()?,
        })
    }

    /// The `/ws` URL.
    pub fn ws_url(&self) -> String {
        format!("{}/ws", self.base.replacen("http", "ws", 1))
    }

    /// POSTs `body` (with `key` as bearer if given); the JSON answer of a 2xx, else an error.
    pub async fn post(&self, key: Option<&str>, path: &str, body: Value) -> TestResult<Value> {
        let (status, body) = self.post_any(key, path, body).await?;
        if !(200..300).contains(&status) {
            return Err(format!("POST {path}: {status} {body}").into());
        }
        Ok(body)
    }

    /// POSTs `body` to `path` (with `key` as bearer when given); the status and the JSON
    /// answer, whatever the status.
    pub async fn post_any(
        &self,
        key: Option<&str>,
        path: &str,
        body: Value,
    ) -> TestResult<(u16, Value)> {
        let mut request = self.http.post(format!("{}{path}", self.base)).json(&body);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await?))
    }

    /// Ends `visit_id` over the API with `key` (`POST /api/visits/{id}/end`).
    pub async fn end_visit(&self, key: &str, visit_id: &str) -> TestResult<Value> {
        self.post(Some(key), &format!("/api/visits/{visit_id}/end"), json!({}))
            .await
    }

    /// GETs `path` with `key`; the JSON answer of a 2xx, else an error.
    pub async fn get(&self, key: &str, path: &str) -> TestResult<Value> {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(key)
            .send()
            .await?;
        Ok(response.error_for_status()?.json().await?)
    }

    /// GETs `path` without credentials; the body of a 2xx as text, else an error.
    pub async fn get_text(&self, path: &str) -> TestResult<String> {
        let response = self.http.get(format!("{}{path}", self.base)).send().await?;
        Ok(response.error_for_status()?.text().await?)
    }

    /// Creates a clinician and a visit (waiting room on) starting now, issues its links,
    /// starts the patient with its code and the clinician with its API key.
    pub async fn visit(&self) -> TestResult<Visit> {
        self.visit_with(json!({})).await
    }

    /// As [`Server::visit`], with the members of `extra` added to the visit's body (for
    /// example `{"media_backend": "chime"}`).
    pub async fn visit_with(&self, extra: Value) -> TestResult<Visit> {
        let admin = self.admin_key.as_str();
        let staff = self
            .post(
                Some(admin),
                "/api/staff",
                json!({"role": "clinician", "display_name": "Dr. Ada Lovelace"}),
            )
            .await?;
        let clinician_key = text(&staff["api_key"])?;
        let mut body = json!({
            "clinician_id": staff["id"],
            "scheduled_at": chrono::Utc::now().to_rfc3339(),
            "duration_minutes": 30,
            "patient": {"name": "Pat Example"},
        });
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        let waiting_room = body["waiting_room"].as_bool().unwrap_or(true);
        let visit = self.post(Some(admin), "/api/visits", body).await?;
        assert_eq!(visit["waiting_room"], json!(waiting_room));
        let id = text(&visit["id"])?;
        let links = self
            .post(Some(admin), &format!("/api/visits/{id}/links"), json!({}))
            .await?;
        let patient = self
            .post(
                None,
                &format!("/api/visits/{id}/start"),
                json!({"code": links["patient"]["code"]}),
            )
            .await?;
        let clinician = self
            .post(
                Some(&clinician_key),
                &format!("/api/visits/{id}/start-authenticated"),
                json!({}),
            )
            .await?;
        Ok(Visit {
            id,
            clinician_key,
            patient_code: text(&links["patient"]["code"])?,
            patient,
            clinician,
        })
    }

    /// The audit events recorded for a visit.
    pub async fn audit_events(&self, visit_id: &str) -> TestResult<Vec<String>> {
        let audit = self
            .get(
                &self.admin_key,
                &format!("/api/audit?visit_id={visit_id}&limit=200"),
            )
            .await?;
        Ok(audit["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|row| row["event"].as_str().map(str::to_owned))
            .collect())
    }

    /// The audit events of a visit once every one of `wanted` is among them (signaling audits
    /// after the fact, off the socket's path), or what there was after 3 s.
    pub async fn audit_events_with(
        &self,
        visit_id: &str,
        wanted: &[&str],
    ) -> TestResult<Vec<String>> {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(3);
        loop {
            let events = self.audit_events(visit_id).await?;
            let complete = wanted.iter().all(|w| events.iter().any(|e| e == w));
            if complete || tokio::time::Instant::now() >= deadline {
                return Ok(events);
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}
