//! The HTTP listener: `GET /.well-known/jwks.json` (the key set of
//! `GetJwks`, for JWT libraries that fetch keys over HTTP) and
//! `GET /healthz` (for load balancers and orchestrators).

use std::sync::Arc;

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};

use crate::domain::Identity;

/// The HTTP routes over `identity`.
pub fn router(identity: Arc<Identity>) -> Router {
    Router::new().route("/.well-known/jwks.json", get(jwks)).route("/healthz", get(healthz)).with_state(identity)
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

async fn healthz() -> impl IntoResponse {
    // The listener only starts once the store is open and the keys are
    // loaded, so answering at all means ready.
    (StatusCode::OK, "ok\n")
}
