//! The one error type of the HTTP API, rendered as RFC 9457 `application/problem+json`
//! with a stable machine-readable `code` (see docs/api.md for the table).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

/// One invalid input field: where it is and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    /// JSON path of the field (`patient.phone`), or `body` for the whole document.
    pub field: String,
    /// What is wrong, in words an integrator can act on.
    pub message: String,
}

impl FieldError {
    /// Builds a field error.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Everything a route can refuse with. Each variant has one status and one `code`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed or invalid input; nothing was written.
    #[error("invalid request")]
    InvalidRequest(Vec<FieldError>),
    /// No, bad, revoked or expired credential.
    #[error("unauthenticated")]
    Unauthenticated,
    /// Authenticated but not allowed.
    #[error("forbidden")]
    Forbidden,
    /// Before the join window opens.
    #[error("too early")]
    TooEarly {
        /// When the link becomes usable.
        available_at: DateTime<Utc>,
    },
    /// Unknown, or belonging to another tenant (existence is never revealed).
    #[error("not found")]
    NotFound,
    /// The code does not name any link.
    #[error("link invalid")]
    LinkInvalid,
    /// The visit's state does not allow the request.
    #[error("conflict: {0}")]
    Conflict(&'static str),
    /// The link's window has passed or it was replaced.
    #[error("link expired")]
    LinkExpired,
    /// The link was already used on another device.
    #[error("link used")]
    LinkUsed,
    /// The visit was cancelled.
    #[error("visit cancelled")]
    VisitCancelled,
    /// The visit has ended.
    #[error("visit ended")]
    VisitEnded,
    /// Body over the size limit.
    #[error("payload too large")]
    PayloadTooLarge,
    /// Over a rate limit or quota.
    #[error("rate limited")]
    RateLimited {
        /// Seconds until a retry can succeed.
        retry_after_secs: u64,
    },
    /// A dependency (database, KMS, …) is down; nothing was consumed.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A bug or an unexpected failure; details are logged, never returned.
    #[error("internal: {0}")]
    Internal(String),
}

impl ApiError {
    /// A single-field `invalid_request`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidRequest(vec![FieldError::new(field, message)])
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthenticated => StatusCode::UNAUTHORIZED,
            Self::Forbidden | Self::TooEarly { .. } => StatusCode::FORBIDDEN,
            Self::NotFound | Self::LinkInvalid => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::LinkExpired | Self::LinkUsed | Self::VisitCancelled | Self::VisitEnded => {
                StatusCode::GONE
            }
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidRequest(_) => "invalid_request",
            Self::Unauthenticated => "unauthenticated",
            Self::Forbidden => "forbidden",
            Self::TooEarly { .. } => "too_early",
            Self::NotFound => "not_found",
            Self::LinkInvalid => "link_invalid",
            Self::Conflict(_) => "conflict",
            Self::LinkExpired => "link_expired",
            Self::LinkUsed => "link_used",
            Self::VisitCancelled => "visit_cancelled",
            Self::VisitEnded => "visit_ended",
            Self::PayloadTooLarge => "payload_too_large",
            Self::RateLimited { .. } => "rate_limited",
            Self::Unavailable(_) => "unavailable",
            Self::Internal(_) => "internal",
        }
    }

    fn title(&self) -> &'static str {
        match self {
            Self::InvalidRequest(_) => "The request is not valid.",
            Self::Unauthenticated => "A valid credential is required.",
            Self::Forbidden => "This credential may not do that.",
            Self::TooEarly { .. } => "This link is not usable yet.",
            Self::NotFound => "Not found.",
            Self::LinkInvalid => "This is not a valid link.",
            Self::Conflict(_) => "The visit's state does not allow this.",
            Self::LinkExpired => "This link has expired.",
            Self::LinkUsed => "This link was already used on another device.",
            Self::VisitCancelled => "This visit was cancelled.",
            Self::VisitEnded => "This visit has ended.",
            Self::PayloadTooLarge => "The request body is too large.",
            Self::RateLimited { .. } => "Too many requests; retry later.",
            Self::Unavailable(_) => "A dependency is unavailable; nothing was changed.",
            Self::Internal(_) => "An internal error occurred.",
        }
    }
}

/// The problem document as serialised (documented in the OpenAPI schema).
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// `urn:bedside:problem:<code>`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short human summary.
    pub title: String,
    /// HTTP status.
    pub status: u16,
    /// Stable machine-readable code.
    pub code: String,
    /// Extra detail, when there is any to give.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Field errors of an `invalid_request`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<FieldError>>,
    /// For `too_early`: when the link becomes usable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub available_at: Option<DateTime<Utc>>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let detail = match &self {
            Self::Conflict(why) => Some((*why).to_owned()),
            Self::Internal(why) => {
                tracing::error!(error = %why, "internal error");
                None
            }
            Self::Unavailable(why) => {
                tracing::warn!(error = %why, "dependency unavailable");
                None
            }
            _ => None,
        };
        let problem = Problem {
            kind: format!("urn:bedside:problem:{}", self.code()),
            title: self.title().to_owned(),
            status: status.as_u16(),
            code: self.code().to_owned(),
            detail,
            errors: match &self {
                Self::InvalidRequest(errors) => Some(errors.clone()),
                _ => None,
            },
            available_at: match &self {
                Self::TooEarly { available_at } => Some(*available_at),
                _ => None,
            },
        };
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Self::RateLimited { retry_after_secs } = self {
            headers.insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after_secs.max(1)),
            );
        }
        response
    }
}

impl From<crate::store::DbError> for ApiError {
    fn from(err: crate::store::DbError) -> Self {
        if err.is_unavailable() {
            Self::Unavailable(err.to_string())
        } else {
            Self::Internal(err.to_string())
        }
    }
}

/// Result alias for route handlers and the store.
pub type ApiResult<T> = Result<T, ApiError>;
