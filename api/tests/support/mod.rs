//! Shared harness of the api integration tests: an [`App`] on a fresh data directory, its
//! router driven in-process with `tower::ServiceExt::oneshot`, request/response helpers that
//! know the problem format, a cast of staff, and a database fingerprint to prove that a
//! refused request changed nothing.
#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod aws;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use api::App;
use api::audit::{Actor, Entry};
use api::config::Config;
use api::store::Engine;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;
use tempfile::TempDir;
use tower::ServiceExt as _;

/// The address in-process requests come from unless [`Req::ip`] says otherwise.
pub const DEFAULT_PEER: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)), 40000);

/// Patient details used by the tests: distinctive strings that cannot appear by accident,
/// so a scan for them in logs, metrics or audit proves a leak.
pub mod phi {
    /// Patient full name.
    pub const NAME: &str = "Zebulon Quixotic-Marchbanks";
    /// Patient phone, E.164.
    pub const PHONE: &str = "+15557654321";
    /// The phone's digits without the plus sign.
    pub const PHONE_DIGITS: &str = "15557654321";
    /// Patient email.
    pub const EMAIL: &str = "zebulon.q@patient-mail.example";
    /// Reason for the visit.
    pub const COMPLAINT: &str = "persistent xylophonic cough since Tuesday";
    /// Everything above, for scanning.
    pub const ALL: [&str; 5] = [NAME, PHONE, PHONE_DIGITS, EMAIL, COMPLAINT];
}

/// One application on its own temporary data directory (and, when `BEDSIDE_TEST_DB=postgres`,
/// its own PostgreSQL database), with a tenant and its admin key.
pub struct TestApp {
    /// The application state (store, grants, metrics…).
    pub app: Arc<App>,
    /// The full router, with a [`MockConnectInfo`] peer of [`DEFAULT_PEER`].
    pub router: Router,
    /// The tenant created at start.
    pub tenant_id: String,
    /// Its admin API key.
    pub admin_key: String,
    /// The data directory (removed on drop).
    pub dir: TempDir,
    /// The test's own connection to the same database, for looking behind the API: the SQLite
    /// file, or PostgreSQL as the tables' owner (whom row-level security does not bind).
    pub db: AnyPool,
    /// Which engine the app runs on.
    pub engine: Engine,
}

/// The configuration every test starts from: defaults, with link and write limits raised
/// far out of the way (tests of the limits lower them again).
pub fn test_config() -> Config {
    let mut config = Config::default();
    config.limits.link_per_ip_per_minute = 100_000;
    config.limits.link_burst = 100_000;
    config.limits.writes_per_key_per_minute = 100_000;
    config.limits.writes_burst = 100_000;
    config
}

impl TestApp {
    /// An app with [`test_config`].
    pub async fn new() -> Self {
        Self::with_config(|_| {}).await
    }

    /// An app with [`test_config`] adjusted by `adjust`.
    pub async fn with_config(adjust: impl FnOnce(&mut Config)) -> Self {
        let mut config = test_config();
        adjust(&mut config);
        config.validate().expect("test configuration is valid");
        let dir = tempfile::tempdir().expect("temporary directory");
        let db_url = match pg::from_env() {
            Some(cluster) => {
                let database = cluster.create_database().await;
                config.database.url = cluster.app_url(&database);
                config.database.migrate_url = cluster.owner_url(&database);
                config.database.migrate_url.clone()
            }
            None => format!(
                "sqlite://{}",
                dir.path().join("data").join("bedside.db").display()
            ),
        };
        let app = App::open(config, &dir.path().join("data"))
            .await
            .expect("app opens");
        sqlx::any::install_default_drivers();
        let db = AnyPoolOptions::new()
            .max_connections(2)
            .connect(&db_url)
            .await
            .expect("the test's own database connection");
        let (tenant_id, key) = app
            .create_tenant("clinic", &Actor::local("test"))
            .await
            .expect("tenant");
        let router = api::http::router(app.clone()).layer(MockConnectInfo(DEFAULT_PEER));
        Self {
            engine: app.store.engine(),
            app,
            router,
            tenant_id,
            admin_key: key.expose().to_owned(),
            dir,
            db,
        }
    }

    /// Path of the SQLite database file.
    pub fn db_path(&self) -> std::path::PathBuf {
        self.dir.path().join("data").join("bedside.db")
    }

    /// Sends one request through the router in-process.
    pub async fn send(&self, req: Req) -> Resp {
        let response = self
            .router
            .clone()
            .oneshot(req.build())
            .await
            .expect("the router is infallible");
        Resp::read(response).await
    }

