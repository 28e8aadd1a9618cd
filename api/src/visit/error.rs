use chrono::{DateTime, Utc};

use crate::store::DbError;

/// Why the visit domain refused or could not carry out an act. Entry points map it to their
/// own vocabulary (an HTTP problem in `crate::http`, an error frame in signaling).
#[derive(Debug, thiserror::Error)]
pub enum VisitError {
    /// No such visit or participant in the caller's tenant.
    #[error("not found")]
    NotFound,
    /// The visit was cancelled.
    #[error("the visit was cancelled")]
    Cancelled,
    /// The visit has ended.
    #[error("the visit has ended")]
    Ended,
    /// The code names no link (which reveals nothing).
    #[error("the link is not valid")]
    LinkInvalid,
    /// The link's window has passed or it was replaced.
    #[error("the link expired")]
    LinkExpired,
    /// The link was already used on another device.
    #[error("the link was already used")]
    LinkUsed,
    /// Before the join window opens.
    #[error("too early")]
    TooEarly {
        /// When the visit can be joined.
        available_at: DateTime<Utc>,
    },
    /// The visit's state does not allow the act.
    #[error("{0}")]
    Conflict(&'static str),
    /// The clinician removed this participant from the visit for good.
    #[error("removed from the visit")]
    Removed,
    /// A media backend is down or not enabled on this node; nothing was consumed.
    #[error("media backend unavailable: {0}")]
    Unavailable(String),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] DbError),
}

impl VisitError {
    /// The stable reason code of a refusal, as audit rows and metrics record it (the same
    /// words as the API's problem codes).
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound => "not_found",
            Self::Cancelled => "visit_cancelled",
            Self::Ended => "visit_ended",
            Self::LinkInvalid => "link_invalid",
            Self::LinkExpired => "link_expired",
            Self::LinkUsed => "link_used",
            Self::TooEarly { .. } => "too_early",
            Self::Conflict(_) => "conflict",
            Self::Removed => "forbidden",
            Self::Unavailable(_) => "unavailable",
            Self::Store(error) if error.is_unavailable() => "unavailable",
            Self::Store(_) => "internal",
        }
    }
}
