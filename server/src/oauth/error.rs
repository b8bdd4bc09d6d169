//! How the OAuth endpoints answer: JSON bodies that no cache keeps
//! (RFC 6749 §5.1: `Cache-Control: no-store`, `Pragma: no-cache`), and the
//! error answers of RFC 6749 §5.2 — one [`OAuthError`] per way a request can
//! fail, each with its status, its `error` code and a description that
//! says what to fix (never a token, a secret, or which of an unknown
//! client and a wrong secret it was).

use std::time::Duration;

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};

/// Why an OAuth request was refused.
#[derive(Debug)]
pub(crate) enum OAuthError {
    /// A malformed request: missing, repeated or unusable parameters.
    InvalidRequest(String),
    /// The body is larger than the endpoint reads.
    BodyTooLarge,
    /// A method other than POST.
    MethodNotAllowed,
    /// Client authentication failed or was missing: 401 with a
    /// `WWW-Authenticate: Basic` challenge, whichever method the client
    /// used. RFC 6749 §5.2 requires it when the client used HTTP Basic and
    /// allows the 401 "to indicate which HTTP authentication schemes are
    /// supported" otherwise; RFC 9110 §15.5.2 requires a challenge on every
    /// 401. The text says what to fix, the same for an unknown client and a
    /// wrong secret.
    InvalidClient(String),
    /// A `grant_type` other than `client_credentials`.
    UnsupportedGrantType,
    /// A scope that is malformed, or beyond what the client may ask for.
    InvalidScope(String),
    /// An authenticated client that may not use this endpoint
    /// (introspection without the `introspect` role): 403.
    UnauthorizedClient(String),
    /// A bearer token that is not a valid admin token of this server.
    InvalidToken,
    /// A valid bearer token without the role the endpoint needs.
    InsufficientScope(String),
    /// Too many failed authentications for this client: retry later.
    TooManyAttempts {
        /// What to do.
        description: String,
        /// When to retry.
        retry_after: Option<Duration>,
    },
    /// The store cannot take writes now; another instance may.
    Unavailable(String),
    /// A fault of this server (logged where it happened).
    Internal,
}

impl OAuthError {
    /// An `invalid_request` saying `description`.
    pub(crate) fn invalid_request(description: impl Into<String>) -> Self {
        Self::InvalidRequest(description.into())
    }

    /// An `invalid_client` saying `description`.
    pub(crate) fn invalid_client(description: impl Into<String>) -> Self {
        Self::InvalidClient(description.into())
    }

    /// The RFC 6749 §5.2 (or RFC 6750 §3.1) `error` code.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            Self::InvalidRequest(_) | Self::BodyTooLarge | Self::MethodNotAllowed => "invalid_request",
            Self::InvalidClient(_) => "invalid_client",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::InvalidScope(_) => "invalid_scope",
            Self::UnauthorizedClient(_) => "unauthorized_client",
            Self::InvalidToken => "invalid_token",
            Self::InsufficientScope(_) => "insufficient_scope",
            // RFC 6749 has no code for these; its registry's
            // `temporarily_unavailable` is what clients retry on.
            Self::TooManyAttempts { .. } | Self::Unavailable(_) => "temporarily_unavailable",
            Self::Internal => "server_error",
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            Self::InvalidRequest(_) | Self::UnsupportedGrantType | Self::InvalidScope(_) => StatusCode::BAD_REQUEST,
            Self::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::InvalidClient(_) | Self::InvalidToken => StatusCode::UNAUTHORIZED,
            Self::InsufficientScope(_) | Self::UnauthorizedClient(_) => StatusCode::FORBIDDEN,
            Self::TooManyAttempts { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn description(&self) -> String {
        match self {
            Self::InvalidRequest(text)
            | Self::InvalidScope(text)
            | Self::UnauthorizedClient(text)
            | Self::InsufficientScope(text)
            | Self::Unavailable(text) => text.clone(),
            Self::InvalidClient(description) | Self::TooManyAttempts { description, .. } => description.clone(),
            Self::BodyTooLarge => {
                format!("the request body is larger than {} bytes", super::form::MAX_BODY_BYTES)
            }
            Self::MethodNotAllowed => "this endpoint takes POST only".into(),
            Self::UnsupportedGrantType => "grant_type must be client_credentials, the only grant served here".into(),
            Self::InvalidToken => "the bearer token is not a valid access token of this server".into(),
            Self::Internal => "internal error; see the server log".into(),
        }
    }

    /// The answer with the error's extra header (challenge, `Allow`,
    /// `Retry-After`), where `realm` names the Basic realm.
    pub(crate) fn into_response(self, realm: &str) -> Response {
        let body = serde_json::json!({ "error": self.code(), "error_description": self.description() });
        let mut response = uncached_json(self.status(), &body);
        let extra = match &self {
            Self::InvalidClient(_) => Some((header::WWW_AUTHENTICATE, challenge("Basic", realm, None))),
            Self::InvalidToken => Some((header::WWW_AUTHENTICATE, challenge("Bearer", realm, Some("invalid_token")))),
            Self::InsufficientScope(_) => {
                Some((header::WWW_AUTHENTICATE, challenge("Bearer", realm, Some("insufficient_scope"))))
            }
            Self::MethodNotAllowed => Some((header::ALLOW, HeaderValue::from_static("POST"))),
            Self::TooManyAttempts { retry_after: Some(wait), .. } => {
                Some((header::RETRY_AFTER, HeaderValue::from(wait.as_secs().max(1))))
            }
            _ => None,
        };
        if let Some((name, value)) = extra {
            response.headers_mut().insert(name, value);
        }
        response
    }
}

/// A `WWW-Authenticate` challenge of `scheme` in `realm` (the configured
/// issuer, quoted: a quote or backslash in it is escaped, anything that is
/// not visible ASCII dropped, so the header is always valid).
fn challenge(scheme: &str, realm: &str, error: Option<&str>) -> HeaderValue {
    let mut quoted = String::with_capacity(realm.len());
    for c in realm.chars().filter(|c| c.is_ascii_graphic() || *c == ' ') {
        if matches!(c, '"' | '\\') {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    let mut value = format!("{scheme} realm=\"{quoted}\"");
    if let Some(error) = error {
        value.push_str(&format!(", error=\"{error}\""));
    }
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("Basic"))
}

/// A JSON answer that no cache or history keeps (RFC 6749 §5.1).
pub(crate) fn uncached_json(status: StatusCode, body: &serde_json::Value) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("application/json")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (header::PRAGMA, HeaderValue::from_static("no-cache")),
        ],
        body.to_string(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_realm_with_quotes_or_controls_still_makes_a_valid_challenge() {
        let value = challenge("Basic", "sig\"il\\\n\u{7f}é", None);
        assert_eq!(value.to_str().ok(), Some("Basic realm=\"sig\\\"il\\\\\""));
        let value = challenge("Bearer", "https://sigil.example.com/", Some("invalid_token"));
        assert_eq!(value.to_str().ok(), Some("Bearer realm=\"https://sigil.example.com/\", error=\"invalid_token\""));
    }

    #[test]
    fn every_invalid_client_answer_is_a_401_with_the_basic_challenge() {
        let response = OAuthError::invalid_client("whatever the method").into_response("sigil");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let challenge = response.headers().get(header::WWW_AUTHENTICATE).and_then(|v| v.to_str().ok());
        assert_eq!(challenge, Some("Basic realm=\"sigil\""));
    }
}