    /// Another tenant with its admin key.
    pub async fn new_tenant(&self, name: &str) -> (String, String) {
        let (id, key) = self
            .app
            .create_tenant(name, &Actor::local("test"))
            .await
            .expect("tenant");
        (id, key.expose().to_owned())
    }

    /// Creates a staff member through `POST /api/staff` with `admin_key`.
    pub async fn staff_with(&self, admin_key: &str, role: &str, name: &str) -> StaffMember {
        let resp = self
            .send(
                Req::post("/api/staff")
                    .key(admin_key)
                    .json(json!({"role": role, "display_name": name})),
            )
            .await;
        let body = resp.expect(StatusCode::CREATED);
        StaffMember {
            id: body["id"].as_str().expect("id").to_owned(),
            key: body["api_key"].as_str().expect("api_key").to_owned(),
        }
    }

    /// A scheduler, a clinician and a second clinician of the tenant.
    pub async fn cast(&self) -> Cast {
        let admin = self.admin_key.clone();
        Cast {
            scheduler: self.staff_with(&admin, "scheduler", "Sam Scheduler").await,
            clinician: self.staff_with(&admin, "clinician", "Meredith Grey").await,
            other_clinician: self.staff_with(&admin, "clinician", "Derek Shepherd").await,
        }
    }

    /// Creates a visit with `body` using `key`; panics unless 201.
    pub async fn create_visit(&self, key: &str, body: Value) -> Value {
        self.send(Req::post("/api/visits").key(key).json(body))
            .await
            .expect(StatusCode::CREATED)
    }

    /// Creates a visit of `clinician_id` at `at` (with [`phi`] patient details) and returns
    /// its id.
    pub async fn visit_at(&self, key: &str, clinician_id: &str, at: DateTime<Utc>) -> String {
        let visit = self.create_visit(key, visit_body(clinician_id, at)).await;
        visit["id"].as_str().expect("visit id").to_owned()
    }

    /// A visit an hour from now, scheduled by `cast`'s scheduler for its clinician, whose
    /// patient has been sent the link on `channels` (queued, not yet delivered); its id.
    pub async fn notified_visit(&self, cast: &Cast, channels: &[&str]) -> String {
        let visit = self
            .visit_at(
                &cast.scheduler.key,
                &cast.clinician.id,
                minutes_from_now(60),
            )
            .await;
        self.send(
            Req::post(&format!("/api/visits/{visit}/notify"))
                .key(&cast.scheduler.key)
                .json(json!({"channels": channels})),
        )
        .await
        .expect(StatusCode::ACCEPTED);
        visit
    }

    /// A visit at `at`, scheduled by `cast`'s scheduler for its clinician, with its links
    /// issued: its id and the links.
    pub async fn visit_with_links(&self, cast: &Cast, at: DateTime<Utc>) -> (String, Links) {
        let visit = self
            .visit_at(&cast.scheduler.key, &cast.clinician.id, at)
            .await;
        let links = self.links(&cast.scheduler.key, &visit).await;
        (visit, links)
    }

    /// Issues links for a visit; panics unless 201.
    pub async fn links(&self, key: &str, visit_id: &str) -> Links {
        let body = self
            .send(Req::post(&format!("/api/visits/{visit_id}/links")).key(key))
            .await
            .expect(StatusCode::CREATED);
        Links {
            patient: body["patient"]["code"].as_str().expect("code").to_owned(),
            clinician: body["clinician"]["code"].as_str().expect("code").to_owned(),
            body,
        }
    }

    /// `POST /api/token/redeem` with `code`.
    pub async fn redeem(&self, code: &str) -> Resp {
        self.send(Req::post("/api/token/redeem").json(json!({"code": code})))
            .await
    }

    /// `POST /api/visits/{visit_id}/start` with `code`, as a fresh device.
    pub async fn start(&self, visit_id: &str, code: &str) -> Resp {
        self.send(start_req(visit_id, code)).await
    }

