//! The one mapping from domain errors to gRPC statuses, and the names of
//! validation failures.

use sigil_proto::pb;
use tonic::{Code, Status};

use crate::domain::{DomainError, error::Report, token::ValidationFailure};

impl From<DomainError> for Status {
    fn from(error: DomainError) -> Self {
        match error {
            DomainError::InvalidArgument(message) => Status::invalid_argument(message),
            DomainError::InvalidCredentials | DomainError::InvalidRefreshToken | DomainError::InvalidClient => {
                Status::unauthenticated(error.to_string())
            }
            DomainError::Unauthenticated(message) => Status::unauthenticated(message),
            DomainError::PermissionDenied(message) | DomainError::InvalidScope(message) => {
                Status::permission_denied(message)
            }
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
            DomainError::Internal { what, cause } => {
                // The detail may name internals; the caller gets a generic line.
                match cause {
                    Some(cause) => {
                        tracing::error!(detail = %format_args!("{what}: {}", Report(&*cause)), "internal error")
                    }
                    None => tracing::error!(detail = %what, "internal error"),
                }
                Status::internal("internal error")
            }
        }
    }
}

/// Every name a validation failure goes by on the API, one row per failure:
/// the `ValidateResponse` value, the description in a status message and
/// the `outcome` label of the validations metric. A bearer token refused
/// for any of them is `UNAUTHENTICATED` whatever the failure (see
/// `grpc::bearer_refused`), so the status code is not a column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FailureNames {
    /// Its `sigil.v1.ValidationFailure` value.
    pub proto: pb::ValidationFailure,
    /// A short human description, as status messages say it.
    pub text: &'static str,
    /// Its metric label.
    pub label: &'static str,
}

impl FailureNames {
    /// The names of `failure`: the rules crate names it once (text and
    /// label) and maps it to the protobuf value.
    pub(crate) fn of(failure: ValidationFailure) -> Self {
        Self { proto: failure.into(), text: failure.text(), label: failure.label() }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn each_failure_has_its_own_proto_value_label_and_text() {
        let names = ValidationFailure::ALL.map(FailureNames::of);
        assert_eq!(names.iter().map(|n| n.proto).collect::<HashSet<_>>().len(), names.len());
        assert_eq!(names.iter().map(|n| n.label).collect::<HashSet<_>>().len(), names.len());
        assert_eq!(names.iter().map(|n| n.text).collect::<HashSet<_>>().len(), names.len());
        assert!(names.iter().all(|n| n.proto != pb::ValidationFailure::Unspecified), "UNSPECIFIED means valid");
    }

    #[test]
    fn the_metric_label_is_the_proto_name_without_its_prefix() {
        // Dashboards and clients read the same failure under both names.
        for failure in ValidationFailure::ALL {
            let names = FailureNames::of(failure);
            let proto = names.proto.as_str_name().strip_prefix("VALIDATION_FAILURE_").map(str::to_lowercase);
            assert_eq!(proto.as_deref(), Some(names.label), "{failure:?}");
        }
    }
}
