//! The HTTP listener: `GET /.well-known/jwks.json` (the key set of
//! `GetJwks`, for JWT libraries that fetch keys over HTTP),
//! `GET /.well-known/openid-configuration` (the discovery document such
//! libraries configure themselves from), `GET /metrics` (Prometheus) and
//! `GET /healthz` (for load balancers and orchestrators).

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};

use crate::{config::PublicUrl, domain::Identity};

/// The HTTP routes over `identity`; the discovery document's URLs are under
/// `public_url`.
pub(crate) fn router(identity: Arc<Identity>, public_url: &PublicUrl) -> Router {
    let discovery_document = Arc::new(discovery(&identity, public_url));
    Router::new()
        .route("/.well-known/jwks.json", get(jwks))
        .route(
            "/.well-known/openid-configuration",
            get(move || {
                let document = discovery_document.clone();
                async move { Json(document.as_ref().clone()) }
            }),
        )
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(identity)
}

async fn jwks(State(identity): State<Arc<Identity>>) -> impl IntoResponse {
    // Keys change only on rotation, and a retired key is published for a
    // whole access-token lifetime after it stops signing; five minutes of
    // caching never hides a key that signs live tokens for long.
    (
        [(header::CONTENT_TYPE, "application/jwk-set+json"), (header::CACHE_CONTROL, "public, max-age=300")],
        identity.jwks_json(),
    )
}

/// The OpenID Connect discovery document: enough for standard JWT
/// middleware to find the keys and the accepted algorithm. Built once, at
/// start, from configuration: nothing a caller sends (`Host`,
/// `X-Forwarded-Proto`) may become a URL Sigil publishes — behind a cache
/// keyed by path, one caller's header would be every verifier's key source.
fn discovery(identity: &Identity, public_url: &PublicUrl) -> serde_json::Value {
    serde_json::json!({
        "issuer": identity.settings().issuer,
        "jwks_uri": public_url.join(".well-known/jwks.json"),
        "id_token_signing_alg_values_supported": ["EdDSA"],
        "token_endpoint_auth_signing_alg_values_supported": ["EdDSA"],
        "response_types_supported": ["token"],
        "subject_types_supported": ["public"],
        "claims_supported": ["iss", "sub", "aud", "exp", "nbf", "iat", "jti", "sid", "username", "roles"],
    })
}

async fn metrics(State(identity): State<Arc<Identity>>) -> impl IntoResponse {
    let text = crate::telemetry::METRICS.render(&identity).await;
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text)
}

async fn healthz() -> impl IntoResponse {
    // The listener only starts once the store is open and the keys are
    // loaded, so answering at all means ready.
    (StatusCode::OK, "ok\n")
}