    /// Everything the database holds except the audit chain, as one comparable string,
    /// plus the audit row count.
    pub async fn snapshot(&self) -> Snapshot {
        let hex = |column: &str| match self.engine {
            Engine::Sqlite => format!("hex({column})"),
            Engine::Postgres => format!("upper(encode({column}, 'hex'))"),
        };
        let visits = format!(
            "id || '|' || status || '|' || clinician_id || '|' || scheduled_at || '|' || duration_minutes \
             || '|' || waiting_room || '|' || updated_at || '|' || {} || '|' \
             || coalesce({}, '-') || '|' || coalesce({}, '-') || '|' \
             || coalesce({}, '-') || '|' || coalesce(started_at || '', '-') || '|' || coalesce(ended_at || '', '-')",
            hex("patient_name_ct"),
            hex("patient_phone_ct"),
            hex("patient_email_ct"),
            hex("chief_complaint_ct"),
        );
        let mut state = String::new();
        for (table, columns) in [
            ("tenants", "id"),
            ("staff", "id || '|' || role || '|' || display_name"),
            ("api_keys", "id || '|' || coalesce(revoked_at || '', '-')"),
            ("visits", visits.as_str()),
            ("participants", "id || '|' || visit_id"),
            (
                "links",
                "id || '|' || expires_at || '|' || coalesce(revoked_at || '', '-') || '|' \
                 || coalesce(redeemed_at || '', '-') || '|' || coalesce(participant_id, '-')",
            ),
            ("notifications", "id || '|' || status || '|' || attempts"),
        ] {
            let rows: Vec<String> =
                // Table and column names are the constants above, not input.
                sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                    "SELECT {columns} FROM {table} ORDER BY id"
                )))
                    .fetch_all(&self.db)
                    .await
                    .expect("snapshot query");
            state.push_str(&format!("{table}[{}]\n", rows.join(";")));
        }
        let audit_rows = self.count("SELECT COUNT(*) FROM audit").await;
        Snapshot { state, audit_rows }
    }

    /// Everything stored, as text to scan: the SQLite database and WAL files byte for byte,
    /// or on PostgreSQL every row of every table in its text form (the cluster's files are
    /// not ours to read).
    pub async fn stored_bytes(&self) -> String {
        match self.engine {
            Engine::Sqlite => {
                let mut bytes = Vec::new();
                for suffix in ["", "-wal"] {
                    let path = format!("{}{suffix}", self.db_path().display());
                    if let Ok(file) = std::fs::read(&path) {
                        bytes.extend(file);
                    }
                }
                String::from_utf8_lossy(&bytes).into_owned()
            }
            Engine::Postgres => {
                let tables: Vec<String> = sqlx::query_scalar(
                    "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
                )
                .fetch_all(&self.db)
                .await
                .expect("table names");
                let mut text = String::new();
                for table in tables {
                    // Names come from the catalog of the test's own database.
                    let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                        "SELECT t::text FROM \"{table}\" t"
                    )))
                    .fetch_all(&self.db)
                    .await
                    .expect("table rows");
                    text.push_str(&rows.join("\n"));
                }
                text
            }
        }
    }

    /// The single integer `sql` selects, read behind the API (no tenant scope applies).
    pub async fn count(&self, sql: &'static str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(&self.db)
            .await
            .unwrap_or_else(|err| panic!("{sql}: {err}"))
    }

    /// Every audit row of `tenant_id` in chain order, straight from the database.
    pub async fn audit_of(&self, tenant_id: &str) -> Vec<Entry> {
        type Columns = (
            i64,
            String,
            String,
            i64,
            String,
            String,
            Option<String>,
            String,
            Option<String>,
            Option<String>,
            Option<String>,
            String,
            String,
            String,
        );
        let rows: Vec<Columns> = sqlx::query_as(
            "SELECT seq, id, tenant_id, at, actor, event, visit_id, outcome, reason, ip_masked, \
             ua_hash, details, prev_hash, hash FROM audit WHERE tenant_id = $1 ORDER BY seq",
        )
        .bind(tenant_id)
        .fetch_all(&self.db)
        .await
        .expect("audit rows");
        rows.into_iter()
            .map(|r| Entry {
                seq: r.0,
                id: r.1,
                tenant_id: r.2,
                at: r.3,
                actor: r.4,
                event: r.5,
                visit_id: r.6,
                outcome: r.7,
                reason: r.8,
                ip_masked: r.9,
                ua_hash: r.10,
                details: r.11,
                prev_hash: r.12,
                hash: r.13,
            })
            .collect()
    }

    /// Audit rows of this app's tenant with `event`.
    pub async fn audit_events(&self, event: &str) -> Vec<Entry> {
        self.audit_of(&self.tenant_id)
            .await
            .into_iter()
            .filter(|e| e.event == event)
            .collect()
    }

    /// Number of visits stored (all tenants).
    pub async fn visit_count(&self) -> i64 {
        self.count("SELECT COUNT(*) FROM visits").await
    }
}

