//! The REST calls that take a visit from nothing to two session grants, and back to `ended`.

use serde_json::{Value, json};

use crate::peer::IceServer;

/// A REST call failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No answer (connection refused, timeout, body unreadable).
    #[error("{step}: {source}")]
    Transport {
        /// Which call.
        step: &'static str,
        /// Why.
        source: reqwest::Error,
    },
    /// An answer other than 2xx.
    #[error("{step}: HTTP {status} {code}")]
    Status {
        /// Which call.
        step: &'static str,
        /// The HTTP status.
        status: u16,
        /// The problem document's `code`, or empty.
        code: String,
    },
    /// A 2xx answer without a field it must have.
    #[error("{step}: answer without {field}")]
    Missing {
        /// Which call.
        step: &'static str,
        /// The field.
        field: &'static str,
    },
}

impl ApiError {
    /// A short, low-cardinality reason for the report (`create_visit: 429 rate_limited`).
    #[must_use]
    pub fn reason(&self) -> String {
        match self {
            ApiError::Transport { step, source } if source.is_timeout() => {
                format!("{step}: timeout")
            }
            ApiError::Transport { step, .. } => format!("{step}: no answer"),
            ApiError::Status { step, status, code } => format!("{step}: {status} {code}"),
            ApiError::Missing { step, field } => format!("{step}: no {field}"),
        }
    }
}

/// A staff member's API key.
#[derive(Debug, Clone)]
pub struct Key(String);

impl Key {
    /// Wraps a key.
    #[must_use]
    pub fn new(key: impl Into<String>) -> Self {
        Key(key.into())
    }
}

/// The Bedside REST API at one base URL.
#[derive(Debug, Clone)]
pub struct Api {
    base: String,
    http: reqwest::Client,
}

/// A visit whose participants both hold a grant, and the time each `start` call was made.
#[derive(Debug, Clone)]
pub struct StartedVisit {
    /// Visit id.
    pub id: String,
    /// The visit's clinician's key (for `end`).
    pub clinician_key: Key,
}

/// One participant's `start` answer.
#[derive(Debug, Clone)]
pub struct Grant {
    /// The session grant.
    pub grant: String,
    /// Where `/ws` is.
    pub signaling_url: String,
    /// The answer's `media.ice_servers` (TURN with credentials when the server has TURN).
    pub ice_servers: Vec<IceServer>,
}

fn text(value: &Value, step: &'static str, field: &'static str) -> Result<String, ApiError> {
    value
        .as_str()
        .map(str::to_owned)
        .ok_or(ApiError::Missing { step, field })
}

impl Api {
    /// The API under `base` (`http://127.0.0.1:8080`), with one connection pool for all calls.
    ///
    /// # Errors
    /// When the HTTP client cannot be built (no TLS provider).
    pub fn new(base: &str) -> Result<Api, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .pool_max_idle_per_host(64)
            .build()?;
        Ok(Api {
            base: base.trim_end_matches('/').to_owned(),
            http,
        })
    }

    /// The base URL.
    #[must_use]
    pub fn base(&self) -> &str {
        &self.base
    }

    async fn post(
        &self,
        step: &'static str,
        key: Option<&Key>,
        path: &str,
        body: Value,
    ) -> Result<Value, ApiError> {
        let mut request = self.http.post(format!("{}{path}", self.base)).json(&body);
        if let Some(key) = key {
            request = request.bearer_auth(&key.0);
        }
        let transport = |source| ApiError::Transport { step, source };
        let response = request.send().await.map_err(transport)?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(ApiError::Status {
                step,
                status: status.as_u16(),
                code: body["code"].as_str().unwrap_or_default().to_owned(),
            });
        }
        Ok(body)
    }

    /// Creates a clinician (its own staff member and key, as a clinic has one per visit in
    /// flight) and a visit with it starting now, and issues the visit's links. Returns the
    /// visit and the patient's link code.
    ///
    /// # Errors
    /// When a call is refused (`admin` must be an admin key) or unanswered.
    pub async fn create_visit(
        &self,
        admin: &Key,
        n: usize,
    ) -> Result<(StartedVisit, String), ApiError> {
        let staff = self
            .post(
                "create_staff",
                Some(admin),
                "/api/staff",
                json!({"role": "clinician", "display_name": format!("Dr. Load {n}")}),
            )
            .await?;
        let clinician_key = Key(text(&staff["api_key"], "create_staff", "api_key")?);
        let visit = self
            .post(
                "create_visit",
                Some(admin),
                "/api/visits",
                json!({
                    "clinician_id": staff["id"],
                    "scheduled_at": chrono::Utc::now().to_rfc3339(),
                    "duration_minutes": 60,
                    "patient": {"name": format!("Load Patient {n}")},
                }),
            )
            .await?;
        let id = text(&visit["id"], "create_visit", "id")?;
        let links = self
            .post(
                "issue_links",
                Some(admin),
                &format!("/api/visits/{id}/links"),
                json!({}),
            )
            .await?;
        let code = text(&links["patient"]["code"], "issue_links", "patient.code")?;
        Ok((StartedVisit { id, clinician_key }, code))
    }

    /// The patient's `start` with its link code.
    ///
    /// # Errors
    /// When the call is refused or unanswered.
    pub async fn start_patient(&self, visit: &StartedVisit, code: &str) -> Result<Grant, ApiError> {
        let answer = self
            .post(
                "start",
                None,
                &format!("/api/visits/{}/start", visit.id),
                json!({"code": code, "display_name": "Patient"}),
            )
            .await?;
        grant(&answer, "start")
    }

    /// The clinician's `start-authenticated`.
    ///
    /// # Errors
    /// When the call is refused or unanswered.
    pub async fn start_clinician(&self, visit: &StartedVisit) -> Result<Grant, ApiError> {
        let answer = self
            .post(
                "start_authenticated",
                Some(&visit.clinician_key),
                &format!("/api/visits/{}/start-authenticated", visit.id),
                json!({}),
            )
            .await?;
        grant(&answer, "start_authenticated")
    }

    /// Ends the visit as its clinician.
    ///
    /// # Errors
    /// When the call is refused or unanswered.
    pub async fn end(&self, visit: &StartedVisit) -> Result<(), ApiError> {
        self.post(
            "end",
            Some(&visit.clinician_key),
            &format!("/api/visits/{}/end", visit.id),
            json!({}),
        )
        .await
        .map(|_| ())
    }

    /// The Prometheus text at `/metrics`, or `None` when it is not served there.
    pub async fn metrics(&self) -> Option<String> {
        let response = self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.text().await.ok()
    }
}

fn grant(answer: &Value, step: &'static str) -> Result<Grant, ApiError> {
    let ice_servers = match answer["media"].get("ice_servers") {
        None | Some(Value::Null) => Vec::new(),
        Some(servers) => {
            serde_json::from_value(servers.clone()).map_err(|_| ApiError::Missing {
                step,
                field: "well-formed media.ice_servers",
            })?
        }
    };
    Ok(Grant {
        grant: text(&answer["grant"], step, "grant")?,
        signaling_url: text(
            &answer["media"]["signaling_url"],
            step,
            "media.signaling_url",
        )?,
        ice_servers,
    })
}
