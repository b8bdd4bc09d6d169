//! The one mapping from domain errors to gRPC statuses, and the names of
//! validation failures.

use tonic::{Code, Status};

use crate::domain::{DomainError, token::ValidationFailure};

impl From<DomainError> for Status {
    fn from(error: DomainError) -> Self {
        match error {
            DomainError::InvalidArgument(message) => Status::invalid_argument(message),
            DomainError::InvalidCredentials | DomainError::InvalidRefreshToken => {
                Status::unauthenticated(error.to_string())
            }
            DomainError::Unauthenticated(message) => Status::unauthenticated(message),
            DomainError::PermissionDenied(message) => Status::permission_denied(message),
            DomainError::NotFound(message) => Status::not_found(message),
            DomainError::AlreadyExists(message) => Status::already_exists(message),
            DomainError::FailedPrecondition(message) => Status::failed_precondition(message),
            DomainError::OutOfRange(message) => Status::out_of_range(message),
            DomainError::ResourceExhausted { message, retry_after } => {
                let mut status = Status::resource_exhausted(message);
                if let Some(after) = retry_after
                    && let Ok(value) = after.as_secs().max(1).to_string().parse()
                {
                    status.metadata_mut().insert("retry-after", value);
                }
                status
            }
            DomainError::Store(e) => {
                tracing::error!(error = %e, "store failure");
                Status::new(Code::Unavailable, "storage is unavailable; the request was not applied, retry")
            }
            DomainError::Internal(detail) => {
                // The detail may name internals; the caller gets a generic line.
                tracing::error!(detail = %detail, "internal error");
                Status::internal("internal error")
            }
        }
    }
}

/// A short human description of a validation failure.
pub fn failure_text(failure: ValidationFailure) -> &'static str {
    match failure {
        ValidationFailure::Malformed => "malformed token",
        ValidationFailure::BadSignature => "bad signature",
        ValidationFailure::UnknownKey => "unknown signing key",
        ValidationFailure::Expired => "token expired",
        ValidationFailure::NotYetValid => "token not yet valid",
        ValidationFailure::WrongAudience => "wrong audience",
        ValidationFailure::WrongIssuer => "wrong issuer",
        ValidationFailure::TokenRevoked => "token revoked",
        ValidationFailure::SessionRevoked => "session revoked",
        ValidationFailure::SessionExpired => "session expired",
        ValidationFailure::UserDisabled => "user disabled",
    }
}

/// A metric label for a validation failure.
pub fn failure_label(failure: ValidationFailure) -> &'static str {
    match failure {
        ValidationFailure::Malformed => "malformed",
        ValidationFailure::BadSignature => "bad_signature",
        ValidationFailure::UnknownKey => "unknown_key",
        ValidationFailure::Expired => "expired",
        ValidationFailure::NotYetValid => "not_yet_valid",
        ValidationFailure::WrongAudience => "wrong_audience",
        ValidationFailure::WrongIssuer => "wrong_issuer",
        ValidationFailure::TokenRevoked => "token_revoked",
        ValidationFailure::SessionRevoked => "session_revoked",
        ValidationFailure::SessionExpired => "session_expired",
        ValidationFailure::UserDisabled => "user_disabled",
    }
}
