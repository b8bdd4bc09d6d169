//! A tower layer for tonic servers and axum routers: every request must
//! carry `authorization: Bearer <access token>` that the [`Verifier`]
//! accepts; its claims go into the request extensions as
//! `Arc<SignedToken>`.
//!
//! Refusals say what to do, in the caller's protocol (a request whose
//! `content-type` is `application/grpc…` gets a gRPC status, any other an
//! HTTP status with an RFC 6750 challenge):
//!
//! | case | gRPC | HTTP |
//! |---|---|---|
//! | no bearer token | `UNAUTHENTICATED` | 401, `WWW-Authenticate: Bearer` |
//! | more than one `authorization` header | `INVALID_ARGUMENT` | 400, `Bearer error="invalid_request"` |
//! | token refused | `UNAUTHENTICATED` | 401, `Bearer error="invalid_token"` |
//! | valid, but not for the required audience, or without a required role | `PERMISSION_DENIED` | 403, `Bearer error="insufficient_scope"` |
//! | the verifier is stale (and no fallback answered) | `UNAVAILABLE` | 503, `Retry-After: 1` |

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use futures::future::BoxFuture;
use http::{HeaderValue, Request, Response, StatusCode, header};
use sigil_token_rules::{SignedToken, ValidationFailure};
use tower::{Layer, Service};

use crate::{Refusal, Verifier};

/// What a request must prove besides a valid token.
#[derive(Default)]
struct Policy {
    audience: Option<String>,
    any_role: Vec<String>,
}

/// The layer; see the [module docs](self).
#[derive(Clone)]
pub struct VerifierLayer {
    verifier: Arc<Verifier>,
    policy: Arc<Policy>,
}

impl VerifierLayer {
    /// Requires a token `verifier` accepts.
    pub fn new(verifier: Arc<Verifier>) -> Self {
        Self { verifier, policy: Arc::new(Policy::default()) }
    }

    /// Also requires `audience` in the token's `aud`.
    pub fn require_audience(self, audience: impl Into<String>) -> Self {
        let any_role = self.policy.any_role.clone();
        Self { policy: Arc::new(Policy { audience: Some(audience.into()), any_role }), ..self }
    }

    /// Also requires at least one of `roles`.
    pub fn require_any_role<R: Into<String>>(self, roles: impl IntoIterator<Item = R>) -> Self {
        let audience = self.policy.audience.clone();
        Self { policy: Arc::new(Policy { audience, any_role: roles.into_iter().map(Into::into).collect() }), ..self }
    }
}

impl<S> Layer<S> for VerifierLayer {
    type Service = VerifierService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        VerifierService { inner, verifier: self.verifier.clone(), policy: self.policy.clone() }
    }
}

/// The service the layer wraps around another.
#[derive(Clone)]
pub struct VerifierService<S> {
    inner: S,
    verifier: Arc<Verifier>,
    policy: Arc<Policy>,
}

/// Why the layer refused a request.
enum Denial {
    NoBearer,
    /// Several `authorization` headers: which one the service behind (or a
    /// proxy) acts on is not the layer's to guess, so none is vouched for.
    SeveralAuthorizations,
    Invalid(ValidationFailure),
    Forbidden(&'static str),
    Stale,
}

impl<S, B, R> Service<Request<B>> for VerifierService<S>
where
    S: Service<Request<B>, Response = Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
    R: Default + 'static,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        // The clone that was driven to ready is the one to call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let grpc = is_grpc(&request);
        let token = bearer_of(&request).map(|token| token.map(str::to_owned));
        let verifier = self.verifier.clone();
        let policy = self.policy.clone();
        Box::pin(async move {
            let token = match token {
                Ok(Some(token)) => token,
                Ok(None) => return Ok(refuse(Denial::NoBearer, grpc)),
                Err(denial) => return Ok(refuse(denial, grpc)),
            };
            let verdict = verifier.verify_or_fallback(&token, policy.audience.as_deref()).await;
            match authorize(verdict, &policy) {
                Ok(claims) => {
                    request.extensions_mut().insert(claims);
                    inner.call(request).await
                }
                Err(denial) => Ok(refuse(denial, grpc)),
            }
        })
    }
}

fn authorize(verdict: Result<Arc<SignedToken>, Refusal>, policy: &Policy) -> Result<Arc<SignedToken>, Denial> {
    let claims = verdict.map_err(|refusal| match refusal {
        Refusal::Invalid(ValidationFailure::WrongAudience) => Denial::Forbidden("the token is not for this service"),
        Refusal::Invalid(failure) => Denial::Invalid(failure),
        Refusal::Stale => Denial::Stale,
    })?;
    if !policy.any_role.is_empty() && !policy.any_role.iter().any(|role| claims.claims.has_role(role)) {
        return Err(Denial::Forbidden("the token lacks a required role"));
    }
    Ok(claims)
}

fn is_grpc<B>(request: &Request<B>) -> bool {
    request.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The token of `authorization: Bearer <token>` (scheme case-insensitive,
/// RFC 6750), if the request has one such header; a second is refused.
fn bearer_of<B>(request: &Request<B>) -> Result<Option<&str>, Denial> {
    let mut values = request.headers().get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else { return Ok(None) };
    if values.next().is_some() {
        return Err(Denial::SeveralAuthorizations);
    }
    let bearer = || {
        let (scheme, token) = value.to_str().ok()?.split_once(' ')?;
        let token = token.trim();
        (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
    };
    Ok(bearer())
}

/// What a caller with several `authorization` headers is told.
const SEVERAL_AUTHORIZATIONS: &str = "send one authorization header: this request has several";

fn refuse<R: Default>(denial: Denial, grpc: bool) -> Response<R> {
    if grpc {
        let status = match denial {
            Denial::NoBearer => tonic::Status::unauthenticated("this call needs authorization: Bearer <access token>"),
            Denial::SeveralAuthorizations => tonic::Status::invalid_argument(SEVERAL_AUTHORIZATIONS),
            Denial::Invalid(failure) => tonic::Status::unauthenticated(format!(
                "invalid access token ({}): log in again or refresh it",
                failure.text()
            )),
            Denial::Forbidden(why) => tonic::Status::permission_denied(why),
            Denial::Stale => {
                tonic::Status::unavailable("the token verifier is not current with the identity service; retry shortly")
            }
        };
        return status.into_http();
    }
    let (code, challenge, retry) = match denial {
        Denial::NoBearer => (StatusCode::UNAUTHORIZED, Some("Bearer".to_string()), false),
        Denial::SeveralAuthorizations => (
            StatusCode::BAD_REQUEST,
            Some(format!(r#"Bearer error="invalid_request", error_description="{SEVERAL_AUTHORIZATIONS}""#)),
            false,
        ),
        Denial::Invalid(failure) => (
            StatusCode::UNAUTHORIZED,
            Some(format!(r#"Bearer error="invalid_token", error_description="{}""#, failure.text())),
            false,
        ),
        Denial::Forbidden(why) => (
            StatusCode::FORBIDDEN,
            Some(format!(r#"Bearer error="insufficient_scope", error_description="{why}""#)),
            false,
        ),
        Denial::Stale => (StatusCode::SERVICE_UNAVAILABLE, None, true),
    };
    let mut response = Response::new(R::default());
    *response.status_mut() = code;
    if let Some(challenge) = challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, challenge);
    }
    if retry {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}
