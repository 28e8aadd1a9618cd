//! How the visit domain's refusals read over HTTP: each [`VisitError`] is one problem code.

use crate::error::ApiError;
use crate::visit::VisitError;

impl From<VisitError> for ApiError {
    fn from(err: VisitError) -> Self {
        match err {
            VisitError::NotFound => ApiError::NotFound,
            VisitError::Cancelled => ApiError::VisitCancelled,
            VisitError::Ended => ApiError::VisitEnded,
            VisitError::LinkInvalid => ApiError::LinkInvalid,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::DbError;

    #[test]
    fn a_refusal_reads_the_same_in_the_audit_chain_and_over_http() {
        let every = [
            VisitError::NotFound,
            VisitError::Cancelled,
            VisitError::Ended,
            VisitError::LinkInvalid,
            VisitError::LinkExpired,
            VisitError::LinkUsed,
            VisitError::TooEarly {
                available_at: chrono::Utc::now(),
            },
            VisitError::Conflict("no"),
            VisitError::Removed,
            VisitError::Unavailable("down".into()),
            VisitError::Store(DbError::Timeout),
            VisitError::Store(DbError::RowNotFound),
        ];
        for error in every {
            let code = error.code();
            assert_eq!(ApiError::from(error).code(), code);
        }
    }
}
