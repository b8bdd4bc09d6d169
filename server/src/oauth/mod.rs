//! The OAuth 2.0 endpoints of the HTTP listener, for the standard tools
//! (API gateways, client libraries) that speak them: `POST /oauth2/token`
//! (the client credentials grant, RFC 6749 §4.4), `POST /oauth2/introspect`
//! (RFC 7662), `POST /oauth2/revoke` (RFC 7009), and the metadata that
//! names them (RFC 8414, [`metadata`]).
//!
//! Each endpoint reads a bounded form ([`form`]), the caller's client
//! authentication ([`client_auth`]), asks the domain core, and answers
//! JSON that no cache keeps, or an RFC 6749 §5.2 error ([`error`]). Every
//! answer is counted in `sigil_oauth_requests_total{endpoint, method,
//! outcome}`, all three from closed sets.

pub(crate) mod client_auth;
mod error;
pub(crate) mod form;
mod introspect;
pub(crate) mod metadata;
mod revoke;
mod token;

use std::sync::Arc;

use axum::{
    Router,
    extract::{DefaultBodyLimit, State},
    response::Response,
    routing::post,
};

use self::{client_auth::AuthMethod, error::OAuthError};
use crate::{
    config::PublicUrl,
    domain::{DomainError, Identity},
    telemetry::METRICS,
};

/// The endpoints' paths, relative to the public URL.
pub(crate) struct Endpoints {
    /// The token endpoint.
    pub token: &'static str,
    /// The introspection endpoint.
    pub introspect: &'static str,
    /// The revocation endpoint.
    pub revoke: &'static str,
}

/// Where the endpoints are served.
pub(crate) const ENDPOINTS: Endpoints =
    Endpoints { token: "oauth2/token", introspect: "oauth2/introspect", revoke: "oauth2/revoke" };

/// What every endpoint works with.
struct OAuthState {
    identity: Arc<Identity>,
    /// The token endpoint's URL, which a client assertion may name as its
    /// `aud` (RFC 7523 §3), as the metadata publishes it.
    token_endpoint: String,
}

impl OAuthState {
    /// The Basic and Bearer challenges' realm: the issuer, as for `/authz`.
    fn realm(&self) -> &str {
        &self.identity.settings().issuer
    }
}

/// The OAuth routes over `identity`, with their URLs under `public_url`.
pub(crate) fn router(identity: Arc<Identity>, public_url: &PublicUrl) -> Router {
    let state = Arc::new(OAuthState { token_endpoint: public_url.join(ENDPOINTS.token), identity });
    Router::new()
        .route(&format!("/{}", ENDPOINTS.token), post(token::grant).fallback(method_not_allowed))
        .route(&format!("/{}", ENDPOINTS.introspect), post(introspect::introspect).fallback(method_not_allowed))
        .route(&format!("/{}", ENDPOINTS.revoke), post(revoke::revoke).fallback(method_not_allowed))
        // A chunked body meets this bound as it streams in; an announced
        // length beyond it is refused before reading (`form`).
        .layer(DefaultBodyLimit::max(form::MAX_BODY_BYTES))
        .with_state(state)
}

async fn method_not_allowed(State(state): State<Arc<OAuthState>>) -> Response {
    OAuthError::MethodNotAllowed.into_response(state.realm())
}

/// The endpoint label of the metrics.
#[derive(Clone, Copy)]
enum Endpoint {
    Token,
    Introspect,
    Revoke,
}

impl Endpoint {
    const fn label(self) -> &'static str {
        match self {
            Self::Token => "token",
            Self::Introspect => "introspect",
            Self::Revoke => "revoke",
        }
    }
}

/// Counts an answer of `endpoint` to a caller authenticating with
/// `method` (`None` before the method was known) and turns it into the
/// response.
fn answer(
    state: &OAuthState,
    endpoint: Endpoint,
    method: Option<AuthMethod>,
    result: Result<Response, OAuthError>,
) -> Response {
    let method = method.map_or("none", AuthMethod::label);
    match result {
        Ok(response) => {
            METRICS.count_oauth_request(endpoint.label(), method, "ok");
            response
        }
        Err(error) => {
            METRICS.count_oauth_request(endpoint.label(), method, error.code());
            error.into_response(state.realm())
        }
    }
}

/// The OAuth error of a domain failure.
fn from_domain(error: DomainError) -> OAuthError {
    match error {
        DomainError::InvalidClient => OAuthError::invalid_client("client authentication failed"),
        DomainError::InvalidScope(text) => OAuthError::InvalidScope(text),
        DomainError::InvalidArgument(text) | DomainError::OutOfRange(text) => OAuthError::InvalidRequest(text),
        DomainError::ResourceExhausted { message, retry_after } => {
            OAuthError::TooManyAttempts { description: message, retry_after }
        }
        DomainError::Store(e) => {
            tracing::error!(error = %e, "store failure");
            OAuthError::Unavailable("storage is unavailable; the request was not applied, retry".into())
        }
        other => {
            // Mapped like gRPC's (its message may name internals): logged
            // there, a generic line here.
            tracing::error!(error = %crate::domain::error::Report(&other), "OAuth request failed");
            OAuthError::Internal
        }
    }
}