/// The body of a valid visit for `clinician_id` at `at`, with every [`phi`] field.
pub fn visit_body(clinician_id: &str, at: DateTime<Utc>) -> Value {
    json!({
        "clinician_id": clinician_id,
        "scheduled_at": rfc3339(at),
        "duration_minutes": 30,
        "patient": {"name": phi::NAME, "phone": phi::PHONE, "email": phi::EMAIL},
        "chief_complaint": phi::COMPLAINT,
    })
}

/// `at` as RFC 3339 with a `Z` offset.
pub fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Now, plus `minutes` (negative for the past).
pub fn minutes_from_now(minutes: i64) -> DateTime<Utc> {
    Utc::now() + Duration::minutes(minutes)
}

/// A start request with `code` for `visit_id`, from a device without a cookie.
pub fn start_req(visit_id: &str, code: &str) -> Req {
    Req::post(&format!("/api/visits/{visit_id}/start")).json(json!({"code": code}))
}

/// A staff member created through the API.
#[derive(Debug, Clone)]
pub struct StaffMember {
    /// Staff id.
    pub id: String,
    /// Their API key.
    pub key: String,
}

/// The staff most tests need besides the admin.
#[derive(Debug, Clone)]
pub struct Cast {
    /// Role scheduler.
    pub scheduler: StaffMember,
    /// Role clinician; holds the visits of most tests.
    pub clinician: StaffMember,
    /// Role clinician; must never see the first clinician's visits.
    pub other_clinician: StaffMember,
}

/// The two codes of `POST /api/visits/{id}/links`.
#[derive(Debug, Clone)]
pub struct Links {
    /// Patient code.
    pub patient: String,
    /// Clinician code.
    pub clinician: String,
    /// The whole answer.
    pub body: Value,
}

/// Database state outside the audit chain, and the audit row count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Every table but `audit`, row by row.
    pub state: String,
    /// Rows in `audit`.
    pub audit_rows: i64,
}

/// A request under construction.
pub struct Req {
    method: Method,
    path: String,
    headers: Vec<(header::HeaderName, String)>,
    body: Vec<u8>,
    peer: Option<SocketAddr>,
}

impl Req {
    /// A request with `method` to `path` (path and query).
    pub fn new(method: Method, path: &str) -> Self {
        Self {
            method,
            path: path.to_owned(),
            headers: Vec::new(),
            body: Vec::new(),
            peer: None,
        }
    }

    /// `GET path`.
    pub fn get(path: &str) -> Self {
        Self::new(Method::GET, path)
    }

    /// `POST path`.
    pub fn post(path: &str) -> Self {
        Self::new(Method::POST, path)
    }

    /// `PATCH path`.
    pub fn patch(path: &str) -> Self {
        Self::new(Method::PATCH, path)
    }

    /// `Authorization: Bearer key`.
    pub fn key(self, key: &str) -> Self {
        self.header(header::AUTHORIZATION, &format!("Bearer {key}"))
    }

    /// Any header.
    pub fn header(mut self, name: header::HeaderName, value: &str) -> Self {
        self.headers.push((name, value.to_owned()));
        self
    }

    /// A JSON body with `Content-Type: application/json`.
    pub fn json(self, value: Value) -> Self {
        self.raw("application/json", value.to_string().into_bytes())
    }

    /// A body of any bytes with `content_type`.
    pub fn raw(mut self, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        self.headers
            .push((header::CONTENT_TYPE, content_type.to_owned()));
        self.body = body.into();
        self
    }

    /// The client address the server sees (instead of [`DEFAULT_PEER`]).
    pub fn ip(mut self, ip: &str) -> Self {
        self.peer = Some(SocketAddr::new(ip.parse().expect("an IP address"), 50123));
        self
    }

    /// The `http::Request`.
    pub fn build(self) -> Request<Body> {
        let mut builder = Request::builder().method(self.method).uri(self.path);
        for (name, value) in self.headers {
            builder = builder.header(name, HeaderValue::from_str(&value).expect("header value"));
        }
        let mut request = builder.body(Body::from(self.body)).expect("request");
        if let Some(peer) = self.peer {
            request.extensions_mut().insert(ConnectInfo(peer));
        }
        request
    }
}

/// A response, body read.
#[derive(Debug)]
pub struct Resp {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body bytes.
    pub body: Bytes,
}

