//! The errors of the domain core. The gRPC adapter maps each variant to a
//! status code in exactly one place (`grpc::status`).
//!
//! An error that another error caused keeps it as its `source`, and its own
//! `Display` says only its own part: whoever prints it walks the chain
//! ([`Report`] here, anyhow's `{:#}` in `main`), so each cause is said once.

use std::{error::Error, fmt, time::Duration};

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
    /// Unknown client, wrong or expired secret, bad or replayed assertion,
    /// disabled client: deliberately one message (RFC 6749 `invalid_client`).
    #[error("invalid client credentials")]
    InvalidClient,
    /// A client asked for a scope or audience it is not allowed (RFC 6749
    /// `invalid_scope`); the message says which part, never the client's secret.
    #[error("{0}")]
    InvalidScope(String),
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
    /// The request names a position beyond what exists (a resume point
    /// beyond the newest event); the message says where to resume.
    #[error("{0}")]
    OutOfRange(String),
    /// Too much work queued or too many failures; try again later.
    #[error("{message}")]
    ResourceExhausted {
        /// What ran out, for the caller.
        message: String,
        /// When a retry may succeed, if known.
        retry_after: Option<Duration>,
    },
    /// The store failed; the write was not acknowledged.
    #[error("store unavailable")]
    Store(#[from] StoreError),
    /// An invariant broke (a bug or corrupt data); details are logged.
    #[error("internal error: {what}")]
    Internal {
        /// What broke.
        what: String,
        /// The error that said why, if one did.
        #[source]
        cause: Option<Box<dyn Error + Send + Sync>>,
    },
}

impl DomainError {
    /// An `InvalidArgument` naming the offending field.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::InvalidArgument(message.into())
    }

    /// An `Internal` error saying what broke.
    pub fn internal(what: impl Into<String>) -> Self {
        Self::Internal { what: what.into(), cause: None }
    }

    /// An `Internal` error saying what broke, and the error that said why.
    pub fn internal_because(what: impl Into<String>, cause: impl Into<Box<dyn Error + Send + Sync>>) -> Self {
        Self::Internal { what: what.into(), cause: Some(cause.into()) }
    }
}

/// An error and its causes on one line, `what: why: deeper why`: how log
/// lines and messages print an error whose causes are its `source` chain.
pub struct Report<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(next) = cause {
            write!(f, ": {next}")?;
            cause = next.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_says_each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, "bad header");
        let error = DomainError::internal_because("key k1 is unreadable", io);
        assert_eq!(error.to_string(), "internal error: key k1 is unreadable", "Display is its own part only");
        assert_eq!(Report(&error).to_string(), "internal error: key k1 is unreadable: bad header");
        let store = DomainError::from(StoreError::Backend("disk full".into()));
        assert_eq!(Report(&store).to_string(), "store unavailable: disk full");
        assert_eq!(
            Report(&DomainError::internal("no active signing key")).to_string(),
            "internal error: no active signing key"
        );
    }
}
