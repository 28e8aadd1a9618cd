//! How the visit domain's refusals read over HTTP: each [`VisitError`] is one problem code.

use crate::error::ApiError;
use crate::visit::VisitError;

impl From<VisitError> for ApiError {
    fn from(err: VisitError) -> Self {
        match err {
            VisitError::NotFound => ApiError::NotFound,
            VisitError::Cancelled => ApiError::VisitCancelled,
            VisitError::Ended => ApiError::VisitEnded,
            VisitError::LinkExpired => ApiError::LinkExpired,
            VisitError::LinkUsed => ApiError::LinkUsed,
            VisitError::TooEarly { available_at } => ApiError::TooEarly { available_at },
            VisitError::Conflict(why) => ApiError::Conflict(why),
            VisitError::Removed => ApiError::Forbidden,
            VisitError::Unavailable(why) => ApiError::Unavailable(why),
            VisitError::Store(err) => err.into(),
        }
    }
}