impl Resp {
    /// Reads a router response.
    pub async fn read(response: axum::response::Response) -> Self {
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        Self {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|err| panic!("not JSON ({err}): {}", self.text()))
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the status and returns the JSON body.
    #[track_caller]
    pub fn expect(&self, status: StatusCode) -> Value {
        assert_eq!(self.status, status, "unexpected answer: {}", self.text());
        if self.body.is_empty() {
            Value::Null
        } else {
            self.json()
        }
    }

    /// Asserts an RFC 9457 problem with `status` and `code`; returns the problem document.
    #[track_caller]
    pub fn problem(&self, status: StatusCode, code: &str) -> Value {
        assert_eq!(self.status, status, "unexpected answer: {}", self.text());
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "a problem document: {}",
            self.text()
        );
        let problem = self.json();
        assert_eq!(problem["code"], code, "problem code: {problem}");
        assert_eq!(
            problem["status"],
            status.as_u16(),
            "problem status: {problem}"
        );
        assert_eq!(
            problem["type"],
            format!("urn:bedside:problem:{code}"),
            "problem type: {problem}"
        );
        problem
    }

    /// Asserts `400 invalid_request` naming `field` among its errors.
    #[track_caller]
    pub fn invalid(&self, field: &str) -> Value {
        let problem = self.problem(StatusCode::BAD_REQUEST, "invalid_request");
        let errors = problem["errors"].as_array().expect("errors array");
        assert!(
            errors.iter().any(|e| e["field"] == field),
            "expected an error on {field}: {problem}"
        );
        problem
    }

    /// The value of the device cookie this response sets, if any.
    pub fn device_cookie(&self) -> Option<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|c| c.strip_prefix("bedside_device="))
            .map(|rest| rest.split(';').next().unwrap_or_default().to_owned())
    }
}

/// A real HTTP server on an ephemeral 127.0.0.1 port, serving the router with the peer
/// address of each connection (as `bedside serve` does). Stops when dropped.
pub struct Server {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Starts serving `app`'s router (without any mock peer address).
    pub async fn start(app: &Arc<App>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind an ephemeral port");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let service =
            api::http::router(app.clone()).into_make_service_with_connect_info::<SocketAddr>();
        let task = tokio::spawn(async move {
            axum::serve(listener, service).await.expect("server runs");
        });
        Self { base, task }
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An HTTP client for [`Server`]; `cookies` keeps a cookie store like a browser.
pub fn http_client(cookies: bool) -> reqwest::Client {
    // reqwest is built without a bundled TLS provider; plain HTTP needs none, but the
    // builder wants one installed.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    reqwest::Client::builder()
        .cookie_store(cookies)
        .user_agent("bedside-tests/1.0")
        .build()
        .expect("client")
}

/// A log sink for a `tracing` subscriber: every formatted line lands in memory.
#[derive(Debug, Clone, Default)]
pub struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl LogBuffer {
    /// Everything written so far.
    pub fn contents(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log buffer")).into_owned()
    }
}

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The PostgreSQL cluster of `scripts/pg`, used when `BEDSIDE_TEST_DB=postgres`: every
/// [`TestApp`] gets a database of its own, so tests stay independent and parallel.
pub mod pg {
    use sqlx::Connection as _;

    /// Addresses of the cluster (see scripts/pg for what each role may do).
    pub struct Cluster {
        admin_url: String,
        owner_base: String,
        app_base: String,
    }

    /// The cluster, when the tests are asked to run on PostgreSQL. Asked for but not
    /// described is a setup error, not a silent fallback to SQLite.
    pub fn from_env() -> Option<Cluster> {
        if std::env::var("BEDSIDE_TEST_DB").ok()?.as_str() != "postgres" {
            return None;
        }
        let var = |name: &str| {
            std::env::var(name).unwrap_or_else(|_| {
                panic!("BEDSIDE_TEST_DB=postgres needs {name} (scripts/pg sets it)")
            })
        };
        Some(Cluster {
            admin_url: var("BEDSIDE_TEST_PG_ADMIN_URL"),
            owner_base: var("BEDSIDE_TEST_PG_OWNER_URL_BASE"),
            app_base: var("BEDSIDE_TEST_PG_APP_URL_BASE"),
        })
    }

    impl Cluster {
        /// Creates an empty database owned by the owner role; returns its name.
        pub async fn create_database(&self) -> String {
            let name = format!("t_{}", uuid::Uuid::new_v4().simple());
            let mut admin = sqlx::PgConnection::connect(&self.admin_url)
                .await
                .expect("connect to the test cluster");
            // The name is generated above from hex digits only.
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&mut admin)
                .await
                .expect("CREATE DATABASE");
            name
        }

        /// URL of the tables' owner in `database` (migrations; the test's own look inside).
        pub fn owner_url(&self, database: &str) -> String {
            format!("{}/{database}", self.owner_base)
        }

        /// URL of the application role in `database` (row-level security applies).
        pub fn app_url(&self, database: &str) -> String {
            format!("{}/{database}", self.app_base)
        }
    }
}
