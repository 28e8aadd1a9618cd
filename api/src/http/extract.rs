//! Request extractors that turn every bad input into a problem document: strict JSON bodies,
//! query strings, API-key authentication (with the per-key write limit) and client info.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::connect_info::MockConnectInfo;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode, header};
use serde::de::DeserializeOwned;

use crate::App;
use crate::audit::{self, Actor, NewEntry};
use crate::error::ApiError;
use crate::model::StaffRole;
use crate::store;
use crate::tokens::{ApiKeySecret, secret_hash};

/// A JSON body parsed strictly: unknown fields, wrong types and trailing data are
/// `invalid_request` naming the field; an oversized body is `payload_too_large`.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

/// Parses a JSON document, naming the offending field on error.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let path = err.path().to_string();
        let field = if path == "." { "body".to_owned() } else { path };
        ApiError::invalid(field, err.into_inner().to_string())
    })?;
    de.end()
        .map_err(|_| ApiError::invalid("body", "trailing data after the JSON document"))?;
    Ok(value)
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|mime| {
                let mime = mime.trim();
                mime == "application/json" || mime.ends_with("+json")
            });
        if !json {
            return Err(ApiError::invalid(
                "body",
                "Content-Type must be application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(body_rejection)?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// A body that could not be read, as a problem: over the limit is `payload_too_large`.
pub fn body_rejection(rejection: BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge
    } else {
        ApiError::invalid("body", "the body could not be read")
    }
}

/// A query string parsed strictly.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Query::<T>::try_from_uri(&parts.uri)
            .map(|Query(q)| ApiQuery(q))
            .map_err(|rejection| ApiError::invalid("query", rejection.body_text()))
    }
}

/// Who is calling from where: the peer address and User-Agent.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    /// Peer IP (unspecified when unknown, as in in-process tests).
    pub ip: IpAddr,
    /// User-Agent header, empty when absent.
    pub user_agent: String,
}

impl ClientInfo {
    fn from_parts(parts: &Parts) -> Self {
        // Like axum's `ConnectInfo` extractor: the real peer, else a `MockConnectInfo`
        // layered by an embedding (or a test), else unknown.
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip())
            .or_else(|| {
                parts
                    .extensions
                    .get::<MockConnectInfo<SocketAddr>>()
                    .map(|MockConnectInfo(addr)| addr.ip())
            })
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        Self { ip, user_agent }
    }

    /// An audit actor with this client's masked network context.
    pub fn actor(&self, actor: String) -> Actor {
        Actor {
            actor,
            ip_masked: Some(audit::ip_prefix(self.ip)),
            ua_hash: Some(audit::ua_hash(&self.user_agent)),
        }
    }

    /// The device-binding UA hash (full SHA-256).
    pub fn ua_digest(&self) -> Vec<u8> {
        secret_hash(&self.user_agent)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ClientInfo {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self::from_parts(parts))
    }
}

/// An authenticated staff API key.
#[derive(Debug, Clone)]
pub struct Staff {
    /// Key id.
    pub key_id: String,
    /// Tenant of the key.
    pub tenant_id: String,
    /// Role of the key.
    pub role: StaffRole,
    /// Staff member of the key (always set for clinicians).
    pub staff_id: Option<String>,
    /// Audit actor for this request.
    pub actor: Actor,
}

impl Staff {
    /// Refuses unless the key has one of `roles`.
    pub fn require(&self, roles: &[StaffRole]) -> Result<(), ApiError> {
        if roles.contains(&self.role) {
            Ok(())
        } else {
            Err(ApiError::Forbidden)
        }
    }

    /// Whether this key is the clinician `clinician_id`.
    pub fn is_clinician(&self, clinician_id: &str) -> bool {
        self.role == StaffRole::Clinician && self.staff_id.as_deref() == Some(clinician_id)
    }
}

impl FromRequestParts<Arc<App>> for Staff {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, ApiError> {
        let fail = |reason: &str| {
            app.metrics.auth_failures.with_label_values(&[reason]).inc();
            ApiError::Unauthenticated
        };
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| fail("missing"))?;
        if !presented.starts_with(ApiKeySecret::PREFIX) || presented.len() > 128 {
            return Err(fail("malformed"));
        }
        let secret = ApiKeySecret::from_presented(presented);
        let key = store::staff::key_by_hash(&mut app.store.read().await?, &secret.hash())
            .await?
            .ok_or_else(|| fail("unknown"))?;
        let client = ClientInfo::from_parts(parts);
        let actor = client.actor(format!("apikey:{}", key.id));
        if key.revoked_at.is_some() {
            // The limiter bounds how many audit rows a revoked key can cause.
            if app.limits.check_write(&key.id).is_ok() {
                let entry =
                    NewEntry::refused(&key.tenant_id, &actor, "auth.failed", None, "revoked key")
                        .with_details(serde_json::json!({"key_id": key.id}));
                app.audit_alone(entry).await?;
            }
            return Err(fail("revoked"));
        }
        let role = StaffRole::parse(&key.role).ok_or_else(|| fail("bad_role"))?;
        if !matches!(parts.method, Method::GET | Method::HEAD) {
            app.limits.check_write(&key.id).inspect_err(|_| {
                app.metrics
                    .rate_limited
                    .with_label_values(&["api_key"])
                    .inc();
            })?;
        }
        Ok(Self {
            key_id: key.id,
            tenant_id: key.tenant_id,
            role,
            staff_id: key.staff_id,
            actor,
        })
    }
}
