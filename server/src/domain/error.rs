//! The errors of the domain core. The gRPC adapter maps each variant to a
//! status code in exactly one place (`grpc::status`).

use std::time::Duration;

use super::port::StoreError;

/// Why a domain operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    /// A field is empty, oversized or malformed; the message names the field.
    #[error("{0}")]
    InvalidArgument(String),
    /// Wrong password, unknown user, disabled user: deliberately one message.
    #[error("invalid username or password")]
    InvalidCredentials,
    /// The refresh token is unknown, expired, revoked or already used.
    #[error("invalid or expired refresh token")]
    InvalidRefreshToken,
    /// The caller presented no usable bearer token.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller is known but may not do this.
    #[error("{0}")]
    PermissionDenied(String),
    /// The thing named does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The thing to create exists already.
    #[error("{0}")]
    AlreadyExists(String),
    /// The change is well-formed but the system is not in a state that allows
    /// it (e.g. it would leave no enabled admin); the message says why and
    /// what to do first.
    #[error("{0}")]
    FailedPrecondition(String),
    /// Too much work queued or too many failures; try again later.
    #[error("{message}")]
    ResourceExhausted {
        /// What ran out, for the caller.
        message: String,
        /// When a retry may succeed, if known.
        retry_after: Option<Duration>,
    },
    /// The store failed; the write was not acknowledged.
    #[error("store unavailable: {0}")]
    Store(#[from] StoreError),
    /// An invariant broke (a bug or corrupt data); details are logged.
    #[error("internal error: {0}")]
    Internal(String),
}

impl DomainError {
    /// An `InvalidArgument` naming the offending field.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::InvalidArgument(message.into())
    }
}
